//! Scale calibration: a per-channel integer map from the scale index `h_s` predicts to the index
//! the coder uses, fitted after training on real images.
//!
//! A short-trained `h_s` is badly calibrated on whole photos: on Kodak the M = 256 weights of stage 3
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
//!
//! The map is fitted for Gaussian tables (what the network was trained with) and for Laplace
//! tables of the same standard deviations, and the family of fewer bits is kept: real latents are
//! peakier and heavier-tailed than Gaussians, and the calibration is free to say so.
//!
//! A second pass fits a **context table** ([`ContextCalibration`]): the index is then shifted
//! further by a learned amount per (group of 16 channels, bucket of 4 mapped indices, [`context_bins`])
//! cell, where the bins measure the magnitudes of the already coded neighbours: the two previous
//! channels around the same position and the left and upper neighbours in the same channel. Those
//! precede the symbol in coding order, so the decoder derives the same index from what it has
//! decoded (one index at a time; see [`GaussianConditional::decode_with`]). On the shipped weights
//! and their 64 calibration photos (before the latent predictor) the map saved 23.0 % of `y`'s bits
//! and the context table another 7.5 %.
//!
//! With `ncodec calibrate --context-depth` the table has a third feature ([`context_depth_bin`]):
//! the magnitudes of the 8 channels before the symbol at its own position, i.e. how busy its
//! block has been so far.
//!
//! Candidate features are measured before they become a format: [`ContextCalibration::with_feature`]
//! gathers the statistics of a table with another third feature, and [`ContextCalibration::cross_bits`]
//! codes one set of photos with the table fitted on another (`ncodec calibrate --screen-context`).
//!
//! Before both, `ncodec calibrate` fits the weights' latent predictor ([`super::predict`]), so the
//! map and the context table are fitted on the symbols the predictor leaves; the predictor rides
//! in the same [`ScaleMap`] (`predict`).

use ncodec_bitstream::entropy::ans::cost_bits;
use ncodec_bitstream::entropy::{GaussianConditional, ScaleFamily};
use serde::{Deserialize, Serialize};

use super::predict::Predictor;

/// Symbols of magnitude up to this are counted in a histogram; larger ones are costed directly.
const HIST: i32 = 64;
/// Cost (bits) per index step of moving away from the channel's overall shift, a tie-breaker for
/// indices with no data.
const PULL: f64 = 1e-3;
/// Largest overall shift tried per channel.
const MAX_SHIFT: i64 = 24;

/// Latent channels that share one slice of the context table.
pub const CONTEXT_GROUP: usize = 16;
/// Consecutive scale indices that share one slice of the context table.
pub const CONTEXT_BUCKET: usize = 4;
/// Bins of each context feature.
pub const CONTEXT_BINS: usize = 8;
/// A feature `f` falls in bin `#{e in EDGES : e <= f}`: 0, 1, 2, 3–4, 5–8, 9–16, 17–32, 33+.
const EDGES: [u64; CONTEXT_BINS - 1] = [1, 2, 3, 5, 9, 17, 33];
/// Largest context shift tried (table steps).
const MAX_CONTEXT_SHIFT: i32 = 24;
/// Preceding channels whose symbols at the same position make the optional third context feature
/// ([`context_depth_bin`]).
pub const DEPTH_CHANNELS: usize = 8;
/// Bins of the third context feature.
pub const DEPTH_BINS: usize = 5;
/// The third feature `f` falls in bin `#{e in DEPTH_EDGES : e <= f}`: 0, 1, 2–3, 4–7, 8+.
const DEPTH_EDGES: [u64; DEPTH_BINS - 1] = [1, 2, 4, 8];
/// Channels before the [`DEPTH_CHANNELS`] whose symbols at the same position split each depth
/// bin further with `--context-far` ([`context_far_bin`]).
pub const FAR_CHANNELS: usize = 16;
/// Bins of that split.
pub const FAR_BINS: usize = 4;
/// The far feature `f` falls in bin `#{e in FAR_EDGES : e <= f}`: 0, 1, 2–3, 4+.
const FAR_EDGES: [u64; FAR_BINS - 1] = [1, 2, 4];

fn bin(f: u64) -> usize {
    EDGES.iter().filter(|&&e| e <= f).count()
}

/// The two context bins of symbol `(c, i, j)` of a channel-major `[C][h][w]` symbol array, read only
/// from symbols before it in coding order (so the decoder has them): the magnitudes of channels
/// `c − 1` and `c − 2` in the 3×3 neighbourhood of `(i, j)`, and of the left and upper neighbours in
/// channel `c`.
pub fn context_bins(
    sym: &[i32],
    c: usize,
    i: usize,
    j: usize,
    h: usize,
    w: usize,
) -> (usize, usize) {
    let plane = h * w;
    let mag = |k: usize| u64::from(sym[k].unsigned_abs());
    let mut prev = 0u64;
    for back in 1..=2 {
        if c < back {
            break;
        }
        let base = (c - back) * plane;
        for ii in i.saturating_sub(1)..=(i + 1).min(h - 1) {
            for jj in j.saturating_sub(1)..=(j + 1).min(w - 1) {
                prev += mag(base + ii * w + jj);
            }
        }
    }
    let here = c * plane;
    let mut causal = 0u64;
    if j > 0 {
        causal += mag(here + i * w + j - 1);
    }
    if i > 0 {
        causal += mag(here + (i - 1) * w + j);
    }
    (bin(prev), bin(causal))
}

/// The third context bin of symbol `(c, i, j)` (see [`ScaleMap::context_depth`]): the magnitudes of
/// the [`DEPTH_CHANNELS`] channels before `c` at the same position, which precede it in coding
/// order. How much of its block the lower channels have already coded tells how busy the block is,
/// at the latent's own resolution (`h_s` sees one value per 4×4 latents).
pub fn context_depth_bin(sym: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
    let plane = h * w;
    let at = i * w + j;
    let sum: u64 = (c.saturating_sub(DEPTH_CHANNELS)..c)
        .map(|k| u64::from(sym[k * plane + at].unsigned_abs()))
        .sum();
    DEPTH_EDGES.iter().filter(|&&e| e <= sum).count()
}

/// The far bin of symbol `(c, i, j)` (see [`ScaleMap::context_far`]): the magnitudes of the
/// [`FAR_CHANNELS`] channels before the [`DEPTH_CHANNELS`] of [`context_depth_bin`], at the same
/// position.
pub fn context_far_bin(sym: &[i32], c: usize, i: usize, j: usize, h: usize, w: usize) -> usize {
    let plane = h * w;
    let at = i * w + j;
    let end = c.saturating_sub(DEPTH_CHANNELS);
    let sum: u64 = (end.saturating_sub(FAR_CHANNELS)..end)
        .map(|k| u64::from(sym[k * plane + at].unsigned_abs()))
        .sum();
    FAR_EDGES.iter().filter(|&&e| e <= sum).count()
}

/// Bins of the third feature: none (1), the depth bins, or the depth bins split by the far bins.
pub fn third_bins(depth: bool, far: bool) -> usize {
    match (depth, far) {
        (false, _) => 1,
        (true, false) => DEPTH_BINS,
        (true, true) => DEPTH_BINS * FAR_BINS,
    }
}

/// The third-feature bin of symbol `(c, i, j)`, below [`third_bins`]`(depth, far)`.
pub fn context_third_bin(
    sym: &[i32],
    (c, i, j): (usize, usize, usize),
    (h, w): (usize, usize),
    depth: bool,
    far: bool,
) -> usize {
    match (depth, far) {
        (false, _) => 0,
        (true, false) => context_depth_bin(sym, c, i, j, h, w),
        (true, true) => {
            context_depth_bin(sym, c, i, j, h, w) * FAR_BINS + context_far_bin(sym, c, i, j, h, w)
        }
    }
}

/// Context bins per (channel group, index bucket) cell: the two [`context_bins`] times the
/// `third_bins` of a third feature (1: none).
fn bins_per_bucket(third_bins: usize) -> usize {
    CONTEXT_BINS * CONTEXT_BINS * third_bins
}

/// Entries of a context table with a third feature of `third_bins` bins (1: none).
fn table_len(channels: usize, levels: usize, third_bins: usize) -> usize {
    channels.div_ceil(CONTEXT_GROUP) * levels.div_ceil(CONTEXT_BUCKET) * bins_per_bucket(third_bins)
}

/// Entries of the context table for `channels` latent channels and a table of `levels` scales,
/// with or without the third feature (`depth`), split by the far bins or not (`far`).
pub fn context_len(channels: usize, levels: usize, depth: bool, far: bool) -> usize {
    table_len(channels, levels, third_bins(depth, far))
}

/// The cell of channel `c` at mapped index `mapped` with the two context `bins` and a third
/// feature of `third_bins` bins (1: none) in bin `third`.
fn cell_of(
    levels: usize,
    c: usize,
    mapped: u16,
    bins: (usize, usize),
    third: usize,
    third_bins: usize,
) -> usize {
    let buckets = levels.div_ceil(CONTEXT_BUCKET);
    let two = (((c / CONTEXT_GROUP) * buckets + usize::from(mapped) / CONTEXT_BUCKET)
        * CONTEXT_BINS
        + bins.0)
        * CONTEXT_BINS
        + bins.1;
    two * third_bins + third
}

/// A candidate third context feature for [`ContextCalibration::with_feature`] (diagnostics): its
/// bin count and the bin of symbol `(c, i, j)` of `[C][h][w]` symbols, read only from those before.
pub type ThirdFeature = (
    usize,
    fn(&[i32], usize, usize, usize, usize, usize) -> usize,
);

/// The per-channel index map, `channels × levels` integers below `levels`.
///
/// Unknown fields are refused on load: a decoder must not silently ignore a coding tool it does
/// not know (it would decode files made with it wrongly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleMap {
    /// `map[c][i]`: the table index coded for channel `c` when `h_s` predicts index `i`.
    pub map: Vec<Vec<u16>>,
    /// Context shifts (empty: none): the index coded is `map[c][i]` plus the shift of the cell of
    /// (channel group, bucket of `map[c][i]`, the two [`context_bins`]), clamped to the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<i8>,
    /// Whether the context table has the third feature ([`context_depth_bin`]): then its cells
    /// are (channel group, bucket, the two [`context_bins`], the depth bin), [`DEPTH_BINS`] times
    /// as many.
    #[serde(default, skip_serializing_if = "is_false")]
    pub context_depth: bool,
    /// Whether each depth bin is split by the [`context_far_bin`] ([`FAR_BINS`] times as many
    /// cells; needs `context_depth`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub context_far: bool,
    /// The shape of the `y` tables (Gaussian unless the calibration found Laplace tables cheaper).
    #[serde(default, skip_serializing_if = "TableFamily::is_gaussian")]
    pub family: TableFamily,
    /// The latent prediction (none: residuals are coded as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict: Option<Predictor>,
    /// Calibrated `ẑ` tables (empty: the bottleneck's own tables at every quality): entry `b·N + c`
    /// for quality bucket `b` ([`super::z_bucket`]) and channel `c` (see [`ZCalibration`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub z_tables: Vec<ZTable>,
}

/// One calibrated `ẑ` table: integer weights of the symbols `min, min + 1, …`, then of the escape
/// (every other value). The coder's frequencies are the weights scaled to its total
/// ([`ncodec_bitstream::entropy::quantize_masses`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZTable {
    /// The first symbol with a weight of its own.
    pub min: i32,
    /// Weights (at least 1 each), the escape's last.
    pub weights: Vec<u32>,
}

/// Weight of a calibrated `ẑ` table's symbols in total.
pub const Z_TABLE_TOTAL: u32 = 1 << 20;

/// The distribution of the `y` tables, as stored in a weights file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFamily {
    /// Discretized Gaussians (what the network was trained with).
    #[default]
    Gaussian,
    /// Discretized Laplace distributions of the same standard deviations.
    Laplace,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(v: &bool) -> bool {
    !*v
}

impl TableFamily {
    fn is_gaussian(&self) -> bool {
        *self == Self::Gaussian
    }

    /// The default scale table with tables of this family.
    pub fn model(self) -> GaussianConditional {
        GaussianConditional::default_with(self.into())
    }
}

impl From<TableFamily> for ScaleFamily {
    fn from(f: TableFamily) -> Self {
        match f {
            TableFamily::Gaussian => ScaleFamily::Gaussian,
            TableFamily::Laplace => ScaleFamily::Laplace,
        }
    }
}

impl From<ScaleFamily> for TableFamily {
    fn from(f: ScaleFamily) -> Self {
        match f {
            ScaleFamily::Gaussian => TableFamily::Gaussian,
            ScaleFamily::Laplace => TableFamily::Laplace,
        }
    }
}

impl ScaleMap {
    /// The map that changes nothing.
    pub fn identity(channels: usize, levels: usize) -> Self {
        Self {
            map: vec![(0..levels as u16).collect(); channels],
            context: Vec::new(),
            context_depth: false,
            context_far: false,
            family: TableFamily::Gaussian,
            predict: None,
            z_tables: Vec::new(),
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
            if row.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("the scale map's channel {c} is not non-decreasing"));
            }
        }
        if self.context_far && !self.context_depth {
            return Err("the scale map splits a third context feature it does not have".into());
        }
        if self.context_depth && self.context.is_empty() {
            return Err("the scale map has a third context feature but no context table".into());
        }
        if !self.context.is_empty() {
            let want = context_len(channels, levels, self.context_depth, self.context_far);
            if self.context.len() != want {
                return Err(format!(
                    "the scale map's context table has {} entries, not {want}",
                    self.context.len()
                ));
            }
            if self
                .context
                .iter()
                .any(|&v| i32::from(v).abs() > MAX_CONTEXT_SHIFT)
            {
                return Err("the scale map's context table holds a shift beyond ±24".into());
            }
        }
        if let Some(p) = &self.predict {
            p.validate(channels)?;
        }
        if !self.z_tables.len().is_multiple_of(super::Z_BUCKETS) {
            return Err(format!(
                "the scale map has {} z tables, not a multiple of {} quality buckets",
                self.z_tables.len(),
                super::Z_BUCKETS
            ));
        }
        for (i, t) in self.z_tables.iter().enumerate() {
            let len = t.weights.len();
            if !(2..=2 * Z_HIST as usize + 2).contains(&len)
                || !(-Z_HIST..=Z_HIST).contains(&t.min)
                || t.weights.iter().any(|&w| w == 0 || w > Z_TABLE_TOTAL)
            {
                return Err(format!("the scale map's z table {i} is malformed"));
            }
        }
        Ok(())
    }

    /// Whether the coded index depends on the symbols coded before (a context table).
    pub fn has_context(&self) -> bool {
        !self.context.is_empty()
    }

    /// The coded index of channel `c` with the mapped index `mapped` (from [`Self::apply`]), the
    /// context `bins` and the third feature's bin `third` ([`context_third_bin`]; 0 without it);
    /// `mapped` itself without a context table.
    #[inline]
    pub fn context_index(&self, c: usize, mapped: u16, bins: (usize, usize), third: usize) -> u16 {
        if self.context.is_empty() {
            return mapped;
        }
        let levels = self.map[c].len();
        let third_bins = third_bins(self.context_depth, self.context_far);
        let shift = self.context[cell_of(levels, c, mapped, bins, third, third_bins)];
        (i32::from(mapped) + i32::from(shift)).clamp(0, levels as i32 - 1) as u16
    }

    /// The coded index of symbol `k` of the channel-major `[C][h][w]` symbols `sym` (only those
    /// before `k` are read, so the decoder passes what it has decoded) with the mapped index
    /// `mapped`: the one rule the encoder and the decoder share.
    #[inline]
    pub fn coded_index(&self, sym: &[i32], k: usize, mapped: u16, h: usize, w: usize) -> u16 {
        let (c, p) = (k / (h * w), k % (h * w));
        let (i, j) = (p / w, p % w);
        let third = context_third_bin(sym, (c, i, j), (h, w), self.context_depth, self.context_far);
        self.context_index(c, mapped, context_bins(sym, c, i, j, h, w), third)
    }

    /// Maps the predicted indices of channel-major latents of `plane` positions in place.
    pub fn apply_all(&self, indices: &mut [u16], plane: usize) {
        for (c, row) in indices.chunks_mut(plane).enumerate() {
            for i in row {
                *i = self.apply(c, *i);
            }
        }
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
            && self.context.iter().all(|&v| v == 0)
            && self.family == TableFamily::Gaussian
            && self.predict.as_ref().is_none_or(Predictor::is_zero)
            && self.z_tables.is_empty()
    }
}

/// Largest `|k|` of a `ẑ` table scale `2^(k/4)` (factors 1/64 … 64).
pub const Z_SCALE_MAX: i8 = 24;
/// Weight, in symbols, of the scaled bottleneck density in a calibrated `ẑ` table.
pub const Z_PRIOR_COUNT: f64 = 8.0;
/// `ẑ` symbols of magnitude up to this are counted in a histogram; larger ones are kept apart.
const Z_HIST: i32 = 64;

/// Statistics for fitting the calibrated `ẑ` tables of a [`ScaleMap`] (`z_tables`).
///
/// The factorized prior of `ẑ` was trained as one density for every quality, but `z = h_a(y·g(q))`
/// shrinks with the gain: at low qualities nearly every `ẑ` is 0 while the tables expect a spread
/// (on 8 held-out photos at q0.5, `ẑ` took 12 % of the file and its per-channel histogram would
/// have cost 80 % less). For each quality bucket and channel, the calibration first picks the
/// scale `2^(k/4)` of the table family `p_k(v) = F(2^(k/4)·(v + ½)) − F(2^(k/4)·(v − ½))` (`F` the
/// bottleneck's CDF; `k > 0` narrower) under which the bucket's symbols cost least
/// ([`Self::fit`]), then makes the table the histogram of the symbols with `p_k` as a prior worth
/// [`Z_PRIOR_COUNT`] symbols ([`Self::tables`]).
#[derive(Debug, Clone)]
pub struct ZCalibration {
    channels: usize,
    /// `hist[(b·channels + c)·(2·Z_HIST + 1) + v + Z_HIST]`.
    hist: Vec<u64>,
    /// `(b·channels + c, v)` of the symbols outside the histogram.
    outside: Vec<(usize, i32)>,
}

impl ZCalibration {
    /// Empty statistics for `channels` channels of `ẑ`.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            hist: vec![0; super::Z_BUCKETS * channels * (2 * Z_HIST as usize + 1)],
            outside: Vec::new(),
        }
    }

    /// Adds the channel-major `ẑ` symbols of one image (`plane` positions per channel) coded at
    /// quality bucket `bucket`.
    pub fn add(&mut self, bucket: usize, symbols: &[i32], plane: usize) {
        if bucket >= super::Z_BUCKETS || plane == 0 {
            return;
        }
        for (k, &v) in symbols.iter().enumerate() {
            let c = k / plane;
            if c >= self.channels {
                break;
            }
            let cell = bucket * self.channels + c;
            if v.abs() <= Z_HIST {
                self.hist[cell * (2 * Z_HIST as usize + 1) + (v + Z_HIST) as usize] += 1;
            } else {
                self.outside.push((cell, v));
            }
        }
    }

    /// The total bits of the statistics with the scales `z_scale` (empty: all 0), where
    /// `bits(k, c, v)` is the code length of `v` in channel `c` under scale `k`.
    pub fn bits(&self, z_scale: &[i8], bits: &dyn Fn(i8, usize, i32) -> f64) -> f64 {
        (0..super::Z_BUCKETS * self.channels)
            .map(|cell| self.cell_bits(cell, z_scale.get(cell).copied().unwrap_or(0), bits))
            .sum()
    }

    fn cell_bits(&self, cell: usize, k: i8, bits: &dyn Fn(i8, usize, i32) -> f64) -> f64 {
        let c = cell % self.channels;
        let row =
            &self.hist[cell * (2 * Z_HIST as usize + 1)..(cell + 1) * (2 * Z_HIST as usize + 1)];
        let inside: f64 = row
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| n as f64 * bits(k, c, i as i32 - Z_HIST))
            .sum();
        let outside: f64 = self
            .outside
            .iter()
            .filter(|(o, _)| *o == cell)
            .map(|&(_, v)| bits(k, c, v))
            .sum();
        inside + outside
    }

    /// The calibrated tables, per bucket and channel: over the symbols seen (at least −2…2),
    /// `count(v) + Z_PRIOR_COUNT·p(k, c, v)` for the scales `k` of [`Self::fit`], the escape
    /// `Z_PRIOR_COUNT·(1 − Σ p)`, as integer weights of total about [`Z_TABLE_TOTAL`].
    /// `p(k, c, v)` is the probability of `v` in channel `c` at scale `k`.
    pub fn tables(&self, scales: &[i8], p: &dyn Fn(i8, usize, i32) -> f64) -> Vec<ZTable> {
        let width = 2 * Z_HIST as usize + 1;
        (0..super::Z_BUCKETS * self.channels)
            .map(|cell| {
                let (c, k) = (cell % self.channels, scales.get(cell).copied().unwrap_or(0));
                let row = &self.hist[cell * width..(cell + 1) * width];
                // The symbols seen; where none were (a quality not calibrated), the values the
                // scaled density gives more than 10⁻⁶, so such a bucket codes about as before.
                let empty = row.iter().all(|&x| x == 0);
                let seen = |v: i32| {
                    if empty {
                        p(k, c, v) > 1e-6
                    } else {
                        row[(v + Z_HIST) as usize] > 0
                    }
                };
                let lo = (-Z_HIST..=Z_HIST).find(|&v| seen(v)).unwrap_or(0).min(-2);
                let hi = (-Z_HIST..=Z_HIST)
                    .rev()
                    .find(|&v| seen(v))
                    .unwrap_or(0)
                    .max(2);
                let n: f64 = row.iter().map(|&x| x as f64).sum::<f64>()
                    + self.outside.iter().filter(|(o, _)| *o == cell).count() as f64;
                let mut mass: Vec<f64> = (lo..=hi)
                    .map(|v| row[(v + Z_HIST) as usize] as f64 + Z_PRIOR_COUNT * p(k, c, v))
                    .collect();
                let inside: f64 = (lo..=hi).map(|v| p(k, c, v)).sum();
                let outside = n - row.iter().map(|&x| x as f64).sum::<f64>();
                mass.push(outside + Z_PRIOR_COUNT * (1.0 - inside).max(0.0));
                let total = n + Z_PRIOR_COUNT;
                ZTable {
                    min: lo,
                    weights: mass
                        .iter()
                        .map(|&m| {
                            ((m / total * f64::from(Z_TABLE_TOTAL)).round() as u32)
                                .clamp(1, Z_TABLE_TOTAL)
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The total bits of the statistics under calibrated tables, where `bits(cell, v)` is the code
    /// length of `v` in the table of cell `b·channels + c`.
    pub fn table_bits(&self, bits: &dyn Fn(usize, i32) -> f64) -> f64 {
        let width = 2 * Z_HIST as usize + 1;
        let inside: f64 = self
            .hist
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(i, &n)| n as f64 * bits(i / width, (i % width) as i32 - Z_HIST))
            .sum();
        inside
            + self
                .outside
                .iter()
                .map(|&(cell, v)| bits(cell, v))
                .sum::<f64>()
    }

    /// The scales of least total bits, per bucket and channel (0 where a bucket saw nothing).
    pub fn fit(&self, bits: &dyn Fn(i8, usize, i32) -> f64) -> Vec<i8> {
        (0..super::Z_BUCKETS * self.channels)
            .map(|cell| {
                (-Z_SCALE_MAX..=Z_SCALE_MAX)
                    .map(|k| (k, self.cell_bits(cell, k, bits)))
                    // Ties (no data) go to the smallest |k|.
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.abs().cmp(&b.0.abs())))
                    .map_or(0, |(k, _)| k)
            })
            .collect()
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
    /// `(c·levels + i, v)` of the symbols outside the histogram (rare).
    outside: Vec<(usize, i32)>,
    symbols: u64,
}

impl Calibration {
    /// Empty statistics for `channels` latent channels and a table of `levels` scales.
    pub fn new(channels: usize, levels: usize) -> Self {
        Self {
            channels,
            levels,
            hist: vec![0; channels * levels * (2 * HIST as usize + 1)],
            outside: Vec::new(),
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
    pub fn add(&mut self, symbols: &[i32], indices: &[u16], plane: usize) {
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
                self.outside.push((cell, v));
            }
        }
        self.symbols += symbols.len() as u64;
    }

    /// `cost[(c·levels + i)·levels + j]`: bits of the symbols outside the histogram under table `j`.
    fn outside_costs(&self, y: &GaussianConditional) -> Vec<f64> {
        let l = self.levels;
        let mut cost = vec![0.0; self.channels * l * l];
        for &(cell, v) in &self.outside {
            for j in 0..l {
                cost[cell * l + j] += code_length(y, j, v);
            }
        }
        cost
    }

    /// Total code length (bits) of what was added, coded with `map` (validated for this shape).
    pub fn bits(&self, map: &ScaleMap, y: &GaussianConditional) -> f64 {
        let (l, width) = (self.levels, 2 * HIST as usize + 1);
        let outside = self.outside_costs(y);
        let mut total = 0.0;
        for c in 0..self.channels {
            for i in 0..l {
                let cell = c * l + i;
                let j = usize::from(map.apply(c, i as u16));
                total += outside[cell * l + j];
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
        let bits = bits_table(y, l);
        let all_outside = self.outside_costs(y);
        let mut map = Vec::with_capacity(self.channels);
        for c in 0..self.channels {
            // cost[i][j]: bits of channel c's symbols predicted at i if coded with table j.
            let mut cost = vec![vec![0.0f64; l]; l];
            let mut seen = false;
            for (i, row) in cost.iter_mut().enumerate() {
                let cell = c * l + i;
                let h = &self.hist[cell * width..(cell + 1) * width];
                let outside = &all_outside[cell * l..(cell + 1) * l];
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
        ScaleMap {
            map,
            context: Vec::new(),
            context_depth: false,
            context_far: false,
            family: TableFamily::from(y.family()),
            predict: None,
            z_tables: Vec::new(),
        }
    }
}

/// `bits[j][v + HIST]`: the code length of every histogram symbol `v` under table `j`.
fn bits_table(y: &GaussianConditional, levels: usize) -> Vec<Vec<f64>> {
    (0..levels)
        .map(|j| (-HIST..=HIST).map(|v| code_length(y, j, v)).collect())
        .collect()
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

/// Code-length statistics for fitting the context table of a [`ScaleMap`] whose per-channel map
/// is already fitted (the second pass of a calibration).
#[derive(Debug, Clone)]
pub struct ContextCalibration {
    channels: usize,
    levels: usize,
    /// Whether the table fitted has the third feature.
    depth: bool,
    /// Whether its depth bins are split by the far bins.
    far: bool,
    /// A candidate third feature in its place (diagnostics; not a format).
    feature: Option<ThirdFeature>,
    /// `hist[((cell·BUCKET + mapped % BUCKET)·(2·HIST + 1)) + v + HIST]`: 32-bit counts, which
    /// halve the memory of `--screen-context`; they would saturate only past 4·10⁹ symbols in one
    /// slot, more than the default calibration codes in all (64 photos of at most 1024², 2²⁰ symbols
    /// each, at 10 qualities: 0.67·10⁹).
    hist: Vec<u32>,
    /// `(cell, mapped index, v)` of the symbols outside the histogram (rare).
    outside: Vec<(usize, u16, i32)>,
}

impl ContextCalibration {
    /// Empty statistics for `channels` latent channels and a table of `levels` scales, for a
    /// table with (`depth`) or without the third feature, its bins split by the far bins
    /// (`far`, with `depth`) or not.
    pub fn new(channels: usize, levels: usize, depth: bool, far: bool) -> Self {
        Self::build(channels, levels, (depth, depth && far), None)
    }

    /// Statistics for a table whose third feature is the candidate `feature` (diagnostics: such a
    /// table can be measured with [`Self::cross_bits`] but not stored in a [`ScaleMap`]).
    pub fn with_feature(channels: usize, levels: usize, feature: ThirdFeature) -> Self {
        Self::build(channels, levels, (false, false), Some(feature))
    }

    fn build(
        channels: usize,
        levels: usize,
        (depth, far): (bool, bool),
        feature: Option<ThirdFeature>,
    ) -> Self {
        let mut s = Self {
            channels,
            levels,
            depth,
            far,
            feature,
            hist: Vec::new(),
            outside: Vec::new(),
        };
        s.hist = vec![0; s.cells() * CONTEXT_BUCKET * (2 * HIST as usize + 1)];
        s
    }

    fn third_bins(&self) -> usize {
        match self.feature {
            Some((n, _)) => n,
            None => third_bins(self.depth, self.far),
        }
    }

    fn cells(&self) -> usize {
        table_len(self.channels, self.levels, self.third_bins())
    }

    /// Adds one coded latent of `h × w` positions: its symbols (channel-major) and the indices after
    /// the per-channel map.
    ///
    /// # Panics
    /// If the lengths disagree with `channels · h · w` or an index is beyond the table.
    pub fn add(&mut self, symbols: &[i32], mapped: &[u16], h: usize, w: usize) {
        assert_eq!(
            symbols.len(),
            self.channels * h * w,
            "symbols of another shape"
        );
        assert_eq!(mapped.len(), symbols.len(), "one index per symbol");
        let width = 2 * HIST as usize + 1;
        for (k, (&v, &j)) in symbols.iter().zip(mapped).enumerate() {
            assert!(usize::from(j) < self.levels, "index beyond the table");
            let (c, p) = (k / (h * w), k % (h * w));
            let (pi, pj) = (p / w, p % w);
            let third = match self.feature {
                Some((_, f)) => f(symbols, c, pi, pj, h, w),
                None => context_third_bin(symbols, (c, pi, pj), (h, w), self.depth, self.far),
            };
            let cell = cell_of(
                self.levels,
                c,
                j,
                context_bins(symbols, c, pi, pj, h, w),
                third,
                self.third_bins(),
            );
            if (-HIST..=HIST).contains(&v) {
                let slot = cell * CONTEXT_BUCKET + usize::from(j) % CONTEXT_BUCKET;
                let n = &mut self.hist[slot * width + (v + HIST) as usize];
                *n = n.saturating_add(1);
            } else {
                self.outside.push((cell, j, v));
            }
        }
    }

    /// `cost[cell·(2·MAX + 1) + shift + MAX]`: bits of the symbols outside the histogram.
    fn outside_costs(&self, y: &GaussianConditional) -> Vec<f64> {
        let shifts = 2 * MAX_CONTEXT_SHIFT as usize + 1;
        let mut cost = vec![0.0; self.cells() * shifts];
        for &(cell, j, v) in &self.outside {
            for s in 0..shifts {
                let t = shifted(j, s as i32 - MAX_CONTEXT_SHIFT, self.levels);
                cost[cell * shifts + s] += code_length(y, usize::from(t), v);
            }
        }
        cost
    }

    /// Bits of the symbols of `cell` coded with shift `s` (an offset into `−MAX..=MAX`).
    fn cell_cost(&self, cell: usize, s: usize, bits: &[Vec<f64>], outside: &[f64]) -> f64 {
        let (l, width) = (self.levels, 2 * HIST as usize + 1);
        let shifts = 2 * MAX_CONTEXT_SHIFT as usize + 1;
        let bucket = (cell / bins_per_bucket(self.third_bins())) % l.div_ceil(CONTEXT_BUCKET);
        let mut total = outside[cell * shifts + s];
        for r in 0..CONTEXT_BUCKET {
            let j = bucket * CONTEXT_BUCKET + r;
            if j >= l {
                break;
            }
            let t = usize::from(shifted(j as u16, s as i32 - MAX_CONTEXT_SHIFT, l));
            let h = &self.hist[(cell * CONTEXT_BUCKET + r) * width..][..width];
            total += h
                .iter()
                .zip(&bits[t])
                .filter(|(n, _)| **n > 0)
                .map(|(&n, b)| n as f64 * b)
                .sum::<f64>();
        }
        total
    }

    /// Total code length (bits) of what was added, coded with `map`'s context table (none: shift 0;
    /// `map` validated for this shape).
    pub fn bits(&self, map: &ScaleMap, y: &GaussianConditional) -> f64 {
        let (bits, outside) = (bits_table(y, self.levels), self.outside_costs(y));
        (0..self.cells())
            .map(|cell| {
                let shift = map.context.get(cell).map_or(0, |&v| i32::from(v));
                self.cell_cost(cell, (shift + MAX_CONTEXT_SHIFT) as usize, &bits, &outside)
            })
            .sum()
    }

    /// Diagnostics, not part of any format: the empirical entropy (bits) of the symbols inside the
    /// histogram, per (cell, mapped index) slot, i.e. what a free table per slot would cost
    /// in-sample; and the bits of the same symbols with the best shift per cell chosen among the
    /// tables of each model in `models` (per cell the least).
    pub fn diagnose(&self, models: &[&GaussianConditional]) -> (f64, f64) {
        let width = 2 * HIST as usize + 1;
        let entropy: f64 = self
            .hist
            .chunks(width)
            .map(|h| {
                let n: u64 = h.iter().map(|&k| u64::from(k)).sum();
                if n == 0 {
                    return 0.0;
                }
                h.iter()
                    .filter(|&&k| k > 0)
                    .map(|&k| k as f64 * (n as f64 / k as f64).log2())
                    .sum::<f64>()
            })
            .sum();
        let tables: Vec<(Vec<Vec<f64>>, Vec<f64>)> = models
            .iter()
            .map(|y| (bits_table(y, self.levels), self.outside_costs(y)))
            .collect();
        let shifts = 2 * MAX_CONTEXT_SHIFT as usize + 1;
        let best: f64 = (0..self.cells())
            .map(|cell| {
                tables
                    .iter()
                    .flat_map(|(b, o)| (0..shifts).map(move |s| self.cell_cost(cell, s, b, o)))
                    .fold(f64::INFINITY, f64::min)
            })
            .sum();
        (entropy, best)
    }

    /// Diagnostics: the bits of `other`'s symbols coded with the shifts fitted on these, i.e. a
    /// held-out measure of the table.
    ///
    /// # Panics
    /// If `other` gathers another table's cells (other channels, levels or third feature).
    pub fn cross_bits(&self, other: &Self, y: &GaussianConditional) -> f64 {
        assert!(
            (self.channels, self.levels, self.third_bins())
                == (other.channels, other.levels, other.third_bins()),
            "statistics of two different context tables"
        );
        let (bits, outside) = (bits_table(y, self.levels), self.outside_costs(y));
        let other_outside = other.outside_costs(y);
        (0..self.cells())
            .map(|cell| {
                let best = self.best_shift(cell, &bits, &outside);
                other.cell_cost(cell, best, &bits, &other_outside)
            })
            .sum()
    }

    /// The shift (an offset into `−MAX..=MAX`) of least cost for `cell`: 0 unless another is
    /// strictly better, so an empty cell keeps 0.
    fn best_shift(&self, cell: usize, bits: &[Vec<f64>], outside: &[f64]) -> usize {
        let zero = MAX_CONTEXT_SHIFT as usize;
        let (mut best, mut best_cost) = (zero, self.cell_cost(cell, zero, bits, outside));
        for s in 0..=2 * zero {
            let c = self.cell_cost(cell, s, bits, outside);
            if c < best_cost {
                (best, best_cost) = (s, c);
            }
        }
        best
    }

    /// `map` with the context table of least total code length on what was added.
    pub fn fit(&self, map: &ScaleMap, y: &GaussianConditional) -> ScaleMap {
        let (bits, outside) = (bits_table(y, self.levels), self.outside_costs(y));
        let context = (0..self.cells())
            .map(|cell| (self.best_shift(cell, &bits, &outside) as i32 - MAX_CONTEXT_SHIFT) as i8)
            .collect();
        ScaleMap {
            map: map.map.clone(),
            context,
            context_depth: self.depth,
            context_far: self.far,
            family: map.family,
            predict: map.predict.clone(),
            z_tables: map.z_tables.clone(),
        }
    }
}

fn shifted(j: u16, s: i32, levels: usize) -> u16 {
    (i32::from(j) + s).clamp(0, levels as i32 - 1) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator of non-negative numbers (a 64-bit LCG's high bits).
    fn lcg(mut state: u64) -> impl FnMut() -> i64 {
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as i64
        }
    }

    #[test]
    fn unknown_scale_map_fields_are_refused() {
        let known = r#"{"map": [[0, 1]], "family": "laplace"}"#;
        assert!(serde_json::from_str::<ScaleMap>(known).is_ok());
        let newer = r#"{"map": [[0, 1]], "family": "laplace", "offsets": [1]}"#;
        assert!(serde_json::from_str::<ScaleMap>(newer).is_err());
    }

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
            cal.add(&symbols, &vec![predicted; 2 * plane], plane);
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
    fn context_bins_read_only_what_the_decoder_has() {
        let (c, h, w) = (4, 5, 6);
        let sym: Vec<i32> = (0..c * h * w).map(|k| ((k * 37) % 11) as i32 - 5).collect();
        for k in 0..sym.len() {
            let (ch, p) = (k / (h * w), k % (h * w));
            let at = context_bins(&sym, ch, p / w, p % w, h, w);
            // Only the symbols before k count: the decoder passes exactly those.
            let mut later = sym.clone();
            for v in &mut later[k..] {
                *v = 1000;
            }
            assert_eq!(
                context_bins(&later[..], ch, p / w, p % w, h, w),
                at,
                "symbol {k}"
            );
            // Reading past the decoded prefix would panic here.
            assert_eq!(context_bins(&sym[..k], ch, p / w, p % w, h, w), at);
            let depth = context_depth_bin(&sym, ch, p / w, p % w, h, w);
            assert_eq!(context_depth_bin(&later, ch, p / w, p % w, h, w), depth);
            assert_eq!(context_depth_bin(&sym[..k], ch, p / w, p % w, h, w), depth);
            let third = context_third_bin(&sym, (ch, p / w, p % w), (h, w), true, true);
            assert!(third < third_bins(true, true));
            assert_eq!(
                context_third_bin(&later, (ch, p / w, p % w), (h, w), true, true),
                third
            );
            assert_eq!(
                context_third_bin(&sym[..k], (ch, p / w, p % w), (h, w), true, true),
                third
            );
        }
        // The depth bin counts the magnitudes of the channels before, at the same position.
        let mut sym = vec![0i32; 12 * h * w];
        assert_eq!(context_depth_bin(&sym, 11, 2, 3, h, w), 0);
        sym[10 * h * w + 2 * w + 3] = -3;
        assert_eq!(context_depth_bin(&sym, 11, 2, 3, h, w), 2);
        assert_eq!(context_depth_bin(&sym, 11, 2, 4, h, w), 0);
        sym[3 * h * w + 2 * w + 3] = 5;
        assert_eq!(context_depth_bin(&sym, 11, 2, 3, h, w), 4);
        assert_eq!(context_depth_bin(&sym, 4, 2, 3, h, w), 3);
        // Channel 3 is 9 channels before channel 12: outside its window, inside the far one.
        assert_eq!(context_depth_bin(&sym, 12, 2, 3, h, w), 2);
        assert_eq!(context_far_bin(&sym, 12, 2, 3, h, w), 3);
        assert_eq!(context_far_bin(&sym, 11, 2, 3, h, w), 0);
        assert_eq!(
            context_third_bin(&sym, (12, 2, 3), (h, w), true, true),
            2 * FAR_BINS + 3
        );
        assert_eq!(context_third_bin(&sym, (12, 2, 3), (h, w), true, false), 2);
        assert_eq!(context_third_bin(&sym, (12, 2, 3), (h, w), false, true), 0);
        // Channel 3 is 27 channels before channel 30: outside both.
        let mut deep = vec![0i32; 31 * h * w];
        deep[3 * h * w + 2 * w + 3] = 5;
        assert_eq!(context_far_bin(&deep, 30, 2, 3, h, w), 0);
        assert_eq!(context_far_bin(&deep, 26, 2, 3, h, w), 3);
        assert_eq!(bin(0), 0);
        assert_eq!(bin(4), 3);
        assert_eq!(bin(1 << 40), CONTEXT_BINS - 1);
    }

    #[test]
    fn the_context_fit_finds_a_dependence_on_the_neighbours() {
        // One channel per group-position; symbols are large where the left neighbour is large.
        let y = GaussianConditional::default();
        let levels = y.scales().len();
        let (h, w) = (40, 40);
        let mut next = lcg(99u64);
        let mut sym = vec![0i32; h * w];
        for i in 0..h {
            for j in 0..w {
                let loud = j > 0 && sym[i * w + j - 1].abs() > 2;
                let spread = if loud || next() % 4 == 0 { 40 } else { 1 };
                sym[i * w + j] = (next() % (2 * spread + 1) - spread) as i32;
            }
        }
        let mapped = vec![30u16; h * w];
        let mut stats = ContextCalibration::new(1, levels, false, false);
        stats.add(&sym, &mapped, h, w);
        let map = ScaleMap::identity(1, levels);
        let fitted = stats.fit(&map, &y);
        fitted.validate(1, levels).expect("shape");
        assert!(fitted.has_context());
        assert!(stats.bits(&fitted, &y) < 0.95 * stats.bits(&map, &y));
        // Quiet neighbours get smaller scales than loud ones.
        let quiet = fitted.context_index(0, 30, (0, 0), 0);
        let loud = fitted.context_index(0, 30, (0, CONTEXT_BINS - 1), 0);
        assert!(quiet < loud, "{quiet} vs {loud}");
    }

    #[test]
    fn the_depth_feature_finds_a_dependence_on_the_channels_before() {
        // Channel 1 is loud exactly where channel 0 is, at the same position (channel 0 is random
        // noise): the two-feature context sees channel 0 only summed over the 3×3 neighbourhood,
        // the third feature at the position itself.
        let y = GaussianConditional::default();
        let levels = y.scales().len();
        let (h, w) = (48, 48);
        let mut next = lcg(7u64);
        let mut sym = vec![0i32; 2 * h * w];
        for p in 0..h * w {
            if next() % 3 == 0 {
                sym[p] = 4;
                sym[h * w + p] = (next() % 61 - 30) as i32;
            }
        }
        let mapped = vec![30u16; 2 * h * w];
        let map = ScaleMap::identity(2, levels);
        let fit = |depth: bool| {
            let mut stats = ContextCalibration::new(2, levels, depth, false);
            stats.add(&sym, &mapped, h, w);
            let fitted = stats.fit(&map, &y);
            fitted.validate(2, levels).expect("shape");
            (stats.bits(&fitted, &y), fitted)
        };
        let ((two, _), (three, fitted)) = (fit(false), fit(true));
        assert!(fitted.context_depth);
        assert!(
            three < 0.9 * two,
            "{two} bits with two features, {three} with three"
        );
        // Channel 1 after a silent channel 0 gets a smaller scale than after a loud one.
        let quiet = fitted.context_index(1, 30, (0, 0), 0);
        let loud = fitted.context_index(1, 30, (0, 0), 3);
        assert!(quiet < loud, "{quiet} vs {loud}");
    }

    #[test]
    fn the_far_split_finds_a_dependence_beyond_the_depth_window() {
        // Channel 9 is loud exactly where channel 0 is; channels 1–8, all the depth feature
        // sees of channel 9, are silent.
        let y = GaussianConditional::default();
        let levels = y.scales().len();
        let (c, h, w) = (10, 40, 40);
        let plane = h * w;
        let mut next = lcg(11u64);
        let mut sym = vec![0i32; c * plane];
        for p in 0..plane {
            if next() % 3 == 0 {
                sym[p] = 4;
                sym[9 * plane + p] = (next() % 61 - 30) as i32;
            }
        }
        let mapped = vec![30u16; c * plane];
        let map = ScaleMap::identity(c, levels);
        let fit = |far: bool| {
            let mut stats = ContextCalibration::new(c, levels, true, far);
            stats.add(&sym, &mapped, h, w);
            let fitted = stats.fit(&map, &y);
            fitted.validate(c, levels).expect("shape");
            (stats.bits(&fitted, &y), fitted)
        };
        let ((depth, _), (far, fitted)) = (fit(false), fit(true));
        assert!(fitted.context_depth && fitted.context_far);
        assert!(far < 0.9 * depth, "{depth} bits with depth, {far} split");
        let quiet = fitted.context_index(9, 30, (0, 0), 0);
        let loud = fitted.context_index(9, 30, (0, 0), 3);
        assert!(quiet < loud, "{quiet} vs {loud}");
        // The decoder's rule reads the far channels.
        // (at a loud position whose left and upper neighbours in channel 9 are silent, so that
        // the two other bins are 0 too)
        let silent = |p: usize| {
            (p.is_multiple_of(w) || sym[9 * plane + p - 1] == 0)
                && (p < w || sym[9 * plane + p - w] == 0)
        };
        let p = (0..plane)
            .find(|&p| sym[p] != 0 && silent(p))
            .expect("a loud position");
        let k = 9 * plane + p;
        assert_eq!(fitted.coded_index(&sym, k, 30, h, w), loud);
    }

    #[test]
    fn cross_validation_tells_a_real_feature_from_noise() {
        // As above: channel 1 is loud exactly where channel 0 is. Two independent draws make the
        // folds; a candidate third feature reading channel 0 at the position generalizes, one
        // reading a coin flip of the position does not.
        fn at_position(s: &[i32], c: usize, i: usize, j: usize, _h: usize, w: usize) -> usize {
            usize::from(c > 0 && s[i * w + j] != 0)
        }
        fn coin(_: &[i32], _: usize, i: usize, j: usize, _: usize, _: usize) -> usize {
            ((i * 7919 + j * 104_729) >> 3) % 2
        }
        fn none(_: &[i32], _: usize, _: usize, _: usize, _: usize, _: usize) -> usize {
            0
        }
        let y = GaussianConditional::default();
        let levels = y.scales().len();
        let (h, w) = (32, 32);
        let draw = |seed: u64| {
            let mut next = lcg(seed);
            let mut sym = vec![0i32; 2 * h * w];
            for p in 0..h * w {
                if next() % 3 == 0 {
                    sym[p] = 4;
                    sym[h * w + p] = (next() % 61 - 30) as i32;
                }
            }
            sym
        };
        let folds = [draw(7), draw(8)];
        let mapped = vec![30u16; 2 * h * w];
        let measure = |feature: ThirdFeature| {
            let stats: Vec<ContextCalibration> = folds
                .iter()
                .map(|sym| {
                    let mut s = ContextCalibration::with_feature(2, levels, feature);
                    s.add(sym, &mapped, h, w);
                    s
                })
                .collect();
            let held_out = stats[0].cross_bits(&stats[1], &y) + stats[1].cross_bits(&stats[0], &y);
            let in_sample = stats[0].cross_bits(&stats[0], &y) + stats[1].cross_bits(&stats[1], &y);
            assert!(held_out >= in_sample, "{held_out} < {in_sample}");
            (held_out, in_sample)
        };
        let (none, real, noise) = (
            measure((1, none)),
            measure((2, at_position)),
            measure((2, coin)),
        );
        assert!(real.0 < 0.9 * none.0, "{real:?} against {none:?}");
        // More cells always fit their own symbols at least as well, noise included, but do not
        // carry over.
        assert!(noise.1 <= none.1, "{noise:?} against {none:?}");
        assert!(noise.0 >= none.0, "{noise:?} against {none:?}");
        // The same symbols as their own held-out set: nothing changes.
        let mut a = ContextCalibration::new(2, levels, false, false);
        a.add(&folds[0], &mapped, h, w);
        let fitted = a.fit(&ScaleMap::identity(2, levels), &y);
        assert!((a.cross_bits(&a, &y) - a.bits(&fitted, &y)).abs() < 1e-6);
    }

    #[test]
    fn the_z_fit_finds_the_scale_of_each_bucket_and_channel() {
        // A family where scale k is a discretized Laplace of width 8·2^(−k/4): symbols drawn with
        // k = 8 in channel 0 and k = −4 in channel 1 of bucket 2; nothing elsewhere.
        let width = |k: i8| 8.0 * (-f64::from(k) / 4.0).exp2();
        let bits = |k: i8, _c: usize, v: i32| -> f64 {
            let b = width(k);
            let cdf = |x: f64| {
                if x < 0.0 {
                    0.5 * (x / b).exp()
                } else {
                    1.0 - 0.5 * (-x / b).exp()
                }
            };
            let p = cdf(f64::from(v) + 0.5) - cdf(f64::from(v) - 0.5);
            -p.max(1e-12).log2()
        };
        let mut stats = ZCalibration::new(2);
        let mut u = 0.123_f64;
        let mut draw = |k: i8| -> i32 {
            u = (u * 7919.0 + 0.31).fract();
            let t = u.clamp(1e-9, 1.0 - 1e-9);
            let x = if t < 0.5 {
                width(k) * (2.0 * t).ln()
            } else {
                -width(k) * (2.0 * (1.0 - t)).ln()
            };
            x.round() as i32
        };
        let plane = 4000;
        let mut z: Vec<i32> = (0..plane).map(|_| draw(8)).collect();
        z.extend((0..plane).map(|_| draw(-4)));
        stats.add(2, &z, plane);
        let fit = stats.fit(&bits);
        assert_eq!(fit.len(), super::super::Z_BUCKETS * 2);
        assert!((fit[2 * 2] - 8).abs() <= 1, "{fit:?}");
        assert!((fit[2 * 2 + 1] + 4).abs() <= 1, "{fit:?}");
        assert!(
            fit.iter().enumerate().all(|(i, &k)| i / 2 == 2 || k == 0),
            "{fit:?}"
        );
        assert!(stats.bits(&fit, &bits) < stats.bits(&[], &bits));
        // Out-of-range buckets are ignored, never a panic.
        stats.add(super::super::Z_BUCKETS, &z, plane);
        stats.add(0, &z, 0);
    }

    #[test]
    fn each_calibrated_quality_has_its_own_z_bucket() {
        use super::super::{Z_BUCKETS, z_bucket};
        let qs = [0.25f32, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let buckets: Vec<usize> = qs.iter().map(|&q| z_bucket(q)).collect();
        assert_eq!(buckets, (0..Z_BUCKETS).collect::<Vec<_>>());
        assert_eq!(z_bucket(0.1), 0);
        assert_eq!(z_bucket(f32::NAN), 0);
        let mut last = 0;
        for i in 1..=800 {
            let b = z_bucket(i as f32 / 100.0);
            assert!(b >= last && b < Z_BUCKETS);
            last = b;
        }
    }

    #[test]
    fn z_tables_follow_the_histogram_and_bad_ones_are_refused() {
        let mut stats = ZCalibration::new(1);
        // Bucket 0: 90 zeros, 10 ones; a flat prior over −4…4.
        let z: Vec<i32> = (0..100).map(|i| i32::from(i >= 90)).collect();
        stats.add(0, &z, 100);
        let prior = |_k: i8, _c: usize, v: i32| if v.abs() <= 4 { 1.0 / 9.0 } else { 0.0 };
        let tables = stats.tables(&[0; 10], &prior);
        assert_eq!(tables.len(), super::super::Z_BUCKETS);
        let t = &tables[0];
        assert_eq!((t.min, t.weights.len()), (-2, 5 + 1));
        let share = |t: &ZTable, v: i32| {
            let total: u32 = t.weights.iter().sum();
            f64::from(t.weights[(v - t.min) as usize]) / f64::from(total)
        };
        let want = (90.0 + Z_PRIOR_COUNT / 9.0) / (100.0 + Z_PRIOR_COUNT);
        assert!((share(t, 0) - want).abs() < 1e-3, "{t:?}");
        assert!(share(t, 1) > share(t, -1) && share(t, -1) > 0.0);
        // An empty bucket is the prior, over the values it gives weight.
        assert!((share(&tables[3], 0) - 1.0 / 9.0).abs() < 1e-3);
        assert_eq!((tables[3].min, tables[3].weights.len()), (-4, 9 + 1));
        let mut map = ScaleMap::identity(4, 8);
        map.z_tables = tables.clone();
        assert!(map.validate(4, 8).is_ok());
        map.z_tables[1].weights[0] = 0;
        assert!(map.validate(4, 8).unwrap_err().contains("z table 1"));
        map.z_tables = tables.clone();
        map.z_tables[2].min = i32::MIN;
        assert!(map.validate(4, 8).unwrap_err().contains("z table 2"));
        map.z_tables = tables;
        map.z_tables.pop();
        assert!(map.validate(4, 8).is_err());
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
        let mut c = ScaleMap::identity(3, 64);
        c.context = vec![0; context_len(3, 64, false, false) - 1];
        assert!(c.validate(3, 64).unwrap_err().contains("context table"));
        c.context = vec![25; context_len(3, 64, false, false)];
        assert!(c.validate(3, 64).is_err());
        c.context = vec![-3; context_len(3, 64, false, false)];
        assert!(c.validate(3, 64).is_ok() && c.has_context() && !c.is_identity());
        // The third feature needs a table of its size.
        c.context_depth = true;
        assert!(c.validate(3, 64).unwrap_err().contains("context table"));
        c.context = vec![-3; context_len(3, 64, true, false)];
        assert!(c.validate(3, 64).is_ok());
        // So does its split by the far channels, which needs the third feature.
        c.context_far = true;
        assert!(c.validate(3, 64).unwrap_err().contains("context table"));
        c.context = vec![-3; context_len(3, 64, true, true)];
        assert!(c.validate(3, 64).is_ok());
        c.context_depth = false;
        assert!(c.validate(3, 64).unwrap_err().contains("does not have"));
        c.context_depth = true;
        c.context_far = false;
        c.context = vec![-3; context_len(3, 64, true, false)];
        c.context.clear();
        assert!(
            c.validate(3, 64)
                .unwrap_err()
                .contains("third context feature")
        );
    }
}
