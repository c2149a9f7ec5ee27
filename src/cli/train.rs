//! `ncodec train`: trains a codec on a folder of media, with checkpoints and `--resume`.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::HyperpriorConfig;
use ncodec_codecs::walloc::Medium;
use ncodec_training::hyperprior::{TrainOptions, train};
use ncodec_training::walloc::WallocTrainOptions;

/// Arguments of `ncodec train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Codec to train: hyperprior, walloc-image or walloc-audio.
    #[arg(long)]
    pub codec: String,
    /// Folder of training media (searched recursively).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder of validation media (default: every 32nd file of --data, at most 12, held out; for
    /// audio every 8th WAV, at most 2).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Leave out files whose path contains any of these texts (comma-separated; WaLLoC only), e.g.
    /// the evaluation split of a dataset.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
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
    /// Samples per batch (default 8).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Random crop side in pixels (hyperprior: multiple of 64, default 128; walloc-image: multiple
    /// of 2^J, default 128) or audio window in samples (walloc-audio: default 16384).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Adam learning rate, divided by 10 for the last 15 % of the steps (hyperprior default 1e-4,
    /// WaLLoC 3e-4).
    #[arg(long)]
    pub lr: Option<f64>,
    /// WaLLoC: distortion weight α at quantization step 1 (loss α·MSE/s² + bits per position;
    /// default 1000 for images, 2000 for audio).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// WaLLoC: latent channels (default 48 for images, 128 for audio).
    #[arg(long)]
    pub latent: Option<usize>,
    /// WaLLoC: wavelet packet levels J (default 3 for images, 7 for audio).
    #[arg(long)]
    pub levels: Option<usize>,
    /// WaLLoC: decoder width (default 96 for images, 128 for audio).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// WaLLoC: decoder residual blocks (default 3).
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Start from random weights instead of a PCA of the data (WaLLoC: of its wavelet bands;
    /// hyperprior: of its 16×16 blocks, for the linear shortcut).
    #[arg(long)]
    pub no_pca_init: bool,
    /// Hyperprior: the plain Minnen et al. network, without the linear block-transform shortcut
    /// beside g_a and g_s.
    #[arg(long)]
    pub no_shortcut: bool,
    /// Hyperprior: start a fresh run from these weights (e.g. assets/hyperprior/weights.ncw) instead
    /// of random or PCA weights; weights with a smaller --m are widened, the new latent channels
    /// starting as the next principal components of the training blocks.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Hyperprior: steps over which the learning rate ramps up from zero (default 200 with
    /// --init-from, else 0).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Hyperprior: charge y's rate on the rounded symbols the coder writes instead of the
    /// additive-noise proxy (for fine-tuning trained weights to the real rate).
    #[arg(long)]
    pub hard_rate: bool,
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
    match args.codec.as_str() {
        "hyperprior" => run_hyperprior(args, backend, quiet),
        "walloc-image" => run_walloc(args, Medium::Image, backend, quiet),
        "walloc-audio" => run_walloc(args, Medium::Audio, backend, quiet),
        other => bail!(
            "training {other} is not available in this build (trainable: hyperprior, walloc-image, walloc-audio)"
        ),
    }
}

fn run_hyperprior(args: &TrainArgs, backend: Backend, quiet: bool) -> Result<()> {
    let walloc_only = [
        ("--alpha", args.alpha.is_some()),
        ("--latent", args.latent.is_some()),
        ("--levels", args.levels.is_some()),
        ("--hidden", args.hidden.is_some()),
        ("--blocks", args.blocks.is_some()),
        ("--exclude", !args.exclude.is_empty()),
    ];
    if let Some((flag, _)) = walloc_only.iter().find(|f| f.1) {
        bail!("{flag} is a WaLLoC option; the hyperprior takes --n and --m");
    }
    let defaults = TrainOptions::default();
    let options = TrainOptions {
        data: args.data.clone(),
        val: args.val.clone(),
        model: HyperpriorConfig {
            n: args.n,
            m: args.m,
            shortcut: !args.no_shortcut,
            ..HyperpriorConfig::SHIPPED
        },
        steps: args.steps,
        batch: args.batch.unwrap_or(defaults.batch),
        crop: args.crop.unwrap_or(defaults.crop),
        lr: args.lr.unwrap_or(defaults.lr),
        checkpoint_every: args.checkpoint_every.max(1),
        val_every: args.val_every,
        seed: args.seed,
        pca_init: !args.no_pca_init,
        init_from: args.init_from.clone(),
        warmup: args
            .warmup
            .unwrap_or(if args.init_from.is_some() { 200 } else { 0 }),
        hard_rate: args.hard_rate,
        ..defaults
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
    let weights = args.out.join("weights.ncw");
    println!(
        "  (validation codes without a scale calibration; for the files users get, calibrate:\n   ncodec --weights {} calibrate --data {} --out {})",
        weights.display(),
        args.data.display(),
        args.out.join("calibrated.ncw").display()
    );
    Ok(())
}

fn run_walloc(args: &TrainArgs, medium: Medium, backend: Backend, quiet: bool) -> Result<()> {
    if args.no_shortcut || args.init_from.is_some() || args.warmup.is_some() || args.hard_rate {
        bail!("--no-shortcut, --init-from, --warmup and --hard-rate are hyperprior options");
    }
    let d = WallocTrainOptions::defaults(medium);
    let options = WallocTrainOptions {
        data: args.data.clone(),
        val: args.val.clone(),
        exclude: args.exclude.clone(),
        model: ncodec_codecs::walloc::WallocConfig {
            levels: args.levels.unwrap_or(d.model.levels),
            latent: args.latent.unwrap_or(d.model.latent),
            hidden: args.hidden.unwrap_or(d.model.hidden),
            blocks: args.blocks.unwrap_or(d.model.blocks),
            ..d.model
        },
        steps: args.steps,
        batch: args.batch.unwrap_or(d.batch),
        crop: args.crop.unwrap_or(d.crop),
        lr: args.lr.unwrap_or(d.lr),
        alpha: args.alpha.unwrap_or(d.alpha),
        checkpoint_every: args.checkpoint_every.max(1),
        val_every: args.val_every,
        seed: args.seed,
        pca_init: !args.no_pca_init,
        ..d
    };
    let summary = ncodec_training::walloc::train(options, &args.out, args.resume, backend, quiet)
        .map_err(|e| anyhow!(e))?;
    println!(
        "trained steps {}..{} at {:.3} steps/s on {backend}; weights: {}",
        summary.start,
        summary.end,
        summary.steps_per_second,
        args.out.join("weights.ncw").display()
    );
    let unit = match medium {
        Medium::Image => "bpp",
        Medium::Audio => "kbps",
    };
    for (q, rate, db) in &summary.last_validation {
        println!("  validation q{q}: {rate:.4} {unit}, {db:.2} dB");
    }
    Ok(())
}
