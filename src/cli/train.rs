//! `ncodec train`: trains a codec on a folder of media, with checkpoints and `--resume`.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::HyperpriorConfig;
use ncodec_training::hyperprior::{TrainOptions, train};

/// Arguments of `ncodec train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Codec to train (hyperprior; walloc-image and walloc-audio are planned).
    #[arg(long)]
    pub codec: String,
    /// Folder of training media (searched recursively).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder of validation media (default: every 32nd file of --data, at most 12, held out).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Run folder for checkpoints, logs and the loss curve.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the last checkpoint in --out (the other options come from its run.json;
    /// --steps may be raised).
    #[arg(long)]
    pub resume: bool,
    /// Total number of optimizer steps.
    #[arg(long, default_value_t = 20_000)]
    pub steps: u64,
    /// Samples per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Random crop side in pixels (a multiple of 64).
    #[arg(long, default_value_t = 128)]
    pub crop: usize,
    /// Adam learning rate (divided by 10 for the last 15 % of the steps).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Channels N of the hidden layers and of z.
    #[arg(long, default_value_t = HyperpriorConfig::SHIPPED.n)]
    pub n: usize,
    /// Channels M of the latent y.
    #[arg(long, default_value_t = HyperpriorConfig::SHIPPED.m)]
    pub m: usize,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    /// Steps between validations (real encodes of the held-out images; 0 = never).
    #[arg(long, default_value_t = 1000)]
    pub val_every: u64,
    /// Seed of the batches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `ncodec train`.
///
/// # Errors
/// Unknown codec, unreadable data, an existing run without --resume, or a training failure.
pub fn run(args: &TrainArgs, backend: Backend, quiet: bool) -> Result<()> {
    if args.codec != "hyperprior" {
        bail!(
            "training {} is not available in this build (trainable: hyperprior)",
            args.codec
        );
    }
    let options = TrainOptions {
        data: args.data.clone(),
        val: args.val.clone(),
        model: HyperpriorConfig {
            n: args.n,
            m: args.m,
            ..HyperpriorConfig::SHIPPED
        },
        steps: args.steps,
        batch: args.batch,
        crop: args.crop,
        lr: args.lr,
        checkpoint_every: args.checkpoint_every.max(1),
        val_every: args.val_every,
        seed: args.seed,
        ..TrainOptions::default()
    };
    let summary = train(options, &args.out, args.resume, backend, quiet).map_err(|e| anyhow!(e))?;
    println!(
        "trained steps {}..{} at {:.3} steps/s on {backend}; weights: {}",
        summary.start,
        summary.end,
        summary.steps_per_second,
        args.out.join("weights.ncw").display()
    );
    for (q, bpp, psnr) in &summary.last_validation {
        println!("  validation q{q}: {bpp:.4} bpp, {psnr:.2} dB");
    }
    Ok(())
}
