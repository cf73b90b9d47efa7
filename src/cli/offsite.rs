//! `offsite sync`, `offsite list [--json]`, `offsite verify [--read]`:
//! parse and present; the work is `ops::Session::offsite_*`.

use super::{no_arguments, no_unknown_flags, take_flag};
use crate::error::{Error, Result};
use crate::ops::Session;
use crate::out::{human_bytes, Out};

pub fn run(session: Session, args: &[String], quiet: bool, out: &mut Out) -> Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::Usage(
            "offsite needs a subcommand: sync, list [--json] or verify [--read]".into(),
        ));
    };
    let mut rest = rest.to_vec();
    match sub.as_str() {
        "sync" => {
            no_unknown_flags(&rest)?;
            no_arguments(&rest)?;
            let r = smol::block_on(session.offsite_sync())?;
            for p in &r.problems {
                out.line(&format!("not shipped: {p}"));
            }
            if !quiet || !r.problems.is_empty() {
                out.line(&format!(
                    "offsite sync: {} object(s) shipped ({}), {} found in the store already, {} confirmed before",
                    r.uploaded,
                    human_bytes(r.bytes),
                    r.found,
                    r.already
                ));
            }
            match &r.set {
                Some(o @ crate::ops::SetOutcome::NotPublished(_)) => out.line(&o.describe()),
                Some(o) if !quiet => out.line(&o.describe()),
                _ => {}
            }
            Ok(if r.problems.is_empty() { 0 } else { 1 })
        }
        "list" => {
            let json = take_flag(&mut rest, "--json");
            no_unknown_flags(&rest)?;
            no_arguments(&rest)?;
            let n = smol::block_on(session.offsite_list(&mut |o| {
                if json {
                    out.line(
                        &serde_json::json!({
                            "key": o.key,
                            "bytes": o.size,
                            "etag": o.etag,
                            "modified": o.modified,
                        })
                        .to_string(),
                    );
                } else {
                    out.line(&format!("{:>12}  {}", o.size, o.key));
                }
            }))?;
            if !json && !quiet {
                out.line(&format!("{n} object(s)"));
            }
            Ok(0)
        }
        "verify" => {
            let read = take_flag(&mut rest, "--read");
            no_unknown_flags(&rest)?;
            no_arguments(&rest)?;
            let r = smol::block_on(session.offsite_verify(read))?;
            for f in &r.failures {
                out.line(&format!("FAILED {f}"));
            }
            if !quiet || !r.failures.is_empty() {
                out.line(&format!(
                    "offsite verify: {} object(s) checked{}, {} not shipped yet, {} problem(s)",
                    r.checked,
                    if read {
                        format!(" and read back ({})", human_bytes(r.read_bytes))
                    } else {
                        String::new()
                    },
                    r.pending,
                    r.failures.len()
                ));
            }
            Ok(if r.failures.is_empty() { 0 } else { 1 })
        }
        other => Err(Error::Usage(format!(
            "unknown offsite subcommand {other:?}: sync, list [--json] or verify [--read]"
        ))),
    }
}
