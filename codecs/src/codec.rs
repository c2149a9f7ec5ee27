//! The narrow interface every codec implements, and the media it exchanges.

use std::str::FromStr;

use ncodec_bitstream::{CodecId, Container, Limits};

use crate::error::{CodecError, Result};

/// Content going into an encoder or coming out of a decoder.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Media {
    /// An 8-bit RGB image.
    Image(image::RgbImage),
    /// Audio (interleaved samples in [-1, 1)).
    Audio(crate::media::audio::Audio),
    /// Raw entropy-coder symbols (conformance files).
    Symbols(Vec<i32>),
}

impl Media {
    /// A lowercase name of the media kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Image(_) => "image",
            Self::Audio(_) => "audio",
            Self::Symbols(_) => "symbols",
        }
    }
}

/// The rate knob of `ncodec encode -q`: a quality level or a target rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quality {
    /// A point on the codec's quality ladder (`-q 4`; fractional values interpolate).
    Level(f32),
    /// The highest quality whose file is at most this many bits per pixel (`-q 0.25bpp`).
    TargetBpp(f64),
    /// The highest quality whose stream is at most this many kilobits per second (`-q 64kbps`).
    TargetKbps(f64),
}

impl Default for Quality {
    fn default() -> Self {
        Self::Level(4.0)
    }
}

impl FromStr for Quality {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let number = |t: &str| -> Result<f64> {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    CodecError::InvalidParameter(format!("'{s}' is not a positive number"))
                })
        };
        if let Some(v) = s.strip_suffix("bpp") {
            Ok(Self::TargetBpp(number(v)?))
        } else if let Some(v) = s.strip_suffix("kbps") {
            Ok(Self::TargetKbps(number(v)?))
        } else {
            number(s).map(|v| Self::Level(v as f32)).map_err(|_| {
                CodecError::InvalidParameter(format!(
                    "quality '{s}' is neither a level (e.g. 4), a rate in bpp (e.g. 0.25bpp) nor in kbps (e.g. 64kbps)"
                ))
            })
        }
    }
}

/// Options of one encode.
#[derive(Debug, Clone, Default)]
pub struct EncodeOptions {
    /// The rate knob.
    pub quality: Quality,
}

/// What a codec is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// Stable id written into files.
    pub id: CodecId,
    /// Name used on the command line.
    pub name: &'static str,
    /// Media kind it codes ("image", "audio", "video", "symbols").
    pub media: &'static str,
    /// One line for `--help` and error messages.
    pub description: &'static str,
}

/// A codec: turns media into a [`Container`] and back.
pub trait Codec: Send + Sync {
    /// What this codec is.
    fn info(&self) -> &CodecInfo;

    /// Encodes `media`.
    ///
    /// # Errors
    /// [`CodecError`] for unsupported media or parameters.
    fn encode(&self, media: &Media, options: &EncodeOptions) -> Result<Container>;

    /// Decodes a parsed file of this codec.
    ///
    /// # Errors
    /// [`CodecError`] for a damaged file or a file made with other weights; never panics.
    fn decode(&self, file: &Container, limits: &Limits) -> Result<Media>;
}
