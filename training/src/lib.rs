//! # ncodec-training
//!
//! Evaluation (this crate's first part): [`metrics`] (PSNR, MS-SSIM, audio SNR and segmental SNR,
//! video PSNR), [`rd`] (CompressAI-schema results), [`bdrate`] (Bjøntegaard deltas), [`plot`]
//! (rate-distortion PNGs) and [`eval`] (the `ncodec eval` runner). Datasets, losses and training
//! loops arrive with the first trainable codec.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bdrate;
pub mod eval;
pub mod metrics;
pub mod plot;
pub mod rd;
