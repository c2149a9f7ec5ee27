//! Metrics against reference values, BD-rate against published pairs, the JSON schema, an eval run
//! with the classical JPEG runner, and a plot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use ncodec_training::bdrate::{Interp, bd};
use ncodec_training::eval::{Classical, ImageRunner, dataset_images, evaluate};
use ncodec_training::metrics::{ms_ssim_u8, psnr_u8};
use ncodec_training::plot::{PlotOptions, plot_rd};
use ncodec_training::rd::RdCurve;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn kodak(name: &str) -> PathBuf {
    shared().join("data/kodak").join(name)
}

/// Reference rows of `shared/reference/classical/kodak-classical-per-image.csv`, measured with the
/// anchors' Python script (libjpeg-turbo 2.1.5 `cjpeg -quality Q -sample 2x2 -optimize`):
/// (image, quality, bytes, PSNR-RGB, MS-SSIM-RGB).
const JPEG_REFERENCE: &[(&str, u32, u64, f64, f64)] = &[
    (
        "kodim01.png",
        10,
        17958,
        24.77346899958308,
        0.9177582187472085,
    ),
    (
        "kodim23.png",
        10,
        8343,
        28.865438783174866,
        0.8831554408222865,
    ),
    (
        "kodim01.png",
        50,
        59894,
        29.86791294787986,
        0.9823276718829023,
    ),
    (
        "kodim23.png",
        90,
        75923,
        39.64109337306077,
        0.9927752168022715,
    ),
];

#[test]
fn psnr_and_ms_ssim_match_the_reference_implementation() {
    if Classical::Jpeg.check_tools().is_err() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: cjpeg not installed (apt-get install libjpeg-turbo-progs)");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    for &(name, q, bytes, psnr, msssim) in JPEG_REFERENCE {
        let img = image::open(kodak(name)).unwrap().to_rgb8();
        let coded = Classical::Jpeg
            .code(&img, &kodak(name), &q.to_string(), scratch.path())
            .unwrap();
        // Same encoder, same bytes: the reconstruction is the one the reference measured.
        assert_eq!(
            coded.bytes, bytes,
            "{name} q{q}: cjpeg output differs from the reference run"
        );
        let (w, h) = img.dimensions();
        let p = psnr_u8(img.as_raw(), coded.decoded.as_raw()).unwrap();
        let m = ms_ssim_u8(
            img.as_raw(),
            coded.decoded.as_raw(),
            w as usize,
            h as usize,
            3,
        )
        .unwrap();
        assert!((p - psnr).abs() < 1e-6, "{name} q{q}: PSNR {p} vs {psnr}");
        assert!(
            (m - msssim).abs() < 1e-4,
            "{name} q{q}: MS-SSIM {m} vs {msssim}"
        );
    }
}

fn curve(path: &str) -> (Vec<f64>, Vec<f64>) {
    RdCurve::read(&shared().join("reference").join(path))
        .unwrap()
        .rate_psnr()
        .unwrap()
}

/// Published pairs, with the Bjøntegaard figures of `shared/notes/efficient-lic.md` (cubic fit of
/// log-rate vs PSNR, computed there from CompressAI's JSON): our polynomial variant must agree within
/// 0.2 percentage points, and gives (measured here) +30.14 %, +21.03 %, +3.79 % and +7.34 %.
#[test]
fn bd_rate_of_published_pairs() {
    let dir = "compressai/image/kodak/";
    let vtm = curve(&format!("{dir}vtm.json"));
    for (file, published) in [
        ("compressai-bmshj2018-hyperprior_mse_cuda.json", 30.1),
        ("compressai-mbt2018-mean_mse_cuda.json", 21.0),
        ("compressai-cheng2020-anchor_mse_cuda.json", 3.8),
    ] {
        let c = curve(&format!("{dir}{file}"));
        let poly = bd((&vtm.0, &vtm.1), (&c.0, &c.1), Interp::Polynomial).unwrap();
        let pchip = bd((&vtm.0, &vtm.1), (&c.0, &c.1), Interp::Pchip).unwrap();
        eprintln!(
            "{file} vs VTM: poly {:+.2} %, pchip {:+.2} %",
            poly.rate_percent, pchip.rate_percent
        );
        assert!(
            (poly.rate_percent - published).abs() < 0.2,
            "{file}: {poly:?}"
        );
        assert!(
            (pchip.rate_percent - poly.rate_percent).abs() < 1.0,
            "{file}: pchip {pchip:?}"
        );
        assert!(poly.psnr_db < 0.0 && pchip.psnr_db < 0.0);
    }
    // The same curves with the roles swapped: the scale-only hyperprior costs +7.3 % over mbt2018-mean.
    let hp = curve(&format!(
        "{dir}compressai-bmshj2018-hyperprior_mse_cuda.json"
    ));
    let mean = curve(&format!("{dir}compressai-mbt2018-mean_mse_cuda.json"));
    let b = bd((&mean.0, &mean.1), (&hp.0, &hp.1), Interp::Polynomial).unwrap();
    assert!((b.rate_percent - 7.3).abs() < 0.2, "{b:?}");
    let back = bd((&hp.0, &hp.1), (&mean.0, &mean.1), Interp::Polynomial).unwrap();
    assert!(back.rate_percent < 0.0 && back.psnr_db > 0.0);
}

#[test]
fn results_json_round_trips_and_reads_compressai_files() {
    let c = RdCurve::read(&shared().join("reference/classical/kodak-classical-jpeg.json")).unwrap();
    let text = serde_json::to_string(&c).unwrap();
    let back: RdCurve = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);
    assert_eq!(
        c.series("bpp").unwrap().len(),
        c.series("psnr-rgb").unwrap().len()
    );
    assert!(RdCurve::read(Path::new("/nonexistent.json")).is_err());
}

#[test]
fn eval_with_the_jpeg_runner_on_two_images() {
    if Classical::Jpeg.check_tools().is_err() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: cjpeg not installed (apt-get install libjpeg-turbo-progs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["kodim01.png", "kodim23.png"] {
        std::fs::copy(kodak(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("broken.png"), b"not a png").unwrap();
    let items = dataset_images(dir.path()).unwrap();
    assert_eq!(items.len(), 3);
    let qualities: Vec<String> = vec!["10".into(), "50".into()];
    let failures = std::sync::Mutex::new(Vec::new());
    struct Collect<'a>(&'a std::sync::Mutex<Vec<String>>);
    impl ncodec_training::eval::Progress for Collect<'_> {
        fn tick(&self, failure: Option<String>) {
            if let Some(f) = failure {
                self.0.lock().unwrap().push(f);
            }
        }
    }
    let c = evaluate(&Classical::Jpeg, &items, &qualities, 2, &Collect(&failures)).unwrap();
    assert_eq!(
        failures.lock().unwrap().len(),
        2,
        "the broken file is skipped at each point"
    );
    let bpp = c.series("bpp").unwrap();
    let psnr = c.series("psnr-rgb").unwrap();
    // Means over the two good images, equal to the reference rows.
    assert!((bpp[0] - (17958.0 + 8343.0) * 8.0 / (768.0 * 512.0) / 2.0).abs() < 1e-12);
    assert!((psnr[0] - (24.77346899958308 + 28.865438783174866) / 2.0).abs() < 1e-6);
    assert!(bpp[1] > bpp[0] && psnr[1] > psnr[0]);
    assert_eq!(c.per_item.len(), 4);
    assert_eq!(c.series("quality").unwrap(), vec![10.0, 50.0]);
}

#[test]
fn plot_writes_a_png_with_both_panels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rd.png");
    let curves = vec![
        RdCurve::read(&shared().join("reference/classical/kodak-classical-jpeg.json")).unwrap(),
        RdCurve::read(&shared().join(
            "reference/compressai/image/kodak/compressai-bmshj2018-hyperprior_mse_cuda.json",
        ))
        .unwrap(),
    ];
    plot_rd(&curves, &out, &PlotOptions::default()).unwrap();
    let img = image::open(&out).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), PlotOptions::default().size);
    // Both curve colours appear in both halves.
    let (w, _) = img.dimensions();
    for (x0, x1) in [(0, w / 2), (w / 2, w)] {
        for color in [[31, 119, 180], [255, 127, 14]] {
            assert!(
                img.enumerate_pixels()
                    .any(|(x, _, p)| x >= x0 && x < x1 && p.0 == color),
                "colour {color:?} missing in [{x0}, {x1})"
            );
        }
    }
}

/// A lossless stand-in codec: checks the averaging and the finite PSNR of lossless items without
/// external tools.
struct Identity;

impl ImageRunner for Identity {
    fn name(&self) -> String {
        "identity".into()
    }
    fn description(&self) -> String {
        "stores raw RGB".into()
    }
    fn default_qualities(&self) -> Vec<String> {
        vec!["1".into()]
    }
    fn code(
        &self,
        image: &image::RgbImage,
        _source: &Path,
        _quality: &str,
        _scratch: &Path,
    ) -> Result<ncodec_training::eval::Coded, ncodec_training::eval::EvalError> {
        Ok(ncodec_training::eval::Coded {
            bytes: image.as_raw().len() as u64,
            decoded: image.clone(),
            encoding_time: 0.0,
            decoding_time: 0.0,
        })
    }
}

#[test]
fn lossless_items_have_finite_psnr_in_json() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::from_fn(200, 180, |x, y| {
        image::Rgb([x as u8, y as u8, (x ^ y) as u8])
    })
    .save(dir.path().join("a.png"))
    .unwrap();
    let items = dataset_images(dir.path()).unwrap();
    let c = evaluate(&Identity, &items, &["1".to_string()], 1, &()).unwrap();
    assert_eq!(c.series("bpp").unwrap(), vec![24.0]);
    let expected = 10.0 * (255.0f64 * 255.0 * 200.0 * 180.0 * 3.0).log10();
    assert!((c.series("psnr-rgb").unwrap()[0] - expected).abs() < 1e-9);
    assert_eq!(c.series("ms-ssim-rgb").unwrap(), vec![1.0]);
    // Finite, so it survives JSON (serde_json parses floats to within an ulp, not always exactly).
    let back: RdCurve = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert!((back.per_item[0].psnr_rgb - expected).abs() < 1e-9);
    assert!((back.series("psnr-rgb").unwrap()[0] - expected).abs() < 1e-9);
}

/// WebP, AVIF and JPEG XL runners reproduce the shared reference runs byte for byte (same Debian
/// tools, same settings), so their curves are comparable with `shared/reference/classical/`.
#[test]
fn classical_runners_reproduce_the_reference_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let img = image::open(kodak("kodim01.png")).unwrap().to_rgb8();
    for (codec, q, bytes, psnr) in [
        (Classical::Webp, "50", 52712, 31.49733191351247),
        (Classical::Avif, "44", 23317, 28.179123508257128),
        (Classical::Jxl, "4", 41943, 29.656007714922026),
    ] {
        if codec.check_tools().is_err() && std::env::var_os("CI").is_none() {
            eprintln!("skipped {codec:?}: tools not installed");
            continue;
        }
        let coded = codec
            .code(&img, &kodak("kodim01.png"), q, scratch.path())
            .unwrap();
        assert_eq!(coded.bytes, bytes, "{codec:?} q{q}");
        let p = psnr_u8(img.as_raw(), coded.decoded.as_raw()).unwrap();
        // The files are identical; decoders may round a few pixels differently by CPU (djxl 0.7
        // picks its SIMD path at run time: 29.6560059 instead of 29.6560077 dB on one machine).
        assert!(
            (p - psnr).abs() < 1e-4,
            "{codec:?} q{q}: PSNR {p} vs {psnr}"
        );
    }
    assert!(
        Classical::Jxl
            .code(&img, &kodak("kodim01.png"), "zero", scratch.path())
            .is_err()
    );
}
