//! `ncodec info`: the container header and streams, human-readable or JSON.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ncodec_bitstream::{Container, Limits, MediaInfo, StreamKind};
use serde_json::json;

/// Arguments of `ncodec info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The .ncd file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses the file and prints every header field and stream.
///
/// # Errors
/// If the file cannot be read or is not a valid .ncd file.
pub fn run(args: &InfoArgs) -> Result<()> {
    let limits = Limits::default();
    let file = Container::read_file(&args.file, &limits)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let size = std::fs::metadata(&args.file)?.len();
    let report = describe(&file, size);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&file, size);
    }
    Ok(())
}

fn rate(media: &MediaInfo, size: u64) -> (Option<f64>, Option<f64>) {
    let bits = size as f64 * 8.0;
    match *media {
        MediaInfo::Image { width, height, .. } => {
            (Some(bits / (f64::from(width) * f64::from(height))), None)
        }
        MediaInfo::Audio {
            sample_rate,
            sample_count,
            ..
        } => {
            let seconds = sample_count as f64 / f64::from(sample_rate);
            (None, (seconds > 0.0).then(|| bits / seconds / 1000.0))
        }
        MediaInfo::Video {
            width,
            height,
            frame_count,
            fps_num,
            fps_den,
            ..
        } => {
            let seconds = f64::from(frame_count) * f64::from(fps_den) / f64::from(fps_num);
            (
                Some(bits / (f64::from(width) * f64::from(height) * f64::from(frame_count))),
                Some(bits / seconds / 1000.0),
            )
        }
    }
}

fn kind_name(k: StreamKind) -> String {
    match k {
        StreamKind::Raw => "raw".into(),
        StreamKind::Ans32 => "ans32".into(),
        StreamKind::Unknown(b) => format!("unknown({b})"),
    }
}

/// The JSON report of a file.
pub fn describe(file: &Container, size: u64) -> serde_json::Value {
    let (bpp, kbps) = rate(&file.media, size);
    json!({
        "format_version": format!("{}.{}", file.version.0, file.version.1),
        "file_bytes": size,
        "codec": { "id": file.codec.0, "name": file.codec.name() },
        "model_id": file.model.to_string(),
        "media": file.media,
        "quality": file.params.quality,
        "codec_params_bytes": file.params.extra.len(),
        "bpp": bpp,
        "kbps": kbps,
        "streams": file.streams.iter().map(|s| json!({
            "kind": kind_name(s.kind),
            "label": s.label,
            "bytes": s.data.len(),
            "crc32": format!("{:08x}", crc32fast::hash(&s.data)),
        })).collect::<Vec<_>>(),
    })
}

fn print_text(file: &Container, size: u64) {
    let (bpp, kbps) = rate(&file.media, size);
    println!("format        ncd {}.{}", file.version.0, file.version.1);
    println!("file size     {size} bytes");
    println!("codec         {}", file.codec);
    println!("model id      {}", file.model);
    match &file.media {
        MediaInfo::Image {
            width,
            height,
            channels,
            bit_depth,
        } => {
            println!("media         image {width}×{height}, {channels} channel(s), {bit_depth} bit")
        }
        MediaInfo::Audio {
            sample_rate,
            channels,
            bit_depth,
            float,
            sample_count,
        } => println!(
            "media         audio {sample_rate} Hz, {channels} channel(s), {bit_depth}-bit {}, {sample_count} samples ({:.3} s)",
            if *float { "float" } else { "integer" },
            *sample_count as f64 / f64::from(*sample_rate)
        ),
        MediaInfo::Video {
            width,
            height,
            channels,
            bit_depth,
            frame_count,
            fps_num,
            fps_den,
        } => println!(
            "media         video {width}×{height}, {channels} channel(s), {bit_depth} bit, {frame_count} frames at {fps_num}/{fps_den} fps"
        ),
    }
    println!("quality       {}", file.params.quality);
    println!("codec params  {} bytes", file.params.extra.len());
    if file.codec == ncodec_bitstream::CodecId::HYPERPRIOR && !file.params.extra.is_empty() {
        match ncodec_codecs::hyperprior::coded_picture_size(file) {
            Ok((w, h)) => println!("coded size    {w}×{h} (enlarged on decoding)"),
            Err(e) => println!("coded size    unknown: {e}"),
        }
    }
    if let Some(bpp) = bpp {
        println!("rate          {bpp:.4} bpp");
    }
    if let Some(kbps) = kbps {
        println!("rate          {kbps:.2} kbps");
    }
    println!("streams       {}", file.streams.len());
    for (i, s) in file.streams.iter().enumerate() {
        println!(
            "  #{i:<3} label {:<3} {:<8} {:>10} bytes  crc32 {:08x}",
            s.label,
            kind_name(s.kind),
            s.data.len(),
            crc32fast::hash(&s.data)
        );
    }
}
