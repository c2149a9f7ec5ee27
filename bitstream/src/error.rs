//! The error type of the bitstream layer.

use std::fmt;

/// Errors of the container format and the entropy coders.
///
/// Each variant says whose fault it is: [`Corrupt`](Self::Corrupt), [`Truncated`](Self::Truncated),
/// [`Checksum`](Self::Checksum) and [`Limit`](Self::Limit) blame the input file;
/// [`UnsupportedVersion`](Self::UnsupportedVersion) and [`Unsupported`](Self::Unsupported) blame an
/// older reader; [`InvalidParameter`](Self::InvalidParameter) blames the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitstreamError {
    /// The file ends before a structure that it announces.
    #[error(
        "truncated file: {what} needs {needed} bytes at offset {offset}, only {available} remain"
    )]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Byte offset where it starts.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left in the file.
        available: usize,
    },
    /// A structure holds a value that no valid file holds.
    #[error("corrupt file: {what} (at offset {offset})")]
    Corrupt {
        /// What is wrong.
        what: String,
        /// Byte offset of the offending structure (0 when not tied to a position).
        offset: usize,
    },
    /// A CRC32 does not match.
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Which checksum.
        what: String,
        /// Value stored in the file.
        stored: u32,
        /// Value computed over the bytes.
        computed: u32,
    },
    /// The file is not an ncodec file at all.
    #[error("not an ncodec file (bad magic bytes {found:02x?}; expected {expected:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
        /// The magic bytes.
        expected: [u8; 4],
    },
    /// The file was written by a newer, incompatible major version of the format.
    #[error(
        "bitstream format version {major}.{minor} is newer than this decoder supports ({supported_major}.x); upgrade ncodec"
    )]
    UnsupportedVersion {
        /// Major version in the file.
        major: u8,
        /// Minor version in the file.
        minor: u8,
        /// Highest major version this build reads.
        supported_major: u8,
    },
    /// A feature of the file that this build does not implement (for example an unknown critical chunk).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A declared size exceeds the configured [`Limits`](crate::Limits).
    #[error("{what} = {value} exceeds the limit of {max}")]
    Limit {
        /// The quantity.
        what: &'static str,
        /// Its declared value.
        value: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The bitstream was made with other model weights than the ones loaded.
    #[error(
        "model mismatch: the file was encoded with model {found}, but the loaded weights are {expected}"
    )]
    ModelMismatch {
        /// Model id in the file.
        found: ModelId,
        /// Model id of the loaded weights.
        expected: ModelId,
    },
    /// A caller passed a value the API does not accept (never caused by file contents).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// An I/O error while writing.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = BitstreamError> = std::result::Result<T, E>;

impl BitstreamError {
    pub(crate) fn corrupt(what: impl Into<String>, offset: usize) -> Self {
        Self::Corrupt {
            what: what.into(),
            offset,
        }
    }
}

/// Identifies the model weights a file was encoded with: the first 8 bytes of the SHA-256 of the
/// weights file, so that a decoder refuses a file made by other weights instead of decoding noise.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ModelId(pub [u8; 8]);

impl ModelId {
    /// Builds a model id from the leading 8 bytes of a digest.
    ///
    /// # Errors
    /// [`BitstreamError::InvalidParameter`] if the digest is shorter than 8 bytes.
    pub fn from_digest(digest: &[u8]) -> Result<Self> {
        let head: [u8; 8] = digest
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                BitstreamError::InvalidParameter("model digest shorter than 8 bytes".into())
            })?;
        Ok(Self(head))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({self})")
    }
}
