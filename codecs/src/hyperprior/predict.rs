//! Latent prediction: each residual `y·g − μ` is predicted, in fixed point, from residuals
//! already coded, and only what the prediction misses is coded.
//!
//! The linear block path makes neighbouring latents of the lowest-frequency channels strongly
//! correlated (the mean colour of a 16×16 block and its neighbours'; a gradient channel and the
//! difference of its neighbours' means), and `h_s`, which sees `ẑ` at one value per 64×64
//! pixels, predicts little of it. Coding is channel-major, so when channel `c` is coded every
//! lower channel is known everywhere and channel `c` itself above and to the left. The
//! prediction of residual `(c, i, j)` is a fixed linear combination of [`taps`]`(c)` of those
//! (see [`features`]): the left, upper, upper-left and upper-right residuals of channel `c`, and
//! the residual at `(i, j)` and its four neighbours in each channel of [`lower`]`(c)` (the first
//! [`LOW`] channels and the two just before `c`).
//!
//! Everything is integer, so the decoder reproduces the encoder's prediction bit-exactly on any
//! machine: residuals are held in 1/16 units (`r̂ = 16·s + p`), the weights in 1/4096 units, the
//! prediction `p = (Σ wₖ·fₖ + 2048) >> 12` in 1/16 units (arithmetic shift, `i64` sums), and the
//! encoder codes `s = ⌊r − p/16⌉`. The decoder entropy-decodes every `s` first (the scale
//! indices never depend on predictions) and rebuilds `r̂` in coding order.
//!
//! The weights are fitted per channel by least squares on training photos ([`PredictionStats`],
//! part of `ncodec calibrate`), one set for every quality (fits at qualities 1 and 4 differ by
//! less than 0.3 % in rate). On held-out training photos with the shipped network it codes `y`
//! in 15 % fewer bits at q 0.5, 6 % at q 1, 2.6 % at q 4 and under 1 % at q 8.

use crate::linalg::cholesky_solve;
use serde::{Deserialize, Serialize};

/// Fraction bits of reconstructed residuals (1/16 units).
pub const FRAC_BITS: u32 = 4;
/// Fraction bits of the weights (1/4096 units).
pub const WEIGHT_BITS: u32 = 12;
/// Channels `0..LOW` take part in the prediction of every later channel.
pub const LOW: usize = 4;
/// Largest weight magnitude a weights file may hold (16 in real units).
pub const MAX_WEIGHT: i32 = 1 << 16;
/// Predictions are clamped to this magnitude (1/16 units), far beyond any real latent.
const MAX_PREDICTION: i64 = 1 << 26;
/// Same-channel neighbours, `(row, column)` offsets, all before `(0, 0)` in raster order.
pub const SAME: [(isize, isize); 4] = [(0, -1), (-1, 0), (-1, -1), (-1, 1)];
/// Neighbourhood read in each lower channel.
pub const CROSS: [(isize, isize); 5] = [(0, 0), (0, -1), (0, 1), (-1, 0), (1, 0)];

/// The lower channels that predict channel `c`, ascending: `0..min(c, LOW)` and `c − 2`, `c − 1`.
pub fn lower(c: usize) -> impl Iterator<Item = usize> {
    (0..c).filter(move |&k| k < LOW || k + 2 >= c)
}

/// Number of weights of channel `c`.
pub fn taps(c: usize) -> usize {
    SAME.len() + CROSS.len() * lower(c).count()
}

/// The features of residual `(c, i, j)` of the channel-major `[C][h][w]` reconstructed residuals
/// `r` (1/16 units), in weight order; positions outside the latent read 0. Only residuals before
/// `(c, i, j)` in coding order are read.
pub fn features(r: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize, out: &mut Vec<i32>) {
    out.clear();
    let at = |k: usize, di: isize, dj: isize| -> i32 {
        let (y, x) = (i as isize + di, j as isize + dj);
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0
        } else {
            r[(k * h + y as usize) * w + x as usize]
        }
    };
    out.extend(SAME.iter().map(|&(di, dj)| at(c, di, dj)));
    for k in lower(c) {
        out.extend(CROSS.iter().map(|&(di, dj)| at(k, di, dj)));
    }
}

/// Fixed-point prediction weights, `weights[c]` of length [`taps`]`(c)` in 1/4096 units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predictor {
    /// One row per latent channel.
    pub weights: Vec<Vec<i32>>,
}

impl Predictor {
    /// Checks the shape against `channels` latent channels and the weight bound.
    ///
    /// # Errors
    /// A message naming what does not fit.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        if self.weights.len() != channels {
            return Err(format!(
                "the predictor has {} channels, the network {channels}",
                self.weights.len()
            ));
        }
        for (c, row) in self.weights.iter().enumerate() {
            if row.len() != taps(c) {
                return Err(format!(
                    "the predictor's channel {c} has {} weights, not {}",
                    row.len(),
                    taps(c)
                ));
            }
            if row.iter().any(|w| !(-MAX_WEIGHT..=MAX_WEIGHT).contains(w)) {
                return Err(format!(
                    "the predictor's channel {c} holds a weight beyond ±{MAX_WEIGHT}"
                ));
            }
        }
        Ok(())
    }

    /// Whether `len` values are whole `h × w` planes of at most as many channels as there are
    /// weight rows (what [`Self::symbols`] and [`Self::reconstruct`] require).
    fn fits(&self, len: usize, h: usize, w: usize) -> bool {
        len == 0 || (h * w > 0 && len.is_multiple_of(h * w) && len / (h * w) <= self.weights.len())
    }

    /// Whether every prediction is 0.
    pub fn is_zero(&self) -> bool {
        self.weights.iter().flatten().all(|&w| w == 0)
    }

    /// The prediction (1/16 units) of residual `(c, i, j)` from the reconstructed residuals `r`.
    #[allow(clippy::too_many_arguments)]
    fn predict(
        &self,
        r: &[i32],
        c: usize,
        i: usize,
        j: usize,
        h: usize,
        w: usize,
        f: &mut Vec<i32>,
    ) -> i32 {
        features(r, c, i, j, h, w, f);
        let sum: i64 = self.weights[c]
            .iter()
            .zip(f.iter())
            .map(|(&w, &x)| i64::from(w) * i64::from(x))
            .sum();
        ((sum + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS).clamp(-MAX_PREDICTION, MAX_PREDICTION)
            as i32
    }

    /// Encoder: the symbols of the channel-major `[C][h][w]` residuals `resid` (`y·g − μ`), each
    /// rounded after subtracting its prediction. `round` turns a value into a symbol.
    pub fn symbols(
        &self,
        resid: &[f32],
        h: usize,
        w: usize,
        round: impl Fn(f32) -> i32,
    ) -> Vec<i32> {
        self.symbols_with(resid, h, w, |_, v, _| round(v))
    }

    /// [`Self::symbols`] with a rounding rule that also sees the symbol's position `k` and the
    /// symbols before it (`choose(k, value, &sym[..k])`), as a rate-distortion choice needs.
    pub fn symbols_with(
        &self,
        resid: &[f32],
        h: usize,
        w: usize,
        mut choose: impl FnMut(usize, f32, &[i32]) -> i32,
    ) -> Vec<i32> {
        debug_assert!(self.fits(resid.len(), h, w), "residuals of another shape");
        let mut r = vec![0i32; resid.len()];
        let mut sym = vec![0i32; resid.len()];
        let mut f = Vec::new();
        for (k, &v) in resid.iter().enumerate() {
            let (c, p) = (k / (h * w), k % (h * w));
            let pred = self.predict(&r, c, p / w, p % w, h, w, &mut f);
            let s = choose(k, v - pred as f32 / (1 << FRAC_BITS) as f32, &sym[..k]);
            sym[k] = s;
            r[k] = reconstruct_one(s, pred);
        }
        sym
    }

    /// Decoder: the reconstructed residuals (1/16 units) of the channel-major `[C][h][w]` symbols.
    pub fn reconstruct(&self, sym: &[i32], h: usize, w: usize) -> Vec<i32> {
        debug_assert!(self.fits(sym.len(), h, w), "symbols of another shape");
        let mut r = vec![0i32; sym.len()];
        let mut f = Vec::new();
        for (k, &s) in sym.iter().enumerate() {
            let (c, p) = (k / (h * w), k % (h * w));
            r[k] = reconstruct_one(s, self.predict(&r, c, p / w, p % w, h, w, &mut f));
        }
        r
    }
}

/// `16·s + p`, saturating (symbols are clamped to ±2^20 and predictions to ±2^26, so real
/// latents never come near).
fn reconstruct_one(s: i32, pred: i32) -> i32 {
    s.saturating_mul(1 << FRAC_BITS).saturating_add(pred)
}

/// Least-squares statistics for fitting a [`Predictor`]: per channel, `XᵀX` and `Xᵀr` of the
/// features and residuals (1/16 units) of the latents added.
#[derive(Debug, Clone)]
pub struct PredictionStats {
    channels: usize,
    xtx: Vec<Vec<f64>>,
    xty: Vec<Vec<f64>>,
    samples: u64,
}

impl PredictionStats {
    /// Empty statistics for `channels` latent channels.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            xtx: (0..channels)
                .map(|c| vec![0.0; taps(c) * taps(c)])
                .collect(),
            xty: (0..channels).map(|c| vec![0.0; taps(c)]).collect(),
            samples: 0,
        }
    }

    /// Residuals added so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Adds the channel-major `[C][h][w]` residuals `resid` (`y·g − μ`). The features are their
    /// rounded values (an open-loop fit: the decoder's reconstructions `16·⌊r − p/16⌉ + p` are
    /// within half a step of `r` too, but not equal to `16·⌊r⌉`).
    ///
    /// # Panics
    /// If `resid` is not `channels·h·w` long.
    pub fn add(&mut self, resid: &[f32], h: usize, w: usize) {
        assert_eq!(
            resid.len(),
            self.channels * h * w,
            "residuals of another shape"
        );
        let unit = (1 << FRAC_BITS) as f32;
        let rounded: Vec<i32> = resid
            .iter()
            .map(|&v| (v.round().clamp(-1e6, 1e6) * unit) as i32)
            .collect();
        let mut f = Vec::new();
        for (k, &v) in resid.iter().enumerate() {
            let (c, p) = (k / (h * w), k % (h * w));
            features(&rounded, c, p / w, p % w, h, w, &mut f);
            let n = f.len();
            let target = f64::from(v.clamp(-1e6, 1e6) * unit);
            let (xtx, xty) = (&mut self.xtx[c], &mut self.xty[c]);
            for a in 0..n {
                let fa = f64::from(f[a]);
                if fa == 0.0 {
                    continue;
                }
                xty[a] += fa * target;
                for b in a..n {
                    xtx[a * n + b] += fa * f64::from(f[b]);
                }
            }
        }
        self.samples += resid.len() as u64;
    }

    /// The fitted predictor: ridge-regularized least squares per channel, rounded to fixed point.
    pub fn fit(&self) -> Predictor {
        let weights = (0..self.channels)
            .map(|c| {
                let n = taps(c);
                let mut a = vec![0.0f64; n * n];
                for r in 0..n {
                    for s in r..n {
                        a[r * n + s] = self.xtx[c][r * n + s];
                        a[s * n + r] = self.xtx[c][r * n + s];
                    }
                }
                // A small ridge (relative to the features' energy) keeps rare or silent
                // channels at weights near 0 instead of fitting noise.
                let energy = (0..n).map(|r| a[r * n + r]).sum::<f64>() / n as f64;
                let ridge = 1e-3 * energy + 256.0;
                for r in 0..n {
                    a[r * n + r] += ridge;
                }
                let x = cholesky_solve(a, self.xty[c].clone(), n);
                x.iter()
                    .map(|&v| {
                        let q = (v * f64::from(1 << WEIGHT_BITS)).round();
                        q.clamp(-f64::from(MAX_WEIGHT), f64::from(MAX_WEIGHT)) as i32
                    })
                    .collect()
            })
            .collect();
        Predictor { weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_channels_and_taps() {
        assert_eq!(lower(0).count(), 0);
        assert_eq!(lower(1).collect::<Vec<_>>(), vec![0]);
        assert_eq!(lower(5).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(lower(9).collect::<Vec<_>>(), vec![0, 1, 2, 3, 7, 8]);
        assert_eq!(taps(0), 4);
        assert_eq!(taps(9), 4 + 5 * 6);
    }

    #[test]
    fn features_read_only_what_was_coded_before() {
        // 2 channels of 3×3; poison everything at or after (1, 1, 1) and check nothing reads it.
        let (h, w) = (3, 3);
        let mut r: Vec<i32> = (1..=18).collect();
        let k = (h + 1) * w + 1;
        for v in &mut r[k..] {
            *v = 1_000_000;
        }
        let mut f = Vec::new();
        features(&r, 1, 1, 1, h, w, &mut f);
        assert_eq!(f.len(), taps(1));
        assert!(f.iter().all(|&v| v < 1_000_000), "{f:?}");
        // Left, up, up-left, up-right of (1, 1) in channel 1, then channel 0 around (1, 1).
        assert_eq!(&f[..4], &[13, 11, 10, 12]);
        assert_eq!(&f[4..], &[5, 4, 6, 2, 8]);
    }

    #[test]
    fn encoder_and_decoder_agree_and_the_fit_learns_a_known_predictor() {
        // Channel 1 = 0.5·channel 0 + noise; channel 0 a smooth ramp (left neighbour predicts it).
        let (h, w) = (12, 16);
        let mut resid = vec![0.0f32; 2 * h * w];
        let mut seed = 7u32;
        let mut noise = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for i in 0..h {
            for j in 0..w {
                resid[i * w + j] = 3.0 * j as f32 + 2.0 * i as f32 + noise();
                resid[(h + i) * w + j] = 0.5 * resid[i * w + j] + 0.3 * noise();
            }
        }
        let mut stats = PredictionStats::new(2);
        stats.add(&resid, h, w);
        let p = stats.fit();
        p.validate(2).unwrap();
        // Channel 1's weight on channel 0 at the same position is about 0.5.
        let w0 = f64::from(p.weights[1][SAME.len()]) / f64::from(1 << WEIGHT_BITS);
        assert!((w0 - 0.5).abs() < 0.1, "{w0} {:?}", p.weights);
        let round = |v: f32| v.round() as i32;
        let sym = p.symbols(&resid, h, w, round);
        let plain: Vec<i32> = resid.iter().map(|&v| round(v)).collect();
        let energy = |s: &[i32]| s.iter().map(|&v| i64::from(v).abs()).sum::<i64>();
        assert!(
            energy(&sym) * 4 < energy(&plain),
            "{} {}",
            energy(&sym),
            energy(&plain)
        );
        // The decoder rebuilds residuals within half a step of the originals.
        let r = p.reconstruct(&sym, h, w);
        for (&a, &b) in r.iter().zip(&resid) {
            assert!((a as f32 / 16.0 - b).abs() <= 0.5 + 1.0 / 32.0, "{a} {b}");
        }
        // Without prediction the reconstruction is the symbols themselves.
        let zero = Predictor {
            weights: vec![vec![0; taps(0)], vec![0; taps(1)]],
        };
        assert!(zero.is_zero());
        assert_eq!(zero.symbols(&resid, h, w, round), plain);
    }

    #[test]
    fn bad_shapes_and_weights_are_refused() {
        let ok = Predictor {
            weights: vec![vec![0; taps(0)], vec![0; taps(1)]],
        };
        assert!(ok.validate(2).is_ok());
        assert!(ok.validate(3).is_err());
        let mut short = ok.clone();
        short.weights[1].pop();
        assert!(short.validate(2).is_err());
        let mut big = ok.clone();
        big.weights[1][0] = MAX_WEIGHT + 1;
        assert!(big.validate(2).is_err());
        let mut min = ok;
        min.weights[1][2] = i32::MIN;
        assert!(min.validate(2).is_err());
        // An unknown field in a weights file's predictor is refused, not ignored.
        let json = r#"{"weights": [[0, 0, 0, 0]], "bias": [1]}"#;
        assert!(serde_json::from_str::<Predictor>(json).is_err());
    }
}
