//! Integer probability tables: the only thing the ANS coder ever sees.
//!
//! Every table is a list of nonzero `u32` frequencies that sum to exactly `2^PRECISION`
//! ([`PRECISION`] = 24). Tables are made from integer masses with [`quantize_masses`], a purely
//! integer rule, so the same masses give the same table on every machine. Tables that come from
//! floating-point densities are converted to integer masses once (`f64` → `u64`, exact) and are built
//! on the encoder and the decoder by the same code from the same numbers.

use constriction::stream::model::ContiguousCategoricalEntropyModel;

use crate::container::Reader;
use crate::error::{BitstreamError, Result};

/// Fixed-point precision of every table: frequencies sum to `2^24`.
pub const PRECISION: usize = 24;
/// `2^PRECISION`.
pub const TOTAL: u32 = 1 << PRECISION;

/// The constriction model type behind every table.
pub(crate) type Model = ContiguousCategoricalEntropyModel<u32, Vec<u32>, PRECISION>;

/// Turns nonnegative integer masses into nonzero frequencies summing to `total`.
///
/// Every symbol first gets frequency 1; the remaining `total - n` units are shared in proportion to
/// the masses (floor), and the units left over by the floors go, one each, to the symbols with the
/// largest remainders (lowest index first on ties). All-zero masses give a uniform table. Pure
/// integer arithmetic (u128), hence identical on every platform.
///
/// # Errors
/// [`BitstreamError::InvalidParameter`] if `masses` is empty or has more entries than `total`.
pub fn quantize_masses(masses: &[u64], total: u32) -> Result<Vec<u32>> {
    let n = masses.len();
    if n == 0 || n as u64 > u64::from(total) {
        return Err(BitstreamError::InvalidParameter(format!(
            "cannot make a table of {n} symbols with total {total}"
        )));
    }
    let sum: u128 = masses.iter().map(|&m| u128::from(m)).sum();
    if sum == 0 {
        return quantize_masses(&vec![1; n], total);
    }
    let spare = u128::from(total) - n as u128;
    let mut freqs = Vec::with_capacity(n);
    let mut rems = Vec::with_capacity(n);
    let mut assigned: u128 = 0;
    for &m in masses {
        let scaled = u128::from(m) * spare;
        let share = scaled / sum;
        assigned += share;
        // `share <= spare < 2^32`, so the cast is exact.
        freqs.push(1 + share as u32);
        rems.push(scaled % sum);
    }
    let left = (spare - assigned) as usize; // < n
    if left > 0 {
        let mut order: Vec<usize> = (0..n).collect();
        // Largest remainder first, lower index first on ties: a total order, so the set of the first
        // `left` entries is unique; a selection (O(n)) finds it without sorting everything.
        let by_rank = |a: &usize, b: &usize| rems[*b].cmp(&rems[*a]).then(a.cmp(b));
        if left < n {
            order.select_nth_unstable_by(left, by_rank);
        }
        for &i in &order[..left] {
            freqs[i] += 1;
        }
    }
    Ok(freqs)
}

/// Converts probabilities (any nonnegative finite scale) to integer masses exactly: `round(p · 2^52)`
/// after normalizing by the largest entry. Non-finite or negative inputs count as zero.
pub fn masses_from_f64(probs: &[f64]) -> Vec<u64> {
    let max = probs
        .iter()
        .copied()
        .filter(|p| p.is_finite() && *p > 0.0)
        .fold(0.0f64, f64::max);
    if max <= 0.0 {
        return vec![0; probs.len()];
    }
    probs
        .iter()
        .map(|&p| {
            if p.is_finite() && p > 0.0 {
                // p / max ∈ (0, 1]; scaling by 2^52 keeps it exact in a u64.
                ((p / max) * 4_503_599_627_370_496.0).round() as u64
            } else {
                0
            }
        })
        .collect()
}

/// A quantized distribution over the integers `min..=max`, with an optional escape symbol that
/// codes any value outside that range exactly (never clamped).
#[derive(Debug, Clone)]
pub struct CdfTable {
    min: i32,
    max: i32,
    escape: bool,
    freqs: Vec<u32>,
    pub(crate) model: Model,
}

impl PartialEq for CdfTable {
    fn eq(&self, other: &Self) -> bool {
        self.min == other.min
            && self.max == other.max
            && self.escape == other.escape
            && self.freqs == other.freqs
    }
}

impl CdfTable {
    /// Builds a table from frequencies. With `escape`, the last frequency belongs to the escape
    /// symbol and the others to `min, min+1, …`.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if a frequency is zero, they do not sum to `2^24`, or the
    /// range overflows `i32`.
    pub fn from_frequencies(min: i32, freqs: Vec<u32>, escape: bool) -> Result<Self> {
        let bad = |m: String| BitstreamError::InvalidParameter(m);
        let values = freqs
            .len()
            .checked_sub(usize::from(escape))
            .filter(|&v| v > 0);
        let Some(values) = values else {
            return Err(bad("a table needs at least one value".into()));
        };
        if freqs.len() < 2 {
            return Err(bad(
                "a table needs at least two symbols (add an escape)".into()
            ));
        }
        let max = i64::from(min) + values as i64 - 1;
        let max = i32::try_from(max).map_err(|_| bad("table range overflows i32".into()))?;
        if freqs.contains(&0) {
            return Err(bad("zero frequency in table".into()));
        }
        let sum: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
        if sum != u64::from(TOTAL) {
            return Err(bad(format!(
                "table frequencies sum to {sum}, expected {TOTAL}"
            )));
        }
        let model = Model::from_nonzero_fixed_point_probabilities(&freqs, false)
            .map_err(|()| bad("constriction refused the table".into()))?;
        Ok(Self {
            min,
            max,
            escape,
            freqs,
            model,
        })
    }

    /// Builds a table from integer masses for `min..` (plus an escape mass as the last entry when
    /// `escape`), quantized with [`quantize_masses`].
    ///
    /// # Errors
    /// As [`CdfTable::from_frequencies`].
    pub fn from_masses(min: i32, masses: &[u64], escape: bool) -> Result<Self> {
        Self::from_frequencies(min, quantize_masses(masses, TOTAL)?, escape)
    }

    /// Smallest value coded without escape.
    pub fn min(&self) -> i32 {
        self.min
    }

    /// Largest value coded without escape.
    pub fn max(&self) -> i32 {
        self.max
    }

    /// Whether values outside `min..=max` can be coded.
    pub fn has_escape(&self) -> bool {
        self.escape
    }

    /// The frequencies (escape last), summing to `2^24`.
    pub fn frequencies(&self) -> &[u32] {
        &self.freqs
    }

    /// Probability the table gives to the in-range value `v`, or to the escape symbol for an
    /// out-of-range `v` (`None` if it cannot code `v`).
    pub fn probability(&self, v: i32) -> Option<f64> {
        let f = if (self.min..=self.max).contains(&v) {
            self.freqs[(i64::from(v) - i64::from(self.min)) as usize]
        } else if self.escape {
            *self.freqs.last()?
        } else {
            return None;
        };
        Some(f64::from(f) / f64::from(TOTAL))
    }

    /// Serialized size in bytes of [`CdfTable::write`].
    pub fn serialized_len(&self) -> usize {
        9 + 4 * self.freqs.len()
    }

    /// Appends the table: `min i32 | escape u8 | count u32 | freqs u32 × count` (little-endian).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.min.to_le_bytes());
        out.push(u8::from(self.escape));
        out.extend_from_slice(&(self.freqs.len() as u32).to_le_bytes());
        for f in &self.freqs {
            out.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// Reads a table written by [`CdfTable::write`], refusing more than `max_symbols` entries before
    /// allocating.
    pub(crate) fn read(r: &mut Reader<'_>, max_symbols: usize) -> Result<Self> {
        let min = r.u32("table min")? as i32;
        let escape = match r.u8("table escape flag")? {
            0 => false,
            1 => true,
            other => {
                return Err(BitstreamError::corrupt(
                    format!("table escape flag {other}"),
                    0,
                ));
            }
        };
        let count = r.u32("table size")? as usize;
        if count > max_symbols {
            return Err(BitstreamError::Limit {
                what: "table entries",
                value: count as u64,
                max: max_symbols as u64,
            });
        }
        let raw = r.take(count * 4, "table frequencies")?;
        let freqs = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::from_frequencies(min, freqs, escape).map_err(|e| match e {
            BitstreamError::InvalidParameter(m) => BitstreamError::corrupt(m, 0),
            other => other,
        })
    }
}

/// Serializes a list of tables: `count u32 | table*` (see [`CdfTable::write`]).
pub(crate) fn write_tables(tables: &[CdfTable]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + tables.iter().map(CdfTable::serialized_len).sum::<usize>());
    out.extend_from_slice(&(tables.len() as u32).to_le_bytes());
    for t in tables {
        t.write(&mut out);
    }
    out
}

/// Reads a list written by [`write_tables`]: 1..=`max_count` tables of at most `max_symbols`
/// entries, filling `bytes` exactly. The count is checked against what the bytes can hold (each
/// table takes at least 17 bytes) before anything is allocated.
pub(crate) fn read_tables(
    bytes: &[u8],
    max_symbols: usize,
    max_count: usize,
    what: &str,
) -> Result<Vec<CdfTable>> {
    let mut r = Reader::new(bytes, 0);
    let count = r.u32("table count")? as usize;
    if count == 0 || count > max_count || count > bytes.len() / 17 {
        return Err(BitstreamError::corrupt(
            format!("{what} with {count} tables"),
            0,
        ));
    }
    let tables = (0..count)
        .map(|_| CdfTable::read(&mut r, max_symbols))
        .collect::<Result<Vec<_>>>()?;
    if !r.rest().is_empty() {
        return Err(BitstreamError::corrupt(
            format!("bytes after the {what} tables"),
            0,
        ));
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_sums_and_is_nonzero() {
        let q = quantize_masses(&[0, 5, 1_000_000, 3, 0], TOTAL).unwrap();
        assert_eq!(
            q.iter().map(|&f| u64::from(f)).sum::<u64>(),
            u64::from(TOTAL)
        );
        assert!(q.iter().all(|&f| f > 0));
        assert!(q[2] > q[1] && q[1] >= q[3]);
    }

    #[test]
    fn quantize_uniform_when_all_zero() {
        let q = quantize_masses(&[0; 4], 16).unwrap();
        assert_eq!(q, vec![4, 4, 4, 4]);
    }

    #[test]
    fn quantize_refuses_too_many_symbols() {
        assert!(quantize_masses(&[1; 17], 16).is_err());
        assert!(quantize_masses(&[], 16).is_err());
    }

    #[test]
    fn table_checks_frequencies() {
        assert!(CdfTable::from_frequencies(0, vec![TOTAL - 1, 1], false).is_ok());
        assert!(CdfTable::from_frequencies(0, vec![TOTAL, 0], false).is_err());
        assert!(CdfTable::from_frequencies(0, vec![TOTAL - 2, 1], false).is_err());
        assert!(CdfTable::from_frequencies(i32::MAX, vec![TOTAL - 2, 1, 1], false).is_err());
        assert!(CdfTable::from_frequencies(i32::MAX, vec![TOTAL - 1, 1], true).is_ok());
    }
}
