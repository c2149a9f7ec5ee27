//! Factorized prior: one fixed table per channel (the entropy bottleneck of Ballé et al. 2018).

use crate::entropy::ans::{AnsReader, AnsWriter, cost_bits};
use crate::entropy::table::{CdfTable, masses_from_f64, read_tables, write_tables};
use crate::error::{BitstreamError, Result};

/// One [`CdfTable`] (with escape) per channel. Symbols are laid out channel-major: channel `c` owns
/// `symbols[c * plane .. (c + 1) * plane]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorizedModel {
    tables: Vec<CdfTable>,
}

impl FactorizedModel {
    /// A model from one table per channel.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if there are no tables or a table has no escape.
    pub fn new(tables: Vec<CdfTable>) -> Result<Self> {
        if tables.is_empty() {
            return Err(BitstreamError::InvalidParameter(
                "factorized model with no channels".into(),
            ));
        }
        if tables.iter().any(|t| !t.has_escape()) {
            return Err(BitstreamError::InvalidParameter(
                "factorized tables need an escape symbol".into(),
            ));
        }
        Ok(Self { tables })
    }

    /// A model from per-channel probabilities over `min_c ..` (any nonnegative scale); the escape
    /// symbol gets `tail_c`, the probability mass outside the range (clamped to be nonzero).
    ///
    /// # Errors
    /// As [`CdfTable::from_masses`].
    pub fn from_probabilities(channels: &[(i32, Vec<f64>, f64)]) -> Result<Self> {
        let tables = channels
            .iter()
            .map(|(min, pmf, tail)| {
                let mut p = pmf.clone();
                p.push(tail.max(1e-12));
                CdfTable::from_masses(*min, &masses_from_f64(&p), true)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(tables)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.tables.len()
    }

    /// The table of channel `c`.
    pub fn table(&self, c: usize) -> Option<&CdfTable> {
        self.tables.get(c)
    }

    fn check_len(&self, len: usize, plane: usize) -> Result<()> {
        if plane == 0 || Some(len) != self.tables.len().checked_mul(plane) {
            return Err(BitstreamError::InvalidParameter(format!(
                "{len} symbols do not fill {} channels of {plane}",
                self.tables.len()
            )));
        }
        Ok(())
    }

    /// Codes `symbols` (channel-major, `plane` per channel) into one ANS stream.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if the length is not `channels × plane`.
    pub fn encode(&self, symbols: &[i32], plane: usize) -> Result<Vec<u8>> {
        self.check_len(symbols.len(), plane)?;
        let mut w = AnsWriter::new();
        for (i, &v) in symbols.iter().enumerate().rev() {
            w.put(&self.tables[i / plane], v)?;
        }
        w.finish()
    }

    /// Decodes `channels × plane` symbols.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a damaged stream.
    pub fn decode(&self, bytes: &[u8], plane: usize) -> Result<Vec<i32>> {
        let n = plane.saturating_mul(self.tables.len());
        self.check_len(n, plane)?;
        let mut r = AnsReader::new(bytes)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            BitstreamError::InvalidParameter(format!("cannot allocate {n} symbols"))
        })?;
        for table in &self.tables {
            for _ in 0..plane {
                out.push(r.get(table)?);
            }
        }
        r.finish()?;
        Ok(out)
    }

    /// Ideal code length in bits of `symbols` under the quantized tables (−Σ log2 p).
    pub fn cost_bits(&self, symbols: &[i32], plane: usize) -> Option<f64> {
        symbols
            .iter()
            .enumerate()
            .map(|(i, &v)| cost_bits(self.tables.get(i / plane.max(1))?, v))
            .sum()
    }

    /// Serializes the tables: `count u32 | table*` (see [`CdfTable::write`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        write_tables(&self.tables)
    }

    /// Reads tables written by [`FactorizedModel::to_bytes`], with at most `max_symbols` entries per
    /// table and as many channels as the bytes can hold.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`], [`BitstreamError::Truncated`] or [`BitstreamError::Limit`].
    pub fn from_bytes(bytes: &[u8], max_symbols: usize) -> Result<Self> {
        let tables = read_tables(bytes, max_symbols, usize::MAX, "factorized model")?;
        Self::new(tables).map_err(|e| BitstreamError::corrupt(e.to_string(), 0))
    }
}
