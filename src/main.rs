//! The `licrenew` binary: parse the command line, run it, map the outcome to an exit code
//! (0 ok, 1 failure, 2 usage, 78 config).

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    licrenew::systemd::forbid_core_dumps();
    let args = licrenew::cli::Args::parse();
    if !args.command.is_service() {
        // A command whose output goes into `| head -1` ends quietly when the reader is gone,
        // as Unix tools do, instead of failing to print.
        // SAFETY: resetting a signal's disposition to the default touches no memory of ours.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Parsers of answers run on blocking threads; a few at a time is all licrenew needs,
        // and the unit's TasksMax= must hold.
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("licrenew: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async {
        match licrenew::cli::run(args).await {
            Ok(code) => code,
            Err(failure) => {
                eprintln!("licrenew: error: {failure}");
                failure.exit_code()
            }
        }
    });
    // A read abandoned at a stop may still wait on a silent server on a blocking thread: it
    // must not hold the exit (the outcome that matters is already recorded).
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}
