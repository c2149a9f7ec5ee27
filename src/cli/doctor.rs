//! `ncodec doctor`: runs a few kernels on the chosen backend and compares them with the CPU.

use anyhow::{Context, Result};
use ncodec_codecs::Backend;

/// Runs the backend self test and prints the result.
///
/// # Errors
/// If the backend cannot start or disagrees with the CPU.
pub fn run(backend: Backend) -> Result<()> {
    let start = std::time::Instant::now();
    let diff = backend
        .self_test()
        .with_context(|| format!("self test of the {backend} backend"))?;
    println!(
        "backend {backend}: ok (matmul + conv2d agree with the CPU to {diff:.2e}, {:.2} s)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
