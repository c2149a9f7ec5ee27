//! WaLLoC through the `ncodec` binary: `ncodec encode song.wav` / `decode` with the shipped audio
//! weights (length, channels, rate and format kept; `--compare` prints SNR), `info`, kbps targets,
//! `--codec walloc-image` for photos, `--weights` with a freshly trained model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
mod common;

use common::{ncodec, text};
use ncodec_bitstream::Limits;
use ncodec_codecs::media::audio::{Audio, PcmFormat, read_wav_file, wav_bytes};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

/// Three seconds of a held-out music clip as 24-bit stereo, and one second of speech (16 kHz
/// mono, 16-bit).
fn clips(dir: &Path) -> (PathBuf, PathBuf) {
    let mut music = read_wav_file(
        &shared("audio/music/lena_orsa_pistachio_ragtime_piano_30s.wav"),
        &Limits::default(),
    )
    .unwrap();
    music.samples.truncate(3 * 44_100 * 2 + 2 * 77);
    let music = Audio {
        format: PcmFormat::Int { bits: 24 },
        ..music
    };
    let mut speech = read_wav_file(
        &shared("audio/speech/librispeech_8123-275193-0000.wav"),
        &Limits::default(),
    )
    .unwrap();
    speech.samples.truncate(16_000 + 33);
    let (m, s) = (dir.join("song.wav"), dir.join("speech.wav"));
    std::fs::write(&m, wav_bytes(&music).unwrap()).unwrap();
    std::fs::write(&s, wav_bytes(&speech).unwrap()).unwrap();
    (m, s)
}

#[test]
fn encode_and_decode_a_song_with_the_shipped_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (song, speech) = clips(dir.path());
    for (input, channels, rate, bits) in [(&song, 2, 44_100, 24), (&speech, 1, 16_000, 16)] {
        let ncd = input.with_extension("ncd");
        let out = dir.path().join("out.wav");
        let o = ncodec(&[
            "encode",
            input.to_str().unwrap(),
            "-o",
            ncd.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("kbps"), "{}", text(&o.stdout));
        let o = ncodec(&["info", ncd.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let info = text(&o.stdout);
        assert!(
            info.contains(&format!("audio {rate} Hz, {channels} channel(s)"))
                && info.contains("walloc-audio"),
            "{info}"
        );
        let o = ncodec(&[
            "decode",
            ncd.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--compare",
            input.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("segmental SNR"),
            "{}",
            text(&o.stdout)
        );
        let a = read_wav_file(input, &Limits::default()).unwrap();
        let b = read_wav_file(&out, &Limits::default()).unwrap();
        assert_eq!(b.samples.len(), a.samples.len());
        assert_eq!((b.channels, b.sample_rate), (a.channels, a.sample_rate));
        assert_eq!(b.format, PcmFormat::Int { bits });
    }
    // A kbps target lands at or below the target.
    let ncd = dir.path().join("t.ncd");
    let o = ncodec(&[
        "encode",
        song.to_str().unwrap(),
        "-q",
        "40kbps",
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let kbps =
        std::fs::metadata(&ncd).unwrap().len() as f64 * 8.0 / (3.0 + 77.0 / 44_100.0) / 1000.0;
    assert!(kbps <= 40.0, "{kbps}");
    // bpp targets are for images; the hyperprior does not code audio.
    let o = ncodec(&[
        "encode",
        song.to_str().unwrap(),
        "-q",
        "0.5bpp",
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = ncodec(&["encode", song.to_str().unwrap(), "--codec", "hyperprior"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("codes image"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn walloc_image_codes_a_photo() {
    let dir = tempfile::tempdir().unwrap();
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/coffee.png");
    let ncd = dir.path().join("c.ncd");
    let out = dir.path().join("c.png");
    let o = ncodec(&[
        "encode",
        png.to_str().unwrap(),
        "--codec",
        "walloc-image",
        "-q",
        "1bpp",
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ncodec(&[
        "decode",
        ncd.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--compare",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("PSNR"), "{}", text(&o.stdout));
    assert_eq!(
        image::open(&out).unwrap().to_rgb8().dimensions(),
        (600, 400)
    );
}

#[test]
fn train_walloc_audio_from_the_command_line_then_use_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (song, _) = clips(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&song, data.join("a.wav")).unwrap();
    let run = dir.path().join("run");
    let o = ncodec(&[
        "train",
        "--codec",
        "walloc-audio",
        "--data",
        data.to_str().unwrap(),
        "--val",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "2",
        "--crop",
        "256",
        "--levels",
        "2",
        "--latent",
        "4",
        "--hidden",
        "8",
        "--blocks",
        "1",
        "--val-every",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let weights = run.join("weights.ncw");
    let ncd = dir.path().join("w.ncd");
    let o = ncodec(&[
        "encode",
        song.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        ncd.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Decoding without those weights names the mismatch instead of producing noise.
    let o = ncodec(&[
        "decode",
        ncd.to_str().unwrap(),
        "-o",
        dir.path().join("x.wav").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = ncodec(&[
        "decode",
        ncd.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "-o",
        dir.path().join("y.wav").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The hyperprior flags are refused for WaLLoC and the reverse.
    let o = ncodec(&[
        "train",
        "--codec",
        "hyperprior",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("r2").to_str().unwrap(),
        "--latent",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(1));
}
