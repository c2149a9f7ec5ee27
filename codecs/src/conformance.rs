//! The conformance "codec": entropy-coder symbols with the tables carried in the file.

use ncodec_bitstream::conformance::{self, ConformanceModel};
use ncodec_bitstream::{CodecId, Container, Limits};

use crate::codec::{Codec, CodecInfo, EncodeOptions, Media};
use crate::error::{CodecError, Result};

/// Decodes [conformance files](ncodec_bitstream::conformance) to their symbols; encoding needs a
/// model, so it goes through [`ConformanceCodec::encode_with`].
#[derive(Debug, Default)]
pub struct ConformanceCodec;

const INFO: CodecInfo = CodecInfo {
    id: CodecId::CONFORMANCE,
    name: "conformance",
    media: "symbols",
    description: "entropy-layer conformance streams (golden files); decodes to JSON symbols",
};

impl ConformanceCodec {
    /// Encodes `symbols` with `model`.
    ///
    /// # Errors
    /// Whatever the entropy model refuses.
    pub fn encode_with(&self, model: &ConformanceModel, symbols: &[i32]) -> Result<Container> {
        Ok(conformance::encode(model, symbols)?)
    }
}

impl Codec for ConformanceCodec {
    fn info(&self) -> &CodecInfo {
        &INFO
    }

    fn encode(&self, media: &Media, _options: &EncodeOptions) -> Result<Container> {
        Err(CodecError::Unsupported(format!(
            "the conformance codec does not encode {} input from the command line; it only decodes golden files",
            media.kind_name()
        )))
    }

    fn decode(&self, file: &Container, limits: &Limits) -> Result<Media> {
        let (_, symbols) = conformance::decode(file, limits)?;
        Ok(Media::Symbols(symbols))
    }
}
