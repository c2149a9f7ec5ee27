//! # ncodec
//!
//! The `ncodec` command line: one module per subcommand under [`cli`]. The binary is a thin
//! `main` over [`cli::run`], so tests call the same code.
#![forbid(unsafe_code)]

pub mod cli;
pub mod io;
