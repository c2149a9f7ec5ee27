//! Gaussian mixture conditional with `K` components per symbol, in integer arithmetic end to end.
//!
//! Each symbol has, per component, an integer weight (`u16`), a mean in fixed point (`i32`, units of
//! 1/16, see [`MEAN_FRAC_BITS`]) and a scale index into the scale table. The mixture's table is
//! built per symbol from precomputed fixed-point CDF samples of each scale's Gaussian at 1/16 steps:
//!
//! ```text
//! mass(b) = Σ_k w_k · (C_k(16·b + 8 − μ_k) − C_k(16·b − 8 − μ_k)),   C_k(t) = round(2^31 · Φ(t / (16 σ_k)))
//! ```
//!
//! over a window of integers around the components (values outside are escaped), then quantized by
//! the integer rule of [`quantize_masses`](crate::entropy::table::quantize_masses). Only the CDF
//! samples come from floats (pure-Rust `libm`, computed once); everything per symbol is integer, so
//! encoder and decoder agree bit for bit on every platform.

use crate::entropy::ans::{AnsReader, AnsWriter, cost_bits};
use crate::entropy::gaussian::{TAIL_BOUND, normal_cdf};
use crate::entropy::table::CdfTable;
use crate::error::{BitstreamError, Result};

/// Fractional bits of the fixed-point means: a mean of `μ` symbols is passed as `round(16 μ)`.
pub const MEAN_FRAC_BITS: u32 = 4;
const STEP: i64 = 1 << MEAN_FRAC_BITS;
const ONE: u64 = 1 << 31;
/// Widest window of values a per-symbol table covers; values outside are escaped.
pub const MAX_WINDOW: i64 = 8192;
/// Most components per symbol.
pub const MAX_COMPONENTS: usize = 16;
/// Largest scale a mixture table may hold.
pub const MAX_SCALE: f64 = 1024.0;
/// Largest |mean| in symbols.
pub const MAX_MEAN: i64 = 1 << 24;

#[derive(Debug, Clone, PartialEq)]
struct ScaleCdf {
    half: i64,
    radius: i64,
    values: Vec<u32>,
}

impl ScaleCdf {
    fn new(s: f64) -> Self {
        let radius = (TAIL_BOUND * s).ceil().max(1.0) as i64 + 1;
        let half = radius * STEP;
        let values = (-half..=half)
            .map(|t| (normal_cdf(t as f64 / (STEP as f64 * s)) * ONE as f64).round() as u32)
            .collect();
        Self {
            half,
            radius,
            values,
        }
    }

    #[inline]
    fn at(&self, t: i64) -> u64 {
        if t < -self.half {
            0
        } else if t > self.half {
            ONE
        } else {
            u64::from(self.values[(t + self.half) as usize])
        }
    }
}

/// Per-symbol parameters of `n` symbols with `K` components each, flattened symbol-major
/// (`weights[i * K + k]`).
#[derive(Debug, Clone, Copy)]
pub struct MixtureParams<'a> {
    /// Integer weights (need not be normalized; all-zero means equal weights).
    pub weights: &'a [u16],
    /// Means in units of 1/16 symbol.
    pub means: &'a [i32],
    /// Scale indices into the model's scale table.
    pub scales: &'a [u16],
}

/// A Gaussian mixture entropy model over a fixed scale table.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMixture {
    components: usize,
    scales: Vec<f64>,
    cdfs: Vec<ScaleCdf>,
}

impl GaussianMixture {
    /// A mixture of `components` Gaussians whose scales come from `scales`.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for 0 or more than [`MAX_COMPONENTS`] components, an
    /// empty table, more than 65536 scales, or a scale outside `(0, MAX_SCALE]`.
    pub fn new(components: usize, scales: Vec<f64>) -> Result<Self> {
        if !(1..=MAX_COMPONENTS).contains(&components) {
            return Err(BitstreamError::InvalidParameter(format!(
                "mixture needs 1..={MAX_COMPONENTS} components, got {components}"
            )));
        }
        if scales.is_empty()
            || scales.len() > 65536
            || scales.iter().any(|&s| !(s > 0.0 && s <= MAX_SCALE))
        {
            return Err(BitstreamError::InvalidParameter(format!(
                "mixture scales must be 1..=65536 values in (0, {MAX_SCALE}]"
            )));
        }
        let cdfs = scales.iter().map(|&s| ScaleCdf::new(s)).collect();
        Ok(Self {
            components,
            scales,
            cdfs,
        })
    }

    /// Components per symbol.
    pub fn components(&self) -> usize {
        self.components
    }

    /// The scale table.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    fn check(&self, p: &MixtureParams<'_>) -> Result<usize> {
        let k = self.components;
        let n = p.weights.len() / k;
        if p.weights.len() != n * k || p.means.len() != n * k || p.scales.len() != n * k {
            return Err(BitstreamError::InvalidParameter(format!(
                "mixture parameters must all have n × {k} entries (weights {}, means {}, scales {})",
                p.weights.len(),
                p.means.len(),
                p.scales.len()
            )));
        }
        if let Some(&s) = p
            .scales
            .iter()
            .find(|&&s| usize::from(s) >= self.cdfs.len())
        {
            return Err(BitstreamError::InvalidParameter(format!(
                "scale index {s} outside the table of {}",
                self.cdfs.len()
            )));
        }
        if p.means
            .iter()
            .any(|&m| i64::from(m).abs() > MAX_MEAN * STEP)
        {
            return Err(BitstreamError::InvalidParameter(format!(
                "mixture mean beyond ±{MAX_MEAN}"
            )));
        }
        Ok(n)
    }

    /// The quantized table of symbol `i` (parameters already checked). `masses` is a scratch buffer.
    fn table(&self, p: &MixtureParams<'_>, i: usize, masses: &mut Vec<u64>) -> Result<CdfTable> {
        let k = self.components;
        let range = i * k..(i + 1) * k;
        let (w, mu, sc) = (
            &p.weights[range.clone()],
            &p.means[range.clone()],
            &p.scales[range],
        );
        let all_zero = w.iter().all(|&x| x == 0);
        let weight = |j: usize| if all_zero { 1 } else { u64::from(w[j]) };
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for j in 0..k {
            if weight(j) == 0 {
                continue;
            }
            let c = i64::from(mu[j]) >> MEAN_FRAC_BITS;
            let r = self.cdfs[usize::from(sc[j])].radius;
            lo = lo.min(c - r);
            hi = hi.max(c + r);
        }
        if hi - lo + 1 > MAX_WINDOW {
            // Centre the window on the heaviest component (first on ties); the rest is escaped.
            let heavy = (0..k).fold(0, |best, j| if weight(j) > weight(best) { j } else { best });
            lo = (i64::from(mu[heavy]) >> MEAN_FRAC_BITS) - MAX_WINDOW / 2;
            hi = lo + MAX_WINDOW - 1;
        }
        // Mixture CDF at the lower boundary of each value and at the top of the window (W + 1
        // boundaries, each component looked up once per boundary); masses are the differences.
        masses.clear();
        let cdf_at = |b: i64| -> u64 {
            (0..k)
                .map(|j| {
                    let t = STEP * b - STEP / 2 - i64::from(mu[j]);
                    weight(j) * self.cdfs[usize::from(sc[j])].at(t)
                })
                .sum()
        };
        let first = cdf_at(lo);
        let mut prev = first;
        for b in lo..=hi {
            let next = cdf_at(b + 1);
            masses.push(next - prev);
            prev = next;
        }
        let inside = prev - first;
        let total: u64 = (0..k).map(|j| weight(j) * ONE).sum();
        masses.push(total - inside);
        CdfTable::from_masses(lo as i32, masses, true)
    }

    /// Codes one symbol per parameter set.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for inconsistent parameters.
    pub fn encode(&self, symbols: &[i32], params: &MixtureParams<'_>) -> Result<Vec<u8>> {
        let n = self.check(params)?;
        if n != symbols.len() {
            return Err(BitstreamError::InvalidParameter(format!(
                "{} symbols but {n} parameter sets",
                symbols.len()
            )));
        }
        let mut w = AnsWriter::new();
        let mut scratch = Vec::new();
        for (i, &v) in symbols.iter().enumerate().rev() {
            w.put(&self.table(params, i, &mut scratch)?, v)?;
        }
        w.finish()
    }

    /// Decodes one symbol per parameter set.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a damaged stream.
    pub fn decode(&self, bytes: &[u8], params: &MixtureParams<'_>) -> Result<Vec<i32>> {
        let n = self.check(params)?;
        let mut r = AnsReader::new(bytes)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| BitstreamError::InvalidParameter("cannot allocate the symbols".into()))?;
        let mut scratch = Vec::new();
        for i in 0..n {
            out.push(r.get(&self.table(params, i, &mut scratch)?)?);
        }
        r.finish()?;
        Ok(out)
    }

    /// Ideal code length (−Σ log2 p under the quantized per-symbol tables).
    ///
    /// # Errors
    /// As [`GaussianMixture::encode`].
    pub fn cost_bits(&self, symbols: &[i32], params: &MixtureParams<'_>) -> Result<f64> {
        self.check(params)?;
        let mut scratch = Vec::new();
        let mut bits = 0.0;
        for (i, &v) in symbols.iter().enumerate() {
            let t = self.table(params, i, &mut scratch)?;
            bits += cost_bits(&t, v).unwrap_or(f64::INFINITY);
        }
        Ok(bits)
    }
}
