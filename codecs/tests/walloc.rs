//! WaLLoC: the wavelet packet transform on real media, shapes, round trips of images and audio
//! through the real bitstream with tiny random-init weights, chunk borders, WAV formats, rate
//! control and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use burn::tensor::{Distribution, Tensor, TensorData};
use image::RgbImage;
use ncodec_bitstream::{Container, Limits, ModelId};
use ncodec_codecs::media::audio::{Audio, PcmFormat, read_wav, read_wav_file, wav_bytes};
use ncodec_codecs::walloc::wavelet::{self, Dims};
use ncodec_codecs::walloc::{Medium, WallocCodec, WallocConfig, load_weights, weights_to_bytes};
use ncodec_codecs::{Backend, CodecError, Quality};

fn shared(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn kodak_crop(w: u32, h: u32) -> RgbImage {
    let img = image::open(shared("kodak/kodim23.png")).unwrap().to_rgb8();
    image::imageops::crop_imm(&img, 200, 100, w, h).to_image()
}

/// `seconds` of a real stereo music clip.
fn music(seconds: f64) -> Audio {
    let mut a = read_wav_file(
        &shared("audio/music/kevin_macleod_vibe_ace_30s.wav"),
        &Limits::default(),
    )
    .unwrap();
    let frames = (seconds * f64::from(a.sample_rate)) as usize;
    a.samples.truncate(frames * usize::from(a.channels));
    a
}

fn tiny_codec(medium: Medium) -> (WallocCodec, Vec<u8>) {
    let device = Backend::Cpu.device();
    let cfg = WallocConfig::tiny(medium);
    let bytes = weights_to_bytes(&cfg.init(&device), &cfg, false).unwrap();
    (
        WallocCodec::from_weights(&bytes, medium, device).unwrap(),
        bytes,
    )
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()[0]
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn wavelet_packets_reconstruct_a_real_photo_and_real_music() {
    let device = Backend::Cpu.device();
    // A 96×64 photo crop, J = 3 (192 bands of 12×8).
    let img = kodak_crop(96, 64);
    let data: Vec<f32> = (0..3)
        .flat_map(|c| img.pixels().map(move |p| f32::from(p.0[c]) / 255.0 - 0.5))
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(data, [1, 3, 64, 96]), &device);
    let bands = wavelet::forward(x.clone(), Dims::Two, 3);
    assert_eq!(bands.dims(), [1, 192, 8, 12]);
    let back = wavelet::inverse(bands.clone(), Dims::Two, 3);
    let err = scalar((back - x.clone()).abs().max());
    assert!(err < 1e-4, "image max error {err}");
    // Energy compaction: the all-lowpass band holds most of the energy (a real transform).
    let e = floats(bands.square().sum_dim(3).sum_dim(2));
    let total: f32 = e.iter().sum();
    assert!(e[0] + e[64] + e[128] > 0.5 * total);

    // Two seconds of stereo music, J = 7.
    let a = music(2.0);
    let frames = a.frames() / 128 * 128;
    let planar: Vec<f32> = (0..2)
        .flat_map(|c| a.samples.iter().skip(c).step_by(2).take(frames).copied())
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(planar, [1, 2, 1, frames]), &device);
    let bands = wavelet::forward(x.clone(), Dims::One, 7);
    assert_eq!(bands.dims(), [1, 256, 1, frames / 128]);
    let back = wavelet::inverse(bands, Dims::One, 7);
    let err = scalar((back - x).abs().max());
    assert!(err < 1e-4, "audio max error {err}");
}

#[test]
fn training_forward_has_documented_shapes_and_gradients() {
    let device = Backend::Cpu.device().autodiff();
    for (medium, shape) in [
        (Medium::Image, [2, 3, 32, 48]),
        (Medium::Audio, [2, 2, 1, 256]),
    ] {
        let cfg = WallocConfig::tiny(medium);
        let model = cfg.init(&device);
        let x = Tensor::<4>::random(shape, Distribution::Uniform(-0.5, 0.5), &device);
        let y = model.analysis(&cfg, x.clone());
        let s = cfg.stride();
        let expect = match medium {
            Medium::Image => [2, cfg.latent, 32 / s, 48 / s],
            Medium::Audio => [2, cfg.latent, 1, 256 / s],
        };
        assert_eq!(y.dims(), expect);
        // Bounded: |ȳ| < 127 whatever the input.
        let big = model.analysis(&cfg, x.clone().mul_scalar(1e4));
        assert!(scalar(big.abs().max()) <= 127.0);
        let steps = Tensor::<1>::from_data(TensorData::new(vec![0.5f32, 16.0], [2]), &device);
        let out = model.forward_train(&cfg, x.clone(), steps, Tensor::zeros(expect, &device));
        assert_eq!(out.x_hat.dims(), shape);
        let bits = floats(out.bits.clone());
        // A coarser step costs fewer bits for the same latent.
        assert!(bits[0] > bits[1], "{bits:?}");
        let loss = (out.x_hat - x).square().mean() + out.bits.mean();
        let grads = loss.backward();
        let g = model.encoder.weight.grad(&grads).expect("encoder gradient");
        assert!(scalar(g.abs().sum()) > 0.0);
    }
}

#[test]
fn image_round_trip_through_the_real_bitstream() {
    let (codec, _) = tiny_codec(Medium::Image);
    // Odd size: padded to a multiple of 4 and cropped back.
    let img = kodak_crop(70, 45);
    let mut sizes = Vec::new();
    for q in [1.0f32, 4.5, 8.0] {
        let coded = codec.encode_image(&img, Quality::Level(q)).unwrap();
        let bytes = coded.container.to_bytes().unwrap();
        let parsed = Container::parse(&bytes, &Limits::default()).unwrap();
        let (_, symbols) = codec.decode_latent(&parsed, &Limits::default()).unwrap();
        assert_eq!(symbols, coded.symbols, "q {q}");
        let back = codec.decode_image(&parsed, &Limits::default()).unwrap();
        assert_eq!(back.dimensions(), (70, 45));
        sizes.push(bytes.len());
    }
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    // Quality out of range and audio targets are refused.
    assert!(codec.encode_image(&img, Quality::Level(9.0)).is_err());
    assert!(codec.encode_image(&img, Quality::TargetKbps(64.0)).is_err());
}

#[test]
fn image_strips_equal_one_pass() {
    let (codec, weights) = tiny_codec(Medium::Image);
    let img = kodak_crop(64, 100);
    let one = codec.image_latent(&img).unwrap();
    let strips = WallocCodec::from_weights(&weights, Medium::Image, Backend::Cpu.device())
        .unwrap()
        .with_chunk(3);
    let many = strips.image_latent(&img).unwrap();
    assert!(max_abs_diff(&one.data, &many.data) < 1e-3);
    let coded = codec.encode_image(&img, Quality::Level(6.0)).unwrap();
    let a = codec
        .decode_image(&coded.container, &Limits::default())
        .unwrap();
    let b = strips
        .decode_image(&coded.container, &Limits::default())
        .unwrap();
    let diff = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap();
    assert!(diff <= 1, "strip decode differs by {diff} levels");
}

#[test]
fn audio_round_trip_keeps_length_channels_rate_and_format() {
    let (codec, _) = tiny_codec(Medium::Audio);
    let stereo = music(0.5);
    // Odd lengths, mono and stereo, three sample formats.
    let mono = Audio {
        channels: 1,
        samples: stereo
            .samples
            .iter()
            .step_by(2)
            .copied()
            .take(10_001)
            .collect(),
        ..stereo.clone()
    };
    let cases = [
        (stereo.clone(), PcmFormat::Int { bits: 16 }),
        (mono, PcmFormat::Int { bits: 24 }),
        (stereo, PcmFormat::Float32),
    ];
    for (audio, format) in cases {
        let audio = Audio { format, ..audio };
        // Through real WAV bytes, as the CLI does.
        let audio = read_wav(
            std::io::Cursor::new(wav_bytes(&audio).unwrap()),
            &Limits::default(),
        )
        .unwrap();
        let coded = codec.encode_audio(&audio, Quality::Level(5.0)).unwrap();
        let bytes = coded.container.to_bytes().unwrap();
        let parsed = Container::parse(&bytes, &Limits::default()).unwrap();
        let (_, symbols) = codec.decode_latent(&parsed, &Limits::default()).unwrap();
        assert_eq!(symbols, coded.symbols);
        let back = codec.decode_audio(&parsed, &Limits::default()).unwrap();
        assert_eq!(back.frames(), audio.frames());
        assert_eq!(back.channels, audio.channels);
        assert_eq!(back.sample_rate, audio.sample_rate);
        assert_eq!(back.format, audio.format);
        let out = read_wav(
            std::io::Cursor::new(wav_bytes(&back).unwrap()),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(out.samples.len(), audio.samples.len());
    }
}

#[test]
fn audio_chunk_borders_are_seamless() {
    // 1.5 s of music in chunks of 7 latent positions (28 samples at J = 2) against one pass:
    // the latents and the decoded samples agree to float rounding, so there is nothing to click.
    let (whole, weights) = tiny_codec(Medium::Audio);
    let whole = whole.with_chunk(1 << 20);
    let chunked = WallocCodec::from_weights(&weights, Medium::Audio, Backend::Cpu.device())
        .unwrap()
        .with_chunk(7);
    let audio = music(1.5);
    let a = whole.audio_latent(&audio).unwrap();
    let b = chunked.audio_latent(&audio).unwrap();
    assert!(max_abs_diff(&a.data, &b.data) < 1e-3);
    let coded = whole.encode_audio(&audio, Quality::Level(8.0)).unwrap();
    let x = whole
        .decode_audio(&coded.container, &Limits::default())
        .unwrap();
    let y = chunked
        .decode_audio(&coded.container, &Limits::default())
        .unwrap();
    assert_eq!(x.samples.len(), audio.samples.len());
    let d = max_abs_diff(&x.samples, &y.samples);
    assert!(d < 1e-4, "chunked decode differs by {d}");
}

#[test]
fn rate_targets_land_below_and_too_low_targets_name_the_lowest_rate() {
    let (codec, _) = tiny_codec(Medium::Audio);
    let audio = music(1.0);
    let low = codec.encode_audio(&audio, Quality::Level(1.0)).unwrap();
    let high = codec.encode_audio(&audio, Quality::Level(8.0)).unwrap();
    let kbps = |c: &Container| c.to_bytes().unwrap().len() as f64 * 8.0 / audio.seconds() / 1000.0;
    let (lo, hi) = (kbps(&low.container), kbps(&high.container));
    let target = 0.5 * (lo + hi);
    let coded = codec
        .encode_audio(&audio, Quality::TargetKbps(target))
        .unwrap();
    let got = kbps(&coded.container);
    assert!(got <= target && got >= 0.9 * target, "{got} for {target}");
    let e = codec
        .encode_audio(&audio, Quality::TargetKbps(lo * 0.5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lowest rate") && e.contains("-q 1"), "{e}");

    let (icodec, _) = tiny_codec(Medium::Image);
    let img = kodak_crop(64, 64);
    let bpp = |q: Quality| {
        let c = icodec.encode_image(&img, q).unwrap();
        c.container.to_bytes().unwrap().len() as f64 * 8.0 / 4096.0
    };
    let target = 0.5 * (bpp(Quality::Level(1.0)) + bpp(Quality::Level(8.0)));
    let got = bpp(Quality::TargetBpp(target));
    assert!(got <= target && got >= 0.9 * target, "{got} for {target}");
}

#[test]
fn bad_input_is_an_error_never_a_panic() {
    let (codec, weights) = tiny_codec(Medium::Audio);
    // Three channels are refused with a message.
    let three = Audio {
        sample_rate: 8000,
        channels: 3,
        format: PcmFormat::Int { bits: 16 },
        samples: vec![0.0; 300],
    };
    let e = codec.encode_audio(&three, Quality::Level(4.0)).unwrap_err();
    assert!(matches!(e, CodecError::Unsupported(_)), "{e}");
    // A file from other weights is refused.
    let audio = music(0.3);
    let coded = codec.encode_audio(&audio, Quality::Level(4.0)).unwrap();
    let other = {
        let device = Backend::Cpu.device();
        let cfg = WallocConfig::tiny(Medium::Audio);
        device.seed(99);
        let bytes = weights_to_bytes(&cfg.init(&device), &cfg, false).unwrap();
        WallocCodec::from_weights(&bytes, Medium::Audio, device).unwrap()
    };
    assert!(
        other
            .decode_audio(&coded.container, &Limits::default())
            .is_err()
    );
    // Truncations and bit flips of a real file: errors or (rarely) other audio, never a panic.
    let bytes = coded.container.to_bytes().unwrap();
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        if let Ok(f) = Container::parse(&bytes[..cut], &Limits::default()) {
            let _ = codec.decode_audio(&f, &Limits::default());
        }
    }
    let mut state = 12345u64;
    for _ in 0..100 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut b = bytes.clone();
        let bit = (state >> 33) as usize % (b.len() * 8);
        b[bit / 8] ^= 1 << (bit % 8);
        if let Ok(f) = Container::parse(&b, &Limits::default()) {
            let _ = codec.decode_audio(&f, &Limits::default());
        }
    }
    // Weights: the image loader refuses audio weights; damaged weights are errors.
    let device = Backend::Cpu.device();
    assert!(load_weights(&weights, Medium::Image, &device).is_err());
    assert!(load_weights(&weights[..weights.len() / 2], Medium::Audio, &device).is_err());
    let (c, _) = load_weights(&weights, Medium::Audio, &device).unwrap();
    assert_eq!(c, WallocConfig::tiny(Medium::Audio));
}

#[test]
fn f16_weights_decode_what_they_encode() {
    let device = Backend::Cpu.device();
    let cfg = WallocConfig::tiny(Medium::Image);
    let model = cfg.init(&device);
    let half = weights_to_bytes(&model, &cfg, true).unwrap();
    let full = weights_to_bytes(&model, &cfg, false).unwrap();
    assert!(half.len() < full.len());
    let codec = WallocCodec::from_weights(&half, Medium::Image, device).unwrap();
    let img = kodak_crop(32, 32);
    let coded = codec.encode_image(&img, Quality::Level(3.0)).unwrap();
    let back = codec
        .decode_image(&coded.container, &Limits::default())
        .unwrap();
    assert_eq!(back.dimensions(), (32, 32));
    assert_eq!(
        coded.container.model,
        ncodec_codecs::weights::model_id(&half)
    );
    assert_ne!(coded.container.model, ModelId([0; 8]));
}

/// Encodes on one backend and decodes on the other (lavapipe where there is no GPU): the decoder
/// reads exactly the symbols the encoder wrote, and the reconstructions of one file agree to float
/// rounding.
#[test]
fn files_decode_identically_across_backends() {
    if let Err(e) = Backend::Wgpu.self_test() {
        assert!(std::env::var_os("CI").is_none(), "wgpu must run in CI: {e}");
        eprintln!(
            "skipped: no working Vulkan adapter here ({e}); apt-get install mesa-vulkan-drivers"
        );
        return;
    }
    let limits = Limits::default();
    let (cpu, bytes) = tiny_codec(Medium::Audio);
    let gpu = WallocCodec::from_weights(&bytes, Medium::Audio, Backend::Wgpu.device()).unwrap();
    let audio = music(0.5);
    for (enc, dec, name) in [(&gpu, &cpu, "wgpu→cpu"), (&cpu, &gpu, "cpu→wgpu")] {
        let coded = enc.encode_audio(&audio, Quality::Level(6.0)).unwrap();
        let file = Container::parse(&coded.container.to_bytes().unwrap(), &limits).unwrap();
        let (_, got) = dec.decode_latent(&file, &limits).unwrap();
        assert_eq!(got, coded.symbols, "{name}: symbols differ");
        let a = cpu.decode_audio(&file, &limits).unwrap();
        let b = gpu.decode_audio(&file, &limits).unwrap();
        let d = max_abs_diff(&a.samples, &b.samples);
        assert!(d < 1e-4, "{name}: samples differ by {d}");
    }
    let (cpu, bytes) = tiny_codec(Medium::Image);
    let gpu = WallocCodec::from_weights(&bytes, Medium::Image, Backend::Wgpu.device()).unwrap();
    let img = kodak_crop(64, 48);
    let coded = gpu.encode_image(&img, Quality::Level(6.0)).unwrap();
    let (_, got) = cpu.decode_latent(&coded.container, &limits).unwrap();
    assert_eq!(got, coded.symbols);
    let a = cpu.decode_image(&coded.container, &limits).unwrap();
    let b = gpu.decode_image(&coded.container, &limits).unwrap();
    let max = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap();
    assert!(max <= 1, "pixels differ by {max}");
}
