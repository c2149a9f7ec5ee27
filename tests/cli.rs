//! End-to-end tests of the `ncodec` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
mod common;

use common::{ncodec, text};

use ncodec_bitstream::conformance::{SplitMix64, golden_set};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/golden/{name}.ncd"))
}

#[test]
fn info_prints_every_header_field_of_every_golden_file() {
    for (name, _, symbols) in golden_set().unwrap() {
        let out = ncodec(&["info", golden(name).to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        for field in [
            "format        ncd 1.0",
            "codec         conformance (0x0001)",
            "model id      0000000000000000",
            &format!(
                "media         image {}×1, 1 channel(s), 16 bit",
                symbols.len()
            ),
            "quality       0",
            "codec params  1 bytes",
            "streams       2",
            "label 0   raw",
            "label 1   ans32",
            "bpp",
        ] {
            assert!(s.contains(field), "{name}: missing '{field}' in\n{s}");
        }
    }
}

#[test]
fn info_json_is_machine_readable() {
    let out = ncodec(&["info", golden("gaussian").to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["codec"]["name"], "conformance");
    assert_eq!(v["media"]["kind"], "image");
    assert_eq!(v["media"]["width"], 512);
    assert_eq!(v["streams"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["file_bytes"],
        std::fs::metadata(golden("gaussian")).unwrap().len()
    );
}

#[test]
fn decode_golden_files_gives_their_symbols() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _, symbols) in golden_set().unwrap() {
        let out_path = dir.path().join(format!("{name}.json"));
        let out = ncodec(&[
            "decode",
            golden(name).to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let decoded: Vec<i32> = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
        assert_eq!(decoded, symbols, "{name}");
    }
    // Nothing but the outputs: no temporary files left behind.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        golden_set().unwrap().len()
    );
}

#[test]
fn bad_corpus_exits_1_with_a_message_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(bad).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ncd") {
            continue;
        }
        n += 1;
        let out_path = dir.path().join("out.json");
        let out = ncodec(&[
            "decode",
            path.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            path.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{}",
            text(&out.stderr)
        );
        assert!(
            !out_path.exists(),
            "{}: output written for a bad file",
            path.display()
        );
    }
    assert!(n >= 25);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn newer_version_and_unknown_codec_errors_say_why() {
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let out = ncodec(&[
        "info",
        bad.join("newer-major-version.ncd").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("newer than this decoder supports"),
        "{}",
        text(&out.stderr)
    );
    let out = ncodec(&["decode", bad.join("unknown-codec.ncd").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown codec 0x7777"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn encode_names_the_missing_codec() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("tiny.png");
    image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]))
        .save(&png)
        .unwrap();
    let out = ncodec(&[
        "encode",
        png.to_str().unwrap(),
        "--codec",
        "mcquic",
        "-q",
        "0.25bpp",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("mcquic") && err.contains("not available"),
        "{err}"
    );
    let out = ncodec(&["encode", png.to_str().unwrap(), "--codec", "nosuch"]);
    assert!(text(&out.stderr).contains("unknown codec 'nosuch'"));
    let out = ncodec(&["encode", png.to_str().unwrap(), "-q", "fast"]);
    assert_eq!(out.status.code(), Some(1), "usage errors exit 1");
    let out = ncodec(&["encode", dir.path().join("song.flac").to_str().unwrap()]);
    assert!(text(&out.stderr).contains("unsupported input type"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no output written"
    );
}

#[test]
fn every_subcommand_has_help_and_backend_is_global() {
    for sub in [
        "encode", "decode", "info", "train", "eval", "plot", "doctor",
    ] {
        let out = ncodec(&[sub, "--help"]);
        assert!(out.status.success(), "{sub}");
        assert!(text(&out.stdout).contains("--backend"), "{sub}");
    }
    let out = ncodec(&[
        "info",
        golden("mixture").to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success());
    let out = ncodec(&["--backend", "tpu", "info", "x.ncd"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn doctor_runs_on_cpu() {
    let out = ncodec(&["doctor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("backend cpu: ok"));
}

/// The wgpu code path: Mesa's lavapipe in CI, a real GPU where there is one.
#[test]
fn doctor_runs_on_wgpu() {
    let out = ncodec(&["doctor", "--backend", "wgpu"]);
    if !out.status.success() && std::env::var_os("CI").is_none() {
        eprintln!(
            "skipped: no working Vulkan adapter here ({}); apt-get install mesa-vulkan-drivers",
            text(&out.stderr)
        );
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("backend wgpu: ok"));
}

/// Mutated and truncated copies of the golden files through the real binary: each one decodes or
/// exits 1 with a message; none panics (exit 101) or dies of a signal. `NCODEC_MUTATIONS` sets the
/// count (10,000 for the release check; 300 by default to keep `cargo test` fast).
#[test]
fn mutated_files_never_crash_the_cli() {
    let count: usize = std::env::var("NCODEC_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let goldens: Vec<Vec<u8>> = golden_set()
        .unwrap()
        .iter()
        .map(|(n, _, _)| std::fs::read(golden(n)).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64(2026);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..count {
        let m = ncodec_bitstream::fuzzing::mutate(&goldens[i % goldens.len()], &mut rng);
        let path = dir.path().join("m.ncd");
        std::fs::write(&path, &m).unwrap();
        for out in [
            ncodec(&["info", path.to_str().unwrap()]),
            ncodec(&[
                "decode",
                path.to_str().unwrap(),
                "-o",
                dir.path().join("o.json").to_str().unwrap(),
            ]),
        ] {
            match out.status.code() {
                Some(0) => ok += 1,
                Some(1) if text(&out.stderr).starts_with("error: ") => refused += 1,
                other => panic!("mutation {i}: exit {other:?}\n{}", text(&out.stderr)),
            }
        }
    }
    eprintln!(
        "{count} mutations × (info, decode): {ok} succeeded, {refused} refused with exit 1, 0 crashes"
    );
}

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

#[test]
fn plot_draws_a_png_and_prints_bd_rates() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("rd.png");
    let jpeg = shared("reference/classical/kodak-classical-jpeg.json");
    let hp =
        shared("reference/compressai/image/kodak/compressai-bmshj2018-hyperprior_mse_cuda.json");
    let out = ncodec(&[
        "plot",
        jpeg.to_str().unwrap(),
        hp.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--log-rate",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("BD vs anchor 'JPEG'") && s.contains("bmshj2018-hyperprior"),
        "{s}"
    );
    assert_eq!(image::image_dimensions(&png).unwrap(), (1500, 640));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
    let out = ncodec(&["plot", jpeg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "nothing to do is an error");
    // A collection file contributes each of its curves.
    let all = shared("reference/classical/kodak-classical.json");
    let out = ncodec(&["plot", all.to_str().unwrap(), hp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["WEBP", "AVIF", "bmshj2018-hyperprior"] {
        assert!(
            text(&out.stdout).contains(name),
            "{name} missing in {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn eval_writes_compressai_json_and_names_unavailable_codecs() {
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(
        shared("data/kodak/kodim23.png"),
        data.path().join("kodim23.png"),
    )
    .unwrap();
    let json = data.path().join("out.json");
    let out = ncodec(&[
        "eval",
        "--codec",
        "vqgan",
        "--data",
        data.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not available"),
        "{}",
        text(&out.stderr)
    );
    let out = ncodec(&[
        "eval",
        "--codec",
        "jpeg",
        "--data",
        data.path().to_str().unwrap(),
        "-q",
        "10,90",
        "--out",
        json.to_str().unwrap(),
        "--per-item",
        "--quiet",
    ]);
    if !out.status.success()
        && std::env::var_os("CI").is_none()
        && text(&out.stderr).contains("apt-get install")
    {
        eprintln!("skipped: {}", text(&out.stderr));
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["name"], "JPEG");
    // kodim23 at q10 / q90: the reference rows of the shared per-image CSV.
    let bpp = v["results"]["bpp"].as_array().unwrap();
    assert!((bpp[0].as_f64().unwrap() - 8343.0 * 8.0 / (768.0 * 512.0)).abs() < 1e-12);
    assert!((v["results"]["psnr-rgb"][1].as_f64().unwrap() - 39.64109337306077).abs() < 1e-6);
    assert_eq!(v["per_item"].as_array().unwrap().len(), 2);
}

/// Inputs that fuzzing once found harmful (`tests/fixtures/fuzz_findings/*.bin`) through the binary.
#[test]
fn fuzz_findings_exit_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz_findings");
    let out_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        for args in [
            vec!["info", path.to_str().unwrap()],
            vec![
                "decode",
                path.to_str().unwrap(),
                "-o",
                out_dir.path().join("o.json").to_str().unwrap(),
            ],
        ] {
            let code = ncodec(&args).status.code();
            assert!(
                matches!(code, Some(0 | 1)),
                "{}: exit {code:?}",
                path.display()
            );
        }
    }
}
