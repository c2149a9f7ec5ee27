//! Training: a resumed run continues exactly where a killed one stopped; run folders are not
//! overwritten by accident; the loss curve and the exported weights appear.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::{HyperpriorConfig, weights};
use ncodec_training::hyperprior::{TrainOptions, train};

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
    // The exported f16 weights load as a codec.
    let w = std::fs::read(killed.join("weights.ncw")).expect("weights");
    ncodec_codecs::hyperprior::HyperpriorCodec::from_weights(&w, Backend::Cpu.device())
        .expect("exported weights load");
}
