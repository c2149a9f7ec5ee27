//! The weights file shared by every codec: `"NCWT" | version u16 | reserved u16 | json length u32 |
//! json | burnpack`. The JSON names the codec and holds its configuration; the burnpack holds the
//! parameters (f16 in shipped files, loaded as f32). The model id written into every `.ncd` is the
//! first 8 bytes of the SHA-256 of the whole file.

use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType, Tensor};
use ncodec_bitstream::ModelId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CodecError, Result};

const MAGIC: &[u8; 4] = b"NCWT";
const VERSION: u16 = 1;
/// Weights files larger than this are refused before reading the burnpack.
const MAX_WEIGHTS_BYTES: usize = 512 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Header<C> {
    codec: String,
    config: C,
}

struct CastF16;

impl ModuleMapper for CastF16 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.cast(DType::F16))
    }
}

/// Serializes `model` of `codec` with its `config` (f16 parameters if `half`, else f32).
///
/// # Errors
/// [`CodecError::InvalidParameter`] if burn cannot serialize the record.
pub fn to_bytes<M: Module, C: Serialize>(
    codec: &str,
    model: &M,
    config: &C,
    half: bool,
) -> Result<Vec<u8>> {
    let model = model.clone();
    let model = if half { model.map(&mut CastF16) } else { model };
    let pack = model
        .into_record()
        .into_bytes()
        .map_err(|e| CodecError::InvalidParameter(format!("cannot serialize weights: {e:?}")))?;
    assemble(codec, config, &pack)
}

/// `MAGIC | version | reserved | json length | json | pack`.
fn assemble<C: Serialize>(codec: &str, config: &C, pack: &[u8]) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(&Header {
        codec: codec.to_string(),
        config,
    })
    .map_err(|e| CodecError::InvalidParameter(e.to_string()))?;
    let mut out = Vec::with_capacity(12 + json.len() + pack.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(pack);
    Ok(out)
}

/// The weights file `bytes` of `codec` with its header's configuration replaced by `config`; the
/// parameters are kept byte for byte.
///
/// # Errors
/// [`CodecError::Weights`] for a file that is not a weights file of `codec`.
pub fn with_config<C: Serialize>(bytes: &[u8], codec: &str, config: &C) -> Result<Vec<u8>> {
    let (header, pack) = split::<serde_json::Value>(bytes, codec)?;
    if header.codec != codec {
        return Err(CodecError::Weights(format!(
            "not a {codec} weights file: made for codec '{}'",
            header.codec
        )));
    }
    assemble(codec, config, pack)
}

/// The model id of a weights file.
pub fn model_id(bytes: &[u8]) -> ModelId {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    ModelId(id)
}

/// The codec name a weights file was made for, if it is a weights file at all.
pub fn codec_of(bytes: &[u8]) -> Option<String> {
    let (header, _) = split::<serde_json::Value>(bytes, "any").ok()?;
    Some(header.codec)
}

fn split<'a, C: DeserializeOwned>(bytes: &'a [u8], codec: &str) -> Result<(Header<C>, &'a [u8])> {
    let bad = |why: &str| CodecError::Weights(format!("not a {codec} weights file: {why}"));
    if bytes.len() > MAX_WEIGHTS_BYTES {
        return Err(bad("larger than 512 MiB"));
    }
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != VERSION {
        return Err(bad(&format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let json = bytes
        .get(12..12 + len)
        .ok_or_else(|| bad("truncated header"))?;
    let header: Header<C> =
        serde_json::from_slice(json).map_err(|e| bad(&format!("header: {e}")))?;
    Ok((header, &bytes[12 + len..]))
}

/// Reads the configuration of a weights file made for `codec`, and the burnpack after it.
///
/// # Errors
/// [`CodecError::Weights`] for a file that is not a weights file of `codec`.
pub fn config_of<'a, C: DeserializeOwned>(bytes: &'a [u8], codec: &str) -> Result<(C, &'a [u8])> {
    let (kind, _) = split::<serde_json::Value>(bytes, codec)?;
    if kind.codec != codec {
        return Err(CodecError::Weights(format!(
            "not a {codec} weights file: made for codec '{}'",
            kind.codec
        )));
    }
    let (header, pack) = split::<C>(bytes, codec)?;
    Ok((header.config, pack))
}

/// Loads the burnpack `pack` into `empty` (a module of the right shapes).
///
/// # Errors
/// [`CodecError::Weights`] for a damaged pack or parameters of the wrong shapes.
pub fn load_into<M: Module>(empty: M, pack: &[u8]) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(pack.to_vec()))
        .map_err(|e| CodecError::Weights(format!("damaged weights file: {e:?}")))?
        .cast_to_module_dtype();
    empty
        .try_load_record(record)
        .map_err(|e| CodecError::Weights(format!("they do not fit the model: {e:?}")))
}
