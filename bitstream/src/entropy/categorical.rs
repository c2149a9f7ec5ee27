//! Categorical tables for vector-quantizer indices, one table per context.
//!
//! With one table this is the i.i.d. model of VQ indices; with several, the caller passes a context
//! id per symbol (for example the previous index's cluster, or the codebook of a multi-codebook VQ),
//! which is the hook for context-adaptive models. Indices must lie in `0..K`: a VQ index outside the
//! codebook is a caller bug, not something to escape.

use crate::entropy::ans::{AnsReader, AnsWriter, cost_bits};
use crate::entropy::table::{CdfTable, read_tables, write_tables};
use crate::error::{BitstreamError, Result};

/// One table over `0..K` per context (all contexts share `K`).
#[derive(Debug, Clone, PartialEq)]
pub struct CategoricalModel {
    size: usize,
    tables: Vec<CdfTable>,
}

impl CategoricalModel {
    /// A model with one table per entry of `counts` (each a list of `K >= 2` nonnegative counts;
    /// zero counts still get the smallest nonzero frequency, so every index stays codable).
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for no contexts, `K < 2`, `K > 2^20`, or unequal `K`.
    pub fn from_counts(counts: &[Vec<u64>]) -> Result<Self> {
        let size = counts.first().map_or(0, Vec::len);
        if counts.is_empty() || counts.len() > 65536 || !(2..=1 << 20).contains(&size) {
            return Err(BitstreamError::InvalidParameter(
                "categorical model needs 1..=65536 contexts of 2..=2^20 symbols".into(),
            ));
        }
        if counts.iter().any(|c| c.len() != size) {
            return Err(BitstreamError::InvalidParameter(
                "contexts of different sizes".into(),
            ));
        }
        let tables = counts
            .iter()
            .map(|c| CdfTable::from_masses(0, c, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { size, tables })
    }

    /// Codebook size `K`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of contexts.
    pub fn contexts(&self) -> usize {
        self.tables.len()
    }

    fn table(&self, ctx: u16) -> Result<&CdfTable> {
        self.tables.get(usize::from(ctx)).ok_or_else(|| {
            BitstreamError::InvalidParameter(format!(
                "context {ctx} outside the {} tables",
                self.tables.len()
            ))
        })
    }

    fn ctx_of(contexts: Option<&[u16]>, i: usize) -> u16 {
        contexts.map_or(0, |c| c[i])
    }

    /// Codes `indices[i]` with table `contexts[i]` (table 0 for all when `contexts` is `None`).
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for an index `>= K`, a bad context, or a length mismatch.
    pub fn encode(&self, indices: &[u32], contexts: Option<&[u16]>) -> Result<Vec<u8>> {
        if contexts.is_some_and(|c| c.len() != indices.len()) {
            return Err(BitstreamError::InvalidParameter(
                "one context per index is needed".into(),
            ));
        }
        let mut w = AnsWriter::new();
        for (i, &v) in indices.iter().enumerate().rev() {
            if v as usize >= self.size {
                return Err(BitstreamError::InvalidParameter(format!(
                    "index {v} outside the codebook of {}",
                    self.size
                )));
            }
            w.put_index(&self.table(Self::ctx_of(contexts, i))?.model, v as usize)?;
        }
        w.finish()
    }

    /// Decodes `n` indices (contexts as for [`CategoricalModel::encode`]).
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] for a damaged stream.
    pub fn decode(&self, bytes: &[u8], n: usize, contexts: Option<&[u16]>) -> Result<Vec<u32>> {
        if contexts.is_some_and(|c| c.len() != n) {
            return Err(BitstreamError::InvalidParameter(
                "one context per index is needed".into(),
            ));
        }
        let mut r = AnsReader::new(bytes)?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            BitstreamError::InvalidParameter(format!("cannot allocate {n} indices"))
        })?;
        for i in 0..n {
            out.push(r.get_index(&self.table(Self::ctx_of(contexts, i))?.model)? as u32);
        }
        r.finish()?;
        Ok(out)
    }

    /// Ideal code length (−Σ log2 p under the quantized tables).
    pub fn cost_bits(&self, indices: &[u32], contexts: Option<&[u16]>) -> Option<f64> {
        indices
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                cost_bits(
                    self.table(Self::ctx_of(contexts, i)).ok()?,
                    i32::try_from(v).ok()?,
                )
            })
            .sum()
    }

    /// Serializes the tables: `count u32 | table*`.
    pub fn to_bytes(&self) -> Vec<u8> {
        write_tables(&self.tables)
    }

    /// Reads tables written by [`CategoricalModel::to_bytes`].
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`], [`BitstreamError::Truncated`] or [`BitstreamError::Limit`].
    pub fn from_bytes(bytes: &[u8], max_symbols: usize) -> Result<Self> {
        let tables = read_tables(bytes, max_symbols, 65536, "categorical model")?;
        let size = tables[0].frequencies().len();
        if tables
            .iter()
            .any(|t| t.has_escape() || t.min() != 0 || t.frequencies().len() != size)
        {
            return Err(BitstreamError::corrupt(
                "categorical tables must cover 0..K without escape",
                0,
            ));
        }
        Ok(Self { size, tables })
    }
}
