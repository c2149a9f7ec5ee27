//! `ncodec train`, `eval` and `plot`: their arguments are fixed now so scripts can be written
//! against them; each reports clearly which part has not landed yet.

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

/// Arguments of `ncodec eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Codec to evaluate.
    #[arg(long)]
    pub codec: String,
    /// Dataset folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Comma-separated quality points (levels or rates).
    #[arg(short, long)]
    pub quality: Option<String>,
    /// Output JSON (CompressAI schema).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write one row per item.
    #[arg(long)]
    pub per_item: bool,
}

/// Arguments of `ncodec plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Rate-distortion JSON files (CompressAI schema).
    pub curves: Vec<PathBuf>,
    /// Output PNG.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print BD-rate of each curve against this anchor.
    #[arg(long)]
    pub bd_rate: Option<PathBuf>,
}

/// `ncodec train`.
///
/// # Errors
/// Always, until a trainable codec has landed.
pub fn train(args: &TrainArgs) -> Result<()> {
    bail!(
        "training {} is not available in this build: no trainable codec has landed yet (the hyperprior is the first)",
        args.codec
    )
}

/// `ncodec eval`.
///
/// # Errors
/// Always, until the evaluation module has landed.
pub fn eval(args: &EvalArgs) -> Result<()> {
    bail!(
        "evaluating {} on {} is not available in this build: the evaluation module has not landed yet",
        args.codec,
        args.data.display()
    )
}

/// `ncodec plot`.
///
/// # Errors
/// Always, until the evaluation module has landed.
pub fn plot(args: &PlotArgs) -> Result<()> {
    bail!(
        "plotting {} curve(s) is not available in this build: the evaluation module has not landed yet",
        args.curves.len()
    )
}
