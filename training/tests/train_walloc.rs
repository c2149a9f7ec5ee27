//! Training WaLLoC: a resumed audio run continues exactly where a killed one stopped, `--exclude`
//! keeps files out, and the exported weights load as a codec; an image run trains too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use ncodec_codecs::Backend;
use ncodec_codecs::walloc::{Medium, WallocCodec, WallocConfig};
use ncodec_training::walloc::{WallocTrainOptions, train};

/// Seeded initialization draws from the device's global generator: runs in parallel test threads
/// would interleave their draws, so the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

/// A folder holding half a second of a held-out clip, for validation.
fn val_dir(dir: &Path) -> PathBuf {
    use ncodec_bitstream::Limits;
    use ncodec_codecs::media::audio::{read_wav_file, wav_bytes};
    let mut a = read_wav_file(
        &shared("audio/music/brahms_hungarian_dance_5_string_orchestra_30s.wav"),
        &Limits::default(),
    )
    .unwrap();
    a.samples.truncate(22_050 * 2);
    let v = dir.join("val");
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("clip.wav"), wav_bytes(&a).unwrap()).unwrap();
    v
}

fn audio_options(steps: u64, val: &Path) -> WallocTrainOptions {
    WallocTrainOptions {
        data: shared("audio/music"),
        val: Some(val.to_path_buf()),
        // Train on two clips, validate on the held-out split of the rest.
        exclude: vec!["brahms".into(), "lena_orsa".into()],
        model: WallocConfig::tiny(Medium::Audio),
        steps,
        batch: 2,
        crop: 256,
        lr: 1e-3,
        checkpoint_every: 3,
        val_every: 3,
        seed: 5,
        ..WallocTrainOptions::defaults(Medium::Audio)
    }
}

fn rows(run: &Path, file: &str) -> Vec<Vec<f64>> {
    std::fs::read_to_string(run.join(file))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn a_resumed_walloc_run_continues_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let v = val_dir(dir.path());
    let audio_options = |steps| audio_options(steps, &v);
    let straight = dir.path().join("straight");
    let killed = dir.path().join("killed");
    train(audio_options(6), &straight, false, Backend::Cpu, true).unwrap();
    train(audio_options(3), &killed, false, Backend::Cpu, true).unwrap();
    let e = train(audio_options(6), &killed, false, Backend::Cpu, true).unwrap_err();
    assert!(e.contains("--resume"), "{e}");
    let s = train(audio_options(6), &killed, true, Backend::Cpu, true).unwrap();
    assert_eq!((s.start, s.end), (3, 6));
    let (a, b) = (rows(&straight, "train.csv"), rows(&killed, "train.csv"));
    assert_eq!((a.len(), b.len()), (6, 6));
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(ra[0], rb[0]);
        assert!(
            (ra[1] - rb[1]).abs() <= 1e-4 * ra[1].abs().max(1.0),
            "step {}: loss {} straight vs {} resumed",
            ra[0],
            ra[1],
            rb[1]
        );
    }
    // Validation: real encodes at three qualities at steps 3 and 6, rate rising with quality.
    let val = rows(&killed, "val.csv");
    assert_eq!(val.len(), 2 * 3);
    assert!(val[0][2] < val[2][2], "{val:?}");
    for f in ["loss.png", "weights.ncw", "run.json"] {
        assert!(killed.join(f).is_file(), "{f} missing");
    }
    let w = std::fs::read(killed.join("weights.ncw")).unwrap();
    WallocCodec::from_weights(&w, Medium::Audio, Backend::Cpu.device()).unwrap();
    // A run of another medium in the same folder is refused.
    let mut image = audio_options(6);
    image.model = WallocConfig::tiny(Medium::Image);
    assert!(train(image, &killed, true, Backend::Cpu, true).is_err());
}

#[test]
fn an_image_run_trains_and_pca_starts_ahead() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, pca_init: bool| {
        let out = dir.path().join(name);
        let o = WallocTrainOptions {
            data: shared("train-images/bsds500"),
            model: WallocConfig::tiny(Medium::Image),
            steps: 40,
            batch: 4,
            crop: 32,
            lr: 3e-3,
            checkpoint_every: 40,
            val_every: 0,
            seed: 3,
            pca_init,
            ..WallocTrainOptions::defaults(Medium::Image)
        };
        train(o, &out, false, Backend::Cpu, true).unwrap();
        rows(&out, "train.csv")
    };
    let mean = |s: &[Vec<f64>]| s.iter().map(|r| r[1]).sum::<f64>() / s.len() as f64;
    // From random weights the loss falls: the network learns.
    let random = run("random", false);
    let (first, last) = (mean(&random[..10]), mean(&random[30..]));
    assert!(last < first, "loss {first} → {last}");
    // The PCA initialization starts where random weights are still far from.
    let pca = run("pca", true);
    assert!(
        mean(&pca[..10]) < first,
        "PCA start {} vs random {first}",
        mean(&pca[..10])
    );
}
