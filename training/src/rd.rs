//! Rate-distortion results in CompressAI's JSON schema:
//! `{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], "ms-ssim-rgb": [...],
//! "encoding_time": [...], "decoding_time": [...]}}`, one entry per rate point, each a mean over items.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors reading or interpreting a results file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RdError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the schema.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A series the operation needs is missing or malformed.
    #[error("{0}")]
    Series(String),
}

/// One per-item row of `--per-item` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    /// Item file name.
    pub item: String,
    /// The quality argument of the rate point.
    pub quality: String,
    /// Bytes of the encoded file.
    pub bytes: u64,
    /// Bits per pixel counted from the file.
    pub bpp: f64,
    /// PSNR (RGB) in dB.
    #[serde(rename = "psnr-rgb")]
    pub psnr_rgb: f64,
    /// MS-SSIM (RGB), `null` for images too small for it.
    #[serde(rename = "ms-ssim-rgb")]
    pub ms_ssim_rgb: Option<f64>,
    /// Encoding seconds.
    pub encoding_time: f64,
    /// Decoding seconds.
    pub decoding_time: f64,
}

/// A rate-distortion curve file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdCurve {
    /// Name shown in legends.
    pub name: String,
    /// Free text: codec version, settings, dataset.
    #[serde(default)]
    pub description: String,
    /// Series by name (`bpp`, `psnr-rgb`, `ms-ssim-rgb`, `encoding_time`, `decoding_time`, ...).
    pub results: BTreeMap<String, serde_json::Value>,
    /// Per-item rows (ncodec extension; absent in CompressAI files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_item: Vec<ItemRow>,
}

impl RdCurve {
    /// Reads a curve file.
    ///
    /// # Errors
    /// [`RdError`] naming the file.
    pub fn read(path: &Path) -> Result<Self, RdError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RdError::Io {
            path: p.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| RdError::Json { path: p, source })
    }

    /// Reads every curve of a file: a single curve, or a collection `{"codecs": [curve, ...]}` (the
    /// shape of `shared/reference/classical/kodak-classical.json`).
    ///
    /// # Errors
    /// [`RdError`] naming the file.
    pub fn read_all(path: &Path) -> Result<Vec<Self>, RdError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RdError::Io {
            path: p.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| RdError::Json {
                path: p.clone(),
                source,
            })?;
        let items = match value.get("codecs").and_then(serde_json::Value::as_array) {
            Some(list) => list.clone(),
            None => vec![value],
        };
        items
            .into_iter()
            .map(|v| {
                serde_json::from_value(v).map_err(|source| RdError::Json {
                    path: p.clone(),
                    source,
                })
            })
            .collect()
    }

    /// A numeric series, `None` if absent or not a list of numbers.
    pub fn series(&self, key: &str) -> Option<Vec<f64>> {
        self.results
            .get(key)?
            .as_array()?
            .iter()
            .map(serde_json::Value::as_f64)
            .collect()
    }

    /// Sets a numeric series.
    pub fn set_series(&mut self, key: &str, values: &[f64]) {
        self.results
            .insert(key.to_string(), serde_json::json!(values));
    }

    /// (rate in bpp, PSNR-RGB) pairs, the pair BD-rate and plots use.
    ///
    /// # Errors
    /// [`RdError::Series`] if either series is missing or their lengths differ.
    pub fn rate_psnr(&self) -> Result<(Vec<f64>, Vec<f64>), RdError> {
        // Audio curves (the shared anchors' schema) have kbps and SNR instead.
        let rate = self
            .series("bpp")
            .or_else(|| self.series("kbps"))
            .ok_or_else(|| {
                RdError::Series(format!(
                    "{}: no numeric 'bpp' (or 'kbps') series",
                    self.name
                ))
            })?;
        let q = self
            .series("psnr-rgb")
            .or_else(|| self.series("psnr"))
            .or_else(|| self.series("snr"))
            .ok_or_else(|| {
                RdError::Series(format!(
                    "{}: no numeric 'psnr-rgb' (or 'snr') series",
                    self.name
                ))
            })?;
        if rate.len() != q.len() {
            return Err(RdError::Series(format!(
                "{}: bpp and psnr-rgb differ in length",
                self.name
            )));
        }
        Ok((rate, q))
    }
}
