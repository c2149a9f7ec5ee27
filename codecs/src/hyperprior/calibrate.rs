//! Scale calibration: a per-channel integer map from the scale index `h_s` predicts to the index
//! the coder uses, fitted after training on real images.
//!
//! A short-trained `h_s` is badly calibrated on whole photos: on Kodak the shipped M = 256 weights
//! predicted σ 1.6–3.4× too large for most latents (4–10 steps of the 13 %-per-step scale table),
//! so `y` cost 28 % more than a static per-channel histogram of the very same symbols. Training
//! sees 128² crops, where `z` is 2×2 and every latent is next to a border; that, and the noise
//! proxy of the first phase, is where the bias comes from.
//!
//! The fix costs nothing at decode time and keeps decoding bit-exact: the map is a table of
//! integers `map[c][i]` stored in the weights file's header; the codec replaces the index `i` of
//! every latent of channel `c` by `map[c][i]`. It is fitted by [`Calibration`] on the coder's real
//! symbols: for every channel, every predicted index and every candidate index it adds up the
//! exact code length under the quantized tables, then picks, per channel, the non-decreasing map
//! of least total length (a dynamic program over 64 × 64 states). A channel with no data keeps
//! the identity; an index never seen follows its neighbours through the monotone constraint and a
//! small pull towards the channel's overall shift.

use ncodec_bitstream::entropy::GaussianConditional;
use ncodec_bitstream::entropy::ans::cost_bits;
use serde::{Deserialize, Serialize};

/// Symbols of magnitude up to this are counted in a histogram; larger ones are costed directly.
const HIST: i32 = 64;
/// Cost (bits) per index step of moving away from the channel's overall shift, a tie-breaker for
/// indices with no data.
const PULL: f64 = 1e-3;
/// Largest overall shift tried per channel.
const MAX_SHIFT: i64 = 24;

/// The per-channel index map, `channels × levels` integers below `levels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleMap {
    /// `map[c][i]`: the table index coded for channel `c` when `h_s` predicts index `i`.
    pub map: Vec<Vec<u16>>,
}

impl ScaleMap {
    /// The map that changes nothing.
    pub fn identity(channels: usize, levels: usize) -> Self {
        Self {
            map: vec![(0..levels as u16).collect(); channels],
        }
    }

    /// Checks the shape against a network of `channels` latent channels and a table of `levels`.
    ///
    /// # Errors
    /// A message naming what does not fit.
    pub fn validate(&self, channels: usize, levels: usize) -> Result<(), String> {
        if self.map.len() != channels {
            return Err(format!(
                "the scale map has {} channels, the network {channels}",
                self.map.len()
            ));
        }
        for (c, row) in self.map.iter().enumerate() {
            if row.len() != levels {
                return Err(format!(
                    "the scale map's channel {c} has {} entries, the scale table {levels}",
                    row.len()
                ));
            }
            if let Some(&bad) = row.iter().find(|&&i| usize::from(i) >= levels) {
                return Err(format!(
                    "the scale map's channel {c} names index {bad}, beyond the table of {levels}"
                ));
            }
        }
        Ok(())
    }

    /// The coded index of channel `c` for the predicted index `i` (shape checked on load).
    #[inline]
    pub fn apply(&self, c: usize, i: u16) -> u16 {
        self.map[c][usize::from(i)]
    }

    /// Whether the map changes nothing.
    pub fn is_identity(&self) -> bool {
        self.map
            .iter()
            .all(|row| row.iter().enumerate().all(|(i, &j)| usize::from(j) == i))
    }
}

/// Code-length statistics for fitting a [`ScaleMap`].
#[derive(Debug, Clone)]
pub struct Calibration {
    channels: usize,
    levels: usize,
    /// `hist[(c·levels + i)·(2·HIST + 1) + v + HIST]`: how often channel `c` with predicted index
    /// `i` coded the symbol `v`.
    hist: Vec<u64>,
    /// `cost[(c·levels + i)·levels + j]`, bits of the symbols outside the histogram under table `j`.
    outside: Vec<f64>,
    symbols: u64,
}

impl Calibration {
    /// Empty statistics for `channels` latent channels and a table of `levels` scales.
    pub fn new(channels: usize, levels: usize) -> Self {
        Self {
            channels,
            levels,
            hist: vec![0; channels * levels * (2 * HIST as usize + 1)],
            outside: vec![0.0; channels * levels * levels],
            symbols: 0,
        }
    }

    /// Symbols seen so far.
    pub fn symbols(&self) -> u64 {
        self.symbols
    }

    /// Adds one coded latent: `symbols` and the predicted (unmapped) `indices`, `[C][H·W]` order
    /// with `plane = H·W`.
    ///
    /// # Panics
    /// If the lengths disagree with `channels · plane` or an index is beyond the table (callers pass
    /// what the codec produced).
    pub fn add(&mut self, symbols: &[i32], indices: &[u16], plane: usize, y: &GaussianConditional) {
        assert_eq!(
            symbols.len(),
            self.channels * plane,
            "symbols of another shape"
        );
        assert_eq!(indices.len(), symbols.len(), "one index per symbol");
        let width = 2 * HIST as usize + 1;
        for (k, (&v, &i)) in symbols.iter().zip(indices).enumerate() {
            let cell = (k / plane) * self.levels + usize::from(i);
            assert!(usize::from(i) < self.levels, "index beyond the table");
            if (-HIST..=HIST).contains(&v) {
                self.hist[cell * width + (v + HIST) as usize] += 1;
            } else {
                for j in 0..self.levels {
                    self.outside[cell * self.levels + j] += code_length(y, j, v);
                }
            }
        }
        self.symbols += symbols.len() as u64;
    }

    /// Total code length (bits) of what was added, coded with `map` (its shape must fit).
    pub fn bits(&self, map: &ScaleMap, y: &GaussianConditional) -> f64 {
        let (l, width) = (self.levels, 2 * HIST as usize + 1);
        let mut total = 0.0;
        for c in 0..self.channels {
            for i in 0..l {
                let cell = c * l + i;
                let j = usize::from(map.apply(c, i as u16));
                total += self.outside[cell * l + j];
                for (v, &n) in (-HIST..=HIST).zip(&self.hist[cell * width..(cell + 1) * width]) {
                    if n > 0 {
                        total += n as f64 * code_length(y, j, v);
                    }
                }
            }
        }
        total
    }

    /// The map of least total code length on what was added, non-decreasing in the predicted index.
    pub fn fit(&self, y: &GaussianConditional) -> ScaleMap {
        let (l, width) = (self.levels, 2 * HIST as usize + 1);
        // bits[j][v + HIST]: code length of v under table j.
        let bits: Vec<Vec<f64>> = (0..l)
            .map(|j| (-HIST..=HIST).map(|v| code_length(y, j, v)).collect())
            .collect();
        let mut map = Vec::with_capacity(self.channels);
        for c in 0..self.channels {
            // cost[i][j]: bits of channel c's symbols predicted at i if coded with table j.
            let mut cost = vec![vec![0.0f64; l]; l];
            let mut seen = false;
            for (i, row) in cost.iter_mut().enumerate() {
                let cell = c * l + i;
                let h = &self.hist[cell * width..(cell + 1) * width];
                let outside = &self.outside[cell * l..(cell + 1) * l];
                if h.iter().all(|&n| n == 0) && outside.iter().all(|&b| b == 0.0) {
                    continue;
                }
                seen = true;
                for (j, slot) in row.iter_mut().enumerate() {
                    *slot = outside[j]
                        + h.iter()
                            .zip(&bits[j])
                            .filter(|(n, _)| **n > 0)
                            .map(|(&n, b)| n as f64 * b)
                            .sum::<f64>();
                }
            }
            if !seen {
                map.push((0..l as u16).collect());
                continue;
            }
            map.push(monotone_fit(&cost, best_shift(&cost)));
        }
        ScaleMap { map }
    }
}

/// Exact code length of `v` under table `j` (the escape's bits included).
fn code_length(y: &GaussianConditional, j: usize, v: i32) -> f64 {
    y.table(j as u16)
        .and_then(|t| cost_bits(t, v))
        .unwrap_or(f64::INFINITY)
}

/// The constant index shift of least total cost for one channel.
fn best_shift(cost: &[Vec<f64>]) -> i64 {
    let l = cost.len() as i64;
    (-MAX_SHIFT..=MAX_SHIFT)
        .min_by(|&a, &b| {
            let total = |d: i64| -> f64 {
                (0..l)
                    .map(|i| cost[i as usize][(i + d).clamp(0, l - 1) as usize])
                    .sum()
            };
            total(a).total_cmp(&total(b))
        })
        .unwrap_or(0)
}

/// The non-decreasing map `i ↦ j` minimizing `Σ cost[i][j] + PULL·|j − (i + shift)|`.
fn monotone_fit(cost: &[Vec<f64>], shift: i64) -> Vec<u16> {
    let l = cost.len();
    let target = |i: usize| (i as i64 + shift).clamp(0, l as i64 - 1);
    let local = |i: usize, j: usize| cost[i][j] + PULL * (j as i64 - target(i)).abs() as f64;
    // best[i][j]: least cost of rows 0..=i with row i mapped to j; from[i][j]: row i−1's choice.
    let mut best = vec![vec![0.0f64; l]; l];
    let mut from = vec![vec![0usize; l]; l];
    for (j, b) in best[0].iter_mut().enumerate() {
        *b = local(0, j);
    }
    for i in 1..l {
        let (mut run, mut arg) = (f64::INFINITY, 0usize);
        for j in 0..l {
            if best[i - 1][j] < run {
                run = best[i - 1][j];
                arg = j;
            }
            best[i][j] = local(i, j) + run;
            from[i][j] = arg;
        }
    }
    let mut j = (0..l)
        .min_by(|&a, &b| best[l - 1][a].total_cmp(&best[l - 1][b]))
        .unwrap_or(0);
    let mut out = vec![0u16; l];
    for i in (0..l).rev() {
        out[i] = j as u16;
        j = from[i][j];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_finds_a_known_miscalibration() {
        let y = GaussianConditional::default();
        let scales = y.scales().to_vec();
        // Channel 0: symbols drawn at scale index i − 6 but predicted at i; channel 1 calibrated.
        let mut cal = Calibration::new(2, scales.len());
        let mut state = 12345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let plane = 4000;
        for predicted in [20u16, 30, 40] {
            let mut symbols = Vec::new();
            for c in 0..2 {
                let s = scales[usize::from(predicted) - if c == 0 { 6 } else { 0 }];
                for _ in 0..plane {
                    // Box–Muller.
                    let (u, v) = (uniform(), uniform());
                    let g = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                    symbols.push((g * s).round() as i32);
                }
            }
            cal.add(&symbols, &vec![predicted; 2 * plane], plane, &y);
        }
        let map = cal.fit(&y);
        map.validate(2, scales.len()).expect("shape");
        for predicted in [20usize, 30, 40] {
            let shifted = i64::from(map.map[0][predicted]) - predicted as i64;
            assert!(
                (-7..=-5).contains(&shifted),
                "channel 0 at {predicted}: {shifted}"
            );
            let kept = i64::from(map.map[1][predicted]) - predicted as i64;
            assert!((-1..=1).contains(&kept), "channel 1 at {predicted}: {kept}");
        }
        assert!(map.map.iter().all(|r| r.windows(2).all(|w| w[0] <= w[1])));
        let (before, after) = (
            cal.bits(&ScaleMap::identity(2, scales.len()), &y),
            cal.bits(&map, &y),
        );
        assert!(after < 0.97 * before, "{before} -> {after} bits");
    }

    #[test]
    fn a_bad_map_is_refused() {
        let mut m = ScaleMap::identity(3, 64);
        assert!(m.validate(3, 64).is_ok() && m.is_identity());
        assert!(m.validate(4, 64).is_err());
        m.map[1][5] = 64;
        assert!(m.validate(3, 64).unwrap_err().contains("beyond"));
        m.map[1].pop();
        assert!(m.validate(3, 64).is_err());
    }
}
