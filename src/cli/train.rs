//! `ncodec train`: its arguments are fixed now so scripts can be written against them; it reports
//! clearly that no trainable codec has landed yet.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Arguments of `ncodec train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Codec to train (hyperprior, walloc-image, walloc-audio, ...).
    #[arg(long)]
    pub codec: String,
    /// Folder of training media (images, WAVs or videos).
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder for checkpoints, logs and the loss curve.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Number of optimizer steps.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
}

/// `ncodec train`.
///
/// # Errors
/// Always, until a trainable codec has landed.
pub fn run(args: &TrainArgs) -> Result<()> {
    bail!(
        "training {} is not available in this build: no trainable codec has landed yet (the hyperprior is the first)",
        args.codec
    )
}
