//! A small, bounded reader for the XML that S3 answers with: just enough
//! to pull element texts out of `ListBucketResult`, `ListPartsResult`,
//! `InitiateMultipartUploadResult`, `CompleteMultipartUploadResult` and
//! `Error` documents.
//!
//! It turns a document into a flat list of [`Event`]s: element starts and
//! ends (local names, namespace prefixes and attributes dropped) and
//! non-empty texts (the five predefined entities and character references
//! decoded). Declarations, comments, processing instructions and CDATA are
//! handled; a DOCTYPE is refused (no entity expansion ever).
//!
//! Invariants: input of at most [`MAX_DOC`] bytes, at most [`MAX_DEPTH`]
//! nested elements and [`MAX_EVENTS`] events; any byte sequence gives a
//! result or an error, never a panic (property-tested); mismatched tags are
//! an error.

/// Largest document read.
pub const MAX_DOC: usize = 1 << 20;
/// Deepest nesting.
pub const MAX_DEPTH: usize = 16;
/// Most events in one document.
pub const MAX_EVENTS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Start(String),
    End(String),
    Text(String),
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Parse a document into events.
pub fn parse(doc: &[u8]) -> Result<Vec<Event>, String> {
    if doc.len() > MAX_DOC {
        return Err(format!("the XML answer is larger than {MAX_DOC} bytes"));
    }
    let text = std::str::from_utf8(doc).map_err(|_| "the XML answer is not UTF-8".to_string())?;
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    let push = |out: &mut Vec<Event>, e: Event| {
        if out.len() >= MAX_EVENTS {
            return Err(format!("the XML answer holds more than {MAX_EVENTS} items"));
        }
        out.push(e);
        Ok(())
    };
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() {
                if stack.is_empty() {
                    return Err("text outside the XML document's element".into());
                }
                push(&mut out, Event::Text(decode(rest)?))?;
            }
            break;
        };
        let before = &rest[..lt];
        if !before.trim().is_empty() {
            if stack.is_empty() {
                return Err("text outside the XML document's element".into());
            }
            push(&mut out, Event::Text(decode(before)?))?;
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("an XML comment does not end")?;
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("an XML CDATA section does not end")?;
            if stack.is_empty() {
                return Err("CDATA outside the XML document's element".into());
            }
            push(&mut out, Event::Text(r[..end].to_string()))?;
            rest = &r[end + 3..];
        } else if rest.starts_with("<!") {
            return Err(
                "the XML answer has a DOCTYPE or other declaration, which is refused".into(),
            );
        } else if let Some(r) = rest.strip_prefix("<?") {
            let end = r.find("?>").ok_or("an XML declaration does not end")?;
            rest = &r[end + 2..];
        } else {
            let gt = rest.find('>').ok_or("an XML tag does not end")?;
            let inner = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = inner.strip_prefix('/') {
                let name = local(name.trim()).to_string();
                match stack.pop() {
                    Some(open) if open == name => push(&mut out, Event::End(name))?,
                    Some(open) => return Err(format!("XML element <{open}> closed by </{name}>")),
                    None => return Err(format!("XML end tag </{name}> without a start")),
                }
            } else {
                let empty = inner.ends_with('/');
                let inner = inner.strip_suffix('/').unwrap_or(inner);
                let name = inner.split_whitespace().next().unwrap_or("");
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, ':' | '_' | '-' | '.'))
                {
                    return Err(format!(
                        "malformed XML tag <{}>",
                        inner.chars().take(40).collect::<String>()
                    ));
                }
                let name = local(name).to_string();
                push(&mut out, Event::Start(name.clone()))?;
                if empty {
                    push(&mut out, Event::End(name))?;
                } else {
                    if stack.len() == MAX_DEPTH {
                        return Err(format!("the XML answer nests deeper than {MAX_DEPTH}"));
                    }
                    stack.push(name);
                }
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("the XML answer ends inside <{open}>"));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let r = &rest[i + 1..];
        let end = r
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or("a bare '&' in the XML answer")?;
        let ent = &r[..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                n.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown XML entity &{ent};"))?
            }
        };
        out.push(c);
        rest = &r[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The text of the first element named `name` anywhere (empty when the
/// element is empty), or `None`.
pub fn first(events: &[Event], name: &str) -> Option<String> {
    let i = events
        .iter()
        .position(|e| matches!(e, Event::Start(n) if n == name))?;
    Some(match events.get(i + 1) {
        Some(Event::Text(t)) => t.clone(),
        _ => String::new(),
    })
}

/// For every element named `group`, the texts of its direct children
/// named in `fields` (in that order; `None` where absent).
pub fn records(events: &[Event], group: &str, fields: &[&str]) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        if matches!(&events[i], Event::Start(n) if n == group) {
            let mut rec = vec![None; fields.len()];
            let mut depth = 0usize;
            i += 1;
            while i < events.len() {
                match &events[i] {
                    Event::Start(n) => {
                        depth += 1;
                        if depth == 1 {
                            if let Some(f) = fields.iter().position(|f| f == n) {
                                rec[f] = Some(match events.get(i + 1) {
                                    Some(Event::Text(t)) => t.clone(),
                                    _ => String::new(),
                                });
                            }
                        }
                    }
                    Event::End(_) if depth == 0 => break,
                    Event::End(_) => depth -= 1,
                    Event::Text(_) => {}
                }
                i += 1;
            }
            out.push(rec);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix>
<Contents><Key>p/a&amp;b.rvb</Key><Size>12</Size><ETag>&quot;abc&quot;</ETag><Owner><ID>x</ID><Size>999</Size></Owner></Contents>
<Contents><Key>p/c</Key><Size>0</Size><ETag/></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>t&#x41;&#66;</NextContinuationToken></ListBucketResult>"#;

    #[test]
    fn list_results() {
        let ev = parse(LIST.as_bytes()).unwrap();
        let recs = records(&ev, "Contents", &["Key", "Size", "ETag"]);
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0],
            vec![
                Some("p/a&b.rvb".into()),
                Some("12".into()),
                Some("\"abc\"".into())
            ]
        );
        assert_eq!(
            recs[1],
            vec![Some("p/c".into()), Some("0".into()), Some(String::new())]
        );
        assert_eq!(first(&ev, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(first(&ev, "NextContinuationToken").as_deref(), Some("tAB"));
        assert_eq!(first(&ev, "Missing"), None);
    }

    #[test]
    fn errors() {
        let ev = parse(b"<Error><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error>")
            .unwrap();
        assert_eq!(first(&ev, "Code").as_deref(), Some("SignatureDoesNotMatch"));
        for bad in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"</a>",
            b"<!DOCTYPE x [<!ENTITY e \"x\">]><a>&e;</a>",
            b"<a>&bogus;</a>",
            b"<a>&#xD800;</a>",
            b"text<a/>",
            b"<a",
            b"<>x</>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(ev) = parse(&bytes) {
                let _ = records(&ev, "Contents", &["Key", "Size"]);
                let _ = first(&ev, "Key");
            }
        }

        #[test]
        fn arbitrary_tag_soup_never_panics(s in "[<>/a-cK&;#x0-9 !?\\[\\]-]{0,200}") {
            if let Ok(ev) = parse(s.as_bytes()) {
                let _ = records(&ev, "a", &["b", "c"]);
            }
        }
    }
}
