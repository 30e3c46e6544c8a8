//! Command line: argv and `-o` option strings to typed options.

use std::ffi::OsString;

/// Entry point called by main: returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let rest = &args[1.min(args.len())..];
    match rest.first().and_then(|a| a.to_str()) {
        Some("images") => crate::store::cli_images(&rest[1..]),
        Some("inspect") => crate::store::cli_inspect(&rest[1..]),
        Some("diff") => crate::inspect::cli_diff(&rest[1..]),
        Some("commit") => crate::inspect::cli_commit(&rest[1..]),
        Some("which") => crate::inspect::cli_which(&rest[1..]),
        _ => {
            eprintln!("unionmount: mounting is not implemented yet");
            2
        }
    }
}
