//! Image-folder datasets for training: recursive listing, a deterministic train/validation split,
//! and a loader thread that decodes, caches, crops and flips images so the backend never waits.
//!
//! Every batch is a pure function of `(seed, step)`: the images, crop positions, flips, quality
//! levels and quantization noise of step `s` are drawn from a generator seeded with both. A run
//! resumed at step `s` therefore sees exactly the batches it would have seen without the kill.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use image::RgbImage;
use ncodec_bitstream::conformance::SplitMix64;

/// Lists the PNG and JPEG files under `dir` (recursively), sorted.
///
/// # Errors
/// An I/O error, or `InvalidInput` if there are none.
pub fn list_images(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    list_files(dir, &["png", "jpg", "jpeg"], "PNG or JPEG images")
}

/// Lists the files under `dir` (recursively) whose extension is one of `extensions` (lowercase,
/// matched case-insensitively), sorted; `what` names them in the error.
///
/// # Errors
/// An I/O error, or `InvalidInput` if there are none.
pub fn list_files(dir: &Path, extensions: &[&str], what: &str) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, extensions, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, extensions, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} holds no {what}", dir.display()),
        ));
    }
    Ok(out)
}

/// Splits `paths` into (training, validation): every `every`-th file (sorted order) validates, at
/// most `max_val` of them.
pub fn split(paths: Vec<PathBuf>, every: usize, max_val: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, p) in paths.into_iter().enumerate() {
        if every > 0 && i % every == every / 2 && val.len() < max_val {
            val.push(p);
        } else {
            train.push(p);
        }
    }
    (train, val)
}

/// Decodes an image file to 8-bit RGB (grayscale and alpha are converted).
///
/// # Errors
/// A message naming the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage, String> {
    image::open(path)
        .map(|i| i.to_rgb8())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What the loader produces for one step.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The training step.
    pub step: u64,
    /// Pixels in [0, 1], `[B, 3, S, S]`.
    pub pixels: Vec<f32>,
    /// Quality level (0-based) of each sample.
    pub levels: Vec<i64>,
    /// U(−½, ½) noise for `y`, `[B, M, S/16, S/16]`.
    pub noise_y: Vec<f32>,
    /// U(−½, ½) noise for `z`, `[B, N, S/64, S/64]`.
    pub noise_z: Vec<f32>,
}

/// Shapes of the batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    /// Samples per batch.
    pub batch: usize,
    /// Crop side (a multiple of 64).
    pub crop: usize,
    /// Channels of `y`.
    pub m: usize,
    /// Channels of `z`.
    pub n: usize,
    /// Quality levels to draw from.
    pub levels: usize,
    /// Seed of the run.
    pub seed: u64,
}

/// Builds the batch of `step`, decoding images through `cache`.
pub fn make_batch(
    spec: &BatchSpec,
    paths: &[PathBuf],
    cache: &mut [Option<Arc<RgbImage>>],
    step: u64,
) -> Result<Batch, String> {
    let s = spec.crop;
    let mut rng = SplitMix64(spec.seed ^ step.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut pixels = vec![0.0f32; spec.batch * 3 * s * s];
    let mut levels = Vec::with_capacity(spec.batch);
    for b in 0..spec.batch {
        let i = rng.below(paths.len() as u64) as usize;
        let img = match &cache[i] {
            Some(img) => img.clone(),
            None => {
                let img = Arc::new(load_rgb(&paths[i])?);
                cache[i] = Some(img.clone());
                img
            }
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let x0 = rng.below(w.saturating_sub(s) as u64 + 1) as usize;
        let y0 = rng.below(h.saturating_sub(s) as u64 + 1) as usize;
        let flip = rng.below(2) == 1;
        let plane = &mut pixels[b * 3 * s * s..(b + 1) * 3 * s * s];
        for yy in 0..s {
            let sy = (y0 + yy).min(h - 1) as u32;
            for xx in 0..s {
                let sx = (x0 + if flip { s - 1 - xx } else { xx }).min(w - 1) as u32;
                let p = img.get_pixel(sx, sy).0;
                for c in 0..3 {
                    plane[(c * s + yy) * s + xx] = f32::from(p[c]) / 255.0;
                }
            }
        }
        levels.push(rng.below(spec.levels as u64) as i64);
    }
    let mut noise = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit() as f32 - 0.5).collect() };
    let noise_y = noise(spec.batch * spec.m * (s / 16) * (s / 16));
    let noise_z = noise(spec.batch * spec.n * (s / 64) * (s / 64));
    Ok(Batch {
        step,
        pixels,
        levels,
        noise_y,
        noise_z,
    })
}

/// A background thread producing the batches of steps `start..end` in order.
#[derive(Debug)]
pub struct Loader {
    rx: Receiver<Result<Batch, String>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts the thread; it keeps up to `depth` batches ready.
    pub fn spawn(spec: BatchSpec, paths: Vec<PathBuf>, start: u64, end: u64, depth: usize) -> Self {
        let (tx, rx): (SyncSender<Result<Batch, String>>, _) = sync_channel(depth.max(1));
        let handle = std::thread::spawn(move || {
            let mut cache = vec![None; paths.len()];
            for step in start..end {
                let batch = make_batch(&spec, &paths, &mut cache, step);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            handle: Some(handle),
        }
    }

    /// The next batch.
    ///
    /// # Errors
    /// The decoding error of an image, or a message if the thread stopped.
    pub fn next_batch(&self) -> Result<Batch, String> {
        self.rx
            .recv()
            .map_err(|_| "the data loader stopped".to_string())?
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the thread (its send fails once the receiver is gone) before joining it.
        let (_, rx) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
