//! Codec 2: WaLLoC (Jacobellis & Yadwadkar, "Learned Compression for Compressed Learning", DCC
//! 2025) for RGB images (`walloc-image`) and stereo audio (`walloc-audio`).
//!
//! Pipeline (shapes in [`model`]):
//!
//! 1. the input (pixels − ½, or samples in [−1, 1)) goes through a CDF 9/7 wavelet packet transform
//!    of `J` levels ([`wavelet`]), a linear 1×1 encoder and a per-channel gain;
//! 2. the bounded squashing `ȳ = 127·tanh(y/127)` keeps every latent in (−127, 127);
//! 3. `k = ⌊ȳ/s⌉` with the step `s` of the quality level ([`model::step_of`]: 16 at `-q 1`, 0.5 at
//!    `-q 8`; `s = 1` gives the paper's 8-bit latents) is coded with one ANS table per latent
//!    channel, made from the learned density (its mass on `[(k − ½)s, (k + ½)s]`, in f64 with
//!    `libm`, so the tables are identical on every machine);
//! 4. the decoder runs the residual decoder on `ŷ = k·s` and the inverse transform.
//!
//! Unlike the paper's code, which packs the 8-bit latents into lossless WebP/PNG, the latents are
//! entropy-coded with the learned density.
//!
//! **Chunks.** The latent grid is computed and decoded in chunks along one axis (latent rows of
//! images, time of audio) with [`ENCODE_MARGIN`] and [`WallocConfig::decoder_reach`] positions of
//! context on each side; the context beyond the signal's ends is made by repeating (images) or
//! mirroring (audio) it. A chunk's central positions equal those of a one-pass run up to float
//! rounding, so memory stays bounded for any length and there are no clicks at chunk borders.
//! Audio chunks are [`AUDIO_CHUNK`] latent positions, image strips [`IMAGE_STRIP`] latent rows.
//!
//! **Sizes.** Image sides are padded to a multiple of `2^J` by repeating the last row/column and
//! cropped after decoding. Audio of one channel is coded as two identical channels and averaged
//! back; more than two channels are refused. The model runs at the file's sample rate (the shipped
//! model was trained on 44.1 kHz music and 16 kHz speech); the decoded WAV has the input's rate,
//! channel count, sample format and exact length.

pub mod model;
pub mod wavelet;

use std::sync::OnceLock;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use ncodec_bitstream::entropy::FactorizedModel;
use ncodec_bitstream::{
    BitstreamError, CodecId, CodecParams, Container, Limits, MediaInfo, ModelId, Stream, StreamKind,
};

use crate::codec::{Codec, CodecInfo, EncodeOptions, Media, Quality};
use crate::error::{CodecError, Result};
use crate::hyperprior::{BottleneckCdf, values};
use crate::media::audio::{Audio, PcmFormat};
pub use model::{BOUND, Medium, Walloc, WallocConfig, step_of};

const IMAGE_INFO: CodecInfo = CodecInfo {
    id: CodecId::WALLOC_IMAGE,
    name: "walloc-image",
    media: "image",
    description: "WaLLoC: wavelet packets + linear encoder + learned entropy coding; -q 1..8 or -q 0.5bpp",
};

const AUDIO_INFO: CodecInfo = CodecInfo {
    id: CodecId::WALLOC_AUDIO,
    name: "walloc-audio",
    media: "audio",
    description: "WaLLoC for stereo audio (WAV in, WAV out); -q 1..8 or -q 64kbps",
};

/// Stream label of the latent symbols.
pub const STREAM_LATENT: u8 = 0;
/// Latent positions of context around each chunk in the analysis (the transform reaches ~5).
pub const ENCODE_MARGIN: usize = 8;
/// Latent positions per audio chunk (2048 × 128 samples ≈ 6 s at 44.1 kHz).
pub const AUDIO_CHUNK: usize = 2048;
/// Latent rows per image strip (256 pixel rows at J = 3).
pub const IMAGE_STRIP: usize = 32;
/// Lowest and highest quality level.
pub const QUALITY_RANGE: (f32, f32) = (1.0, model::LEVELS as f32);

/// The shipped image weights (trained by `ncodec train`; see `assets/README.md`).
pub static SHIPPED_IMAGE: &[u8] = include_bytes!("../../../assets/walloc/image.ncw");
/// The shipped audio weights.
pub static SHIPPED_AUDIO: &[u8] = include_bytes!("../../../assets/walloc/audio.ncw");

const CODEC_IMAGE: &str = "walloc-image";
const CODEC_AUDIO: &str = "walloc-audio";

fn codec_name(medium: Medium) -> &'static str {
    match medium {
        Medium::Image => CODEC_IMAGE,
        Medium::Audio => CODEC_AUDIO,
    }
}

/// A host array `[C][H][W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planar {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c·h·w` values.
    pub data: Vec<f32>,
}

impl Planar {
    fn zeros(c: usize, h: usize, w: usize) -> Result<Self> {
        let n = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| CodecError::Unsupported("absurd size".into()))?;
        let mut data = Vec::new();
        data.try_reserve_exact(n)
            .map_err(|_| CodecError::Unsupported(format!("cannot allocate {n} values")))?;
        data.resize(n, 0.0);
        Ok(Self { c, h, w, data })
    }

    /// Extent along the chunked axis.
    fn len(&self, axis: Axis) -> usize {
        match axis {
            Axis::Rows => self.h,
            Axis::Cols => self.w,
        }
    }

    /// The positions `start .. start + len` along `axis` (which may lie outside the array; `map`
    /// turns them into valid indices).
    fn gather(&self, axis: Axis, start: isize, len: usize, map: Extend) -> Planar {
        let n = self.len(axis);
        let idx: Vec<usize> = (0..len).map(|i| map.index(start + i as isize, n)).collect();
        match axis {
            Axis::Rows => {
                let mut data = Vec::with_capacity(self.c * len * self.w);
                for c in 0..self.c {
                    for &r in &idx {
                        let row = (c * self.h + r) * self.w;
                        data.extend_from_slice(&self.data[row..row + self.w]);
                    }
                }
                Planar {
                    c: self.c,
                    h: len,
                    w: self.w,
                    data,
                }
            }
            Axis::Cols => {
                let mut data = Vec::with_capacity(self.c * self.h * len);
                for c in 0..self.c {
                    for r in 0..self.h {
                        let row = (c * self.h + r) * self.w;
                        data.extend(idx.iter().map(|&i| self.data[row + i]));
                    }
                }
                Planar {
                    c: self.c,
                    h: self.h,
                    w: len,
                    data,
                }
            }
        }
    }

    /// Copies `src`'s positions `from .. from + count` along `axis` to positions `to ..` of `self`
    /// (positions past `self`'s end are dropped).
    fn put(&mut self, axis: Axis, src: &Planar, from: usize, to: usize, count: usize) {
        let count = count.min(self.len(axis).saturating_sub(to));
        for c in 0..self.c {
            match axis {
                Axis::Rows => {
                    for r in 0..count {
                        let s = (c * src.h + from + r) * src.w;
                        let d = (c * self.h + to + r) * self.w;
                        self.data[d..d + self.w].copy_from_slice(&src.data[s..s + self.w]);
                    }
                }
                Axis::Cols => {
                    for r in 0..self.h {
                        let s = (c * src.h + r) * src.w + from;
                        let d = (c * self.h + r) * self.w + to;
                        self.data[d..d + count].copy_from_slice(&src.data[s..s + count]);
                    }
                }
            }
        }
    }
}

/// The axis along which the signal is processed in chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    Rows,
    Cols,
}

/// How positions outside a signal are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extend {
    /// Repeat the first/last position.
    Edge,
    /// Mirror about the first/last position (`x[−i] = x[i]`).
    Mirror,
}

impl Extend {
    fn index(self, i: isize, n: usize) -> usize {
        let last = n as isize - 1;
        match self {
            Self::Edge => i.clamp(0, last) as usize,
            Self::Mirror => {
                if last == 0 {
                    return 0;
                }
                let period = 2 * last;
                let m = i.rem_euclid(period);
                (if m > last { period - m } else { m }) as usize
            }
        }
    }
}

/// Everything an encode produced.
#[derive(Debug, Clone)]
pub struct Coded {
    /// The file.
    pub container: Container,
    /// The latent symbols, channel-major.
    pub symbols: Vec<i32>,
}

/// The WaLLoC codec with loaded weights.
pub struct WallocCodec {
    device: Device,
    config: WallocConfig,
    model: Walloc,
    density: BottleneckCdf,
    model_id: ModelId,
    chunk: usize,
}

impl std::fmt::Debug for WallocCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WallocCodec")
            .field("config", &self.config)
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// Serializes `model` as a weights file (f16 parameters if `half`).
///
/// # Errors
/// [`CodecError::InvalidParameter`] if burn cannot serialize it.
pub fn weights_to_bytes(model: &Walloc, config: &WallocConfig, half: bool) -> Result<Vec<u8>> {
    crate::weights::to_bytes(codec_name(config.medium), &model.valid(), config, half)
}

/// Loads a WaLLoC weights file for `medium` onto `device`.
///
/// # Errors
/// [`CodecError::Weights`] for a damaged or foreign file.
pub fn load_weights(
    bytes: &[u8],
    medium: Medium,
    device: &Device,
) -> Result<(WallocConfig, Walloc)> {
    let name = codec_name(medium);
    let (config, pack): (WallocConfig, _) = crate::weights::config_of(bytes, name)?;
    config
        .validate()
        .map_err(|e| CodecError::Weights(format!("not a {name} weights file: {e}")))?;
    if config.medium != medium {
        return Err(CodecError::Weights(format!(
            "not a {name} weights file: the model is for {:?}",
            config.medium
        )));
    }
    let model = crate::weights::load_into(config.init_for_loading(device), pack)?;
    Ok((config, model))
}

impl WallocCodec {
    /// The codec with the shipped weights of `medium` on `device`.
    ///
    /// # Errors
    /// As [`WallocCodec::from_weights`].
    pub fn shipped(medium: Medium, device: Device) -> Result<Self> {
        let bytes = match medium {
            Medium::Image => SHIPPED_IMAGE,
            Medium::Audio => SHIPPED_AUDIO,
        };
        Self::from_weights(bytes, medium, device)
    }

    /// The codec with the weights file `bytes` on `device`.
    ///
    /// # Errors
    /// [`CodecError::Weights`] for a damaged or foreign weights file.
    pub fn from_weights(bytes: &[u8], medium: Medium, device: Device) -> Result<Self> {
        let (config, model) = load_weights(bytes, medium, &device)?;
        Self::from_model(model, config, crate::weights::model_id(bytes), device)
    }

    /// The codec around an in-memory model (tests, training validation).
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the weights cannot be read back from the device.
    pub fn from_model(
        model: Walloc,
        config: WallocConfig,
        model_id: ModelId,
        device: Device,
    ) -> Result<Self> {
        config.validate().map_err(CodecError::InvalidParameter)?;
        let model = model.valid();
        let density = BottleneckCdf::new(&model.bottleneck)?;
        let chunk = match config.medium {
            Medium::Image => IMAGE_STRIP,
            Medium::Audio => AUDIO_CHUNK,
        };
        Ok(Self {
            device,
            config,
            model,
            density,
            model_id,
            chunk,
        })
    }

    /// Processes chunks of `positions` latent positions (default: [`AUDIO_CHUNK`] or
    /// [`IMAGE_STRIP`]); the result does not depend on it beyond float rounding.
    pub fn with_chunk(mut self, positions: usize) -> Self {
        self.chunk = positions.max(1);
        self
    }

    /// The network size.
    pub fn config(&self) -> WallocConfig {
        self.config
    }

    /// The id written into files.
    pub fn model_id(&self) -> ModelId {
        self.model_id
    }

    fn info(&self) -> &'static CodecInfo {
        match self.config.medium {
            Medium::Image => &IMAGE_INFO,
            Medium::Audio => &AUDIO_INFO,
        }
    }

    fn axis(&self) -> (Axis, Extend) {
        match self.config.medium {
            Medium::Image => (Axis::Rows, Extend::Edge),
            Medium::Audio => (Axis::Cols, Extend::Mirror),
        }
    }

    fn run(&self, input: Planar, f: impl Fn(&Walloc, Tensor<4>) -> Tensor<4>) -> Result<Planar> {
        let x = Tensor::<4>::from_data(
            TensorData::new(input.data, [1, input.c, input.h, input.w]),
            &self.device,
        );
        let y = f(&self.model, x);
        let [_, c, h, w] = y.dims();
        Ok(Planar {
            c,
            h,
            w,
            data: values(y)?,
        })
    }

    /// The bounded latent `ȳ` of an input whose non-chunked side is already a multiple of `2^J`,
    /// computed in chunks along the other side.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn analysis(&self, input: &Planar) -> Result<Planar> {
        let (axis, extend) = self.axis();
        let s = self.config.stride();
        let positions = input.len(axis).div_ceil(s);
        let other = match axis {
            Axis::Rows => input.w / s,
            Axis::Cols => input.h,
        };
        let (lh, lw) = match axis {
            Axis::Rows => (positions, other),
            Axis::Cols => (1, positions),
        };
        let mut out = Planar::zeros(self.config.latent, lh, lw)?;
        let m = ENCODE_MARGIN;
        for p0 in (0..positions).step_by(self.chunk) {
            let n = self.chunk.min(positions - p0);
            let region = input.gather(
                axis,
                (p0 as isize - m as isize) * s as isize,
                (n + 2 * m) * s,
                extend,
            );
            let cfg = self.config;
            let lat = self.run(region, |model, x| model.analysis(&cfg, x))?;
            out.put(axis, &lat, m, p0, n);
        }
        Ok(out)
    }

    /// The decoded signal from the dequantized latent `ŷ`, `len` positions long along the chunked
    /// axis, in chunks.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn synthesis(&self, latent: &Planar, len: usize) -> Result<Planar> {
        let (axis, _) = self.axis();
        let s = self.config.stride();
        let positions = latent.len(axis);
        let c = self.config.medium.channels();
        let (h, w) = match axis {
            Axis::Rows => (len, latent.w * s),
            Axis::Cols => (1, len),
        };
        let mut out = Planar::zeros(c, h, w)?;
        let m = self.config.decoder_reach();
        for p0 in (0..positions).step_by(self.chunk) {
            let n = self.chunk.min(positions - p0);
            let region = latent.gather(axis, p0 as isize - m as isize, n + 2 * m, Extend::Edge);
            let cfg = self.config;
            let x = self.run(region, |model, y| model.synthesis(&cfg, y))?;
            out.put(axis, &x, m * s, p0 * s, n * s);
        }
        Ok(out)
    }

    /// The factorized tables of step `s`: per channel, symbols `−K..=K` with `K = ⌈127/s⌉`.
    ///
    /// # Errors
    /// [`CodecError::Bitstream`] if a table cannot be built.
    pub fn tables(&self, step: f64) -> Result<FactorizedModel> {
        let k = (BOUND / step).ceil() as i64;
        let mut specs = Vec::with_capacity(self.config.latent);
        for c in 0..self.config.latent {
            let at: Vec<f64> = (-k..=k + 1)
                .map(|i| self.density.cdf(c, (i as f64 - 0.5) * step))
                .collect();
            let mut pmf: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
            // The tails beyond ±K hold no symbol (|ȳ| < 127): give their mass to the end bins.
            if let (Some(first), Some(last)) = (at.first(), at.last()) {
                pmf[0] += first;
                let n = pmf.len();
                pmf[n - 1] += 1.0 - last;
            }
            let pmf = pmf.into_iter().map(|p| p.max(1e-10)).collect();
            specs.push((-k as i32, pmf, 1e-10));
        }
        Ok(FactorizedModel::from_probabilities(&specs)?)
    }

    fn check_quality(q: f32) -> Result<()> {
        let (lo, hi) = QUALITY_RANGE;
        if !(lo..=hi).contains(&q) {
            return Err(CodecError::InvalidParameter(format!(
                "quality {q} is outside WaLLoC's range {lo}..={hi}"
            )));
        }
        Ok(())
    }

    /// The latent symbols of quality `q` (`clamp(round(ȳ/s), −K, K)`).
    fn quantize(latent: &Planar, q: f32) -> Vec<i32> {
        let step = step_of(q);
        let k = (BOUND / step).ceil() as i32;
        let inv = (1.0 / step) as f32;
        latent
            .data
            .iter()
            .map(|&v| {
                let v = if v.is_finite() { v } else { 0.0 };
                ((v * inv).round() as i32).clamp(-k, k)
            })
            .collect()
    }

    /// The paper's way of storing the latent, for comparison: the symbols of quality `q` (which
    /// must have `s ≥ 1`, i.e. 8-bit symbols) shifted by 128 and packed as one 8-bit grayscale PNG
    /// (channels stacked vertically, best compression). Returns its size in bytes.
    ///
    /// # Errors
    /// [`CodecError::InvalidParameter`] if the step is below 1 (symbols beyond 8 bits).
    pub fn png_packed_size(&self, latent: &Planar, q: f32) -> Result<usize> {
        Self::check_quality(q)?;
        if step_of(q) < 1.0 - 1e-9 {
            return Err(CodecError::InvalidParameter(format!(
                "quality {q} has symbols beyond 8 bits"
            )));
        }
        let bytes: Vec<u8> = Self::quantize(latent, q)
            .iter()
            .map(|&v| (v + 128).clamp(0, 255) as u8)
            .collect();
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Adaptive,
        );
        image::ImageEncoder::write_image(
            encoder,
            &bytes,
            latent.w as u32,
            (latent.c * latent.h) as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| CodecError::InvalidParameter(format!("PNG packing: {e}")))?;
        Ok(png.len())
    }

    /// Codes a bounded latent at quality `q` into a file describing `media`.
    ///
    /// # Errors
    /// [`CodecError`] for a quality out of range or an entropy-coder failure.
    pub fn encode_latent(&self, latent: &Planar, q: f32, media: MediaInfo) -> Result<Coded> {
        Self::check_quality(q)?;
        let step = step_of(q);
        let symbols = Self::quantize(latent, q);
        let plane = latent.h * latent.w;
        let bytes = self.tables(step)?.encode(&symbols, plane)?;
        let mut container = Container::new(
            self.info().id,
            self.model_id,
            media,
            CodecParams {
                quality: q,
                extra: Vec::new(),
            },
        );
        container.streams.push(Stream {
            kind: StreamKind::Ans32,
            label: STREAM_LATENT,
            data: bytes,
        });
        Ok(Coded { container, symbols })
    }

    /// Codes `latent` at the highest quality whose file is at most `max_bits` long; `unit` and
    /// `per` describe the rate for messages (`bpp` and pixels, `kbps` and seconds/1000).
    fn encode_to_size(
        &self,
        latent: &Planar,
        media: &MediaInfo,
        max_bits: f64,
        rate: impl Fn(f64) -> f64,
        unit: &str,
    ) -> Result<Coded> {
        let (lo, hi) = QUALITY_RANGE;
        let size = |q: f32| -> Result<(Coded, f64)> {
            let c = self.encode_latent(latent, q, media.clone())?;
            let bits = c.container.to_bytes()?.len() as f64 * 8.0;
            Ok((c, bits))
        };
        let (low, low_bits) = size(lo)?;
        if low_bits > max_bits {
            return Err(CodecError::InvalidParameter(format!(
                "{:.4} {unit} is below the lowest rate {} reaches on this input ({:.4} {unit} at -q {lo})",
                rate(max_bits),
                self.info().name,
                rate(low_bits)
            )));
        }
        let (high, high_bits) = size(hi)?;
        if high_bits <= max_bits {
            return Ok(high);
        }
        let (mut a, mut b, mut best) = (lo, hi, low);
        for _ in 0..16 {
            let q = 0.5 * (a + b);
            let (c, bits) = size(q)?;
            if bits <= max_bits {
                a = q;
                best = c;
                if bits >= max_bits * 0.995 {
                    break;
                }
            } else {
                b = q;
            }
        }
        Ok(best)
    }

    /// The image as planar pixels − ½, width padded to a multiple of `2^J`.
    fn image_planar(&self, img: &RgbImage) -> Result<Planar> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(CodecError::Unsupported("empty image".into()));
        }
        let pw = w.div_ceil(self.config.stride()) * self.config.stride();
        let mut p = Planar::zeros(3, h, pw)?;
        for y in 0..h {
            for x in 0..pw {
                let px = img.get_pixel(x.min(w - 1) as u32, y as u32).0;
                for (c, &v) in px.iter().enumerate() {
                    p.data[(c * h + y) * pw + x] = f32::from(v) / 255.0 - 0.5;
                }
            }
        }
        Ok(p)
    }

    fn require(&self, medium: Medium) -> Result<()> {
        if self.config.medium != medium {
            return Err(CodecError::Unsupported(format!(
                "this WaLLoC model codes {:?}, not {medium:?}",
                self.config.medium
            )));
        }
        Ok(())
    }

    /// The bounded latent of an image.
    ///
    /// # Errors
    /// As [`WallocCodec::analysis`].
    pub fn image_latent(&self, img: &RgbImage) -> Result<Planar> {
        self.require(Medium::Image)?;
        self.analysis(&self.image_planar(img)?)
    }

    fn image_info(img: &RgbImage) -> MediaInfo {
        MediaInfo::Image {
            width: img.width(),
            height: img.height(),
            channels: 3,
            bit_depth: 8,
        }
    }

    /// Encodes an image at quality `q` (1..=8) or, with `target_bpp`, at the highest quality whose
    /// file is at most that many bits per pixel.
    ///
    /// # Errors
    /// [`CodecError`] for bad parameters, or a target below the lowest reachable rate (named).
    pub fn encode_image(&self, img: &RgbImage, quality: Quality) -> Result<Coded> {
        let latent = self.image_latent(img)?;
        let info = Self::image_info(img);
        let pixels = f64::from(img.width()) * f64::from(img.height());
        match quality {
            Quality::Level(q) => self.encode_latent(&latent, q, info),
            Quality::TargetBpp(bpp) => {
                self.encode_to_size(&latent, &info, bpp * pixels, |b| b / pixels, "bpp")
            }
            Quality::TargetKbps(_) => Err(CodecError::InvalidParameter(
                "kbps targets are for audio; use -q LEVEL or -q Nbpp for images".into(),
            )),
        }
    }

    /// Reads the symbols of a file and returns the dequantized latent `ŷ`, its symbols and the
    /// length of the chunked axis.
    ///
    /// # Errors
    /// [`CodecError`] for a damaged or foreign file, or sizes beyond `limits`.
    pub fn decode_latent(&self, file: &Container, limits: &Limits) -> Result<(Planar, Vec<i32>)> {
        let info = self.info();
        if file.codec != info.id {
            return Err(CodecError::Unsupported(format!(
                "not a {} file (codec {})",
                info.name, file.codec
            )));
        }
        file.expect_model(self.model_id)?;
        let q = file.params.quality;
        Self::check_quality(q)?;
        let s = self.config.stride() as u64;
        let (lh, lw) = match (&file.media, self.config.medium) {
            (
                MediaInfo::Image {
                    width,
                    height,
                    channels: 3,
                    bit_depth: 8,
                },
                Medium::Image,
            ) => {
                let (w, h) = (u64::from(*width), u64::from(*height));
                if w == 0 || h == 0 {
                    return Err(CodecError::Unsupported("empty image".into()));
                }
                Limits::check("pixels", w * h, limits.max_pixels)?;
                (h.div_ceil(s), w.div_ceil(s))
            }
            (
                MediaInfo::Audio {
                    channels,
                    sample_count,
                    sample_rate,
                    ..
                },
                Medium::Audio,
            ) => {
                if !(1..=2).contains(channels) || *sample_count == 0 || *sample_rate == 0 {
                    return Err(CodecError::Unsupported(format!(
                        "walloc-audio files hold 1 or 2 channels of at least one sample, this one says {:?}",
                        file.media
                    )));
                }
                Limits::check("samples", *sample_count, limits.max_samples)?;
                (1, sample_count.div_ceil(s))
            }
            (other, _) => {
                return Err(CodecError::Unsupported(format!(
                    "{} files hold {}, this one says {other:?}",
                    info.name, info.media
                )));
            }
        };
        let plane = lh * lw;
        let total = plane.saturating_mul(self.config.latent as u64);
        Limits::check("latent symbols", total, limits.max_symbols)?;
        let step = step_of(q);
        let symbols = self
            .tables(step)?
            .decode(&file.stream(STREAM_LATENT)?.data, plane as usize)?;
        let k = (BOUND / step).ceil() as i32;
        if symbols.iter().any(|v| v.abs() > k) {
            return Err(BitstreamError::Corrupt {
                what: "latent symbol beyond the bound".into(),
                offset: 0,
            }
            .into());
        }
        let data = symbols
            .iter()
            .map(|&v| (f64::from(v) * step) as f32)
            .collect();
        Ok((
            Planar {
                c: self.config.latent,
                h: lh as usize,
                w: lw as usize,
                data,
            },
            symbols,
        ))
    }

    /// Decodes an image file.
    ///
    /// # Errors
    /// As [`WallocCodec::decode_latent`].
    pub fn decode_image(&self, file: &Container, limits: &Limits) -> Result<RgbImage> {
        self.require(Medium::Image)?;
        let (latent, _) = self.decode_latent(file, limits)?;
        let MediaInfo::Image { width, height, .. } = file.media else {
            return Err(CodecError::Unsupported("not an image file".into()));
        };
        let x = self.synthesis(&latent, height as usize)?;
        let mut img = RgbImage::new(width, height);
        for (px, py, p) in img.enumerate_pixels_mut() {
            for c in 0..3 {
                let v = x.data[(c * x.h + py as usize) * x.w + px as usize] + 0.5;
                p.0[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Ok(img)
    }

    /// The audio as planar `[2][1][frames]` (mono duplicated).
    fn audio_planar(audio: &Audio) -> Result<Planar> {
        let ch = usize::from(audio.channels);
        if !(1..=2).contains(&ch) {
            return Err(CodecError::Unsupported(format!(
                "walloc-audio codes mono or stereo audio, this file has {ch} channels"
            )));
        }
        let frames = audio.frames();
        if frames == 0 {
            return Err(CodecError::Unsupported("audio without samples".into()));
        }
        let mut p = Planar::zeros(2, 1, frames)?;
        for (i, frame) in audio.samples.chunks_exact(ch).enumerate() {
            p.data[i] = frame[0];
            p.data[frames + i] = frame[ch - 1];
        }
        Ok(p)
    }

    /// The bounded latent of audio.
    ///
    /// # Errors
    /// As [`WallocCodec::analysis`], or unsupported channel counts.
    pub fn audio_latent(&self, audio: &Audio) -> Result<Planar> {
        self.require(Medium::Audio)?;
        self.analysis(&Self::audio_planar(audio)?)
    }

    /// Encodes audio at quality `q` or, with `target_kbps`, at the highest quality whose file is at
    /// most that many kilobits per second.
    ///
    /// # Errors
    /// [`CodecError`] for bad parameters, or a target below the lowest reachable rate (named).
    pub fn encode_audio(&self, audio: &Audio, quality: Quality) -> Result<Coded> {
        let latent = self.audio_latent(audio)?;
        let info = audio.media_info();
        let kilo_seconds = audio.seconds() * 1000.0;
        match quality {
            Quality::Level(q) => self.encode_latent(&latent, q, info),
            Quality::TargetKbps(kbps) => self.encode_to_size(
                &latent,
                &info,
                kbps * kilo_seconds,
                |b| b / kilo_seconds,
                "kbps",
            ),
            Quality::TargetBpp(_) => Err(CodecError::InvalidParameter(
                "bpp targets are for images; use -q LEVEL or -q Nkbps for audio".into(),
            )),
        }
    }

    /// Decodes an audio file to the input's rate, channels, sample format and length.
    ///
    /// # Errors
    /// As [`WallocCodec::decode_latent`].
    pub fn decode_audio(&self, file: &Container, limits: &Limits) -> Result<Audio> {
        self.require(Medium::Audio)?;
        let (latent, _) = self.decode_latent(file, limits)?;
        let MediaInfo::Audio {
            sample_rate,
            channels,
            bit_depth,
            float,
            sample_count,
        } = file.media
        else {
            return Err(CodecError::Unsupported("not an audio file".into()));
        };
        let frames = sample_count as usize;
        let x = self.synthesis(&latent, frames)?;
        let format = if float {
            PcmFormat::Float32
        } else if matches!(bit_depth, 8 | 16 | 24 | 32) {
            PcmFormat::Int {
                bits: u16::from(bit_depth),
            }
        } else {
            return Err(CodecError::Unsupported(format!(
                "{bit_depth}-bit integer audio"
            )));
        };
        let mut samples = Vec::new();
        samples
            .try_reserve_exact(frames * usize::from(channels))
            .map_err(|_| CodecError::Unsupported("cannot allocate the samples".into()))?;
        let (l, r) = x.data.split_at(frames);
        for i in 0..frames {
            if channels == 1 {
                samples.push(0.5 * (l[i] + r[i]));
            } else {
                samples.push(l[i]);
                samples.push(r[i]);
            }
        }
        Ok(Audio {
            sample_rate,
            channels,
            format,
            samples,
        })
    }
}

/// WaLLoC behind the [`Codec`] trait; loads its weights on first use.
pub struct WallocEntry {
    medium: Medium,
    backend: crate::Backend,
    weights: Option<Vec<u8>>,
    codec: OnceLock<std::result::Result<WallocCodec, String>>,
}

impl std::fmt::Debug for WallocEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WallocEntry")
            .field("medium", &self.medium)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl WallocEntry {
    /// WaLLoC for `medium` on `backend` with the shipped weights, or with `weights`.
    pub fn new(medium: Medium, backend: crate::Backend, weights: Option<Vec<u8>>) -> Self {
        Self {
            medium,
            backend,
            weights,
            codec: OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&WallocCodec> {
        self.codec
            .get_or_init(|| {
                let device = self.backend.device();
                match &self.weights {
                    Some(bytes) => WallocCodec::from_weights(bytes, self.medium, device),
                    None => WallocCodec::shipped(self.medium, device),
                }
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| CodecError::Weights(e.clone()))
    }
}

impl Codec for WallocEntry {
    fn info(&self) -> &CodecInfo {
        match self.medium {
            Medium::Image => &IMAGE_INFO,
            Medium::Audio => &AUDIO_INFO,
        }
    }

    fn encode(&self, media: &Media, options: &EncodeOptions) -> Result<Container> {
        let coded = match (media, self.medium) {
            (Media::Image(img), Medium::Image) => self.get()?.encode_image(img, options.quality)?,
            (Media::Audio(audio), Medium::Audio) => {
                self.get()?.encode_audio(audio, options.quality)?
            }
            (other, _) => {
                return Err(CodecError::Unsupported(format!(
                    "{} codes {}, not {}",
                    self.info().name,
                    self.info().media,
                    other.kind_name()
                )));
            }
        };
        Ok(coded.container)
    }

    fn decode(&self, file: &Container, limits: &Limits) -> Result<Media> {
        let codec = self.get()?;
        Ok(match self.medium {
            Medium::Image => Media::Image(codec.decode_image(file, limits)?),
            Medium::Audio => Media::Audio(codec.decode_audio(file, limits)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_maps_stay_inside() {
        for n in [1usize, 2, 5] {
            for i in -20isize..20 {
                assert!(Extend::Mirror.index(i, n) < n);
                assert!(Extend::Edge.index(i, n) < n);
            }
        }
        assert_eq!(Extend::Mirror.index(-2, 5), 2);
        assert_eq!(Extend::Mirror.index(6, 5), 2);
        assert_eq!(Extend::Edge.index(7, 5), 4);
    }

    #[test]
    fn steps_span_the_ladder() {
        assert!((step_of(1.0) - model::STEP_MAX).abs() < 1e-12);
        assert!((step_of(8.0) - model::STEP_MIN).abs() < 1e-12);
        assert!(step_of(4.0) > step_of(5.0));
    }
}
