//! `ncodec encode`: media → .ncd.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use ncodec_bitstream::CodecId;
use ncodec_codecs::registry::default_codec;
use ncodec_codecs::{CodecRegistry, EncodeOptions, Media, Quality};

use crate::io::{media_kind, write_atomic};

/// Arguments of `ncodec encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Input image (PNG, JPEG), WAV or video.
    pub input: PathBuf,
    /// Output .ncd file (default: the input with extension .ncd).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Quality level (hyperprior: 1..8, fractional values interpolate, 0.1..1 coarsens level 1's
    /// quantization step; walloc-image and walloc-audio: 1..8) or target rate (e.g. 0.25bpp for
    /// images, 64kbps for audio): the highest quality whose file fits.
    #[arg(short, long, default_value = "4")]
    pub quality: Quality,
    /// Codec (default: hyperprior for images, walloc-audio for WAV, odvae for video; walloc-image
    /// for images on request).
    #[arg(long)]
    pub codec: Option<String>,
}

/// Encodes one file.
///
/// # Errors
/// Unsupported input, unavailable codec, or I/O failure.
pub fn run(args: &EncodeArgs, registry: &CodecRegistry) -> Result<()> {
    let kind = media_kind(&args.input).with_context(|| {
        format!(
            "{}: unsupported input type (expected .png, .jpg, .wav or a video file)",
            args.input.display()
        )
    })?;
    let name = match &args.codec {
        Some(n) => n.as_str(),
        None => default_codec(kind).with_context(|| format!("no default codec for {kind}"))?,
    };
    let codec = registry.by_name(name)?;
    if codec.info().media != kind {
        bail!(
            "codec {} codes {}, but {} is {kind}",
            codec.info().name,
            codec.info().media,
            args.input.display()
        );
    }
    let media = match kind {
        "image" => {
            let (img, conversion) = ncodec_codecs::media::picture::load_rgb8(&args.input)
                .with_context(|| format!("reading {}", args.input.display()))?;
            for note in &conversion.notes {
                eprintln!("note: {}: {note}", args.input.display());
            }
            Media::Image(img)
        }
        "audio" => Media::Audio(
            ncodec_codecs::media::audio::read_wav_file(
                &args.input,
                &ncodec_bitstream::Limits::default(),
            )
            .with_context(|| format!("reading {}", args.input.display()))?,
        ),
        other => bail!("reading {other} input is not available in this build"),
    };
    let file = codec.encode(
        &media,
        &EncodeOptions {
            quality: args.quality,
        },
    )?;
    let bytes = file.to_bytes()?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| args.input.with_extension("ncd"));
    write_atomic(&out, &bytes)?;
    match &media {
        Media::Image(img) => {
            let coded = match ncodec_codecs::hyperprior::coded_picture_size(&file) {
                Ok((w, h)) if file.codec == CodecId::HYPERPRIOR && (w, h) != img.dimensions() => {
                    format!(", coded at {w}×{h}")
                }
                _ => String::new(),
            };
            println!(
                "{} → {} ({} bytes, {:.4} bpp, quality {}{coded})",
                args.input.display(),
                out.display(),
                bytes.len(),
                bytes.len() as f64 * 8.0 / (f64::from(img.width()) * f64::from(img.height())),
                file.params.quality
            )
        }
        Media::Audio(a) => println!(
            "{} → {} ({} bytes, {:.2} kbps, {} Hz, {} channel(s), {:.2} s, quality {})",
            args.input.display(),
            out.display(),
            bytes.len(),
            bytes.len() as f64 * 8.0 / a.seconds().max(1e-9) / 1000.0,
            a.sample_rate,
            a.channels,
            a.seconds(),
            file.params.quality
        ),
        _ => println!(
            "{} → {} ({} bytes)",
            args.input.display(),
            out.display(),
            bytes.len()
        ),
    }
    Ok(())
}
