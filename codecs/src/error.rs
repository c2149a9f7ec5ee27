//! The error type of the codec layer.

use ncodec_bitstream::{BitstreamError, CodecId};

/// Errors of the codecs: each wraps the layer below or says whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bitstream layer refused the file or the parameters.
    #[error(transparent)]
    Bitstream(#[from] BitstreamError),
    /// The codec id is known but this build has no implementation of it.
    #[error("codec {id} is not available in this build of ncodec ({why})")]
    NotAvailable {
        /// The codec.
        id: CodecId,
        /// What is missing.
        why: String,
    },
    /// No codec with this name or id exists.
    #[error("unknown codec {0}; known codecs: {1}")]
    UnknownCodec(String, String),
    /// The input is valid media that this codec cannot handle.
    #[error("unsupported input: {0}")]
    Unsupported(String),
    /// A weights file is damaged, foreign or does not fit the model.
    #[error("weights: {0}")]
    Weights(String),
    /// A parameter given by the user is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The compute backend failed to start or to run.
    #[error("backend {backend}: {message}")]
    Backend {
        /// Which backend.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// Reading or writing media failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
