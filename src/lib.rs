//! rvm-backup: backup and recovery for reverse vending machine boards.
//!
//! Data flows one way (see docs/architecture.md):
//! `sources` → `backup` → `format` (hash, deflate, encrypt, frame) →
//! `store` (parts, sidecar, crash-safe publish); and back through
//! `store` → `format` (authenticate, inflate, hash) → `verify` / `restore`.
//! `cli` parses the command line and drives these on a smol executor.

#![forbid(unsafe_code)]

pub mod alerting;
pub mod audit;
pub mod backup;
pub mod chain;
pub mod child;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod hooks;
pub mod keys;
pub mod logger;
pub mod monitor;
pub mod net;
pub mod offsite;
pub mod ops;
pub mod out;
pub mod pitr;
pub mod progress;
pub mod prune;
pub mod recovery;
pub mod recovery_set;
pub mod restore;
pub mod retention;
pub mod safefs;
pub mod server;
pub mod sources;
pub mod state;
pub mod store;
pub mod strategy;
pub mod timefmt;
pub mod verify;
pub mod workers;
