//! `ncodec decode`: .ncd → media.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ncodec_bitstream::{Container, Limits};
use ncodec_codecs::{Backend, CodecRegistry, Media};

use crate::io::write_atomic;

/// Arguments of `ncodec decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// The .ncd file.
    pub input: PathBuf,
    /// Output file (default: the input with the media's extension: .png, .wav, .json for symbols).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Decodes one file; nothing is written unless decoding succeeds.
///
/// # Errors
/// A damaged file, a file of an unavailable codec, or I/O failure.
pub fn run(args: &DecodeArgs, backend: Backend) -> Result<()> {
    let limits = Limits::default();
    let file = Container::read_file(&args.input, &limits)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let registry = CodecRegistry::builtin(backend);
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
    Ok(())
}
