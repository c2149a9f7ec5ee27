use ncodec_bitstream::entropy::gaussian::*;
use ncodec_bitstream::entropy::*;
use std::time::Instant;

#[test]
fn zz_gauss_cost() {
    let t = Instant::now();
    let g = GaussianConditional::new(vec![65536.0; 2]).unwrap();
    let f = g.table(0).unwrap().frequencies().len();
    eprintln!("2 tables of 65536: {:?}, {} entries each", t.elapsed(), f);
}

#[test]
fn zz_mixture_clamp_vs_spec() {
    for s in [16.0f64, 64.0, 256.0, 1024.0] {
        let radius = (TAIL_BOUND * s).ceil().max(1.0) as i64 + 1;
        let half = radius * 16;
        let f = |t: i64| (normal_cdf(t as f64 / (16.0 * s)) * 2147483648.0).round() as u64;
        eprintln!(
            "s={s} C(half)={} C(half+1)={} (code uses {}) C(-half-1)={} (code 0)",
            f(half),
            f(half + 1),
            1u64 << 31,
            f(-half - 1)
        );
    }
}

#[test]
fn zz_gauss_escape_clamp() {
    let scales = log_scale_table(0.11, 256.0, 64).unwrap();
    let mut diff = 0;
    for &s in &scales {
        let r = (TAIL_BOUND * s).ceil().max(1.0) as i64;
        let mut pmf: Vec<f64> = (-r..=r).map(|i| gaussian_bin(i, s)).collect();
        let esc = libm::erfc((r as f64 + 0.5) / s / std::f64::consts::SQRT_2);
        pmf.push(esc);
        let a = CdfTable::from_masses(-r as i32, &table::masses_from_f64(&pmf), true).unwrap();
        *pmf.last_mut().unwrap() = esc.max(1e-15);
        let b = CdfTable::from_masses(-r as i32, &table::masses_from_f64(&pmf), true).unwrap();
        if a != b {
            diff += 1;
            eprintln!("s={s} esc={esc:e} tables differ");
        }
    }
    eprintln!("{diff} of 64 default tables differ without the 1e-15 clamp");
}

#[test]
fn zz_mixture_monotone() {
    let mut rng = ncodec_bitstream::conformance::SplitMix64(1);
    let mut bad = 0;
    for _ in 0..300 {
        let s = 0.11 + rng.unit() * 1023.0;
        let radius = (TAIL_BOUND * s).ceil().max(1.0) as i64 + 1;
        let half = radius * 16;
        let mut prev = 0u32;
        for t in -half..=half {
            let v = (normal_cdf(t as f64 / (16.0 * s)) * 2147483648.0).round() as u32;
            if v < prev {
                bad += 1;
                eprintln!("non-monotone s={s} t={t} {prev}->{v}");
            }
            prev = v;
        }
    }
    eprintln!("bad={bad}");
}

#[test]
fn zz_conf_dos() {
    use ncodec_bitstream::*;
    let nscales: u32 = std::env::var("NSCALES").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let mut desc = Vec::new();
    desc.extend_from_slice(&nscales.to_le_bytes());
    for _ in 0..nscales { desc.extend_from_slice(&65536.0f64.to_le_bytes()); }
    desc.extend_from_slice(&0u16.to_le_bytes());
    let media = MediaInfo::Image { width: 1, height: 1, channels: 1, bit_depth: 16 };
    let mut c = Container::new(CodecId::CONFORMANCE, ModelId::default(), media, CodecParams { quality: 0.0, extra: vec![2] });
    c.streams.push(Stream { kind: StreamKind::Raw, label: 0, data: desc });
    c.streams.push(Stream { kind: StreamKind::Ans32, label: 1, data: vec![1, 0, 0, 0] });
    let bytes = c.to_bytes().unwrap();
    eprintln!("file of {} bytes", bytes.len());
    let t = Instant::now();
    ncodec_bitstream::fuzzing::parse_and_decode(&bytes);
    eprintln!("parse_and_decode with {nscales} scales: {:?}", t.elapsed());
}

#[test]
fn zz_conf_mix_dos() {
    use ncodec_bitstream::*;
    let nscales: u32 = std::env::var("NSCALES").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let n: u32 = std::env::var("NSYM").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut desc = vec![1u8];
    desc.extend_from_slice(&nscales.to_le_bytes());
    for _ in 0..nscales { desc.extend_from_slice(&1024.0f64.to_le_bytes()); }
    for _ in 0..n { desc.extend_from_slice(&1u16.to_le_bytes()); }
    for _ in 0..n { desc.extend_from_slice(&0i32.to_le_bytes()); }
    for _ in 0..n { desc.extend_from_slice(&0u16.to_le_bytes()); }
    let media = MediaInfo::Image { width: n, height: 1, channels: 1, bit_depth: 16 };
    let mut c = Container::new(CodecId::CONFORMANCE, ModelId::default(), media, CodecParams { quality: 0.0, extra: vec![3] });
    c.streams.push(Stream { kind: StreamKind::Raw, label: 0, data: desc });
    c.streams.push(Stream { kind: StreamKind::Ans32, label: 1, data: vec![] });
    let bytes = c.to_bytes().unwrap();
    eprintln!("file of {} bytes", bytes.len());
    let t = Instant::now();
    let l = Limits::strict();
    let p = Container::parse(&bytes, &l).unwrap();
    let r = ncodec_bitstream::conformance::decode(&p, &l);
    eprintln!("mixture {nscales} scales {n} symbols: {:?} ok={}", t.elapsed(), r.is_ok());
}
