//! Compute backends. Models take a runtime [`Device`]; only the binary chooses which.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceKind, Tensor, TensorData};

use crate::error::{CodecError, Result};

/// The backends ncodec runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// burn's Flex: pure-Rust CPU backend (gemm + SIMD + rayon), the fastest CPU backend measured here.
    #[default]
    Cpu,
    /// burn's wgpu backend: any Vulkan/Metal/DX12 GPU (Mesa's lavapipe on machines without one).
    Wgpu,
}

impl Backend {
    /// Every backend, for help texts.
    pub const ALL: [Self; 2] = [Self::Cpu, Self::Wgpu];

    /// The burn device of this backend.
    pub fn device(self) -> Device {
        match self {
            Self::Cpu => Device::flex(),
            Self::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
        }
    }

    /// Runs a small convolution and matrix product on this backend and on the CPU and returns the
    /// largest absolute difference, proving the backend works (and agrees with the CPU) end to end.
    ///
    /// # Errors
    /// [`CodecError::Backend`] if the device cannot run the kernels or reads back wrong values.
    pub fn self_test(self) -> Result<f32> {
        let run = |device: &Device| -> Result<Vec<f32>> {
            let n = 16 * 16;
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
                .collect();
            let a = Tensor::<2>::from_data(TensorData::new(x.clone(), [16, 16]), device);
            let prod = a.clone().matmul(a.clone().transpose()).tanh();
            let img = Tensor::<4>::from_data(TensorData::new(x, [1, 1, 16, 16]), device);
            let w = Tensor::<4>::ones([2, 1, 3, 3], device).div_scalar(9.0);
            let conv = burn::tensor::module::conv2d(
                img,
                w,
                None,
                burn::tensor::ops::ConvOptions::new([2, 2], [1, 1], [1, 1], 1),
            );
            let mut out = prod
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| self.err(format!("{e:?}")))?;
            out.extend(
                conv.into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| self.err(format!("{e:?}")))?,
            );
            Ok(out)
        };
        // A backend that cannot start (no adapter, no driver) panics inside burn/cubecl; turn that
        // into an error that names the backend instead of a crash.
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let here = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&self.device())));
        std::panic::set_hook(quiet);
        let here = here.map_err(|payload| {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the backend panicked");
            self.err(format!("could not run: {msg}"))
        })??;
        let cpu = run(&Backend::Cpu.device())?;
        let max = here
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if here.len() != cpu.len() || !max.is_finite() || max > 1e-3 {
            return Err(self.err(format!("results differ from the CPU by {max}")));
        }
        Ok(max)
    }

    fn err(self, message: String) -> CodecError {
        CodecError::Backend {
            backend: self.to_string(),
            message,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        })
    }
}

impl FromStr for Backend {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "gpu" => Ok(Self::Wgpu),
            other => Err(CodecError::InvalidParameter(format!(
                "unknown backend '{other}' (cpu or wgpu)"
            ))),
        }
    }
}
