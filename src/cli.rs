//! Command line: argv and `-o` option strings to typed options.

/// Entry point called by main: returns the process exit code.
pub fn main_entry() -> i32 {
    eprintln!("unionmount: not implemented yet");
    2
}
