//! Where backup data comes from: file trees and the live SQLite database.
//!
//! Sources only read. They hand the backup driver entries and content in
//! bounded chunks; they never buffer a whole file or database.

pub mod database;
pub mod db_facts;
pub mod exclude;
pub mod fingerprint;
pub mod tree;
