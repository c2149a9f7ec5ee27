//! The mean-scale hyperprior network (Minnen, Ballé, Toderici 2018 without the autoregressive
//! context), with gain vectors for variable rate (Cui et al. 2021).
//!
//! Shapes, for an input `x: [B, 3, H, W]` with `H` and `W` multiples of 64:
//!
//! | tensor | shape | made by |
//! |---|---|---|
//! | `y` | `[B, M, H/16, W/16]` | `g_a(x)` (4× conv 5×5 stride 2, simplified GDN between) |
//! | `y·g(q)` | same | per-channel gain of quality `q` |
//! | `z` | `[B, N, H/64, W/64]` | `h_a(y·g)` (conv 3×3, 2× conv 5×5 stride 2, leaky ReLU) |
//! | `(σ, μ)` | `2 × [B, M, H/16, W/16]` | `h_s(ẑ)` (2× deconv 5×5 stride 2, conv 3×3) |
//! | `x̂` | `[B, 3, H, W]` | `g_s(ŷ·g⁻¹(q))` (4× deconv 5×5 stride 2, inverse GDN between) |
//!
//! With [`HyperpriorConfig::shortcut`], `g_a` and `g_s` each add a linear path beside the deep one:
//! a 16×16 block transform (conv 16×16 stride 16, `3·256 → M`) into `y`, and its transpose out of
//! `ŷ` (the "linear shortcuts" that make learned transforms converge faster, as in AuxT). Training
//! starts it from the principal components of the training data's 16×16 blocks
//! ([`Hyperprior::init_from_pca`]) with the deep paths' last layers at zero, so step 0 is already
//! a working transform coder and the steps go to what a linear transform cannot do.
//!
//! `ẑ` is coded with a factorized prior ([`EntropyBottleneck`]), `ŷ` with a Gaussian of mean `μ`
//! and scale `σ`. At coding time `h_s` runs in the deterministic CPU path of
//! [`super::hs_cpu`], never in Burn, so the scale indices agree on every machine.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::{leaky_relu, sigmoid, softplus};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::linalg::principal_components;

/// Slope of every leaky ReLU (PyTorch's default).
pub const LEAKY_SLOPE: f64 = 0.01;
/// Smallest Gaussian scale (CompressAI's `SCALES_MIN`).
pub const SCALE_MIN: f64 = 0.11;
/// The λ of each quality level (CompressAI's MSE ladder): loss = λ·255²·MSE + bpp.
pub const LAMBDAS: [f64; 8] = [
    0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800,
];
/// The gain parameters hold `log(gain) / GAIN_SCALE`, so Adam moves the log-gains `GAIN_SCALE`
/// times faster than the convolution weights (the rate of each level settles in hundreds of steps
/// instead of thousands).
pub const GAIN_SCALE: f32 = 8.0;
/// Initial gain of the middle quality level.
pub const GAIN_AT_MID: f64 = 4.0;
/// The input side must be a multiple of this (four stride-2 layers, then two more in `h_a`).
pub const ALIGN: usize = 64;
/// Side of the linear shortcut's blocks (the downsampling of `g_a`).
pub const BLOCK: usize = 16;

/// Network size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HyperpriorConfig {
    /// Channels of the hidden layers and of `z`.
    pub n: usize,
    /// Channels of `y`.
    pub m: usize,
    /// Quality levels (gain vectors); level `l` is trained with `LAMBDAS[l]`.
    pub levels: usize,
    /// Linear 16×16 block-transform paths beside `g_a` and `g_s` (absent from weights files made
    /// before they existed, which load as `false`).
    #[serde(default)]
    pub shortcut: bool,
}

impl HyperpriorConfig {
    /// The configuration of the shipped model.
    pub const SHIPPED: Self = Self {
        n: 64,
        m: 256,
        levels: 8,
        shortcut: true,
    };

    /// A tiny configuration for tests.
    pub const TINY: Self = Self {
        n: 8,
        m: 12,
        levels: 8,
        shortcut: true,
    };

    /// Channels of the middle layer of `h_s`.
    pub fn hs_mid(&self) -> usize {
        self.m * 3 / 2
    }

    /// Checks the sizes are usable.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.n)
            || !(1..=1024).contains(&self.m)
            || !(1..=LAMBDAS.len()).contains(&self.levels)
        {
            return Err(format!(
                "unsupported hyperprior size n={} m={} levels={}",
                self.n, self.m, self.levels
            ));
        }
        Ok(())
    }

    /// A fresh, randomly initialized network.
    pub fn init(&self, device: &Device) -> Hyperprior {
        self.build(device, true)
    }

    /// A network whose convolution weights are zeros, to be overwritten by loaded weights (skips
    /// drawing millions of random numbers).
    pub fn init_for_loading(&self, device: &Device) -> Hyperprior {
        self.build(device, false)
    }

    fn build(&self, device: &Device, random: bool) -> Hyperprior {
        let (n, m) = (self.n, self.m);
        let zeros = (!random).then_some(Initializer::Zeros);
        let down = |cin, cout| {
            let c = Conv2dConfig::new([cin, cout], [5, 5])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2));
            match &zeros {
                Some(z) => c.with_initializer(z.clone()),
                None => c,
            }
            .init(device)
        };
        let up = |cin, cout| {
            let c = ConvTranspose2dConfig::new([cin, cout], [5, 5])
                .with_stride([2, 2])
                .with_padding([2, 2])
                .with_padding_out([1, 1]);
            match &zeros {
                Some(z) => c.with_initializer(z.clone()),
                None => c,
            }
            .init(device)
        };
        let same = |cin, cout| {
            let c = Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
            match &zeros {
                Some(z) => c.with_initializer(z.clone()),
                None => c,
            }
            .init(device)
        };
        // Gains start at GAIN_AT_MID·√(λ_l / λ_mid): the step size that balances rate and MSE scales
        // as 1/√λ, and GAIN_AT_MID lifts the small latents of a fresh g_a above the rounding step.
        let mid = LAMBDAS[(self.levels - 1) / 2];
        let mut log_gain = Vec::with_capacity(self.levels * m);
        for lambda in LAMBDAS.iter().take(self.levels) {
            let g = (GAIN_AT_MID.ln() + 0.5 * (lambda / mid).ln()) / f64::from(GAIN_SCALE);
            log_gain.extend(std::iter::repeat_n(g as f32, m));
        }
        let gain = Tensor::<2>::from_data(TensorData::new(log_gain, [self.levels, m]), device);
        let block = |c: Conv2dConfig| match &zeros {
            Some(z) => c.with_initializer(z.clone()),
            None => c,
        };
        let ga_short = self.shortcut.then(|| {
            block(Conv2dConfig::new([3, m], [BLOCK, BLOCK]).with_stride([BLOCK, BLOCK]))
                .init(device)
        });
        let gs_short = self.shortcut.then(|| {
            let c = ConvTranspose2dConfig::new([m, 3], [BLOCK, BLOCK]).with_stride([BLOCK, BLOCK]);
            match &zeros {
                Some(z) => c.with_initializer(z.clone()),
                None => c,
            }
            .init(device)
        });
        Hyperprior {
            ga_short,
            gs_short,
            ga: vec![down(3, n), down(n, n), down(n, n), down(n, m)],
            ga_gdn: vec![
                Gdn::new(n, device),
                Gdn::new(n, device),
                Gdn::new(n, device),
            ],
            gs: vec![up(m, n), up(n, n), up(n, n), up(n, 3)],
            gs_igdn: vec![
                Gdn::new(n, device),
                Gdn::new(n, device),
                Gdn::new(n, device),
            ],
            ha: vec![same(m, n), down(n, n), down(n, n)],
            hs_up: vec![up(n, m), up(m, self.hs_mid())],
            hs_out: same(self.hs_mid(), 2 * m),
            log_gain: Param::from_tensor(gain.clone()),
            log_inv_gain: Param::from_tensor(gain.neg()),
            bottleneck: EntropyBottleneck::new(n, device),
        }
    }
}

/// Simplified GDN (Johnston et al. 2019): `y = x / (β + γ·|x|)`, or its inverse `y = x·(β + γ·|x|)`.
/// `β` and `γ` are kept nonnegative by storing their square roots.
#[derive(Module, Debug)]
pub struct Gdn {
    /// √γ, `[C, C]`.
    pub gamma: Param<Tensor<2>>,
    /// √(β − 1e-6), `[C]`.
    pub beta: Param<Tensor<1>>,
}

impl Gdn {
    fn new(c: usize, device: &Device) -> Self {
        let mut g = vec![1e-3f32; c * c];
        for i in 0..c {
            g[i * c + i] = 0.1f32.sqrt();
        }
        Self {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(g, [c, c]), device)),
            beta: Param::from_tensor(Tensor::ones([c], device)),
        }
    }

    /// The denominator `β + γ·|x|`.
    fn norm(&self, x: Tensor<4>) -> Tensor<4> {
        let gamma = self.gamma.val();
        let [c, _] = gamma.dims();
        let gamma = gamma.square().reshape([c, c, 1, 1]);
        let beta = self.beta.val().square().add_scalar(1e-6);
        conv2d(
            x.abs(),
            gamma,
            Some(beta),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
    }

    /// GDN: divide by the norm.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() / self.norm(x)
    }

    /// Inverse GDN: multiply by the norm.
    pub fn inverse(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() * self.norm(x)
    }
}

/// Factorized density of `z` (Ballé et al. 2018, appendix 6.1; CompressAI's `EntropyBottleneck`
/// with filters (3, 3, 3)): per channel, a monotone map `x ↦ logit F(x)` built from 1→3→3→3→1
/// matrices with softplus-positive entries and tanh "factors".
#[derive(Module, Debug)]
pub struct EntropyBottleneck {
    /// Raw matrices `[C, out, in]`; the used value is `softplus(raw)`.
    pub matrices: Vec<Param<Tensor<3>>>,
    /// Biases `[C, out, 1]`.
    pub biases: Vec<Param<Tensor<3>>>,
    /// Raw factors `[C, out, 1]`; the used value is `tanh(raw)`.
    pub factors: Vec<Param<Tensor<3>>>,
}

/// Widths of the bottleneck's layers.
pub const BOTTLENECK_FILTERS: [usize; 5] = [1, 3, 3, 3, 1];

impl EntropyBottleneck {
    fn new(c: usize, device: &Device) -> Self {
        Self::with_init_scale(c, 10.0, device)
    }

    /// A bottleneck of `c` channels whose initial density is about `init_scale` wide (CompressAI's
    /// `init_scale`; 10 for the hyper-latent).
    pub fn with_init_scale(c: usize, init_scale: f64, device: &Device) -> Self {
        Self::with_init_scales(&vec![init_scale; c], device)
    }

    /// A bottleneck whose channel `c` starts about `init_scales[c]` wide (a density fitted to
    /// known latent spreads starts near its optimum instead of thousands of steps away).
    pub fn with_init_scales(init_scales: &[f64], device: &Device) -> Self {
        let f = BOTTLENECK_FILTERS;
        let c = init_scales.len();
        let (mut matrices, mut biases, mut factors) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..f.len() - 1 {
            let per = f[i + 1] * f[i];
            let values: Vec<f32> = init_scales
                .iter()
                .flat_map(|&s| {
                    let scale = s.max(1e-3).powf(1.0 / (f.len() - 1) as f64);
                    let init = (1.0 / scale / f[i + 1] as f64).exp_m1().ln() as f32;
                    std::iter::repeat_n(init, per)
                })
                .collect();
            matrices.push(Param::from_tensor(Tensor::<3>::from_data(
                TensorData::new(values, [c, f[i + 1], f[i]]),
                device,
            )));
            biases.push(Param::from_tensor(Tensor::<3>::random(
                [c, f[i + 1], 1],
                Distribution::Uniform(-0.5, 0.5),
                device,
            )));
            if i + 1 < f.len() - 1 {
                factors.push(Param::from_tensor(Tensor::<3>::zeros(
                    [c, f[i + 1], 1],
                    device,
                )));
            }
        }
        Self {
            matrices,
            biases,
            factors,
        }
    }

    /// `logit F(x)` for `x: [C, 1, P]`.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let mut h = x;
        for (i, m) in self.matrices.iter().enumerate() {
            h = softplus(m.val(), 1.0).matmul(h) + self.biases[i].val();
            if let Some(f) = self.factors.get(i) {
                h = h.clone() + f.val().tanh() * h.tanh();
            }
        }
        h
    }

    /// Likelihood of each element of `z: [B, C, H, W]` on `[z − ½, z + ½]`, same shape.
    pub fn likelihood(&self, z: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = z.dims();
        let x = z.swap_dims(0, 1).reshape([c, 1, b * h * w]);
        let lower = self.logits(x.clone().sub_scalar(0.5));
        let upper = self.logits(x.add_scalar(0.5));
        Self::bin_mass(lower, upper)
            .reshape([c, b, h, w])
            .swap_dims(0, 1)
    }

    /// Likelihood of each element of `v: [B, C, H, W]` on `[v − s/2, v + s/2]` for a quantization
    /// step `s` per sample (`step: [B, 1, 1, 1]`), same shape as `v`.
    pub fn likelihood_step(&self, v: Tensor<4>, step: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = v.dims();
        let half = step
            .mul_scalar(0.5)
            .expand([b, c, h, w])
            .swap_dims(0, 1)
            .reshape([c, 1, b * h * w]);
        let x = v.swap_dims(0, 1).reshape([c, 1, b * h * w]);
        let lower = self.logits(x.clone() - half.clone());
        let upper = self.logits(x + half);
        Self::bin_mass(lower, upper)
            .reshape([c, b, h, w])
            .swap_dims(0, 1)
    }

    fn bin_mass(lower: Tensor<3>, upper: Tensor<3>) -> Tensor<3> {
        // Work on the side of the median where the CDF is small, for precision.
        let sign = (lower.clone() + upper.clone()).sign().neg().detach();
        (sigmoid(upper * sign.clone()) - sigmoid(lower * sign)).abs()
    }
}

/// The network. See the module documentation for shapes.
#[derive(Module, Debug)]
pub struct Hyperprior {
    /// Linear block-transform path of `g_a` (with [`HyperpriorConfig::shortcut`]).
    pub ga_short: Option<Conv2d>,
    /// Linear block-transform path of `g_s`.
    pub gs_short: Option<ConvTranspose2d>,
    /// Analysis transform convolutions.
    pub ga: Vec<Conv2d>,
    /// GDN after each of the first three analysis convolutions.
    pub ga_gdn: Vec<Gdn>,
    /// Synthesis transform transposed convolutions.
    pub gs: Vec<ConvTranspose2d>,
    /// Inverse GDN after each of the first three synthesis layers.
    pub gs_igdn: Vec<Gdn>,
    /// Hyper-analysis convolutions.
    pub ha: Vec<Conv2d>,
    /// Hyper-synthesis transposed convolutions.
    pub hs_up: Vec<ConvTranspose2d>,
    /// Hyper-synthesis output convolution (scales, then means).
    pub hs_out: Conv2d,
    /// Log gain per quality level and channel divided by [`GAIN_SCALE`], `[L, M]`.
    pub log_gain: Param<Tensor<2>>,
    /// Log inverse gain per quality level and channel divided by [`GAIN_SCALE`], `[L, M]`.
    pub log_inv_gain: Param<Tensor<2>>,
    /// The factorized prior of `z`.
    pub bottleneck: EntropyBottleneck,
}

/// What one training forward pass returns.
#[derive(Debug)]
pub struct TrainOutput {
    /// Reconstruction, `[B, 3, H, W]`.
    pub x_hat: Tensor<4>,
    /// Bits per sample, `[B]` (−Σ log2 of the likelihoods of `y` and `z`).
    pub bits: Tensor<1>,
}

impl Hyperprior {
    /// The analysis transform `g_a`.
    pub fn analysis(&self, x: Tensor<4>) -> Tensor<4> {
        let linear = self.ga_short.as_ref().map(|c| c.forward(x.clone()));
        let mut h = x;
        for (i, conv) in self.ga.iter().enumerate() {
            h = conv.forward(h);
            if let Some(gdn) = self.ga_gdn.get(i) {
                h = gdn.forward(h);
            }
        }
        match linear {
            Some(l) => h + l,
            None => h,
        }
    }

    /// The synthesis transform `g_s`.
    pub fn synthesis(&self, y: Tensor<4>) -> Tensor<4> {
        let linear = self.gs_short.as_ref().map(|c| c.forward(y.clone()));
        let mut h = y;
        for (i, conv) in self.gs.iter().enumerate() {
            h = conv.forward(h);
            if let Some(igdn) = self.gs_igdn.get(i) {
                h = igdn.inverse(h);
            }
        }
        match linear {
            Some(l) => h + l,
            None => h,
        }
    }

    /// Starts the linear paths from the principal components of `blocks` (rows of `3·16·16`
    /// values in `[0, 1]`, laid out channel, row, column), zeroes the last layer of each deep path
    /// so that the network starts as a block transform coder, and sets every quality level's gain
    /// to the step that balances its λ against the rate at high rate. Without a shortcut, or with
    /// fewer than two blocks, returns the network unchanged.
    ///
    /// For an orthonormal transform with uniform steps Δ, `λ·255²·MSE + bpp` is least at
    /// `Δ² = 18 / (λ·255²·ln 2)` (MSE `Δ²/12` per kept coefficient over `3·256` values, rate
    /// `−log2 Δ` per coefficient over 256 pixels); the gain is `1/Δ`.
    pub fn init_from_pca(
        mut self,
        cfg: &HyperpriorConfig,
        blocks: &[f32],
        device: &Device,
    ) -> Self {
        let n = 3 * BLOCK * BLOCK;
        if !cfg.shortcut || blocks.len() / n < 2 {
            return self;
        }
        let pca = BlockPca::new(blocks);
        let (colour_mean, mean, vectors) = (pca.colour_mean, pca.mean, pca.vectors);
        let m = cfg.m;
        let mut weight = vec![0.0f32; m * n];
        let mut bias = vec![0.0f32; m];
        for k in 0..m.min(n) {
            let u = &vectors[k * n..(k + 1) * n];
            for i in 0..n {
                weight[k * n + i] = u[i] as f32;
            }
            bias[k] = -u.iter().zip(&mean).map(|(a, b)| a * b).sum::<f64>() as f32;
        }
        let param4 = |data: Vec<f32>, shape: [usize; 4]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
        };
        let param1 = |data: Vec<f32>| {
            let len = data.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(data, [len]), device))
        };
        if let Some(conv) = self.ga_short.as_mut() {
            conv.weight = param4(weight.clone(), [m, 3, BLOCK, BLOCK]);
            conv.bias = Some(param1(bias));
        }
        if let Some(conv) = self.gs_short.as_mut() {
            conv.weight = param4(weight, [m, 3, BLOCK, BLOCK]);
            conv.bias = Some(param1(colour_mean.iter().map(|&v| v as f32).collect()));
        }
        if let Some(last) = self.ga.last_mut() {
            let [o, i, kh, kw] = last.weight.dims();
            last.weight = param4(vec![0.0; o * i * kh * kw], [o, i, kh, kw]);
            last.bias = Some(param1(vec![0.0; o]));
        }
        if let Some(last) = self.gs.last_mut() {
            let [i, o, kh, kw] = last.weight.dims();
            last.weight = param4(vec![0.0; o * i * kh * kw], [i, o, kh, kw]);
            last.bias = Some(param1(vec![0.0; o]));
        }
        let mut log_gain = Vec::with_capacity(cfg.levels * m);
        for lambda in LAMBDAS.iter().take(cfg.levels) {
            let step2 = 18.0 / (lambda * 255.0 * 255.0 * std::f64::consts::LN_2);
            let g = (-0.5 * step2.ln()) / f64::from(GAIN_SCALE);
            log_gain.extend(std::iter::repeat_n(g as f32, m));
        }
        let gain = Tensor::<2>::from_data(TensorData::new(log_gain, [cfg.levels, m]), device);
        self.log_gain = Param::from_tensor(gain.clone());
        self.log_inv_gain = Param::from_tensor(gain.neg());
        self
    }

    /// Widens a trained network with a shortcut from `cfg.m` to `m` latent channels without
    /// changing what it does: the new channels of `y` are the next principal components of
    /// `blocks` (as in [`Self::init_from_pca`], made orthogonal to the trained block transform),
    /// coded by the linear paths only (the deep paths' and `h_a`'s weights for them start at zero).
    /// Their gains are those of the last trained channel and their predicted scales that channel's,
    /// times the ratio of the components' standard deviations, so they start near a sensible rate.
    /// The hyper-synthesis grows to `3m/2` middle channels, the new ones feeding nothing yet.
    ///
    /// The network keeps its rate-distortion behaviour on the old channels and gains the quality
    /// the truncated components cost (on Kodak, 128 of the 768 block components cap PSNR at
    /// 32.6 dB, 256 at 41 dB); training then fits the new channels.
    ///
    /// # Errors
    /// A message for a network without a shortcut, `m` not above `cfg.m` or beyond `3·16·16`,
    /// fewer than two blocks, or parameters of unexpected shapes.
    pub fn widen(
        self,
        cfg: &HyperpriorConfig,
        m: usize,
        blocks: &[f32],
        device: &Device,
    ) -> Result<(Self, HyperpriorConfig), String> {
        let n_block = 3 * BLOCK * BLOCK;
        let wide = HyperpriorConfig { m, ..*cfg };
        if !cfg.shortcut {
            return Err("only a network with the linear shortcut can be widened".into());
        }
        if m <= cfg.m || m > n_block {
            return Err(format!(
                "cannot widen M = {} to {m} (it must grow, up to {n_block})",
                cfg.m
            ));
        }
        if blocks.len() / n_block < 2 {
            return Err("widening needs at least two blocks of training data".into());
        }
        wide.validate()?;
        let (m0, m1) = (cfg.m, m);
        let (mid0, mid1) = (cfg.hs_mid(), wide.hs_mid());
        let (ga_short, gs_short) = match (&self.ga_short, &self.gs_short) {
            (Some(a), Some(s)) => (a, s),
            _ => return Err("the network has no shortcut layers".into()),
        };
        let analysis_rows = host(&ga_short.weight)?;
        let mut synth_rows = host(&gs_short.weight)?;
        let mut bias = host_bias(ga_short.bias.as_ref(), m0)?;
        if analysis_rows.len() != m0 * n_block {
            return Err("the shortcut's shape does not match its configuration".into());
        }

        // New directions: principal components in order of variance, minus their part in the
        // span of the trained rows and of the directions already taken.
        let pca = BlockPca::new(blocks);
        let mut basis: Vec<Vec<f64>> = Vec::with_capacity(m1);
        let orthogonalize = |v: &mut Vec<f64>, basis: &[Vec<f64>]| {
            for q in basis {
                let dot: f64 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(q).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter_mut().for_each(|a| *a /= norm.max(1e-12));
            norm
        };
        for row in analysis_rows.chunks_exact(n_block) {
            let mut v: Vec<f64> = row.iter().map(|&a| f64::from(a)).collect();
            if orthogonalize(&mut v, &basis) > 1e-6 {
                basis.push(v);
            }
        }
        let mut added: Vec<(Vec<f64>, f64)> = Vec::with_capacity(m1 - m0);
        for k in 0..n_block {
            if added.len() == m1 - m0 {
                break;
            }
            let mut v = pca.vectors[k * n_block..(k + 1) * n_block].to_vec();
            // Keep a direction only if most of it lies outside what is already coded.
            if orthogonalize(&mut v, &basis) > 0.5 {
                basis.push(v.clone());
                added.push((v, pca.values[k].max(0.0)));
            }
        }
        if added.len() < m1 - m0 {
            return Err("the blocks do not span enough new directions".into());
        }
        let reference = pca.values[m0 - 1].max(1e-12);
        let ratio: Vec<f32> = added
            .iter()
            .map(|(_, v)| (v / reference).sqrt().min(1.0) as f32)
            .collect();

        let mut me = self;
        let param4 = |data: Vec<f32>, shape: [usize; 4]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
        };
        let param1 = |data: Vec<f32>| {
            let len = data.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(data, [len]), device))
        };
        let param2 = |data: Vec<f32>, shape: [usize; 2]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(data, shape), device))
        };
        // Linear paths: the new rows are the new directions (orthonormal, so the synthesis rows
        // are the same vectors).
        let mut rows = analysis_rows;
        for (u, _) in &added {
            rows.extend(u.iter().map(|&a| a as f32));
            synth_rows.extend(u.iter().map(|&a| a as f32));
            bias.push(-u.iter().zip(&pca.mean).map(|(a, b)| a * b).sum::<f64>() as f32);
        }
        if let Some(c) = me.ga_short.as_mut() {
            c.weight = param4(rows, [m1, 3, BLOCK, BLOCK]);
            c.bias = Some(param1(bias));
        }
        if let Some(c) = me.gs_short.as_mut() {
            c.weight = param4(synth_rows, [m1, 3, BLOCK, BLOCK]);
        }

        // Deep paths: no weights into or out of the new channels yet.
        let n = cfg.n;
        let last = me
            .ga
            .last_mut()
            .ok_or_else(|| "g_a has no layers".to_string())?;
        let w = host(&last.weight)?;
        let per = n * 25;
        let mut grown = w;
        grown.resize(m1 * per, 0.0);
        last.weight = param4(grown, [m1, n, 5, 5]);
        let mut b = host_bias(last.bias.as_ref(), m0)?;
        b.resize(m1, 0.0);
        last.bias = Some(param1(b));

        let first = me
            .gs
            .first_mut()
            .ok_or_else(|| "g_s has no layers".to_string())?;
        let mut grown = host(&first.weight)?;
        grown.resize(m1 * per, 0.0);
        first.weight = param4(grown, [m1, n, 5, 5]);

        // h_a: zero weights from the new channels.
        let ha0 = me
            .ha
            .first_mut()
            .ok_or_else(|| "h_a has no layers".to_string())?;
        let w = host(&ha0.weight)?;
        ha0.weight = param4(
            rebuild([n, m1, 3, 3], |[o, i, y, x]| {
                if i < m0 {
                    w[((o * m0 + i) * 3 + y) * 3 + x]
                } else {
                    0.0
                }
            }),
            [n, m1, 3, 3],
        );

        // h_s: new middle channels repeat old ones (so that they carry signal to learn from) but
        // feed nothing; the output layer predicts the new scales from the last old channel's.
        let (hs0, hs1) = match me.hs_up.as_mut_slice() {
            [a, b] => (a, b),
            _ => return Err("h_s has an unexpected number of layers".into()),
        };
        let w = host(&hs0.weight)?;
        hs0.weight = param4(
            rebuild([n, m1, 5, 5], |[i, o, y, x]| {
                w[((i * m0 + o % m0) * 5 + y) * 5 + x]
            }),
            [n, m1, 5, 5],
        );
        let b = host_bias(hs0.bias.as_ref(), m0)?;
        hs0.bias = Some(param1((0..m1).map(|o| b[o % m0]).collect()));
        let w = host(&hs1.weight)?;
        hs1.weight = param4(
            rebuild([m1, mid1, 5, 5], |[i, o, y, x]| {
                if i < m0 {
                    w[((i * mid0 + o % mid0) * 5 + y) * 5 + x]
                } else {
                    0.0
                }
            }),
            [m1, mid1, 5, 5],
        );
        let b = host_bias(hs1.bias.as_ref(), mid0)?;
        hs1.bias = Some(param1((0..mid1).map(|o| b[o % mid0]).collect()));

        let w = host(&me.hs_out.weight)?;
        let b = host_bias(me.hs_out.bias.as_ref(), 2 * m0)?;
        // Output row `o` of the wide layer: the old row it comes from, and a factor.
        let source = |o: usize| -> Option<(usize, f32)> {
            if o < m0 {
                Some((o, 1.0))
            } else if o < m1 {
                Some((m0 - 1, ratio[o - m0]))
            } else if o < m1 + m0 {
                Some((m0 + o - m1, 1.0))
            } else {
                None
            }
        };
        me.hs_out.weight = param4(
            rebuild([2 * m1, mid1, 3, 3], |[o, i, y, x]| match source(o) {
                Some((r, f)) if i < mid0 => w[((r * mid0 + i) * 3 + y) * 3 + x] * f,
                _ => 0.0,
            }),
            [2 * m1, mid1, 3, 3],
        );
        me.hs_out.bias = Some(param1(
            (0..2 * m1)
                .map(|o| source(o).map_or(0.0, |(r, f)| b[r] * f))
                .collect(),
        ));

        // Gains of the new channels: the last old channel's.
        let levels = cfg.levels;
        for table in [&mut me.log_gain, &mut me.log_inv_gain] {
            let g = host(table)?;
            *table = param2(
                rebuild([levels, m1], |[l, c]| g[l * m0 + c.min(m0 - 1)]),
                [levels, m1],
            );
        }
        Ok((me, wide))
    }

    /// The network with the quantization steps of `channels` multiplied by `factor` at every
    /// quality level (gains divided by it, inverse gains multiplied): a post-training change of how
    /// the rate is shared between channels (see `ncodec calibrate --step-scale`).
    ///
    /// # Errors
    /// An empty or out-of-range channel range, a factor that is not finite and positive, or
    /// parameters that cannot be read back.
    pub fn scale_steps(
        self,
        channels: std::ops::Range<usize>,
        factor: f64,
        device: &Device,
    ) -> Result<Self, String> {
        let levels = self.log_gain.val().dims()[0];
        self.scale_steps_at(channels, 0..levels, factor, device)
    }

    /// [`Self::scale_steps`] at the quality levels `levels` only (0-based indices of the ladder:
    /// level `l` is quality `l + 1`; qualities between two levels interpolate their gains, and
    /// qualities below 1 scale level 0's).
    ///
    /// # Errors
    /// As [`Self::scale_steps`], and an empty or out-of-range level range.
    pub fn scale_steps_at(
        mut self,
        channels: std::ops::Range<usize>,
        levels: std::ops::Range<usize>,
        factor: f64,
        device: &Device,
    ) -> Result<Self, String> {
        let [count, m] = self.log_gain.val().dims();
        if channels.is_empty() || channels.end > m {
            return Err(format!(
                "channels {channels:?} are not a range within the {m} latent channels"
            ));
        }
        if levels.is_empty() || levels.end > count {
            return Err(format!(
                "levels {levels:?} are not a range within the {count} quality levels"
            ));
        }
        if !(factor.is_finite() && factor > 0.0) {
            return Err(format!("step factor {factor} is not a positive number"));
        }
        let shift = (factor.ln() / f64::from(GAIN_SCALE)) as f32;
        for (table, sign) in [(&mut self.log_gain, -1.0f32), (&mut self.log_inv_gain, 1.0)] {
            let g = host(table)?;
            let data = rebuild([count, m], |[l, c]| {
                g[l * m + c]
                    + if channels.contains(&c) && levels.contains(&l) {
                        sign * shift
                    } else {
                        0.0
                    }
            });
            // The parameter keeps its id: the rescaled weights file then depends only on the
            // values, so the same command writes the same bytes (and model id) every time.
            *table = Param::initialized(
                table.id,
                Tensor::from_data(TensorData::new(data, [count, m]), device),
            );
        }
        Ok(self)
    }

    /// The hyper-analysis `h_a`.
    pub fn hyper_analysis(&self, y: Tensor<4>) -> Tensor<4> {
        let mut h = y;
        for (i, conv) in self.ha.iter().enumerate() {
            h = conv.forward(h);
            if i + 1 < self.ha.len() {
                h = leaky_relu(h, LEAKY_SLOPE);
            }
        }
        h
    }

    /// The hyper-synthesis `h_s` in Burn (training only): `(σ, μ)`.
    pub fn hyper_synthesis(&self, z_hat: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut h = z_hat;
        for conv in &self.hs_up {
            h = leaky_relu(conv.forward(h), LEAKY_SLOPE);
        }
        let out = self.hs_out.forward(h);
        let mut halves = out.chunk(2, 1);
        let means = halves.pop();
        let scales = halves.pop();
        match (scales, means) {
            (Some(s), Some(m)) => (s, m),
            _ => unreachable!("chunk(2) of an even channel count gives two halves"),
        }
    }

    /// Per-sample gains `[B, M, 1, 1]` for integer levels `levels` (one per sample).
    fn gains(&self, table: &Param<Tensor<2>>, levels: Tensor<1, Int>) -> Tensor<4> {
        let g = table.val().select(0, levels).mul_scalar(GAIN_SCALE).exp();
        let [b, m] = g.dims();
        g.reshape([b, m, 1, 1])
    }

    /// Training forward pass: additive uniform noise for the rates, straight-through rounding for
    /// what the decoder sees (`ŷ = ⌊y − μ⌉ + μ`, `ẑ = ⌊z⌉`), as in Minnen & Singh 2020.
    ///
    /// `levels` holds one quality level per sample; `noise_y` and `noise_z` are U(−½, ½) tensors of
    /// the shapes of `y` and `z`, made by the caller so that training is reproducible.
    pub fn forward_train(
        &self,
        x: Tensor<4>,
        levels: Tensor<1, Int>,
        noise_y: Tensor<4>,
        noise_z: Tensor<4>,
    ) -> TrainOutput {
        self.forward_train_with(x, levels, noise_y, noise_z, false)
    }

    /// [`Self::forward_train`], or with `hard_rate` the rate of `y` measured on the rounded
    /// symbols `⌊y − μ⌉` the coder writes (straight-through; `noise_y` unused) instead of the
    /// noisy proxy. The proxy charges every symbol at least the rate of its noise, so a channel
    /// that is almost always 0 is priced at a fraction of a bit per symbol and `h_s` learns a
    /// scale near 0.3 where the coder would pay nearly nothing with 0.11; the hard rate is the
    /// real one, for a final phase of training ("soft then hard", Guo et al. 2021).
    pub fn forward_train_with(
        &self,
        x: Tensor<4>,
        levels: Tensor<1, Int>,
        noise_y: Tensor<4>,
        noise_z: Tensor<4>,
        hard_rate: bool,
    ) -> TrainOutput {
        let gain = self.gains(&self.log_gain, levels.clone());
        let inv_gain = self.gains(&self.log_inv_gain, levels);
        let y = self.analysis(x) * gain;
        let z = self.hyper_analysis(y.clone());
        let z_lik = self.bottleneck.likelihood(z.clone() + noise_z);
        let z_hat = ste_round(z);
        let (scales, means) = self.hyper_synthesis(z_hat);
        let scales = lower_bound(scales, SCALE_MIN);
        let centred = if hard_rate {
            ste_round(y.clone() - means.clone())
        } else {
            y.clone() + noise_y - means.clone()
        };
        let y_lik = gaussian_likelihood(centred, scales);
        let y_hat = ste_round(y - means.clone()) + means;
        let x_hat = self.synthesis(y_hat * inv_gain);
        let bits = |lik: Tensor<4>| -> Tensor<1> {
            let [b, ..] = lik.dims();
            lower_bound(lik, 1e-9)
                .log()
                .reshape([b as i32, -1])
                .sum_dim(1)
                .reshape([b])
                .div_scalar(-std::f64::consts::LN_2)
        };
        TrainOutput {
            x_hat,
            bits: bits(y_lik) + bits(z_lik),
        }
    }
}

/// The principal components of 16×16 blocks (rows of `3·16·16` values, laid out channel, row,
/// column), centred on one mean per colour (a transposed convolution has one bias per output
/// channel, so the decoder can only add a per-colour mean back).
struct BlockPca {
    colour_mean: [f64; 3],
    /// The per-colour means, one per block value.
    mean: Vec<f64>,
    /// Variances, decreasing.
    values: Vec<f64>,
    /// Unit directions, `values.len()` rows of `3·16·16`.
    vectors: Vec<f64>,
}

impl BlockPca {
    fn new(blocks: &[f32]) -> Self {
        let n = 3 * BLOCK * BLOCK;
        let count = (blocks.len() / n).max(1);
        let mut colour_mean = [0.0f64; 3];
        for row in blocks.chunks_exact(n) {
            for (c, m) in colour_mean.iter_mut().enumerate() {
                *m += row[c * BLOCK * BLOCK..(c + 1) * BLOCK * BLOCK]
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum::<f64>();
            }
        }
        colour_mean
            .iter_mut()
            .for_each(|m| *m /= (count * BLOCK * BLOCK) as f64);
        let mean: Vec<f64> = (0..n).map(|i| colour_mean[i / (BLOCK * BLOCK)]).collect();
        let (values, vectors) = principal_components(blocks, &mean, n);
        Self {
            colour_mean,
            mean,
            values,
            vectors,
        }
    }
}

/// The values of a parameter, row-major.
fn host<const D: usize>(p: &Param<Tensor<D>>) -> Result<Vec<f32>, String> {
    p.val()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("cannot read a parameter: {e:?}"))
}

/// The values of an optional bias of `len` entries (zeros if absent).
fn host_bias(p: Option<&Param<Tensor<1>>>, len: usize) -> Result<Vec<f32>, String> {
    match p {
        Some(p) => host(p),
        None => Ok(vec![0.0; len]),
    }
}

/// A row-major array of `shape` whose entry at each index is `f(index)`.
fn rebuild<const D: usize>(shape: [usize; D], f: impl Fn([usize; D]) -> f32) -> Vec<f32> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut index = [0usize; D];
    for _ in 0..total {
        out.push(f(index));
        for d in (0..D).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// `max(x, bound)` whose gradient is the identity's, so that a value below the bound can still be
/// pulled up (CompressAI's `LowerBound` lets upward gradients through for the same reason).
pub fn lower_bound(x: Tensor<4>, bound: f64) -> Tensor<4> {
    x.clone() + (x.clone().clamp_min(bound) - x).detach()
}

/// Rounding with the gradient of the identity.
pub fn ste_round(x: Tensor<4>) -> Tensor<4> {
    x.clone() + (x.clone().round() - x).detach()
}

/// Likelihood of `v` (already centred on the mean) on `[v − ½, v + ½]` under N(0, σ²).
pub fn gaussian_likelihood(v: Tensor<4>, scales: Tensor<4>) -> Tensor<4> {
    // Φ(a) − Φ(b) on the negative side, where Φ is accurate: Φ((½ − |v|)/σ) − Φ((−½ − |v|)/σ).
    let a = v.abs().neg();
    let upper = std_normal_cdf((a.clone().add_scalar(0.5)) / scales.clone());
    let lower = std_normal_cdf((a.sub_scalar(0.5)) / scales);
    upper - lower
}

fn std_normal_cdf(x: Tensor<4>) -> Tensor<4> {
    x.div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5)
}
