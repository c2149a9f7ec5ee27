//! `ncodec plot`: rate-distortion PNGs and Bjøntegaard deltas.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ncodec_training::bdrate::{Interp, bd};
use ncodec_training::plot::{PlotOptions, plot_rd};
use ncodec_training::rd::RdCurve;

/// Arguments of `ncodec plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Rate-distortion JSON files (CompressAI schema; a `{"codecs": [...]}` collection adds each curve).
    pub curves: Vec<PathBuf>,
    /// Output PNG (bpp–PSNR and bpp–MS-SSIM panels).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Anchor for BD-rates (default: the first curve).
    #[arg(long)]
    pub bd_rate: Option<PathBuf>,
    /// Logarithmic rate axis.
    #[arg(long)]
    pub log_rate: bool,
    /// Plot title.
    #[arg(long, default_value = "Rate-distortion")]
    pub title: String,
}

/// Prints BD-rates of every curve against the anchor and draws the plot.
///
/// # Errors
/// Unreadable files, curves without rate/PSNR, or a PNG that cannot be written.
pub fn run(args: &PlotArgs) -> Result<()> {
    let mut curves = Vec::new();
    let mut sources = Vec::new();
    for p in &args.curves {
        for c in RdCurve::read_all(p).with_context(|| format!("reading {}", p.display()))? {
            curves.push(c);
            sources.push(p.clone());
        }
    }
    // Two curves of the same name (e.g. two JPEG runs) are told apart by their file names.
    for i in 0..curves.len() {
        if curves.iter().filter(|c| c.name == curves[i].name).count() > 1 {
            let stem = sources[i]
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            curves[i].name = format!("{} ({stem})", curves[i].name);
        }
    }
    let anchor = match &args.bd_rate {
        Some(p) => {
            Some(RdCurve::read(p).with_context(|| format!("reading anchor {}", p.display()))?)
        }
        None if curves.len() >= 2 => Some(curves[0].clone()),
        None => None,
    };
    if anchor.is_none() && args.output.is_none() {
        bail!(
            "nothing to do: give -o OUT.png to plot, or --bd-rate ANCHOR.json (or two curves) for BD-rates"
        );
    }
    if let Some(anchor) = &anchor {
        let (ar, aq) = anchor.rate_psnr()?;
        println!(
            "BD vs anchor '{}' (PSNR-RGB, or SNR for audio; negative BD-rate = fewer bits):",
            anchor.name
        );
        println!(
            "{:<40} {:>14} {:>14} {:>14} {:>12}",
            "curve", "BD-rate pchip", "BD-rate poly", "BD-PSNR pchip", "overlap dB"
        );
        for c in &curves {
            if args.bd_rate.is_none() && std::ptr::eq(c, &curves[0]) {
                continue;
            }
            let (r, q) = c.rate_psnr()?;
            let p = bd((&ar, &aq), (&r, &q), Interp::Pchip);
            let poly = bd((&ar, &aq), (&r, &q), Interp::Polynomial);
            match (p, poly) {
                (Ok(p), poly) => {
                    println!(
                        "{:<40} {:>13.2}% {:>14} {:>11.3} dB {:>6.2}-{:.2}",
                        c.name,
                        p.rate_percent,
                        poly.map_or("n/a".into(), |b| format!("{:.2}%", b.rate_percent)),
                        p.psnr_db,
                        p.quality_overlap.0,
                        p.quality_overlap.1
                    );
                    if p.overlap_fraction < 0.5 {
                        eprintln!(
                            "warning: '{}' overlaps the anchor over only {:.0} % of its quality range; the BD-rate extrapolates little but says little",
                            c.name,
                            p.overlap_fraction * 100.0
                        );
                    }
                }
                (Err(e), _) => println!("{:<40} {e}", c.name),
            }
        }
        // An anchor given only through --bd-rate is drawn too (first); one also among the curves
        // is drawn once.
        if let Some(p) = &args.bd_rate
            && !args.curves.iter().any(|c| same_file(c, p))
        {
            curves.insert(0, anchor.clone());
        }
    }
    if let Some(out) = &args.output {
        // Draw into a temporary file beside the target, then rename: the PNG appears whole or not at all.
        let tmp = out.with_extension(format!("{}.tmp.png", std::process::id()));
        let opts = PlotOptions {
            title: args.title.clone(),
            log_rate: args.log_rate,
            ..PlotOptions::default()
        };
        let drawn = plot_rd(&curves, &tmp, &opts);
        if drawn.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        drawn?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Whether two paths name the same file (compared as written where either cannot be resolved).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::same_file;

    #[test]
    fn the_anchor_is_recognised_among_the_curves_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, "{}").unwrap();
        std::fs::write(&b, "{}").unwrap();
        assert!(same_file(&a, &dir.path().join(".").join("a.json")));
        assert!(!same_file(&a, &b));
        // Missing files compare as written.
        let gone = dir.path().join("gone.json");
        assert!(same_file(&gone, &gone) && !same_file(&gone, &a));
    }
}
