//! # ncodec-codecs
//!
//! Learned codecs on Burn (the backend is a runtime [`burn::tensor::Device`] chosen by the caller),
//! media I/O, and the encode/decode pipelines behind one narrow [`Codec`] trait and a
//! [`CodecRegistry`] keyed by the stable codec ids of the bitstream.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod codec;
pub mod conformance;
pub mod error;
pub mod hyperprior;
pub mod linalg;
pub mod media;
pub mod registry;
pub mod walloc;
pub mod weights;
pub mod wiener;

pub use backend::Backend;
pub use codec::{Codec, CodecInfo, EncodeOptions, Media, Quality};
pub use error::{CodecError, Result};
pub use registry::CodecRegistry;
