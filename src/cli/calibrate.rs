//! `ncodec calibrate`: fits the scale map of hyperprior weights on real images and writes the
//! weights file with it (see `ncodec_codecs::hyperprior::calibrate`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::{HyperpriorCodec, SHIPPED_WEIGHTS, weights};
use ncodec_training::calibrate::{
    CalibrateOptions, DEFAULT_QUALITIES, calibrate_hyperprior, spread,
};
use ncodec_training::data::{list_images, split};

use crate::io::write_atomic;

/// Arguments of `ncodec calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Codec whose weights to calibrate (only the hyperprior has a scale map).
    #[arg(long, default_value = "hyperprior")]
    pub codec: String,
    /// Training folder of PNG/JPEG photos (its validation split, every 32nd file as in
    /// `ncodec train`, is left out). Never the evaluation set.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the calibrated weights file (the global `--weights`, or the shipped
    /// weights, calibrated).
    #[arg(long)]
    pub out: PathBuf,
    /// Images used, spread evenly over the folder.
    #[arg(long, default_value_t = 64)]
    pub images: usize,
    /// Comma-separated qualities each image is coded at (default: 0.25, 0.5 and every level).
    #[arg(short, long, value_delimiter = ',')]
    pub quality: Vec<f32>,
    /// Images larger than this many pixels on a side are cut to their centre.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..))]
    pub max_side: u32,
    /// Fit only the per-channel map, no context table (files then decode without the sequential
    /// context model).
    #[arg(long)]
    pub no_context: bool,
    /// Give the context table a third feature: the magnitudes of the 8 channels before a latent at
    /// its position (a table 5× as large).
    #[arg(long, conflicts_with = "no_context")]
    pub context_depth: bool,
    /// Split each bin of that third feature by the magnitudes of the 16 channels before those 8,
    /// at the position (a table 4× as large again; needs --context-depth).
    #[arg(long, requires = "context_depth")]
    pub context_far: bool,
    /// Fit no latent predictor (each latent's residual is coded as it is, not what its already
    /// coded neighbours fail to predict).
    #[arg(long)]
    pub no_predict: bool,
    /// Keep the bottleneck's own tables for the hyper-latent at every quality instead of scaling
    /// them per quality and channel to the symbols of real photos.
    #[arg(long)]
    pub no_z_tables: bool,
    /// Before calibrating, multiply the quantization step of latent channels FROM..TO (end
    /// excluded) by F, at every quality or, with `@A..B`, at the quality levels A to B−1 of the
    /// ladder 1..=8 only; e.g. `64..256=1.25` or `128..256=0.8@7..9` (repeatable, the factors
    /// multiply): moves bits between channels of a trained network; the weights change, so the
    /// model id does too.
    #[arg(long, value_parser = parse_step_scale)]
    pub step_scale: Vec<StepScale>,
    /// Also measure candidate third context features by two-fold cross-validation over the
    /// images and print bits per symbol for each (a development tool: the weights written are
    /// the same; about 7 GB more memory at the default size).
    #[arg(long, conflicts_with = "no_context")]
    pub screen_context: bool,
}

/// One `--step-scale`: channels, quality levels (1-based, end excluded; `None` for all) and the
/// factor.
#[derive(Debug, Clone, PartialEq)]
pub struct StepScale {
    channels: std::ops::Range<usize>,
    levels: Option<std::ops::Range<usize>>,
    factor: f64,
}

/// Parses `FROM..TO=F` or `FROM..TO=F@A..B`.
fn parse_step_scale(s: &str) -> std::result::Result<StepScale, String> {
    let bad = || {
        format!("expected FROM..TO=FACTOR or FROM..TO=FACTOR@A..B (e.g. 64..256=1.25), got {s:?}")
    };
    let range = |r: &str| -> std::result::Result<std::ops::Range<usize>, String> {
        let (a, b) = r.split_once("..").ok_or_else(bad)?;
        Ok(a.trim().parse().map_err(|_| bad())?..b.trim().parse().map_err(|_| bad())?)
    };
    let (channels, rest) = s.split_once('=').ok_or_else(bad)?;
    let (factor, levels) = match rest.split_once('@') {
        Some((f, l)) => {
            let l = range(l)?;
            if l.start == 0 {
                return Err(format!("quality levels start at 1, got {s:?}"));
            }
            (f, Some(l))
        }
        None => (rest, None),
    };
    Ok(StepScale {
        channels: range(channels)?,
        levels,
        factor: factor.trim().parse().map_err(|_| bad())?,
    })
}

/// Runs the calibration.
///
/// # Errors
/// A codec other than the hyperprior, unreadable weights or data, or no usable image.
pub fn run(
    args: &CalibrateArgs,
    backend: Backend,
    weights_path: Option<&std::path::Path>,
    quiet: bool,
) -> Result<()> {
    if args.codec != "hyperprior" {
        bail!(
            "only the hyperprior has a scale map to calibrate (got --codec {})",
            args.codec
        );
    }
    let bytes = match weights_path {
        Some(p) => std::fs::read(p).with_context(|| format!("reading weights {}", p.display()))?,
        None => SHIPPED_WEIGHTS.to_vec(),
    };
    let bytes = if args.step_scale.is_empty() {
        bytes
    } else {
        let device = ncodec_codecs::Backend::Cpu.device();
        let (config, mut model) =
            weights::load(&bytes, &device).context("loading the hyperprior weights")?;
        for scale in &args.step_scale {
            model = match &scale.levels {
                Some(l) => model.scale_steps_at(
                    scale.channels.clone(),
                    l.start - 1..l.end.saturating_sub(1),
                    scale.factor,
                    &device,
                ),
                None => model.scale_steps(scale.channels.clone(), scale.factor, &device),
            }
            .map_err(anyhow::Error::msg)?;
        }
        weights::to_bytes(&model, &config, true).context("serializing the rescaled weights")?
    };
    let codec = HyperpriorCodec::from_weights(&bytes, backend.device())
        .context("loading the hyperprior weights")?;
    let (lo, hi) = codec.quality_range();
    let qualities = if args.quality.is_empty() {
        DEFAULT_QUALITIES
            .into_iter()
            .filter(|q| (lo..=hi).contains(q))
            .collect()
    } else {
        args.quality.clone()
    };
    if let Some(q) = qualities.iter().find(|q| !(lo..=hi).contains(*q)) {
        bail!("quality {q} is outside the hyperprior's range {lo}..={hi}");
    }
    let all = list_images(&args.data)
        .with_context(|| format!("listing images in {}", args.data.display()))?;
    let (train, _) = split(all, 32, 12);
    let paths: Vec<PathBuf> = spread(train.len(), args.images)
        .into_iter()
        .map(|i| train[i].clone())
        .collect();
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(paths.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "calibrating {bar:30} {pos}/{len} images {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tick = |p: &std::path::Path, skipped: Option<&str>| {
        if let Some(why) = skipped {
            bar.println(format!("warning: skipped {} ({why})", p.display()));
        }
        bar.inc(1);
    };
    let (map, report) = calibrate_hyperprior(
        &codec,
        &paths,
        &qualities,
        args.max_side,
        CalibrateOptions {
            predict: !args.no_predict,
            context: !args.no_context,
            context_depth: args.context_depth,
            context_far: args.context_far,
            z_tables: !args.no_z_tables,
            screen_context: args.screen_context,
        },
        &tick,
    )
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let family = map.family;
    let out = weights::with_scale_map(&bytes, map).context("writing the scale map")?;
    write_atomic(&args.out, &out)?;
    let per = |b: f64| b / report.symbols.max(1) as f64;
    let change = |b: f64| 100.0 * (b / report.bits_before - 1.0);
    let context = if args.no_context {
        String::new()
    } else {
        format!(
            ", with the context table {:.4} ({:+.1} %)",
            per(report.bits_after),
            change(report.bits_after)
        )
    };
    let predicted = if args.no_predict {
        String::new()
    } else {
        format!(
            ", with the latent predictor {:.4} ({:+.1} %)",
            per(report.bits_predicted),
            change(report.bits_predicted)
        )
    };
    println!(
        "calibrated on {} images x {} qualities: y costs {:.4} bits per symbol{predicted}, with the map {:.4} ({:+.1} %; Gaussian tables {:.4}, Laplace {:.4}: {family:?} kept){context}; wrote {}",
        report.images,
        qualities.len(),
        per(report.bits_before),
        per(report.bits_mapped),
        change(report.bits_mapped),
        per(report.bits_by_family[0]),
        per(report.bits_by_family[1]),
        args.out.display()
    );
    println!(
        "z costs {:.0} bits with the bottleneck's tables, {:.0} with the calibrated ones ({:+.1} %)",
        report.z_bits_before,
        report.z_bits_after,
        100.0 * (report.z_bits_after / report.z_bits_before.max(1.0) - 1.0)
    );
    if !report.screened.is_empty() {
        println!(
            "context features, bits per y symbol (two-fold cross-validation, even/odd images):"
        );
        println!("  {:<14} {:>9} {:>10}", "feature", "held-out", "in-sample");
        for f in &report.screened {
            println!(
                "  {:<14} {:>9.4} {:>10.4}",
                f.name,
                per(f.held_out),
                per(f.in_sample)
            );
        }
    }
    if let (Some(free), Some(family)) = (report.free_slot_bits, report.family_per_cell_bits) {
        println!(
            "the written table's symbols in-sample: {:.4} bits per symbol; with Gaussian or Laplace chosen per cell {:.4}; a free histogram per cell and index {:.4}",
            per(report.bits_after),
            per(family),
            per(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{StepScale, parse_step_scale};

    #[test]
    fn step_scales_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_step_scale("64..256=1.25"),
            Ok(StepScale {
                channels: 64..256,
                levels: None,
                factor: 1.25
            })
        );
        assert_eq!(
            parse_step_scale("128..256=0.8@7..9"),
            Ok(StepScale {
                channels: 128..256,
                levels: Some(7..9),
                factor: 0.8
            })
        );
        for bad in [
            "64..256",
            "64-256=1.25",
            "a..256=1",
            "64..256=x",
            "",
            "0..8=1@0..2",
            "0..8=1@3",
            "0..8=1@a..3",
        ] {
            assert!(parse_step_scale(bad).is_err(), "{bad}");
        }
    }
}
