//! Choosing archives from a listing by id prefix or selector, with the
//! reason of an unreadable sidecar when that is what the caller meant.

use std::path::Path;

use crate::error::{Error, Result};
use crate::restore::Selector;
use crate::store::{Listed, Listing, SIDECAR_EXT};
use crate::strategy::Strategy;

/// The archive an id (or unique id prefix) names. When no readable archive
/// matches but an unreadable sidecar does (made with another key, damaged),
/// its error says why instead of "no archive with id".
pub(super) fn by_id<'a>(listing: &'a mut Listing, wanted: &str) -> Result<&'a Listed> {
    match crate::store::resolve(&listing.archives, wanted) {
        Ok(_) => {}
        Err(e) => return Err(take_problem(listing, |id| id.starts_with(wanted)).unwrap_or(e)),
    }
    crate::store::resolve(&listing.archives, wanted)
}

/// The archive of `strategy` a selector picks. When there is none, an
/// unreadable sidecar of that strategy explains better than "no archive".
pub(super) fn by_selector<'a>(
    listing: &'a mut Listing,
    strategy: Strategy,
    sel: &Selector,
) -> Result<&'a Listed> {
    if let Err(e) = crate::restore::select(&listing.archives, strategy, sel) {
        let prefix = format!("{}-", strategy.name());
        return Err(take_problem(listing, |id| id.starts_with(&prefix)).unwrap_or(e));
    }
    crate::restore::select(&listing.archives, strategy, sel)
}

/// Move the first problem whose archive id matches out of the listing.
fn take_problem(listing: &mut Listing, matches: impl Fn(&str) -> bool) -> Option<Error> {
    let i = listing
        .problems
        .iter()
        .position(|(path, _)| id_of_sidecar(path).is_some_and(&matches))?;
    let (path, e) = listing.problems.swap_remove(i);
    Some(match e {
        e @ Error::Archive { .. } => e,
        other => crate::error::msg(format!("{}: {other}", path.display())),
    })
}

fn id_of_sidecar(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()?.strip_suffix(SIDECAR_EXT)
}
