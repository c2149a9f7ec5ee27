//! Conformance files: symbols coded by each entropy model with tables carried in the file, so that
//! any build of ncodec can decode them without model weights.
//!
//! They pin the entropy layer down: `tests/fixtures/golden/*.ncd` are conformance files whose exact
//! bytes and decoded symbols are asserted forever. Layout (codec id [`CodecId::CONFORMANCE`]):
//! media = image `n × 1`, 1 channel, 16 bits (`n` = symbol count); `PARM.extra` = model kind `u8`;
//! stream label 0 (`Raw`) = the model description; stream label 1 (`Ans32`) = the coded symbols.

use crate::container::{CodecId, CodecParams, Container, MediaInfo, Reader, Stream, StreamKind};
use crate::entropy::{
    CategoricalModel, FactorizedModel, GaussianConditional, GaussianMixture, MixtureParams,
};
use crate::error::{BitstreamError, ModelId, Result};
use crate::limits::Limits;

/// Most scales a conformance file may declare.
const MAX_SCALES: usize = 1024;
/// Most table entries (all scales together) a conformance file may make the decoder build, and the
/// most window entries (summed over symbols) a mixture file may make it evaluate: both bound the
/// decoder's work and memory independently of the file's size.
pub const MAX_TABLE_ENTRIES: u64 = 1 << 22;
/// See [`MAX_TABLE_ENTRIES`].
pub const MAX_MIXTURE_WORK: u64 = 1 << 27;

/// Entries of the Gaussian table of scale `s` (values ±ceil(6.11 s) and the escape).
fn gaussian_entries(s: f64) -> u64 {
    2 * (crate::entropy::gaussian::TAIL_BOUND * s).ceil().max(1.0) as u64 + 2
}

/// Entries of the mixture CDF samples of scale `s`.
fn mixture_entries(s: f64) -> u64 {
    2 * 16 * ((crate::entropy::gaussian::TAIL_BOUND * s).ceil().max(1.0) as u64 + 1) + 1
}

/// Refuses scale tables whose tables would exceed [`MAX_TABLE_ENTRIES`], before building any.
fn budget(scales: &[f64], max_scale: f64, entries: fn(f64) -> u64) -> Result<()> {
    let total = scales.iter().fold(0u64, |acc, &s| {
        acc.saturating_add(if s > 0.0 && s <= max_scale {
            entries(s)
        } else {
            u64::MAX
        })
    });
    if total > MAX_TABLE_ENTRIES {
        return Err(BitstreamError::Limit {
            what: "conformance table entries (or a scale out of range)",
            value: total,
            max: MAX_TABLE_ENTRIES,
        });
    }
    Ok(())
}

/// Refuses mixture files whose per-symbol windows would exceed [`MAX_MIXTURE_WORK`] lookups.
fn mixture_work(scales: &[f64], k: usize, weights: &[u16], scale_indices: &[u16]) -> Result<()> {
    let radius = |i: u16| {
        scales.get(usize::from(i)).map_or(0, |&s| {
            (crate::entropy::gaussian::TAIL_BOUND * s).ceil().max(1.0) as u64 + 1
        })
    };
    let mut work = 0u64;
    for (w, sc) in weights.chunks(k.max(1)).zip(scale_indices.chunks(k.max(1))) {
        let all_zero = w.iter().all(|&x| x == 0);
        let span: u64 = w
            .iter()
            .zip(sc)
            .filter(|(x, _)| all_zero || **x > 0)
            .map(|(_, &i)| 2 * radius(i) + 1)
            .sum();
        work = work
            .saturating_add(span.min(crate::entropy::mixture::MAX_WINDOW as u64 + 1) * k as u64);
    }
    if work > MAX_MIXTURE_WORK {
        return Err(BitstreamError::Limit {
            what: "mixture decoding work (window entries × components)",
            value: work,
            max: MAX_MIXTURE_WORK,
        });
    }
    Ok(())
}

/// Most symbols a conformance file may hold (a symbol can cost far less than a bit, so the count
/// cannot be bounded by the stream's size; this caps the decoder's work and memory instead).
pub const MAX_SYMBOLS: u64 = 1 << 24;

/// An entropy model with its per-symbol parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum ConformanceModel {
    /// Factorized tables, `plane` symbols per channel.
    Factorized {
        /// The tables.
        model: FactorizedModel,
        /// Symbols per channel.
        plane: u32,
    },
    /// Gaussian conditional over a scale table with one index per symbol.
    Gaussian {
        /// The scale table.
        scales: Vec<f64>,
        /// One scale index per symbol.
        indices: Vec<u16>,
    },
    /// Gaussian mixture.
    Mixture {
        /// Components per symbol.
        components: u8,
        /// The scale table.
        scales: Vec<f64>,
        /// Weights, `n × K`.
        weights: Vec<u16>,
        /// Means in 1/16 units, `n × K`.
        means: Vec<i32>,
        /// Scale indices, `n × K`.
        scale_indices: Vec<u16>,
    },
    /// Categorical tables with optional per-symbol contexts.
    Categorical {
        /// The tables.
        model: CategoricalModel,
        /// One context per symbol, or none (context 0).
        contexts: Option<Vec<u16>>,
    },
}

impl ConformanceModel {
    fn kind(&self) -> u8 {
        match self {
            Self::Factorized { .. } => 1,
            Self::Gaussian { .. } => 2,
            Self::Mixture { .. } => 3,
            Self::Categorical { .. } => 4,
        }
    }

    /// Name of the model kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Factorized { .. } => "factorized",
            Self::Gaussian { .. } => "gaussian",
            Self::Mixture { .. } => "mixture",
            Self::Categorical { .. } => "categorical",
        }
    }

    fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put_scales = |out: &mut Vec<u8>, scales: &[f64]| {
            out.extend_from_slice(&(scales.len() as u32).to_le_bytes());
            for s in scales {
                out.extend_from_slice(&s.to_le_bytes());
            }
        };
        match self {
            Self::Factorized { model, plane } => {
                out.extend_from_slice(&plane.to_le_bytes());
                out.extend_from_slice(&model.to_bytes());
            }
            Self::Gaussian { scales, indices } => {
                put_scales(&mut out, scales);
                indices
                    .iter()
                    .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
            }
            Self::Mixture {
                components,
                scales,
                weights,
                means,
                scale_indices,
            } => {
                out.push(*components);
                put_scales(&mut out, scales);
                weights
                    .iter()
                    .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
                means
                    .iter()
                    .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
                scale_indices
                    .iter()
                    .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
            }
            Self::Categorical { model, contexts } => {
                out.push(u8::from(contexts.is_some()));
                if let Some(c) = contexts {
                    c.iter()
                        .for_each(|i| out.extend_from_slice(&i.to_le_bytes()));
                }
                out.extend_from_slice(&model.to_bytes());
            }
        }
        out
    }

    fn parse(kind: u8, bytes: &[u8], n: usize) -> Result<Self> {
        let mut r = Reader::new(bytes, 0);
        let scales = |r: &mut Reader<'_>| -> Result<Vec<f64>> {
            let count = r.u32("scale count")? as usize;
            if count == 0 || count > MAX_SCALES {
                return Err(BitstreamError::corrupt(format!("{count} scales"), 0));
            }
            let raw = r.take(count * 8, "scales")?;
            Ok(raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        };
        let u16s = |r: &mut Reader<'_>, count: usize, what| -> Result<Vec<u16>> {
            Ok(r.take(count * 2, what)?
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect())
        };
        let bad = |e: BitstreamError| match e {
            BitstreamError::InvalidParameter(m) => BitstreamError::corrupt(m, 0),
            other => other,
        };
        Ok(match kind {
            1 => {
                let plane = r.u32("plane")?;
                let model = FactorizedModel::from_bytes(r.rest(), 1 << 20)?;
                if (plane as usize).checked_mul(model.channels()) != Some(n) {
                    return Err(BitstreamError::corrupt(
                        "factorized shape does not match the symbol count",
                        0,
                    ));
                }
                Self::Factorized { model, plane }
            }
            2 => {
                let scales = scales(&mut r)?;
                budget(&scales, 65536.0, gaussian_entries)?;
                let indices = u16s(&mut r, n, "scale indices")?;
                Self::Gaussian { scales, indices }
            }
            3 => {
                let components = r.u8("components")?;
                let scales = scales(&mut r)?;
                budget(&scales, crate::entropy::mixture::MAX_SCALE, mixture_entries)?;
                let k = usize::from(components);
                let count = n
                    .checked_mul(k)
                    .ok_or_else(|| BitstreamError::corrupt("mixture size", 0))?;
                let weights = u16s(&mut r, count, "weights")?;
                let means = r
                    .take(count * 4, "means")?
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let scale_indices = u16s(&mut r, count, "mixture scale indices")?;
                mixture_work(&scales, usize::from(components), &weights, &scale_indices)?;
                Self::Mixture {
                    components,
                    scales,
                    weights,
                    means,
                    scale_indices,
                }
            }
            4 => {
                let contexts = match r.u8("context flag")? {
                    0 => None,
                    1 => Some(u16s(&mut r, n, "contexts")?),
                    other => {
                        return Err(BitstreamError::corrupt(format!("context flag {other}"), 0));
                    }
                };
                let model = CategoricalModel::from_bytes(r.rest(), 1 << 20)?;
                Self::Categorical { model, contexts }
            }
            other => {
                return Err(BitstreamError::Unsupported(format!(
                    "conformance model kind {other}"
                )));
            }
        })
        .and_then(|m| {
            if r.rest().is_empty() {
                Ok(m)
            } else {
                Err(BitstreamError::corrupt(
                    "bytes after the model description",
                    0,
                ))
            }
        })
        .map_err(bad)
    }

    /// Codes `symbols` with this model.
    ///
    /// # Errors
    /// Whatever the model's encoder returns.
    pub fn encode(&self, symbols: &[i32]) -> Result<Vec<u8>> {
        match self {
            Self::Factorized { model, plane } => model.encode(symbols, *plane as usize),
            Self::Gaussian { scales, indices } => {
                GaussianConditional::new(scales.clone())?.encode(symbols, indices)
            }
            Self::Mixture {
                components,
                scales,
                weights,
                means,
                scale_indices,
            } => GaussianMixture::new(usize::from(*components), scales.clone())?.encode(
                symbols,
                &MixtureParams {
                    weights,
                    means,
                    scales: scale_indices,
                },
            ),
            Self::Categorical { model, contexts } => {
                let idx = symbols
                    .iter()
                    .map(|&s| {
                        u32::try_from(s)
                            .map_err(|_| BitstreamError::InvalidParameter("negative index".into()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                model.encode(&idx, contexts.as_deref())
            }
        }
    }

    /// Decodes `n` symbols.
    ///
    /// # Errors
    /// Whatever the model's decoder returns.
    pub fn decode(&self, bytes: &[u8], n: usize) -> Result<Vec<i32>> {
        match self {
            Self::Factorized { model, plane } => model.decode(bytes, *plane as usize),
            Self::Gaussian { scales, indices } => {
                GaussianConditional::new(scales.clone())?.decode(bytes, indices)
            }
            Self::Mixture {
                components,
                scales,
                weights,
                means,
                scale_indices,
            } => GaussianMixture::new(usize::from(*components), scales.clone())?.decode(
                bytes,
                &MixtureParams {
                    weights,
                    means,
                    scales: scale_indices,
                },
            ),
            Self::Categorical { model, contexts } => Ok(model
                .decode(bytes, n, contexts.as_deref())?
                .into_iter()
                .map(|v| v as i32)
                .collect()),
        }
    }
}

/// Writes a conformance container for `symbols` coded with `model`.
///
/// # Errors
/// Whatever the model's encoder returns, or an empty symbol list.
pub fn encode(model: &ConformanceModel, symbols: &[i32]) -> Result<Container> {
    let width = u32::try_from(symbols.len())
        .ok()
        .filter(|&w| w > 0 && u64::from(w) <= MAX_SYMBOLS)
        .ok_or_else(|| {
            BitstreamError::InvalidParameter("conformance files hold 1..2^32 symbols".into())
        })?;
    let media = MediaInfo::Image {
        width,
        height: 1,
        channels: 1,
        bit_depth: 16,
    };
    let params = CodecParams {
        quality: 0.0,
        extra: vec![model.kind()],
    };
    let mut c = Container::new(CodecId::CONFORMANCE, ModelId::default(), media, params);
    c.streams.push(Stream {
        kind: StreamKind::Raw,
        label: 0,
        data: model.describe(),
    });
    c.streams.push(Stream {
        kind: StreamKind::Ans32,
        label: 1,
        data: model.encode(symbols)?,
    });
    Ok(c)
}

/// Reads the model of a conformance container and decodes its symbols.
///
/// # Errors
/// [`BitstreamError`] for anything wrong with the file; never panics.
pub fn decode(c: &Container, limits: &Limits) -> Result<(ConformanceModel, Vec<i32>)> {
    if c.codec != CodecId::CONFORMANCE {
        return Err(BitstreamError::InvalidParameter(format!(
            "not a conformance file: codec {}",
            c.codec
        )));
    }
    let MediaInfo::Image {
        width, height: 1, ..
    } = c.media
    else {
        return Err(BitstreamError::corrupt(
            "conformance media must be an n × 1 image",
            0,
        ));
    };
    let n = width as usize;
    Limits::check("symbols", n as u64, limits.max_symbols.min(MAX_SYMBOLS))?;
    let kind = *c
        .params
        .extra
        .first()
        .ok_or_else(|| BitstreamError::corrupt("conformance PARM without model kind", 0))?;
    let desc = c.stream(0)?;
    let data = c.stream(1)?;
    if desc.kind != StreamKind::Raw || data.kind != StreamKind::Ans32 {
        return Err(BitstreamError::corrupt("conformance stream kinds", 0));
    }
    let model = ConformanceModel::parse(kind, &desc.data, n)?;
    let symbols = model.decode(&data.data, n).map_err(|e| match e {
        BitstreamError::InvalidParameter(m) => BitstreamError::corrupt(m, 0),
        other => other,
    })?;
    if symbols.len() != n {
        return Err(BitstreamError::corrupt(
            "symbol count does not match the header",
            0,
        ));
    }
    Ok((model, symbols))
}

/// A small deterministic generator (SplitMix64) for golden data; its output is part of the golden
/// files' definition, so it must never change.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples a value from integer frequencies (escape excluded) with `rng`.
fn sample_table(table: &crate::entropy::CdfTable, rng: &mut SplitMix64) -> i32 {
    let freqs = table.frequencies();
    let values = freqs.len() - usize::from(table.has_escape());
    let total: u64 = freqs[..values].iter().map(|&f| u64::from(f)).sum();
    let mut u = rng.below(total);
    for (i, &f) in freqs[..values].iter().enumerate() {
        if u < u64::from(f) {
            return table.min() + i as i32;
        }
        u -= u64::from(f);
    }
    table.max()
}

/// Discretized logistic probabilities over `-r..=r` with scale `s` and the tail mass beyond.
fn logistic_pmf(r: i32, s: f64) -> (Vec<f64>, f64) {
    let sig = |x: f64| 1.0 / (1.0 + libm::exp(-x / s));
    let pmf = (-r..=r)
        .map(|i| sig(f64::from(i) + 0.5) - sig(f64::from(i) - 0.5))
        .collect();
    (pmf, 2.0 * sig(-(f64::from(r) + 0.5)))
}

/// The golden set: `(name, model, symbols)` for every entropy model, including escaped extremes.
/// Its output is fixed forever by `tests/fixtures/golden/*.ncd`.
///
/// # Errors
/// Never for the built-in constants.
pub fn golden_set() -> Result<Vec<(&'static str, ConformanceModel, Vec<i32>)>> {
    let mut rng = SplitMix64(0x6e63_6f64_6563_0001);
    let mut out = Vec::new();

    // Factorized: 4 channels × 64, logistic tables of different widths, two escapes.
    let channels: Vec<_> = [0.3, 1.0, 4.0, 20.0]
        .iter()
        .map(|&s| {
            let r = (s * 12.0f64).ceil() as i32;
            let (pmf, tail) = logistic_pmf(r, s);
            (-r, pmf, tail)
        })
        .collect();
    let model = FactorizedModel::from_probabilities(&channels)?;
    let plane = 64u32;
    let mut symbols = Vec::new();
    for c in 0..model.channels() {
        for _ in 0..plane {
            if let Some(t) = model.table(c) {
                symbols.push(sample_table(t, &mut rng));
            }
        }
    }
    symbols[5] = 1000;
    symbols[200] = i32::MIN;
    out.push((
        "factorized",
        ConformanceModel::Factorized { model, plane },
        symbols,
    ));

    // Gaussian conditional: CompressAI's 64 scales, random indices, escapes at both extremes.
    let gc = GaussianConditional::default();
    let indices: Vec<u16> = (0..512).map(|_| rng.below(64) as u16).collect();
    let mut symbols: Vec<i32> = indices
        .iter()
        .map(|&i| gc.table(i).map_or(0, |t| sample_table(t, &mut rng)))
        .collect();
    symbols[7] = i32::MAX;
    symbols[300] = -100_000;
    out.push((
        "gaussian",
        ConformanceModel::Gaussian {
            scales: gc.scales().to_vec(),
            indices,
        },
        symbols,
    ));

    // Mixture: 3 components over 16 scales, 256 symbols; symbols drawn from one component each.
    let scales = crate::entropy::gaussian::log_scale_table(0.11, 64.0, 16)?;
    let n = 256;
    let k = 3;
    let mut weights = Vec::new();
    let mut means = Vec::new();
    let mut scale_indices = Vec::new();
    let mut symbols = Vec::new();
    for _ in 0..n {
        for _ in 0..k {
            weights.push(1 + rng.below(1000) as u16);
            means.push(rng.below(2000) as i32 - 1000);
            scale_indices.push(rng.below(16) as u16);
        }
        let j = symbols.len() * k + rng.below(k as u64) as usize;
        let s = scales[usize::from(scale_indices[j])];
        // Box-Muller with the pinned generator; rounded to the symbol grid.
        let (u1, u2) = (rng.unit().max(1e-12), rng.unit());
        let z = libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * std::f64::consts::PI * u2);
        symbols.push(libm::round(f64::from(means[j]) / 16.0 + s * z) as i32);
    }
    symbols[9] = 50_000;
    out.push((
        "mixture",
        ConformanceModel::Mixture {
            components: k as u8,
            scales,
            weights,
            means,
            scale_indices,
        },
        symbols,
    ));

    // Categorical: K = 16, two contexts with different skews.
    let counts = vec![
        (0..16u64)
            .map(|i| 1 + (16 - i) * (16 - i))
            .collect::<Vec<_>>(),
        (0..16u64)
            .map(|i| if i % 4 == 0 { 100 } else { 1 })
            .collect(),
    ];
    let model = CategoricalModel::from_counts(&counts)?;
    let contexts: Vec<u16> = (0..256).map(|_| rng.below(2) as u16).collect();
    let symbols = contexts.iter().map(|_| rng.below(16) as i32).collect();
    out.push((
        "categorical",
        ConformanceModel::Categorical {
            model,
            contexts: Some(contexts),
        },
        symbols,
    ));
    Ok(out)
}
