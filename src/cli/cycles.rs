//! The cycles: renew, sync (one cycle now), run (the service), reload, and the simulator.

use super::print::*;
use super::{Args, Failure, connect, settings};
use crate::config;
use std::process::ExitCode;

pub(super) async fn sim(
    listen: std::net::SocketAddr,
    licenses: usize,
    seed: u64,
    username: &str,
    password: &str,
    api: &str,
) -> Result<ExitCode, Failure> {
    crate::telemetry::init(config::LogFormat::Json, "info");
    let cfg = crate::sim::SimConfig {
        licenses,
        seed,
        username: username.to_owned(),
        password: password.to_owned(),
        api: if api == "billmgr5" {
            crate::sim::SimApi::Billmgr5
        } else {
            crate::sim::SimApi::Billmgr4
        },
        ..crate::sim::SimConfig::default()
    };
    crate::sim::run_forever(listen, cfg)
        .await
        .map_err(|e| anyhow::anyhow!("simulator on {listen}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run(args: &Args) -> Result<ExitCode, Failure> {
    // An unreachable server at start is not fatal: the generation is detected before
    // the first cycle that reaches it.
    let (s, policies, _) = connect(args, false).await?;
    // A config that does not fit the database (another billing account) exits 78, so
    // systemd does not restart it in a loop (RestartPreventExitStatus=78).
    crate::daemon::run(s, policies).await.map_err(|e| {
        match e.downcast::<crate::config::ConfigError>() {
            Ok(c) => Failure::from(c),
            Err(e) => Failure::Other(e),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

// Sends SIGHUP to the service and waits until it recorded the reload's outcome.
pub(super) async fn reload(
    args: &Args,
    pid: i32,
    timeout: std::time::Duration,
) -> Result<ExitCode, Failure> {
    let s = settings(args)?;
    let store = crate::store::Store::connect(&s.database)
        .await
        .map_err(anyhow::Error::from)?;
    let before = crate::daemon::last_reload(&store)
        .await
        .map_err(anyhow::Error::from)?;
    // SAFETY: kill takes plain integers; a wrong pid is an error code, not undefined behavior.
    if pid <= 0 || unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        store.close().await;
        return Err(Failure::Other(anyhow::anyhow!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let deadline = std::time::Instant::now() + timeout;
    let outcome = loop {
        let now = crate::daemon::last_reload(&store)
            .await
            .map_err(anyhow::Error::from)?;
        if now.seq > before.seq {
            break Some(now);
        }
        if std::time::Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    store.close().await;
    match outcome {
        Some(o) if o.ok => {
            println!("reloaded");
            Ok(ExitCode::SUCCESS)
        }
        Some(o) => Err(Failure::Other(anyhow::anyhow!(
            "reload refused, the running config and policies are kept: {}",
            o.error.unwrap_or_default()
        ))),
        None => Err(Failure::Other(anyhow::anyhow!(
            "process {pid} recorded no reload within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// One cycle now: `sync`, `renew` or `renew --dry-run`.
pub(super) async fn cycle(
    args: &Args,
    mode: crate::daemon::Mode,
    no_wait: bool,
    all: bool,
) -> Result<ExitCode, Failure> {
    let (s, policies, client) = connect(args, false).await?;
    let ctx = crate::daemon::open_with(s, policies, client).await?;
    // A dry run pays nothing and never waits: it takes no lock.
    let _lock = if mode == crate::daemon::Mode::DryRun {
        None
    } else {
        Some(ctx.lock(!no_wait).await.map_err(anyhow::Error::from)?)
    };
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = crate::daemon::run_once(&ctx, mode, &stop)
        .await
        .map_err(anyhow::Error::from)?;
    // A dry run delivers nothing (as certbot's --dry-run runs no hook).
    if mode != crate::daemon::Mode::DryRun {
        ctx.deliver_once().await.map_err(anyhow::Error::from)?;
    }
    ctx.store.close().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        match mode {
            crate::daemon::Mode::DryRun => print_dry_run(&report, all),
            crate::daemon::Mode::Renew => print_events(&report.events),
            crate::daemon::Mode::Sync => {}
        }
        println!("{}", report.summary());
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
