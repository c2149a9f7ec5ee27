//! Training WaLLoC: `ncodec train --codec walloc-image|walloc-audio`.
//!
//! Loss per sample: `α·MSE/s² + bits per position` (positions: pixels, or audio frames), with the
//! quantization step `s` drawn per sample log-uniformly over the whole quality ladder
//! (`model::STEP_MIN..=STEP_MAX`) and uniform noise of width `s` on the bounded latent, as in the
//! paper (MSE + rate, no perceptual or adversarial term). Weighting the distortion by `1/s²` makes
//! every step want the same encoder gain (at high rate `D ∝ s²`), so one model serves every level.
//! `α` sets the trade-off at `s = 1` (8-bit latents).
//!
//! Data: images as in the hyperprior (random crops and flips of an image folder); audio: every WAV
//! under the folder (mono duplicated to stereo), random windows (each second of audio equally
//! likely) with random channel swap and a random gain in [0.5, 1]. `--exclude` drops files whose path contains a given text (the
//! evaluation split). The run folder, checkpoints, `--resume` and logs work as in
//! [`crate::hyperprior`]; in `train.csv` and `val.csv` the `bpp` column holds bits per pixel for
//! images and kbps for audio (at 44.1 kHz in `train.csv`), `psnr` holds PSNR or SNR in dB.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Tensor, TensorData};
use ncodec_bitstream::conformance::SplitMix64;
use ncodec_bitstream::{Limits, ModelId};
use ncodec_codecs::Backend;
use ncodec_codecs::Quality;
use ncodec_codecs::media::audio::{Audio, read_wav_file};
use ncodec_codecs::walloc::model::{STEP_MAX, STEP_MIN};
use ncodec_codecs::walloc::{
    Medium, Walloc, WallocCodec, WallocConfig, load_weights, weights_to_bytes,
};
use serde::{Deserialize, Serialize};

use crate::data::{BatchSpec, Loader, list_images, load_rgb, split};
use crate::hyperprior::{
    State, append, err, open_run, progress_bar, save_checkpoint, say, truncate_log, write_atomic,
};
use crate::metrics::{psnr_u8, snr};

/// Options of a training run (saved as `run.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WallocTrainOptions {
    /// Folder of training media (searched recursively).
    pub data: PathBuf,
    /// Folder of validation media; default: a deterministic hold-out of `data`.
    pub val: Option<PathBuf>,
    /// Files whose path contains any of these texts are not used (evaluation splits).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Network size.
    pub model: WallocConfig,
    /// Total optimizer steps.
    pub steps: u64,
    /// Samples per batch.
    pub batch: usize,
    /// Crop side in pixels, or window length in samples (a multiple of `2^J`).
    pub crop: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Fraction of `steps` after which the learning rate is divided by 10.
    pub lr_drop: f64,
    /// Distortion weight `α` at step 1.
    pub alpha: f64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Steps between validations (0: never).
    pub val_every: u64,
    /// Seed of the batches.
    pub seed: u64,
    /// Start a fresh run from a principal component analysis of the training data's wavelet bands
    /// (encoder = top components, linear decoder = their transpose, deep decoder path at zero).
    #[serde(default)]
    pub pca_init: bool,
}

impl WallocTrainOptions {
    /// Defaults for `medium`.
    pub fn defaults(medium: Medium) -> Self {
        let (model, crop, alpha, batch) = match medium {
            Medium::Image => (WallocConfig::IMAGE, 128, 1000.0, 8),
            Medium::Audio => (WallocConfig::AUDIO, 16384, 2000.0, 8),
        };
        Self {
            data: PathBuf::new(),
            val: None,
            exclude: Vec::new(),
            model,
            steps: 10_000,
            batch,
            crop,
            lr: 3e-4,
            lr_drop: 0.85,
            alpha,
            checkpoint_every: 250,
            val_every: 1000,
            seed: 1,
            pca_init: true,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct WallocTrainSummary {
    /// Step the run started at.
    pub start: u64,
    /// Steps done when it stopped.
    pub end: u64,
    /// Mean step rate of this invocation.
    pub steps_per_second: f64,
    /// The last validation rows: (quality, rate, dB).
    pub last_validation: Vec<(f32, f64, f64)>,
}

/// Lists the WAV files under `dir` (recursively), sorted.
///
/// # Errors
/// An I/O error, or `InvalidInput` if there are none.
pub fn list_wavs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    crate::data::list_files(dir, &["wav"], "WAV files")
}

/// Audio as two planar channels (mono duplicated).
fn stereo(audio: &Audio) -> Result<[Vec<f32>; 2], String> {
    let ch = usize::from(audio.channels);
    if !(1..=2).contains(&ch) {
        return Err(format!("{} channels (mono or stereo only)", ch));
    }
    let l = audio.samples.iter().step_by(ch).copied().collect();
    let r = audio
        .samples
        .iter()
        .skip(ch - 1)
        .step_by(ch)
        .copied()
        .collect();
    Ok([l, r])
}

/// The batch of `step` for audio: `[B, 2, 1, crop]` samples.
fn audio_batch(clips: &[[Vec<f32>; 2]], o: &WallocTrainOptions, step: u64) -> Vec<f32> {
    let mut rng = SplitMix64(o.seed ^ step.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let n = o.crop;
    let mut out = vec![0.0f32; o.batch * 2 * n];
    // Clips are drawn in proportion to their length, so every second of audio is equally likely.
    let total: u64 = clips.iter().map(|c| c[0].len() as u64).sum();
    for b in 0..o.batch {
        let mut at = rng.below(total.max(1));
        let clip = clips
            .iter()
            .find(|c| {
                let len = c[0].len() as u64;
                if at < len {
                    true
                } else {
                    at -= len;
                    false
                }
            })
            .unwrap_or(&clips[0]);
        let len = clip[0].len();
        let start = rng.below(len.saturating_sub(n) as u64 + 1) as usize;
        let swap = rng.below(2) == 1;
        let gain = 0.5 + 0.5 * rng.unit() as f32;
        for c in 0..2 {
            let src = &clip[if swap { 1 - c } else { c }];
            let dst = &mut out[(b * 2 + c) * n..(b * 2 + c + 1) * n];
            for (i, v) in dst.iter_mut().enumerate() {
                *v = src.get(start + i).copied().unwrap_or(0.0) * gain;
            }
        }
    }
    out
}

/// Per-sample steps (log-uniform) and U(−½, ½) latent noise of `step`.
fn noise(o: &WallocTrainOptions, step: u64, latent: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64(!o.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (lo, hi) = (STEP_MIN.ln(), STEP_MAX.ln());
    let steps = (0..o.batch)
        .map(|_| (lo + (hi - lo) * rng.unit()).exp() as f32)
        .collect();
    let noise = (0..latent).map(|_| rng.unit() as f32 - 0.5).collect();
    (steps, noise)
}

fn excluded(o: &WallocTrainOptions, p: &Path) -> bool {
    let s = p.to_string_lossy();
    o.exclude
        .iter()
        .any(|e| !e.is_empty() && s.contains(e.as_str()))
}

enum Data {
    Images {
        loader: Loader,
        val: Vec<image::RgbImage>,
    },
    Audio {
        clips: Vec<[Vec<f32>; 2]>,
        val: Vec<Audio>,
    },
}

/// The (training, validation) files: `data` minus `--exclude`, validated on `--val` or on a
/// deterministic hold-out (every 32nd image, at most 12; every 8th WAV, at most 2).
fn split_files(o: &WallocTrainOptions) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    type Lister = fn(&Path) -> std::io::Result<Vec<PathBuf>>;
    let (list, every, max): (Lister, usize, usize) = match o.model.medium {
        Medium::Image => (list_images, 32, 12),
        Medium::Audio => (list_wavs, 8, 2),
    };
    let all: Vec<PathBuf> = list(&o.data)
        .map_err(err)?
        .into_iter()
        .filter(|p| !excluded(o, p))
        .collect();
    let (train, val) = match &o.val {
        Some(v) => (all, list(v).map_err(err)?),
        None => split(all, every, max),
    };
    if train.is_empty() {
        return Err("no training files left after --exclude".into());
    }
    Ok((train, val))
}

/// The image batches of a run (crops and flips only: WaLLoC draws its noise itself).
fn image_spec(o: &WallocTrainOptions) -> BatchSpec {
    BatchSpec {
        batch: o.batch,
        crop: o.crop,
        m: 0,
        n: 0,
        levels: 1,
        seed: o.seed,
    }
}

fn load_data(o: &WallocTrainOptions, start: u64) -> Result<Data, String> {
    let (train, val) = split_files(o)?;
    match o.model.medium {
        Medium::Image => {
            let spec = image_spec(o);
            let val = val.iter().map(|p| load_rgb(p)).collect::<Result<_, _>>()?;
            Ok(Data::Images {
                loader: Loader::spawn(spec, train, start, o.steps, 4),
                val,
            })
        }
        Medium::Audio => {
            let read = |p: &PathBuf| {
                read_wav_file(p, &Limits::default()).map_err(|e| format!("{}: {e}", p.display()))
            };
            let clips = train
                .iter()
                .map(|p| stereo(&read(p)?).map_err(|e| format!("{}: {e}", p.display())))
                .collect::<Result<Vec<_>, _>>()?;
            let val = val.iter().map(read).collect::<Result<Vec<_>, _>>()?;
            Ok(Data::Audio { clips, val })
        }
    }
}

/// Wavelet bands of 16 batches drawn for the PCA initialization (steps beyond any run's end, so
/// they are not training batches), one row of `C·k^J` values per latent position.
fn pca_samples(o: &WallocTrainOptions, backend: Backend) -> Result<Vec<f32>, String> {
    let cfg = o.model;
    let device = backend.device();
    let (c, h, w) = match cfg.medium {
        Medium::Image => (3, o.crop, o.crop),
        Medium::Audio => (2, 1, o.crop),
    };
    let mut rows = Vec::new();
    // Training files only: the validation hold-out stays unseen.
    let (train, _) = split_files(o)?;
    let mut cache = vec![None; train.len()];
    let clips = match cfg.medium {
        Medium::Image => Vec::new(),
        Medium::Audio => train
            .iter()
            .take(64)
            .map(|p| {
                read_wav_file(p, &Limits::default())
                    .map_err(|e| format!("{}: {e}", p.display()))
                    .and_then(|a| stereo(&a))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    for k in 0..16u64 {
        let step = u64::MAX - k;
        let samples: Vec<f32> = match cfg.medium {
            Medium::Image => {
                let spec = image_spec(o);
                crate::data::make_batch(&spec, &train, &mut cache, step)?
                    .pixels
                    .into_iter()
                    .map(|v| v - 0.5)
                    .collect()
            }
            Medium::Audio => audio_batch(&clips, o, step),
        };
        let x = Tensor::<4>::from_data(TensorData::new(samples, [o.batch, c, h, w]), &device);
        let bands = ncodec_codecs::walloc::wavelet::forward(x, cfg.medium.dims(), cfg.levels)
            .permute([0, 2, 3, 1]);
        rows.extend(
            bands
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| format!("{e:?}"))?,
        );
    }
    Ok(rows)
}

/// Trains (or resumes, with `resume`) into the run folder `out` on `backend`. On resume,
/// `options.steps` may grow and the data folders come from `options`; the rest from `run.json`.
///
/// # Errors
/// A message for unreadable data, a run folder that already holds a run (without `resume`), or a
/// backend failure.
pub fn train(
    options: WallocTrainOptions,
    out: &Path,
    resume: bool,
    backend: Backend,
    quiet: bool,
) -> Result<WallocTrainSummary, String> {
    // Refuse an empty or unreadable data folder before anything is written.
    match options.model.medium {
        Medium::Image => list_images(&options.data).map(|_| ()),
        Medium::Audio => list_wavs(&options.data).map(|_| ()),
    }
    .map_err(|e| format!("{}: {e}", options.data.display()))?;
    let medium = options.model.medium;
    let (options, prior) = open_run(out, resume, options, |saved: WallocTrainOptions, cli| {
        if saved.model.medium != medium {
            return Err(format!(
                "{} holds a run of a {:?} model",
                out.display(),
                saved.model.medium
            ));
        }
        Ok(WallocTrainOptions {
            steps: cli.steps.max(saved.steps),
            data: cli.data,
            val: cli.val.or(saved.val),
            ..saved
        })
    })?;
    let cfg = options.model;
    cfg.validate()?;
    let stride = cfg.stride();
    let crop_ok = match cfg.medium {
        Medium::Image => options.crop % stride == 0 && options.crop >= 2 * stride,
        Medium::Audio => options.crop % stride == 0 && options.crop >= 4 * stride,
    };
    if !crop_ok || options.batch == 0 {
        return Err(format!(
            "--crop must be a multiple of {stride} (2^J) and at least a few latent positions; --batch positive"
        ));
    }
    write_atomic(
        &out.join("run.json"),
        &serde_json::to_vec_pretty(&options).map_err(err)?,
    )?;

    let device = backend.device().autodiff();
    let mut optim: ModuleOptimizer = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let (mut model, start, mut seconds) = match &prior {
        Some(dir) => {
            let bytes = std::fs::read(dir.join("model.ncw")).map_err(err)?;
            let (c, m) = load_weights(&bytes, cfg.medium, &device).map_err(err)?;
            if c != cfg {
                return Err(format!(
                    "checkpoint model {c:?} differs from run.json {cfg:?}"
                ));
            }
            let record = OptimizerRecord::load(dir.join("optim.bpk"))
                .map_err(|e| format!("optimizer state: {e:?}"))?;
            optim = optim.load_record(record);
            let state: State =
                serde_json::from_slice(&std::fs::read(dir.join("state.json")).map_err(err)?)
                    .map_err(err)?;
            (m, state.step, state.seconds)
        }
        None => {
            device.seed(options.seed);
            let model = cfg.init(&device);
            let model = if options.pca_init {
                let bands = pca_samples(&options, backend)?;
                model.init_from_pca(&cfg, &bands, &device)
            } else {
                model
            };
            (model, 0, 0.0)
        }
    };
    truncate_log(
        &out.join("train.csv"),
        start,
        "step,loss,bpp,psnr,lr,seconds",
    )?;
    truncate_log(&out.join("val.csv"), start, "step,quality,bpp,psnr")?;
    let data = load_data(&options, start)?;

    let bar = progress_bar(quiet, options.steps)?;
    bar.set_position(start);
    let b = options.batch;
    let c = cfg.medium.channels();
    let (h, w, positions) = match cfg.medium {
        Medium::Image => (options.crop, options.crop, options.crop * options.crop),
        Medium::Audio => (1, options.crop, options.crop),
    };
    let (lh, lw) = match cfg.medium {
        Medium::Image => (h / stride, w / stride),
        Medium::Audio => (1, w / stride),
    };
    let t0 = Instant::now();
    let mut log = String::new();
    let mut rate = None::<f64>;
    let mut last_validation = Vec::new();
    for step in start..options.steps {
        let t = Instant::now();
        let samples = match &data {
            Data::Images { loader, .. } => {
                let batch = loader.next_batch()?;
                debug_assert_eq!(batch.step, step);
                batch.pixels.into_iter().map(|v| v - 0.5).collect()
            }
            Data::Audio { clips, .. } => audio_batch(clips, &options, step),
        };
        let (steps, noise) = noise(&options, step, b * cfg.latent * lh * lw);
        let x = Tensor::<4>::from_data(TensorData::new(samples, [b, c, h, w]), &device);
        let signal = x
            .clone()
            .square()
            .reshape([b as i32, -1])
            .mean_dim(1)
            .reshape([b]);
        let weight: Vec<f32> = steps
            .iter()
            .map(|s| (options.alpha / f64::from(*s).powi(2)) as f32)
            .collect();
        let weight = Tensor::<1>::from_data(TensorData::new(weight, [b]), &device);
        let steps = Tensor::<1>::from_data(TensorData::new(steps, [b]), &device);
        let noise =
            Tensor::<4>::from_data(TensorData::new(noise, [b, cfg.latent, lh, lw]), &device);
        let o = model.forward_train(&cfg, x.clone(), steps, noise);
        let mse = (o.x_hat - x)
            .square()
            .reshape([b as i32, -1])
            .mean_dim(1)
            .reshape([b]);
        let bits = o.bits.div_scalar(positions as f64);
        let loss = (weight * mse.clone() + bits.clone()).mean();
        let stats = Tensor::cat(
            vec![
                loss.clone().detach().reshape([1]),
                mse.detach().mean().reshape([1]),
                bits.detach().mean().reshape([1]),
                signal.mean().reshape([1]),
            ],
            0,
        );
        let lr = if (step as f64) < options.lr_drop * options.steps as f64 {
            options.lr
        } else {
            options.lr * 0.1
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let v = stats
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let (loss, mse, bits, signal) = (v[0], v[1], v[2], v[3]);
        if !loss.is_finite() {
            return Err(format!(
                "loss became {loss} at step {step}; resume from the last checkpoint with a lower --lr"
            ));
        }
        let mse = f64::from(mse.max(1e-12));
        let (shown_rate, db, unit) = match cfg.medium {
            Medium::Image => (f64::from(bits), -10.0 * mse.log10(), "bpp"),
            Medium::Audio => (
                f64::from(bits) * 44.1,
                10.0 * (f64::from(signal).max(1e-12) / mse).log10(),
                "kbps@44.1k",
            ),
        };
        let dt = t.elapsed().as_secs_f64();
        seconds += dt;
        let r = rate.map_or(1.0 / dt, |r| 0.95 * r + 0.05 / dt);
        rate = Some(r);
        let _ = writeln!(log, "{step},{loss},{shown_rate},{db:.3},{lr},{seconds:.1}");
        bar.set_position(step + 1);
        let message = format!("loss {loss:.3} {unit} {shown_rate:.3} dB {db:.2} {r:.2} steps/s");
        if !quiet && bar.is_hidden() && (step + 1) % 50 == 0 {
            eprintln!("step {}/{}: {message}", step + 1, options.steps);
        }
        bar.set_message(message);
        let done = step + 1;
        let validate = options.val_every > 0 && done % options.val_every == 0;
        if done % options.checkpoint_every == 0 || done == options.steps || validate {
            append(&out.join("train.csv"), &log)?;
            log.clear();
            if validate {
                last_validation = validation(&model, cfg, backend, &data)?;
                if !last_validation.is_empty() {
                    let mut rows = String::new();
                    for (q, rate, db) in &last_validation {
                        let _ = writeln!(rows, "{done},{q},{rate:.5},{db:.3}");
                    }
                    append(&out.join("val.csv"), &rows)?;
                    say(
                        &bar,
                        format!(
                            "step {done}: validation {}",
                            last_validation
                                .iter()
                                .map(|(q, r, d)| format!("q{q} {r:.3} {d:.2} dB"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
            save_checkpoint(
                out,
                &weights_to_bytes(&model, &cfg, false).map_err(err)?,
                &weights_to_bytes(&model, &cfg, true).map_err(err)?,
                &optim,
                done,
                seconds,
            )?;
            if let Err(e) = crate::plot::plot_training(out) {
                say(&bar, format!("loss curve not drawn: {e}"));
            }
        }
    }
    bar.finish();
    let ran = options.steps.saturating_sub(start);
    Ok(WallocTrainSummary {
        start,
        end: options.steps.max(start),
        steps_per_second: ran as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        last_validation,
    })
}

/// Real encodes and decodes of the validation media at qualities 1, 4.5 and 8: (q, bpp or kbps,
/// PSNR or SNR), averaged over the items.
fn validation(
    model: &Walloc,
    cfg: WallocConfig,
    backend: Backend,
    data: &Data,
) -> Result<Vec<(f32, f64, f64)>, String> {
    let codec = WallocCodec::from_model(model.valid(), cfg, ModelId([0; 8]), backend.device())
        .map_err(err)?;
    let mut rows = Vec::new();
    for q in [1.0f32, 4.5, 8.0] {
        let mut acc = (0.0, 0.0, 0usize);
        match data {
            Data::Images { val, .. } => {
                for img in val {
                    let coded = codec.encode_image(img, Quality::Level(q)).map_err(err)?;
                    let bytes = coded.container.to_bytes().map_err(err)?.len();
                    let back = codec
                        .decode_image(&coded.container, &Limits::default())
                        .map_err(err)?;
                    acc.0 +=
                        bytes as f64 * 8.0 / (f64::from(img.width()) * f64::from(img.height()));
                    acc.1 += psnr_u8(img.as_raw(), back.as_raw()).map_err(err)?;
                    acc.2 += 1;
                }
            }
            Data::Audio { val, .. } => {
                for audio in val {
                    let coded = codec.encode_audio(audio, Quality::Level(q)).map_err(err)?;
                    let bytes = coded.container.to_bytes().map_err(err)?.len();
                    let back = codec
                        .decode_audio(&coded.container, &Limits::default())
                        .map_err(err)?;
                    let f = |v: &[f32]| v.iter().map(|&s| f64::from(s)).collect::<Vec<_>>();
                    acc.0 += bytes as f64 * 8.0 / audio.seconds() / 1000.0;
                    acc.1 += snr(&f(&audio.samples), &f(&back.samples)).map_err(err)?;
                    acc.2 += 1;
                }
            }
        }
        if acc.2 > 0 {
            let n = acc.2 as f64;
            rows.push((q, acc.0 / n, acc.1 / n));
        }
    }
    Ok(rows)
}
