//! Failpoints for crash tests: with `LICRENEW_FAILPOINT=NAME` in the environment, the process
//! aborts (as abruptly as `kill -9`, no destructors, no flush) when it reaches the point NAME.
//!
//! Points, in the order a renewal reaches them: `before-intent` (license re-read, intent row not
//! written), `after-intent` (intent committed, request not sent), `after-call` (answer received,
//! outcome not recorded), `after-outcome` (outcome committed, cycle not finished). Unset in
//! production; reading one variable costs nothing next to a network call.

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if std::env::var_os("LICRENEW_FAILPOINT").is_some_and(|v| v == name) {
        eprintln!("licrenew: failpoint {name} reached: aborting");
        std::process::abort();
    }
}
