//! WAV input/output: exact round trips of every supported format, real files, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use ncodec_bitstream::Limits;
use ncodec_codecs::media::audio::{Audio, PcmFormat, read_wav, read_wav_file, wav_bytes};

fn ramp(format: PcmFormat, channels: u16, frames: usize) -> Audio {
    let levels = match format {
        PcmFormat::Int { bits } => f64::from(1u32 << (bits - 1)),
        PcmFormat::Float32 => 1.0 / f64::from(f32::EPSILON),
    };
    let samples = (0..frames * usize::from(channels))
        .map(|i| {
            // Values on the format's own grid, covering both extremes.
            let x = ((i * 7919) % 2001) as f64 / 1000.0 - 1.0;
            ((x * levels).round().clamp(-levels, levels - 1.0) / levels) as f32
        })
        .collect();
    Audio {
        sample_rate: 44_100,
        channels,
        format,
        samples,
    }
}

#[test]
fn every_format_round_trips_exactly() {
    for (format, channels) in [
        (PcmFormat::Int { bits: 8 }, 1),
        (PcmFormat::Int { bits: 16 }, 2),
        (PcmFormat::Int { bits: 24 }, 2),
        (PcmFormat::Int { bits: 32 }, 1),
        (PcmFormat::Float32, 2),
    ] {
        let a = ramp(format, channels, 1000);
        let bytes = wav_bytes(&a).unwrap();
        let b = read_wav(bytes.as_slice(), &Limits::default()).unwrap();
        assert_eq!(b, a, "{format:?}");
        assert_eq!(b.frames(), 1000);
    }
}

#[test]
fn reads_the_shared_speech_and_music() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/audio");
    let pick = |sub: &str| {
        let mut files: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        files.sort();
        files[0].clone()
    };
    let speech = read_wav_file(&pick("speech"), &Limits::default()).unwrap();
    assert_eq!((speech.sample_rate, speech.channels), (16_000, 1));
    let music = read_wav_file(&pick("music"), &Limits::default()).unwrap();
    assert_eq!((music.sample_rate, music.channels), (44_100, 2));
    assert!((music.seconds() - 30.0).abs() < 0.5, "{}", music.seconds());
    // 16-bit PCM survives a write and a read bit for bit.
    let again = read_wav(wav_bytes(&music).unwrap().as_slice(), &Limits::default()).unwrap();
    assert_eq!(again, music);
}

#[test]
fn bad_wavs_are_errors_not_panics() {
    let good = wav_bytes(&ramp(PcmFormat::Int { bits: 16 }, 2, 500)).unwrap();
    for cut in [0, 4, 20, 43, 44, 100, good.len() - 1] {
        assert!(
            read_wav(&good[..cut], &Limits::default()).is_err(),
            "prefix {cut}"
        );
    }
    // A header that claims more samples than the limits allow is refused before reading them.
    let strict = Limits {
        max_samples: 100,
        ..Limits::strict()
    };
    assert!(read_wav(good.as_slice(), &strict).is_err());
    assert!(
        wav_bytes(&Audio {
            sample_rate: 8000,
            channels: 2,
            format: PcmFormat::Int { bits: 12 },
            samples: vec![0.0; 4],
        })
        .is_err()
    );
    assert!(
        wav_bytes(&Audio {
            sample_rate: 8000,
            channels: 2,
            format: PcmFormat::Float32,
            samples: vec![0.0; 3],
        })
        .is_err()
    );
}
