//! Entropy models over constriction's ANS coder with integer-only tables.
//!
//! | model | use | parameters per symbol |
//! |---|---|---|
//! | [`FactorizedModel`] | entropy bottleneck (hyper-latents) | channel (implicit) |
//! | [`GaussianConditional`] | hyperprior latents, mean subtracted outside | scale index `u16` |
//! | [`GaussianMixture`] | mixture priors (McQuic-style) | K × (weight `u16`, mean `i32`/16, scale index `u16`) |
//! | [`CategoricalModel`] | vector-quantizer indices | context id `u16` |
//!
//! Values outside a table's range are escaped and coded exactly ([`ans`]).

pub mod ans;
pub mod categorical;
pub mod factorized;
pub mod gaussian;
pub mod mixture;
pub mod table;

pub use ans::{AnsReader, AnsWriter};
pub use categorical::CategoricalModel;
pub use factorized::FactorizedModel;
pub use gaussian::{GaussianConditional, ScaleFamily};
pub use mixture::{GaussianMixture, MixtureParams};
pub use table::{CdfTable, PRECISION, quantize_masses};
