//! The `rvm-backup` binary: run the command line, turn any error into one
//! line on stderr and a non-zero exit status.

#![forbid(unsafe_code)]

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = rvm_backup::cli::main(args);
    std::process::exit(code);
}
