//! Round trips of every entropy model (proptest) and compressed size against the ideal
//! information content on 10^5+ symbols drawn from the model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use ncodec_bitstream::conformance::SplitMix64;
use ncodec_bitstream::entropy::ScaleFamily;
use ncodec_bitstream::entropy::gaussian::{gaussian_bin, log_scale_table};
use ncodec_bitstream::entropy::{
    CategoricalModel, FactorizedModel, GaussianConditional, GaussianMixture, MixtureParams,
};
use proptest::prelude::*;

fn logistic(r: i32, s: f64) -> (i32, Vec<f64>, f64) {
    let sig = |x: f64| 1.0 / (1.0 + (-x / s).exp());
    let pmf = (-r..=r)
        .map(|i| sig(f64::from(i) + 0.5) - sig(f64::from(i) - 0.5))
        .collect();
    (-r, pmf, 2.0 * sig(-(f64::from(r) + 0.5)))
}

fn sample_f64(pmf: &[f64], min: i32, rng: &mut SplitMix64) -> i32 {
    let total: f64 = pmf.iter().sum();
    let mut u = rng.unit() * total;
    for (i, &p) in pmf.iter().enumerate() {
        if u < p {
            return min + i as i32;
        }
        u -= p;
    }
    min + pmf.len() as i32 - 1
}

fn gaussian_sample(sigma: f64, rng: &mut SplitMix64) -> i32 {
    let (u1, u2) = (rng.unit().max(1e-300), rng.unit());
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * sigma).round() as i32
}

fn overhead(bytes: usize, ideal_bits: f64) -> f64 {
    (bytes as f64 * 8.0 - ideal_bits) / ideal_bits
}

const N: usize = 120_000;

#[test]
fn factorized_size_within_half_percent_of_ideal() {
    let channels: Vec<_> = [0.2, 0.7, 2.0, 9.0, 40.0]
        .iter()
        .map(|&s| logistic((s * 14.0f64).ceil() as i32, s))
        .collect();
    let model = FactorizedModel::from_probabilities(&channels).unwrap();
    let plane = N / channels.len();
    let mut rng = SplitMix64(1);
    let mut symbols = Vec::new();
    let mut ideal = 0.0;
    for (min, pmf, tail) in &channels {
        let z: f64 = pmf.iter().sum::<f64>() + tail;
        for _ in 0..plane {
            let v = sample_f64(pmf, *min, &mut rng);
            ideal -= (pmf[(v - min) as usize] / z).log2();
            symbols.push(v);
        }
    }
    let bytes = model.encode(&symbols, plane).unwrap();
    assert_eq!(model.decode(&bytes, plane).unwrap(), symbols);
    let o = overhead(bytes.len(), ideal);
    eprintln!(
        "factorized: {} bytes, ideal {:.0} bits, overhead {:+.4} %",
        bytes.len(),
        ideal,
        o * 100.0
    );
    assert!(o.abs() < 0.005, "overhead {o}");
}

#[test]
fn gaussian_size_within_half_percent_of_ideal() {
    let gc = GaussianConditional::default();
    let mut rng = SplitMix64(2);
    // Scales from 0.5 upwards, as the latents of a trained model mostly are.
    let indices: Vec<u16> = (0..N).map(|_| 10 + rng.below(54) as u16).collect();
    let symbols: Vec<i32> = indices
        .iter()
        .map(|&i| gaussian_sample(gc.scales()[usize::from(i)], &mut rng))
        .collect();
    let ideal: f64 = symbols
        .iter()
        .zip(&indices)
        .map(|(&v, &i)| -gaussian_bin(i64::from(v), gc.scales()[usize::from(i)]).log2())
        .sum();
    let bytes = gc.encode(&symbols, &indices).unwrap();
    assert_eq!(gc.decode(&bytes, &indices).unwrap(), symbols);
    let o = overhead(bytes.len(), ideal);
    eprintln!(
        "gaussian: {} bytes, ideal {:.0} bits, overhead {:+.4} %",
        bytes.len(),
        ideal,
        o * 100.0
    );
    assert!(o.abs() < 0.005, "overhead {o}");
}

#[test]
fn mixture_size_within_half_percent_of_ideal() {
    let k = 3;
    let scales = log_scale_table(0.3, 64.0, 32).unwrap();
    let gm = GaussianMixture::new(k, scales.clone()).unwrap();
    let mut rng = SplitMix64(3);
    let n = 100_000;
    let (mut w, mut mu, mut sc, mut symbols) = (vec![], vec![], vec![], vec![]);
    let mut ideal = 0.0;
    for _ in 0..n {
        for _ in 0..k {
            w.push(1 + rng.below(60_000) as u16);
            mu.push(rng.below(1600) as i32 - 800);
            sc.push(rng.below(32) as u16);
        }
        let base = symbols.len() * k;
        let wsum: f64 = (0..k).map(|j| f64::from(w[base + j])).sum();
        let mut u = rng.unit() * wsum;
        let mut j = 0;
        while j + 1 < k && u >= f64::from(w[base + j]) {
            u -= f64::from(w[base + j]);
            j += 1;
        }
        let s = scales[usize::from(sc[base + j])];
        let v =
            (f64::from(mu[base + j]) / 16.0 + gaussian_sample(s, &mut rng) as f64).round() as i32;
        let p: f64 = (0..k)
            .map(|c| {
                let (m, s) = (
                    f64::from(mu[base + c]) / 16.0,
                    scales[usize::from(sc[base + c])],
                );
                let cdf = |x: f64| 0.5 * libm::erfc(-(x - m) / s / std::f64::consts::SQRT_2);
                f64::from(w[base + c]) / wsum * (cdf(f64::from(v) + 0.5) - cdf(f64::from(v) - 0.5))
            })
            .sum();
        ideal -= p.log2();
        symbols.push(v);
    }
    let params = MixtureParams {
        weights: &w,
        means: &mu,
        scales: &sc,
    };
    let bytes = gm.encode(&symbols, &params).unwrap();
    assert_eq!(gm.decode(&bytes, &params).unwrap(), symbols);
    let o = overhead(bytes.len(), ideal);
    eprintln!(
        "mixture: {} bytes, ideal {:.0} bits, overhead {:+.4} %",
        bytes.len(),
        ideal,
        o * 100.0
    );
    assert!(o.abs() < 0.005, "overhead {o}");
}

#[test]
fn categorical_size_within_half_percent_of_ideal() {
    let k = 1024u64;
    let counts = vec![
        (0..k).map(|i| 1 + (i * 7919) % 1000).collect::<Vec<_>>(),
        (0..k).map(|i| 1 + 100_000 / (1 + i)).collect(),
    ];
    let model = CategoricalModel::from_counts(&counts).unwrap();
    let mut rng = SplitMix64(4);
    let mut ideal = 0.0;
    let contexts: Vec<u16> = (0..N).map(|_| rng.below(2) as u16).collect();
    let symbols: Vec<u32> = contexts
        .iter()
        .map(|&c| {
            let p: Vec<f64> = counts[usize::from(c)].iter().map(|&x| x as f64).collect();
            let v = sample_f64(&p, 0, &mut rng) as u32;
            ideal -= (p[v as usize] / p.iter().sum::<f64>()).log2();
            v
        })
        .collect();
    let bytes = model.encode(&symbols, Some(&contexts)).unwrap();
    assert_eq!(model.decode(&bytes, N, Some(&contexts)).unwrap(), symbols);
    let o = overhead(bytes.len(), ideal);
    eprintln!(
        "categorical: {} bytes, ideal {:.0} bits, overhead {:+.4} %",
        bytes.len(),
        ideal,
        o * 100.0
    );
    assert!(o.abs() < 0.005, "overhead {o}");
}

#[test]
fn categorical_refuses_out_of_codebook_index() {
    let model = CategoricalModel::from_counts(&[vec![1, 2, 3]]).unwrap();
    assert!(model.encode(&[0, 3], None).is_err());
}

#[test]
fn wrong_parameters_or_damage_never_panic() {
    let gc = GaussianConditional::default();
    let indices: Vec<u16> = (0..2000).map(|i| (i % 64) as u16).collect();
    let symbols: Vec<i32> = (0..2000).map(|i| (i % 17) - 8).collect();
    let bytes = gc.encode(&symbols, &indices).unwrap();
    // Other indices: either an error or other symbols, never a panic.
    let other: Vec<u16> = indices.iter().map(|&i| 63 - i).collect();
    assert!(
        gc.decode(&bytes, &other)
            .map(|s| s != symbols)
            .unwrap_or(true)
    );
    for cut in [0, 1, 4, bytes.len() / 2, bytes.len() - 4] {
        let _ = gc.decode(&bytes[..cut], &indices);
    }
    let mut flipped = bytes.clone();
    flipped[3] ^= 0x40;
    assert!(
        gc.decode(&flipped, &indices)
            .map(|s| s != symbols)
            .unwrap_or(true)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn gaussian_round_trip(data in prop::collection::vec((any::<i32>(), 0u16..64, prop::bool::weighted(0.9)), 1..300)) {
        let gc = GaussianConditional::default();
        // Mostly plausible values, sometimes any i32 (escaped).
        let symbols: Vec<i32> = data.iter().map(|&(v, _, small)| if small { v % 40 } else { v }).collect();
        let indices: Vec<u16> = data.iter().map(|d| d.1).collect();
        let bytes = gc.encode(&symbols, &indices).unwrap();
        prop_assert_eq!(gc.decode(&bytes, &indices).unwrap(), symbols);
    }

    #[test]
    fn laplace_round_trip(data in prop::collection::vec((any::<i32>(), 0u16..64, prop::bool::weighted(0.9)), 1..300)) {
        let lc = GaussianConditional::default_with(ScaleFamily::Laplace);
        let symbols: Vec<i32> = data.iter().map(|&(v, _, small)| if small { v % 400 } else { v }).collect();
        let indices: Vec<u16> = data.iter().map(|d| d.1).collect();
        let bytes = lc.encode(&symbols, &indices).unwrap();
        prop_assert_eq!(lc.decode(&bytes, &indices).unwrap(), symbols);
    }

    /// Indices that depend on the symbols before them (a causal context) decode back with
    /// `decode_with`, which hands the decoded prefix to the index rule; a rule naming an index
    /// outside the table is an error.
    #[test]
    fn gaussian_context_round_trip(data in prop::collection::vec(-60i32..60, 1..300), base in 0u16..40) {
        let gc = GaussianConditional::default();
        let rule = |k: usize, done: &[i32]| -> u16 {
            let prev = if k == 0 { 0 } else { done[k - 1].unsigned_abs() };
            base + (prev.min(23) as u16)
        };
        let indices: Vec<u16> = (0..data.len()).map(|k| rule(k, &data[..k])).collect();
        let bytes = gc.encode(&data, &indices).unwrap();
        prop_assert_eq!(gc.decode_with(&bytes, data.len(), rule).unwrap(), data.clone());
        prop_assert!(gc.decode_with(&bytes, data.len(), |_, _| 64).is_err());
    }

    #[test]
    fn factorized_round_trip(plane in 1usize..50, seed in any::<u64>(), wild in any::<i32>()) {
        let model = FactorizedModel::from_probabilities(&[logistic(5, 1.0), logistic(30, 6.0), logistic(1, 0.2)]).unwrap();
        let mut rng = SplitMix64(seed);
        let mut symbols: Vec<i32> = (0..3 * plane).map(|_| rng.below(80) as i32 - 40).collect();
        symbols[0] = wild;
        let bytes = model.encode(&symbols, plane).unwrap();
        prop_assert_eq!(model.decode(&bytes, plane).unwrap(), symbols);
    }

    #[test]
    fn mixture_round_trip(n in 1usize..100, k in 1usize..5, seed in any::<u64>()) {
        let gm = GaussianMixture::new(k, log_scale_table(0.11, 256.0, 20).unwrap()).unwrap();
        let mut rng = SplitMix64(seed);
        let w: Vec<u16> = (0..n * k).map(|_| rng.below(3) as u16 * 1000).collect();
        let mu: Vec<i32> = (0..n * k).map(|_| rng.below(1 << 20) as i32 - (1 << 19)).collect();
        let sc: Vec<u16> = (0..n * k).map(|_| rng.below(20) as u16).collect();
        let symbols: Vec<i32> = (0..n).map(|i| (mu[i * k] >> 4) + rng.below(200) as i32 - 100).collect();
        let p = MixtureParams { weights: &w, means: &mu, scales: &sc };
        let bytes = gm.encode(&symbols, &p).unwrap();
        prop_assert_eq!(gm.decode(&bytes, &p).unwrap(), symbols);
    }

    #[test]
    fn categorical_round_trip(idx in prop::collection::vec(0u32..300, 0..400), ctx_seed in any::<u64>()) {
        let counts: Vec<Vec<u64>> = (0..3).map(|c| (0..300u64).map(|i| (i * (c + 1)) % 17).collect()).collect();
        let model = CategoricalModel::from_counts(&counts).unwrap();
        let mut rng = SplitMix64(ctx_seed);
        let ctx: Vec<u16> = idx.iter().map(|_| rng.below(3) as u16).collect();
        let bytes = model.encode(&idx, Some(&ctx)).unwrap();
        prop_assert_eq!(model.decode(&bytes, idx.len(), Some(&ctx)).unwrap(), idx);
    }

    #[test]
    fn ans_decoder_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), n in 0usize..100) {
        let gc = GaussianConditional::default();
        let _ = gc.decode(&bytes, &vec![3u16; n]);
        let gm = GaussianMixture::new(2, vec![0.5, 4.0]).unwrap();
        let (w, mu, sc) = (vec![1u16; 2 * n], vec![0i32; 2 * n], vec![1u16; 2 * n]);
        let _ = gm.decode(&bytes, &MixtureParams { weights: &w, means: &mu, scales: &sc });
    }
}

/// Laplace tables: masses sum to one, heavier tails than the Gaussian of the same deviation, and
/// Laplace-distributed symbols cost less under them.
#[test]
fn laplace_tables_fit_laplace_data() {
    use ncodec_bitstream::entropy::gaussian::laplace_bin;
    for s in [0.11f64, 0.7, 3.0, 40.0] {
        let r = (15.0 * s).ceil() as i64 + 2;
        let total: f64 = (-r..=r).map(|i| laplace_bin(i, s)).sum();
        assert!((total - 1.0).abs() < 1e-6, "{s}: {total}");
        assert!(laplace_bin((6.0 * s).ceil() as i64, s) > gaussian_bin((6.0 * s).ceil() as i64, s));
    }
    let (g, l) = (
        GaussianConditional::default(),
        GaussianConditional::default_with(ScaleFamily::Laplace),
    );
    assert_eq!(g.family(), ScaleFamily::Gaussian);
    assert_eq!(l.family(), ScaleFamily::Laplace);
    // Laplace(σ = 4) samples by inversion, all coded with the table of scale ≈ 4.
    let i = g.scale_index(4.0);
    let mut rng = SplitMix64(7);
    let b = 4.0 / std::f64::consts::SQRT_2;
    let symbols: Vec<i32> = (0..20000)
        .map(|_| {
            let u = (rng.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30) - 0.5;
            (-b * u.signum() * (1.0 - 2.0 * u.abs()).ln()).round() as i32
        })
        .collect();
    let indices = vec![i; symbols.len()];
    let (cg, cl) = (
        g.cost_bits(&symbols, &indices).unwrap(),
        l.cost_bits(&symbols, &indices).unwrap(),
    );
    assert!(cl < 0.99 * cg, "Laplace {cl} bits, Gaussian {cg}");
    assert_eq!(
        l.decode(&l.encode(&symbols, &indices).unwrap(), &indices)
            .unwrap(),
        symbols
    );
}
