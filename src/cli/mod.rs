//! Command-line interface: global options and one module per subcommand.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ncodec_codecs::{Backend, CodecRegistry};

pub mod calibrate;
pub mod decode;
pub mod doctor;
pub mod encode;
pub mod eval;
pub mod info;
pub mod plot;
pub mod train;

/// Learned neural codecs for images, audio and video, with bitstreams that decode anywhere.
#[derive(Debug, Parser)]
#[command(name = "ncodec", version, about, propagate_version = true)]
pub struct Args {
    /// Compute backend: cpu (burn Flex) or wgpu (any GPU; lavapipe without one).
    #[arg(long, global = true, default_value = "cpu", value_parser = parse_backend)]
    pub backend: Backend,
    /// Weights file for the hyperprior (a `weights.ncw` written by `ncodec train`) instead of the
    /// shipped weights.
    #[arg(long, global = true)]
    pub weights: Option<std::path::PathBuf>,
    /// Print less (no progress bars).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
        .map_err(|e: ncodec_codecs::CodecError| e.to_string())
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode an image, WAV or video into a .ncd file.
    Encode(encode::EncodeArgs),
    /// Decode a .ncd file back to media.
    Decode(decode::DecodeArgs),
    /// Show the header and streams of a .ncd file.
    Info(info::InfoArgs),
    /// Train a codec on a folder of media.
    Train(train::TrainArgs),
    /// Measure rate-distortion curves on a dataset folder.
    Eval(eval::EvalArgs),
    /// Plot rate-distortion curves and compute BD-rates.
    Plot(plot::PlotArgs),
    /// Fit the hyperprior's scale calibration on training photos and write the weights with it.
    Calibrate(calibrate::CalibrateArgs),
    /// Check that a compute backend runs and agrees with the CPU.
    Doctor,
}

/// Runs one command line.
///
/// # Errors
/// Every failure, with its cause chain, for `main` to print.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Encode(a) => encode::run(&a, &registry(args.backend, args.weights.as_deref())?),
        Command::Decode(a) => decode::run(&a, &registry(args.backend, args.weights.as_deref())?),
        Command::Info(a) => info::run(&a),
        Command::Train(a) => train::run(&a, args.backend, args.quiet),
        Command::Eval(a) => eval::run(
            &a,
            &registry(args.backend, args.weights.as_deref())?,
            args.quiet,
        ),
        Command::Plot(a) => plot::run(&a),
        Command::Calibrate(a) => {
            calibrate::run(&a, args.backend, args.weights.as_deref(), args.quiet)
        }
        Command::Doctor => doctor::run(args.backend),
    }
}

/// The codecs on `backend`; the codec a weights file `weights` was made for uses it.
///
/// # Errors
/// An unreadable weights file.
pub fn registry(backend: Backend, weights: Option<&std::path::Path>) -> Result<CodecRegistry> {
    let bytes = weights
        .map(|p| std::fs::read(p).with_context(|| format!("reading weights {}", p.display())))
        .transpose()?;
    let shown = weights.map(|p| p.display().to_string()).unwrap_or_default();
    CodecRegistry::builtin_with(backend, bytes).with_context(|| format!("weights {shown}"))
}
