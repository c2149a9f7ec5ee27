//! The hyperprior through the `ncodec` binary: the README's main job, rate control, `--weights`,
//! image conversions and refusals, training from the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
mod common;

use common::{ncodec, text};

use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::{HyperpriorCodec, HyperpriorConfig, weights};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/coffee.png")
}

fn tiny_weights(dir: &Path) -> PathBuf {
    let cfg = HyperpriorConfig::TINY;
    let model = cfg.init(&Backend::Cpu.device());
    let path = dir.join("tiny.ncw");
    std::fs::write(&path, weights::to_bytes(&model, &cfg, true).unwrap()).unwrap();
    path
}

fn bpp_of(stdout: &str) -> f64 {
    let i = stdout.find(" bpp").expect("bpp printed");
    let start = stdout[..i].rfind(' ').unwrap() + 1;
    stdout[start..i].parse().unwrap()
}

/// The README's main job: the shipped sample at 0.25 bpp with the shipped weights.
#[test]
fn readme_main_job_lands_just_below_the_target_rate() {
    let dir = tempfile::tempdir().unwrap();
    let ncd = dir.path().join("coffee.ncd");
    let png = dir.path().join("coffee.png");
    let s = sample();
    let out = ncodec(&[
        "encode",
        s.to_str().unwrap(),
        "-q",
        "0.25bpp",
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bpp = bpp_of(&text(&out.stdout));
    assert!((0.97 * 0.25..=0.25).contains(&bpp), "landed at {bpp} bpp");
    let real = std::fs::metadata(&ncd).unwrap().len() as f64 * 8.0 / (600.0 * 400.0);
    assert!((real - bpp).abs() < 1e-3, "printed {bpp}, file {real}");
    // The restoration filter pays at this rate, and the target search makes room for its bits.
    let info = text(&ncodec(&["info", ncd.to_str().unwrap()]).stdout);
    assert!(
        info.contains("label 5   raw"),
        "no fine filter stream:\n{info}"
    );
    let out = ncodec(&[
        "decode",
        ncd.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--compare",
        s.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let so = text(&out.stdout);
    assert!(so.contains("PSNR") && so.contains("MS-SSIM"), "{so}");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (600, 400));
    // A rate below what the model can reach is a clear error naming the lowest rate.
    let out = ncodec(&[
        "encode",
        s.to_str().unwrap(),
        "-q",
        "0.0001bpp",
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("lowest rate"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn weights_flag_backend_after_subcommand_and_wrong_model() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let ncd = dir.path().join("x.ncd");
    let s = sample();
    let out = ncodec(&[
        "encode",
        s.to_str().unwrap(),
        "--codec",
        "hyperprior",
        "-q",
        "3",
        "-o",
        ncd.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ncodec(&["info", ncd.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("hyperprior (0x0010)"),
        "{}",
        text(&out.stdout)
    );
    let out = ncodec(&[
        "decode",
        ncd.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.path().join("x.png").is_file());
    // The shipped weights refuse a file made with other weights, and write nothing.
    std::fs::remove_file(dir.path().join("x.png")).unwrap();
    let out = ncodec(&["decode", ncd.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("model"), "{}", text(&out.stderr));
    assert!(!dir.path().join("x.png").exists());
    // Bad weights files are errors.
    let bad = dir.path().join("bad.ncw");
    std::fs::write(&bad, b"not weights").unwrap();
    let out = ncodec(&[
        "encode",
        s.to_str().unwrap(),
        "--weights",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("weights"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gray_16_bit_and_transparent_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let w = w.to_str().unwrap();
    let gray = dir.path().join("gray16.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(70, 50, |x, y| {
        image::Luma([(x * 900 + y * 300) as u16])
    })
    .save(&gray)
    .unwrap();
    let out = ncodec(&["encode", gray.to_str().unwrap(), "--weights", w]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("grayscale") && err.contains("16-bit"), "{err}");
    let out = ncodec(&[
        "decode",
        dir.path().join("gray16.ncd").to_str().unwrap(),
        "--weights",
        w,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let back = image::open(dir.path().join("gray16.png")).unwrap();
    assert_eq!((back.width(), back.height()), (70, 50));

    let alpha = dir.path().join("alpha.png");
    image::RgbaImage::from_fn(40, 40, |x, _| {
        image::Rgba([10, 20, 30, if x < 20 { 255 } else { 0 }])
    })
    .save(&alpha)
    .unwrap();
    let out = ncodec(&["encode", alpha.to_str().unwrap(), "--weights", w]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("transparent"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("alpha.ncd").exists());
}

#[test]
fn train_from_the_command_line_writes_weights_that_encode() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/train-images/bsds500");
    let args = [
        "train",
        "--codec",
        "hyperprior",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--n",
        "8",
        "--m",
        "12",
        "--batch",
        "1",
        "--crop",
        "64",
        "--checkpoint-every",
        "2",
        "--val-every",
        "0",
        "--quiet",
    ];
    let out = ncodec(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("steps/s"));
    assert!(
        text(&out.stdout).contains("calibrate --data"),
        "{}",
        text(&out.stdout)
    );
    let w = run.join("weights.ncw");
    let out = ncodec(&[
        "encode",
        sample().to_str().unwrap(),
        "-o",
        dir.path().join("c.ncd").to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Running again into the same folder without --resume is refused.
    let out = ncodec(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--resume"),
        "{}",
        text(&out.stderr)
    );
    // A fresh run started from those weights, widened to more latent channels, and the
    // combinations that cannot work.
    let wide = dir.path().join("wide");
    let from = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1",
            "--batch",
            "1",
            "--crop",
            "64",
            "--val-every",
            "0",
            "--quiet",
        ];
        a.extend_from_slice(extra);
        ncodec(&a)
    };
    let out = from(
        &wide,
        &[
            "--codec",
            "hyperprior",
            "--n",
            "8",
            "--m",
            "20",
            "--init-from",
            w.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wide_weights = std::fs::read(wide.join("weights.ncw")).unwrap();
    let (cfg, _) = weights::config_of(&wide_weights).unwrap();
    assert_eq!((cfg.n, cfg.m, cfg.shortcut), (8, 20, true));
    let run_json = std::fs::read_to_string(wide.join("run.json")).unwrap();
    assert!(run_json.contains("\"warmup\": 200"), "{run_json}");
    let out = from(
        &dir.path().join("other-n"),
        &[
            "--codec",
            "hyperprior",
            "--n",
            "16",
            "--m",
            "20",
            "--init-from",
            w.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("only M may grow"),
        "{}",
        text(&out.stderr)
    );
    for flag in [
        &["--no-shortcut"][..],
        &["--init-from", w.to_str().unwrap()],
    ] {
        let mut extra = vec!["--codec", "walloc-image"];
        extra.extend_from_slice(flag);
        let out = from(&dir.path().join("walloc"), &extra);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("hyperprior options"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = ncodec(&[
        "train",
        "--codec",
        "odvae",
        "--data",
        ".",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// `ncodec calibrate` fits the scale map on a folder of photos and writes weights that carry it:
/// files made with them are smaller and decode; other codecs and qualities out of range are
/// refused.
#[test]
fn calibrate_writes_weights_that_code_smaller_files() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights(dir.path());
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    let img = image::open(sample()).unwrap().to_rgb8();
    for (i, (x, y)) in [(0, 0), (300, 0), (100, 200)].into_iter().enumerate() {
        image::imageops::crop_imm(&img, x, y, 192, 160)
            .to_image()
            .save(photos.join(format!("p{i}.png")))
            .unwrap();
    }
    let cal = dir.path().join("cal.ncw");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "calibrate",
            "--data",
            photos.to_str().unwrap(),
            "--out",
            cal.to_str().unwrap(),
            "--weights",
            w.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ncodec(&args)
    };
    let out = run(&["-q", "1,8", "--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let so = text(&out.stdout);
    assert!(so.contains("calibrated on 3 images x 2 qualities"), "{so}");
    assert!(so.contains("with the context table"), "{so}");
    assert!(so.contains("z costs"), "{so}");
    let map = weights::scale_map_of(&std::fs::read(&cal).unwrap())
        .unwrap()
        .unwrap();
    assert!(map.has_context());
    assert_eq!(
        map.z_tables.len(),
        10 * 8,
        "quality buckets × z channels of the tiny net"
    );

    let s = sample();
    let size = |weights: &Path, name: &str| {
        let ncd = dir.path().join(name);
        let out = ncodec(&[
            "encode",
            s.to_str().unwrap(),
            "-q",
            "4",
            "-o",
            ncd.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = ncodec(&[
            "decode",
            ncd.to_str().unwrap(),
            "--weights",
            weights.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::metadata(&ncd).unwrap().len()
    };
    assert!(size(&w, "plain.ncd") > 0 && size(&cal, "cal.ncd") > 0);
    // The same symbols cost fewer bits. Compared with the encoder's closed-loop refinement off:
    // it trades bits for error differently under each model, so the files it writes at one
    // quality are not the same symbols.
    let open_loop_bytes = |weights: &Path| {
        let bytes = std::fs::read(weights).unwrap();
        let codec = HyperpriorCodec::from_weights(&bytes, Backend::Cpu.device())
            .unwrap()
            .with_refine_rounds(0);
        let coded = codec.encode_image(&img, 4.0).unwrap();
        coded.container.to_bytes().unwrap().len()
    };
    let (plain, calibrated) = (open_loop_bytes(&w), open_loop_bytes(&cal));
    assert!(
        calibrated < plain,
        "calibrated {calibrated} bytes, plain {plain}"
    );

    // The context table's third feature: a table five times as large, whose finer cells code the
    // calibration symbols in no more bits (reported), and whose files decode.
    let context_bits = |so: &str| -> f64 {
        let at = so.find("with the context table ").expect("context report") + 23;
        so[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let out = run(&["-q", "1,8", "--quiet", "--context-depth"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deep_so = text(&out.stdout);
    let deep = weights::scale_map_of(&std::fs::read(&cal).unwrap())
        .unwrap()
        .unwrap();
    assert!(deep.context_depth && !map.context_depth);
    assert_eq!(deep.context.len(), 5 * map.context.len());
    assert!(
        context_bits(&deep_so) <= context_bits(&so),
        "{deep_so}\nagainst\n{so}"
    );
    assert!(size(&cal, "deep.ncd") > 0);
    // Its far split: four times as large again, no more bits, and its files decode; without the
    // third feature it is refused.
    let out = run(&["-q", "1,8", "--quiet", "--context-depth", "--context-far"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let far_so = text(&out.stdout);
    let far = weights::scale_map_of(&std::fs::read(&cal).unwrap())
        .unwrap()
        .unwrap();
    assert!(far.context_depth && far.context_far && !deep.context_far);
    assert_eq!(far.context.len(), 4 * deep.context.len());
    assert!(
        context_bits(&far_so) <= context_bits(&deep_so),
        "{far_so}\nagainst\n{deep_so}"
    );
    assert!(size(&cal, "far.ncd") > 0);
    let out = run(&["-q", "1,8", "--quiet", "--context-far"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--context-depth"),
        "{}",
        text(&out.stderr)
    );
    // Candidate context features, measured by cross-validation: held-out never below in-sample,
    // and the shipped third feature's finer cells fit at least as well as two features.
    let out = run(&[
        "-q",
        "1,8",
        "--quiet",
        "--context-depth",
        "--screen-context",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let so = text(&out.stdout);
    let row = |name: &str| -> (f64, f64) {
        let line = so
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in {so}"));
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1])
    };
    for name in [
        "two",
        "depth",
        "depth+g8",
        "depth+low4",
        "depth+wide",
        "depth+phase",
        "depth+far16",
    ] {
        let (held_out, in_sample) = row(name);
        assert!(held_out >= in_sample && in_sample > 0.0, "{name}: {so}");
    }
    assert!(row("depth").1 <= row("two").1, "{so}");
    assert!(so.contains("a free histogram per cell and index"), "{so}");
    let screened = weights::scale_map_of(&std::fs::read(&cal).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(screened, deep, "screening leaves the table alone");
    let out = run(&["--no-context", "--context-depth"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["-q", "4", "--quiet", "--no-context", "--no-z-tables"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let map = weights::scale_map_of(&std::fs::read(&cal).unwrap())
        .unwrap()
        .unwrap();
    assert!(!map.has_context() && !map.is_identity() && map.z_tables.is_empty());
    let out = run(&["--codec", "walloc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("only the hyperprior"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["-q", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("outside"),
        "{}",
        text(&out.stderr)
    );
}
