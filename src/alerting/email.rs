//! The email sink: an RFC 5322 message handed to a sendmail-compatible
//! program (`sendmail`, default `/usr/sbin/sendmail -t -i`; msmtp works
//! the same way) on its stdin.
//!
//! The message has `From`, `To`, `Subject` (the alert's summary, RFC 2047
//! encoded when not plain ASCII), `Date` (RFC 5322, of the alert),
//! `Message-ID: <ID@HOST>` (the alert's id: a retry is the same message),
//! `MIME-Version`, `Content-Type: text/plain; charset=utf-8`,
//! `Content-Transfer-Encoding: quoted-printable`, `Auto-Submitted` and
//! `X-RVM-Alert-Id`; lines end in LF (what local sendmail expects).
//!
//! Invariants: no header value holds a control character (CR and LF are
//! removed from every value, and addresses are checked when the config is
//! read), so nothing in an alert can add a header or a recipient; every
//! line of the message is at most 998 bytes (the body is quoted-printable,
//! the subject bounded and folded).

use crate::monitor::{Alert, AlertKind};

/// Longest subject text (characters) before it is cut.
const MAX_SUBJECT: usize = 200;

/// `Tue, 24 Nov 2026 15:00:00 +0000`.
pub fn rfc5322_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = crate::timefmt::civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m.clamp(1, 12) - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A header value on one line: control characters become spaces.
pub fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A host name fit for a Message-ID and a default sender.
fn host_part(host: &str) -> String {
    let h: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(253)
        .collect();
    let h = h.trim_matches('.').to_string();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The Subject value: plain when printable ASCII, else RFC 2047
/// encoded-words of at most 75 characters, folded onto lines of their own.
pub fn subject(text: &str) -> String {
    let text: String = clean(text).chars().take(MAX_SUBJECT).collect();
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) && !text.contains("=?") {
        return text;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        // 45 bytes encode to 60 characters: with "=?utf-8?B?" and "?=", 72.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?utf-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\n ")
}

/// Quoted-printable (RFC 2045) with LF line ends; encoded lines are at
/// most 76 characters.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let bytes = line.as_bytes();
        let mut width = 0;
        for (j, &b) in bytes.iter().enumerate() {
            let last = j + 1 == bytes.len();
            let token = match b {
                b'=' => "=3D".to_string(),
                b' ' | b'\t' if last => format!("={b:02X}"),
                b' ' | b'\t' | 33..=126 => (b as char).to_string(),
                _ => format!("={b:02X}"),
            };
            if width + token.len() > 75 {
                out.push_str("=\n");
                width = 0;
            }
            width += token.len();
            out.push_str(&token);
        }
    }
    out
}

/// The message for `alert` from `from` (default `rvm-backup@HOST`) to `to`.
pub fn message(alert: &Alert, to: &[String], from: Option<&str>) -> String {
    let host = host_part(&alert.host);
    let from = from.map_or_else(|| format!("rvm-backup@{host}"), clean);
    let kind = match alert.kind {
        AlertKind::Firing => "firing",
        AlertKind::Repeat => "still firing",
        AlertKind::Resolved => "resolved",
    };
    let mut body = format!(
        "{}\n\nAlert:     {}\nState:     {kind}\nRule:      {}\nSubject:   {}\nSeverity:  {} (was {})\nReason:    {}\nHost:      {}{}\nTime:      {}\n",
        alert.summary(),
        alert.id,
        alert.rule,
        alert.subject,
        alert.severity,
        alert.previous,
        alert.reason,
        alert.host,
        if alert.machine_id.is_empty() {
            String::new()
        } else {
            format!(" (machine id {})", alert.machine_id)
        },
        alert.time
    );
    if !alert.figures.is_empty() {
        body.push_str("\nFigures:\n");
        for (k, v) in &alert.figures {
            body.push_str(&format!("  {k}: {v}\n"));
        }
    }
    body.push_str(&format!(
        "\n-- \nrvm-backup on {}; this alert's id is {} (a repeat delivery carries the same id)\n",
        alert.host, alert.id
    ));
    let headers = [
        ("From", from),
        ("To", clean(&to.join(", "))),
        ("Subject", subject(&alert.summary())),
        ("Date", rfc5322_date(alert.at)),
        ("Message-ID", format!("<{}@{host}>", clean(&alert.id))),
        ("MIME-Version", "1.0".into()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Content-Transfer-Encoding", "quoted-printable".into()),
        ("Auto-Submitted", "auto-generated".into()),
        ("X-RVM-Alert-Id", clean(&alert.id)),
    ];
    let mut m = String::new();
    for (k, v) in headers {
        m.push_str(&format!("{k}: {v}\n"));
    }
    m.push('\n');
    m.push_str(&quoted_printable(&body));
    if !m.ends_with('\n') {
        m.push('\n');
    }
    m
}

/// Hand the message to the sendmail command; exit status 0 is delivered.
pub async fn send(
    sendmail: &[String],
    to: &[String],
    from: Option<&str>,
    alert: &Alert,
) -> Result<(), String> {
    let m = message(alert, to, from);
    super::exec::run(
        "the sendmail command",
        sendmail,
        Vec::new(),
        m.into_bytes(),
        super::exec::TIMEOUT,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{Finding, Severity};
    use proptest::prelude::*;

    fn alert(reason: &str, subject: &str) -> Alert {
        let f = Finding {
            rule: "failures".into(),
            subject: subject.into(),
            severity: Severity::Critical,
            reason: reason.into(),
            figures: serde_json::Map::new(),
        };
        Alert::new(
            AlertKind::Firing,
            &f,
            Severity::Ok,
            "rvm-0042",
            "",
            1_795_000_000,
        )
        .unwrap()
    }

    fn headers(m: &str) -> Vec<&str> {
        m.split("\n\n").next().unwrap().lines().collect()
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_000_000),
            "Wed, 18 Nov 2026 11:06:40 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn headers_cannot_be_injected() {
        let a = alert("x\r\nBcc: victim@example.com\n\nbody", "db\nCc: evil@x");
        let m = message(&a, &["ops@example.com".into()], None);
        let h = headers(&m);
        assert!(
            h.iter()
                .all(|l| !l.starts_with("Bcc") && !l.starts_with("Cc")),
            "{m}"
        );
        assert_eq!(h.iter().filter(|l| l.starts_with("Subject:")).count(), 1);
        assert!(h.contains(&format!("Message-ID: <{}@rvm-0042>", a.id).as_str()));
        assert!(h.contains(&"From: rvm-backup@rvm-0042"));
        assert!(m.lines().all(|l| l.len() <= 998));
    }

    #[test]
    fn non_ascii_subjects_are_encoded_and_bodies_quoted() {
        let a = alert(&"Datenbank ist leer — überprüfen ".repeat(20), "database");
        let m = message(&a, &["a@b".into(), "c@d".into()], Some("rvm@fleet.example"));
        let h = headers(&m);
        assert!(h.contains(&"To: a@b, c@d"));
        assert!(h.iter().any(|l| l.starts_with("Subject: =?utf-8?B?")));
        assert!(
            m.lines().all(|l| l.len() <= 76 || l.starts_with("Subject")),
            "{m}"
        );
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(quoted_printable("a=b \nc\u{e9}"), "a=3Db=20\nc=C3=A9");
    }

    proptest! {
        #[test]
        fn no_input_adds_a_header(reason in "\\PC{0,300}", subj in "[ -~\r\n\u{e9}]{0,80}") {
            let a = alert(&reason, &subj);
            let m = message(&a, &["ops@example.com".into()], None);
            let h = headers(&m);
            prop_assert_eq!(h.iter().filter(|l| !l.starts_with(' ')).count(), 10);
            prop_assert!(m.lines().all(|l| l.len() <= 998));
        }
    }
}
