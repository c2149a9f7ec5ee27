//! The WaLLoC network: wavelet packet transform → linear encoder → bounded quantizer → heavier
//! decoder → inverse transform.
//!
//! Shapes, for an input `x: [B, C, H, W]` (images: `C = 3`, pixels − ½; audio: `C = 2`, `H = 1`,
//! `W = T` samples) whose transformed sides are multiples of `2^J`:
//!
//! | tensor | shape (image) | shape (audio) | made by |
//! |---|---|---|---|
//! | bands | `[B, 3·4^J, H/2^J, W/2^J]` | `[B, 2·2^J, 1, T/2^J]` | [`super::wavelet::forward`] |
//! | `y` | `[B, L, ·, ·]` | same | 1×1 convolution (linear) × per-channel gain |
//! | `ȳ = B·tanh(y/B)` | same | same | bounded squashing, `|ȳ| < B =` [`BOUND`] |
//! | `ŷ = s·⌊ȳ/s⌉` | same | same | quantization with step `s` (the quality knob) |
//! | bands′ | as bands | as bands | decoder: 1×1 conv, residual blocks, 1×1 conv, plus a linear 1×1 path |
//! | `x̂` | `[B, 3, H, W]` | `[B, 2, 1, T]` | [`super::wavelet::inverse`] |
//!
//! The encoder has `C·k^J·L + 2L` parameters (under 10 k for the shipped configurations); the
//! decoder carries the capacity. Each latent channel has a factorized density
//! ([`EntropyBottleneck`]); the probability of symbol `k` at step `s` is the density's mass on
//! `[(k − ½)s, (k + ½)s]`, so one density serves every quality level.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::wavelet::{self, Dims};
use crate::hyperprior::model::{EntropyBottleneck, lower_bound};
use crate::linalg::principal_components;

/// Bound of the squashed latent: symbols at step 1 are 8-bit (`|k| ≤ 127`).
pub const BOUND: f64 = 127.0;
/// Quantization step at the lowest quality level (1).
pub const STEP_MAX: f64 = 16.0;
/// Quantization step at the highest quality level ([`LEVELS`]).
pub const STEP_MIN: f64 = 0.5;
/// Quality levels: `-q 1..=8`, continuous in between.
pub const LEVELS: f64 = 8.0;
/// The gain parameters hold `log(gain) / GAIN_SCALE`, so that Adam moves them quickly.
pub const GAIN_SCALE: f32 = 8.0;
/// Initial encoder gain (latent units per unit of the linear projection).
pub const GAIN_INIT: f64 = 32.0;

/// The quantization step of quality `q` (log-linear from [`STEP_MAX`] at 1 to [`STEP_MIN`] at 8),
/// computed in f64 with `libm` so that encoder and decoder agree on every machine.
pub fn step_of(q: f32) -> f64 {
    let t = (f64::from(q) - 1.0) / (LEVELS - 1.0);
    libm::exp(libm::log(STEP_MAX) + t * (libm::log(STEP_MIN) - libm::log(STEP_MAX)))
}

/// Image or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// RGB images, 2-D transform.
    Image,
    /// Stereo audio, 1-D transform.
    Audio,
}

impl Medium {
    /// Input channels.
    pub fn channels(self) -> usize {
        match self {
            Self::Image => 3,
            Self::Audio => 2,
        }
    }

    /// Transform dimensionality.
    pub fn dims(self) -> Dims {
        match self {
            Self::Image => Dims::Two,
            Self::Audio => Dims::One,
        }
    }
}

/// Network size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallocConfig {
    /// Image or audio.
    pub medium: Medium,
    /// Wavelet packet levels `J`.
    pub levels: usize,
    /// Latent channels `L`.
    pub latent: usize,
    /// Decoder width.
    pub hidden: usize,
    /// Residual blocks in the decoder.
    pub blocks: usize,
}

impl WallocConfig {
    /// The shipped image model: J = 3 (192 bands), 48 latent channels (4× fewer values than
    /// pixels × 3; the paper's 12–16× caps PSNR near 28 dB, and the learned entropy model makes
    /// the extra, weaker channels cheap), decoder of 96 channels and 3 residual blocks.
    pub const IMAGE: Self = Self {
        medium: Medium::Image,
        levels: 3,
        latent: 48,
        hidden: 96,
        blocks: 3,
    };

    /// The shipped audio model: J = 7 (256 bands of 172 Hz at 44.1 kHz), 128 latent channels
    /// (2× fewer values than samples; 32 channels cap the SNR of music near 9 dB), decoder of
    /// 128 channels and 3 residual blocks.
    pub const AUDIO: Self = Self {
        medium: Medium::Audio,
        levels: 7,
        latent: 128,
        hidden: 128,
        blocks: 3,
    };

    /// A tiny configuration for tests.
    pub const fn tiny(medium: Medium) -> Self {
        Self {
            medium,
            levels: 2,
            latent: 4,
            hidden: 8,
            blocks: 1,
        }
    }

    /// Wavelet bands `C·k^J`.
    pub fn bands(&self) -> usize {
        self.medium.channels() * self.medium.dims().bands(self.levels)
    }

    /// Input samples per latent position along each transformed side (`2^J`).
    pub fn stride(&self) -> usize {
        1 << self.levels
    }

    /// Decoder kernel (3×3 for images, 1×3 for audio).
    fn kernel(&self) -> [usize; 2] {
        match self.medium {
            Medium::Image => [3, 3],
            Medium::Audio => [1, 3],
        }
    }

    /// Latent positions of context the decoder needs on each side of a chunk: its convolutions
    /// reach `blocks·2` positions and the inverse transform about 5 more (see `super`).
    pub fn decoder_reach(&self) -> usize {
        2 * self.blocks + 8
    }

    /// Checks the sizes are usable.
    pub fn validate(&self) -> Result<(), String> {
        let max_levels = match self.medium {
            Medium::Image => 5,
            Medium::Audio => 10,
        };
        if !(1..=max_levels).contains(&self.levels)
            || !(1..=256).contains(&self.latent)
            || !(1..=1024).contains(&self.hidden)
            || self.blocks > 16
        {
            return Err(format!("unsupported WaLLoC size {self:?}"));
        }
        Ok(())
    }

    /// A fresh, randomly initialized network.
    pub fn init(&self, device: &Device) -> Walloc {
        self.build(device, true)
    }

    /// A network of zeros, to be overwritten by loaded weights.
    pub fn init_for_loading(&self, device: &Device) -> Walloc {
        self.build(device, false)
    }

    fn build(&self, device: &Device, random: bool) -> Walloc {
        let k = self.kernel();
        let pad = PaddingConfig2d::Explicit(k[0] / 2, k[1] / 2, k[0] / 2, k[1] / 2);
        let conv = |cin: usize, cout: usize, kernel: [usize; 2], pad: PaddingConfig2d| {
            let c = Conv2dConfig::new([cin, cout], kernel).with_padding(pad);
            if random {
                c
            } else {
                c.with_initializer(Initializer::Zeros)
            }
            .init(device)
        };
        let one = |cin, cout| conv(cin, cout, [1, 1], PaddingConfig2d::Valid);
        let l = self.latent;
        let gain = (GAIN_INIT.ln() / f64::from(GAIN_SCALE)) as f32;
        Walloc {
            encoder: one(self.bands(), l),
            log_gain: Param::from_tensor(Tensor::ones([l], device).mul_scalar(gain)),
            log_inv_gain: Param::from_tensor(Tensor::ones([l], device).mul_scalar(-gain)),
            dec_in: one(l, self.hidden),
            dec_blocks: (0..self.blocks)
                .map(|_| ResBlock {
                    a: conv(self.hidden, self.hidden, k, pad.clone()),
                    b: conv(self.hidden, self.hidden, k, pad.clone()),
                })
                .collect(),
            dec_out: one(self.hidden, self.bands()),
            dec_linear: one(l, self.bands()),
            bottleneck: EntropyBottleneck::with_init_scale(l, 2.0 * GAIN_INIT, device),
        }
    }
}

/// `x + conv(gelu(conv(x)))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// First convolution.
    pub a: Conv2d,
    /// Second convolution.
    pub b: Conv2d,
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + self.b.forward(gelu(self.a.forward(x)))
    }
}

/// The network. See the module documentation for shapes.
#[derive(Module, Debug)]
pub struct Walloc {
    /// Linear encoder, bands → latent (1×1).
    pub encoder: Conv2d,
    /// Per-channel log gain of the latent, divided by [`GAIN_SCALE`].
    pub log_gain: Param<Tensor<1>>,
    /// Per-channel log gain applied to `ŷ` before the decoder, divided by [`GAIN_SCALE`].
    pub log_inv_gain: Param<Tensor<1>>,
    /// Decoder input (1×1).
    pub dec_in: Conv2d,
    /// Decoder residual blocks.
    pub dec_blocks: Vec<ResBlock>,
    /// Decoder output, hidden → bands (1×1).
    pub dec_out: Conv2d,
    /// Linear path latent → bands (1×1), added to the decoder output.
    pub dec_linear: Conv2d,
    /// Factorized density of each latent channel.
    pub bottleneck: EntropyBottleneck,
}

/// What one training forward pass returns.
#[derive(Debug)]
pub struct TrainOutput {
    /// Reconstruction, same shape as the input.
    pub x_hat: Tensor<4>,
    /// Bits per sample, `[B]`.
    pub bits: Tensor<1>,
}

fn gain(p: &Param<Tensor<1>>) -> Tensor<4> {
    let g = p.val().mul_scalar(GAIN_SCALE).exp();
    let [l] = g.dims();
    g.reshape([1, l, 1, 1])
}

impl Walloc {
    /// Bands → bounded latent `ȳ`.
    pub fn encode_bands(&self, bands: Tensor<4>) -> Tensor<4> {
        let y = self.encoder.forward(bands) * gain(&self.log_gain);
        y.div_scalar(BOUND).tanh().mul_scalar(BOUND)
    }

    /// `ŷ` (dequantized latent) → bands.
    pub fn decode_bands(&self, y_hat: Tensor<4>) -> Tensor<4> {
        let y = y_hat * gain(&self.log_inv_gain);
        let mut h = self.dec_in.forward(y.clone());
        for block in &self.dec_blocks {
            h = block.forward(h);
        }
        self.dec_out.forward(gelu(h)) + self.dec_linear.forward(y)
    }

    /// Input → bounded latent (transform and encoder).
    pub fn analysis(&self, cfg: &WallocConfig, x: Tensor<4>) -> Tensor<4> {
        self.encode_bands(wavelet::forward(x, cfg.medium.dims(), cfg.levels))
    }

    /// Dequantized latent → input domain (decoder and inverse transform).
    pub fn synthesis(&self, cfg: &WallocConfig, y_hat: Tensor<4>) -> Tensor<4> {
        wavelet::inverse(self.decode_bands(y_hat), cfg.medium.dims(), cfg.levels)
    }

    /// Training forward pass with additive uniform noise of width `step` (`[B]`, one step per
    /// sample) for both the rate and what the decoder sees, as in the paper. `noise` is U(−½, ½)
    /// of the latent's shape, made by the caller so that training is reproducible.
    pub fn forward_train(
        &self,
        cfg: &WallocConfig,
        x: Tensor<4>,
        step: Tensor<1>,
        noise: Tensor<4>,
    ) -> TrainOutput {
        let y = self.analysis(cfg, x);
        let [b, ..] = y.dims();
        let step = step.reshape([b, 1, 1, 1]);
        let y_noisy = y + noise * step.clone();
        let lik = self.bottleneck.likelihood_step(y_noisy.clone(), step);
        let bits = lower_bound(lik, 1e-9)
            .log()
            .reshape([b as i32, -1])
            .sum_dim(1)
            .reshape([b])
            .div_scalar(-std::f64::consts::LN_2);
        TrainOutput {
            x_hat: self.synthesis(cfg, y_noisy),
            bits,
        }
    }
}

impl Walloc {
    /// Initializes the linear parts from a principal component analysis of wavelet bands
    /// (`samples` vectors of `bands` values, row-major): the encoder projects on the top `L`
    /// components (centred) with one gain that keeps the strongest component at 4σ ≈ 50 (where the
    /// squashing to ±127 is nearly linear), the linear decoder path maps back, the deep decoder
    /// path starts at zero and each channel's density starts as wide as its latent. The network starts as the best linear autoencoder of the data and learns from there.
    pub fn init_from_pca(mut self, cfg: &WallocConfig, samples: &[f32], device: &Device) -> Self {
        let n = cfg.bands();
        let count = samples.len() / n;
        if count < 2 {
            return self;
        }
        let mut mean = vec![0.0f64; n];
        for row in samples.chunks_exact(n) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= count as f64);
        let (values, vectors) = principal_components(samples, &mean, n);
        let l = cfg.latent.min(n);
        let mut enc = vec![0.0f32; cfg.latent * n];
        let mut enc_bias = vec![0.0f32; cfg.latent];
        let mut dec = vec![0.0f32; n * cfg.latent];
        for k in 0..l {
            let u = &vectors[k * n..(k + 1) * n];
            let mut b = 0.0;
            for i in 0..n {
                enc[k * n + i] = u[i] as f32;
                dec[i * cfg.latent + k] = u[i] as f32;
                b -= u[i] * mean[i];
            }
            enc_bias[k] = b as f32;
        }
        let param4 = |data: Vec<f32>, shape: [usize; 4]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
        };
        let param1 = |data: Vec<f32>| {
            let len = data.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(data, [len]), device))
        };
        // One gain for every component (uniform steps are MSE-optimal for an orthonormal basis),
        // chosen so that the strongest component stays where the squashing is nearly linear:
        // 4σ ≈ 50 (127·tanh(50/127) = 47.6).
        let gain = (12.5 / values.first().copied().unwrap_or(1.0).max(1e-12).sqrt()).ln();
        let log_gain = (gain / f64::from(GAIN_SCALE)) as f32;
        self.log_gain = param1(vec![log_gain; cfg.latent]);
        self.log_inv_gain = param1(vec![-log_gain; cfg.latent]);
        // Each channel's density starts as wide as its latent: 2σ_k·gain (at least 1).
        let g = gain.exp();
        let scales: Vec<f64> = (0..cfg.latent)
            .map(|k| (2.0 * g * values.get(k).copied().unwrap_or(0.0).max(0.0).sqrt()).max(1.0))
            .collect();
        self.bottleneck = EntropyBottleneck::with_init_scales(&scales, device);
        self.encoder.weight = param4(enc, [cfg.latent, n, 1, 1]);
        self.encoder.bias = Some(param1(enc_bias));
        self.dec_linear.weight = param4(dec, [n, cfg.latent, 1, 1]);
        self.dec_linear.bias = Some(param1(mean.iter().map(|&m| m as f32).collect()));
        let [o, i, kh, kw] = self.dec_out.weight.dims();
        self.dec_out.weight = param4(vec![0.0; o * i * kh * kw], [o, i, kh, kw]);
        self.dec_out.bias = Some(param1(vec![0.0; o]));
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pca_initialization_is_the_best_linear_autoencoder() {
        // Data in a 4-dimensional subspace of the 48 bands of a J = 2 image model with 4 latents:
        // after the PCA initialization the network reconstructs its bands almost exactly.
        let device = Device::flex();
        let cfg = WallocConfig {
            latent: 4,
            ..WallocConfig::tiny(Medium::Image)
        };
        let n = cfg.bands();
        let mut rows = Vec::new();
        let mut state = 7u64;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        };
        let basis: Vec<f32> = (0..4 * n).map(|_| rnd()).collect();
        for _ in 0..500 {
            let w: Vec<f32> = (0..4).map(|_| rnd()).collect();
            rows.extend((0..n).map(|i| 0.1 + (0..4).map(|k| w[k] * basis[k * n + i]).sum::<f32>()));
        }
        let model = cfg.init(&device).init_from_pca(&cfg, &rows, &device);
        let x = Tensor::<4>::from_data(
            TensorData::new(rows[..n * 16].to_vec(), [16, 1, 1, n]),
            &device,
        )
        .permute([0, 3, 1, 2]);
        let back = model.decode_bands(model.encode_bands(x.clone()));
        let err = (back - x.clone())
            .abs()
            .max()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()[0];
        let scale = x
            .abs()
            .max()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()[0];
        assert!(err < 0.03 * scale, "error {err} of {scale}");
    }
}
