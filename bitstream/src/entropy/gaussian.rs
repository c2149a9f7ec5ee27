//! Gaussian conditional: one table per entry of a fixed scale table, chosen per symbol by an integer
//! scale index (CompressAI's `GaussianConditional`, with integer indices at the interface).
//!
//! The caller subtracts means outside the coder (`symbol = round(y − μ)`) and passes a scale index
//! per symbol; the coder never sees a float. The tables are computed once from the scale table with
//! the pure-Rust `libm` (same bits on every platform) and quantized by the integer rule of
//! [`quantize_masses`](crate::entropy::table::quantize_masses).

use crate::entropy::ans::{AnsReader, AnsWriter, cost_bits};
use crate::entropy::table::{CdfTable, masses_from_f64};
use crate::error::{BitstreamError, Result};

/// Smallest scale of the default table (CompressAI `SCALES_MIN`).
pub const SCALES_MIN: f64 = 0.11;
/// Largest scale of the default table (CompressAI `SCALES_MAX`).
pub const SCALES_MAX: f64 = 256.0;
/// Entries of the default table (CompressAI `SCALES_LEVELS`).
pub const SCALES_LEVELS: usize = 64;
/// Tables cover `±ceil(TAIL_BOUND · σ)`: the mass beyond is about 1e-9 and goes to the escape symbol.
pub const TAIL_BOUND: f64 = 6.11;

/// The standard normal CDF, Φ(x) = erfc(−x/√2)/2, with the platform-independent `libm`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Mass of the standard-deviation-`s` zero-mean Gaussian on `[i − ½, i + ½]`, accurate in the tails.
pub fn gaussian_bin(i: i64, s: f64) -> f64 {
    let a = (i.unsigned_abs() as f64 - 0.5) / s;
    let b = (i.unsigned_abs() as f64 + 0.5) / s;
    if i == 0 {
        libm::erf(b / std::f64::consts::SQRT_2)
    } else {
        // Upper-tail difference: no cancellation near 1.
        0.5 * (libm::erfc(a / std::f64::consts::SQRT_2) - libm::erfc(b / std::f64::consts::SQRT_2))
    }
}

/// Laplace tables cover `±ceil(LAPLACE_TAIL_BOUND · σ)`: the mass beyond is about 1e-9.
pub const LAPLACE_TAIL_BOUND: f64 = 14.7;

/// Mass of the zero-mean Laplace distribution of standard deviation `s` (scale `b = s/√2`) on
/// `[i − ½, i + ½]`.
pub fn laplace_bin(i: i64, s: f64) -> f64 {
    let b = s / std::f64::consts::SQRT_2;
    let a = i.unsigned_abs() as f64;
    if i == 0 {
        -libm::expm1(-0.5 / b)
    } else {
        0.5 * (libm::exp(-(a - 0.5) / b) - libm::exp(-(a + 0.5) / b))
    }
}

/// The shape of the per-scale tables: the scale is always the standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleFamily {
    /// Discretized Gaussian (CompressAI's `GaussianConditional`).
    #[default]
    Gaussian,
    /// Discretized Laplace: heavier tails and a sharper peak, often closer to real latents.
    Laplace,
}

/// `levels` log-spaced scales from `min` to `max` (`exp(linspace(ln min, ln max, levels))`), in libm.
///
/// # Errors
/// [`BitstreamError::InvalidParameter`] unless `0 < min < max` and `2 <= levels <= 65536`.
pub fn log_scale_table(min: f64, max: f64, levels: usize) -> Result<Vec<f64>> {
    if !(min > 0.0 && max > min && max.is_finite() && (2..=65536).contains(&levels)) {
        return Err(BitstreamError::InvalidParameter(format!(
            "scale table needs 0 < min < max and 2..=65536 levels (got {min}, {max}, {levels})"
        )));
    }
    let (lo, hi) = (libm::log(min), libm::log(max));
    Ok((0..levels)
        .map(|i| libm::exp(lo + (hi - lo) * i as f64 / (levels - 1) as f64))
        .collect())
}

/// Tables of the Gaussian conditional, one per scale (or of the Laplace conditional, see
/// [`GaussianConditional::with_family`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianConditional {
    scales: Vec<f64>,
    tables: Vec<CdfTable>,
    family: ScaleFamily,
}

impl Default for GaussianConditional {
    /// CompressAI's default: 64 scales log-spaced from 0.11 to 256.
    fn default() -> Self {
        #[allow(clippy::expect_used)] // constant arguments, covered by tests
        Self::new(log_scale_table(SCALES_MIN, SCALES_MAX, SCALES_LEVELS).expect("valid constants"))
            .expect("valid constants")
    }
}

impl GaussianConditional {
    /// Builds one table (with escape) per scale.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for an empty table, more than 65536 scales, or a scale
    /// that is not in `(0, 65536]`.
    pub fn new(scales: Vec<f64>) -> Result<Self> {
        Self::with_family(scales, ScaleFamily::Gaussian)
    }

    /// The default scale table (64 scales log-spaced from 0.11 to 256) with tables of `family`.
    pub fn default_with(family: ScaleFamily) -> Self {
        #[allow(clippy::expect_used)] // constant arguments, covered by tests
        Self::with_family(
            log_scale_table(SCALES_MIN, SCALES_MAX, SCALES_LEVELS).expect("valid constants"),
            family,
        )
        .expect("valid constants")
    }

    /// Builds one table (with escape) per scale, of the distribution `family` with that standard
    /// deviation: Gaussian tables as in [`Self::new`]; Laplace tables over `±R`,
    /// `R = max(1, ceil(14.7 s))`, masses [`laplace_bin`], escape `max(exp(−(R + ½)·√2/s), 1e-15)`.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_family(scales: Vec<f64>, family: ScaleFamily) -> Result<Self> {
        if scales.is_empty() || scales.len() > 65536 {
            return Err(BitstreamError::InvalidParameter(
                "scale table needs 1..=65536 entries".into(),
            ));
        }
        let tables = scales
            .iter()
            .map(|&s| {
                if !(s > 0.0 && s <= 65536.0) {
                    return Err(BitstreamError::InvalidParameter(format!(
                        "scale {s} outside (0, 65536]"
                    )));
                }
                let (r, mut pmf) = match family {
                    ScaleFamily::Gaussian => {
                        let r = (TAIL_BOUND * s).ceil().max(1.0) as i64;
                        let mut pmf: Vec<f64> = (-r..=r).map(|i| gaussian_bin(i, s)).collect();
                        pmf.push(libm::erfc((r as f64 + 0.5) / s / std::f64::consts::SQRT_2));
                        (r, pmf)
                    }
                    ScaleFamily::Laplace => {
                        let r = (LAPLACE_TAIL_BOUND * s).ceil().max(1.0) as i64;
                        let mut pmf: Vec<f64> = (-r..=r).map(|i| laplace_bin(i, s)).collect();
                        pmf.push(libm::exp(-(r as f64 + 0.5) * std::f64::consts::SQRT_2 / s));
                        (r, pmf)
                    }
                };
                if let Some(escape) = pmf.last_mut() {
                    *escape = escape.max(1e-15);
                }
                CdfTable::from_masses(-r as i32, &masses_from_f64(&pmf), true)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            scales,
            tables,
            family,
        })
    }

    /// The shape of the tables.
    pub fn family(&self) -> ScaleFamily {
        self.family
    }

    /// The scale table.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// The table of scale index `i`.
    pub fn table(&self, i: u16) -> Option<&CdfTable> {
        self.tables.get(usize::from(i))
    }

    /// Reference scale → index rule (CompressAI's `build_indexes`): the smallest index whose scale is
    /// `>= sigma`, the last index for larger σ. Codecs that need bit-exact indices across backends
    /// must compute σ deterministically before calling this (see `docs/BITSTREAM.md`).
    pub fn scale_index(&self, sigma: f64) -> u16 {
        let last = self.scales.len() - 1;
        self.scales[..last].partition_point(|&s| s < sigma) as u16
    }

    fn tables_for<'a>(
        &'a self,
        indices: &'a [u16],
    ) -> impl DoubleEndedIterator<Item = Result<&'a CdfTable>> + ExactSizeIterator + 'a {
        indices.iter().map(move |&i| {
            self.table(i).ok_or_else(|| {
                BitstreamError::InvalidParameter(format!(
                    "scale index {i} outside the table of {}",
                    self.scales.len()
                ))
            })
        })
    }

    /// Codes `symbols[i]` with the table `indices[i]`.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] on a length mismatch or an index outside the table.
    pub fn encode(&self, symbols: &[i32], indices: &[u16]) -> Result<Vec<u8>> {
        if symbols.len() != indices.len() {
            return Err(BitstreamError::InvalidParameter(format!(
                "{} symbols but {} scale indices",
                symbols.len(),
                indices.len()
            )));
        }
        let mut w = AnsWriter::new();
        for (&v, t) in symbols.iter().zip(self.tables_for(indices)).rev() {
            w.put(t?, v)?;
        }
        w.finish()
    }

    /// Decodes one symbol per scale index.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a damaged stream, [`BitstreamError::InvalidParameter`] for an
    /// index outside the table.
    pub fn decode(&self, bytes: &[u8], indices: &[u16]) -> Result<Vec<i32>> {
        let mut r = AnsReader::new(bytes)?;
        let mut out = Vec::new();
        out.try_reserve_exact(indices.len())
            .map_err(|_| BitstreamError::InvalidParameter("cannot allocate the symbols".into()))?;
        for t in self.tables_for(indices) {
            out.push(r.get(t?)?);
        }
        r.finish()?;
        Ok(out)
    }

    /// Decodes `n` symbols whose scale indices depend on the symbols before them: `index(k, done)`
    /// names the table of symbol `k` given `done`, the `k` symbols already decoded (a causal context
    /// model; the encoder passes the same indices to [`Self::encode`]).
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a damaged stream, [`BitstreamError::InvalidParameter`] for an
    /// index outside the table.
    pub fn decode_with(
        &self,
        bytes: &[u8],
        n: usize,
        mut index: impl FnMut(usize, &[i32]) -> u16,
    ) -> Result<Vec<i32>> {
        let mut r = AnsReader::new(bytes)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| BitstreamError::InvalidParameter("cannot allocate the symbols".into()))?;
        for k in 0..n {
            let i = index(k, &out);
            let t = self.table(i).ok_or_else(|| {
                BitstreamError::InvalidParameter(format!(
                    "scale index {i} outside the table of {}",
                    self.scales.len()
                ))
            })?;
            out.push(r.get(t)?);
        }
        r.finish()?;
        Ok(out)
    }

    /// Ideal code length (−Σ log2 p under the quantized tables).
    pub fn cost_bits(&self, symbols: &[i32], indices: &[u16]) -> Option<f64> {
        symbols
            .iter()
            .zip(indices)
            .map(|(&v, &i)| cost_bits(self.table(i)?, v))
            .sum()
    }
}
