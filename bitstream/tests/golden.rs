//! Golden conformance files: fixed symbols + tables → exact bytes, decoded identically forever.
//! Regenerate only on purpose, with `NCODEC_BLESS=1 cargo test -p ncodec-bitstream --test golden`.
//! Also builds the must-fail corpus `tests/fixtures/bad/` and checks every file of it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;

use ncodec_bitstream::conformance::{self, golden_set};
use ncodec_bitstream::container::{PREAMBLE_LEN, tag};
use ncodec_bitstream::{Container, Limits};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn bless() -> bool {
    std::env::var_os("NCODEC_BLESS").is_some()
}

/// Parse + conformance decode: the whole decoding path of a conformance file.
fn decode(bytes: &[u8]) -> Result<Vec<i32>, ncodec_bitstream::BitstreamError> {
    let c = Container::parse(bytes, &Limits::strict())?;
    conformance::decode(&c, &Limits::strict()).map(|(_, s)| s)
}

#[test]
fn golden_files_are_byte_exact_and_decode() {
    for (name, model, symbols) in golden_set().unwrap() {
        let bytes = conformance::encode(&model, &symbols)
            .unwrap()
            .to_bytes()
            .unwrap();
        let path = fixtures().join(format!("golden/{name}.ncd"));
        if bless() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            stored == bytes,
            "{name}: encoder output differs from the golden file"
        );
        assert_eq!(
            decode(&stored).unwrap(),
            symbols,
            "{name}: decoded symbols differ"
        );
    }
}

#[test]
fn every_prefix_of_every_golden_file_is_an_error() {
    for (name, _, _) in golden_set().unwrap() {
        let bytes = std::fs::read(fixtures().join(format!("golden/{name}.ncd"))).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut]).is_err(),
                "{name}: prefix of {cut} bytes decoded"
            );
        }
    }
}

/// Splits a file into (preamble, [(tag, payload)]) without the END chunk.
fn chunks(bytes: &[u8]) -> (Vec<u8>, Vec<(u16, Vec<u8>)>) {
    let mut out = Vec::new();
    let mut pos = PREAMBLE_LEN;
    while pos < bytes.len() {
        let tag = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]);
        let len = u32::from_le_bytes(bytes[pos + 2..pos + 6].try_into().unwrap()) as usize;
        if tag != tag::END {
            out.push((tag, bytes[pos + 6..pos + 6 + len].to_vec()));
        }
        pos += 10 + len;
    }
    (bytes[..PREAMBLE_LEN].to_vec(), out)
}

/// Reassembles a file with valid chunk and file checksums, so that only the semantic damage counts.
fn assemble(preamble: &[u8], chunks: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = preamble.to_vec();
    let push = |out: &mut Vec<u8>, tag: u16, p: &[u8]| {
        let start = out.len();
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
        let c = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&c.to_le_bytes());
    };
    for (t, p) in chunks {
        push(&mut out, *t, p);
    }
    let file_crc = crc32fast::hash(&out);
    push(&mut out, tag::END, &file_crc.to_le_bytes());
    out
}

type Edit<'a> = &'a dyn Fn(&mut Vec<u8>, &mut Vec<(u16, Vec<u8>)>);

fn bad_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let gauss = std::fs::read(fixtures().join("golden/gaussian.ncd")).unwrap();
    let fact = std::fs::read(fixtures().join("golden/factorized.ncd")).unwrap();
    let (pre, ch) = chunks(&gauss);
    let with = |f: Edit<'_>| {
        let (mut p, mut c) = (pre.clone(), ch.clone());
        f(&mut p, &mut c);
        assemble(&p, &c)
    };
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("png-signature", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec()),
        ("preamble-only", gauss[..PREAMBLE_LEN].to_vec()),
        ("truncated-half", gauss[..gauss.len() / 2].to_vec()),
        ("truncated-last-byte", gauss[..gauss.len() - 1].to_vec()),
        ("trailing-garbage", [gauss.clone(), vec![0]].concat()),
    ];
    let mut flip = gauss.clone();
    flip[PREAMBLE_LEN + 8] ^= 1;
    v.push(("meta-bit-flip", flip));
    let mut flip = gauss.clone();
    let n = flip.len();
    flip[n - 20] ^= 0x10;
    v.push(("stream-bit-flip", flip));
    v.push(("newer-major-version", with(&|p, _| p[4] = 2)));
    v.push(("major-version-zero", with(&|p, _| p[4] = 0)));
    v.push(("unknown-media-kind", with(&|p, _| p[6] = 9)));
    v.push(("nonzero-flags", with(&|p, _| p[7] = 1)));
    v.push((
        "unknown-codec",
        with(&|p, _| p[8..10].copy_from_slice(&0x7777u16.to_le_bytes())),
    ));
    v.push((
        "zero-width",
        with(&|_, c| c[0].1[0..4].copy_from_slice(&0u32.to_le_bytes())),
    ));
    v.push((
        "billion-pixels",
        with(&|_, c| {
            c[0].1[0..4].copy_from_slice(&100_000u32.to_le_bytes());
            c[0].1[4..8].copy_from_slice(&10_000u32.to_le_bytes());
        }),
    ));
    v.push((
        "huge-scales-table-budget",
        with(&|_, c| {
            for i in 0..64 {
                c[2].1[4 + 8 * i..12 + 8 * i].copy_from_slice(&65536.0f64.to_le_bytes());
            }
        }),
    ));
    v.push((
        "conformance-too-many-symbols",
        with(&|_, c| c[0].1[0..4].copy_from_slice(&(1u32 << 25).to_le_bytes())),
    ));
    v.push((
        "symbol-count-mismatch",
        with(&|_, c| c[0].1[0..4].copy_from_slice(&513u32.to_le_bytes())),
    ));
    v.push((
        "no-meta",
        with(&|_, c| {
            c.remove(0);
        }),
    ));
    v.push((
        "two-meta",
        with(&|_, c| {
            let m = c[0].clone();
            c.insert(1, m);
        }),
    ));
    v.push((
        "no-parm",
        with(&|_, c| {
            c.remove(1);
        }),
    ));
    v.push((
        "nan-quality",
        with(&|_, c| c[1].1[0..4].copy_from_slice(&f32::NAN.to_le_bytes())),
    ));
    v.push((
        "unknown-critical-chunk",
        with(&|_, c| c.push((0x8123, vec![1, 2, 3]))),
    ));
    v.push((
        "missing-ans-stream",
        with(&|_, c| {
            c.pop();
        }),
    ));
    v.push((
        "ans-stream-not-words",
        with(&|_, c| {
            c.last_mut().unwrap().1.push(0);
        }),
    ));
    v.push((
        "ans-stream-damaged-valid-crc",
        with(&|_, c| {
            let s = &mut c.last_mut().unwrap().1;
            let i = s.len() / 2;
            s[i] ^= 0x5a;
        }),
    ));
    v.push((
        "ans-stream-truncated-valid-crc",
        with(&|_, c| {
            let s = &mut c.last_mut().unwrap().1;
            s.truncate(s.len() - 8);
        }),
    ));
    v.push((
        "scale-index-out-of-table",
        with(&|_, c| {
            // First scale index lives after count u32 + 64 f64 scales.
            c[2].1[4 + 64 * 8..4 + 64 * 8 + 2].copy_from_slice(&999u16.to_le_bytes());
        }),
    ));
    v.push((
        "negative-scale",
        with(&|_, c| c[2].1[4..12].copy_from_slice(&(-1.0f64).to_le_bytes())),
    ));
    v.push((
        "million-scales",
        with(&|_, c| c[2].1[0..4].copy_from_slice(&1_000_000u32.to_le_bytes())),
    ));
    let (fpre, mut fch) = chunks(&fact);
    // Factorized table whose frequencies no longer sum to 2^24 (checksums recomputed).
    fch[2].1[4 + 4 + 9] ^= 1;
    v.push(("factorized-table-bad-sum", assemble(&fpre, &fch)));
    v
}

#[test]
fn bad_corpus_fails_cleanly() {
    let dir = fixtures().join("bad");
    if bless() {
        for (name, bytes) in bad_corpus() {
            std::fs::write(dir.join(format!("{name}.ncd")), bytes).unwrap();
        }
    }
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ncd") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                decode(&bytes).is_err(),
                "{} decoded but must fail",
                path.display()
            );
            count += 1;
        }
    }
    assert!(count >= bad_corpus().len(), "bad corpus has {count} files");
}

#[test]
fn fuzz_findings_replay_without_panic() {
    let dir = fixtures().join("fuzz_findings");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            let _ = decode(&bytes);
        }
    }
}

#[test]
fn ten_thousand_mutations_never_panic() {
    let goldens: Vec<Vec<u8>> = golden_set()
        .unwrap()
        .iter()
        .map(|(name, _, _)| std::fs::read(fixtures().join(format!("golden/{name}.ncd"))).unwrap())
        .collect();
    let mut rng = ncodec_bitstream::conformance::SplitMix64(42);
    let mut decoded = 0;
    for i in 0..10_000 {
        let m = ncodec_bitstream::fuzzing::mutate(&goldens[i % goldens.len()], &mut rng);
        if decode(&m).is_ok() {
            decoded += 1;
        }
    }
    // CRCs catch nearly everything; the few that pass must have hit bytes that do not matter.
    assert!(decoded < 100, "{decoded} mutated files decoded");
}

#[test]
fn entropy_harnesses_survive_random_input() {
    let mut rng = ncodec_bitstream::conformance::SplitMix64(7);
    for _ in 0..2000 {
        let len = rng.below(600) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        ncodec_bitstream::fuzzing::decode_gaussian(&data);
        ncodec_bitstream::fuzzing::decode_factorized(&data);
        ncodec_bitstream::fuzzing::decode_mixture(&data);
        ncodec_bitstream::fuzzing::decode_categorical(&data);
        ncodec_bitstream::fuzzing::parse_and_decode(&data);
    }
}
