//! # ncodec-bitstream
//!
//! The `.ncd` container format and the entropy layer shared by every ncodec codec. No Burn, no
//! floats at the coder: everything here is deterministic on every machine.
//!
//! ```
//! use ncodec_bitstream::entropy::GaussianConditional;
//! use ncodec_bitstream::{CodecId, CodecParams, Container, Limits, MediaInfo, ModelId, Stream, StreamKind};
//!
//! // Latent symbols (means already subtracted) and their scale indices.
//! let gc = GaussianConditional::default();
//! let symbols = [0, -1, 3, 0, 250, -7];
//! let indices = [10u16, 12, 30, 5, 2, 40];
//! let bytes = gc.encode(&symbols, &indices)?;
//!
//! let media = MediaInfo::Image { width: 64, height: 48, channels: 3, bit_depth: 8 };
//! let mut file = Container::new(CodecId::HYPERPRIOR, ModelId([7; 8]), media, CodecParams::default());
//! file.streams.push(Stream { kind: StreamKind::Ans32, label: 1, data: bytes });
//! let written = file.to_bytes()?;
//!
//! let parsed = Container::parse(&written, &Limits::default())?;
//! parsed.expect_model(ModelId([7; 8]))?;
//! assert_eq!(gc.decode(&parsed.stream(1)?.data, &indices)?, symbols);
//! # Ok::<(), ncodec_bitstream::BitstreamError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod conformance;
pub mod container;
pub mod entropy;
pub mod error;
pub mod fuzzing;
pub mod limits;

pub use container::{CodecId, CodecParams, Container, MediaInfo, Stream, StreamKind};
pub use error::{BitstreamError, ModelId, Result};
pub use limits::Limits;
