//! Training the mean-scale hyperprior: `ncodec train --codec hyperprior`.
//!
//! Loss `λ·255²·MSE + bpp` (CompressAI's convention) with one λ per sample, drawn from the quality
//! ladder [`LAMBDAS`], so one set of weights learns every rate (its gain vectors). Adam with a
//! constant rate that drops 10× for the last part of the run. The bottleneck needs no auxiliary
//! loss: its table range is found from the learned CDF when the codec is built.
//!
//! A run folder holds `run.json` (the options), `train.csv` (one row per step), `val.csv` (real
//! encodes of held-out images), `loss.png`, `weights.ncw` (f16 export of the latest checkpoint) and
//! `ckpt-<step>/` folders with the f32 model, the optimizer state and the step; `LATEST` names the
//! newest. Every batch is a function of (seed, step), so `--resume` continues exactly where a
//! killed run stopped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use ncodec_bitstream::{Limits, ModelId};
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::{Hyperprior, HyperpriorCodec, HyperpriorConfig, LAMBDAS, weights};
use serde::{Deserialize, Serialize};

use crate::data::{BatchSpec, Loader, list_images, load_rgb, split};
use crate::metrics::psnr_u8;

/// Options of a training run (saved as `run.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Folder of training images (searched recursively).
    pub data: PathBuf,
    /// Folder of validation images; default: every 32nd file of `data`, at most 12.
    pub val: Option<PathBuf>,
    /// Network size.
    pub model: HyperpriorConfig,
    /// Total optimizer steps.
    pub steps: u64,
    /// Samples per batch.
    pub batch: usize,
    /// Crop side in pixels (a multiple of 64).
    pub crop: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Fraction of `steps` after which the learning rate is divided by 10.
    pub lr_drop: f64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Steps between validations (0: only at checkpoints... never).
    pub val_every: u64,
    /// Seed of the batches.
    pub seed: u64,
    /// Start the linear shortcut from the principal components of the training crops' 16×16
    /// blocks (only for models with a shortcut; a fresh run only).
    #[serde(default)]
    pub pca_init: bool,
    /// Start a fresh run from these hyperprior weights instead of random or PCA weights; weights
    /// of a smaller `M` (same `N`, levels and shortcut) are widened to `model.m` first
    /// ([`Hyperprior::widen`](ncodec_codecs::hyperprior::Hyperprior::widen)).
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Steps over which the learning rate ramps up linearly from a run's first step (a fresh Adam
    /// on trained weights otherwise moves every parameter by about `lr` per step at first, which
    /// undoes training; 0: none).
    #[serde(default)]
    pub warmup: u64,
    /// Rate of `y` from the rounded symbols the coder writes instead of additive noise
    /// ([`Hyperprior::forward_train_with`](ncodec_codecs::hyperprior::Hyperprior::forward_train_with)):
    /// for fine-tuning a trained network to the real rate.
    #[serde(default)]
    pub hard_rate: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            data: PathBuf::new(),
            val: None,
            model: HyperpriorConfig::SHIPPED,
            steps: 20_000,
            batch: 8,
            crop: 128,
            lr: 1e-4,
            lr_drop: 0.85,
            checkpoint_every: 250,
            val_every: 1000,
            seed: 1,
            pca_init: true,
            init_from: None,
            warmup: 0,
            hard_rate: false,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) step: u64,
    pub(crate) seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Step the run started at (0, or the checkpoint it resumed).
    pub start: u64,
    /// Steps done when it stopped.
    pub end: u64,
    /// Mean training-step rate of this invocation.
    pub steps_per_second: f64,
    /// The last validation rows: (quality, bpp, PSNR).
    pub last_validation: Vec<(f32, f64, f64)>,
}

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the run folder `out` and settles the options: a fresh run takes `options`; a folder
/// that already holds a run is refused without `resume`, and with it the saved `run.json` and the
/// command line are merged by `merge(saved, options)`. Returns the options and the newest
/// checkpoint folder, if any.
pub(crate) fn open_run<O: Serialize + serde::de::DeserializeOwned>(
    out: &Path,
    resume: bool,
    options: O,
    merge: impl FnOnce(O, O) -> Result<O, String>,
) -> Result<(O, Option<PathBuf>), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let prior = latest(out);
    let options = match (&prior, resume) {
        (Some(_), false) => {
            return Err(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                out.display()
            ));
        }
        (Some(_), true) => {
            let saved: O = serde_json::from_slice(
                &std::fs::read(out.join("run.json")).map_err(|e| format!("run.json: {e}"))?,
            )
            .map_err(|e| format!("run.json: {e}"))?;
            merge(saved, options)?
        }
        (None, _) => options,
    };
    Ok((options, prior))
}

/// The progress bar of a training run of `steps` steps (hidden when `quiet`).
pub(crate) fn progress_bar(quiet: bool, steps: u64) -> Result<ProgressBar, String> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .map_err(err)?
            .progress_chars("=> "),
    );
    Ok(bar)
}

/// Warm-up steps of a run resumed from a checkpoint without its optimizer state.
const RESUME_WARMUP: u64 = 200;

/// The learning rate at `step`.
pub fn learning_rate(o: &TrainOptions, step: u64) -> f64 {
    let base = if (step as f64) < o.lr_drop * o.steps as f64 {
        o.lr
    } else {
        o.lr * 0.1
    };
    base * warmup_factor(step, o.warmup)
}

/// The linear warm-up factor `since` steps into a warm-up of `steps` steps (1 after it; both the
/// `--warmup` of a fresh run and the warm-up of a resumed run without optimizer state).
pub fn warmup_factor(since: u64, steps: u64) -> f64 {
    if since < steps {
        (since + 1) as f64 / steps as f64
    } else {
        1.0
    }
}

pub(crate) fn latest(out: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(out.join("LATEST")).ok()?;
    let dir = out.join(name.trim());
    dir.is_dir().then_some(dir)
}

/// Trains (or resumes, with `resume`) into the run folder `out` on `backend`. On resume,
/// `options.steps` may grow and the data folders are taken from `options`; the other options come
/// from `run.json`.
///
/// # Errors
/// A message for unreadable data, a run folder that already holds a run (without `resume`), or a
/// backend failure.
pub fn train(
    options: TrainOptions,
    out: &Path,
    resume: bool,
    backend: Backend,
    quiet: bool,
) -> Result<TrainSummary, String> {
    let (options, prior) = open_run(out, resume, options, |saved: TrainOptions, cli| {
        // The run folder may have moved to another machine: the data folders come from the
        // command line, everything else from run.json.
        Ok(TrainOptions {
            steps: cli.steps.max(saved.steps),
            data: cli.data,
            val: cli.val.or(saved.val),
            ..saved
        })
    })?;
    if options.crop % 64 != 0 || options.crop == 0 || options.batch == 0 {
        return Err("--crop must be a positive multiple of 64 and --batch positive".into());
    }
    write_atomic(
        &out.join("run.json"),
        &serde_json::to_vec_pretty(&options).map_err(err)?,
    )?;

    let device = backend.device().autodiff();
    let cfg = options.model;
    cfg.validate()?;
    let mut optim: ModuleOptimizer = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut fresh_optimizer = false;
    let (mut model, start, mut seconds) = match &prior {
        Some(dir) => {
            let bytes = std::fs::read(dir.join("model.ncw")).map_err(err)?;
            let (c, m) = weights::load(&bytes, &device).map_err(err)?;
            if c != cfg {
                return Err(format!(
                    "checkpoint model {c:?} differs from run.json {cfg:?}"
                ));
            }
            // A checkpoint shipped without its Adam state (over the repository's file-size
            // limit) resumes with a fresh optimizer and a warm-up, like --init-from.
            let optim_path = dir.join("optim.bpk");
            if optim_path.exists() {
                let record = OptimizerRecord::load(optim_path)
                    .map_err(|e| format!("optimizer state: {e:?}"))?;
                optim = optim.load_record(record);
            } else {
                fresh_optimizer = true;
            }
            let state: State =
                serde_json::from_slice(&std::fs::read(dir.join("state.json")).map_err(err)?)
                    .map_err(err)?;
            (m, state.step, state.seconds)
        }
        None => {
            // Seeded initialization: a run is reproducible from its run.json.
            device.seed(options.seed);
            (cfg.init(&device), 0, 0.0)
        }
    };
    truncate_log(
        &out.join("train.csv"),
        start,
        "step,loss,bpp,psnr,lr,seconds",
    )?;
    truncate_log(&out.join("val.csv"), start, "step,quality,bpp,psnr")?;

    let all = list_images(&options.data).map_err(err)?;
    let (train_paths, val_paths) = match &options.val {
        Some(v) => (all, list_images(v).map_err(err)?),
        None => split(all, 32, 12),
    };
    let spec = BatchSpec {
        batch: options.batch,
        crop: options.crop,
        m: cfg.m,
        n: cfg.n,
        levels: cfg.levels,
        seed: options.seed,
    };
    if let (None, Some(path)) = (&prior, &options.init_from) {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (c, m) = weights::load(&bytes, &device).map_err(err)?;
        model = if c == cfg {
            m
        } else if c.m < cfg.m && (HyperpriorConfig { m: cfg.m, ..c }) == cfg {
            // Training files only: the validation hold-out stays unseen.
            let blocks = pca_blocks(&spec, &train_paths, PCA_BATCHES)?;
            m.widen(&c, cfg.m, &blocks, &device)?.0
        } else {
            return Err(format!(
                "{} holds a {c:?} network, which cannot start a {cfg:?} run (only M may grow)",
                path.display()
            ));
        };
    } else if prior.is_none() && cfg.shortcut && options.pca_init {
        // Training files only: the validation hold-out stays unseen.
        let blocks = pca_blocks(&spec, &train_paths, PCA_BATCHES)?;
        model = model.init_from_pca(&cfg, &blocks, &device);
    }
    let loader = Loader::spawn(spec, train_paths, start, options.steps, 4);
    let val_images = val_paths
        .iter()
        .map(|p| load_rgb(p))
        .collect::<Result<Vec<_>, _>>()?;

    let bar = progress_bar(quiet, options.steps)?;
    bar.set_position(start);
    let (b, s) = (options.batch, options.crop);
    let t0 = Instant::now();
    let mut log = String::new();
    let mut rate = None::<f64>;
    let mut last_validation = Vec::new();
    for step in start..options.steps {
        let t = Instant::now();
        let batch = loader.next_batch()?;
        debug_assert_eq!(batch.step, step);
        let x = Tensor::<4>::from_data(TensorData::new(batch.pixels, [b, 3, s, s]), &device);
        let lambdas: Vec<f32> = batch
            .levels
            .iter()
            .map(|&l| (LAMBDAS[l as usize] * 255.0 * 255.0) as f32)
            .collect();
        let levels = Tensor::<1, Int>::from_data(TensorData::new(batch.levels, [b]), &device);
        let ny = Tensor::<4>::from_data(
            TensorData::new(batch.noise_y, [b, cfg.m, s / 16, s / 16]),
            &device,
        );
        let nz = Tensor::<4>::from_data(
            TensorData::new(batch.noise_z, [b, cfg.n, s / 64, s / 64]),
            &device,
        );
        let lambdas = Tensor::<1>::from_data(TensorData::new(lambdas, [b]), &device);
        let o = model.forward_train_with(x.clone(), levels, ny, nz, options.hard_rate);
        let mse = (o.x_hat - x)
            .square()
            .reshape([b as i32, -1])
            .mean_dim(1)
            .reshape([b]);
        let bpp = o.bits.div_scalar((s * s) as f64);
        let loss = (lambdas * mse.clone() + bpp.clone()).mean();
        let stats = Tensor::cat(
            vec![
                loss.clone().detach().reshape([1]),
                mse.detach().mean().reshape([1]),
                bpp.detach().mean().reshape([1]),
            ],
            0,
        );
        let mut lr = learning_rate(&options, step);
        if fresh_optimizer {
            lr *= warmup_factor(step - start, RESUME_WARMUP);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let v = stats
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let (loss, mse, bpp) = (v[0], v[1], v[2]);
        if !loss.is_finite() {
            return Err(format!(
                "loss became {loss} at step {step}; resume from the last checkpoint with a lower --lr"
            ));
        }
        let psnr = -10.0 * f64::from(mse.max(1e-10)).log10();
        let dt = t.elapsed().as_secs_f64();
        seconds += dt;
        let r = rate.map_or(1.0 / dt, |r| 0.95 * r + 0.05 / dt);
        rate = Some(r);
        let _ = writeln!(log, "{step},{loss},{bpp},{psnr:.3},{lr},{seconds:.1}");
        bar.set_position(step + 1);
        let message = format!("loss {loss:.3} bpp {bpp:.3} psnr {psnr:.2} {r:.2} steps/s");
        if !quiet && bar.is_hidden() && (step + 1) % 50 == 0 {
            // No terminal (nohup, CI): a plain line every 50 steps instead of the bar.
            eprintln!("step {}/{}: {message}", step + 1, options.steps);
        }
        bar.set_message(message);
        let done = step + 1;
        let validate = options.val_every > 0 && done % options.val_every == 0;
        if done % options.checkpoint_every == 0 || done == options.steps || validate {
            append(&out.join("train.csv"), &log)?;
            log.clear();
            if validate && !val_images.is_empty() {
                last_validation = validation(&model, cfg, backend, &val_images)?;
                let mut rows = String::new();
                for (q, bpp, psnr) in &last_validation {
                    let _ = writeln!(rows, "{done},{q},{bpp:.5},{psnr:.3}");
                }
                append(&out.join("val.csv"), &rows)?;
                say(
                    &bar,
                    format!(
                        "step {done}: validation {}",
                        last_validation
                            .iter()
                            .map(|(q, b, p)| format!("q{q} {b:.3} bpp {p:.2} dB"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            checkpoint(out, &model, &optim, cfg, done, seconds)?;
            if let Err(e) = crate::plot::plot_training(out) {
                say(&bar, format!("loss curve not drawn: {e}"));
            }
        }
    }
    bar.finish();
    let ran = options.steps.saturating_sub(start);
    Ok(TrainSummary {
        start,
        end: options.steps.max(start),
        steps_per_second: ran as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        last_validation,
    })
}

/// Batches of crops whose 16×16 blocks feed the PCA initialization (8 × 128² crops give 512
/// blocks a batch: 16 k blocks for 768 dimensions).
const PCA_BATCHES: u64 = 32;

/// The 16×16 blocks of `batches` batches of training crops (drawn at steps no run reaches), as
/// rows of `3·16·16` values laid out channel, row, column.
fn pca_blocks(spec: &BatchSpec, paths: &[PathBuf], batches: u64) -> Result<Vec<f32>, String> {
    const B: usize = ncodec_codecs::hyperprior::model::BLOCK;
    let s = spec.crop;
    let mut cache = vec![None; paths.len()];
    let mut rows = Vec::new();
    for k in 0..batches {
        let batch = crate::data::make_batch(spec, paths, &mut cache, u64::MAX - k)?;
        for img in batch.pixels.chunks_exact(3 * s * s) {
            for by in (0..s).step_by(B) {
                for bx in (0..s).step_by(B) {
                    for c in 0..3 {
                        for i in 0..B {
                            let at = (c * s + by + i) * s + bx;
                            rows.extend_from_slice(&img[at..at + B]);
                        }
                    }
                }
            }
        }
    }
    Ok(rows)
}

/// Prints above the bar, or to stderr when there is no terminal (where indicatif prints nothing).
pub(crate) fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

pub(crate) fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// Keeps the header and the rows of steps `< start` (a resumed run rewrites the rest).
pub(crate) fn truncate_log(path: &Path, start: u64, header: &str) -> Result<(), String> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut text = format!("{header}\n");
    for line in old.lines().skip(1) {
        let step: Option<u64> = line.split(',').next().and_then(|s| s.parse().ok());
        if step.is_some_and(|s| s < start || (header.starts_with("step,quality") && s <= start)) {
            text.push_str(line);
            text.push('\n');
        }
    }
    write_atomic(path, text.as_bytes())
}

/// Real encodes and decodes of the validation images at qualities 1, 4 and 8: (q, bpp, PSNR),
/// averaged over the images.
fn validation(
    model: &Hyperprior,
    cfg: HyperpriorConfig,
    backend: Backend,
    images: &[image::RgbImage],
) -> Result<Vec<(f32, f64, f64)>, String> {
    let codec = HyperpriorCodec::from_model(model.valid(), cfg, ModelId([0; 8]), backend.device())
        .map_err(err)?;
    let mut rows = Vec::new();
    for q in [1.0f32, 4.0, cfg.levels as f32] {
        let (mut bpp, mut psnr) = (0.0, 0.0);
        for img in images {
            let coded = codec.encode_image(img, q).map_err(err)?;
            let bytes = coded.container.to_bytes().map_err(err)?.len();
            let back = codec
                .decode_image(&coded.container, &Limits::default())
                .map_err(err)?;
            bpp += bytes as f64 * 8.0 / (f64::from(img.width()) * f64::from(img.height()));
            psnr += psnr_u8(img.as_raw(), back.as_raw()).map_err(err)?;
        }
        let n = images.len() as f64;
        rows.push((q, bpp / n, psnr / n));
    }
    Ok(rows)
}

fn checkpoint(
    out: &Path,
    model: &Hyperprior,
    optim: &ModuleOptimizer,
    cfg: HyperpriorConfig,
    step: u64,
    seconds: f64,
) -> Result<(), String> {
    save_checkpoint(
        out,
        &weights::to_bytes(model, &cfg, false).map_err(err)?,
        &weights::to_bytes(model, &cfg, true).map_err(err)?,
        optim,
        step,
        seconds,
    )
}

/// Writes `ckpt-<step>/` (f32 model, optimizer state, step and seconds) atomically, points
/// `LATEST` at it, exports `weights.ncw` (`half`: the f16 weights) and keeps the two newest
/// checkpoints.
pub(crate) fn save_checkpoint(
    out: &Path,
    full: &[u8],
    half: &[u8],
    optim: &ModuleOptimizer,
    step: u64,
    seconds: f64,
) -> Result<(), String> {
    let name = format!("ckpt-{step:08}");
    let tmp = out.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(err)?;
    std::fs::write(tmp.join("model.ncw"), full).map_err(err)?;
    optim
        .to_record()
        .save(tmp.join("optim.bpk"))
        .map_err(|e| format!("optimizer state: {e:?}"))?;
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_vec(&State { step, seconds }).map_err(err)?,
    )
    .map_err(err)?;
    let dir = out.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(err)?;
    write_atomic(&out.join("LATEST"), name.as_bytes())?;
    write_atomic(&out.join("weights.ncw"), half)?;
    // Keep the two newest checkpoints.
    let mut old: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ckpt-"))
        })
        .collect();
    old.sort();
    if old.len() > 2 {
        for p in &old[..old.len() - 2] {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    Ok(())
}
