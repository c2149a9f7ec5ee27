//! `ncodec`: learned neural codecs for images, audio and video.

use clap::Parser;

fn main() {
    // burn puts optimizer state loaded by `train --resume` on `Device::default()`, which prefers a GPU
    // and would start one (or fail on a machine without a Vulkan driver) even for `--backend cpu`.
    // Pin the default to the CPU; the state moves to the training device on the first step.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: first statement of `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    let args = match ncodec::cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // --help and --version print and succeed; every usage error exits with status 1.
            let code = i32::from(e.use_stderr());
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(err) = ncodec::cli::run(args) {
        // The whole cause chain, one cause per line (rav1e's print_error).
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
