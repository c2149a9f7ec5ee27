//! Image codec 1: the mean-scale hyperprior (Ballé et al. 2018, Minnen et al. 2018) with gain
//! vectors for variable rate.
//!
//! Coding pipeline (see [`model`] for shapes and [`hs_cpu`] for why `h_s` runs outside Burn):
//!
//! 1. `y = g_a(x)` on the chosen backend, in overlapping tiles for large images;
//! 2. `y ← y·g(q)`, the gain vector of quality `q` (log-linear between ladder points);
//! 3. `z = h_a(y)`; `ẑ = ⌊z⌉`, coded with the factorized tables of the entropy bottleneck;
//! 4. `(σ, μ) = h_s(ẑ)` in deterministic CPU arithmetic; scale index = CompressAI's rule on σ,
//!    then the weights' integer scale map if they were calibrated (see [`calibrate`]);
//! 5. `ŷ − μ = ⌊y − μ⌉`, coded with the Gaussian tables of those indices (with a context table,
//!    each index also depends on the magnitudes of the symbols coded before it; with a latent
//!    predictor, the symbol is `⌊y − μ − p/16⌉` for a fixed-point prediction `p` (1/16 units) from the residuals
//!    coded before it, see [`predict`]);
//!    (`⌊·⌉` with a small dead zone, [`DEAD_ZONE`]);
//! 6. the decoder repeats 3–5 from the file and runs `x̂ = g_s(ŷ·g⁻¹(q))`, tiled;
//! 7. the encoder fits a restoration filter to the decoded picture ([`crate::wiener`]) and sends it
//!    when it pays; the decoder applies it last, in integer arithmetic (in files with
//!    [`STREAM_FILTER_FINE`], on the picture kept at 1/16 of a level, rounded to 8 bits once at
//!    the end).
//!
//! At low rates the encoder may code the picture at 3/4 or 1/2 of its size ([`SCALES`]; one byte
//! in the file), which the decoder enlarges back: it does when the smaller picture decodes with
//! less error at no more bits than the full one.

pub mod calibrate;
pub mod hs_cpu;
pub mod model;
pub mod predict;
pub mod weights;

use std::sync::{Arc, OnceLock};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use image::imageops::FilterType;
use ncodec_bitstream::entropy::ans::cost_bits;
use ncodec_bitstream::entropy::{FactorizedModel, GaussianConditional};
use ncodec_bitstream::{
    BitstreamError, CodecId, CodecParams, Container, Limits, MediaInfo, ModelId, Stream, StreamKind,
};

use crate::codec::{Codec, CodecInfo, EncodeOptions, Media, Quality};
use crate::error::{CodecError, Result};
use crate::wiener;
use calibrate::{Calibration, ContextCalibration, ScaleMap, ZCalibration};
use hs_cpu::HyperSynthesisCpu;
pub use model::{ALIGN, Hyperprior, HyperpriorConfig, LAMBDAS};
use predict::{PredictionStats, Predictor};

const INFO: CodecInfo = CodecInfo {
    id: CodecId::HYPERPRIOR,
    name: "hyperprior",
    media: "image",
    description: "mean-scale hyperprior (Minnen 2018) with gain-vector variable rate; -q 1..8 or -q 0.25bpp",
};

/// Lowest quality: levels in `[QUALITY_MIN, 1)` keep the gains of level 1 and multiply its
/// quantization step by `1/q`, reaching rates below the trained ladder (with lower quality).
pub const QUALITY_MIN: f32 = 0.1;

/// Stream label of the hyper-latent `ẑ`.
pub const STREAM_Z: u8 = 0;
/// Stream label of the latent `ŷ`.
pub const STREAM_Y: u8 = 1;
/// Stream label of the optional restoration filter ([`crate::wiener`], raw bytes,
/// [`wiener::Filter::to_bytes`]). Files since the compact coding carry [`STREAM_FILTER_COMPACT`]
/// instead; both decode.
pub const STREAM_FILTER: u8 = 2;
/// Stream label of the compactly coded restoration filter (raw bytes,
/// [`wiener::Filter::to_compact_bytes`]). A file holds at most one filter stream of either label.
pub const STREAM_FILTER_COMPACT: u8 = 3;
/// Stream label of the optional second, clipped restoration filter, applied after the first
/// (raw bytes, [`wiener::Filter::to_clipped_bytes`]; only with a first filter, at most one).
pub const STREAM_FILTER_CLIPPED: u8 = 4;
/// Stream label of the **fine** restoration filter: the compact coding of label 3, applied to the
/// decoded picture kept at 1/16 of an 8-bit level ([`wiener::FINE_SHIFT`]; the synthesis and the
/// enlargement are not rounded to 8 bits before it). A file holds at most one filter stream of
/// labels 2, 3 and 5.
pub const STREAM_FILTER_FINE: u8 = 5;
/// Stream label of the fine path's clipped second stage (label 4's payload, applied at 1/16 of a
/// level to the output of the label-5 filter; only with it, at most one).
pub const STREAM_FILTER_FINE_CLIPPED: u8 = 6;
/// Pictures of more pixels than this get the 8-bit filter path (labels 3 and 4): the fine one
/// holds two 16-bit copies of the picture where the 8-bit one holds two 8-bit copies, and the
/// encoder decodes the file once more to fit it (the 8K photo of the memory budget stays on the
/// 8-bit path).
pub const FINE_MAX_PIXELS: u64 = 1 << 24;

/// Coded resolutions the encoder chooses from, in eighths of each side (8 = the full image).
/// Below about 0.6 bpp the 16×16 block transform spends its bits better on a smaller picture
/// that the decoder enlarges (Lanczos-3) than on fine detail it can barely afford: on held-out
/// training photos, 3/4 gained 0.2–0.9 dB between 0.1 and 0.5 bpp and 1/2 up to 1.5 dB below
/// 0.1 bpp.
pub const SCALES: [u8; 3] = [8, 6, 4];

/// Latent tile size (in latent pixels, 16 image pixels each) for images above [`TILE_ABOVE`].
pub const TILE: usize = 32;
/// Latent pixels of context added around each tile (64 image pixels).
pub const TILE_MARGIN: usize = 4;
/// Images with more (padded) pixels than this go through `g_a` and `g_s` in tiles.
pub const TILE_ABOVE: usize = 1 << 20;
/// Bottleneck tables cover at most this many integers on each side of zero.
const Z_RANGE: i64 = 512;
/// Probability mass left to the escape symbol on each side of a bottleneck table.
const Z_TAIL: f64 = 1e-7;
/// Largest magnitude of a coded symbol (beyond it the weights are broken).
const SYMBOL_CLAMP: f32 = (1 << 20) as f32;

/// Quality buckets of the calibrated `ẑ` tables ([`calibrate::ScaleMap::z_tables`]).
pub const Z_BUCKETS: usize = 10;
/// Bucket `b` holds the qualities below `Z_BUCKET_EDGES[b]` and at or above the edge before it:
/// about the geometric midpoints between 0.25, 0.5, 1, 2, …, 8 (the qualities `ncodec calibrate`
/// codes at by default), so every calibrated quality sits inside its own bucket. Given as f32 bit
/// patterns, as in `docs/BITSTREAM.md` §7: the format is these exact values.
const Z_BUCKET_EDGES: [f32; Z_BUCKETS - 1] = [
    f32::from_bits(0x3eb5_04f4), // 0.3535534
    f32::from_bits(0x3f35_04f3), // 0.70710677
    f32::from_bits(0x3fb5_04f3), // 1.4142135
    f32::from_bits(0x401c_c471), // 2.4494898
    f32::from_bits(0x405d_b3d7), // 3.4641016
    f32::from_bits(0x408f_1bbd), // 4.472136
    f32::from_bits(0x40af_456f), // 5.477226
    f32::from_bits(0x40cf_623a), // 6.4807405
    f32::from_bits(0x40ef_7751), // 7.483315
];

/// The `ẑ` table bucket of quality `q` (comparisons only, so the same on every machine).
pub fn z_bucket(q: f32) -> usize {
    Z_BUCKET_EDGES.iter().filter(|&&e| q >= e).count()
}

/// A latent tensor on the host, `[C][H][W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Latent {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c·h·w` values.
    pub data: Vec<f32>,
}

/// Everything an encode produced, for tests and rate control.
#[derive(Debug, Clone)]
pub struct Coded {
    /// The file.
    pub container: Container,
    /// The `ẑ` symbols.
    pub z: Vec<i32>,
    /// The `y` symbols (`⌊y − μ⌉`, or `⌊y − μ − p/16⌉` with a latent predictor).
    pub y: Vec<i32>,
}

/// The symbols a decoder read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbols {
    /// The `ẑ` symbols.
    pub z: Vec<i32>,
    /// The `y` symbols (`⌊y − μ⌉`, or `⌊y − μ − p/16⌉` with a latent predictor).
    pub y: Vec<i32>,
}

/// The hyperprior codec with loaded weights.
pub struct HyperpriorCodec {
    device: Device,
    config: HyperpriorConfig,
    model: Hyperprior,
    hs: HyperSynthesisCpu,
    z_model: FactorizedModel,
    /// The bottleneck's CDF (builds the calibrated `ẑ` tables).
    z_cdf: BottleneckCdf,
    /// Per quality bucket, the calibrated `ẑ` tables (empty: `z_model` at every quality).
    z_models: Vec<FactorizedModel>,
    y_model: GaussianConditional,
    log_gain: Vec<f32>,
    log_inv_gain: Vec<f32>,
    model_id: ModelId,
    tile_above: usize,
    /// The calibration of the scale indices (see [`calibrate`]); `None` codes `h_s`'s indices.
    scale_map: Option<ScaleMap>,
    /// Per channel, the squared norm of its basis image in `g_s`'s linear path (0–1 pixel units;
    /// empty without the shortcut): what a unit error of `ŷ` costs in squared pixel error, for the
    /// encoder's rate-distortion rounding ([`RD_SLOPE`]).
    synth_norm2: Vec<f64>,
    /// The basis images themselves, `[M][3][16][16]` (empty without the shortcut), for the
    /// encoder's closed-loop refinement ([`REFINE_ROUNDS`]).
    synth_basis: Vec<f32>,
    /// [`RD_SLOPE`] unless changed with [`HyperpriorCodec::with_rd_slope`].
    rd_slope: f64,
    /// [`REFINE_ROUNDS`] unless changed with [`HyperpriorCodec::with_refine_rounds`].
    refine_rounds: usize,
    /// [`REFINE_STEP`] unless changed with [`HyperpriorCodec::with_refine_step`].
    refine_step: f64,
    /// Whether the encoder sends the fine restoration filter (labels 5 and 6) where it may.
    fine_filter: bool,
    /// The weights file, kept to load the network a second time on a gradient device for the
    /// refinement's vector–Jacobian products through all of `g_s` (`None`: a codec around an
    /// in-memory model, refined through the linear path only).
    grad_source: Option<Arc<[u8]>>,
    /// That network, loaded on first use (gradients off for its parameters), with its device.
    grad_model: OnceLock<Option<(Hyperprior, Device)>>,
}

impl std::fmt::Debug for HyperpriorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperpriorCodec")
            .field("config", &self.config)
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// The shipped weights (trained by `ncodec train`; see `assets/README.md`).
pub static SHIPPED_WEIGHTS: &[u8] = include_bytes!("../../../assets/hyperprior/weights.ncw");

pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| CodecError::Backend {
            backend: "burn".into(),
            message: format!("cannot read a tensor back: {e:?}"),
        })
}

impl HyperpriorCodec {
    /// The codec with the shipped weights on `device`.
    ///
    /// # Errors
    /// As [`HyperpriorCodec::from_weights`].
    pub fn shipped(device: Device) -> Result<Self> {
        Self::from_weights(SHIPPED_WEIGHTS, device)
    }

    /// The codec with the weights file `bytes` (see [`weights`]) on `device`.
    ///
    /// # Errors
    /// [`CodecError::Weights`] for a damaged weights file.
    pub fn from_weights(bytes: &[u8], device: Device) -> Result<Self> {
        let (config, model) = weights::load(bytes, &device)?;
        let map = weights::scale_map_of(bytes)?;
        let mut codec = Self::from_model(model, config, weights::model_id(bytes), device)?;
        codec.grad_source = Some(Arc::from(bytes));
        codec.with_scale_map(map)
    }

    /// The codec around an in-memory model (tests, training validation); `model_id` identifies the
    /// weights in files.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the weights cannot be read back from the device.
    pub fn from_model(
        model: Hyperprior,
        config: HyperpriorConfig,
        model_id: ModelId,
        device: Device,
    ) -> Result<Self> {
        let model = model.valid();
        let hs = HyperSynthesisCpu::from_model(&model).map_err(|message| CodecError::Backend {
            backend: "burn".into(),
            message,
        })?;
        let z_cdf = BottleneckCdf::new(&model.bottleneck)?;
        let z_model = bottleneck_tables(&z_cdf, &vec![0; z_cdf.channels()])?;
        let log_gain = values(model.log_gain.val().mul_scalar(model::GAIN_SCALE))?;
        let log_inv_gain = values(model.log_inv_gain.val().mul_scalar(model::GAIN_SCALE))?;
        // ConvTranspose2d weights are [channels in, channels out, k, k]: one basis image of
        // 3·16·16 values per latent channel.
        let synth_basis = match &model.gs_short {
            Some(conv) => values(conv.weight.val())?,
            None => Vec::new(),
        };
        let synth_norm2 = synth_basis
            .chunks_exact(BASIS)
            .map(|b| b.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
            .collect();
        Ok(Self {
            config,
            model,
            hs,
            z_model,
            z_cdf,
            z_models: Vec::new(),
            y_model: GaussianConditional::default(),
            log_gain,
            log_inv_gain,
            model_id,
            tile_above: TILE_ABOVE,
            scale_map: None,
            synth_norm2,
            synth_basis,
            rd_slope: RD_SLOPE,
            refine_rounds: REFINE_ROUNDS,
            refine_step: REFINE_STEP,
            fine_filter: true,
            grad_source: None,
            grad_model: OnceLock::new(),
            device,
        })
    }

    /// Codes with the scale map `map` (`None`: `h_s`'s own indices). Private: a map must come
    /// with its weights file (see [`weights::with_scale_map`]), whose model id covers it, so that
    /// files made with one map never pass the model check of another.
    fn with_scale_map(mut self, map: Option<ScaleMap>) -> Result<Self> {
        if let Some(m) = &map {
            m.validate(self.config.m, self.y_model.scales().len())
                .map_err(CodecError::Weights)?;
        }
        self.scale_map = map.filter(|m| !m.is_identity());
        self.z_models = Vec::new();
        if let Some(z_tables) = self.scale_map.as_ref().map(|m| &m.z_tables)
            && !z_tables.is_empty()
        {
            let n = self.z_cdf.channels();
            if z_tables.len() != Z_BUCKETS * n {
                return Err(CodecError::Weights(format!(
                    "the scale map has {} z tables, the network {} channels × {Z_BUCKETS} buckets",
                    z_tables.len(),
                    n
                )));
            }
            self.z_models = z_tables
                .chunks(n)
                .map(z_tables_model)
                .collect::<Result<_>>()?;
        }
        let family = self
            .scale_map
            .as_ref()
            .map(|m| m.family)
            .unwrap_or_default();
        if ncodec_bitstream::entropy::ScaleFamily::from(family) != self.y_model.family() {
            self.y_model = family.model();
        }
        Ok(self)
    }

    /// The inverse gain vector `g⁻¹(q)` (one quantization step in `y` units per channel).
    ///
    /// # Errors
    /// [`CodecError::InvalidParameter`] if `q` is out of range.
    pub fn inverse_gain(&self, q: f32) -> Result<Vec<f32>> {
        self.check_quality(q)?;
        Ok(self.gain(&self.log_inv_gain, q, true))
    }

    /// The `ẑ` tables of quality `q`.
    fn z_model_at(&self, q: f32) -> &FactorizedModel {
        self.z_models.get(z_bucket(q)).unwrap_or(&self.z_model)
    }

    /// The `ẑ` tables with every channel at scale `2^(k/4)` (see
    /// [`calibrate::ZCalibration`]), for `k` in `-Z_SCALE_MAX..=Z_SCALE_MAX` in order.
    ///
    /// # Errors
    /// [`CodecError::Bitstream`] if a table cannot be built.
    pub fn z_candidates(&self) -> Result<Vec<FactorizedModel>> {
        let n = self.z_cdf.channels();
        (-calibrate::Z_SCALE_MAX..=calibrate::Z_SCALE_MAX)
            .map(|k| bottleneck_tables(&self.z_cdf, &vec![k; n]))
            .collect()
    }

    /// Adds the `ẑ` symbols of the latent `y` (before gain) coded at quality `q` to `stats`.
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_z_calibration(&self, y: &Latent, q: f32, stats: &mut ZCalibration) -> Result<()> {
        let (z, zh, zw, _) = self.hyper_latent(y, q)?;
        stats.add(z_bucket(q), &z, zh * zw);
        Ok(())
    }

    /// The latent predictor of the weights' calibration, if any.
    fn predictor(&self) -> Option<&Predictor> {
        self.scale_map.as_ref().and_then(|m| m.predict.as_ref())
    }

    /// The scale table `y` is coded with.
    pub fn y_model(&self) -> &GaussianConditional {
        &self.y_model
    }

    /// Rounds `y` for `bits + slope·λ(q)·255²·SSE/3` instead of [`RD_SLOPE`] (0: plain
    /// [`DEAD_ZONE`] rounding). Only the encoder changes; every decoder reads the files.
    pub fn with_rd_slope(mut self, slope: f64) -> Self {
        self.rd_slope = if slope.is_finite() {
            slope.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// Sends the restoration filter on the 8-bit picture (labels 3 and 4, as encoders before the
    /// fine path did) instead of the fine one (labels 5 and 6) when `fine` is false.
    pub fn with_fine_filter(mut self, fine: bool) -> Self {
        self.fine_filter = fine;
        self
    }

    /// Refines the rounded latent in `rounds` closed-loop rounds instead of [`REFINE_ROUNDS`]
    /// (0: the open-loop rounding of [`Self::with_rd_slope`] alone). Only the encoder changes.
    pub fn with_refine_rounds(mut self, rounds: usize) -> Self {
        self.refine_rounds = rounds;
        self
    }

    /// Moves the latent by `step` times each refinement round's least-squares correction
    /// instead of [`REFINE_STEP`] (a finite positive number; anything else keeps the default).
    /// Only the encoder changes.
    pub fn with_refine_step(mut self, step: f64) -> Self {
        if step.is_finite() && step > 0.0 {
            self.refine_step = step;
        }
        self
    }

    /// Tiles `g_a` and `g_s` for images of more than `pixels` padded pixels (default
    /// [`TILE_ABOVE`]); tiling bounds memory and does not change the file beyond float rounding.
    pub fn with_tile_above(mut self, pixels: usize) -> Self {
        self.tile_above = pixels;
        self
    }

    /// The network size.
    pub fn config(&self) -> HyperpriorConfig {
        self.config
    }

    /// The id written into files.
    pub fn model_id(&self) -> ModelId {
        self.model_id
    }

    /// The range of `-q` levels.
    pub fn quality_range(&self) -> (f32, f32) {
        (QUALITY_MIN, self.config.levels as f32)
    }

    /// The gain vector (or with `inverse` the inverse gain) of quality `q`: log-linear
    /// interpolation between ladder points, and a step `1/q` times coarser below level 1.
    fn gain(&self, table: &[f32], q: f32, inverse: bool) -> Vec<f32> {
        let m = self.config.m;
        // Below level 1 the quantization step of level 1 grows as 1/q.
        let coarser = if q < 1.0 {
            q.max(QUALITY_MIN).ln()
        } else {
            0.0
        };
        let coarser = if inverse { -coarser } else { coarser };
        let last = self.config.levels - 1;
        let pos = (q - 1.0).clamp(0.0, last as f32);
        let l = (pos.floor() as usize).min(last.saturating_sub(1));
        let t = pos - l as f32;
        let a = &table[l * m..(l + 1) * m];
        let b = &table[(l + 1).min(last) * m..((l + 1).min(last) + 1) * m];
        a.iter()
            .zip(b)
            .map(|(&a, &b)| ((1.0 - t) * a + t * b + coarser).exp())
            .collect()
    }

    fn check_quality(&self, q: f32) -> Result<()> {
        let (lo, hi) = self.quality_range();
        if !(lo..=hi).contains(&q) {
            return Err(CodecError::InvalidParameter(format!(
                "quality {q} is outside the hyperprior's range {lo}..={hi}"
            )));
        }
        Ok(())
    }

    fn upload(&self, data: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(data, shape), &self.device)
    }

    /// `y = g_a(x)` for an image, tiled above [`TILE_ABOVE`] pixels. The image is padded to a
    /// multiple of [`ALIGN`] by repeating its last row and column.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn analysis(&self, img: &RgbImage) -> Result<Latent> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (ph, pw) = (h.div_ceil(ALIGN) * ALIGN, w.div_ceil(ALIGN) * ALIGN);
        let (lh, lw) = (ph / 16, pw / 16);
        let m = self.config.m;
        let pixels = |y0: usize, x0: usize, th: usize, tw: usize| -> Vec<f32> {
            let mut v = vec![0.0f32; 3 * th * tw];
            for yy in 0..th {
                let sy = (y0 + yy).min(h - 1) as u32;
                for xx in 0..tw {
                    let p = img.get_pixel((x0 + xx).min(w - 1) as u32, sy).0;
                    for c in 0..3 {
                        v[(c * th + yy) * tw + xx] = f32::from(p[c]) / 255.0;
                    }
                }
            }
            v
        };
        if ph * pw <= self.tile_above {
            let x = self.upload(pixels(0, 0, ph, pw), [1, 3, ph, pw]);
            let data = values(self.model.analysis(x))?;
            return Ok(Latent {
                c: m,
                h: lh,
                w: lw,
                data,
            });
        }
        let mut out = vec![0.0f32; m * lh * lw];
        for (ty0, ty1, ry0, ry1) in tiles(lh) {
            for (tx0, tx1, rx0, rx1) in tiles(lw) {
                let (rh, rw) = (ry1 - ry0, rx1 - rx0);
                let x = self.upload(
                    pixels(ry0 * 16, rx0 * 16, rh * 16, rw * 16),
                    [1, 3, rh * 16, rw * 16],
                );
                let t = values(self.model.analysis(x))?;
                for c in 0..m {
                    for yy in ty0..ty1 {
                        let src = (c * rh + yy - ry0) * rw + (tx0 - rx0);
                        let dst = (c * lh + yy) * lw + tx0;
                        out[dst..dst + (tx1 - tx0)].copy_from_slice(&t[src..src + (tx1 - tx0)]);
                    }
                }
            }
        }
        Ok(Latent {
            c: m,
            h: lh,
            w: lw,
            data: out,
        })
    }

    /// `x̂ = g_s(ŷ)` cropped to `width × height`, tiled like [`HyperpriorCodec::analysis`].
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn synthesis(&self, y: &Latent, width: usize, height: usize) -> Result<RgbImage> {
        let data = self.synthesis_samples(y, width, height, 255.0, |v| v as u8)?;
        RgbImage::from_raw(width as u32, height as u32, data)
            .ok_or_else(|| CodecError::InvalidParameter("picture of another size".into()))
    }

    /// [`Self::synthesis`] in fixed point with `shift` fraction bits: `round(clamp(g_s(ŷ), 0, 1)·255·2^shift)`.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn synthesis_fixed(
        &self,
        y: &Latent,
        width: usize,
        height: usize,
        shift: u32,
    ) -> Result<wiener::Fixed> {
        if shift > wiener::MAX_SHIFT_BITS {
            return Err(CodecError::InvalidParameter(format!(
                "{shift} fraction bits (at most {})",
                wiener::MAX_SHIFT_BITS
            )));
        }
        let full = (255u32 << shift) as f32;
        let data = self.synthesis_samples(y, width, height, full, |v| v as u16)?;
        wiener::Fixed::new(width, height, shift, data)
            .ok_or_else(|| CodecError::InvalidParameter("picture of another size".into()))
    }

    /// The samples of [`Self::synthesis`], interleaved RGB rows: `sample(round(clamp(x̂, 0, 1)·full))`.
    fn synthesis_samples<S: Copy + Default>(
        &self,
        y: &Latent,
        width: usize,
        height: usize,
        full: f32,
        sample: impl Fn(f32) -> S,
    ) -> Result<Vec<S>> {
        let mut img = vec![S::default(); 3 * width * height];
        let mut put =
            |t: &[f32], ry0: usize, rx0: usize, rh: usize, rw: usize, inner: [usize; 4]| {
                let [y0, y1, x0, x1] = inner;
                let (th, tw) = (rh * 16, rw * 16);
                for py in (y0 * 16)..(y1 * 16).min(height) {
                    for px in (x0 * 16)..(x1 * 16).min(width) {
                        let (yy, xx) = (py - ry0 * 16, px - rx0 * 16);
                        let at = (py * width + px) * 3;
                        for c in 0..3 {
                            let s = t[(c * th + yy) * tw + xx];
                            img[at + c] = sample((s.clamp(0.0, 1.0) * full).round());
                        }
                    }
                }
            };
        let region = |ry0: usize, ry1: usize, rx0: usize, rx1: usize| -> Vec<f32> {
            crop_planes(&y.data, [y.c, y.h, y.w], (ry0, ry1), (rx0, rx1))
        };
        if y.h * y.w * 256 <= self.tile_above {
            let x = self.upload(y.data.clone(), [1, y.c, y.h, y.w]);
            let t = values(self.model.synthesis(x))?;
            put(&t, 0, 0, y.h, y.w, [0, y.h, 0, y.w]);
            return Ok(img);
        }
        for (ty0, ty1, ry0, ry1) in tiles(y.h) {
            for (tx0, tx1, rx0, rx1) in tiles(y.w) {
                let (rh, rw) = (ry1 - ry0, rx1 - rx0);
                let x = self.upload(region(ry0, ry1, rx0, rx1), [1, y.c, rh, rw]);
                let t = values(self.model.synthesis(x))?;
                put(&t, ry0, rx0, rh, rw, [ty0, ty1, tx0, tx1]);
            }
        }
        Ok(img)
    }

    /// The network on a gradient device (loaded on first use), for [`Self::synthesis_vjp`].
    fn grad_network(&self) -> Option<&(Hyperprior, Device)> {
        self.grad_model
            .get_or_init(|| {
                let bytes = self.grad_source.as_ref()?;
                let device = self.device.clone().autodiff();
                // The file loaded once already: this fails only for lack of memory, and then
                // the refinement falls back to the linear path.
                let model = weights::load(bytes, &device).ok()?.1.no_grad();
                Some((model, device))
            })
            .as_ref()
    }

    /// `Jᵀe`: the pixel error `err` (`[3][16·h][16·w]`, 0–1 units) taken back through all of
    /// `g_s` to the latent `y` (`[M][h][w]`), in the tiles of [`Self::synthesis`] above
    /// [`TILE_ABOVE`] pixels; `None` without the network on a gradient device.
    fn synthesis_vjp(&self, y: &Latent, err: &[f32]) -> Result<Option<Vec<f32>>> {
        let Some((model, device)) = self.grad_network() else {
            return Ok(None);
        };
        let (ph, pw) = (y.h * 16, y.w * 16);
        let region = |ry0: usize, ry1: usize, rx0: usize, rx1: usize| -> Result<Vec<f32>> {
            let (rh, rw) = (ry1 - ry0, rx1 - rx0);
            let lat = crop_planes(&y.data, [y.c, y.h, y.w], (ry0, ry1), (rx0, rx1));
            let (eh, ew) = (rh * 16, rw * 16);
            let e = crop_planes(err, [3, ph, pw], (ry0 * 16, ry1 * 16), (rx0 * 16, rx1 * 16));
            let x = Tensor::<4>::from_data(TensorData::new(lat, [1, y.c, rh, rw]), device)
                .require_grad();
            let e = Tensor::<4>::from_data(TensorData::new(e, [1, 3, eh, ew]), device);
            let grads = (model.synthesis(x.clone()) * e).sum().backward();
            let g = x.grad(&grads).ok_or_else(|| CodecError::Backend {
                backend: "burn".into(),
                message: "no gradient reached the latent".into(),
            })?;
            values(g)
        };
        if y.h * y.w * 256 <= self.tile_above {
            return region(0, y.h, 0, y.w).map(Some);
        }
        let mut out = vec![0.0f32; y.c * y.h * y.w];
        for (ty0, ty1, ry0, ry1) in tiles(y.h) {
            for (tx0, tx1, rx0, rx1) in tiles(y.w) {
                let (rh, rw) = (ry1 - ry0, rx1 - rx0);
                let g = region(ry0, ry1, rx0, rx1)?;
                for c in 0..y.c {
                    for yy in ty0..ty1 {
                        let src = (c * rh + yy - ry0) * rw + tx0 - rx0;
                        let dst = (c * y.h + yy) * y.w + tx0;
                        out[dst..dst + tx1 - tx0].copy_from_slice(&g[src..src + tx1 - tx0]);
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// `z = h_a(y)` on the device.
    fn hyper_analysis(&self, y: &[f32], shape: [usize; 3]) -> Result<Latent> {
        let [c, h, w] = shape;
        let z = self
            .model
            .hyper_analysis(self.upload(y.to_vec(), [1, c, h, w]));
        let [_, zc, zh, zw] = z.dims();
        Ok(Latent {
            c: zc,
            h: zh,
            w: zw,
            data: values(z)?,
        })
    }

    /// Scale indices and means of every latent from `ẑ` (the deterministic path).
    fn entropy_parameters(&self, z_hat: &[i32], zh: usize, zw: usize) -> (Vec<u16>, Vec<f32>) {
        let (mut indices, means) = self.predicted_parameters(z_hat, zh, zw);
        if let Some(map) = &self.scale_map {
            map.apply_all(&mut indices, zh * zw * 16);
        }
        (indices, means)
    }

    /// Scale indices (before the scale map) and means from `ẑ`, `[M][H·W]`.
    fn predicted_parameters(&self, z_hat: &[i32], zh: usize, zw: usize) -> (Vec<u16>, Vec<f32>) {
        let out = self.hs.run(z_hat, zh, zw);
        let m = self.config.m;
        let plane = out.h * out.w;
        let mut indices = vec![0u16; m * plane];
        let mut means = vec![0.0f32; m * plane];
        for p in 0..plane {
            let px = &out.data[p * out.c..(p + 1) * out.c];
            for c in 0..m {
                let sigma = px[c].max(model::SCALE_MIN as f32);
                indices[c * plane + p] = self.y_model.scale_index(f64::from(sigma));
                means[c * plane + p] = px[m + c];
            }
        }
        (indices, means)
    }

    /// Adds the residuals `y·g(q) − μ` of the latent `y` (before gain) at quality `q` to the
    /// least-squares statistics of a latent predictor (the first pass of a calibration).
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_prediction(&self, y: &Latent, q: f32, stats: &mut PredictionStats) -> Result<()> {
        let (z, zh, zw, scaled) = self.hyper_latent(y, q)?;
        let (_, means) = self.predicted_parameters(&z, zh, zw);
        let resid: Vec<f32> = scaled.iter().zip(&means).map(|(&v, &mu)| v - mu).collect();
        stats.add(&resid, y.h, y.w);
        Ok(())
    }

    /// Adds the symbols of the latent `y` (before gain) coded at quality `q` with the latent
    /// predictor `predict`, with the scale indices `h_s` predicts for them, to the calibration
    /// statistics `stats`.
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_calibration(
        &self,
        y: &Latent,
        q: f32,
        predict: Option<&Predictor>,
        stats: &mut Calibration,
    ) -> Result<()> {
        self.add_to_calibrations(y, q, &mut [(predict, stats)])
    }

    /// [`Self::add_to_calibration`] for several predictors (and their statistics) at the cost of
    /// one: `y`'s hyper-latent and `h_s` run once.
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_calibrations(
        &self,
        y: &Latent,
        q: f32,
        stats: &mut [(Option<&Predictor>, &mut Calibration)],
    ) -> Result<()> {
        let (z, zh, zw, scaled) = self.hyper_latent(y, q)?;
        let (indices, means) = self.predicted_parameters(&z, zh, zw);
        for (predict, stats) in stats {
            let y_sym = symbols(&scaled, &means, *predict, y.h, y.w);
            stats.add(&y_sym, &indices, y.h * y.w);
        }
        Ok(())
    }

    /// Adds the symbols of the latent `y` (before gain) coded at quality `q` with `map` (its
    /// latent predictor too), with the indices after its per-channel map, to the context
    /// statistics `stats` (the last pass of a calibration).
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_context_calibration(
        &self,
        y: &Latent,
        q: f32,
        map: &ScaleMap,
        stats: &mut ContextCalibration,
    ) -> Result<()> {
        self.add_to_context_calibrations(y, q, map, &mut [stats])
    }

    /// [`Self::add_to_context_calibration`] for several statistics at the cost of one.
    ///
    /// # Errors
    /// [`CodecError`] if the device fails or `q` is out of range.
    pub fn add_to_context_calibrations(
        &self,
        y: &Latent,
        q: f32,
        map: &ScaleMap,
        stats: &mut [&mut ContextCalibration],
    ) -> Result<()> {
        let (z, zh, zw, scaled) = self.hyper_latent(y, q)?;
        let (mut indices, means) = self.predicted_parameters(&z, zh, zw);
        map.apply_all(&mut indices, y.h * y.w);
        let y_sym = symbols(&scaled, &means, map.predict.as_ref(), y.h, y.w);
        for s in stats {
            s.add(&y_sym, &indices, y.h, y.w);
        }
        Ok(())
    }

    /// The `y` symbols of the scaled latent `scaled` (`y·g(q)`) with means `means` and mapped
    /// scale indices `indices`: each residual rounded to the nearest symbol or one step towards
    /// zero, whichever costs less in `bits + w_c·(r − s)²` under the table the decoder will use
    /// (context included), with `w_c` the squared pixel error of a unit step of channel `c`
    /// through `g_s`'s linear path weighted by [`RD_SLOPE`] times the quality's `λ` (`area`: image
    /// pixels per coded pixel). Without the linear path, plain [`DEAD_ZONE`] rounding.
    #[allow(clippy::too_many_arguments)]
    fn rd_symbols(
        &self,
        scaled: &[f32],
        means: &[f32],
        indices: &[u16],
        q: f32,
        area: f64,
        h: usize,
        w: usize,
    ) -> Vec<i32> {
        let slope = self.rd_slope;
        if self.synth_norm2.len() != self.config.m || slope <= 0.0 {
            return symbols(scaled, means, self.predictor(), h, w);
        }
        let plane = h * w;
        let inv = self.gain(&self.log_inv_gain, q, true);
        // λ·255²·MSE per image pixel over 3 colours, in bits: λ·255²/3 per squared 0–1 error.
        let per_sse = slope * lambda_of(q) * 255.0 * 255.0 / 3.0 * area;
        let weight: Vec<f64> = inv
            .iter()
            .zip(&self.synth_norm2)
            .map(|(&g, &n)| per_sse * f64::from(g) * f64::from(g) * n)
            .collect();
        let map = self.scale_map.as_ref().filter(|m| m.has_context());
        let choose = |k: usize, v: f32, done: &[i32]| -> i32 {
            let near = to_symbol(v);
            if near == 0 {
                return 0;
            }
            let index = match map {
                Some(m) => m.coded_index(done, k, indices[k], h, w),
                None => indices[k],
            };
            let Some(table) = self.y_model.table(index) else {
                return near;
            };
            let wc = weight[k / plane];
            let cost = |s: i32| {
                cost_bits(table, s).unwrap_or(f64::INFINITY)
                    + wc * (f64::from(v) - f64::from(s)).powi(2)
            };
            let toward = near - near.signum();
            if cost(toward) < cost(near) {
                toward
            } else {
                near
            }
        };
        let resid: Vec<f32> = scaled.iter().zip(means).map(|(&v, &mu)| v - mu).collect();
        match self.predictor() {
            Some(p) => p.symbols_with(&resid, h, w, choose),
            None => {
                let mut sym = Vec::with_capacity(resid.len());
                for (k, &v) in resid.iter().enumerate() {
                    let s = choose(k, v, &sym);
                    sym.push(s);
                }
                sym
            }
        }
    }

    /// The scaled latent `ŷ·g(q)` the decoder rebuilds from the symbols `sym` and means `means`:
    /// `μ + 16·s + p` in 1/16 units with the latent predictor, else `μ + s`.
    fn dequantize(&self, sym: &[i32], means: &[f32], h: usize, w: usize) -> Vec<f32> {
        match self.predictor() {
            Some(p) => p
                .reconstruct(sym, h, w)
                .iter()
                .zip(means)
                .map(|(&r, &mu)| r as f32 / 16.0 + mu)
                .collect(),
            None => sym
                .iter()
                .zip(means)
                .map(|(&s, &mu)| s as f32 + mu)
                .collect(),
        }
    }

    /// The coded picture as the target of the closed-loop refinement, unless refinement is off
    /// or the picture is larger than [`REFINE_MAX_PIXELS`] (coded open-loop).
    fn refine_target<'a>(&self, picture: &'a RgbImage) -> Option<&'a RgbImage> {
        let pixels = u64::from(picture.width()) * u64::from(picture.height());
        (self.refine_rounds > 0 && pixels <= REFINE_MAX_PIXELS).then_some(picture)
    }

    /// Whether files are refined in closed loop (at every quality): with the rate-distortion rounding
    /// and `g_s`'s linear path, whose basis norms scale each round's step.
    fn refines(&self) -> bool {
        self.refine_rounds > 0 && self.rd_slope > 0.0 && self.synth_norm2.len() == self.config.m
    }

    /// Bits of the `y` stream of the symbols `sym` with the base indices `indices`.
    fn y_bits(&self, sym: &[i32], indices: &[u16], h: usize, w: usize) -> Result<f64> {
        let bytes = match &self.scale_map {
            Some(map) if map.has_context() => self
                .y_model
                .encode(sym, &context_indices(map, sym, indices, h, w))?,
            _ => self.y_model.encode(sym, indices)?,
        };
        Ok(bytes.len() as f64 * 8.0)
    }

    /// The `y` symbols of [`Self::rd_symbols`], refined in closed loop: decode them, and move
    /// each latent by the projection of the remaining pixel error onto its basis image in `g_s`'s
    /// linear path (one Jacobi step of least squares, so it also answers the errors of the
    /// neighbouring channels and of the deep path), then round again. Up to
    /// [`HyperpriorCodec::with_refine_rounds`] rounds; the symbols of least real cost
    /// (`bits + w·SSE`, the file's own bits and the decoded error) win. A round that costs more
    /// than the best one is not the end: the next retries half the step from the best round
    /// (backtracking), so a step that overshoots on one photo still leaves a smaller one to try.
    fn refined_symbols(
        &self,
        target: &RgbImage,
        scaled: &[f32],
        p: &RoundingParams,
    ) -> Result<Vec<i32>> {
        let (m, h, w) = (self.config.m, p.h, p.w);
        let plane = h * w;
        let (width, height) = (target.width() as usize, target.height() as usize);
        let inv = self.gain(&self.log_inv_gain, p.q, true);
        let per_sse = self.rd_slope * lambda_of(p.q) * 255.0 * 255.0 / 3.0 * p.area;
        let want = target.as_raw();
        let mut cur = scaled.to_vec();
        let mut best: Option<(f64, Vec<i32>)> = None;
        // The pixel error of the best round so far, taken back to the latent.
        let mut best_grad: Option<Vec<f32>> = None;
        let mut step = self.refine_step;
        // Channels without a basis image (or a gain) keep the latent they had, as before.
        let move_from = |recon: &[f32], grad: &[f32], step: f64, cur: &mut Vec<f32>| {
            for (c, (&g, &n2)) in inv.iter().zip(&self.synth_norm2).enumerate() {
                let g = f64::from(g);
                if n2 <= 0.0 || g == 0.0 {
                    continue;
                }
                for k in c * plane..(c + 1) * plane {
                    cur[k] = recon[k] + (step * f64::from(grad[k]) / (g * n2)) as f32;
                }
            }
        };
        let rounds = self.refine_rounds;
        for round in 0..=rounds {
            let sym = self.rd_symbols(&cur, p.means, p.indices, p.q, p.area, h, w);
            let recon = self.dequantize(&sym, p.means, h, w);
            let y = Latent {
                c: m,
                h,
                w,
                data: recon
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v * inv[i / plane])
                    .collect(),
            };
            // What the decoder shows before enlarging and filtering.
            let got = self.synthesis(&y, width, height)?;
            let got = got.as_raw();
            let sse: f64 = want
                .iter()
                .zip(got)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                / (255.0 * 255.0);
            let cost = self.y_bits(&sym, p.indices, h, w)? + per_sse * sse;
            if best.as_ref().is_some_and(|(b, _)| cost >= *b) {
                // The step overshot: retry half of it from the best round (backtracking).
                let (Some((_, best_sym)), Some(grad)) = (&best, &best_grad) else {
                    break;
                };
                if round == rounds {
                    break;
                }
                drop((sym, recon, y));
                step *= 0.5;
                let from = self.dequantize(best_sym, p.means, h, w);
                move_from(&from, grad, step, &mut cur);
                continue;
            }
            best = Some((cost, sym));
            if round == rounds {
                break;
            }
            // The pixel error, `[3][16·h][16·w]` in 0–1 units (0 outside the picture), taken
            // back to the latent through all of `g_s` (its linear path alone without the
            // network on a gradient device).
            let (ph, pw) = (h * 16, w * 16);
            let mut err = vec![0.0f32; 3 * ph * pw];
            for py in 0..height.min(ph) {
                for px in 0..width.min(pw) {
                    let i = 3 * (py * width + px);
                    for c in 0..3 {
                        err[(c * ph + py) * pw + px] =
                            (f32::from(want[i + c]) - f32::from(got[i + c])) / 255.0;
                    }
                }
            }
            let grad = match self.synthesis_vjp(&y, &err)? {
                Some(g) => g,
                None => self.linear_vjp(&err, h, w),
            };
            move_from(&recon, &grad, step, &mut cur);
            best_grad = Some(grad);
        }
        Ok(best.map(|(_, s)| s).unwrap_or_default())
    }

    /// [`Self::synthesis_vjp`] through `g_s`'s linear path alone: per block and channel, the dot
    /// product of the pixel error `err` (`[3][16·h][16·w]`) with the channel's basis image.
    fn linear_vjp(&self, err: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (plane, pw) = (h * w, w * 16);
        let mut out = vec![0.0f32; self.synth_norm2.len() * plane];
        let mut block = vec![0.0f32; BASIS];
        for bi in 0..h {
            for bj in 0..w {
                for c in 0..3 {
                    for ky in 0..16 {
                        let src = (c * h * 16 + bi * 16 + ky) * pw + bj * 16;
                        block[c * 256 + ky * 16..c * 256 + ky * 16 + 16]
                            .copy_from_slice(&err[src..src + 16]);
                    }
                }
                for (c, basis) in self.synth_basis.chunks_exact(BASIS).enumerate() {
                    out[c * plane + bi * w + bj] =
                        basis.iter().zip(&block).map(|(a, b)| a * b).sum();
                }
            }
        }
        out
    }

    /// `ẑ` symbols with their height and width, and the scaled latent `y·g(q)`.
    fn hyper_latent(&self, y: &Latent, q: f32) -> Result<(Vec<i32>, usize, usize, Vec<f32>)> {
        self.check_quality(q)?;
        let gain = self.gain(&self.log_gain, q, false);
        let plane = y.h * y.w;
        let scaled: Vec<f32> = y
            .data
            .iter()
            .enumerate()
            .map(|(i, &v)| v * gain[i / plane])
            .collect();
        let z = self.hyper_analysis(&scaled, [y.c, y.h, y.w])?;
        let z_sym: Vec<i32> = z.data.iter().map(|&v| to_symbol(v)).collect();
        Ok((z_sym, z.h, z.w, scaled))
    }

    /// Codes the latent `y` (before gain) at quality `q`, open-loop (no picture to refine against).
    ///
    /// # Errors
    /// [`CodecError`] if the device or the entropy coder fails.
    pub fn encode_latent(&self, y: &Latent, q: f32, width: u32, height: u32) -> Result<Coded> {
        self.encode_latent_area(y, q, width, height, 1.0, None)
    }

    /// [`Self::encode_latent`] for a picture whose every coded pixel stands for `area` pixels of
    /// the image (the rate-distortion rounding weighs its error by that), with the symbols refined
    /// in closed loop against `target`, the coded picture, when given
    /// ([`Self::refined_symbols`]).
    fn encode_latent_area(
        &self,
        y: &Latent,
        q: f32,
        width: u32,
        height: u32,
        area: f64,
        target: Option<&RgbImage>,
    ) -> Result<Coded> {
        let (z_sym, zh, zw, scaled) = self.hyper_latent(y, q)?;
        let (indices, means) = self.entropy_parameters(&z_sym, zh, zw);
        let y_sym = match target {
            Some(t) if self.refines() => {
                let params = RoundingParams {
                    means: &means,
                    indices: &indices,
                    q,
                    area,
                    h: y.h,
                    w: y.w,
                };
                self.refined_symbols(t, &scaled, &params)?
            }
            _ => self.rd_symbols(&scaled, &means, &indices, q, area, y.h, y.w),
        };
        let z_bytes = self.z_model_at(q).encode(&z_sym, zh * zw)?;
        let indices = match &self.scale_map {
            Some(map) if map.has_context() => context_indices(map, &y_sym, &indices, y.h, y.w),
            _ => indices,
        };
        let y_bytes = self.y_model.encode(&y_sym, &indices)?;
        let mut container = Container::new(
            CodecId::HYPERPRIOR,
            self.model_id,
            MediaInfo::Image {
                width,
                height,
                channels: 3,
                bit_depth: 8,
            },
            CodecParams {
                quality: q,
                extra: Vec::new(),
            },
        );
        container.streams.push(Stream {
            kind: StreamKind::Ans32,
            label: STREAM_Z,
            data: z_bytes,
        });
        container.streams.push(Stream {
            kind: StreamKind::Ans32,
            label: STREAM_Y,
            data: y_bytes,
        });
        Ok(Coded {
            container,
            z: z_sym,
            y: y_sym,
        })
    }

    /// Encodes `img` at a fixed quality at full resolution, returning the symbols too.
    ///
    /// # Errors
    /// As [`HyperpriorCodec::encode_latent`].
    pub fn encode_image(&self, img: &RgbImage, q: f32) -> Result<Coded> {
        self.encode_image_at(img, q, 8)
    }

    /// Encodes `img` at a fixed quality with the picture coded at `eighths`/8 of its width and
    /// height (one of [`SCALES`]; the decoder enlarges it back), its symbols refined in closed
    /// loop (see [`HyperpriorCodec::with_refine_rounds`]).
    ///
    /// # Errors
    /// [`CodecError::InvalidParameter`] for a scale outside [`SCALES`]; else as
    /// [`HyperpriorCodec::encode_latent`].
    pub fn encode_image_at(&self, img: &RgbImage, q: f32, eighths: u8) -> Result<Coded> {
        check_image(img)?;
        let picture = shrink(img, eighths)?;
        let picture = picture.as_ref().unwrap_or(img);
        let y = self.analysis(picture)?;
        self.encode_latent_at(&y, q, img, eighths, self.refine_target(picture))
    }

    /// [`HyperpriorCodec::encode_latent`] for the picture of `img` coded at `eighths`/8 size
    /// (the size byte written when it is not the full one), refined towards `target` (the coded
    /// picture) when given.
    fn encode_latent_at(
        &self,
        y: &Latent,
        q: f32,
        img: &RgbImage,
        eighths: u8,
        target: Option<&RgbImage>,
    ) -> Result<Coded> {
        let area = (8.0 / f64::from(eighths)).powi(2);
        let mut coded = self.encode_latent_area(y, q, img.width(), img.height(), area, target)?;
        if eighths != 8 {
            coded.container.params.extra = vec![eighths];
        }
        Ok(coded)
    }

    /// Encodes `img` at quality `q`: the full-size file, unless a smaller coded picture
    /// ([`SCALES`], from 3/4 down while it keeps winning) decodes with less error at no more bits
    /// (its highest quality whose file is not larger). `q` thus fixes the rate, and the encoder
    /// spends it on the picture size that reconstructs best.
    ///
    /// # Errors
    /// As [`HyperpriorCodec::encode_latent`].
    pub fn encode_image_auto(&self, img: &RgbImage, q: f32) -> Result<Coded> {
        let (coded, decoded) = self.encode_image_sized(img, q)?;
        Ok(self.with_filter(img, coded, &decoded, lambda_of(q)))
    }

    /// [`Self::encode_image_auto`] without the restoration filter: the file and its decoding.
    /// The size is chosen on open-loop files; only the chosen one is refined (at its quality).
    fn encode_image_sized(&self, img: &RgbImage, q: f32) -> Result<(Coded, RgbImage)> {
        check_image(img)?;
        let y = self.analysis(img)?;
        let full = self.encode_latent_at(&y, q, img, 8, None)?;
        let (bpp, mse, decoded) = self.measure(img, &full)?;
        let mut best = (mse, full, decoded, (y, None, 8, q));
        for &eighths in &SCALES[1..] {
            let picture = shrink(img, eighths)?;
            // Shrinking and enlarging alone already lose more than the full-size file: coding
            // the smaller picture can only add to that (skips the rate search at high quality).
            if resampling_mse(img, picture.as_ref()) >= best.0 {
                break;
            }
            let Ok((coded, search)) = self.encode_to_rate_at(img, picture, bpp, eighths)? else {
                break;
            };
            let (_, mse, decoded) = self.measure(img, &coded)?;
            if mse >= best.0 {
                break;
            }
            let chosen = (search.y, search.picture, eighths, search.quality);
            best = (mse, coded, decoded, chosen);
        }
        let (_, coded, decoded, (y, picture, eighths, q)) = best;
        let Some(target) = self.refine_target(picture.as_ref().unwrap_or(img)) else {
            return Ok((coded, decoded));
        };
        if !self.refines() {
            return Ok((coded, decoded));
        }
        let refined = self.encode_latent_at(&y, q, img, eighths, Some(target))?;
        let (_, _, decoded) = self.measure(img, &refined)?;
        Ok((refined, decoded))
    }

    /// Bits per pixel of a coded file, the mean squared error of its decoding (0–255 units) and
    /// the decoding.
    fn measure(&self, img: &RgbImage, coded: &Coded) -> Result<(f64, f64, RgbImage)> {
        let pixels = f64::from(img.width()) * f64::from(img.height());
        let bpp = coded.container.to_bytes()?.len() as f64 * 8.0 / pixels;
        let back = self.decode_image(&coded.container, &Limits::default())?;
        Ok((bpp, mse_u8(img, &back), back))
    }

    /// `coded` (whose decoding without a filter is `decoded`) with the restoration filter fitted
    /// for the trade-off `lambda`, when one pays for its bits (else unchanged).
    fn with_filter(&self, img: &RgbImage, coded: Coded, decoded: &RgbImage, lambda: f64) -> Coded {
        self.with_filter_on(img, coded, decoded, lambda, self.fine_filter)
    }

    /// [`Self::with_filter`] on the fine path where `fine` allows (else the 8-bit one).
    fn with_filter_on(
        &self,
        img: &RgbImage,
        mut coded: Coded,
        decoded: &RgbImage,
        lambda: f64,
        fine: bool,
    ) -> Coded {
        let slope = lambda * FILTER_SLOPE;
        let pixels = u64::from(img.width()) * u64::from(img.height());
        if fine && pixels <= FINE_MAX_PIXELS {
            let fine = self
                .decode_fixed(&coded.container, &Limits::default(), wiener::FINE_SHIFT)
                .ok()
                .and_then(|pic| {
                    let filter = wiener::fit_fixed(img, &pic, slope)?;
                    Some((filter.to_compact_bytes()?, filter.apply_fixed(&pic)))
                });
            if let Some((data, filtered)) = fine {
                coded.container.streams.push(Stream {
                    kind: StreamKind::Raw,
                    label: STREAM_FILTER_FINE,
                    data,
                });
                if let Some(data) = wiener::fit_clipped_fixed(img, &filtered, slope)
                    .and_then(|f| f.to_clipped_bytes())
                {
                    coded.container.streams.push(Stream {
                        kind: StreamKind::Raw,
                        label: STREAM_FILTER_FINE_CLIPPED,
                        data,
                    });
                }
                return coded;
            }
        }
        let Some(filter) = wiener::fit(img, decoded, slope) else {
            return coded;
        };
        let (label, data) = match filter.to_compact_bytes() {
            Some(data) => (STREAM_FILTER_COMPACT, data),
            None => (STREAM_FILTER, filter.to_bytes()),
        };
        coded.container.streams.push(Stream {
            kind: StreamKind::Raw,
            label,
            data,
        });
        let filtered = filter.apply(decoded);
        if let Some(data) =
            wiener::fit_clipped(img, &filtered, slope).and_then(|f| f.to_clipped_bytes())
        {
            coded.container.streams.push(Stream {
                kind: StreamKind::Raw,
                label: STREAM_FILTER_CLIPPED,
                data,
            });
        }
        coded
    }

    /// Encodes `img` at the best file of at most `bpp` bits per pixel: per coded resolution of
    /// [`SCALES`], the highest quality that fits, then the one of least decoded MSE (a smaller
    /// size is not searched once shrinking and enlarging alone lose more than the best so far).
    ///
    /// # Errors
    /// [`CodecError::InvalidParameter`] naming the lowest reachable rate if `bpp` is below it.
    pub fn encode_to_rate(&self, img: &RgbImage, bpp: f64) -> Result<Coded> {
        let pixels = f64::from(img.width()) * f64::from(img.height());
        let (coded, decoded) = self.encode_to_rate_sized(img, bpp)?;
        let size =
            |c: &Coded| -> Result<f64> { Ok(c.container.to_bytes()?.len() as f64 * 8.0 / pixels) };
        // A file with its restoration filter and how far it is over `bpp`: the fine filter when it
        // fits, else the 8-bit one, whose overshoot steers the search below (the fine filter fits
        // more finely and may spend more bits; steering by it could lose the refinement).
        let fine = self.fine_filter && pixels <= FINE_MAX_PIXELS as f64;
        let filter = |coded: &Coded, decoded: &RgbImage| -> Result<(Coded, f64)> {
            let lambda = lambda_of(coded.container.params.quality);
            if fine {
                let filtered = self.with_filter_on(img, coded.clone(), decoded, lambda, true);
                let over = size(&filtered)? - bpp;
                if over <= 0.0 {
                    return Ok((filtered, over));
                }
            }
            let filtered = self.with_filter_on(img, coded.clone(), decoded, lambda, false);
            let over = size(&filtered)? - bpp;
            Ok((filtered, over))
        };
        let (filtered, mut over) = filter(&coded, &decoded)?;
        if over <= 0.0 {
            return Ok(filtered);
        }
        // The filter's bits pushed the file over the target: search again for a lower target by
        // what it overshot (the refitted filter's size changes a little with the file, so a few
        // rounds), and keep the unfiltered file only if none fits.
        let mut target = bpp;
        for _ in 0..FILTER_ROUNDS {
            target -= over * FILTER_MARGIN;
            let Ok((smaller, decoded)) = self.encode_to_rate_sized(img, target) else {
                break;
            };
            let filtered;
            (filtered, over) = filter(&smaller, &decoded)?;
            if over <= 0.0 {
                return Ok(filtered);
            }
        }
        Ok(coded)
    }

    /// [`Self::encode_to_rate`] without the restoration filter: the file and its decoding.
    fn encode_to_rate_sized(&self, img: &RgbImage, bpp: f64) -> Result<(Coded, RgbImage)> {
        check_image(img)?;
        let mut best: Option<(f64, Coded, RgbImage, RateSearch)> = None;
        let mut lowest = f64::INFINITY;
        for &eighths in &SCALES {
            let picture = shrink(img, eighths)?;
            if let Some((mse, ..)) = &best
                && resampling_mse(img, picture.as_ref()) >= *mse
            {
                break;
            }
            let (coded, search) = match self.encode_to_rate_at(img, picture, bpp, eighths)? {
                Ok(c) => c,
                Err(low) => {
                    lowest = lowest.min(low);
                    continue;
                }
            };
            let (_, mse, decoded) = self.measure(img, &coded)?;
            if best.as_ref().is_none_or(|(m, ..)| mse < *m) {
                best = Some((mse, coded, decoded, search));
            }
        }
        let Some((mse, coded, decoded, search)) = best else {
            let (lo, _) = self.quality_range();
            return Err(CodecError::InvalidParameter(format!(
                "{bpp} bpp is below the lowest rate the hyperprior reaches on this image ({lowest:.4} bpp at -q {lo})"
            )));
        };
        // The size is chosen open-loop; only the chosen one is refined.
        match self.refined_to_rate(img, search, bpp, mse)? {
            Some(refined) => Ok(refined),
            None => Ok((coded, decoded)),
        }
    }

    /// The highest quality whose file of `img` coded as `picture` (its `eighths`/8-size version,
    /// `None` for the full size) is at most `bpp` bits per (full-size) pixel, or
    /// `Err(lowest rate)` if even the lowest quality is above it.
    fn encode_to_rate_at(
        &self,
        img: &RgbImage,
        picture: Option<RgbImage>,
        bpp: f64,
        eighths: u8,
    ) -> Result<std::result::Result<(Coded, RateSearch), f64>> {
        let y = self.analysis(picture.as_ref().unwrap_or(img))?;
        let pixels = f64::from(img.width()) * f64::from(img.height());
        let (lo, hi) = self.quality_range();
        // The search rounds open-loop; only its result is refined (see `Self::refined_to_rate`).
        let run = |q: f32| -> Result<(Coded, f64)> {
            let c = self.encode_latent_at(&y, q, img, eighths, None)?;
            let size = c.container.to_bytes()?.len() as f64 * 8.0 / pixels;
            Ok((c, size))
        };
        let mut seen = Vec::new();
        let (low, low_rate) = run(lo)?;
        if low_rate > bpp {
            return Ok(Err(low_rate));
        }
        seen.push((lo, low_rate));
        let (high, high_rate) = run(hi)?;
        seen.push((hi, high_rate));
        let (best, best_rate) = if high_rate <= bpp {
            (high, high_rate)
        } else {
            let (mut a, mut b, mut best) = ((lo, low_rate), hi, low);
            for _ in 0..14 {
                let q = 0.5 * (a.0 + b);
                let (c, rate) = run(q)?;
                seen.push((q, rate));
                if rate <= bpp {
                    a = (q, rate);
                    best = c;
                    if rate >= bpp * 0.995 {
                        break;
                    }
                } else {
                    b = q;
                }
            }
            (best, a.1)
        };
        let search = RateSearch {
            y,
            picture,
            eighths,
            quality: best.container.params.quality,
            rate: best_rate,
            seen,
        };
        Ok(Ok((best, search)))
    }

    /// A refined file of `img` for the rate target `bpp` from the open-loop search `search`
    /// (whose file decodes with the error `mse`), with its decoding, when one lands within
    /// [`RATE_TOLERANCE`] below `bpp` and decodes with less error; else `None`. The refinement
    /// spends more bits than the open-loop rounding at the same quality (for a better picture),
    /// so the refined file is searched at lower qualities: the quality of each try is read off
    /// the open-loop rates of the search (log-linear in the rate), aiming at `bpp` shrunk by the
    /// refinement's last measured overshoot, and bracketed by the tries before.
    fn refined_to_rate(
        &self,
        img: &RgbImage,
        search: RateSearch,
        bpp: f64,
        mse: f64,
    ) -> Result<Option<(Coded, RgbImage)>> {
        let RateSearch {
            y,
            picture,
            eighths,
            quality: q0,
            rate: open_rate,
            mut seen,
        } = search;
        let Some(target) = self.refine_target(picture.as_ref().unwrap_or(img)) else {
            return Ok(None);
        };
        if !self.refines() {
            return Ok(None);
        }
        let pixels = f64::from(img.width()) * f64::from(img.height());
        let run = |q: f32| -> Result<(Coded, f64)> {
            let c = self.encode_latent_at(&y, q, img, eighths, Some(target))?;
            let size = c.container.to_bytes()?.len() as f64 * 8.0 / pixels;
            Ok((c, size))
        };
        seen.sort_by(|a, b| a.0.total_cmp(&b.0));
        // The quality whose open-loop file would have `rate` bits per pixel.
        let quality_at = |rate: f64| -> f32 {
            let ln = rate.max(f64::MIN_POSITIVE).ln();
            let mut q = seen[0].0;
            for pair in seen.windows(2) {
                let ((qa, ra), (qb, rb)) = (pair[0], pair[1]);
                if ra.ln() <= ln && rb > ra {
                    let t = ((ln - ra.ln()) / (rb.ln() - ra.ln())).min(1.0);
                    q = qa + (qb - qa) * t as f32;
                }
            }
            q
        };
        let enough = bpp * (1.0 - RATE_TOLERANCE);
        let (refined, rate) = run(q0)?;
        let mut overshoot = rate / open_rate;
        // Qualities whose refined file fits (`lo`) or does not (`hi`).
        let (mut lo, mut hi) = (None::<f32>, None::<f32>);
        let mut found = None;
        if rate <= bpp {
            lo = Some(q0);
            found = Some((refined, rate));
        } else {
            hi = Some(q0);
        }
        for _ in 0..REFINE_RATE_TRIES {
            if found.as_ref().is_some_and(|(_, r)| *r >= enough) {
                break;
            }
            let mut q = quality_at(bpp / overshoot);
            if let (Some(a), Some(b)) = (lo, hi)
                && !(q > a && q < b)
            {
                q = 0.5 * (a + b);
            }
            if hi.is_some_and(|b| q >= b) || lo.is_some_and(|a| q <= a) {
                break;
            }
            let (c, r) = run(q)?;
            overshoot = r / quality_rate(&seen, q);
            if r <= bpp {
                lo = Some(q);
                found = Some((c, r));
            } else {
                hi = Some(q);
            }
        }
        let Some((refined, rate)) = found else {
            return Ok(None);
        };
        if rate < enough && open_rate >= enough {
            return Ok(None);
        }
        let (_, refined_mse, decoded) = self.measure(img, &refined)?;
        Ok((refined_mse < mse).then_some((refined, decoded)))
    }

    /// Decodes the symbols of a file back to `ŷ` (after inverse gain) and the symbols.
    ///
    /// # Errors
    /// [`CodecError`] for a damaged or foreign file.
    pub fn decode_latent(&self, file: &Container, limits: &Limits) -> Result<(Latent, Symbols)> {
        if file.codec != CodecId::HYPERPRIOR {
            return Err(CodecError::Unsupported(format!(
                "not a hyperprior file (codec {})",
                file.codec
            )));
        }
        file.expect_model(self.model_id)?;
        let MediaInfo::Image {
            width,
            height,
            channels: 3,
            bit_depth: 8,
        } = file.media
        else {
            return Err(CodecError::Unsupported(format!(
                "hyperprior files hold 8-bit RGB images, this one says {:?}",
                file.media
            )));
        };
        if width == 0 || height == 0 {
            return Err(CodecError::Unsupported("empty image".into()));
        }
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(ncodec_bitstream::BitstreamError::Limit {
                what: "pixels",
                value: u64::from(width) * u64::from(height),
                max: limits.max_pixels,
            }
            .into());
        }
        let q = file.params.quality;
        self.check_quality(q)?;
        let (width, height) = coded_size(file, width, height)?;
        let (ph, pw) = (
            (height as usize).div_ceil(ALIGN) * ALIGN,
            (width as usize).div_ceil(ALIGN) * ALIGN,
        );
        let (lh, lw, zh, zw) = (ph / 16, pw / 16, ph / 64, pw / 64);
        let (m, n) = (self.config.m, self.config.n);
        let symbols = (m * lh * lw + n * zh * zw) as u64;
        if symbols > limits.max_symbols {
            return Err(ncodec_bitstream::BitstreamError::Limit {
                what: "latent symbols",
                value: symbols,
                max: limits.max_symbols,
            }
            .into());
        }
        let z_sym = self
            .z_model_at(q)
            .decode(&file.stream(STREAM_Z)?.data, zh * zw)?;
        let (indices, means) = self.entropy_parameters(&z_sym, zh, zw);
        let y_data = &file.stream(STREAM_Y)?.data;
        let y_sym = match &self.scale_map {
            Some(map) if map.has_context() => {
                self.y_model.decode_with(y_data, indices.len(), |k, done| {
                    map.coded_index(done, k, indices[k], lh, lw)
                })?
            }
            _ => self.y_model.decode(y_data, &indices)?,
        };
        let inv = self.gain(&self.log_inv_gain, q, true);
        let plane = lh * lw;
        let data = self
            .dequantize(&y_sym, &means, lh, lw)
            .iter()
            .enumerate()
            .map(|(i, &v)| v * inv[i / plane])
            .collect();
        Ok((
            Latent {
                c: m,
                h: lh,
                w: lw,
                data,
            },
            Symbols { z: z_sym, y: y_sym },
        ))
    }

    /// Decodes a file to an image.
    ///
    /// # Errors
    /// As [`HyperpriorCodec::decode_latent`].
    pub fn decode_image(&self, file: &Container, limits: &Limits) -> Result<RgbImage> {
        let count = |label: u8| file.streams.iter().filter(|s| s.label == label).count();
        if count(STREAM_FILTER_FINE_CLIPPED) > 0 && count(STREAM_FILTER_FINE) == 0 {
            return Err(CodecError::Bitstream(BitstreamError::Corrupt {
                what: "a fine clipped restoration filter without the fine filter".into(),
                offset: 0,
            }));
        }
        if count(STREAM_FILTER_FINE) > 0 {
            return self.decode_image_fine(file, limits);
        }
        let (y, _) = self.decode_latent(file, limits)?;
        let MediaInfo::Image { width, height, .. } = file.media else {
            return Err(CodecError::Unsupported("not an image".into()));
        };
        let (cw, ch) = coded_size(file, width, height)?;
        let img = self.synthesis(&y, cw as usize, ch as usize)?;
        let img = if (cw, ch) == (width, height) {
            img
        } else {
            image::imageops::resize(&img, width, height, FilterType::Lanczos3)
        };
        let mut filters = file
            .streams
            .iter()
            .filter(|s| [STREAM_FILTER, STREAM_FILTER_COMPACT].contains(&s.label));
        let stream = match (filters.next(), filters.next()) {
            (None, _)
                if file
                    .streams
                    .iter()
                    .any(|s| s.label == STREAM_FILTER_CLIPPED) =>
            {
                return Err(CodecError::Bitstream(BitstreamError::Corrupt {
                    what: "a clipped restoration filter without the first filter".into(),
                    offset: 0,
                }));
            }
            (None, _) => return Ok(img),
            (Some(stream), None) => stream,
            (Some(_), Some(_)) => {
                return Err(CodecError::Bitstream(BitstreamError::Corrupt {
                    what: "more than one restoration filter stream".into(),
                    offset: 0,
                }));
            }
        };
        if stream.kind != StreamKind::Raw {
            return Err(CodecError::Unsupported(
                "the restoration filter stream is not raw bytes (a newer or damaged file)".into(),
            ));
        }
        let filter = if stream.label == STREAM_FILTER_COMPACT {
            wiener::Filter::from_compact_bytes(&stream.data)?
        } else {
            wiener::Filter::from_bytes(&stream.data)?
        };
        let img = filter.apply(&img);
        let mut clipped = file
            .streams
            .iter()
            .filter(|s| s.label == STREAM_FILTER_CLIPPED);
        match (clipped.next(), clipped.next()) {
            (None, _) => Ok(img),
            (Some(stream), None) if stream.kind == StreamKind::Raw => {
                Ok(wiener::Filter::from_clipped_bytes(&stream.data)?.apply(&img))
            }
            (Some(_), None) => Err(CodecError::Unsupported(
                "the clipped restoration filter stream is not raw bytes (a newer or damaged file)"
                    .into(),
            )),
            (Some(_), Some(_)) => Err(CodecError::Bitstream(BitstreamError::Corrupt {
                what: "more than one clipped restoration filter stream".into(),
                offset: 0,
            })),
        }
    }
}

impl HyperpriorCodec {
    /// The decoded picture before any restoration filter, in fixed point with `shift` fraction
    /// bits, enlarged to the image size (Lanczos-3 on 16-bit samples) when coded smaller.
    ///
    /// # Errors
    /// As [`Self::decode_image`].
    pub fn decode_fixed(
        &self,
        file: &Container,
        limits: &Limits,
        shift: u32,
    ) -> Result<wiener::Fixed> {
        let (y, _) = self.decode_latent(file, limits)?;
        let MediaInfo::Image { width, height, .. } = file.media else {
            return Err(CodecError::Unsupported("not an image".into()));
        };
        let (cw, ch) = coded_size(file, width, height)?;
        let pic = self.synthesis_fixed(&y, cw as usize, ch as usize, shift)?;
        if (cw, ch) == (width, height) {
            return Ok(pic);
        }
        let max = (255u32 << shift) as u16;
        let other = || CodecError::InvalidParameter("picture of another size".into());
        let small: image::ImageBuffer<image::Rgb<u16>, Vec<u16>> =
            image::ImageBuffer::from_raw(cw, ch, pic.into_data()).ok_or_else(other)?;
        let big = image::imageops::resize(&small, width, height, FilterType::Lanczos3);
        drop(small);
        let data = big.into_raw().into_iter().map(|v| v.min(max)).collect();
        wiener::Fixed::new(width as usize, height as usize, shift, data).ok_or_else(other)
    }

    /// [`Self::decode_image`] of a file with the fine restoration filter (label 5, and label 6
    /// after it when present): the whole chain at 1/16 of a level, rounded to 8 bits once.
    fn decode_image_fine(&self, file: &Container, limits: &Limits) -> Result<RgbImage> {
        let corrupt = |what: &str| {
            CodecError::Bitstream(BitstreamError::Corrupt {
                what: what.into(),
                offset: 0,
            })
        };
        let with = |labels: &[u8]| -> Vec<&Stream> {
            file.streams
                .iter()
                .filter(|s| labels.contains(&s.label))
                .collect()
        };
        // The fine path holds 16-bit copies of the picture: it is bounded before anything is
        // allocated, as the encoder bounds it.
        if let MediaInfo::Image { width, height, .. } = file.media
            && u64::from(width) * u64::from(height) > FINE_MAX_PIXELS
        {
            return Err(corrupt(
                "a fine restoration filter on a picture of more than 2^24 pixels",
            ));
        }
        let first = with(&[STREAM_FILTER, STREAM_FILTER_COMPACT, STREAM_FILTER_FINE]);
        let [stream] = first.as_slice() else {
            return Err(corrupt("more than one restoration filter stream"));
        };
        if !with(&[STREAM_FILTER_CLIPPED]).is_empty() {
            return Err(corrupt(
                "an 8-bit clipped restoration filter after the fine filter",
            ));
        }
        let second = with(&[STREAM_FILTER_FINE_CLIPPED]);
        if second.len() > 1 {
            return Err(corrupt("more than one clipped restoration filter stream"));
        }
        if stream.kind != StreamKind::Raw || second.iter().any(|s| s.kind != StreamKind::Raw) {
            return Err(CodecError::Unsupported(
                "a restoration filter stream is not raw bytes (a newer or damaged file)".into(),
            ));
        }
        let filter = wiener::Filter::from_compact_bytes(&stream.data)?;
        let clipped = match second.first() {
            Some(s) => Some(wiener::Filter::from_clipped_bytes(&s.data)?),
            None => None,
        };
        let pic = self.decode_fixed(file, limits, wiener::FINE_SHIFT)?;
        let mut pic = filter.apply_fixed(&pic);
        if let Some(f) = clipped {
            pic = f.apply_fixed(&pic);
        }
        Ok(pic.to_rgb())
    }
}

/// How many times the training `λ` one unit of squared error is worth in bits when the encoder
/// decides which restoration filters to send: the calibrated, short-trained codec's rate-distortion
/// curve is steeper than its training `λ` (on Kodak, 2.8× between q1 and q2, 1.4× between q4
/// and q6). On 8 held-out training photos (never Kodak), filter and dead zone against neither:
/// −10.0 % BD-rate with 1×, −10.8 % with 3×, −10.0 % with 10×.
const FILTER_SLOPE: f64 = 3.0;

/// The encoder's rate-distortion rounding of `y` weighs squared error by this many times the
/// quality's training `λ` (see [`HyperpriorCodec::rd_symbols`]); 0 rounds with the [`DEAD_ZONE`].
pub const RD_SLOPE: f64 = 3.0;

/// Closed-loop refinement rounds of the rounded `y` (see [`HyperpriorCodec::with_refine_rounds`]):
/// each decodes the symbols once and takes one step back through `g_s`. On the 12 held-out
/// training photos (never Kodak; `ncodec eval -q 1,2,3,4`) 4 rounds with backtracking gave
/// −0.30 % BD-rate against 2 rounds without.
pub const REFINE_ROUNDS: usize = 4;

/// Refined files tried at lower qualities when a rate target is set (see
/// [`HyperpriorCodec::refined_to_rate`]).
const REFINE_RATE_TRIES: usize = 4;

/// A file for a rate target lands at most this fraction below it.
pub const RATE_TOLERANCE: f64 = 0.03;

/// What [`HyperpriorCodec::refined_to_rate`] needs of the open-loop search at one coded size:
/// the latent, the coded picture (`None`: the image itself) and its size in eighths, the quality
/// and rate of the file found, and every `(quality, open-loop rate)` pair measured.
struct RateSearch {
    y: Latent,
    picture: Option<RgbImage>,
    eighths: u8,
    quality: f32,
    rate: f64,
    seen: Vec<(f32, f64)>,
}

/// The open-loop rate at quality `q`, log-linear between the measured pairs `seen` (sorted by
/// quality).
fn quality_rate(seen: &[(f32, f64)], q: f32) -> f64 {
    let i = seen.partition_point(|(sq, _)| *sq <= q);
    match (i.checked_sub(1).map(|j| seen[j]), seen.get(i).copied()) {
        (Some((qa, ra)), Some((qb, rb))) if qb > qa => {
            let t = f64::from((q - qa) / (qb - qa));
            (ra.ln() + (rb.ln() - ra.ln()) * t).exp()
        }
        (Some((_, r)), _) | (None, Some((_, r))) => r,
        (None, None) => f64::NAN,
    }
}

/// The fraction of each refinement round's least-squares correction applied (halved after a
/// round that did not pay).
pub const REFINE_STEP: f64 = 1.0;

/// Values of one basis image of `g_s`'s linear path: 3 colours of 16 × 16.
const BASIS: usize = 3 * model::BLOCK * model::BLOCK;

/// Pictures above this many pixels are coded open-loop (bounds the refinement's extra memory and
/// time on very large photos).
pub const REFINE_MAX_PIXELS: u64 = 1 << 24;

/// What the rounding of `y` needs besides the latent: its means and (mapped) scale indices,
/// the quality, the image pixels per coded pixel, and the latent's height and width.
struct RoundingParams<'a> {
    means: &'a [f32],
    indices: &'a [u16],
    q: f32,
    area: f64,
    h: usize,
    w: usize,
}

/// Rate searches a bpp target may take with the restoration filter's bits set aside before it
/// settles for the unfiltered file.
const FILTER_ROUNDS: usize = 4;

/// Each such search lowers the target by this many times what the last file overshot, so that the
/// refitted filter (a few bytes larger or smaller) rarely needs another round.
const FILTER_MARGIN: f64 = 1.2;

/// The `λ` of `λ·255²·MSE + bpp` at quality `q`: the training `λ` of the ladder, log-linear between
/// its points, and `λ₁·q²` below level 1 (where the step grows as `1/q`).
fn lambda_of(q: f32) -> f64 {
    let q = f64::from(q);
    if q < 1.0 {
        return LAMBDAS[0] * q * q;
    }
    let last = LAMBDAS.len() - 1;
    let pos = (q - 1.0).clamp(0.0, last as f64);
    let l = (pos.floor() as usize).min(last - 1);
    let t = pos - l as f64;
    (LAMBDAS[l].ln() * (1.0 - t) + LAMBDAS[l + 1].ln() * t).exp()
}

/// The size of the picture a file codes: its image size, or `eighths`/8 of it (rounded, at
/// least 1) when the `PARM` extra bytes hold one byte `eighths` of [`SCALES`].
fn coded_size(file: &Container, width: u32, height: u32) -> Result<(u32, u32)> {
    match file.params.extra.as_slice() {
        [] => Ok((width, height)),
        [e] if SCALES[1..].contains(e) => Ok((scaled(width, *e), scaled(height, *e))),
        other => Err(CodecError::Unsupported(format!(
            "unknown hyperprior parameters {other:?} (a newer or damaged file)"
        ))),
    }
}

/// The size of the picture a hyperprior image file codes (its image size, or 3/4 or 1/2 of it).
///
/// # Errors
/// [`CodecError::Unsupported`] for a file that is not an image or holds unknown parameters.
pub fn coded_picture_size(file: &Container) -> Result<(u32, u32)> {
    let MediaInfo::Image { width, height, .. } = file.media else {
        return Err(CodecError::Unsupported("not an image".into()));
    };
    coded_size(file, width, height)
}

fn scaled(side: u32, eighths: u8) -> u32 {
    ((u64::from(side) * u64::from(eighths) + 4) / 8).max(1) as u32
}

/// Mean squared error (0–255 units) of `img` against its reduced version `small` enlarged back
/// (0 for `None`, the full size).
fn resampling_mse(img: &RgbImage, small: Option<&RgbImage>) -> f64 {
    small.map_or(0.0, |small| {
        let back = image::imageops::resize(small, img.width(), img.height(), FilterType::Lanczos3);
        mse_u8(img, &back)
    })
}

fn mse_u8(a: &RgbImage, b: &RgbImage) -> f64 {
    let sse: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    sse / a.as_raw().len().max(1) as f64
}

/// `img` reduced to `eighths`/8 of its sides (Lanczos-3), `None` for 8.
fn shrink(img: &RgbImage, eighths: u8) -> Result<Option<RgbImage>> {
    if !SCALES.contains(&eighths) {
        return Err(CodecError::InvalidParameter(format!(
            "coded resolution {eighths}/8 is not one of {SCALES:?}"
        )));
    }
    Ok((eighths != 8).then(|| {
        let (w, h) = (scaled(img.width(), eighths), scaled(img.height(), eighths));
        image::imageops::resize(img, w, h, FilterType::Lanczos3)
    }))
}

fn check_image(img: &RgbImage) -> Result<()> {
    if img.width() == 0 || img.height() == 0 {
        return Err(CodecError::Unsupported("empty image".into()));
    }
    Ok(())
}

/// The coded indices of the channel-major `h × w` symbols `sym` under `map`'s context table, from
/// their mapped indices `base` (the decoder computes each from the symbols before it).
fn context_indices(map: &ScaleMap, sym: &[i32], base: &[u16], h: usize, w: usize) -> Vec<u16> {
    base.iter()
        .enumerate()
        .map(|(k, &i)| map.coded_index(sym, k, i, h, w))
        .collect()
}

/// The coded symbols of the channel-major `[C][h][w]` scaled latent: `⌊y − μ⌉`, or with a latent
/// predictor `⌊y − μ − p/16⌉` (see [`predict`]).
fn symbols(
    scaled: &[f32],
    means: &[f32],
    predict: Option<&Predictor>,
    h: usize,
    w: usize,
) -> Vec<i32> {
    let resid = scaled.iter().zip(means).map(|(&v, &mu)| v - mu);
    match predict {
        Some(p) => p.symbols(&resid.collect::<Vec<_>>(), h, w, quantize),
        None => resid.map(quantize).collect(),
    }
}

/// How much further than half a step a residual must reach before it rounds away from zero.
/// Rounding with this small dead zone (`sign(v)·⌊|v| + ½ − DEAD_ZONE⌋`) saves more bits on the
/// many near-zero symbols than it costs in error: on 8 held-out training photos (never Kodak),
/// −1.9 % BD-rate at 0.1, +1.5 % at 0.2, +7 % at 0.3 (with the restoration filter: −1.3 %).
/// Decoders do not depend on it.
pub const DEAD_ZONE: f32 = 0.1;

/// Rounds a `y` residual to its symbol with the [`DEAD_ZONE`].
fn quantize(v: f32) -> i32 {
    let m = v.abs() - DEAD_ZONE;
    to_symbol(if m <= 0.5 { 0.0 } else { v.signum() * m })
}

/// Rounds a latent to a symbol; NaN and absurd values (broken weights) are clamped.
fn to_symbol(v: f32) -> i32 {
    if v.is_nan() {
        0
    } else {
        v.round().clamp(-SYMBOL_CLAMP, SYMBOL_CLAMP) as i32
    }
}

/// The window `[y0, y1) × [x0, x1)` of every plane of the `[c][h][w]` array `data`.
fn crop_planes(
    data: &[f32],
    [c, h, w]: [usize; 3],
    (y0, y1): (usize, usize),
    (x0, x1): (usize, usize),
) -> Vec<f32> {
    let (rh, rw) = (y1 - y0, x1 - x0);
    let mut out = vec![0.0f32; c * rh * rw];
    for k in 0..c {
        for yy in 0..rh {
            let src = (k * h + y0 + yy) * w + x0;
            let dst = (k * rh + yy) * rw;
            out[dst..dst + rw].copy_from_slice(&data[src..src + rw]);
        }
    }
    out
}

/// Tiles of `len` latent rows: `(inner start, inner end, region start, region end)`.
fn tiles(len: usize) -> Vec<(usize, usize, usize, usize)> {
    (0..len.div_ceil(TILE))
        .map(|i| {
            let (a, b) = (i * TILE, ((i + 1) * TILE).min(len));
            (
                a,
                b,
                a.saturating_sub(TILE_MARGIN),
                (b + TILE_MARGIN).min(len),
            )
        })
        .collect()
}

/// The bottleneck's integer tables, computed from its weights in f64 with the pure-Rust `libm`
/// (same bits on every machine).
/// The CDF of a trained [`model::EntropyBottleneck`], evaluated in f64 with the pure-Rust `libm`
/// from the stored weights, so that tables made from it are identical on every machine.
#[derive(Debug, Clone)]
pub struct BottleneckCdf {
    mats: Vec<Vec<f64>>,
    biases: Vec<Vec<f64>>,
    factors: Vec<Vec<f64>>,
    channels: usize,
}

impl BottleneckCdf {
    /// Reads the bottleneck's parameters back from the device.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device fails.
    pub fn new(eb: &model::EntropyBottleneck) -> Result<Self> {
        let read = |ps: &[burn::module::Param<Tensor<3>>]| -> Result<Vec<Vec<f64>>> {
            ps.iter()
                .map(|p| Ok(values(p.val())?.into_iter().map(f64::from).collect()))
                .collect()
        };
        let (mats, biases, factors) = (read(&eb.matrices)?, read(&eb.biases)?, read(&eb.factors)?);
        let f = model::BOTTLENECK_FILTERS;
        let channels = biases.first().map_or(0, |b| b.len() / f[1]);
        let softplus = |v: f64| {
            if v > 30.0 {
                v
            } else {
                libm::log1p(libm::exp(v))
            }
        };
        // The reparameterized weights, once: softplus of the matrices, tanh of the factors.
        let mats = mats
            .iter()
            .map(|m| m.iter().map(|&v| softplus(v)).collect())
            .collect();
        let factors = factors
            .iter()
            .map(|f| f.iter().map(|&v| libm::tanh(v)).collect())
            .collect();
        Ok(Self {
            mats,
            biases,
            factors,
            channels,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `F_c(x)`, the CDF of channel `c` at `x`.
    pub fn cdf(&self, c: usize, x: f64) -> f64 {
        let f = model::BOTTLENECK_FILTERS;
        let mut h = [0.0f64; 4];
        let mut next = [0.0f64; 4];
        h[0] = x;
        for i in 0..f.len() - 1 {
            let (fin, fout) = (f[i], f[i + 1]);
            for (o, v) in next.iter_mut().enumerate().take(fout) {
                let mut acc = self.biases[i][c * fout + o];
                for (k, &hk) in h.iter().enumerate().take(fin) {
                    acc += self.mats[i][(c * fout + o) * fin + k] * hk;
                }
                if let Some(fac) = self.factors.get(i) {
                    acc += fac[c * fout + o] * libm::tanh(acc);
                }
                *v = acc;
            }
            h = next;
        }
        1.0 / (1.0 + libm::exp(-h[0]))
    }
}

/// The factorized model of calibrated `ẑ` tables, one per channel.
///
/// # Errors
/// [`CodecError::Bitstream`] for tables the coder cannot use (none that pass
/// [`ScaleMap::validate`]).
pub fn z_tables_model(tables: &[calibrate::ZTable]) -> Result<FactorizedModel> {
    let tables = tables
        .iter()
        .map(|t| {
            let masses: Vec<u64> = t.weights.iter().map(|&w| u64::from(w)).collect();
            ncodec_bitstream::entropy::CdfTable::from_masses(t.min, &masses, true)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(FactorizedModel::new(tables)?)
}

/// The `ẑ` tables of the bottleneck `bc` with channel `c` at scale `2^(scales[c]/4)`: the
/// probability of `v` is `F(s·(v + ½)) − F(s·(v − ½))` (scale 0: the trained density).
fn bottleneck_tables(bc: &BottleneckCdf, scales: &[i8]) -> Result<FactorizedModel> {
    let channels = bc.channels();
    let mut specs = Vec::with_capacity(channels);
    for c in 0..channels {
        // 2^(k/4) from exact powers of two and of 2^(1/4) (the same value on every machine).
        let k = scales.get(c).copied().unwrap_or(0);
        let quarter = [
            1.0,
            1.189_207_115_002_721,
            std::f64::consts::SQRT_2,
            1.681_792_830_507_429,
        ];
        let s =
            quarter[usize::from(k.rem_euclid(4) as u8)] * libm::exp2(f64::from(k.div_euclid(4)));
        // The CDF at every half-integer of the search range, once.
        let at: Vec<f64> = (-Z_RANGE..=Z_RANGE + 1)
            .map(|v| bc.cdf(c, s * (v as f64 - 0.5)))
            .collect();
        let upper = |k: i64| at[(k + Z_RANGE + 1) as usize]; // F(k + ½)
        let lower = |k: i64| at[(k + Z_RANGE) as usize]; // F(k − ½)
        let lo = (-Z_RANGE..=Z_RANGE)
            .find(|&k| upper(k) > Z_TAIL)
            .unwrap_or(-Z_RANGE);
        let hi = (lo..=Z_RANGE)
            .rev()
            .find(|&k| 1.0 - lower(k) > Z_TAIL)
            .unwrap_or(lo)
            .max(lo);
        let pmf: Vec<f64> = (lo..=hi).map(|k| (upper(k) - lower(k)).max(0.0)).collect();
        let tail = lower(lo) + (1.0 - upper(hi));
        specs.push((lo as i32, pmf, tail.max(1e-9)));
    }
    Ok(FactorizedModel::from_probabilities(&specs)?)
}

/// The hyperprior behind the [`Codec`] trait; loads its weights on first use.
pub struct HyperpriorEntry {
    backend: crate::Backend,
    weights: Option<Vec<u8>>,
    codec: OnceLock<std::result::Result<HyperpriorCodec, String>>,
}

impl std::fmt::Debug for HyperpriorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperpriorEntry")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl HyperpriorEntry {
    /// The hyperprior on `backend` with the shipped weights, or with `weights` (a file's bytes).
    pub fn new(backend: crate::Backend, weights: Option<Vec<u8>>) -> Self {
        Self {
            backend,
            weights,
            codec: OnceLock::new(),
        }
    }

    /// The loaded codec.
    ///
    /// # Errors
    /// The load error, as [`CodecError::Weights`].
    pub fn get(&self) -> Result<&HyperpriorCodec> {
        self.codec
            .get_or_init(|| {
                let bytes = self.weights.as_deref().unwrap_or(SHIPPED_WEIGHTS);
                HyperpriorCodec::from_weights(bytes, self.backend.device()).map_err(|e| match e {
                    CodecError::Weights(m) => m,
                    other => other.to_string(),
                })
            })
            .as_ref()
            .map_err(|e| CodecError::Weights(format!("cannot load the hyperprior's: {e}")))
    }
}

impl Codec for HyperpriorEntry {
    fn info(&self) -> &CodecInfo {
        &INFO
    }

    fn encode(&self, media: &Media, options: &EncodeOptions) -> Result<Container> {
        let Media::Image(img) = media else {
            return Err(CodecError::Unsupported(format!(
                "the hyperprior codes images, not {}",
                media.kind_name()
            )));
        };
        let codec = self.get()?;
        let coded = match options.quality {
            Quality::Level(q) => codec.encode_image_auto(img, q)?,
            Quality::TargetBpp(bpp) => codec.encode_to_rate(img, bpp)?,
            Quality::TargetKbps(_) => {
                return Err(CodecError::InvalidParameter(
                    "kbps targets are for audio; use -q LEVEL or -q Nbpp for images".into(),
                ));
            }
        };
        Ok(coded.container)
    }

    fn decode(&self, file: &Container, limits: &Limits) -> Result<Media> {
        Ok(Media::Image(self.get()?.decode_image(file, limits)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn z_bucket_edges_are_the_documented_values() {
        // docs/BITSTREAM.md §7 lists these bit patterns; a quality exactly at an edge is in the
        // upper bucket, the float just below it in the lower one.
        let documented = [
            0x3eb5_04f4u32,
            0x3f35_04f3,
            0x3fb5_04f3,
            0x401c_c471,
            0x405d_b3d7,
            0x408f_1bbd,
            0x40af_456f,
            0x40cf_623a,
            0x40ef_7751,
        ];
        let docs = include_str!("../../../docs/BITSTREAM.md");
        for (b, (&edge, &bits)) in Z_BUCKET_EDGES.iter().zip(&documented).enumerate() {
            assert_eq!(edge.to_bits(), bits);
            assert!(
                docs.contains(&format!("0x{bits:08x}")),
                "{bits:#x} not in BITSTREAM.md"
            );
            assert_eq!(z_bucket(edge), b + 1);
            assert_eq!(z_bucket(f32::from_bits(bits - 1)), b);
        }
    }

    #[test]
    fn y_rounds_with_the_dead_zone_and_never_panics() {
        let edge = 0.5 + DEAD_ZONE;
        assert_eq!(quantize(edge - 0.01), 0);
        assert_eq!(quantize(-(edge - 0.01)), 0);
        assert_eq!(quantize(edge + 0.01), 1);
        assert_eq!(quantize(-(edge + 0.01)), -1);
        assert_eq!(quantize(1.0 + edge + 0.01), 2);
        assert_eq!(quantize(1.0 + edge - 0.01), 1);
        assert_eq!(quantize(f32::NAN), 0);
        assert_eq!(quantize(f32::INFINITY), SYMBOL_CLAMP as i32);
    }

    /// A reproducible pseudo-random vector in `[-a, a)`.
    fn noise(n: usize, seed: u64, a: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
            })
            .collect()
    }

    #[test]
    fn the_refinement_gradient_is_the_transpose_of_the_whole_synthesis() {
        let codec = HyperpriorCodec::shipped(crate::Backend::Cpu.device()).unwrap();
        let (m, h, w) = (codec.config.m, 3, 2);
        let y = Latent {
            c: m,
            h,
            w,
            data: noise(m * h * w, 1, 2.0),
        };
        let err = noise(3 * h * 16 * w * 16, 2, 0.1);
        let grad = codec.synthesis_vjp(&y, &err).unwrap().expect("a gradient");
        // Against central differences of g_s along a random direction.
        let v = noise(m * h * w, 3, 1.0);
        let gs = |t: f32| -> Vec<f32> {
            let data = y.data.iter().zip(&v).map(|(a, b)| a + t * b).collect();
            values(codec.model.synthesis(codec.upload(data, [1, m, h, w]))).unwrap()
        };
        let eps = 0.05;
        let fd: f64 = gs(eps)
            .iter()
            .zip(gs(-eps))
            .zip(&err)
            .map(|((a, b), e)| f64::from((a - b) / (2.0 * eps) * e))
            .sum();
        let dot: f64 = grad.iter().zip(&v).map(|(g, v)| f64::from(g * v)).sum();
        assert!(
            (dot - fd).abs() <= 0.01 * fd.abs(),
            "vjp·v {dot} vs finite differences {fd}"
        );
        // The deep path is in it: the linear path's transpose alone is measurably different.
        let plane = h * w;
        let mut linear = vec![0.0f32; m * plane];
        for (c, basis) in codec.synth_basis.chunks_exact(BASIS).enumerate() {
            for p in 0..plane {
                let (bi, bj) = (p / w, p % w);
                let mut d = 0.0;
                for ch in 0..3 {
                    for ky in 0..16 {
                        for kx in 0..16 {
                            let e = err[(ch * h * 16 + bi * 16 + ky) * w * 16 + bj * 16 + kx];
                            d += basis[ch * 256 + ky * 16 + kx] * e;
                        }
                    }
                }
                linear[c * plane + p] = d;
            }
        }
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        let diff: Vec<f32> = grad.iter().zip(&linear).map(|(a, b)| a - b).collect();
        assert!(
            norm(&diff) > 0.05 * norm(&grad),
            "{} vs {}",
            norm(&diff),
            norm(&grad)
        );
    }

    #[test]
    fn the_refinement_gradient_in_tiles_is_the_whole_one() {
        let whole = HyperpriorCodec::shipped(crate::Backend::Cpu.device()).unwrap();
        let tiled = HyperpriorCodec::shipped(crate::Backend::Cpu.device())
            .unwrap()
            .with_tile_above(0);
        let (m, h, w) = (whole.config.m, TILE + 6, 3);
        let y = Latent {
            c: m,
            h,
            w,
            data: noise(m * h * w, 4, 2.0),
        };
        let err = noise(3 * h * 16 * w * 16, 5, 0.1);
        let a = whole.synthesis_vjp(&y, &err).unwrap().expect("a gradient");
        let b = tiled.synthesis_vjp(&y, &err).unwrap().expect("a gradient");
        let scale = a.iter().fold(0.0f32, |s, v| s.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "tiles differ by {worst} (largest {scale})"
        );
        // From memory, not a copy: a codec around an in-memory model has no gradient network.
        let cfg = HyperpriorConfig::TINY;
        let device = crate::Backend::Cpu.device();
        let bare =
            HyperpriorCodec::from_model(cfg.init(&device), cfg, ModelId([0; 8]), device).unwrap();
        assert!(bare.grad_network().is_none());
    }

    #[test]
    fn below_level_one_the_step_grows_as_one_over_q() {
        let device = crate::Backend::Cpu.device();
        let cfg = HyperpriorConfig::TINY;
        let codec =
            HyperpriorCodec::from_model(cfg.init(&device), cfg, ModelId([0; 8]), device).unwrap();
        let at = |q, inverse| {
            let table = if inverse {
                &codec.log_inv_gain
            } else {
                &codec.log_gain
            };
            codec.gain(table, q, inverse)
        };
        for (g1, g) in at(1.0, false).iter().zip(at(0.25, false)) {
            assert!((g - g1 * 0.25).abs() <= 1e-5 * g1, "{g} vs {g1}");
        }
        for (g1, g) in at(1.0, true).iter().zip(at(0.25, true)) {
            assert!((g - g1 * 4.0).abs() <= 1e-5 * g1 * 4.0, "{g} vs {g1}");
        }
        // Continuous at 1 and log-linear between ladder points.
        let (a, b, mid) = (at(2.0, false), at(3.0, false), at(2.5, false));
        for ((a, b), m) in a.iter().zip(&b).zip(&mid) {
            assert!((m - (a * b).sqrt()).abs() <= 1e-5 * m);
        }
        assert_eq!(at(0.999_999_9, false).len(), cfg.m);
    }
}
