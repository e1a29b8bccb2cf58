//! Talking to systemd: `READY=1` once config, database and migrations are ready, `STATUS=`
//! with the last cycle's summary, `WATCHDOG=1` from the cycle loop itself, `STOPPING=1`.
//!
//! Every function is a no-op without `NOTIFY_SOCKET`. The watchdog is fed only by [`alive`],
//! which the loop and the cycle call as they make progress: a stuck cycle stops feeding it and
//! systemd restarts the service. Must not ping from a side timer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

static LAST_PING: Mutex<Option<Instant>> = Mutex::new(None);

fn send(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(event = "systemd", error = %e, "could not notify systemd");
    }
}

/// Makes the process non-dumpable (Linux `PR_SET_DUMPABLE` 0): no core file and no ptrace by
/// other users, whatever the unit's `LimitCORE=` says, since memory holds the password.
pub fn forbid_core_dumps() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        if r != 0 {
            tracing::warn!(event = "systemd", error = %std::io::Error::last_os_error(), "could not make the process non-dumpable");
        }
    }
}

/// Whether the process may dump core (false after [`forbid_core_dumps`]).
pub fn dumpable() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_DUMPABLE reads a flag and touches no memory of ours.
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

pub fn ready() {
    send(&[sd_notify::NotifyState::Ready]);
}

pub fn status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// The watchdog interval systemd asked for, if any.
pub fn watchdog() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Feeds the watchdog, at most once per quarter of its interval.
pub fn alive() {
    let Some(wd) = watchdog() else { return };
    let mut last = LAST_PING.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < wd / 4) {
        return;
    }
    *last = Some(Instant::now());
    drop(last);
    send(&[sd_notify::NotifyState::Watchdog]);
}
