//! The hyperprior weights file (the shared format of [`crate::weights`]): its JSON holds the
//! [`HyperpriorConfig`].

use burn::module::Module;
use burn::tensor::Device;
use ncodec_bitstream::ModelId;

use super::model::{Hyperprior, HyperpriorConfig};
use crate::error::{CodecError, Result};

const CODEC: &str = "hyperprior";

/// Serializes `model` (f16 parameters if `half`, else f32).
///
/// # Errors
/// [`CodecError::InvalidParameter`] if burn cannot serialize the record.
pub fn to_bytes(model: &Hyperprior, config: &HyperpriorConfig, half: bool) -> Result<Vec<u8>> {
    crate::weights::to_bytes(CODEC, &model.valid(), config, half)
}

/// The model id of a weights file.
pub fn model_id(bytes: &[u8]) -> ModelId {
    crate::weights::model_id(bytes)
}

/// Reads the configuration of a weights file.
///
/// # Errors
/// [`CodecError::Weights`] for a file that is not a hyperprior weights file.
pub fn config_of(bytes: &[u8]) -> Result<(HyperpriorConfig, &[u8])> {
    let (config, pack): (HyperpriorConfig, _) = crate::weights::config_of(bytes, CODEC)?;
    config
        .validate()
        .map_err(|e| CodecError::Weights(format!("not a hyperprior weights file: {e}")))?;
    Ok((config, pack))
}

/// Loads a weights file onto `device`.
///
/// # Errors
/// [`CodecError::Weights`] for a damaged file or parameters of the wrong shapes.
pub fn load(bytes: &[u8], device: &Device) -> Result<(HyperpriorConfig, Hyperprior)> {
    let (config, pack) = config_of(bytes)?;
    let model = crate::weights::load_into(config.init_for_loading(device), pack)?;
    Ok((config, model))
}
