//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and the regression tests that replay
//! their findings on stable Rust. Each takes arbitrary bytes and must return without panicking.

use crate::conformance;
use crate::entropy::{
    CategoricalModel, FactorizedModel, GaussianConditional, GaussianMixture, MixtureParams,
};
use crate::{Container, Limits};
use std::sync::OnceLock;

/// Parses a container with strict limits and decodes it if it is a conformance file.
pub fn parse_and_decode(data: &[u8]) {
    let limits = Limits::strict();
    if let Ok(c) = Container::parse(data, &limits) {
        let _ = conformance::decode(&c, &limits);
    }
}

/// Splits `data` into a small parameter header and the stream bytes.
fn split(data: &[u8]) -> (u64, &[u8]) {
    let mut seed = [0u8; 8];
    let n = data.len().min(8);
    seed[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(seed), &data[n..])
}

/// Decodes arbitrary bytes as a Gaussian-conditional stream with parameters drawn from the first 8 bytes.
pub fn decode_gaussian(data: &[u8]) {
    let (seed, stream) = split(data);
    let mut rng = conformance::SplitMix64(seed);
    let n = rng.below(512) as usize;
    let indices: Vec<u16> = (0..n).map(|_| rng.below(66) as u16).collect(); // includes invalid ones
    static MODEL: OnceLock<GaussianConditional> = OnceLock::new();
    let _ = MODEL
        .get_or_init(GaussianConditional::default)
        .decode(stream, &indices);
}

/// Decodes arbitrary bytes as a factorized stream.
pub fn decode_factorized(data: &[u8]) {
    let (seed, stream) = split(data);
    let mut rng = conformance::SplitMix64(seed);
    let channels: Vec<(i32, Vec<f64>, f64)> = (0..1 + rng.below(4))
        .map(|_| {
            let r = 1 + rng.below(40) as i32;
            let pmf = (0..2 * r + 1).map(|_| rng.unit()).collect();
            (-r, pmf, rng.unit() * 1e-3)
        })
        .collect();
    if let Ok(model) = FactorizedModel::from_probabilities(&channels) {
        let _ = model.decode(stream, rng.below(200) as usize);
    }
}

/// Decodes arbitrary bytes as a mixture stream with extreme parameters.
pub fn decode_mixture(data: &[u8]) {
    let (seed, stream) = split(data);
    let mut rng = conformance::SplitMix64(seed);
    let k = 1 + rng.below(4) as usize;
    let n = rng.below(64) as usize;
    let w: Vec<u16> = (0..n * k).map(|_| rng.next_u64() as u16).collect();
    let mu: Vec<i32> = (0..n * k)
        .map(|_| rng.next_u64() as i32 >> rng.below(32))
        .collect();
    let sc: Vec<u16> = (0..n * k).map(|_| rng.below(9) as u16).collect();
    static MODELS: OnceLock<Vec<GaussianMixture>> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        let scales = vec![0.11, 0.5, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0];
        (1..=4)
            .filter_map(|k| GaussianMixture::new(k, scales.clone()).ok())
            .collect()
    });
    if let Some(gm) = models.get(k - 1) {
        let _ = gm.decode(
            stream,
            &MixtureParams {
                weights: &w,
                means: &mu,
                scales: &sc,
            },
        );
    }
}

/// Decodes arbitrary bytes as categorical tables followed by a stream.
pub fn decode_categorical(data: &[u8]) {
    let (seed, rest) = split(data);
    let cut = (seed % 4096) as usize;
    let (tables, stream) = rest.split_at(cut.min(rest.len()));
    if let Ok(model) = CategoricalModel::from_bytes(tables, 1 << 16) {
        let _ = model.decode(stream, (seed >> 16) as usize % 1000, None);
    }
}

/// One random damage of a file, as the mutation sweeps apply it: 1-4 bit flips, a truncation, 1-4
/// overwritten bytes in the header region (first 40 bytes), or random bytes from some offset to the end.
pub fn mutate(bytes: &[u8], rng: &mut conformance::SplitMix64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return b;
    }
    match rng.below(4) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len() as u64) as usize),
        2 => {
            let i = rng.below(40.min(b.len() as u64)) as usize;
            for x in b.iter_mut().skip(i).take(1 + rng.below(4) as usize) {
                *x = rng.next_u64() as u8;
            }
        }
        _ => {
            let start = rng.below(b.len() as u64) as usize;
            for x in &mut b[start..] {
                *x = rng.next_u64() as u8;
            }
        }
    }
    b
}
