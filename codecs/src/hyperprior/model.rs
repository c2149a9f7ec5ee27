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
        m: 128,
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
        let count = blocks.len() / n;
        if !cfg.shortcut || count < 2 {
            return self;
        }
        // Centre on one mean per colour (a transposed convolution has one bias per output
        // channel, so the decoder can only add a per-colour mean back).
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
        let (_, vectors) = principal_components(blocks, &mean, n);
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
        let gain = self.gains(&self.log_gain, levels.clone());
        let inv_gain = self.gains(&self.log_inv_gain, levels);
        let y = self.analysis(x) * gain;
        let z = self.hyper_analysis(y.clone());
        let z_lik = self.bottleneck.likelihood(z.clone() + noise_z);
        let z_hat = ste_round(z);
        let (scales, means) = self.hyper_synthesis(z_hat);
        let scales = lower_bound(scales, SCALE_MIN);
        let y_lik = gaussian_likelihood(y.clone() + noise_y - means.clone(), scales);
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
