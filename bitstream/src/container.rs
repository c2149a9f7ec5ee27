//! The `.ncd` container: one file per encoded item, specified byte by byte in `docs/BITSTREAM.md`.
//!
//! ```text
//! preamble  magic "\x8bNCD" | major u8 | minor u8 | media kind u8 | flags u8 | codec id u16 | model id [8]
//! chunks    tag u16 | length u32 | payload | crc32 u32        (repeated; all integers little-endian)
//!           META (media metadata, first) · PARM (codec parameters) · STRM* (streams) · END (file crc32)
//! ```
//!
//! Parsing checks every length against the bytes that remain and every declared size against
//! [`Limits`] before it allocates, verifies each chunk's CRC32 and the whole-file CRC32, refuses a
//! newer major version, and skips unknown chunks whose tag does not have the critical bit.

use std::io::Write;

use crate::error::{BitstreamError, ModelId, Result};
use crate::limits::Limits;

/// The four magic bytes that open every `.ncd` file (the high first byte catches 7-bit transfers).
pub const MAGIC: [u8; 4] = [0x8b, b'N', b'C', b'D'];
/// Major format version written and read by this build; a file with a larger major is refused.
pub const FORMAT_MAJOR: u8 = 1;
/// Minor format version written by this build; newer minors only add skippable chunks or trailing fields.
pub const FORMAT_MINOR: u8 = 0;
/// Size of the fixed preamble in bytes.
pub const PREAMBLE_LEN: usize = 18;
/// Bytes a chunk adds around its payload (tag, length, crc32).
pub const CHUNK_OVERHEAD: usize = 10;

/// Chunk tags. Bit 15 marks a *critical* chunk: a reader that does not know it must refuse the file.
pub mod tag {
    /// Bit set in critical chunk tags.
    pub const CRITICAL: u16 = 0x8000;
    /// Media metadata (exactly one, first chunk).
    pub const META: u16 = 0x8001;
    /// Codec parameters (at most one).
    pub const PARM: u16 = 0x8002;
    /// One coded stream.
    pub const STRM: u16 = 0x8003;
    /// End of file with the whole-file CRC32 (last chunk).
    pub const END: u16 = 0x80ff;
}

/// Stable codec ids. An id is never reused or renumbered; see `docs/BITSTREAM.md`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct CodecId(pub u16);

impl CodecId {
    /// Entropy-layer conformance streams (symbols coded with fixed tables; decodes without weights).
    pub const CONFORMANCE: Self = Self(0x0001);
    /// Mean-scale hyperprior image codec (Ballé 2018 / Minnen 2018).
    pub const HYPERPRIOR: Self = Self(0x0010);
    /// Multivariate Gaussian mixture prior with multi-codebook VQ (McQuic).
    pub const MCQUIC: Self = Self(0x0011);
    /// VQGAN index coding for extreme image rates.
    pub const VQGAN: Self = Self(0x0012);
    /// WaLLoC for RGB images.
    pub const WALLOC_IMAGE: Self = Self(0x0020);
    /// WaLLoC for audio.
    pub const WALLOC_AUDIO: Self = Self(0x0021);
    /// OD-VAE video codec.
    pub const ODVAE: Self = Self(0x0030);

    /// The registered name of a known id, `None` for ids this build does not know.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CONFORMANCE => "conformance",
            Self::HYPERPRIOR => "hyperprior",
            Self::MCQUIC => "mcquic",
            Self::VQGAN => "vqgan",
            Self::WALLOC_IMAGE => "walloc-image",
            Self::WALLOC_AUDIO => "walloc-audio",
            Self::ODVAE => "odvae",
            _ => return None,
        })
    }
}

impl std::fmt::Display for CodecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({:#06x})", self.0),
            None => write!(f, "unknown ({:#06x})", self.0),
        }
    }
}

/// What a file holds, with the metadata needed to size the decoder's output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MediaInfo {
    /// A still image.
    Image {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Colour channels (1 gray, 3 RGB, ...).
        channels: u8,
        /// Bits per sample of the source.
        bit_depth: u8,
    },
    /// Audio.
    Audio {
        /// Samples per second.
        sample_rate: u32,
        /// Interleaved channels.
        channels: u16,
        /// Bits per sample of the source.
        bit_depth: u8,
        /// True if the source samples were IEEE floats.
        float: bool,
        /// Samples per channel.
        sample_count: u64,
    },
    /// Video.
    Video {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Colour channels.
        channels: u8,
        /// Bits per sample.
        bit_depth: u8,
        /// Number of frames.
        frame_count: u32,
        /// Frame rate numerator.
        fps_num: u32,
        /// Frame rate denominator.
        fps_den: u32,
    },
}

impl MediaInfo {
    /// The media kind byte of the preamble.
    pub fn kind_byte(&self) -> u8 {
        match self {
            Self::Image { .. } => 1,
            Self::Audio { .. } => 2,
            Self::Video { .. } => 3,
        }
    }

    /// A lowercase name of the media kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Image { .. } => "image",
            Self::Audio { .. } => "audio",
            Self::Video { .. } => "video",
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Image {
                width,
                height,
                channels,
                bit_depth,
            } => {
                out.extend_from_slice(&width.to_le_bytes());
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&[channels, bit_depth]);
            }
            Self::Audio {
                sample_rate,
                channels,
                bit_depth,
                float,
                sample_count,
            } => {
                out.extend_from_slice(&sample_rate.to_le_bytes());
                out.extend_from_slice(&channels.to_le_bytes());
                out.extend_from_slice(&[bit_depth, u8::from(float)]);
                out.extend_from_slice(&sample_count.to_le_bytes());
            }
            Self::Video {
                width,
                height,
                channels,
                bit_depth,
                frame_count,
                fps_num,
                fps_den,
            } => {
                out.extend_from_slice(&width.to_le_bytes());
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&[channels, bit_depth]);
                out.extend_from_slice(&frame_count.to_le_bytes());
                out.extend_from_slice(&fps_num.to_le_bytes());
                out.extend_from_slice(&fps_den.to_le_bytes());
            }
        }
    }

    fn decode(kind: u8, payload: &[u8], offset: usize, limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(payload, offset);
        let info = match kind {
            1 => Self::Image {
                width: r.u32("image width")?,
                height: r.u32("image height")?,
                channels: r.u8("image channels")?,
                bit_depth: r.u8("image bit depth")?,
            },
            2 => Self::Audio {
                sample_rate: r.u32("sample rate")?,
                channels: r.u16("audio channels")?,
                bit_depth: r.u8("audio bit depth")?,
                float: match r.u8("audio sample format")? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(BitstreamError::corrupt(
                            format!("audio sample format {other}"),
                            offset,
                        ));
                    }
                },
                sample_count: r.u64("sample count")?,
            },
            3 => Self::Video {
                width: r.u32("video width")?,
                height: r.u32("video height")?,
                channels: r.u8("video channels")?,
                bit_depth: r.u8("video bit depth")?,
                frame_count: r.u32("frame count")?,
                fps_num: r.u32("frame rate numerator")?,
                fps_den: r.u32("frame rate denominator")?,
            },
            other => {
                return Err(BitstreamError::corrupt(
                    format!("unknown media kind {other}"),
                    6,
                ));
            }
        };
        // Trailing bytes in META are fields of a newer minor version: ignored.
        info.validate(limits).map_err(|e| match e {
            BitstreamError::InvalidParameter(what) => BitstreamError::corrupt(what, offset),
            other => other,
        })?;
        Ok(info)
    }

    /// Checks that the metadata describes something real and within `limits`.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] for zero or nonsensical fields, [`BitstreamError::Limit`]
    /// for sizes over `limits`.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        let bad = |what: &str| Err(BitstreamError::InvalidParameter(what.to_string()));
        match *self {
            Self::Image {
                width,
                height,
                channels,
                bit_depth,
            } => {
                if width == 0 || height == 0 {
                    return bad("image with zero width or height");
                }
                if !(1..=4).contains(&channels) || !(1..=16).contains(&bit_depth) {
                    return bad("image channels must be 1..=4 and bit depth 1..=16");
                }
                Limits::check(
                    "pixels",
                    u64::from(width) * u64::from(height),
                    limits.max_pixels,
                )
            }
            Self::Audio {
                sample_rate,
                channels,
                bit_depth,
                sample_count,
                ..
            } => {
                if sample_rate == 0 || sample_rate > 1_536_000 {
                    return bad("audio sample rate must be 1..=1536000 Hz");
                }
                if channels == 0 || channels > 256 || !(1..=64).contains(&bit_depth) {
                    return bad("audio channels must be 1..=256 and bit depth 1..=64");
                }
                Limits::check("samples per channel", sample_count, limits.max_samples)?;
                Limits::check(
                    "samples",
                    sample_count.saturating_mul(u64::from(channels)),
                    limits.max_samples.saturating_mul(2),
                )
            }
            Self::Video {
                width,
                height,
                channels,
                bit_depth,
                frame_count,
                fps_num,
                fps_den,
            } => {
                if width == 0 || height == 0 || frame_count == 0 {
                    return bad("video with zero width, height or frames");
                }
                if !(1..=4).contains(&channels) || !(1..=16).contains(&bit_depth) {
                    return bad("video channels must be 1..=4 and bit depth 1..=16");
                }
                if fps_num == 0 || fps_den == 0 {
                    return bad("video frame rate must be positive");
                }
                Limits::check(
                    "pixels per frame",
                    u64::from(width) * u64::from(height),
                    limits.max_pixels,
                )?;
                Limits::check("frames", u64::from(frame_count), limits.max_frames)
            }
        }
    }
}

/// How a stream's bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// Plain bytes (side information, codec-specific).
    Raw,
    /// An ANS stream of little-endian u32 words (constriction's `DefaultAnsCoder`).
    Ans32,
    /// A kind this build does not know (from a newer minor version); the codec decides.
    Unknown(u8),
}

impl StreamKind {
    fn to_byte(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Ans32 => 1,
            Self::Unknown(b) => b,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Raw,
            1 => Self::Ans32,
            other => Self::Unknown(other),
        }
    }
}

/// One typed stream of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// How the bytes are coded.
    pub kind: StreamKind,
    /// The codec's name for this stream (for example 0 = hyper-latent z, 1 = latent y).
    pub label: u8,
    /// The payload.
    pub data: Vec<u8>,
}

/// Codec parameters: the rate knob the file was encoded at and codec-specific bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CodecParams {
    /// The quality / rate knob (the codec defines its scale; finite).
    pub quality: f32,
    /// Codec-specific bytes (latent shapes, tiling, ...), defined by each codec.
    pub extra: Vec<u8>,
}

/// A parsed or to-be-written `.ncd` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    /// The codec that wrote the file.
    pub codec: CodecId,
    /// The weights the file was made with.
    pub model: ModelId,
    /// What the file holds.
    pub media: MediaInfo,
    /// Codec parameters.
    pub params: CodecParams,
    /// The coded streams, in file order.
    pub streams: Vec<Stream>,
    /// The format version the file was written with (`(FORMAT_MAJOR, FORMAT_MINOR)` for new files).
    pub version: (u8, u8),
}

impl Container {
    /// A new container of the current format version with no streams.
    pub fn new(codec: CodecId, model: ModelId, media: MediaInfo, params: CodecParams) -> Self {
        Self {
            codec,
            model,
            media,
            params,
            streams: Vec::new(),
            version: (FORMAT_MAJOR, FORMAT_MINOR),
        }
    }

    /// Refuses a file made with other weights.
    ///
    /// # Errors
    /// [`BitstreamError::ModelMismatch`] naming both ids.
    pub fn expect_model(&self, expected: ModelId) -> Result<()> {
        if self.model == expected {
            Ok(())
        } else {
            Err(BitstreamError::ModelMismatch {
                found: self.model,
                expected,
            })
        }
    }

    /// The stream with this label, if the file has one.
    ///
    /// # Errors
    /// [`BitstreamError::Corrupt`] if there is none.
    pub fn stream(&self, label: u8) -> Result<&Stream> {
        self.streams
            .iter()
            .find(|s| s.label == label)
            .ok_or_else(|| BitstreamError::corrupt(format!("missing stream with label {label}"), 0))
    }

    /// Serializes the file. Always writes the current format version.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if a stream is larger than 4 GiB or the quality is not finite.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if !self.params.quality.is_finite() {
            return Err(BitstreamError::InvalidParameter(
                "quality must be finite".into(),
            ));
        }
        // Never write what `parse` would refuse (under the default limits).
        self.media.validate(&Limits::default())?;
        let payload_total: usize = self
            .streams
            .iter()
            .map(|s| s.data.len() + 2 + CHUNK_OVERHEAD)
            .sum();
        let mut out =
            Vec::with_capacity(PREAMBLE_LEN + 64 + self.params.extra.len() + payload_total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[FORMAT_MAJOR, FORMAT_MINOR, self.media.kind_byte(), 0]);
        out.extend_from_slice(&self.codec.0.to_le_bytes());
        out.extend_from_slice(&self.model.0);
        debug_assert_eq!(out.len(), PREAMBLE_LEN);

        let mut meta = Vec::with_capacity(32);
        self.media.encode(&mut meta);
        write_chunk(&mut out, tag::META, &meta)?;

        let mut parm = Vec::with_capacity(4 + self.params.extra.len());
        parm.extend_from_slice(&self.params.quality.to_le_bytes());
        parm.extend_from_slice(&self.params.extra);
        write_chunk(&mut out, tag::PARM, &parm)?;

        for s in &self.streams {
            let mut p = Vec::with_capacity(2 + s.data.len());
            p.extend_from_slice(&[s.kind.to_byte(), s.label]);
            p.extend_from_slice(&s.data);
            write_chunk(&mut out, tag::STRM, &p)?;
        }
        let file_crc = crc32fast::hash(&out);
        write_chunk(&mut out, tag::END, &file_crc.to_le_bytes())?;
        Ok(out)
    }

    /// Serializes the file into a writer.
    ///
    /// # Errors
    /// As [`Container::to_bytes`], plus I/O errors.
    pub fn write_to(&self, mut w: impl Write) -> Result<()> {
        w.write_all(&self.to_bytes()?)?;
        Ok(())
    }

    /// Parses a whole file held in memory.
    ///
    /// # Errors
    /// Any [`BitstreamError`] that blames the input; never panics on any byte sequence.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self> {
        Limits::check("file bytes", bytes.len() as u64, limits.max_file_bytes)?;
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(BitstreamError::BadMagic {
                found: bytes.iter().take(4).copied().collect(),
                expected: MAGIC,
            });
        }
        let mut r = Reader::new(bytes, 0);
        r.take(MAGIC.len(), "magic")?;
        let major = r.u8("major version")?;
        let minor = r.u8("minor version")?;
        if major > FORMAT_MAJOR {
            return Err(BitstreamError::UnsupportedVersion {
                major,
                minor,
                supported_major: FORMAT_MAJOR,
            });
        }
        if major == 0 {
            return Err(BitstreamError::corrupt("format major version 0", 4));
        }
        let kind = r.u8("media kind")?;
        let flags = r.u8("flags")?;
        if flags != 0 {
            return Err(BitstreamError::Unsupported(format!(
                "preamble flags {flags:#04x} (no flags are defined in 1.x)"
            )));
        }
        let codec = CodecId(r.u16("codec id")?);
        let model = ModelId(r.array::<8>("model id")?);

        let mut media = None;
        let mut params = None;
        let mut streams = Vec::new();
        loop {
            let start = r.pos;
            let tag = r.u16("chunk tag")?;
            let len = r.u32("chunk length")? as usize;
            let needed = len
                .checked_add(4)
                .ok_or_else(|| BitstreamError::corrupt("chunk length overflows", start))?;
            if needed > r.remaining() {
                return Err(BitstreamError::Truncated {
                    what: "chunk",
                    offset: r.pos,
                    needed,
                    available: r.remaining(),
                });
            }
            let payload_at = r.pos;
            let payload = r.take(len, "chunk payload")?;
            let stored = r.u32("chunk crc32")?;
            let computed = crc32fast::hash(&bytes[start..payload_at + len]);
            if stored != computed {
                return Err(BitstreamError::Checksum {
                    what: format!("chunk {tag:#06x} at offset {start}"),
                    stored,
                    computed,
                });
            }
            if media.is_none() && tag != tag::META {
                return Err(BitstreamError::corrupt(
                    format!(
                        "first chunk is {tag:#06x}, expected META ({:#06x})",
                        tag::META
                    ),
                    start,
                ));
            }
            match tag {
                tag::META => {
                    if media.is_some() {
                        return Err(BitstreamError::corrupt("second META chunk", start));
                    }
                    media = Some(MediaInfo::decode(kind, payload, payload_at, limits)?);
                }
                tag::PARM => {
                    if params.is_some() {
                        return Err(BitstreamError::corrupt("second PARM chunk", start));
                    }
                    let mut pr = Reader::new(payload, payload_at);
                    let quality = f32::from_le_bytes(pr.array::<4>("quality")?);
                    if !quality.is_finite() {
                        return Err(BitstreamError::corrupt(
                            "quality is not a finite number",
                            payload_at,
                        ));
                    }
                    params = Some(CodecParams {
                        quality,
                        extra: pr.rest().to_vec(),
                    });
                }
                tag::STRM => {
                    if streams.len() >= limits.max_streams as usize {
                        return Err(BitstreamError::Limit {
                            what: "streams",
                            value: streams.len() as u64 + 1,
                            max: u64::from(limits.max_streams),
                        });
                    }
                    let mut sr = Reader::new(payload, payload_at);
                    let kind = StreamKind::from_byte(sr.u8("stream kind")?);
                    let label = sr.u8("stream label")?;
                    let data = sr.rest();
                    Limits::check("stream bytes", data.len() as u64, limits.max_stream_bytes)?;
                    streams.push(Stream {
                        kind,
                        label,
                        data: data.to_vec(),
                    });
                }
                tag::END => {
                    if payload.len() != 4 {
                        return Err(BitstreamError::corrupt(
                            format!("END payload of {} bytes (must be 4)", payload.len()),
                            payload_at,
                        ));
                    }
                    let mut er = Reader::new(payload, payload_at);
                    let stored = er.u32("file crc32")?;
                    let computed = crc32fast::hash(&bytes[..start]);
                    if stored != computed {
                        return Err(BitstreamError::Checksum {
                            what: "whole file".into(),
                            stored,
                            computed,
                        });
                    }
                    if r.remaining() != 0 {
                        return Err(BitstreamError::corrupt(
                            format!("{} bytes after the END chunk", r.remaining()),
                            r.pos,
                        ));
                    }
                    break;
                }
                t if t & tag::CRITICAL != 0 => {
                    return Err(BitstreamError::Unsupported(format!(
                        "critical chunk {t:#06x} at offset {start} (written by a newer ncodec?)"
                    )));
                }
                _ => {} // unknown optional chunk: skipped
            }
        }
        let media = media.ok_or_else(|| BitstreamError::corrupt("no META chunk", PREAMBLE_LEN))?;
        let params =
            params.ok_or_else(|| BitstreamError::corrupt("no PARM chunk", PREAMBLE_LEN))?;
        Ok(Self {
            codec,
            model,
            media,
            params,
            streams,
            version: (major, minor),
        })
    }

    /// Reads and parses a file, refusing files larger than `limits.max_file_bytes` before reading them.
    ///
    /// # Errors
    /// I/O errors and everything [`Container::parse`] returns.
    pub fn read_file(path: &std::path::Path, limits: &Limits) -> Result<Self> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        Limits::check("file bytes", file.metadata()?.len(), limits.max_file_bytes)?;
        // Read at most one byte past the limit: a pipe or device reports no length up front.
        let mut bytes = Vec::new();
        file.take(limits.max_file_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
        Self::parse(&bytes, limits)
    }
}

fn write_chunk(out: &mut Vec<u8>, tag: u16, payload: &[u8]) -> Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        BitstreamError::InvalidParameter(format!("chunk of {} bytes exceeds 4 GiB", payload.len()))
    })?;
    let start = out.len();
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A bounds-checked little-endian reader; every read reports the absolute file offset on failure.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(BitstreamError::Truncated {
                what,
                offset: self.base + self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        s
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}
