//! Helpers shared by the end-to-end tests.

use std::process::{Command, Output};

/// Runs the `ncodec` binary with `args`.
pub fn ncodec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ncodec"))
        .args(args)
        .output()
        .expect("the ncodec binary runs")
}

/// Lossy UTF-8 text of a process output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
