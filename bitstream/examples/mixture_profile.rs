//! Profiling driver for the mixture coder:
//! `cargo run --release -p ncodec-bitstream --example mixture_profile`.
#![allow(clippy::unwrap_used)] // example

use ncodec_bitstream::conformance::SplitMix64;
use ncodec_bitstream::entropy::gaussian::log_scale_table;
use ncodec_bitstream::entropy::{GaussianMixture, MixtureParams};

fn main() {
    let (n, k) = (100_000, 3);
    let gm = GaussianMixture::new(k, log_scale_table(0.11, 64.0, 32).unwrap()).unwrap();
    let mut rng = SplitMix64(1);
    let w: Vec<u16> = (0..n * k).map(|_| 1 + rng.below(1000) as u16).collect();
    let mu: Vec<i32> = (0..n * k).map(|_| rng.below(200) as i32 - 100).collect();
    let sc: Vec<u16> = (0..n * k).map(|_| rng.below(24) as u16).collect();
    let sym: Vec<i32> = (0..n)
        .map(|i| (mu[i * k] >> 4) + rng.below(5) as i32 - 2)
        .collect();
    let p = MixtureParams {
        weights: &w,
        means: &mu,
        scales: &sc,
    };
    let t = std::time::Instant::now();
    let bytes = gm.encode(&sym, &p).unwrap();
    let enc = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    assert_eq!(gm.decode(&bytes, &p).unwrap(), sym);
    let dec = t.elapsed().as_secs_f64();
    println!(
        "{} bytes; encode {:.3} M sym/s, decode {:.3} M sym/s",
        bytes.len(),
        n as f64 / enc / 1e6,
        n as f64 / dec / 1e6
    );
}
