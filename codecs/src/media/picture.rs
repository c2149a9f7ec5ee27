//! Still-image input for the image codecs: what is converted and what is refused.
//!
//! The image codecs code 8-bit RGB. Input is converted as follows:
//! * grayscale (8 or 16 bit) is replicated into R, G and B (decoding gives an RGB PNG);
//! * 16-bit channels are rounded to 8 bits (`v·255/65535`, by the `image` crate);
//! * an alpha channel that is fully opaque is dropped; **any transparent pixel is refused**, because
//!   the codecs would silently lose the transparency;
//! * other formats than PNG and JPEG are refused by the reader.

use std::path::Path;

use image::{DynamicImage, RgbImage};

use crate::error::{CodecError, Result};

/// What [`load_rgb8`] did to the input, for the user to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Notes such as "16-bit channels rounded to 8 bits".
    pub notes: Vec<String>,
}

/// Converts a decoded image to 8-bit RGB under the rules of this module.
///
/// # Errors
/// [`CodecError::Unsupported`] for an image with transparent pixels or an empty image.
pub fn to_rgb8(img: DynamicImage) -> Result<(RgbImage, Conversion)> {
    let mut notes = Vec::new();
    let color = img.color();
    if img.width() == 0 || img.height() == 0 {
        return Err(CodecError::Unsupported("the image is empty".into()));
    }
    if color.has_alpha() {
        let rgba = img.to_rgba16();
        if rgba.pixels().any(|p| p.0[3] != u16::MAX) {
            return Err(CodecError::Unsupported(
                "the image has transparent pixels; ncodec's image codecs code opaque RGB only (flatten it first, e.g. `convert in.png -background white -flatten out.png`)".into(),
            ));
        }
        notes.push("opaque alpha channel dropped".into());
    }
    if !color.has_color() {
        notes.push("grayscale replicated to RGB".into());
    }
    if color.bytes_per_pixel() / color.channel_count() > 1 {
        notes.push("16-bit channels rounded to 8 bits".into());
    }
    Ok((img.to_rgb8(), Conversion { notes }))
}

/// Reads a PNG or JPEG file as 8-bit RGB (see the module documentation).
///
/// # Errors
/// [`CodecError::Unsupported`] for unreadable or transparent images, [`CodecError::Io`] for I/O.
pub fn load_rgb8(path: &Path) -> Result<(RgbImage, Conversion)> {
    let reader = image::ImageReader::open(path)?
        .with_guessed_format()
        .map_err(CodecError::Io)?;
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(4 << 30);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| CodecError::Unsupported(format!("{}: {e}", path.display())))?;
    to_rgb8(img)
}
