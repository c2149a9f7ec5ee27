//! `ncodec`: learned neural codecs for images, audio and video.

use clap::Parser;

fn main() {
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
