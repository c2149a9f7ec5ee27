//! WAV input and output (hound): 8/16/24/32-bit integer and 32-bit float PCM, any channel count
//! and sample rate. Samples are held as interleaved `f32` in [-1, 1): integer PCM of up to 24 bits
//! converts both ways without loss (`i / 2^(bits−1)` is exact in an `f32`).

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use ncodec_bitstream::{Limits, MediaInfo};

use crate::error::{CodecError, Result};

/// The sample format of a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmFormat {
    /// Signed integers of this many bits (8, 16, 24 or 32; 32-bit keeps 24 bits of precision).
    Int {
        /// Bits per sample.
        bits: u16,
    },
    /// IEEE 32-bit floats.
    Float32,
}

/// Decoded audio: interleaved samples in [-1, 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Samples per second.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// The format the samples came in (and are written back in).
    pub format: PcmFormat,
    /// Interleaved samples, `frames × channels`.
    pub samples: Vec<f32>,
}

impl Audio {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }

    /// The container metadata of this audio.
    pub fn media_info(&self) -> MediaInfo {
        let (bit_depth, float) = match self.format {
            PcmFormat::Int { bits } => (bits as u8, false),
            PcmFormat::Float32 => (32, true),
        };
        MediaInfo::Audio {
            sample_rate: self.sample_rate,
            channels: self.channels,
            bit_depth,
            float,
            sample_count: self.frames() as u64,
        }
    }
}

fn wav_err(e: hound::Error) -> CodecError {
    match e {
        hound::Error::IoError(io) => CodecError::Io(io),
        hound::Error::Unsupported => {
            CodecError::Unsupported("this WAV variant is not supported".into())
        }
        other => CodecError::Unsupported(format!("not a valid WAV file: {other}")),
    }
}

/// Reads a WAV stream, checking its declared size against `limits` before reading the samples.
///
/// # Errors
/// [`CodecError::Unsupported`] for malformed or unsupported WAVs (including a file shorter than its
/// header says), [`CodecError::Bitstream`] with a limit error for oversized ones.
pub fn read_wav(reader: impl Read, limits: &Limits) -> Result<Audio> {
    let mut wav = hound::WavReader::new(reader).map_err(wav_err)?;
    let spec = wav.spec();
    let format = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => PcmFormat::Float32,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => PcmFormat::Int { bits },
        (f, b) => {
            return Err(CodecError::Unsupported(format!(
                "{b}-bit {f:?} WAV samples"
            )));
        }
    };
    let info = MediaInfo::Audio {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bit_depth: spec.bits_per_sample.min(64) as u8,
        float: format == PcmFormat::Float32,
        sample_count: u64::from(wav.duration()),
    };
    info.validate(limits).map_err(|e| match e {
        ncodec_bitstream::BitstreamError::InvalidParameter(m) => CodecError::Unsupported(m),
        other => other.into(),
    })?;
    let n = wav.len() as usize;
    let mut samples = Vec::new();
    samples
        .try_reserve_exact(n)
        .map_err(|_| CodecError::Unsupported(format!("cannot allocate {n} samples")))?;
    match format {
        PcmFormat::Float32 => {
            for s in wav.samples::<f32>() {
                samples.push(s.map_err(wav_err)?);
            }
        }
        PcmFormat::Int { bits } => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            for s in wav.samples::<i32>() {
                samples.push((f64::from(s.map_err(wav_err)?) * scale) as f32);
            }
        }
    }
    if samples.len() != n || !n.is_multiple_of(usize::from(spec.channels)) {
        return Err(CodecError::Unsupported(
            "WAV data ends inside a frame".into(),
        ));
    }
    Ok(Audio {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        format,
        samples,
    })
}

/// Reads a WAV file.
///
/// # Errors
/// As [`read_wav`], plus I/O errors.
pub fn read_wav_file(path: &Path, limits: &Limits) -> Result<Audio> {
    read_wav(std::io::BufReader::new(std::fs::File::open(path)?), limits)
}

/// Writes `audio` as WAV in its own format (integers rounded and clamped to their range).
///
/// # Errors
/// [`CodecError::InvalidParameter`] for a sample count that is not whole frames or does not fit a
/// WAV file; I/O errors.
pub fn write_wav(writer: impl Write + Seek, audio: &Audio) -> Result<()> {
    if audio.channels == 0
        || !audio
            .samples
            .len()
            .is_multiple_of(usize::from(audio.channels))
    {
        return Err(CodecError::InvalidParameter(
            "samples are not whole frames".into(),
        ));
    }
    let (bits, sample_format) = match audio.format {
        PcmFormat::Int { bits } if matches!(bits, 8 | 16 | 24 | 32) => {
            (bits, hound::SampleFormat::Int)
        }
        PcmFormat::Int { bits } => {
            return Err(CodecError::InvalidParameter(format!(
                "{bits}-bit integer WAV"
            )));
        }
        PcmFormat::Float32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: audio.channels,
        sample_rate: audio.sample_rate,
        bits_per_sample: bits,
        sample_format,
    };
    let mut w = hound::WavWriter::new(writer, spec).map_err(wav_err)?;
    match audio.format {
        PcmFormat::Float32 => {
            for &s in &audio.samples {
                w.write_sample(s).map_err(wav_err)?;
            }
        }
        PcmFormat::Int { bits } => {
            let full = f64::from(1u32 << (bits - 1));
            for &s in &audio.samples {
                let v = (f64::from(s) * full).round().clamp(-full, full - 1.0) as i32;
                match bits {
                    8 => w.write_sample(v as i8),
                    16 => w.write_sample(v as i16),
                    _ => w.write_sample(v),
                }
                .map_err(wav_err)?;
            }
        }
    }
    w.finalize().map_err(wav_err)
}

/// `audio` as the bytes of a WAV file (for atomic writes).
///
/// # Errors
/// As [`write_wav`].
pub fn wav_bytes(audio: &Audio) -> Result<Vec<u8>> {
    let mut cursor = Cursor::new(Vec::new());
    write_wav(&mut cursor, audio)?;
    Ok(cursor.into_inner())
}
