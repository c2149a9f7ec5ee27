//! Resource limits checked before any allocation that a file's header asks for.

use crate::error::{BitstreamError, Result};

/// Upper bounds on what a file may declare. Every size read from a header is checked against these
/// before memory is allocated for it, so a 40-byte file that claims 10^9 pixels is rejected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest image or video frame, in pixels (width × height).
    pub max_pixels: u64,
    /// Largest audio clip, in samples per channel.
    pub max_samples: u64,
    /// Largest video, in frames.
    pub max_frames: u64,
    /// Largest single stream, in bytes.
    pub max_stream_bytes: u64,
    /// Largest whole file, in bytes.
    pub max_file_bytes: u64,
    /// Most streams in one file.
    pub max_streams: u32,
    /// Most entropy-coded symbols a decoder may be asked to produce from one stream.
    pub max_symbols: u64,
}

impl Default for Limits {
    /// Generous defaults: 16K×16K pixels (268 M), 24 h of 192 kHz audio, 1 M frames, 1 GiB per stream and
    /// 4 GiB per file.
    fn default() -> Self {
        Self {
            max_pixels: 16_384 * 16_384,
            max_samples: 192_000 * 3600 * 24,
            max_frames: 1 << 20,
            max_stream_bytes: 1 << 30,
            max_file_bytes: 1 << 32,
            max_streams: 4096,
            max_symbols: 1 << 31,
        }
    }
}

impl Limits {
    /// Strict limits for fuzzing and untrusted input in tests: 4096² pixels, 10 M samples, 64 MiB files.
    pub fn strict() -> Self {
        Self {
            max_pixels: 4096 * 4096,
            max_samples: 10_000_000,
            max_frames: 1024,
            max_stream_bytes: 64 << 20,
            max_file_bytes: 64 << 20,
            max_streams: 64,
            max_symbols: 64 << 20,
        }
    }

    /// Returns an error if `value > max`.
    ///
    /// # Errors
    /// [`BitstreamError::Limit`] naming `what`.
    pub fn check(what: &'static str, value: u64, max: u64) -> Result<()> {
        if value > max {
            Err(BitstreamError::Limit { what, value, max })
        } else {
            Ok(())
        }
    }
}
