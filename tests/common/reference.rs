//! What a restore of a dead board must bring back: a copy of the board's
//! three trees (modes, times and links kept by `cp -a`) and its database
//! rows, taken while the board was alive, and the check against it.

use std::fs;
use std::process::Command;

use super::{assert_same_tree, db_dump, Board, TempDir};

/// The trees a populated board backs up, relative to its root.
pub const TREES: [&str; 3] = ["etc/myrvm", "opt/myrvm", "var/log/myrvm"];

/// A copy of the board's trees and its rows.
pub struct Reference {
    pub copy: TempDir,
    pub db: Vec<String>,
}

/// Copy `b`'s trees into a scratch directory named after `name`, and dump
/// its rows.
pub fn reference(b: &Board, name: &str) -> Reference {
    let copy = TempDir::new(name);
    for t in TREES {
        let to = copy.path().join(t);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(b.root.join(t))
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
    }
    Reference {
        db: db_dump(&b.db_path()),
        copy,
    }
}

/// `b`'s trees and rows are the reference's again.
pub fn assert_restored(b: &Board, r: &Reference) {
    for t in TREES {
        assert_same_tree(&r.copy.path().join(t), &b.root.join(t));
    }
    assert_eq!(db_dump(&b.db_path()), r.db, "database rows differ");
}
