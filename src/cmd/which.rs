//! `unionmount which PATH`: which layer of a mount provides a path.

use super::{Error, emit, parse};
use crate::inspect::which;
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Show which layer of a mount provides PATH and which layers it hides \
                   (layer 1 is the base layer; upper is the writable layer)")]
struct WhichArgs {
    /// A path inside a mounted unionmount (its last component is not followed)
    path: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `unionmount which PATH`.
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    let a: WhichArgs = parse("which", args)?;
    let (text, found) = which::which(&a.path, a.json)?;
    emit(&text)?;
    Ok(if found { 0 } else { 1 })
}
