//! How much WaLLoC's learned entropy model saves against the paper's storage (8-bit latents packed
//! losslessly into an image file): at the quality whose step is 1 (`-q 6.6`, 8-bit symbols), the
//! size of the `.ncd` file against the latents packed as a PNG, over a folder of images or WAVs.
//!
//! `cargo run --example walloc_packing -- ../shared/data/kodak`
//! `cargo run --example walloc_packing -- ../shared/data/audio/music brahms lena_orsa`

use std::path::PathBuf;

use anyhow::{Context, Result};
use ncodec_bitstream::Limits;
use ncodec_codecs::Backend;
use ncodec_codecs::walloc::{Medium, WallocCodec, model};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().context("usage: walloc_packing DIR [ONLY...]")?);
    let only: Vec<String> = args.collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let s = p.to_string_lossy();
            only.is_empty() || only.iter().any(|o| s.contains(o.as_str()))
        })
        .collect();
    files.sort();
    // The level whose step is exactly 1: s(q) = 16·(1/32)^((q−1)/7).
    let q = (1.0 + 7.0 * (model::STEP_MAX.ln() / (model::STEP_MAX / model::STEP_MIN).ln())) as f32;
    let device = Backend::Cpu.device();
    let (image, audio) = (
        WallocCodec::shipped(Medium::Image, device.clone())?,
        WallocCodec::shipped(Medium::Audio, device)?,
    );
    let (mut ncd, mut png, mut n) = (0usize, 0usize, 0usize);
    println!("quality {q:.4} (step {:.4})", model::step_of(q));
    for f in &files {
        let ext = f
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let (codec, latent, media) = match ext.as_str() {
            "png" | "jpg" | "jpeg" => {
                let img = image::open(f)?.to_rgb8();
                let media = ncodec_bitstream::MediaInfo::Image {
                    width: img.width(),
                    height: img.height(),
                    channels: 3,
                    bit_depth: 8,
                };
                (&image, image.image_latent(&img)?, media)
            }
            "wav" => {
                let a = ncodec_codecs::media::audio::read_wav_file(f, &Limits::default())?;
                (&audio, audio.audio_latent(&a)?, a.media_info())
            }
            _ => continue,
        };
        let file = codec
            .encode_latent(&latent, q, media)?
            .container
            .to_bytes()?
            .len();
        let packed = codec.png_packed_size(&latent, q)?;
        println!(
            "{}: ncd {file} bytes, PNG-packed latents {packed} bytes ({:+.1} %)",
            f.display(),
            100.0 * (file as f64 / packed as f64 - 1.0)
        );
        ncd += file;
        png += packed;
        n += 1;
    }
    anyhow::ensure!(n > 0, "no image or WAV in {}", dir.display());
    println!(
        "total over {n} files: ncd {ncd} bytes, PNG-packed {png} bytes: the learned entropy model saves {:.1} %",
        100.0 * (1.0 - ncd as f64 / png as f64)
    );
    Ok(())
}
