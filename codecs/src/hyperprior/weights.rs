//! The hyperprior weights file (the shared format of [`crate::weights`]): its JSON holds the
//! [`HyperpriorConfig`] and, once the weights are calibrated, the [`ScaleMap`].

use burn::module::Module;
use burn::tensor::Device;
use ncodec_bitstream::ModelId;
use serde::{Deserialize, Serialize};

use super::calibrate::ScaleMap;
use super::model::{Hyperprior, HyperpriorConfig};
use crate::error::{CodecError, Result};

const CODEC: &str = "hyperprior";

/// The header's configuration: the network, and the scale map if the weights were calibrated.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileConfig {
    #[serde(flatten)]
    config: HyperpriorConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale_map: Option<ScaleMap>,
}

/// Serializes `model` (f16 parameters if `half`, else f32).
///
/// # Errors
/// [`CodecError::InvalidParameter`] if burn cannot serialize the record.
pub fn to_bytes(model: &Hyperprior, config: &HyperpriorConfig, half: bool) -> Result<Vec<u8>> {
    crate::weights::to_bytes(CODEC, &model.valid(), config, half)
}

/// The weights file `bytes` with its scale map replaced by `map` (the parameters unchanged).
///
/// # Errors
/// [`CodecError::Weights`] for a file that is not a hyperprior weights file or a map that does
/// not fit it.
pub fn with_scale_map(bytes: &[u8], map: ScaleMap) -> Result<Vec<u8>> {
    let (config, _) = config_of(bytes)?;
    map.validate(config.m, scale_levels())
        .and_then(|()| check_z_tables(&map, &config))
        .map_err(CodecError::Weights)?;
    let file = FileConfig {
        config,
        scale_map: Some(map),
    };
    crate::weights::with_config(bytes, CODEC, &file)
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
    let (file, pack) = file_config_of(bytes)?;
    Ok((file.config, pack))
}

/// The scale map of a weights file, `None` for uncalibrated weights.
///
/// # Errors
/// [`CodecError::Weights`] for a file that is not a hyperprior weights file or a map that does
/// not fit its network.
pub fn scale_map_of(bytes: &[u8]) -> Result<Option<ScaleMap>> {
    Ok(file_config_of(bytes)?.0.scale_map)
}

fn file_config_of(bytes: &[u8]) -> Result<(FileConfig, &[u8])> {
    let (file, pack): (FileConfig, _) = crate::weights::config_of(bytes, CODEC)?;
    file.config
        .validate()
        .map_err(|e| CodecError::Weights(format!("not a hyperprior weights file: {e}")))?;
    if let Some(map) = &file.scale_map {
        map.validate(file.config.m, scale_levels())
            .and_then(|()| check_z_tables(map, &file.config))
            .map_err(|e| CodecError::Weights(format!("damaged hyperprior weights file: {e}")))?;
    }
    Ok((file, pack))
}

/// Entries of the scale table the codec codes `y` with.
pub fn scale_levels() -> usize {
    ncodec_bitstream::entropy::gaussian::SCALES_LEVELS
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

/// A scale map's `ẑ` tables are none or one per quality bucket and `ẑ` channel.
fn check_z_tables(map: &ScaleMap, config: &HyperpriorConfig) -> std::result::Result<(), String> {
    let want = super::Z_BUCKETS * config.n;
    if map.z_tables.is_empty() || map.z_tables.len() == want {
        Ok(())
    } else {
        Err(format!(
            "the scale map has {} z tables, the network {} channels × {} quality buckets",
            map.z_tables.len(),
            config.n,
            super::Z_BUCKETS
        ))
    }
}
