//! The `[[alert]]` tables: where alerts go (a sink), which of them, and
//! how each sink is checked when the config is read.
//!
//! Invariants: every key is known (`deny_unknown_fields`) and belongs to
//! the table's `type` (a `url` on an `exec` sink is an error); a webhook URL
//! is `http://` (HTTPS through `exec` with curl); commands are argv arrays
//! with an absolute program; email addresses are plain `local@domain`
//! (nothing that could end a header); sink names are unique, so an outbox
//! entry names its sink across restarts.

use serde::Deserialize;

use crate::hooks::HookCommand;
use crate::monitor::{Alert, AlertKind, Severity};
use crate::net::url::HttpUrl;

/// At most this many `[[alert]]` tables.
pub const MAX_SINKS: usize = 16;
/// The default `sendmail` command.
pub const DEFAULT_SENDMAIL: [&str; 3] = ["/usr/sbin/sendmail", "-t", "-i"];

/// One configured sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sink {
    /// `name`, else `TYPE-N` (N: the table's 1-based position).
    pub name: String,
    pub kind: SinkKind,
    /// Alerts below this severity are not sent here (default warning).
    pub min_severity: Severity,
    /// Only these rules' alerts (`None`: all).
    pub rules: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    Webhook {
        url: HttpUrl,
    },
    Exec {
        command: HookCommand,
    },
    Email {
        to: Vec<String>,
        from: Option<String>,
        sendmail: HookCommand,
    },
    Log,
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::Exec { .. } => "exec",
            SinkKind::Email { .. } => "email",
            SinkKind::Log => "log",
        }
    }
}

impl Sink {
    /// Whether `alert` goes to this sink. A recovery notice is judged by
    /// the severity it recovers from, so it reaches the sinks that got
    /// the alert. The rule `test` (`alert test`) goes everywhere.
    pub fn wants(&self, alert: &Alert) -> bool {
        if alert.rule == super::TEST_RULE {
            return true;
        }
        let severity = match alert.kind {
            AlertKind::Resolved => alert.previous.max(alert.severity),
            _ => alert.severity,
        };
        severity >= self.min_severity && self.rules.as_ref().is_none_or(|r| r.contains(&alert.rule))
    }
}

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(rename = "type")]
    kind: SinkType,
    name: Option<SinkName>,
    url: Option<HttpUrl>,
    command: Option<HookCommand>,
    to: Option<OneOrMany>,
    from: Option<EmailAddr>,
    sendmail: Option<HookCommand>,
    min_severity: Option<MinSeverity>,
    rules: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SinkType {
    Webhook,
    Exec,
    Email,
    Log,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `min_severity`: warning or critical (ok would send every recovery
/// twice, unknown is not a threshold).
#[derive(Clone, Copy, Debug)]
struct MinSeverity(Severity);

impl<'de> Deserialize<'de> for MinSeverity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "warning" => Ok(MinSeverity(Severity::Warning)),
            "critical" => Ok(MinSeverity(Severity::Critical)),
            other => Err(serde::de::Error::custom(format!(
                "min_severity {other:?}: use \"warning\" or \"critical\""
            ))),
        }
    }
}

/// A sink's name: `[A-Za-z0-9_.-]`, 1–32 characters.
#[derive(Clone, Debug)]
struct SinkName(String);

impl<'de> Deserialize<'de> for SinkName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "sink name {s:?}: use 1 to 32 of A-Z a-z 0-9 _ . -"
            )));
        }
        Ok(SinkName(s))
    }
}

/// A plain address `local@domain` (no display name, no comments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailAddr(pub String);

impl EmailAddr {
    pub fn parse(s: &str) -> Result<EmailAddr, String> {
        let bad = |why: &str| {
            Err(format!(
                "{s:?} is not an email address ({why}); write a plain address like \"ops@example.com\""
            ))
        };
        if s.len() > 254 {
            return bad("longer than 254 characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return bad("no @");
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
        if !local_ok {
            return bad("the part before @ holds characters not allowed unquoted");
        }
        let domain_ok = domain.split('.').count() >= 1
            && domain.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !domain_ok {
            return bad("the domain is not a host name");
        }
        Ok(EmailAddr(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for EmailAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EmailAddr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One table, checked on its own (so toml names its line in errors);
/// [`build`] names it and checks the tables together.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawSink")]
pub struct CheckedSink {
    name: Option<String>,
    kind: SinkKind,
    min_severity: Severity,
    rules: Option<Vec<String>>,
}

impl TryFrom<RawSink> for CheckedSink {
    type Error = String;

    fn try_from(r: RawSink) -> Result<CheckedSink, String> {
        let type_name = match r.kind {
            SinkType::Webhook => "webhook",
            SinkType::Exec => "exec",
            SinkType::Email => "email",
            SinkType::Log => "log",
        };
        let needs = |key: &str, example: &str| {
            format!("[[alert]] type = \"{type_name}\" needs `{key}`, e.g. {key} = {example}")
        };
        let present = [
            ("url", r.url.is_some()),
            ("command", r.command.is_some()),
            ("to", r.to.is_some()),
            ("from", r.from.is_some()),
            ("sendmail", r.sendmail.is_some()),
        ];
        let allowed: &[&str] = match r.kind {
            SinkType::Webhook => &["url"],
            SinkType::Exec => &["command"],
            SinkType::Email => &["to", "from", "sendmail"],
            SinkType::Log => &[],
        };
        if let Some((key, _)) = present
            .iter()
            .find(|(k, there)| *there && !allowed.contains(k))
        {
            return Err(format!(
                "[[alert]] type = \"{type_name}\": key `{key}` does not apply to this type"
            ));
        }
        let kind = match r.kind {
            SinkType::Webhook => SinkKind::Webhook {
                url: r
                    .url
                    .ok_or_else(|| needs("url", "\"http://monitor.local:8080/alerts\""))?,
            },
            SinkType::Exec => SinkKind::Exec {
                command: r
                    .command
                    .ok_or_else(|| needs("command", "[\"/usr/local/bin/notify\", \"--json\"]"))?,
            },
            SinkType::Email => {
                let to: Vec<String> = match r.to {
                    None => return Err(needs("to", "[\"ops@example.com\"]")),
                    Some(OneOrMany::One(a)) => vec![a],
                    Some(OneOrMany::Many(v)) => v,
                };
                for a in &to {
                    EmailAddr::parse(a).map_err(|e| format!("[[alert]] `to`: {e}"))?;
                }
                if to.is_empty() || to.len() > 32 {
                    return Err("[[alert]] type = \"email\": `to` needs 1 to 32 addresses".into());
                }
                SinkKind::Email {
                    to,
                    from: r.from.map(|a| a.0),
                    sendmail: r.sendmail.unwrap_or_else(|| {
                        HookCommand(DEFAULT_SENDMAIL.iter().map(|s| s.to_string()).collect())
                    }),
                }
            }
            SinkType::Log => SinkKind::Log,
        };
        if let Some(rules) = &r.rules {
            if rules.is_empty()
                || rules.len() > 64
                || rules.iter().any(|x| x.is_empty() || x.len() > 64)
            {
                return Err(
                    "[[alert]] `rules` lists 1 to 64 rule names (leave it out for all rules)"
                        .into(),
                );
            }
        }
        Ok(CheckedSink {
            name: r.name.map(|n| n.0),
            kind,
            min_severity: r.min_severity.map_or(Severity::Warning, |m| m.0),
            rules: r.rules,
        })
    }
}

/// Name each table and check them together; the error text is shown
/// with the config's path.
pub fn build(checked: Vec<CheckedSink>) -> Result<Vec<Sink>, String> {
    if checked.len() > MAX_SINKS {
        return Err(format!(
            "{} [[alert]] tables: at most {MAX_SINKS} are allowed",
            checked.len()
        ));
    }
    let mut sinks: Vec<Sink> = Vec::with_capacity(checked.len());
    for (i, c) in checked.into_iter().enumerate() {
        let n = i + 1;
        let name = c
            .name
            .unwrap_or_else(|| format!("{}-{n}", c.kind.type_name()));
        if sinks.iter().any(|s| s.name == name) {
            return Err(format!(
                "[[alert]] table {n}: the name {name:?} is taken by an earlier table; give each sink its own name"
            ));
        }
        sinks.push(Sink {
            name,
            kind: c.kind,
            min_severity: c.min_severity,
            rules: c.rules,
        });
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        #[serde(default)]
        alert: Vec<CheckedSink>,
    }

    fn parse(text: &str) -> Result<Vec<Sink>, String> {
        let t: T = toml::from_str(text).map_err(|e| e.to_string())?;
        build(t.alert)
    }

    #[test]
    fn every_type_parses_with_defaults() {
        let s = parse(
            r#"
[[alert]]
type = "webhook"
url = "http://10.0.0.1:8080/a"
[[alert]]
type = "exec"
name = "curl"
command = ["/usr/bin/curl", "-d", "@-"]
min_severity = "critical"
rules = ["failures"]
[[alert]]
type = "email"
to = "ops@example.com"
[[alert]]
type = "log"
"#,
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "webhook-1");
        assert_eq!(s[0].min_severity, Severity::Warning);
        assert_eq!(s[1].name, "curl");
        assert_eq!(s[1].rules.as_deref(), Some(&["failures".to_string()][..]));
        match &s[2].kind {
            SinkKind::Email { to, sendmail, from } => {
                assert_eq!(to, &["ops@example.com"]);
                assert_eq!(sendmail.0, DEFAULT_SENDMAIL);
                assert!(from.is_none());
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(s[3].kind, SinkKind::Log);
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        for (text, want) in [
            ("[[alert]]\ntype = \"webhook\"\nurl = \"https://x/\"\n", "line 3"),
            ("[[alert]]\ntype = \"webhook\"\nurl = \"https://x/\"\n", "curl"),
            ("[[alert]]\ntype = \"pager\"\n", "line 2"),
            ("[[alert]]\ntype = \"log\"\ncolour = 1\n", "colour"),
            ("[[alert]]\ntype = \"exec\"\ncommand = [\"curl\"]\n", "absolute"),
            ("[[alert]]\ntype = \"email\"\nto = [\"a@b\", \"x\\r\\nBcc: y@z\"]\n", "not an email address"),
            ("[[alert]]\ntype = \"email\"\nto = \"Ops <ops@x.org>\"\n", "plain address"),
            ("[[alert]]\ntype = \"log\"\nmin_severity = \"ok\"\n", "line 3"),
            ("[[alert]]\ntype = \"webhook\"\n", "needs `url`"),
            ("\n[[alert]]\ntype = \"webhook\"\n", "line 2"),
            ("[[alert]]\ntype = \"exec\"\nurl = \"http://x/\"\n", "key `url` does not apply"),
            ("[[alert]]\ntype = \"exec\"\nurl = \"http://x/\"\n", "line 1"),
            ("[[alert]]\ntype = \"log\"\nname = \"a b\"\n", "line 3"),
            ("[[alert]]\ntype = \"log\"\nname = \"j\"\n[[alert]]\ntype = \"log\"\nname = \"j\"\n", "taken"),
            ("[[alert]]\ntype = \"email\"\nto = []\n", "1 to 32"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let many = "[[alert]]\ntype = \"log\"\n".repeat(MAX_SINKS + 1);
        assert!(parse(&many).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn sinks_pick_alerts_by_severity_and_rule() {
        use crate::monitor::Finding;
        let s = parse(
            "[[alert]]\ntype = \"log\"\nmin_severity = \"critical\"\nrules = [\"failures\"]\n",
        )
        .unwrap()
        .remove(0);
        let alert = |rule: &str, kind, sev, prev| {
            let f = Finding {
                rule: rule.into(),
                subject: "database".into(),
                severity: sev,
                reason: "r".into(),
                figures: serde_json::Map::new(),
            };
            Alert::new(kind, &f, prev, "h", "", 0).unwrap()
        };
        use Severity::*;
        assert!(s.wants(&alert("failures", AlertKind::Firing, Critical, Ok)));
        assert!(!s.wants(&alert("failures", AlertKind::Firing, Warning, Ok)));
        assert!(!s.wants(&alert("storage", AlertKind::Firing, Critical, Ok)));
        // The recovery from critical reaches the sink that got the alert;
        // the one from warning does not.
        assert!(s.wants(&alert("failures", AlertKind::Resolved, Ok, Critical)));
        assert!(!s.wants(&alert("failures", AlertKind::Resolved, Ok, Warning)));
        // A test alert goes everywhere.
        assert!(s.wants(&alert(super::super::TEST_RULE, AlertKind::Firing, Ok, Ok)));
    }

    #[test]
    fn addresses() {
        for ok in ["a@b", "first.last+tag@mail.example.com", "x_y@h-1.io"] {
            EmailAddr::parse(ok).unwrap();
        }
        for bad in [
            "",
            "@b",
            "a@",
            "a b@c",
            "a@b c",
            "a@b\r\nBcc: x@y",
            ".a@b",
            "a..b@c",
            "a@-b",
            "<a@b>",
        ] {
            assert!(EmailAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
