//! # ncodec-training
//!
//! Evaluation (this crate's first part): [`metrics`] (PSNR, MS-SSIM, audio SNR and segmental SNR,
//! video PSNR), [`rd`] (CompressAI-schema results), [`bdrate`] (Bjøntegaard deltas), [`plot`]
//! (rate-distortion PNGs) and [`eval`] (the `ncodec eval` runner). [`data`] (image-folder datasets and
//! the loader thread) and [`hyperprior`] (the training loop of the hyperprior).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bdrate;
pub mod calibrate;
pub mod data;
pub mod eval;
pub mod hyperprior;
pub mod metrics;
pub mod plot;
pub mod rd;
pub mod walloc;
