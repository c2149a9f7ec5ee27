//! Training: a resumed run continues exactly where a killed one stopped; run folders are not
//! overwritten by accident; the loss curve and the exported weights appear.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::{HyperpriorConfig, weights};
use ncodec_training::hyperprior::{TrainOptions, train};

/// Seeded initialization draws from the device's global generator: runs in parallel test threads
/// would interleave their draws, so the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn data() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/train-images/bsds500"
    ))
}

fn options(steps: u64) -> TrainOptions {
    TrainOptions {
        data: data(),
        val: None,
        model: HyperpriorConfig::TINY,
        steps,
        batch: 2,
        crop: 64,
        lr: 1e-3,
        checkpoint_every: 3,
        val_every: 3,
        seed: 7,
        ..TrainOptions::default()
    }
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("train.csv"))
        .expect("train.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            let step = f.next().and_then(|v| v.parse().ok()).expect("step");
            let loss = f.next().and_then(|v| v.parse().ok()).expect("loss");
            (step, loss)
        })
        .collect()
}

fn analysis_of(run: &Path) -> Vec<f32> {
    let name = std::fs::read_to_string(run.join("LATEST")).expect("LATEST");
    let bytes = std::fs::read(run.join(name.trim()).join("model.ncw")).expect("model");
    let device = Backend::Cpu.device();
    let (_, model) = weights::load(&bytes, &device).expect("load");
    let x: Vec<f32> = (0..3 * 64 * 64).map(|i| (i % 97) as f32 / 97.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(x, [1, 3, 64, 64]), &device);
    model
        .analysis(x)
        .into_data()
        .try_to_vec::<f32>()
        .expect("read")
}

#[test]
fn a_resumed_run_continues_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tmp");
    let straight = dir.path().join("straight");
    let killed = dir.path().join("killed");
    train(options(6), &straight, false, Backend::Cpu, true).expect("straight run");
    // "Killed" after the checkpoint at step 3, then resumed.
    train(options(3), &killed, false, Backend::Cpu, true).expect("first half");
    let e = train(options(6), &killed, false, Backend::Cpu, true).expect_err("no --resume");
    assert!(e.contains("--resume"), "{e}");
    let s = train(options(6), &killed, true, Backend::Cpu, true).expect("resumed");
    assert_eq!((s.start, s.end), (3, 6));

    let (a, b) = (losses(&straight), losses(&killed));
    assert_eq!(a.len(), 6);
    assert_eq!(
        b.len(),
        6,
        "the log of the resumed run has one row per step"
    );
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-4 * la.abs().max(1.0),
            "step {sa}: loss {la} straight vs {lb} resumed"
        );
    }
    let (wa, wb) = (analysis_of(&straight), analysis_of(&killed));
    let max = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "weights after resuming differ by {max}");

    for f in ["loss.png", "weights.ncw", "run.json", "val.csv"] {
        assert!(killed.join(f).is_file(), "{f} missing");
    }
    let val = std::fs::read_to_string(killed.join("val.csv")).expect("val.csv");
    assert_eq!(
        val.lines().count(),
        1 + 2 * 3,
        "validation at steps 3 and 6, three qualities each"
    );
    // A fresh run started from the PCA of the data (the default for a model with a shortcut).
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(killed.join("run.json")).expect("run.json"))
            .expect("json");
    assert_eq!(cfg["pca_init"], true);
    assert_eq!(cfg["model"]["shortcut"], true);
    // The exported f16 weights load as a codec.
    let w = std::fs::read(killed.join("weights.ncw")).expect("weights");
    ncodec_codecs::hyperprior::HyperpriorCodec::from_weights(&w, Backend::Cpu.device())
        .expect("exported weights load");

    // A checkpoint without its Adam state (as shipped, where it is over the file-size limit)
    // resumes with a fresh optimizer whose learning rate warms up.
    let latest = std::fs::read_to_string(killed.join("LATEST")).expect("LATEST");
    std::fs::remove_file(killed.join(latest.trim()).join("optim.bpk")).expect("remove");
    let s = train(options(8), &killed, true, Backend::Cpu, true).expect("resumed");
    assert_eq!((s.start, s.end), (6, 8));
    let log = std::fs::read_to_string(killed.join("train.csv")).expect("train.csv");
    let lr_at = |step: &str| -> f64 {
        log.lines()
            .find(|l| l.starts_with(&format!("{step},")))
            .and_then(|l| l.split(',').nth(4))
            .and_then(|v| v.parse().ok())
            .expect("lr")
    };
    assert!((lr_at("5") - 1e-3).abs() < 1e-12);
    assert!((lr_at("6") - 1e-3 / 200.0).abs() < 1e-12, "{}", lr_at("6"));
}

/// Mean PSNR of the first `k` logged steps.
fn early_psnr(run: &Path, k: usize) -> f64 {
    let text = std::fs::read_to_string(run.join("train.csv")).expect("train.csv");
    let v: Vec<f64> = text
        .lines()
        .skip(1)
        .take(k)
        .map(|l| {
            l.split(',')
                .nth(3)
                .and_then(|v| v.parse().ok())
                .expect("psnr")
        })
        .collect();
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn the_pca_initialization_starts_far_ahead_of_random_weights() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tmp");
    let run = |pca_init: bool, name: &str| {
        let out = dir.path().join(name);
        let o = TrainOptions {
            pca_init,
            checkpoint_every: 100,
            val_every: 0,
            ..options(2)
        };
        train(o, &out, false, Backend::Cpu, true).expect("run");
        early_psnr(&out, 2)
    };
    let (pca, random) = (run(true, "pca"), run(false, "random"));
    // Twelve principal components of 16×16 blocks reconstruct a photo crop at ≈ 20 dB from the
    // first step; random weights start near the mean grey.
    assert!(
        pca > random + 5.0,
        "PCA start {pca:.2} dB vs random start {random:.2} dB"
    );
}

#[test]
fn the_learning_rate_warms_up_then_drops() {
    let o = TrainOptions {
        lr: 1e-3,
        steps: 1000,
        lr_drop: 0.8,
        warmup: 100,
        ..TrainOptions::default()
    };
    let lr = |s| ncodec_training::hyperprior::learning_rate(&o, s);
    assert!((lr(0) - 1e-5).abs() < 1e-12);
    assert!((lr(49) - 5e-4).abs() < 1e-12);
    assert!((lr(99) - 1e-3).abs() < 1e-12);
    assert!((lr(500) - 1e-3).abs() < 1e-12);
    assert!((lr(900) - 1e-4).abs() < 1e-12);
    let no_warmup = TrainOptions { warmup: 0, ..o };
    assert!((ncodec_training::hyperprior::learning_rate(&no_warmup, 0) - 1e-3).abs() < 1e-12);
    // The same factor warms up a resumed run that lost its optimizer state.
    let f = ncodec_training::hyperprior::warmup_factor;
    assert_eq!(
        (f(0, 200), f(99, 200), f(199, 200), f(500, 200), f(0, 0)),
        (0.005, 0.5, 1.0, 1.0, 1.0)
    );
}
