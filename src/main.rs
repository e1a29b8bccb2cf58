//! The `licrenew` binary: parse the command line, run it, map the outcome to an exit code
//! (0 ok, 1 failure, 2 usage, 78 config).

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    licrenew::systemd::forbid_core_dumps();
    let args = licrenew::cli::Args::parse();
    match licrenew::cli::run(args).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("licrenew: error: {failure}");
            failure.exit_code()
        }
    }
}
