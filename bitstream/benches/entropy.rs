//! Encode and decode throughput (symbols/s) of each entropy model, and container parsing.
//! `cargo bench -p ncodec-bitstream --bench entropy`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ncodec_bitstream::conformance::SplitMix64;
use ncodec_bitstream::entropy::gaussian::log_scale_table;
use ncodec_bitstream::entropy::{
    CategoricalModel, FactorizedModel, GaussianConditional, GaussianMixture, MixtureParams,
};
use std::hint::black_box;

const N: usize = 100_000;

fn gaussian_data(rng: &mut SplitMix64) -> (Vec<i32>, Vec<u16>) {
    let indices: Vec<u16> = (0..N).map(|_| 5 + rng.below(50) as u16).collect();
    let symbols = indices
        .iter()
        .map(|&i| (rng.below(2 * u64::from(i) + 1) as i32 - i as i32) / 4)
        .collect();
    (symbols, indices)
}

fn bench(c: &mut Criterion) {
    let mut rng = SplitMix64(1);
    let mut g = c.benchmark_group("entropy");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);

    let gc = GaussianConditional::default();
    let (sym, idx) = gaussian_data(&mut rng);
    let bytes = gc.encode(&sym, &idx).expect("encode");
    g.bench_function(BenchmarkId::new("gaussian", "encode"), |b| {
        b.iter(|| gc.encode(black_box(&sym), &idx))
    });
    g.bench_function(BenchmarkId::new("gaussian", "decode"), |b| {
        b.iter(|| gc.decode(black_box(&bytes), &idx))
    });

    let channels: Vec<_> = (0..8)
        .map(|c| {
            let s = 0.5 + f64::from(c);
            let r = (s * 10.0).ceil() as i32;
            let pmf = (-r..=r)
                .map(|i| (-(f64::from(i) / s).powi(2) / 2.0).exp())
                .collect();
            (-r, pmf, 1e-9)
        })
        .collect();
    let fm = FactorizedModel::from_probabilities(&channels).expect("tables");
    let plane = N / 8;
    let fsym: Vec<i32> = (0..N).map(|_| rng.below(5) as i32 - 2).collect();
    let fbytes = fm.encode(&fsym, plane).expect("encode");
    g.bench_function(BenchmarkId::new("factorized", "encode"), |b| {
        b.iter(|| fm.encode(black_box(&fsym), plane))
    });
    g.bench_function(BenchmarkId::new("factorized", "decode"), |b| {
        b.iter(|| fm.decode(black_box(&fbytes), plane))
    });

    let k = 3;
    let gm =
        GaussianMixture::new(k, log_scale_table(0.11, 64.0, 32).expect("scales")).expect("mixture");
    let w: Vec<u16> = (0..N * k).map(|_| 1 + rng.below(1000) as u16).collect();
    let mu: Vec<i32> = (0..N * k).map(|_| rng.below(200) as i32 - 100).collect();
    let sc: Vec<u16> = (0..N * k).map(|_| rng.below(24) as u16).collect();
    let msym: Vec<i32> = (0..N)
        .map(|i| (mu[i * k] >> 4) + rng.below(5) as i32 - 2)
        .collect();
    let p = MixtureParams {
        weights: &w,
        means: &mu,
        scales: &sc,
    };
    let mbytes = gm.encode(&msym, &p).expect("encode");
    g.bench_function(BenchmarkId::new("mixture3", "encode"), |b| {
        b.iter(|| gm.encode(black_box(&msym), &p))
    });
    g.bench_function(BenchmarkId::new("mixture3", "decode"), |b| {
        b.iter(|| gm.decode(black_box(&mbytes), &p))
    });

    let counts: Vec<Vec<u64>> = vec![(0..1024u64).map(|i| 1 + (i * 7919) % 1000).collect()];
    let cm = CategoricalModel::from_counts(&counts).expect("tables");
    let csym: Vec<u32> = (0..N).map(|_| rng.below(1024) as u32).collect();
    let cbytes = cm.encode(&csym, None).expect("encode");
    g.bench_function(BenchmarkId::new("categorical1024", "encode"), |b| {
        b.iter(|| cm.encode(black_box(&csym), None))
    });
    g.bench_function(BenchmarkId::new("categorical1024", "decode"), |b| {
        b.iter(|| cm.decode(black_box(&cbytes), N, None))
    });
    g.finish();
}

fn container(c: &mut Criterion) {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/golden/mixture.ncd");
    let bytes = std::fs::read(golden).expect("golden file");
    let mut g = c.benchmark_group("container");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            ncodec_bitstream::Container::parse(
                black_box(&bytes),
                &ncodec_bitstream::Limits::default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench, container);
criterion_main!(benches);
