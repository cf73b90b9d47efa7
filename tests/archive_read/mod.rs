//! Reading archives back through the library (no restore): every entry of
//! every archive of a strategy, with its content. For tests only; archives
//! here are small.
#![allow(dead_code)]

use std::path::Path;

use rvm_backup::format::sidecar::Meta;
use rvm_backup::format::{ArchiveReader, EntryHeader};
use rvm_backup::store::parts::PartReader;
use rvm_backup::store::Store;
use rvm_backup::strategy::Strategy;

pub struct Entry {
    pub header: EntryHeader,
    pub content: Vec<u8>,
    pub status: u8,
}

/// Every archive of `strategy` under `backups`, oldest first.
pub fn read_all(backups: &Path, key_file: &Path, strategy: Strategy) -> Vec<(Meta, Vec<Entry>)> {
    let key = rvm_backup::keys::load(key_file).unwrap();
    let listing = Store::new(backups).list(Some(strategy), Some(&key));
    assert!(listing.problems.is_empty(), "unreadable sidecars");
    listing
        .archives
        .iter()
        .map(|a| {
            let parts = PartReader::open(&a.dir, &a.meta.parts).unwrap();
            let mut r = ArchiveReader::open(parts, Some(&key)).unwrap();
            let mut entries = Vec::new();
            while let Some(header) = r.next_entry().unwrap() {
                let mut content = Vec::new();
                while let Some(c) = r.content_chunk().unwrap() {
                    content.extend_from_slice(c);
                }
                let status = r.end_entry().unwrap().status;
                entries.push(Entry {
                    header,
                    content,
                    status,
                });
            }
            (a.meta.clone(), entries)
        })
        .collect()
}

/// The newest archive's sidecar and entries.
pub fn newest(backups: &Path, key_file: &Path, strategy: Strategy) -> (Meta, Vec<Entry>) {
    read_all(backups, key_file, strategy).pop().unwrap()
}
