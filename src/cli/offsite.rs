//! `offsite sync`, `offsite list [--json]`, `offsite verify [--read]`,
//! `offsite prune --credentials FILE [--keep N] [--dry-run]`: parse and
//! present; the work is `ops::Session::offsite_*`.

use super::{no_arguments, no_unknown_flags, take_flag, take_value};
use crate::error::{Error, Result};
use crate::ops::Session;
use crate::out::{human_bytes, Out};

pub fn run(session: Session, args: &[String], quiet: bool, out: &mut Out) -> Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::Usage(
            "offsite needs a subcommand: sync, list [--json], verify [--read] or prune --credentials FILE [--keep N] [--dry-run]".into(),
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
        "prune" => {
            let Some(file) = take_value(&mut rest, "--credentials")? else {
                return Err(Error::Usage(
                    "offsite prune needs --credentials FILE: a separate identity allowed to delete (mode 0600: access key id, then secret, one per line)".into(),
                ));
            };
            let keep = match take_value(&mut rest, "--keep")? {
                None => crate::ops::offsite_prune::DEFAULT_KEEP,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=crate::ops::offsite_prune::MAX_KEEP).contains(n))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--keep {v:?}: give a number from 1 to {}",
                            crate::ops::offsite_prune::MAX_KEEP
                        ))
                    })?,
            };
            let dry_run = take_flag(&mut rest, "--dry-run");
            no_unknown_flags(&rest)?;
            no_arguments(&rest)?;
            let creds =
                crate::ops::offsite_prune::load_credentials(std::path::Path::new(&file))?;
            let r = smol::block_on(session.offsite_prune(creds, keep, dry_run))?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (k, size) in &r.deleted {
                out.line(&format!("{verb} {k} ({size} bytes)"));
            }
            for n in &r.notes {
                out.line(&format!("note: {n}"));
            }
            if !quiet || dry_run {
                let bytes: u64 = r.deleted.iter().map(|(_, n)| n).sum();
                out.line(&format!(
                    "offsite prune: {verb} {} archive(s) and {} WAL generation(s) ({} object(s), {}); {} archive(s) kept",
                    r.archives,
                    r.generations,
                    r.deleted.len(),
                    human_bytes(bytes),
                    r.kept
                ));
            }
            Ok(0)
        }
        other => Err(Error::Usage(format!(
            "unknown offsite subcommand {other:?}: sync, list [--json], verify [--read] or prune --credentials FILE [--keep N] [--dry-run]"
        ))),
    }
}
