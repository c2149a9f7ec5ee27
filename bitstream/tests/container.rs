//! Container write → parse identity, error paths and robustness on arbitrary bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use ncodec_bitstream::container::{FORMAT_MAJOR, PREAMBLE_LEN, tag};
use ncodec_bitstream::{
    BitstreamError, CodecId, CodecParams, Container, Limits, MediaInfo, ModelId, Stream, StreamKind,
};
use proptest::prelude::*;

fn sample() -> Container {
    let media = MediaInfo::Image {
        width: 768,
        height: 512,
        channels: 3,
        bit_depth: 8,
    };
    let mut c = Container::new(
        CodecId::HYPERPRIOR,
        ModelId([1, 2, 3, 4, 5, 6, 7, 8]),
        media,
        CodecParams {
            quality: 3.5,
            extra: vec![9, 9],
        },
    );
    c.streams.push(Stream {
        kind: StreamKind::Ans32,
        label: 0,
        data: vec![1, 0, 0, 0],
    });
    c.streams.push(Stream {
        kind: StreamKind::Raw,
        label: 1,
        data: vec![0xaa; 33],
    });
    c
}

fn chunk(tag: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = tag.to_le_bytes().to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast_hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the implementation under test.
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Rebuilds a file from its chunks with a fresh END chunk.
fn with_extra_chunk(c: &Container, extra: &[u8]) -> Vec<u8> {
    let bytes = c.to_bytes().unwrap();
    let end_len = 4 + 2 + 4 + 4; // tag + len + crc payload + chunk crc
    let mut body = bytes[..bytes.len() - end_len].to_vec();
    body.extend_from_slice(extra);
    let file_crc = crc32fast_hash(&body);
    body.extend_from_slice(&chunk(tag::END, &file_crc.to_le_bytes()));
    body
}

#[test]
fn round_trip_preserves_everything() {
    let c = sample();
    let bytes = c.to_bytes().unwrap();
    assert_eq!(Container::parse(&bytes, &Limits::default()).unwrap(), c);
}

#[test]
fn unknown_optional_chunk_is_skipped_and_critical_refused() {
    let c = sample();
    let skipped = with_extra_chunk(&c, &chunk(0x0042, b"a note from a newer writer"));
    assert_eq!(Container::parse(&skipped, &Limits::default()).unwrap(), c);
    let critical = with_extra_chunk(&c, &chunk(0x8042, b"must understand"));
    assert!(matches!(
        Container::parse(&critical, &Limits::default()),
        Err(BitstreamError::Unsupported(_))
    ));
}

#[test]
fn newer_major_version_is_refused_clearly() {
    let mut bytes = sample().to_bytes().unwrap();
    bytes[4] = FORMAT_MAJOR + 1;
    let err = Container::parse(&bytes, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, BitstreamError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer"));
}

#[test]
fn model_mismatch_is_refused() {
    let c = sample();
    assert!(c.expect_model(c.model).is_ok());
    let err = c.expect_model(ModelId([0; 8])).unwrap_err();
    assert!(err.to_string().contains("0102030405060708"), "{err}");
}

#[test]
fn absurd_dimensions_are_refused_before_allocating() {
    let absurd = MediaInfo::Image {
        width: 1_000_000,
        height: 1_000,
        channels: 3,
        bit_depth: 8,
    };
    let c = Container::new(
        CodecId::HYPERPRIOR,
        ModelId::default(),
        absurd.clone(),
        CodecParams::default(),
    );
    // The writer refuses what the reader would refuse.
    assert!(c.to_bytes().is_err());
    // A file that claims it anyway (checksums valid) is refused by the reader.
    let mut small = c.clone();
    small.media = MediaInfo::Image {
        width: 1000,
        height: 1000,
        channels: 3,
        bit_depth: 8,
    };
    let mut bytes = small.to_bytes().unwrap();
    bytes[PREAMBLE_LEN + 6..PREAMBLE_LEN + 10].copy_from_slice(&1_000_000u32.to_le_bytes());
    let meta_end = PREAMBLE_LEN + 6 + 10;
    let crc = crc32fast_hash(&bytes[PREAMBLE_LEN..meta_end]);
    bytes[meta_end..meta_end + 4].copy_from_slice(&crc.to_le_bytes());
    let end_at = bytes.len() - 14;
    let file_crc = crc32fast_hash(&bytes[..end_at]);
    bytes.truncate(end_at);
    bytes.extend_from_slice(&chunk(tag::END, &file_crc.to_le_bytes()));
    assert!(matches!(
        Container::parse(&bytes, &Limits::default()),
        Err(BitstreamError::Limit { what: "pixels", .. })
    ));
    // A chunk that claims 4 GiB in a tiny file is a truncation, not an allocation.
    let mut huge = bytes[..PREAMBLE_LEN].to_vec();
    huge.extend_from_slice(&tag::META.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Container::parse(&huge, &Limits::default()),
        Err(BitstreamError::Truncated { .. })
    ));
}

#[test]
fn every_truncation_and_every_bit_flip_is_an_error() {
    let bytes = sample().to_bytes().unwrap();
    for cut in 0..bytes.len() {
        assert!(
            Container::parse(&bytes[..cut], &Limits::default()).is_err(),
            "prefix {cut}"
        );
    }
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            Container::parse(&b, &Limits::default()).is_err(),
            "bit {bit}"
        );
    }
}

fn media_strategy() -> impl Strategy<Value = MediaInfo> {
    prop_oneof![
        (1u32..5000, 1u32..5000, 1u8..=4, 1u8..=16).prop_map(
            |(width, height, channels, bit_depth)| MediaInfo::Image {
                width,
                height,
                channels,
                bit_depth
            }
        ),
        (
            1u32..200_000,
            1u16..9,
            1u8..=32,
            any::<bool>(),
            0u64..10_000_000
        )
            .prop_map(|(sample_rate, channels, bit_depth, float, sample_count)| {
                MediaInfo::Audio {
                    sample_rate,
                    channels,
                    bit_depth,
                    float,
                    sample_count,
                }
            }),
        (
            1u32..4000,
            1u32..4000,
            1u8..=4,
            1u8..=16,
            1u32..1000,
            1u32..120_000,
            1u32..1001
        )
            .prop_map(
                |(width, height, channels, bit_depth, frame_count, fps_num, fps_den)| {
                    MediaInfo::Video {
                        width,
                        height,
                        channels,
                        bit_depth,
                        frame_count,
                        fps_num,
                        fps_den,
                    }
                }
            ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn container_round_trip(
        media in media_strategy(),
        codec in any::<u16>(),
        model in any::<[u8; 8]>(),
        quality in -1e6f32..1e6,
        extra in prop::collection::vec(any::<u8>(), 0..40),
        streams in prop::collection::vec((0u8..4, any::<u8>(), prop::collection::vec(any::<u8>(), 0..100)), 0..6),
    ) {
        let mut c = Container::new(CodecId(codec), ModelId(model), media, CodecParams { quality, extra });
        c.streams = streams.into_iter().map(|(k, label, data)| Stream {
            kind: match k { 0 => StreamKind::Raw, 1 => StreamKind::Ans32, x => StreamKind::Unknown(x) },
            label,
            data,
        }).collect();
        let bytes = c.to_bytes().unwrap();
        prop_assert_eq!(Container::parse(&bytes, &Limits::default()).unwrap(), c);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Container::parse(&bytes, &Limits::strict());
        let mut with_magic = vec![0x8b, b'N', b'C', b'D', 1, 0];
        with_magic.extend_from_slice(&bytes);
        let _ = Container::parse(&with_magic, &Limits::strict());
    }
}

#[test]
fn end_chunk_payload_must_be_exactly_four_bytes() {
    let c = sample();
    let bytes = c.to_bytes().unwrap();
    let body = &bytes[..bytes.len() - 14];
    let mut long_end = body.to_vec();
    let mut payload = crc32fast_hash(body).to_le_bytes().to_vec();
    payload.push(0);
    long_end.extend_from_slice(&chunk(tag::END, &payload));
    assert!(Container::parse(&long_end, &Limits::default()).is_err());
}

/// A device or pipe reports no length up front; reading stops one byte past the limit.
#[cfg(unix)]
#[test]
fn read_file_caps_unsized_inputs() {
    let limits = Limits {
        max_file_bytes: 1 << 16,
        ..Limits::strict()
    };
    let err = Container::read_file(std::path::Path::new("/dev/zero"), &limits).unwrap_err();
    assert!(
        matches!(
            err,
            BitstreamError::Limit {
                what: "file bytes",
                ..
            }
        ),
        "{err}"
    );
}
