//! The hyperprior: shapes, the deterministic h_s, bottleneck tables, round trips through the real
//! bitstream with tiny random-init weights, tiling, weights files, bad input, cross-backend decoding.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use image::RgbImage;
use ncodec_bitstream::{Container, Limits, ModelId};
use ncodec_codecs::Backend;
use ncodec_codecs::hyperprior::hs_cpu::HyperSynthesisCpu;
use ncodec_codecs::hyperprior::{
    HyperpriorCodec, HyperpriorConfig, STREAM_FILTER, STREAM_FILTER_CLIPPED, STREAM_FILTER_COMPACT,
    STREAM_FILTER_FINE, STREAM_FILTER_FINE_CLIPPED, weights,
};
use ncodec_codecs::wiener::FINE_SHIFT;

/// Labels of the restoration filter streams the encoder writes (first and clipped stage, on the
/// 8-bit picture or the fine one).
const FILTERS: [u8; 4] = [
    STREAM_FILTER_COMPACT,
    STREAM_FILTER_CLIPPED,
    STREAM_FILTER_FINE,
    STREAM_FILTER_FINE_CLIPPED,
];

fn kodak_crop(w: u32, h: u32) -> RgbImage {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/kodak/kodim23.png"
    );
    let img = image::open(path).expect("kodim23").to_rgb8();
    image::imageops::crop_imm(&img, 200, 100, w, h).to_image()
}

fn tiny(
    device: &burn::tensor::Device,
) -> (HyperpriorConfig, ncodec_codecs::hyperprior::Hyperprior) {
    let cfg = HyperpriorConfig::TINY;
    (cfg, cfg.init(device))
}

fn tiny_codec(backend: Backend) -> (HyperpriorCodec, Vec<u8>) {
    let device = Backend::Cpu.device();
    let (cfg, model) = tiny(&device);
    let bytes = weights::to_bytes(&model, &cfg, false).expect("serialize");
    let codec = HyperpriorCodec::from_weights(&bytes, backend.device()).expect("load");
    (codec, bytes)
}

#[test]
fn training_forward_has_documented_shapes() {
    let device = Backend::Cpu.device().autodiff();
    let (cfg, model) = tiny(&device);
    let (b, s) = (2, 128);
    let x = Tensor::<4>::random([b, 3, s, s], Distribution::Uniform(0.0, 1.0), &device);
    let y = model.analysis(x.clone());
    assert_eq!(y.dims(), [b, cfg.m, s / 16, s / 16]);
    let z = model.hyper_analysis(y.clone());
    assert_eq!(z.dims(), [b, cfg.n, s / 64, s / 64]);
    let (scales, means) = model.hyper_synthesis(z.clone());
    assert_eq!(scales.dims(), y.dims());
    assert_eq!(means.dims(), y.dims());
    assert_eq!(model.synthesis(y).dims(), [b, 3, s, s]);
    let levels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 7], [b]), &device);
    let out = model.forward_train(
        x,
        levels,
        Tensor::zeros([b, cfg.m, s / 16, s / 16], &device),
        Tensor::zeros([b, cfg.n, s / 64, s / 64], &device),
    );
    assert_eq!(out.x_hat.dims(), [b, 3, s, s]);
    let bits = out
        .bits
        .clone()
        .into_data()
        .try_to_vec::<f32>()
        .expect("bits");
    assert!(bits.iter().all(|v| v.is_finite() && *v > 0.0), "{bits:?}");
    // Gradients reach every part of the network.
    let grads = out.bits.sum().backward();
    let g = model.hs_out.weight.grad(&grads).expect("h_s gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
    let g = model.ga[0].weight.grad(&grads).expect("g_a gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}

#[test]
fn the_hard_rate_is_the_rate_of_the_rounded_symbols() {
    let device = Backend::Cpu.device().autodiff();
    let (cfg, model) = tiny(&device);
    let (b, s) = (2, 64);
    let x = Tensor::<4>::random([b, 3, s, s], Distribution::Uniform(0.0, 1.0), &device);
    let levels = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 6], [b]), &device);
    let noise = |v: f64| Tensor::<4>::full([b, cfg.m, s / 16, s / 16], v, &device);
    let nz = Tensor::<4>::zeros([b, cfg.n, s / 64, s / 64], &device);
    let bits = |hard: bool, n: f64| {
        let o = model.forward_train_with(x.clone(), levels.clone(), noise(n), nz.clone(), hard);
        (
            o.bits
                .clone()
                .into_data()
                .try_to_vec::<f32>()
                .expect("bits"),
            o,
        )
    };
    // The noisy proxy moves with the noise; the hard rate only sees ⌊y − μ⌉.
    let (soft_a, _) = bits(false, -0.4);
    let (soft_b, _) = bits(false, 0.3);
    assert_ne!(soft_a, soft_b);
    let (hard_a, out) = bits(true, -0.4);
    let (hard_b, _) = bits(true, 0.3);
    assert_eq!(hard_a, hard_b);
    assert!(hard_a.iter().all(|v| v.is_finite() && *v > 0.0));
    // Straight-through: the rate still trains the analysis transform.
    let grads = out.bits.sum().backward();
    let g = model.ga[0].weight.grad(&grads).expect("g_a gradient");
    assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
}

#[test]
fn cpu_hyper_synthesis_matches_burn_and_ignores_thread_count() {
    let device = Backend::Cpu.device();
    let (cfg, model) = tiny(&device);
    let (h, w) = (3, 5);
    let z: Vec<i32> = (0..cfg.n * h * w).map(|i| (i as i32 * 7 % 9) - 4).collect();
    let hs = HyperSynthesisCpu::from_model(&model).expect("weights");
    let one = hs.clone().with_threads(1).run(&z, h, w);
    let three = hs.with_threads(3).run(&z, h, w);
    assert_eq!(one, three, "thread count changed the bits");
    assert_eq!((one.h, one.w, one.c), (4 * h, 4 * w, 2 * cfg.m));
    let zt = Tensor::<4>::from_data(
        TensorData::new(
            z.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            [1, cfg.n, h, w],
        ),
        &device,
    );
    let (scales, means) = model.hyper_synthesis(zt);
    let burn_out = Tensor::cat(vec![scales, means], 1)
        .into_data()
        .try_to_vec::<f32>()
        .expect("read");
    let mut max = 0.0f32;
    for c in 0..2 * cfg.m {
        for p in 0..one.h * one.w {
            max = max.max((burn_out[c * one.h * one.w + p] - one.data[p * one.c + c]).abs());
        }
    }
    assert!(max < 1e-4, "CPU h_s differs from Burn's by {max}");
}

#[test]
fn round_trip_through_the_bitstream_recovers_every_symbol() {
    let (codec, _) = tiny_codec(Backend::Cpu);
    // Odd size: padding to 64 and cropping back.
    let img = kodak_crop(100, 70);
    for q in [1.0f32, 4.5, 8.0] {
        let coded = codec.encode_image(&img, q).expect("encode");
        let bytes = coded.container.to_bytes().expect("bytes");
        let parsed = Container::parse(&bytes, &Limits::default()).expect("parse");
        assert_eq!(parsed.params.quality, q);
        let (_, decoded) = codec
            .decode_latent(&parsed, &Limits::default())
            .expect("decode");
        assert_eq!(decoded.z, coded.z);
        assert_eq!(decoded.y, coded.y);
        let out = codec
            .decode_image(&parsed, &Limits::default())
            .expect("image");
        assert_eq!(out.dimensions(), img.dimensions());
    }
}

#[test]
fn quality_changes_the_rate_and_out_of_range_is_refused() {
    let (codec, _) = tiny_codec(Backend::Cpu);
    let img = kodak_crop(128, 128);
    let size = |q| {
        codec
            .encode_image(&img, q)
            .expect("encode")
            .container
            .to_bytes()
            .expect("bytes")
            .len()
    };
    assert!(size(8.0) > size(1.0), "higher quality must cost more bits");
    for q in [9.0, 0.05] {
        let e = codec.encode_image(&img, q).expect_err("out of range");
        assert!(e.to_string().contains("outside"), "{e}");
    }
    let e = codec.encode_to_rate(&img, 1e-6).expect_err("too low");
    assert!(e.to_string().contains("lowest rate"), "{e}");
}

#[test]
fn tiles_give_the_same_latents_and_pixels_as_one_pass() {
    let (whole, bytes) = tiny_codec(Backend::Cpu);
    let tiled = HyperpriorCodec::from_weights(&bytes, Backend::Cpu.device())
        .expect("load")
        .with_tile_above(0);
    let img = kodak_crop(600, 300);
    let a = whole.analysis(&img).expect("whole");
    let b = tiled.analysis(&img).expect("tiled");
    let max = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "tiled analysis differs by {max}");
    let pa = whole.synthesis(&a, 600, 300).expect("whole");
    let pb = tiled.synthesis(&a, 600, 300).expect("tiled");
    let diff = pa
        .as_raw()
        .iter()
        .zip(pb.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max();
    assert!(diff <= Some(1), "tiled synthesis differs by {diff:?}");
}

#[test]
fn weights_files_round_trip_in_f16_and_identify_the_model() {
    let device = Backend::Cpu.device();
    let (cfg, model) = tiny(&device);
    let half = weights::to_bytes(&model, &cfg, true).expect("f16");
    let full = weights::to_bytes(&model, &cfg, false).expect("f32");
    assert!(
        half.len() < full.len() * 2 / 3,
        "{} vs {}",
        half.len(),
        full.len()
    );
    let (c2, _) = weights::load(&half, &device).expect("load f16");
    assert_eq!(c2, cfg);
    assert_ne!(weights::model_id(&half), weights::model_id(&full));
    let codec = HyperpriorCodec::from_weights(&half, device.clone()).expect("codec");
    assert_eq!(codec.model_id(), weights::model_id(&half));
    // Damaged weights are an error, not a panic.
    for bad in [
        &half[..10],
        &half[..half.len() / 2],
        b"NCWT\x02\0\0\0\0\0\0\0".as_slice(),
    ] {
        assert!(HyperpriorCodec::from_weights(bad, device.clone()).is_err());
    }
}

#[test]
fn foreign_truncated_and_damaged_files_are_errors() {
    let (codec, _) = tiny_codec(Backend::Cpu);
    let img = kodak_crop(64, 64);
    let coded = codec.encode_image(&img, 4.0).expect("encode");
    let limits = Limits::default();
    // Another model's file.
    let mut other = coded.container.clone();
    other.model = ModelId([9; 8]);
    let e = codec.decode_image(&other, &limits).expect_err("foreign");
    assert!(e.to_string().contains("model"), "{e}");
    // Streams cut short or replaced by garbage: errors or (rarely) garbage pixels, never a panic.
    for cut in [0usize, 1, 3, 7] {
        let mut f = coded.container.clone();
        for s in &mut f.streams {
            let n = s.data.len().saturating_sub(cut.max(1));
            s.data.truncate(n.min(cut * 4));
        }
        let _ = codec.decode_image(&f, &limits);
    }
    // Random bytes flipped inside the streams (behind valid CRCs): an error or garbage pixels,
    // never a panic, and a decoded image always has the declared size.
    let mut rng = ncodec_bitstream::conformance::SplitMix64(5);
    for _ in 0..200 {
        let mut f = coded.container.clone();
        let s = &mut f.streams[rng.below(2) as usize];
        for _ in 0..=rng.below(4) {
            let i = rng.below(s.data.len() as u64) as usize;
            s.data[i] ^= 1 << rng.below(8);
        }
        if let Ok(img) = codec.decode_image(&f, &limits) {
            assert_eq!(img.dimensions(), (64, 64));
        }
    }
    // Absurd dimensions are refused before any allocation.
    let mut huge = coded.container.clone();
    huge.media = ncodec_bitstream::MediaInfo::Image {
        width: 1 << 20,
        height: 1 << 20,
        channels: 3,
        bit_depth: 8,
    };
    assert!(codec.decode_image(&huge, &limits).is_err());
}

/// Encodes on one backend and decodes on the other: the symbols the decoder reads must be the
/// ones the encoder wrote (no desynchronization), and both backends must reconstruct the same
/// pixels from one file. Runs on lavapipe where there is no GPU.
#[test]
fn files_decode_identically_across_backends() {
    if let Err(e) = Backend::Wgpu.self_test() {
        assert!(std::env::var_os("CI").is_none(), "wgpu must run in CI: {e}");
        eprintln!(
            "skipped: no working Vulkan adapter here ({e}); apt-get install mesa-vulkan-drivers"
        );
        return;
    }
    use ncodec_codecs::hyperprior::calibrate::{Calibration, ContextCalibration};
    use ncodec_codecs::hyperprior::predict::PredictionStats;
    let (plain, bytes) = tiny_codec(Backend::Cpu);
    let img = kodak_crop(96, 80);
    // Weights calibrated like shipped ones (latent predictor, map, three-feature context table), so that the
    // sequential context decoder and the predictor's reconstruction are checked too.
    let (m, levels) = (plain.config().m, plain.y_model().scales().len());
    let y = plain.analysis(&img).expect("analysis");
    let mut prediction = PredictionStats::new(m);
    plain
        .add_to_prediction(&y, 5.0, &mut prediction)
        .expect("prediction");
    let predictor = prediction.fit();
    let mut first = Calibration::new(m, levels);
    plain
        .add_to_calibration(&y, 5.0, Some(&predictor), &mut first)
        .expect("calibration");
    let mut map = first.fit(plain.y_model());
    map.predict = Some(predictor);
    let mut second = ContextCalibration::new(m, levels, true, false);
    plain
        .add_to_context_calibration(&y, 5.0, &map, &mut second)
        .expect("context");
    let map = second.fit(&map, plain.y_model());
    let bytes = weights::with_scale_map(&bytes, map).expect("calibrated weights");
    let cpu = HyperpriorCodec::from_weights(&bytes, Backend::Cpu.device()).expect("cpu codec");
    let gpu = HyperpriorCodec::from_weights(&bytes, Backend::Wgpu.device()).expect("wgpu codec");
    let limits = Limits::default();
    for (enc, dec, name) in [(&gpu, &cpu, "wgpu→cpu"), (&cpu, &gpu, "cpu→wgpu")] {
        let coded = enc.encode_image(&img, 5.0).expect("encode");
        let file =
            Container::parse(&coded.container.to_bytes().expect("bytes"), &limits).expect("parse");
        let (latent, got) = dec.decode_latent(&file, &limits).expect("decode");
        assert_eq!(got.z, coded.z, "{name}: z symbols differ");
        assert_eq!(got.y, coded.y, "{name}: y symbols differ");
        // The latent the synthesis receives is bit-identical on both backends.
        let (other, _) = enc.decode_latent(&file, &limits).expect("decode");
        assert_eq!(
            latent.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            other.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}: decoded latents differ"
        );
        let a = cpu.decode_image(&file, &limits).expect("cpu pixels");
        let b = gpu.decode_image(&file, &limits).expect("wgpu pixels");
        let differing = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .filter(|(x, y)| x != y)
            .count();
        let max = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0);
        eprintln!(
            "{name}: {differing} of {} samples differ between backends (max {max})",
            a.as_raw().len()
        );
        assert!(
            max <= 1 && differing * 1000 <= a.as_raw().len(),
            "{name}: pixels differ: {differing}, max {max}"
        );
    }
}

#[test]
fn networks_without_the_shortcut_still_load_and_code() {
    // Weights files made before the shortcut existed have no "shortcut" in their configuration.
    let old: HyperpriorConfig =
        serde_json::from_str(r#"{"n": 8, "m": 12, "levels": 8}"#).expect("old config");
    assert!(!old.shortcut);
    let device = Backend::Cpu.device();
    let model = old.init(&device);
    assert!(model.ga_short.is_none() && model.gs_short.is_none());
    let bytes = weights::to_bytes(&model, &old, true).expect("serialize");
    let codec = HyperpriorCodec::from_weights(&bytes, device).expect("load");
    assert_eq!(codec.config(), old);
    let img = kodak_crop(64, 64);
    let coded = codec.encode_image(&img, 4.0).expect("encode");
    let file = Container::parse(
        &coded.container.to_bytes().expect("bytes"),
        &Limits::default(),
    )
    .expect("parse");
    let (_, got) = codec
        .decode_latent(&file, &Limits::default())
        .expect("decode");
    assert_eq!(got.y, coded.y);
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        / a.as_raw().len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-10)).log10()
}

/// 16×16 blocks (3·256 values in [0, 1], channel, row, column) of four training photos (not the
/// Kodak image the tests code).
fn training_blocks() -> Vec<f32> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/train-images/bsds500"
    );
    let mut files: Vec<_> = std::fs::read_dir(path)
        .expect("train images")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut blocks = Vec::new();
    for f in files.iter().take(4) {
        let img = image::open(f).expect("photo").to_rgb8();
        for by in (0..img.height() / 16).map(|b| b * 16) {
            for bx in (0..img.width() / 16).map(|b| b * 16) {
                for c in 0..3 {
                    for i in 0..16 {
                        for j in 0..16 {
                            blocks.push(f32::from(img.get_pixel(bx + j, by + i).0[c]) / 255.0);
                        }
                    }
                }
            }
        }
    }
    blocks
}

#[test]
fn the_pca_initialization_is_a_working_block_transform_coder() {
    let blocks = training_blocks();
    let device = Backend::Cpu.device();
    let cfg = HyperpriorConfig {
        m: 48,
        ..HyperpriorConfig::TINY
    };
    let random = cfg.init(&device);
    device.seed(3);
    let pca = cfg.init(&device).init_from_pca(&cfg, &blocks, &device);
    let img = kodak_crop(256, 192);
    let code = |model: ncodec_codecs::hyperprior::Hyperprior| {
        let bytes = weights::to_bytes(&model, &cfg, false).expect("serialize");
        let codec = HyperpriorCodec::from_weights(&bytes, device.clone()).expect("load");
        // Without quantization: the linear path alone is a projection on 48 components.
        let back = codec
            .synthesis(&codec.analysis(&img).expect("analysis"), 256, 192)
            .expect("synthesis");
        // Through the bitstream at the top and bottom of the ladder.
        let coded = |q: f32| {
            let c = codec.encode_image(&img, q).expect("encode");
            let bpp = c.container.to_bytes().expect("bytes").len() as f64 * 8.0 / (256.0 * 192.0);
            let out = codec
                .decode_image(&c.container, &Limits::default())
                .expect("decode");
            (bpp, psnr(&img, &out))
        };
        (psnr(&img, &back), coded(8.0), coded(1.0))
    };
    let (pca_proj, pca_q8, pca_q1) = code(pca);
    let (random_proj, random_q8, _) = code(random);
    eprintln!(
        "PCA: projection {pca_proj:.2} dB, q8 {pca_q8:?}, q1 {pca_q1:?}; random: {random_proj:.2} dB, q8 {random_q8:?}"
    );
    assert!(
        pca_proj > 27.0,
        "48 components reconstruct at {pca_proj:.2} dB"
    );
    assert!(random_proj < 20.0);
    // The gains turn λ into the step size: q8 keeps most of the projection's quality, q1 spends
    // far fewer bits.
    assert!(
        pca_q8.1 > 26.0 && pca_q8.1 > random_q8.1 + 6.0,
        "{pca_q8:?} vs {random_q8:?}"
    );
    assert!(pca_q1.0 < pca_q8.0 / 2.0, "q1 {pca_q1:?} vs q8 {pca_q8:?}");
}

/// (bpp, PSNR) of `img` coded at quality `q` by `codec`.
fn coded(codec: &HyperpriorCodec, img: &RgbImage, q: f32) -> (f64, f64) {
    let c = codec.encode_image(img, q).expect("encode");
    let bits = c.container.to_bytes().expect("bytes").len() as f64 * 8.0;
    let out = codec
        .decode_image(&c.container, &Limits::default())
        .expect("decode");
    (
        bits / f64::from(img.width() * img.height()),
        psnr(img, &out),
    )
}

#[test]
fn widening_keeps_the_trained_channels_and_adds_principal_components() {
    let blocks = training_blocks();
    let device = Backend::Cpu.device();
    let narrow = HyperpriorConfig {
        m: 24,
        ..HyperpriorConfig::TINY
    };
    device.seed(5);
    // A random network (deep paths active) and a PCA-started one (a working coder).
    let random = narrow.init(&device);
    let pca = narrow
        .init(&device)
        .init_from_pca(&narrow, &blocks, &device);
    let img = kodak_crop(256, 192);
    let codec_of = |model: &ncodec_codecs::hyperprior::Hyperprior, cfg: &HyperpriorConfig| {
        let bytes = weights::to_bytes(model, cfg, false).expect("serialize");
        HyperpriorCodec::from_weights(&bytes, device.clone()).expect("load")
    };

    // Widening changes nothing the old channels do: the same y on them, and the same picture
    // from a y whose new channels are zero.
    let before = codec_of(&random, &narrow);
    let (wide_random, wide) = random.widen(&narrow, 40, &blocks, &device).expect("widen");
    assert_eq!(wide.m, 40);
    let after = codec_of(&wide_random, &wide);
    let (y0, y1) = (
        before.analysis(&img).expect("analysis"),
        after.analysis(&img).expect("analysis"),
    );
    assert_eq!((y1.c, y1.h, y1.w), (40, y0.h, y0.w));
    let plane = y0.h * y0.w;
    for (a, b) in y0.data.iter().zip(&y1.data[..24 * plane]) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let mut y_zeroed = y1.clone();
    y_zeroed.data[24 * plane..]
        .iter_mut()
        .for_each(|v| *v = 0.0);
    let x0 = before.synthesis(&y0, 256, 192).expect("synthesis");
    let x1 = after.synthesis(&y_zeroed, 256, 192).expect("synthesis");
    let differing = x0
        .as_raw()
        .iter()
        .zip(x1.as_raw())
        .filter(|(a, b)| a.abs_diff(**b) > 1)
        .count();
    assert_eq!(differing, 0, "the old channels decode differently");

    // From a working coder: the new components lift the quality ceiling where the step is fine,
    // and cost little where it is coarse.
    let narrow_codec = codec_of(&pca, &narrow);
    let (wide_pca, wide) = pca.widen(&narrow, 72, &blocks, &device).expect("widen");
    let wide_codec = codec_of(&wide_pca, &wide);
    let projection = |c: &HyperpriorCodec| {
        psnr(
            &img,
            &c.synthesis(&c.analysis(&img).expect("analysis"), 256, 192)
                .expect("synthesis"),
        )
    };
    let (p_narrow, p_wide) = (projection(&narrow_codec), projection(&wide_codec));
    let (n8, w8) = (
        coded(&narrow_codec, &img, 8.0),
        coded(&wide_codec, &img, 8.0),
    );
    let (n1, w1) = (
        coded(&narrow_codec, &img, 1.0),
        coded(&wide_codec, &img, 1.0),
    );
    eprintln!("projection {p_narrow:.2} → {p_wide:.2} dB; q8 {n8:?} → {w8:?}; q1 {n1:?} → {w1:?}");
    assert!(p_wide > p_narrow + 2.0, "{p_narrow} → {p_wide}");
    assert!(w8.1 > n8.1 + 1.0, "q8 {n8:?} → {w8:?}");
    assert!(w1.1 > n1.1 - 0.2 && w1.0 < n1.0 * 1.5, "q1 {n1:?} → {w1:?}");

    // What cannot be widened.
    let no_shortcut = HyperpriorConfig {
        shortcut: false,
        ..narrow
    };
    assert!(
        no_shortcut
            .init(&device)
            .widen(&no_shortcut, 40, &blocks, &device)
            .is_err()
    );
    assert!(wide_pca.widen(&wide, 72, &blocks, &device).is_err());
    assert!(
        narrow
            .init(&device)
            .widen(&narrow, 769, &blocks, &device)
            .is_err()
    );
}

/// A calibrated weights file carries its scale map: the map changes the indices (hence the file
/// and its model id), files still decode to the same symbols and pixels, the map of a file that
/// misfits the network is refused, and the fitted map lowers the real rate of the images it saw.
#[test]
fn calibration_is_carried_by_the_weights_and_lowers_the_rate() {
    use ncodec_codecs::hyperprior::calibrate::{Calibration, ScaleMap};
    let (codec, bytes) = tiny_codec(Backend::Cpu);
    // Plain dead-zone rounding: the rate-distortion rounding would pick symbols by the tables.
    let codec = codec.with_rd_slope(0.0);
    let img = kodak_crop(128, 128);
    let levels = codec.y_model().scales().len();
    let m = codec.config().m;
    let mut stats = Calibration::new(m, levels);
    let y = codec.analysis(&img).unwrap();
    for q in [1.0, 4.0, 8.0] {
        codec.add_to_calibration(&y, q, None, &mut stats).unwrap();
    }
    assert_eq!(stats.symbols(), 3 * (m * 8 * 8) as u64);
    let map = stats.fit(codec.y_model());
    assert!(
        !map.is_identity(),
        "random-init scales are far from calibrated"
    );
    assert!(
        stats.bits(&map, codec.y_model())
            < stats.bits(&ScaleMap::identity(m, levels), codec.y_model())
    );

    let calibrated = weights::with_scale_map(&bytes, map.clone()).unwrap();
    assert_ne!(weights::model_id(&calibrated), weights::model_id(&bytes));
    assert_eq!(weights::scale_map_of(&calibrated).unwrap(), Some(map));
    assert_eq!(weights::scale_map_of(&bytes).unwrap(), None);
    let cal = HyperpriorCodec::from_weights(&calibrated, Backend::Cpu.device())
        .unwrap()
        .with_rd_slope(0.0);
    let (before, after) = (
        codec.encode_image(&img, 4.0).unwrap(),
        cal.encode_image(&img, 4.0).unwrap(),
    );
    assert_eq!(before.y, after.y, "the map changes tables, not symbols");
    let (b, a) = (
        before.container.to_bytes().unwrap().len(),
        after.container.to_bytes().unwrap().len(),
    );
    assert!(a < b, "calibrated file {a} bytes, uncalibrated {b}");
    let file = Container::parse(&after.container.to_bytes().unwrap(), &Limits::default()).unwrap();
    let (_, symbols) = cal.decode_latent(&file, &Limits::default()).unwrap();
    assert_eq!(symbols.y, after.y);
    assert_eq!(symbols.z, after.z);
    assert_eq!(
        cal.decode_image(&file, &Limits::default()).unwrap(),
        codec
            .synthesis(
                &cal.decode_latent(&file, &Limits::default()).unwrap().0,
                128,
                128
            )
            .unwrap()
    );
    // The uncalibrated codec refuses the calibrated file (another model id).
    assert!(codec.decode_image(&file, &Limits::default()).is_err());

    // A map of the wrong shape or beyond the table is refused on load, with a clear message.
    let mut bad = ScaleMap::identity(m + 1, levels);
    assert!(weights::with_scale_map(&bytes, bad.clone()).is_err());
    bad.map.pop();
    bad.map[0][3] = levels as u16;
    let err = weights::with_scale_map(&bytes, bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond the table"), "{err}");
}

/// A context table (second calibration pass) makes the coded indices depend on the symbols
/// decoded before; files still decode to exactly the encoder's symbols, and the table is carried
/// by the weights file.
#[test]
fn a_context_table_round_trips_through_the_sequential_decoder() {
    use ncodec_codecs::hyperprior::calibrate::{Calibration, ContextCalibration};
    let (codec, bytes) = tiny_codec(Backend::Cpu);
    // Plain dead-zone rounding: the rate-distortion rounding would pick symbols by the tables.
    let codec = codec.with_rd_slope(0.0);
    let img = kodak_crop(192, 128);
    let (m, levels) = (codec.config().m, codec.y_model().scales().len());
    let y = codec.analysis(&img).unwrap();
    let mut first = Calibration::new(m, levels);
    for q in [1.0, 8.0] {
        codec.add_to_calibration(&y, q, None, &mut first).unwrap();
    }
    let map = first.fit(codec.y_model());
    let mut second = ContextCalibration::new(m, levels, true, false);
    for q in [1.0, 8.0] {
        codec
            .add_to_context_calibration(&y, q, &map, &mut second)
            .unwrap();
    }
    let with = second.fit(&map, codec.y_model());
    assert!(with.has_context() && with.context.iter().any(|&s| s != 0));
    assert!(second.bits(&with, codec.y_model()) <= second.bits(&map, codec.y_model()));
    let calibrated = weights::with_scale_map(&bytes, with.clone()).unwrap();
    assert_eq!(weights::scale_map_of(&calibrated).unwrap(), Some(with));
    let cal = HyperpriorCodec::from_weights(&calibrated, Backend::Cpu.device())
        .unwrap()
        .with_rd_slope(0.0);
    for q in [1.0, 8.0] {
        let coded = cal.encode_image(&img, q).unwrap();
        let file =
            Container::parse(&coded.container.to_bytes().unwrap(), &Limits::default()).unwrap();
        let (_, symbols) = cal.decode_latent(&file, &Limits::default()).unwrap();
        assert_eq!(symbols.y, coded.y);
        assert_eq!(
            cal.decode_image(&file, &Limits::default())
                .unwrap()
                .dimensions(),
            (192, 128)
        );
        // The same symbols under the map alone make a different stream.
        let map_only = weights::with_scale_map(&bytes, map.clone()).unwrap();
        let plain = HyperpriorCodec::from_weights(&map_only, Backend::Cpu.device())
            .unwrap()
            .with_rd_slope(0.0)
            .encode_image(&img, q)
            .unwrap();
        assert_eq!(plain.y, coded.y);
        assert_ne!(
            plain.container.streams[1].data,
            coded.container.streams[1].data
        );
        // Damaged `y` streams through the sequential decoder: errors or other symbols, no panic.
        let y = &coded.container.streams[1].data;
        for cut in [0, 1, y.len() / 2, y.len().saturating_sub(1)] {
            let mut damaged = coded.container.clone();
            damaged.streams[1].data.truncate(cut);
            let _ = cal.decode_image(&damaged, &Limits::default());
        }
        for at in (0..y.len()).step_by(y.len() / 7 + 1) {
            let mut damaged = coded.container.clone();
            damaged.streams[1].data[at] ^= 0xA5;
            if let Ok((_, s)) = cal.decode_latent(&damaged, &Limits::default()) {
                assert_eq!(s.y.len(), coded.y.len());
            }
        }
    }
}

/// A latent predictor (first calibration pass) is carried by the weights file: with it the
/// encoder codes what the already coded neighbours do not predict, the decoder rebuilds the same
/// latent to within the rounding of the unpredicted codec, and the symbols round-trip exactly.
#[test]
fn a_latent_predictor_round_trips_and_is_carried_by_the_weights() {
    use ncodec_codecs::hyperprior::calibrate::Calibration;
    use ncodec_codecs::hyperprior::predict::{PredictionStats, Predictor, WEIGHT_BITS, taps};
    let (codec, bytes) = tiny_codec(Backend::Cpu);
    let img = kodak_crop(192, 128);
    let (m, levels) = (codec.config().m, codec.y_model().scales().len());
    let y = codec.analysis(&img).unwrap();
    let mut stats = PredictionStats::new(m);
    for q in [1.0, 8.0] {
        codec.add_to_prediction(&y, q, &mut stats).unwrap();
    }
    assert_eq!(stats.samples(), 2 * (m * 8 * 12) as u64);
    let fitted = stats.fit();
    fitted.validate(m).unwrap();
    // A hand-made predictor that surely changes symbols: channel 0 from its left neighbour.
    let mut manual = Predictor {
        weights: (0..m).map(|c| vec![0; taps(c)]).collect(),
    };
    manual.weights[0][0] = 1 << WEIGHT_BITS;
    for predictor in [fitted, manual] {
        let mut first = Calibration::new(m, levels);
        codec
            .add_to_calibration(&y, 8.0, Some(&predictor), &mut first)
            .unwrap();
        let mut map = first.fit(codec.y_model());
        map.predict = Some(predictor.clone());
        let with = weights::with_scale_map(&bytes, map.clone()).unwrap();
        assert_eq!(weights::scale_map_of(&with).unwrap(), Some(map.clone()));
        map.predict = None;
        let without = weights::with_scale_map(&bytes, map).unwrap();
        // Plain dead-zone rounding in both, so that the bound below holds.
        let (pred, plain) = (
            HyperpriorCodec::from_weights(&with, Backend::Cpu.device())
                .unwrap()
                .with_rd_slope(0.0),
            HyperpriorCodec::from_weights(&without, Backend::Cpu.device())
                .unwrap()
                .with_rd_slope(0.0),
        );
        let q = 8.0;
        let (a, b) = (
            pred.encode_image(&img, q).unwrap(),
            plain.encode_image(&img, q).unwrap(),
        );
        let file = Container::parse(&a.container.to_bytes().unwrap(), &Limits::default()).unwrap();
        let (latent, symbols) = pred.decode_latent(&file, &Limits::default()).unwrap();
        assert_eq!(symbols.y, a.y);
        let plain_file =
            Container::parse(&b.container.to_bytes().unwrap(), &Limits::default()).unwrap();
        let (plain_latent, _) = plain
            .decode_latent(&plain_file, &Limits::default())
            .unwrap();
        // Both reconstructions are within half a step plus the dead zone (plus the 1/16 of the
        // prediction) of the same latent, so within 1 + 2·DEAD_ZONE steps of each other; the
        // step is 1/g in y units.
        let inv = pred.inverse_gain(q).unwrap();
        let plane = latent.h * latent.w;
        let bound = 1.0 + 2.0 * ncodec_codecs::hyperprior::DEAD_ZONE + 0.07;
        for (k, (u, v)) in latent.data.iter().zip(&plain_latent.data).enumerate() {
            let step = inv[k / plane];
            assert!(
                (u - v).abs() <= step * bound + 1e-4,
                "latent {k}: {u} vs {v}"
            );
        }
        if predictor.weights[0][0] == 1 << WEIGHT_BITS {
            assert_ne!(
                a.y, b.y,
                "the left-neighbour predictor changes channel 0's symbols"
            );
        }
        // The codec without the predictor refuses the file (another model id).
        assert!(plain.decode_image(&file, &Limits::default()).is_err());
        assert_eq!(
            pred.decode_image(&file, &Limits::default())
                .unwrap()
                .dimensions(),
            (192, 128)
        );
    }
}

/// The table family is part of the calibration: a weights file whose map names Laplace tables
/// codes with them (a different stream for the same symbols) and decodes its own files; an
/// unknown family is a damaged weights file.
#[test]
fn a_laplace_calibration_codes_with_laplace_tables() {
    use ncodec_codecs::hyperprior::calibrate::{ScaleMap, TableFamily};
    let (codec, bytes) = tiny_codec(Backend::Cpu);
    // Plain dead-zone rounding: the rate-distortion rounding would pick symbols by the tables.
    let codec = codec.with_rd_slope(0.0);
    let (m, levels) = (codec.config().m, codec.y_model().scales().len());
    let mut map = ScaleMap::identity(m, levels);
    map.family = TableFamily::Laplace;
    assert!(!map.is_identity());
    let laplace = weights::with_scale_map(&bytes, map).unwrap();
    let tag = b"\"family\":\"laplace\"";
    assert!(
        laplace.windows(tag.len()).any(|w| w == tag),
        "the header names the family"
    );
    let cal = HyperpriorCodec::from_weights(&laplace, Backend::Cpu.device())
        .unwrap()
        .with_rd_slope(0.0);
    assert_eq!(
        cal.y_model().family(),
        ncodec_bitstream::entropy::ScaleFamily::Laplace
    );
    let img = kodak_crop(128, 128);
    let (a, b) = (
        codec.encode_image(&img, 4.0).unwrap(),
        cal.encode_image(&img, 4.0).unwrap(),
    );
    assert_eq!(a.y, b.y);
    assert_ne!(a.container.streams[1].data, b.container.streams[1].data);
    let file = Container::parse(&b.container.to_bytes().unwrap(), &Limits::default()).unwrap();
    assert_eq!(
        cal.decode_latent(&file, &Limits::default()).unwrap().1.y,
        b.y
    );
    // The same header length with another family name: refused, not silently Gaussian.
    let mut damaged = laplace.clone();
    let at = laplace.windows(8).position(|w| w == b"\"laplace").unwrap();
    damaged[at + 1..at + 8].copy_from_slice(b"cauchy!");
    let err = HyperpriorCodec::from_weights(&damaged, Backend::Cpu.device()).unwrap_err();
    assert!(err.to_string().contains("weights"), "{err}");
}

#[test]
fn a_picture_coded_smaller_decodes_to_full_size_and_unknown_scales_are_refused() {
    let (codec, _) = tiny_codec(Backend::Cpu);
    // Odd size: 3/4 of 203 × 117 is 152 × 88 (rounded).
    let img = kodak_crop(203, 117);
    let full = codec.encode_image(&img, 4.0).expect("full");
    assert!(full.container.params.extra.is_empty());
    for eighths in [6u8, 4] {
        let coded = codec.encode_image_at(&img, 4.0, eighths).expect("encode");
        assert_eq!(coded.container.params.extra, vec![eighths]);
        assert!(
            coded.y.len() < full.y.len(),
            "a smaller picture has fewer symbols"
        );
        let bytes = coded.container.to_bytes().expect("bytes");
        let parsed = Container::parse(&bytes, &Limits::default()).expect("parse");
        let (_, symbols) = codec
            .decode_latent(&parsed, &Limits::default())
            .expect("decode");
        assert_eq!(symbols.y, coded.y);
        let out = codec
            .decode_image(&parsed, &Limits::default())
            .expect("image");
        assert_eq!(out.dimensions(), img.dimensions());
    }
    let e = codec.encode_image_at(&img, 4.0, 3).expect_err("3/8");
    assert!(e.to_string().contains("coded resolution"), "{e}");
    // Scale bytes this version does not know are an error, not a misdecoded picture.
    for extra in [vec![5u8], vec![8], vec![0], vec![6, 0]] {
        let mut file = full.container.clone();
        file.params.extra = extra.clone();
        let e = codec
            .decode_image(&file, &Limits::default())
            .expect_err("unknown parameters");
        assert!(
            e.to_string().contains("unknown hyperprior parameters"),
            "{extra:?}: {e}"
        );
    }
}

#[test]
fn the_shipped_codec_codes_a_smaller_picture_where_that_decodes_better() {
    // The size is chosen on open-loop files (the closed-loop refinement then spends more bits
    // on the chosen one, tested on its own).
    let codec = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_refine_rounds(0);
    let img = kodak_crop(384, 256);
    let measure = |c: &ncodec_codecs::hyperprior::Coded| {
        let bytes = c.container.to_bytes().expect("bytes").len();
        let back = codec
            .decode_image(&c.container, &Limits::default())
            .expect("decode");
        (bytes, psnr(&img, &back))
    };
    let mut low = codec.encode_image_auto(&img, 0.15).expect("auto");
    // The size choice is made before the restoration filter (tested on its own below).
    low.container
        .streams
        .retain(|s| !FILTERS.contains(&s.label));
    assert_ne!(
        low.container.params.extra,
        Vec::<u8>::new(),
        "full size at q0.15"
    );
    let (auto_bytes, auto_psnr) = measure(&low);
    let (full_bytes, full_psnr) = measure(&codec.encode_image(&img, 0.15).expect("full"));
    assert!(
        auto_bytes <= full_bytes,
        "{auto_bytes} vs {full_bytes} bytes"
    );
    assert!(
        auto_psnr > full_psnr,
        "{auto_psnr:.2} dB vs full size {full_psnr:.2} dB"
    );
    // At the top of the ladder the full picture is worth its bits.
    let high = codec.encode_image_auto(&img, 8.0).expect("auto");
    assert!(high.container.params.extra.is_empty());
}

/// The encoder's rate-distortion rounding of `y` (the decoder does not change): against plain
/// dead-zone rounding, its files cost less in `bits + RD_SLOPE·λ·SSE/3` (the trade-off it
/// minimizes, measured on the real file and the real decoding), and they decode to the symbols it
/// chose.
#[test]
fn rate_distortion_rounding_lowers_the_real_cost_of_the_file() {
    use ncodec_codecs::hyperprior::LAMBDAS;
    let rd = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_refine_rounds(0);
    let plain = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_rd_slope(0.0);
    let img = kodak_crop(256, 256);
    // On this crop: −0.6 % at q2, −2.3 % at q4, −2.5 % at q8; a tie at q1 (+0.04 %).
    for (q, lambda) in [(2.0, LAMBDAS[1]), (4.0, LAMBDAS[3]), (8.0, LAMBDAS[7])] {
        let (j_rd, bits_rd, _, sym_rd) = real_cost(&rd, &img, q, lambda);
        let (j_plain, bits_plain, _, sym_plain) = real_cost(&plain, &img, q, lambda);
        assert_ne!(sym_rd, sym_plain, "q{q}: the rounding changed nothing");
        assert!(
            j_rd < j_plain,
            "q{q}: cost {j_rd:.0} ({bits_rd} bits) with RD rounding, {j_plain:.0} ({bits_plain} bits) without"
        );
    }
}

/// The real `bits + RD_SLOPE·λ·SSE/3` of `img` coded by `codec` at quality `q` (with the bits and
/// the SSE of the decoded file, 0–255 units, and the `y` symbols), after checking that the decoder
/// reads the symbols the encoder chose.
fn real_cost(
    codec: &HyperpriorCodec,
    img: &RgbImage,
    q: f32,
    lambda: f64,
) -> (f64, f64, f64, Vec<i32>) {
    use ncodec_codecs::hyperprior::RD_SLOPE;
    let coded = codec.encode_image(img, q).expect("encode");
    let bytes = coded.container.to_bytes().expect("bytes");
    let file = Container::parse(&bytes, &Limits::default()).expect("parse");
    let (_, symbols) = codec
        .decode_latent(&file, &Limits::default())
        .expect("latent");
    assert_eq!(
        symbols.y, coded.y,
        "q{q}: the decoder reads the chosen symbols"
    );
    let back = codec
        .decode_image(&file, &Limits::default())
        .expect("decode");
    let sse: f64 = img
        .as_raw()
        .iter()
        .zip(back.as_raw())
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let bits = bytes.len() as f64 * 8.0;
    (bits + RD_SLOPE * lambda * sse / 3.0, bits, sse, coded.y)
}

#[test]
fn closed_loop_refinement_lowers_the_real_cost_of_the_file() {
    use ncodec_codecs::hyperprior::LAMBDAS;
    let refined = HyperpriorCodec::shipped(Backend::Cpu.device()).expect("shipped");
    let open = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_refine_rounds(0);
    let img = kodak_crop(256, 256);
    for (q, lambda) in [(2.0, LAMBDAS[1]), (6.0, LAMBDAS[5]), (8.0, LAMBDAS[7])] {
        let (j_ref, bits_ref, sse_ref, sym_ref) = real_cost(&refined, &img, q, lambda);
        let (j_open, bits_open, sse_open, sym_open) = real_cost(&open, &img, q, lambda);
        assert_ne!(sym_ref, sym_open, "q{q}: the refinement changed nothing");
        assert!(
            sse_ref < sse_open,
            "q{q}: refined SSE {sse_ref:.0}, open-loop {sse_open:.0}"
        );
        assert!(
            j_ref < j_open,
            "q{q}: cost {j_ref:.0} ({bits_ref} bits, SSE {sse_ref:.0}) refined, \
             {j_open:.0} ({bits_open} bits, SSE {sse_open:.0}) open-loop"
        );
    }
}

/// A refinement step that overshoots (4× the least-squares correction) leaves the symbols of a
/// single round where they were; with more rounds the encoder halves the step from the best
/// round and still finds symbols of lower real cost (backtracking).
#[test]
fn the_refinement_backtracks_when_a_step_overshoots() {
    use ncodec_codecs::hyperprior::LAMBDAS;
    let codec = |rounds| {
        HyperpriorCodec::shipped(Backend::Cpu.device())
            .expect("shipped")
            .with_refine_rounds(rounds)
            .with_refine_step(4.0)
    };
    let open = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_refine_rounds(0);
    let img = kodak_crop(256, 256);
    let (q, lambda) = (4.0, LAMBDAS[3]);
    let (j_open, _, _, sym_open) = real_cost(&open, &img, q, lambda);
    let (j_one, _, _, sym_one) = real_cost(&codec(1), &img, q, lambda);
    assert_eq!(
        sym_one, sym_open,
        "the 4× step did not overshoot: {j_one:.0} {j_open:.0}"
    );
    let (j_back, bits, sse, sym_back) = real_cost(&codec(4), &img, q, lambda);
    assert_ne!(sym_back, sym_open, "backtracking found nothing");
    assert!(
        j_back < j_open,
        "cost {j_back:.0} ({bits} bits, SSE {sse:.0}) with backtracking, {j_open:.0} open-loop"
    );
}

/// A rate target with the refinement (which spends more bits than the open-loop file at the same
/// quality, so its file is searched again): the file lands within the tolerance below the
/// target and decodes better than the open-loop file for the same target.
#[test]
fn a_rate_target_gets_a_refined_file_within_the_tolerance() {
    use ncodec_codecs::hyperprior::RATE_TOLERANCE;
    let refined = HyperpriorCodec::shipped(Backend::Cpu.device()).expect("shipped");
    let open = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_refine_rounds(0);
    let img = kodak_crop(256, 256);
    let pixels = 256.0 * 256.0;
    for bpp in [0.4] {
        let measure = |codec: &HyperpriorCodec| {
            let coded = codec.encode_to_rate(&img, bpp).expect("encode");
            let bytes = coded.container.to_bytes().expect("bytes");
            let back = codec
                .decode_image(&coded.container, &Limits::default())
                .expect("decode");
            let rate = bytes.len() as f64 * 8.0 / pixels;
            (rate, psnr(&img, &back), coded.container.params.quality)
        };
        let (r_ref, p_ref, q_ref) = measure(&refined);
        let (r_open, p_open, q_open) = measure(&open);
        for r in [r_ref, r_open] {
            assert!(
                (bpp * (1.0 - RATE_TOLERANCE)..=bpp).contains(&r),
                "{bpp} bpp: landed at {r}"
            );
        }
        assert!(
            p_ref > p_open,
            "{bpp} bpp: {p_ref:.3} dB refined (q{q_ref}), {p_open:.3} dB open-loop (q{q_open})"
        );
    }
}

#[test]
fn the_shipped_codec_sends_a_restoration_filter_that_pays_for_its_bits() {
    // The 8-bit filter path (labels 3 and 4): what the encoder writes above FINE_MAX_PIXELS, and
    // every file before the fine path.
    let codec = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_fine_filter(false);
    let img = kodak_crop(384, 256);
    let coded = codec.encode_image_auto(&img, 4.0).expect("encode");
    let filter = coded
        .container
        .streams
        .iter()
        .find(|s| s.label == STREAM_FILTER_COMPACT)
        .expect("a compact filter stream at q4")
        .clone();
    assert!(
        coded
            .container
            .streams
            .iter()
            .all(|s| s.label != STREAM_FILTER)
    );
    let bytes = coded.container.to_bytes().expect("bytes");
    let parsed = Container::parse(&bytes, &Limits::default()).expect("parse");
    let with = codec
        .decode_image(&parsed, &Limits::default())
        .expect("decode");
    let mut bare = parsed.clone();
    bare.streams.retain(|s| !FILTERS.contains(&s.label));
    let without = codec
        .decode_image(&bare, &Limits::default())
        .expect("decode");
    let (p_with, p_without) = (psnr(&img, &with), psnr(&img, &without));
    assert!(
        p_with > p_without + 0.1,
        "{p_with:.3} dB with the filter, {p_without:.3} without"
    );
    // It pays: the unfiltered files need a higher quality, and more bytes than the filtered one,
    // for the same PSNR.
    let mut q = 4.0;
    loop {
        q += 0.25;
        assert!(
            q <= 8.0,
            "no unfiltered file up to q8 reaches {p_with:.3} dB"
        );
        let mut c = codec.encode_image_auto(&img, q).expect("encode");
        c.container.streams.retain(|s| !FILTERS.contains(&s.label));
        let back = codec
            .decode_image(&c.container, &Limits::default())
            .expect("decode");
        if psnr(&img, &back) >= p_with {
            let size = c.container.to_bytes().expect("bytes").len();
            assert!(
                size > bytes.len(),
                "unfiltered q{q}: {size} bytes for the {p_with:.3} dB of {} filtered bytes",
                bytes.len()
            );
            break;
        }
    }
    // The symbols are those of the file without the filter: it only touches pixels.
    let (_, a) = codec
        .decode_latent(&parsed, &Limits::default())
        .expect("latent");
    assert_eq!(a.y, coded.y);
    // A damaged filter stream is an error, never a panic or a silently wrong picture.
    for n in [0, 1, 2, filter.data.len() / 2, filter.data.len() - 1] {
        let mut file = parsed.clone();
        for s in &mut file.streams {
            if s.label == STREAM_FILTER_COMPACT {
                s.data.truncate(n);
            }
        }
        let e = codec
            .decode_image(&file, &Limits::default())
            .expect_err("truncated filter");
        assert!(e.to_string().contains("restoration filter"), "{n}: {e}");
    }
    let mut file = parsed.clone();
    for s in &mut file.streams {
        if s.label == STREAM_FILTER_COMPACT {
            s.kind = ncodec_bitstream::StreamKind::Ans32;
        }
    }
    assert!(codec.decode_image(&file, &Limits::default()).is_err());
    // Files of the first filter coding (stream label 2) still decode: the same filter written
    // that way gives the same picture, and a file with two filter streams is refused.
    let same = ncodec_codecs::wiener::Filter::from_compact_bytes(&filter.data).expect("parse");
    let mut legacy = parsed.clone();
    for s in &mut legacy.streams {
        if s.label == STREAM_FILTER_COMPACT {
            s.label = STREAM_FILTER;
            s.data = same.to_bytes();
        }
    }
    let back = codec
        .decode_image(&legacy, &Limits::default())
        .expect("a label-2 filter");
    assert_eq!(back, with);
    let mut both = parsed.clone();
    both.streams.extend(
        legacy
            .streams
            .iter()
            .filter(|s| s.label == STREAM_FILTER)
            .cloned(),
    );
    let e = codec
        .decode_image(&both, &Limits::default())
        .expect_err("two filters");
    assert!(e.to_string().contains("more than one"), "{e}");
}

#[test]
fn the_clipped_filter_stage_pays_and_damaged_ones_are_refused() {
    let codec = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_fine_filter(false);
    let img = kodak_crop(384, 256);
    let coded = [1.0, 2.0, 4.0]
        .into_iter()
        .map(|q| codec.encode_image_auto(&img, q).expect("encode"))
        .find(|c| {
            c.container
                .streams
                .iter()
                .any(|s| s.label == STREAM_FILTER_CLIPPED)
        })
        .expect("a clipped filter stage at q1, q2 or q4");
    let bytes = coded.container.to_bytes().expect("bytes");
    let parsed = Container::parse(&bytes, &Limits::default()).expect("parse");
    let decode = |file: &Container| codec.decode_image(file, &Limits::default());
    let with = decode(&parsed).expect("decode");
    let strip = |file: &Container| {
        let mut f = file.clone();
        f.streams.retain(|s| s.label != STREAM_FILTER_CLIPPED);
        f
    };
    let without = decode(&strip(&parsed)).expect("decode without the second stage");
    let size = |f: &Container| f.to_bytes().expect("bytes").len();
    // It pays for its bytes at the encoder's trade-off: PSNR up, by more than a few bytes cost.
    let (p_with, p_without) = (psnr(&img, &with), psnr(&img, &without));
    assert!(
        p_with > p_without + 0.005,
        "{p_with:.4} dB with the clipped stage, {p_without:.4} without"
    );
    assert!(size(&parsed) - size(&strip(&parsed)) < 200);
    let (_, latent) = codec
        .decode_latent(&parsed, &Limits::default())
        .expect("latent");
    assert_eq!(latent.y, coded.y, "it only touches pixels");
    let edit = |f: &dyn Fn(&mut Container)| {
        let mut file = parsed.clone();
        f(&mut file);
        decode(&file)
            .expect_err("a damaged clipped stage")
            .to_string()
    };
    let len = parsed
        .streams
        .iter()
        .find(|s| s.label == STREAM_FILTER_CLIPPED)
        .map(|s| s.data.len())
        .expect("clipped");
    for n in [0, 1, len / 2, len - 1] {
        let e = edit(&|file| {
            for s in &mut file.streams {
                if s.label == STREAM_FILTER_CLIPPED {
                    s.data.truncate(n);
                }
            }
        });
        assert!(e.contains("restoration filter"), "{n}: {e}");
    }
    let e = edit(&|file| {
        file.streams.retain(|s| s.label != STREAM_FILTER_COMPACT);
    });
    assert!(e.contains("without the first filter"), "{e}");
    let e = edit(&|file| {
        let second = file
            .streams
            .iter()
            .find(|s| s.label == STREAM_FILTER_CLIPPED)
            .cloned()
            .expect("clipped");
        file.streams.push(second);
    });
    assert!(e.contains("more than one clipped"), "{e}");
    let e = edit(&|file| {
        for s in &mut file.streams {
            if s.label == STREAM_FILTER_CLIPPED {
                s.kind = ncodec_bitstream::StreamKind::Ans32;
            }
        }
    });
    assert!(e.contains("not raw bytes"), "{e}");
}

/// The fine filter path: the synthesis (and, for a picture coded smaller, its enlargement) kept
/// at 1/16 of a level through both filter stages and rounded to 8 bits once. Same symbols as the
/// 8-bit path, a better picture and trade-off where the roundings it skips matter (high rates),
/// and damaged or contradictory filter streams are refused.
#[test]
fn the_fine_filter_path_skips_two_roundings_and_damaged_ones_are_refused() {
    let fine = HyperpriorCodec::shipped(Backend::Cpu.device()).expect("shipped");
    let eight = HyperpriorCodec::shipped(Backend::Cpu.device())
        .expect("shipped")
        .with_fine_filter(false);
    let img = kodak_crop(256, 192);
    let labels = |c: &Container| c.streams.iter().map(|s| s.label).collect::<Vec<_>>();
    let a = fine.encode_image_auto(&img, 8.0).expect("fine");
    let b = eight.encode_image_auto(&img, 8.0).expect("8-bit");
    assert!(
        labels(&a.container).contains(&STREAM_FILTER_FINE),
        "{:?}",
        labels(&a.container)
    );
    assert!(!labels(&a.container).contains(&STREAM_FILTER_COMPACT));
    assert!(labels(&b.container).contains(&STREAM_FILTER_COMPACT));
    assert!(!labels(&b.container).contains(&STREAM_FILTER_FINE));
    assert_eq!(a.y, b.y, "the filter path only touches pixels");
    let limits = Limits::default();
    let bytes = a.container.to_bytes().expect("bytes");
    let parsed = Container::parse(&bytes, &limits).expect("parse");
    let with_fine = fine.decode_image(&parsed, &limits).expect("decode");
    // Any build of the codec decodes the file the same way (the path is the file's, not the
    // decoder's setting).
    assert_eq!(
        eight.decode_image(&parsed, &limits).expect("decode"),
        with_fine
    );
    let with_eight = eight.decode_image(&b.container, &limits).expect("decode");
    let (p_fine, p_eight) = (psnr(&img, &with_fine), psnr(&img, &with_eight));
    let (n_fine, n_eight) = (bytes.len(), b.container.to_bytes().expect("bytes").len());
    eprintln!("q8: fine {n_fine} bytes {p_fine:.3} dB, 8-bit {n_eight} bytes {p_eight:.3} dB");
    // The symbols are the same, so the files differ only in their filters: the fine one must be
    // the better trade-off by the encoder's own filter criterion, `bits + 3λ·SSE/3` (SSE in 0–255
    // units over the three colours, λ of q8), and the better picture.
    let samples = f64::from(img.width() * img.height() * 3);
    let lambda = ncodec_codecs::hyperprior::model::LAMBDAS[7];
    let cost = |bytes: usize, p: f64| {
        8.0 * bytes as f64 + lambda * samples * 255.0 * 255.0 / 10f64.powf(p / 10.0)
    };
    assert!(
        p_fine > p_eight + 0.02 && cost(n_fine, p_fine) < cost(n_eight, p_eight),
        "fine {n_fine} bytes {p_fine:.3} dB, 8-bit {n_eight} bytes {p_eight:.3} dB"
    );
    // A picture coded smaller is enlarged on 16-bit samples before the fine filter.
    let low = fine.encode_image_at(&img, 1.0, 6).expect("3/4 size");
    let unfiltered = fine
        .decode_fixed(&low.container, &limits, FINE_SHIFT)
        .expect("fixed");
    assert_eq!((unfiltered.width(), unfiltered.height()), (256, 192));
    let filter = ncodec_codecs::wiener::fit_fixed(&img, &unfiltered, 1.0).expect("a filter");
    let mut file = low.container.clone();
    file.streams.push(ncodec_bitstream::Stream {
        kind: ncodec_bitstream::StreamKind::Raw,
        label: STREAM_FILTER_FINE,
        data: filter.to_compact_bytes().expect("compact"),
    });
    let back = fine.decode_image(&file, &limits).expect("decode");
    assert_eq!(back, filter.apply_fixed(&unfiltered).to_rgb());
    let eight = fine.decode_image(&low.container, &limits).expect("decode");
    assert!(psnr(&img, &back) > psnr(&img, &eight) + 0.1);
    // Without its filter streams the file is an unfiltered 8-bit decoding.
    let mut bare = parsed.clone();
    bare.streams.retain(|s| !FILTERS.contains(&s.label));
    let unfiltered = fine.decode_image(&bare, &limits).expect("decode");
    assert!(psnr(&img, &unfiltered) < p_fine);
    // Damage and contradictions are errors, never panics.
    let edit = |f: &dyn Fn(&mut Container)| {
        let mut file = parsed.clone();
        f(&mut file);
        fine.decode_image(&file, &limits)
            .expect_err("a damaged fine filter")
            .to_string()
    };
    let first = parsed
        .streams
        .iter()
        .find(|s| s.label == STREAM_FILTER_FINE)
        .cloned()
        .expect("fine filter");
    for n in [0, 1, first.data.len() / 2, first.data.len() - 1] {
        let e = edit(&|file| {
            for s in &mut file.streams {
                if s.label == STREAM_FILTER_FINE {
                    s.data.truncate(n);
                }
            }
        });
        assert!(e.contains("restoration filter"), "{n}: {e}");
    }
    let e = edit(&|file| {
        let mut other = first.clone();
        other.label = STREAM_FILTER_COMPACT;
        file.streams.push(other);
    });
    assert!(e.contains("more than one"), "{e}");
    let e = edit(&|file| {
        let mut other = first.clone();
        other.label = STREAM_FILTER_CLIPPED;
        other.data.insert(0, 4);
        file.streams.push(other);
    });
    assert!(e.contains("8-bit clipped"), "{e}");
    let e = edit(&|file| {
        file.streams.retain(|s| s.label != STREAM_FILTER_FINE);
        let mut other = first.clone();
        other.label = STREAM_FILTER_FINE_CLIPPED;
        other.data.insert(0, 4);
        file.streams.push(other);
    });
    assert!(e.contains("without the fine filter"), "{e}");
    let e = edit(&|file| {
        for s in &mut file.streams {
            if s.label == STREAM_FILTER_FINE {
                s.kind = ncodec_bitstream::StreamKind::Ans32;
            }
        }
    });
    assert!(e.contains("not raw bytes"), "{e}");
    let e = edit(&|file| {
        if let ncodec_bitstream::MediaInfo::Image { width, height, .. } = &mut file.media {
            (*width, *height) = (8192, 4096);
        }
    });
    assert!(e.contains("2^24 pixels"), "{e}");
}

#[test]
fn scaling_the_steps_of_some_channels_changes_only_their_gains() {
    let device = Backend::Cpu.device();
    let (cfg, model) = tiny(&device);
    let codec = |model: ncodec_codecs::hyperprior::Hyperprior| {
        let bytes = weights::to_bytes(&model, &cfg, false).expect("serialize");
        HyperpriorCodec::from_weights(&bytes, Backend::Cpu.device()).expect("load")
    };
    let before = codec(model.clone());
    let m = cfg.m;
    let scaled = model
        .clone()
        .scale_steps(1..3, 2.0, &device)
        .expect("scale");
    let after = codec(scaled);
    for q in [1.0, cfg.levels as f32] {
        let (a, b) = (
            before.inverse_gain(q).unwrap(),
            after.inverse_gain(q).unwrap(),
        );
        for c in 0..m {
            let want = if (1..3).contains(&c) { 2.0 } else { 1.0 };
            assert!(
                (b[c] / a[c] - want).abs() < 1e-4,
                "q{q} channel {c}: {} vs {}",
                b[c],
                a[c]
            );
        }
    }
    assert_ne!(before.model_id(), after.model_id());
    // The same rescaling writes the same bytes (parameter ids included): a calibration command
    // with step factors is reproducible down to the model id.
    let again = |model: ncodec_codecs::hyperprior::Hyperprior| {
        let scaled = model.scale_steps(1..3, 2.0, &device).expect("scale");
        weights::to_bytes(&scaled, &cfg, true).expect("serialize")
    };
    assert!(again(model.clone()) == again(model.clone()), "bytes differ");
    // At the top level only: the first level keeps its steps.
    let top = cfg.levels;
    let at_top = codec(
        model
            .clone()
            .scale_steps_at(1..3, top - 1..top, 2.0, &device)
            .expect("scale"),
    );
    for (q, want) in [(1.0, 1.0), (top as f32, 2.0)] {
        let (a, b) = (
            before.inverse_gain(q).unwrap(),
            at_top.inverse_gain(q).unwrap(),
        );
        for c in 0..m {
            let want = if (1..3).contains(&c) { want } else { 1.0 };
            assert!((b[c] / a[c] - want).abs() < 1e-4, "q{q} channel {c}");
        }
    }
    assert!(
        model
            .clone()
            .scale_steps_at(0..1, top..top + 1, 2.0, &device)
            .is_err()
    );
    assert!(model.clone().scale_steps(0..m + 1, 2.0, &device).is_err());
    assert!(model.clone().scale_steps(2..2, 2.0, &device).is_err());
    assert!(model.scale_steps(0..1, f64::NAN, &device).is_err());
}

/// Calibrated `ẑ` tables (one per quality bucket and channel) are carried by the weights:
/// at a low quality, where the trained density is far too wide for the mostly-zero `ẑ`, they
/// shrink the `ẑ` stream; the `y` symbols are untouched and files decode to the same symbols.
#[test]
fn calibrated_z_tables_shrink_the_hyper_latent_and_round_trip() {
    use ncodec_bitstream::entropy::ans::cost_bits;
    use ncodec_codecs::hyperprior::calibrate::{Z_SCALE_MAX, ZCalibration};
    use ncodec_codecs::hyperprior::{SHIPPED_WEIGHTS, STREAM_Z};
    let shipped = HyperpriorCodec::shipped(Backend::Cpu.device()).expect("shipped");
    // The shipped weights without their ẑ tables: the bottleneck's own at every quality.
    let mut plain_map = weights::scale_map_of(SHIPPED_WEIGHTS).unwrap().unwrap();
    assert!(
        !plain_map.z_tables.is_empty(),
        "the shipped weights carry z tables"
    );
    plain_map.z_tables.clear();
    let plain = weights::with_scale_map(SHIPPED_WEIGHTS, plain_map).unwrap();
    let codec = HyperpriorCodec::from_weights(&plain, Backend::Cpu.device()).unwrap();
    let img = kodak_crop(512, 384);
    let y = codec.analysis(&img).unwrap();
    let mut stats = ZCalibration::new(codec.config().n);
    for q in [0.5, 4.0] {
        codec.add_to_z_calibration(&y, q, &mut stats).unwrap();
    }
    let candidates = codec.z_candidates().unwrap();
    let bits = |k: i8, c: usize, v: i32| {
        candidates[(k + Z_SCALE_MAX) as usize]
            .table(c)
            .and_then(|t| cost_bits(t, v))
            .unwrap_or(64.0)
    };
    let scales = stats.fit(&bits);
    assert!(scales.iter().any(|&k| k > 0), "narrower tables at low q");
    let mut map = weights::scale_map_of(SHIPPED_WEIGHTS).unwrap().unwrap();
    map.z_tables = stats.tables(&scales, &|k, c, v| (-bits(k, c, v)).exp2());
    // Each table is the histogram of its bucket's symbols with a little of the scaled density.
    let bucket = ncodec_codecs::hyperprior::z_bucket(0.5) * codec.config().n;
    let zeros = &map.z_tables[bucket];
    assert!(zeros.min <= -2 && zeros.weights.len() >= 6);
    let calibrated = weights::with_scale_map(SHIPPED_WEIGHTS, map).unwrap();
    assert_ne!(
        weights::model_id(&calibrated),
        weights::model_id(SHIPPED_WEIGHTS)
    );
    let cal = HyperpriorCodec::from_weights(&calibrated, Backend::Cpu.device()).unwrap();
    let z_len = |c: &ncodec_codecs::hyperprior::Coded| {
        c.container
            .streams
            .iter()
            .find(|s| s.label == STREAM_Z)
            .unwrap()
            .data
            .len()
    };
    for q in [0.5, 4.0] {
        let (before, after) = (
            codec.encode_image(&img, q).unwrap(),
            cal.encode_image(&img, q).unwrap(),
        );
        assert_eq!(before.y, after.y);
        assert_eq!(before.z, after.z);
        let (b, a) = (z_len(&before), z_len(&after));
        if q < 1.0 {
            assert!(a * 10 < b * 7, "q{q}: z {a} bytes calibrated, {b} before");
            // The shipped tables, fitted on training photos, also pay on this Kodak crop.
            let s = z_len(&shipped.encode_image(&img, q).unwrap());
            assert!(
                s * 10 < b * 8,
                "q{q}: z {s} bytes shipped, {b} with the bottleneck"
            );
        } else {
            assert!(a <= b + 8, "q{q}: z {a} bytes calibrated, {b} before");
        }
        let file =
            Container::parse(&after.container.to_bytes().unwrap(), &Limits::default()).unwrap();
        let (_, symbols) = cal.decode_latent(&file, &Limits::default()).unwrap();
        assert_eq!((symbols.z, symbols.y), (after.z.clone(), after.y.clone()));
        assert!(
            codec.decode_image(&file, &Limits::default()).is_err(),
            "other model id"
        );
    }
}
