//! The ANS coder with escape coding: the layer between integer tables and stream bytes.
//!
//! ANS is a stack: [`AnsWriter`] takes symbols in *reverse* decode order, [`AnsReader`] gives them
//! back in forward order. An out-of-range value `v` of a table with escape is coded as the escape
//! symbol followed (in decode order) by `sign` (uniform over 2), the bit length `k` of `n + 1`
//! (uniform over 33) and the `k` low bits of `n + 1` in chunks of at most 16 bits, where `n` is the
//! distance of `v` beyond the table's range. This codes every `i32` exactly.

use constriction::stream::model::DefaultUniformModel;
use constriction::stream::stack::DefaultAnsCoder;
use constriction::stream::{Decode, Encode};

use crate::entropy::table::{CdfTable, Model};
use crate::error::{BitstreamError, Result};

fn coder_err(e: impl std::fmt::Debug) -> BitstreamError {
    BitstreamError::InvalidParameter(format!("ANS encoder refused a symbol: {e:?}"))
}

/// Collects symbols (in reverse decode order) into one ANS stream.
#[derive(Debug, Default)]
pub struct AnsWriter {
    coder: DefaultAnsCoder,
}

impl AnsWriter {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pushes a raw symbol index of a model (reverse order).
    pub(crate) fn put_index(&mut self, model: &Model, index: usize) -> Result<()> {
        self.coder
            .encode_symbol(index, model.as_view())
            .map_err(coder_err)
    }

    fn put_uniform(&mut self, range: usize, value: usize) -> Result<()> {
        self.coder
            .encode_symbol(value, DefaultUniformModel::new(range))
            .map_err(coder_err)
    }

    /// Pushes a value coded with `table` (reverse order).
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if `v` is outside a table without escape.
    pub fn put(&mut self, table: &CdfTable, v: i32) -> Result<()> {
        let (min, max) = (table.min(), table.max());
        if (min..=max).contains(&v) {
            return self.put_index(&table.model, (i64::from(v) - i64::from(min)) as usize);
        }
        if !table.has_escape() {
            return Err(BitstreamError::InvalidParameter(format!(
                "value {v} outside the table range {min}..={max} (no escape)"
            )));
        }
        let (sign, n) = if v < min {
            (0usize, (i64::from(min) - 1 - i64::from(v)) as u64)
        } else {
            (1usize, (i64::from(v) - i64::from(max) - 1) as u64)
        };
        let m = n + 1; // 1 ..= 2^32
        let k = 63 - m.leading_zeros() as usize; // 0 ..= 32
        let low = m - (1u64 << k);
        // Reverse of the decode order: low chunks, k, sign, then the escape symbol itself.
        if k > 16 {
            self.put_uniform(1 << 16, (low & 0xffff) as usize)?;
            self.put_uniform(1 << (k - 16), (low >> 16) as usize)?;
        } else if k > 0 {
            self.put_uniform(1 << k, low as usize)?;
        }
        self.put_uniform(33, k)?;
        self.put_uniform(2, sign)?;
        self.put_index(&table.model, table.frequencies().len() - 1)
    }

    /// Finishes the stream: little-endian u32 words.
    ///
    /// # Errors
    /// Never in practice (the in-memory backend cannot fail).
    pub fn finish(self) -> Result<Vec<u8>> {
        let words = self.coder.into_compressed().map_err(coder_err)?;
        let mut out = Vec::with_capacity(words.len() * 4);
        for w in words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        Ok(out)
    }

    /// Bits the stream holds so far.
    pub fn num_bits(&self) -> usize {
        self.coder.num_bits()
    }
}

/// Reads symbols of one ANS stream in forward order.
#[derive(Debug)]
pub struct AnsReader {
    coder: DefaultAnsCoder,
}

impl AnsReader {
    /// Opens a stream written by [`AnsWriter::finish`].
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] if the length is not a multiple of 4 or the last word is zero.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        if !bytes.len().is_multiple_of(4) {
            return Err(BitstreamError::corrupt(
                format!(
                    "ANS stream of {} bytes is not a whole number of 32-bit words",
                    bytes.len()
                ),
                0,
            ));
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let coder = DefaultAnsCoder::from_compressed(words)
            .map_err(|_| BitstreamError::corrupt("ANS stream ends in a zero word", 0))?;
        Ok(Self { coder })
    }

    pub(crate) fn get_index(&mut self, model: &Model) -> Result<usize> {
        self.coder
            .decode_symbol(model.as_view())
            .map_err(|e| BitstreamError::corrupt(format!("ANS decoding failed: {e:?}"), 0))
    }

    fn get_uniform(&mut self, range: usize) -> Result<usize> {
        self.coder
            .decode_symbol(DefaultUniformModel::new(range))
            .map_err(|e| BitstreamError::corrupt(format!("ANS decoding failed: {e:?}"), 0))
    }

    /// Reads a value coded with `table`.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] if an escaped value does not fit an `i32`.
    pub fn get(&mut self, table: &CdfTable) -> Result<i32> {
        let index = self.get_index(&table.model)?;
        let escape_index = table.frequencies().len() - 1;
        if !table.has_escape() || index != escape_index {
            return Ok((i64::from(table.min()) + index as i64) as i32);
        }
        let sign = self.get_uniform(2)?;
        let k = self.get_uniform(33)?;
        let low = if k > 16 {
            let hi = self.get_uniform(1 << (k - 16))? as u64;
            let lo = self.get_uniform(1 << 16)? as u64;
            (hi << 16) | lo
        } else if k > 0 {
            self.get_uniform(1 << k)? as u64
        } else {
            0
        };
        let n = (1u64 << k) + low - 1;
        let v = if sign == 0 {
            i64::from(table.min()) - 1 - n as i64
        } else {
            i64::from(table.max()) + 1 + n as i64
        };
        i32::try_from(v).map_err(|_| {
            BitstreamError::corrupt(format!("escaped value {v} does not fit in i32"), 0)
        })
    }

    /// Ends decoding; a stream with data left over is corrupt (or was decoded with other parameters).
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] if words remain.
    pub fn finish(self) -> Result<()> {
        if self.coder.is_empty() {
            Ok(())
        } else {
            Err(BitstreamError::corrupt(
                "ANS stream has data left after the last symbol (corrupt, or decoded with other parameters)",
                0,
            ))
        }
    }
}

/// Information content `−log2 p` of `v` under `table`, including the escape payload's uniform bits.
pub fn cost_bits(table: &CdfTable, v: i32) -> Option<f64> {
    let p = table.probability(v)?;
    let mut bits = -p.log2();
    if !(table.min()..=table.max()).contains(&v) {
        let n = if v < table.min() {
            i64::from(table.min()) - 1 - i64::from(v)
        } else {
            i64::from(v) - i64::from(table.max()) - 1
        } as u64;
        let k = 63 - (n + 1).leading_zeros();
        bits += 1.0 + 33f64.log2() + f64::from(k);
    }
    Some(bits)
}
