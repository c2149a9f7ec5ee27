//! `ncodec eval`: rate-distortion measurement on a dataset folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ncodec_codecs::CodecRegistry;
use ncodec_training::eval::{
    Classical, CodecRunner, ImageRunner, Progress, dataset_images, evaluate,
};
use ncodec_training::metrics::ms_ssim_db;

use crate::io::write_atomic;

/// Arguments of `ncodec eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Codec: an ncodec codec (hyperprior, ...) or a classical one (jpeg, webp, avif, jxl).
    #[arg(long)]
    pub codec: String,
    /// Dataset folder of PNG/JPEG images, or of WAV files for an audio codec (searched
    /// recursively).
    #[arg(long)]
    pub data: PathBuf,
    /// Audio: only the WAVs whose path contains one of these texts (comma-separated), e.g. the
    /// evaluation split.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Comma-separated quality points (codec's own scale; default: a sweep over its range).
    #[arg(short, long, value_delimiter = ',')]
    pub quality: Vec<String>,
    /// Output JSON (CompressAI schema); printed to stdout when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write one row per item and rate point.
    #[arg(long)]
    pub per_item: bool,
    /// Parallel workers (default: all cores for classical codecs, 1 for learned ones, whose backend
    /// parallelizes itself).
    #[arg(long)]
    pub threads: Option<usize>,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn tick(&self, failure: Option<String>) {
        if let Some(f) = failure {
            self.0.println(format!("warning: skipped {f}"));
        }
        self.0.inc(1);
    }
}

/// Runs the evaluation and writes the JSON.
///
/// # Errors
/// Unknown or unavailable codec, missing tools, empty dataset, or every item failing.
pub fn run(args: &EvalArgs, registry: &CodecRegistry, quiet: bool) -> Result<()> {
    let classical = Classical::from_name(&args.codec);
    if classical.is_none() && registry.by_name(&args.codec)?.info().media == "audio" {
        return run_audio(args, registry, quiet);
    }
    let learned;
    let runner: &dyn ImageRunner = match &classical {
        Some(c) => {
            c.check_tools()?;
            c
        }
        None => {
            learned = CodecRunner {
                codec: registry.by_name(&args.codec)?,
            };
            &learned
        }
    };
    let items = dataset_images(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?;
    let qualities = if args.quality.is_empty() {
        runner.default_qualities()
    } else {
        args.quality.clone()
    };
    let threads = args.threads.unwrap_or_else(|| {
        if classical.is_some() {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            1
        }
    });
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((items.len() * qualities.len()) as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} items×points, {elapsed} elapsed, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("eval {}", runner.name()));
    let start = std::time::Instant::now();
    let mut curve = evaluate(runner, &items, &qualities, threads, &Bar(bar.clone()))?;
    bar.finish_and_clear();
    if !args.per_item {
        curve.per_item.clear();
    }
    let (rate, psnr) = curve.rate_psnr()?;
    let msssim = curve.series("ms-ssim-rgb").unwrap_or_default();
    eprintln!(
        "{}: {} items × {} points in {:.1} s",
        curve.name,
        items.len(),
        qualities.len(),
        start.elapsed().as_secs_f64()
    );
    eprintln!(
        "{:>10} {:>9} {:>10} {:>12}",
        "quality", "bpp", "PSNR [dB]", "MS-SSIM [dB]"
    );
    for (i, q) in qualities.iter().enumerate() {
        eprintln!(
            "{q:>10} {:>9.4} {:>10.3} {:>12.3}",
            rate[i],
            psnr[i],
            msssim.get(i).copied().map_or(f64::NAN, ms_ssim_db)
        );
    }
    let json = serde_json::to_string_pretty(&curve)?;
    match &args.out {
        Some(path) => write_atomic(path, json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}

fn run_audio(args: &EvalArgs, registry: &CodecRegistry, quiet: bool) -> Result<()> {
    let codec = registry.by_name(&args.codec)?;
    let items: Vec<PathBuf> = ncodec_training::walloc::list_wavs(&args.data)
        .with_context(|| format!("reading dataset {}", args.data.display()))?
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            args.only.is_empty() || args.only.iter().any(|o| s.contains(o.as_str()))
        })
        .collect();
    anyhow::ensure!(
        !items.is_empty(),
        "no WAV file matches --only {:?}",
        args.only
    );
    let qualities = if args.quality.is_empty() {
        (1..=8).map(|q| q.to_string()).collect()
    } else {
        args.quality.clone()
    };
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((items.len() * qualities.len()) as u64)
    };
    let start = std::time::Instant::now();
    let mut curve =
        ncodec_training::eval::evaluate_audio(codec, &items, &qualities, &Bar(bar.clone()))?;
    bar.finish_and_clear();
    if !args.per_item {
        curve.per_file.clear();
    }
    eprintln!(
        "{}: {} files × {} points in {:.1} s",
        curve.name,
        items.len(),
        qualities.len(),
        start.elapsed().as_secs_f64()
    );
    eprintln!(
        "{:>10} {:>9} {:>9} {:>11} {:>10} {:>10}",
        "quality", "kbps", "SNR [dB]", "segSNR [dB]", "enc ×RT", "dec ×RT"
    );
    let col = |k: &str| curve.results.get(k).cloned().unwrap_or_default();
    let (kbps, snr, seg, re, rd) = (
        col("kbps"),
        col("snr"),
        col("segsnr"),
        col("realtime_encode"),
        col("realtime_decode"),
    );
    for (i, q) in qualities.iter().enumerate() {
        eprintln!(
            "{q:>10} {:>9.2} {:>9.2} {:>11.2} {:>10.1} {:>10.1}",
            kbps[i], snr[i], seg[i], re[i], rd[i]
        );
    }
    let json = serde_json::to_string_pretty(&curve)?;
    match &args.out {
        Some(path) => write_atomic(path, json.as_bytes())?,
        None => println!("{json}"),
    }
    Ok(())
}
