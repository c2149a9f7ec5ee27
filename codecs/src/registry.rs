//! The codec registry: maps codec ids and names to implementations. Built explicitly by the CLI.

use ncodec_bitstream::CodecId;

use crate::backend::Backend;
use crate::codec::Codec;
use crate::conformance::ConformanceCodec;
use crate::error::{CodecError, Result};
use crate::hyperprior::HyperpriorEntry;
use crate::walloc::{Medium, WallocEntry};

/// Every codec id ncodec has assigned, with its media kind: implemented or not, so that errors can
/// say precisely what is missing.
pub const PLANNED: &[(CodecId, &str, &str)] = &[
    (CodecId::CONFORMANCE, "conformance", "symbols"),
    (CodecId::HYPERPRIOR, "hyperprior", "image"),
    (CodecId::MCQUIC, "mcquic", "image"),
    (CodecId::VQGAN, "vqgan", "image"),
    (CodecId::WALLOC_IMAGE, "walloc-image", "image"),
    (CodecId::WALLOC_AUDIO, "walloc-audio", "audio"),
    (CodecId::ODVAE, "odvae", "video"),
];

/// The default codec of each media kind.
pub fn default_codec(media: &str) -> Option<&'static str> {
    match media {
        "image" => Some("hyperprior"),
        "audio" => Some("walloc-audio"),
        "video" => Some("odvae"),
        _ => None,
    }
}

/// The codecs available in this build.
pub struct CodecRegistry {
    backend: Backend,
    codecs: Vec<Box<dyn Codec>>,
}

impl std::fmt::Debug for CodecRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecRegistry")
            .field("backend", &self.backend)
            .field(
                "codecs",
                &self
                    .codecs
                    .iter()
                    .map(|c| c.info().name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CodecRegistry {
    /// An empty registry for `backend`.
    pub fn empty(backend: Backend) -> Self {
        Self {
            backend,
            codecs: Vec::new(),
        }
    }

    /// Every codec built into this ncodec, running on `backend`.
    pub fn builtin(backend: Backend) -> Self {
        // Without a weights file there is nothing to refuse.
        Self::builtin_with(backend, None).unwrap_or_else(|_| Self::empty(backend))
    }

    /// Every codec built into this ncodec; the codec that the weights file `weights` (bytes of a
    /// `weights.ncw` written by `ncodec train`) was made for uses it instead of its shipped
    /// weights. Weights are loaded on first use.
    ///
    /// # Errors
    /// [`CodecError::Weights`] if `weights` is not a weights file of a codec of this build.
    pub fn builtin_with(backend: Backend, weights: Option<Vec<u8>>) -> Result<Self> {
        let owner = match &weights {
            Some(bytes) => Some(crate::weights::codec_of(bytes).ok_or_else(|| {
                CodecError::Weights("not an ncodec weights file (bad magic or header)".into())
            })?),
            None => None,
        };
        let mine = |name: &str| {
            if owner.as_deref() == Some(name) {
                weights.clone()
            } else {
                None
            }
        };
        let mut r = Self::empty(backend);
        r.register(Box::new(ConformanceCodec));
        r.register(Box::new(HyperpriorEntry::new(backend, mine("hyperprior"))));
        r.register(Box::new(WallocEntry::new(
            Medium::Image,
            backend,
            mine("walloc-image"),
        )));
        r.register(Box::new(WallocEntry::new(
            Medium::Audio,
            backend,
            mine("walloc-audio"),
        )));
        if let Some(name) = owner
            && r.codecs.iter().all(|c| c.info().name != name)
        {
            return Err(CodecError::Weights(format!(
                "the weights file is for codec '{name}', which this build does not have"
            )));
        }
        Ok(r)
    }

    /// Adds a codec (replacing one with the same id).
    pub fn register(&mut self, codec: Box<dyn Codec>) {
        self.codecs.retain(|c| c.info().id != codec.info().id);
        self.codecs.push(codec);
    }

    /// The backend the registry's models run on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Names of the available codecs.
    pub fn names(&self) -> Vec<&'static str> {
        self.codecs.iter().map(|c| c.info().name).collect()
    }

    /// The codec that wrote files with this id.
    ///
    /// # Errors
    /// [`CodecError::NotAvailable`] for an assigned id without implementation,
    /// [`CodecError::UnknownCodec`] for an id nobody assigned.
    pub fn by_id(&self, id: CodecId) -> Result<&dyn Codec> {
        if let Some(c) = self.codecs.iter().find(|c| c.info().id == id) {
            return Ok(c.as_ref());
        }
        match PLANNED.iter().find(|p| p.0 == id) {
            Some(_) => Err(self.not_available(id)),
            None => Err(CodecError::UnknownCodec(
                format!("{:#06x}", id.0),
                self.known(),
            )),
        }
    }

    /// The codec with this command-line name.
    ///
    /// # Errors
    /// As [`CodecRegistry::by_id`].
    pub fn by_name(&self, name: &str) -> Result<&dyn Codec> {
        if let Some(c) = self.codecs.iter().find(|c| c.info().name == name) {
            return Ok(c.as_ref());
        }
        match PLANNED.iter().find(|p| p.1 == name) {
            Some(p) => Err(self.not_available(p.0)),
            None => Err(CodecError::UnknownCodec(format!("'{name}'"), self.known())),
        }
    }

    fn known(&self) -> String {
        PLANNED.iter().map(|p| p.1).collect::<Vec<_>>().join(", ")
    }

    fn not_available(&self, id: CodecId) -> CodecError {
        CodecError::NotAvailable {
            id,
            why: format!(
                "its model and weights have not landed yet; available here: {}",
                self.names().join(", ")
            ),
        }
    }
}
