//! Parse the Prometheus text format with Prometheus's own Python client
//! (`prometheus_client.parser`, from PyPI): a second, independent reader
//! of what `METRICS`, `rvm-backup metrics` and the textfile write.

use std::io::Write;
use std::process::{Command, Stdio};

/// One parsed sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
    pub timestamp: Option<f64>,
}

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value, "timestamp": s.timestamp})
print(json.dumps(out))
"#;

/// Whether python3 has `prometheus_client`. Under CI (`$CI` set) its
/// absence fails the test (`.ci/run` installs it); elsewhere the caller
/// skips the parser checks, with a message.
pub fn available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: python3 with prometheus_client is required under CI (pip install prometheus_client)"
        );
        eprintln!("{test}: SKIPPING the Prometheus parser checks: python3 has no prometheus_client (pip install prometheus_client)");
    }
    ok
}

/// Parse `text`; panics with the parser's complaint if it refuses it.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_string(),
            kind: s["type"].as_str().unwrap().to_string(),
            name: s["name"].as_str().unwrap().to_string(),
            labels: s["labels"].as_object().unwrap().clone(),
            value: s["value"].as_f64().unwrap(),
            timestamp: s["timestamp"].as_f64(),
        })
        .collect()
}

/// The value of `name` with `label=value` (the first such sample).
pub fn value(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && label.is_none_or(|(k, v)| s.labels.get(k).and_then(|x| x.as_str()) == Some(v))
        })
        .map(|s| s.value)
}
