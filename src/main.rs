//! `ncodec`: learned neural codecs for images, audio and video.

use clap::Parser;

fn main() {
    let args = ncodec::cli::Args::parse();
    if let Err(err) = ncodec::cli::run(args) {
        // The whole cause chain, one cause per line (rav1e's print_error).
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
