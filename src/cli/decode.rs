//! `ncodec decode`: .ncd → media.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ncodec_bitstream::{Container, Limits};
use ncodec_codecs::{CodecRegistry, Media};

use crate::io::write_atomic;

/// Arguments of `ncodec decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The .ncd file.
    pub input: PathBuf,
    /// Output file (default: the input with the media's extension: .png, .wav, .json for symbols).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The original image: print PSNR and MS-SSIM of the decoded image against it.
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

/// Decodes one file; nothing is written unless decoding succeeds.
///
/// # Errors
/// A damaged file, a file of an unavailable codec, or I/O failure.
pub fn run(args: &DecodeArgs, registry: &CodecRegistry) -> Result<()> {
    let limits = Limits::default();
    let file = Container::read_file(&args.input, &limits)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let codec = registry.by_id(file.codec)?;
    let media = codec
        .decode(&file, &limits)
        .with_context(|| format!("decoding {}", args.input.display()))?;
    let (bytes, ext) = match &media {
        Media::Image(img) => {
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            (png, "png")
        }
        Media::Symbols(s) => (serde_json::to_vec(s)?, "json"),
        Media::Audio(a) => (ncodec_codecs::media::audio::wav_bytes(a)?, "wav"),
        other => anyhow::bail!(
            "writing {} output is not available in this build",
            other.kind_name()
        ),
    };
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.input.with_extension(ext));
    write_atomic(&out, &bytes)?;
    println!("{} → {}", args.input.display(), out.display());
    if let (Some(original), Media::Audio(decoded)) = (&args.compare, &media) {
        let reference = ncodec_codecs::media::audio::read_wav_file(original, &limits)
            .with_context(|| format!("reading {}", original.display()))?;
        if reference.samples.len() != decoded.samples.len()
            || reference.channels != decoded.channels
        {
            anyhow::bail!(
                "{} has {} samples in {} channel(s), the decoded audio {} in {}",
                original.display(),
                reference.samples.len(),
                reference.channels,
                decoded.samples.len(),
                decoded.channels
            );
        }
        let f = |v: &[f32]| v.iter().map(|&s| f64::from(s)).collect::<Vec<_>>();
        let (x, y) = (f(&reference.samples), f(&decoded.samples));
        let snr = ncodec_training::metrics::snr(&x, &y)?;
        // Segmental SNR over 20 ms frames of interleaved samples.
        let frame = (reference.sample_rate as usize / 50).max(1) * usize::from(reference.channels);
        let seg = ncodec_training::metrics::segmental_snr(&x, &y, frame)?;
        let kbps = std::fs::metadata(&args.input)?.len() as f64 * 8.0
            / reference.seconds().max(1e-9)
            / 1000.0;
        println!("{kbps:.2} kbps, SNR {snr:.2} dB, segmental SNR {seg:.2} dB");
    }
    if let (Some(original), Media::Image(img)) = (&args.compare, &media) {
        let (reference, _) = ncodec_codecs::media::picture::load_rgb8(original)
            .with_context(|| format!("reading {}", original.display()))?;
        if reference.dimensions() != img.dimensions() {
            anyhow::bail!(
                "{} is {}×{}, the decoded image {}×{}",
                original.display(),
                reference.width(),
                reference.height(),
                img.width(),
                img.height()
            );
        }
        let psnr = ncodec_training::metrics::psnr_u8(reference.as_raw(), img.as_raw())?;
        let ms = ncodec_training::metrics::ms_ssim_u8(
            reference.as_raw(),
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
            3,
        )
        .map(ncodec_training::metrics::ms_ssim_db);
        let bpp = std::fs::metadata(&args.input)?.len() as f64 * 8.0
            / (f64::from(img.width()) * f64::from(img.height()));
        match ms {
            Ok(ms) => println!("{bpp:.4} bpp, PSNR {psnr:.2} dB, MS-SSIM {ms:.2} dB"),
            Err(_) => println!("{bpp:.4} bpp, PSNR {psnr:.2} dB (image too small for MS-SSIM)"),
        }
    }
    Ok(())
}
