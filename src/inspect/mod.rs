//! `diff`, `commit` and `which`: look at what a mount changed and where files come from.

use std::ffi::OsString;

/// `unionmount diff TARGET [--json]`; `args` follow the subcommand name.
pub fn cli_diff(_args: &[OsString]) -> i32 {
    eprintln!("unionmount diff: not implemented yet");
    2
}

/// `unionmount commit TARGET --output FILE [--gzip|--zstd] [--image NAME --oci DIR]`.
pub fn cli_commit(_args: &[OsString]) -> i32 {
    eprintln!("unionmount commit: not implemented yet");
    2
}

/// `unionmount which PATH`.
pub fn cli_which(_args: &[OsString]) -> i32 {
    eprintln!("unionmount which: not implemented yet");
    2
}
