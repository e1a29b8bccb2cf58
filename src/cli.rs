//! The command line: clap definitions and one function per subcommand.
//!
//! Owns argument parsing, turning results into stdout output (a table, or JSON with `--json`)
//! and failures into exit codes: 0 ok, 1 API/transport/runtime failure, 2 usage, 78 config.
//! Must not hold business logic: it calls the library and prints.

use crate::billmgr::{self, Client};
use crate::catalog::{Catalog, Period, Product};
use crate::config::{self, ConfigError, Settings};
use crate::domain::License;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "licrenew",
    version,
    about = "Keeps ISPsystem software licenses renewed through the BILLmanager API",
    long_about = "Keeps ISPsystem software licenses (ISPmanager, VDSmanager, BILLmanager, DSmanager, \
DNSmanager, IPmanager) renewed through the BILLmanager HTTP API, unattended: per-product policy \
files decide what is renewed, a journal in SQLite makes sure nothing is paid twice, and every \
outcome is logged as one JSON line on stderr. Results go to stdout.",
    after_long_help = "FILES:
  /etc/licrenew/licrenew.toml     config (every key: /usr/share/doc/licrenew/examples/licrenew.example.toml)
  /etc/licrenew/policies.d/*.toml one renewal policy per product; no policy = never renewed
  $STATE_DIRECTORY/licrenew.db    state and renewal journal (else beside the config file)

ENVIRONMENT:
  LICRENEW_CONFIG                 config file when --config is not given
  LICRENEW__SECTION__KEY          overrides one config key, e.g. LICRENEW__RENEWAL__MAX_PER_CYCLE=5
  CREDENTIALS_DIRECTORY           systemd credentials; the password is read from its file \"password\"
  RUST_LOG                        log filter, overrides [log] level

EXIT STATUS:
  0   success
  1   API or transport failure, a renewal that failed or whose outcome is unknown, or another
      process holding the database lock
  2   usage error (bad arguments, unknown or foreign period), refused before any call
  78  configuration or policy error (the message names the file, key and line)

SIGNALS (licrenew run):
  SIGHUP          re-read config and policies; keep the old ones if the new are invalid
                  (`licrenew reload --pid PID` sends it and waits for the verdict)
  SIGTERM/SIGINT  finish and record the renewal in flight, then exit 0"
)]
pub struct Args {
    /// Config file [default: $LICRENEW_CONFIG, else /etc/licrenew/licrenew.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print results as JSON instead of a table
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the product/period catalog in effect (built-in, or the config's catalog.path)
    Catalog,
    /// Order a new license (paid)
    Order {
        /// Product: catalog name, alias or price id
        #[arg(long)]
        product: String,
        /// Period: label ("1 month") or period id of that product
        #[arg(long)]
        period: String,
        /// License name
        #[arg(long)]
        licname: String,
        /// IP address the license is bound to
        #[arg(long)]
        ip: String,
        /// Order even when a license of this product already holds the IP (the IP is
        /// checked before paying otherwise)
        #[arg(long)]
        allow_duplicate: bool,
    },
    /// Ask whether a license of a product/period can be bound to an IP
    IpCheck {
        #[arg(long)]
        product: String,
        #[arg(long)]
        period: String,
        #[arg(long)]
        ip: String,
    },
    /// Change a license's name and/or IP (an IP can change once per calendar month)
    Edit {
        /// License id (elid)
        elid: i64,
        #[arg(long)]
        licname: Option<String>,
        #[arg(long)]
        ip: Option<String>,
    },
    /// Renew one license now for a period (paid)
    Prolong {
        /// License id (elid)
        elid: i64,
        /// Period: label or id; must belong to the license's product and not be a trial
        #[arg(long)]
        period: String,
        /// Renew even though the billing's own autoprolong is on (it may then charge as well)
        #[arg(long)]
        override_autoprolong: bool,
    },
    /// Show licenses (from the local database; --live asks the API)
    Licenses {
        /// Read them straight from the API instead of the database
        #[arg(long)]
        live: bool,
        /// Only those expiring within this time (e.g. "30d"); with --live uses the server filter
        #[arg(long, value_parser = humantime::parse_duration)]
        expiring: Option<std::time::Duration>,
    },
    /// List the licenses expiring inside the window and record them in the database
    Sync,
    /// Run one renewal cycle now (sync, reconcile, plan, renew); exit 1 if a renewal failed
    Renew {
        /// Print the plan and make no paid call
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the renewal journal (newest first)
    History {
        /// Only this license
        #[arg(long)]
        elid: Option<i64>,
        /// At most this many rows
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Validate config, catalog and policies; --online also logs in
    Check {
        #[arg(long)]
        online: bool,
    },
    /// Run the renewal service on the configured cron schedule until SIGTERM
    Run,
    /// Ask the running service to reload config and policies (SIGHUP) and wait for its
    /// verdict: exit 0 when taken, 1 when refused (the reason is printed). For ExecReload=.
    Reload {
        /// The service's process id (the unit passes $MAINPID)
        #[arg(long)]
        pid: i32,
        /// How long to wait for the verdict
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Try licrenew out: a built-in simulator, sample policies and a fast schedule (Ctrl-C ends it)
    Demo {
        /// Sample licenses in the simulated account
        #[arg(long, default_value_t = 30)]
        licenses: usize,
        /// Seconds between cycles
        #[arg(long, default_value_t = 10)]
        every: u32,
    },
    /// Run the BILLmanager simulator on loopback (for tests, benchmarks and trying licrenew out)
    Sim {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: std::net::SocketAddr,
        /// Sample licenses to generate
        #[arg(long, default_value_t = 50)]
        licenses: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "demo")]
        username: String,
        #[arg(
            long,
            default_value = "demo-password",
            env = "LICRENEW_SIM_PASSWORD",
            hide_env_values = true
        )]
        password: String,
        /// API generation to speak: billmgr4 or billmgr5
        #[arg(long, default_value = "billmgr4", value_parser = ["billmgr4", "billmgr5"])]
        api: String,
    },
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Api(#[from] billmgr::Error),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Config(_) | Failure::Policy(_) => ExitCode::from(78),
            Failure::Usage(_) => ExitCode::from(2),
            // A missing password is a configuration problem.
            Failure::Api(e) if e.func == "init" => ExitCode::from(78),
            Failure::Api(_) | Failure::Other(_) => ExitCode::from(1),
        }
    }
}

/// Runs the parsed command line.
pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    match &args.command {
        Command::Catalog => {
            let catalog = optional_settings(&args)?
                .map(|s| s.catalog_all)
                .unwrap_or_else(Catalog::builtin);
            print_catalog(&catalog, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim {
            listen,
            licenses,
            seed,
            username,
            password,
            api,
        } => {
            crate::telemetry::init(config::LogFormat::Json, "info");
            let cfg = crate::sim::SimConfig {
                licenses: *licenses,
                seed: *seed,
                username: username.clone(),
                password: password.clone(),
                api: if api == "billmgr5" {
                    crate::sim::SimApi::Billmgr5
                } else {
                    crate::sim::SimApi::Billmgr4
                },
                ..crate::sim::SimConfig::default()
            };
            crate::sim::run_forever(*listen, cfg)
                .await
                .map_err(|e| anyhow::anyhow!("simulator on {listen}: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Order {
            product,
            period,
            licname,
            ip,
            allow_duplicate,
        } => {
            let (s, _, client) = connect(&args, true).await?;
            let (prod, per) = resolve(&s.catalog, product, period)?;
            let (prod, per) = (prod.into_owned(), per.clone());
            let settle = s.renewal.settle;
            let (ctx, _lock) =
                crate::daemon::open_with(s, crate::policy::Policies::default(), client).await?;
            let req = crate::orders::OrderRequest {
                product: prod.price,
                product_name: &prod.name,
                period: per.id,
                licname,
                ip,
                allow_duplicate: *allow_duplicate,
            };
            let result = crate::orders::order(&ctx.client, &ctx.store, &req, settle).await;
            ctx.store.close().await;
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(event = "order", product = %prod.name, period = %per.label, licname = %licname,
                        ip = %ip, outcome = "failed", error = %e, "order not completed");
                    return Err(Failure::Other(anyhow::anyhow!("{e}")));
                }
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).unwrap_or_default()
                );
            }
            match outcome {
                crate::orders::OrderOutcome::Ordered { elid, operation } => {
                    tracing::info!(event = "order", product = %prod.name, period = %per.label, licname = %licname,
                        ip = %ip, elid, operation, outcome = "ok", "license ordered");
                    if !args.json {
                        match elid {
                            Some(id) => {
                                println!("ordered {} ({}) as license {id}", prod.name, per.label)
                            }
                            None => println!(
                                "ordered {} ({}); the answer named no id: see `licrenew licenses --live`",
                                prod.name, per.label
                            ),
                        }
                    }
                }
                crate::orders::OrderOutcome::AlreadyOrdered {
                    elid, ordered_at, ..
                } => {
                    if !args.json {
                        println!(
                            "an earlier order ({}) already created license {elid} ({licname} on {ip}); nothing ordered now",
                            ordered_at.format("%Y-%m-%d %H:%M:%S UTC")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::IpCheck {
            product,
            period,
            ip,
        } => {
            let (s, _, client) = connect(&args, true).await?;
            let (prod, per) = resolve(&s.catalog, product, period)?;
            match client.check_ip(prod.price, per.id, ip).await {
                Ok(check) => {
                    if args.json {
                        let fields: serde_json::Map<_, _> = check
                            .fields
                            .into_iter()
                            .filter(|(k, _)| {
                                !matches!(
                                    k.as_str(),
                                    "authinfo" | "auth" | "password" | "lickey" | "username"
                                )
                            })
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect();
                        println!(
                            "{}",
                            serde_json::json!({"ip": ip, "available": true, "fields": fields})
                        );
                    } else {
                        println!("{ip}: available for {} ({})", prod.name, per.label);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.api().is_some() && !e.is_auth() && !e.is_access() => {
                    // The server refused the combination: that is the answer, and a failure.
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({"ip": ip, "available": false, "error": e.api()})
                        );
                    } else {
                        println!("{ip}: not available: {}", e.kind);
                    }
                    Err(Failure::Api(e))
                }
                Err(e) => Err(Failure::Api(e)),
            }
        }
        Command::Edit { elid, licname, ip } => {
            if licname.is_none() && ip.is_none() {
                return Err(Failure::Usage("edit needs --licname and/or --ip".into()));
            }
            let s = settings(&args)?;
            crate::billmgr::Client::new(&s.billmgr)?;
            let (ctx, _lock) = crate::daemon::open(s, crate::policy::Policies::default()).await?;
            let result = crate::orders::edit(
                &ctx.client,
                &ctx.store,
                *elid,
                licname.as_deref(),
                ip.as_deref(),
            )
            .await;
            ctx.store.close().await;
            let edited = result.map_err(|e| {
                tracing::warn!(event = "edit", elid, outcome = "failed", error = %e, "license not changed");
                Failure::Other(anyhow::anyhow!("{e}"))
            })?;
            tracing::info!(
                event = "edit",
                elid,
                licname = licname.as_deref(),
                ip = ip.as_deref(),
                operation = edited.operation,
                outcome = "ok",
                "license changed"
            );
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"elid": elid, "outcome": "ok", "licname": licname, "ip": ip})
                );
            } else {
                println!("license {elid} changed");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prolong {
            elid,
            period,
            override_autoprolong,
        } => prolong(&args, *elid, period, *override_autoprolong).await,
        Command::Licenses { live, expiring } => {
            let s = settings(&args)?;
            if !live {
                let store = crate::store::Store::open(&s.database)
                    .await
                    .map_err(anyhow::Error::from)?;
                let today = chrono::Utc::now().date_naive();
                let horizon =
                    expiring.map(|d| today + chrono::Duration::from_std(d).unwrap_or_default());
                let rows: Vec<_> = store
                    .licenses()
                    .await
                    .map_err(anyhow::Error::from)?
                    .into_iter()
                    .filter(|l| horizon.is_none_or(|h| l.expiry <= h))
                    .collect();
                store.close().await;
                print_stored(&s.catalog, &rows, args.json);
                return Ok(ExitCode::SUCCESS);
            }
            drop(s);
            let (s, _, client) = connect(&args, true).await?;
            let window = expiring.map(|d| {
                let today = chrono::Utc::now().date_naive();
                let back = chrono::Duration::from_std(s.schedule.lookback).unwrap_or_default();
                let fwd = chrono::Duration::from_std(d).unwrap_or_default();
                (today - back, today + fwd)
            });
            let mut listing = client.list(window).await?;
            let unresolved = std::mem::take(&mut listing.unresolved);
            let resolved = crate::resolve::resolve(
                None,
                &client,
                &s.catalog,
                &std::collections::HashMap::new(),
                unresolved,
            )
            .await?;
            listing.licenses.extend(resolved.licenses);
            for bad in &resolved.bad {
                tracing::warn!(row = %bad, "skipped a license row that does not parse");
            }
            print_licenses(&s.catalog, &listing.licenses, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync => cycle(&args, crate::daemon::Mode::Sync).await,
        Command::Renew { dry_run } => {
            let mode = if *dry_run {
                crate::daemon::Mode::DryRun
            } else {
                crate::daemon::Mode::Renew
            };
            cycle(&args, mode).await
        }
        Command::History { elid, limit } => {
            let s = settings(&args)?;
            let store = crate::store::Store::open(&s.database)
                .await
                .map_err(anyhow::Error::from)?;
            let rows = store
                .history(*elid, *limit)
                .await
                .map_err(anyhow::Error::from)?;
            let ops = store
                .operations(*elid, *limit)
                .await
                .map_err(anyhow::Error::from)?;
            store.close().await;
            print_history(&s.catalog, &rows, &ops, *limit as usize, args.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { online } => check(&args, *online).await,
        Command::Run => {
            // An unreachable server at start is not fatal: the generation is detected before
            // the first cycle that reaches it.
            let (s, policies, _) = connect(&args, false).await?;
            crate::daemon::run(s, policies).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { pid, timeout } => reload(&args, *pid, *timeout).await,
        Command::Demo { licenses, every } => crate::demo::run(*licenses, *every)
            .await
            .map_err(Failure::Other),
    }
}

/// Sends SIGHUP to the service and waits until it recorded the reload's outcome.
async fn reload(args: &Args, pid: i32, timeout: std::time::Duration) -> Result<ExitCode, Failure> {
    let s = settings(args)?;
    let store = crate::store::Store::open(&s.database)
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
async fn cycle(args: &Args, mode: crate::daemon::Mode) -> Result<ExitCode, Failure> {
    let (s, policies, client) = connect(args, false).await?;
    let (ctx, _lock) = crate::daemon::open_with(s, policies, client).await?;
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = crate::daemon::run_once(&ctx, mode, &stop)
        .await
        .map_err(anyhow::Error::from)?;
    crate::alerts::deliver_once(&ctx.store, &ctx.settings.alerts)
        .await
        .map_err(anyhow::Error::from)?;
    ctx.store.close().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        if mode != crate::daemon::Mode::Sync {
            print_events(&report.events);
        }
        println!("{}", report.summary());
    }
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Renews one license by hand, through the same journal and fences as the daemon.
async fn prolong(
    args: &Args,
    elid: i64,
    period: &str,
    override_autoprolong: bool,
) -> Result<ExitCode, Failure> {
    let (s, policies, client) = connect(args, true).await?;
    let (ctx, _lock) = crate::daemon::open_with(s, policies, client).await?;
    let cycle = ctx
        .store
        .begin_cycle("prolong", chrono::Utc::now())
        .await
        .map_err(anyhow::Error::from)?;
    let exec = crate::renew::Executor {
        client: &ctx.client,
        store: &ctx.store,
        catalog: &ctx.settings.catalog,
        settle: ctx.settings.renewal.settle,
        max_per_cycle: 1,
        cycle: Some(cycle),
        source: "manual",
        stop: None,
    };
    let mut counts = crate::store::CycleCounts::default();
    // An earlier renewal of this license whose outcome is open (an interrupted `prolong`, a
    // timed-out cycle) is settled first; if it landed, this command has done its job and
    // pays nothing (issue 10.4). Only a later, separate `prolong` extends further.
    let end = |counts: crate::store::CycleCounts, outcome: &'static str, error: Option<String>| {
        let store = ctx.store.clone();
        async move {
            store
                .end_cycle(
                    cycle,
                    &counts,
                    outcome,
                    error.as_deref(),
                    chrono::Utc::now(),
                )
                .await
                .map_err(anyhow::Error::from)
        }
    };
    for row in ctx
        .store
        .open_renewals()
        .await
        .map_err(anyhow::Error::from)?
        .into_iter()
        .filter(|r| r.elid == elid)
    {
        let ev = match exec.reconcile(&row).await {
            Ok(ev) => ev,
            Err(e) => {
                end(counts, "failed", Some(e.to_string())).await?;
                return Err(Failure::Other(anyhow::anyhow!("{e}")));
            }
        };
        ev.emit(Some(cycle));
        counts.reconciled += 1;
        match ev.outcome {
            crate::renew::Outcome::ReconciledOk => {
                end(counts, "ok", None).await?;
                let new = ev
                    .new_expiry
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into());
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&ev).unwrap_or_default());
                } else {
                    println!(
                        "the earlier renewal of {elid} landed: {} → {new}; nothing paid now",
                        row.expiry_before
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            crate::renew::Outcome::ReconciledFailed => {}
            _ => {
                end(counts, "failed", Some("earlier renewal unsettled".into())).await?;
                return Err(Failure::Other(anyhow::anyhow!(
                    "license {elid}: an earlier renewal's outcome is still unknown ({}); not paying again until it settles",
                    ev.reason.unwrap_or_default()
                )));
            }
        }
    }
    let checked = async {
        let lic = ctx.client.view(elid).await?;
        let prod = ctx
            .settings
            .catalog
            .product_for(lic.product)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "license {elid} is of product {} which the catalog does not know",
                    lic.product
                ))
            })?;
        let (_, per) = resolve(&ctx.settings.catalog, &prod.price.to_string(), period)?;
        if per.kind.is_trial() {
            return Err(Failure::Usage(format!(
                "{} is a trial period: trials cannot be renewed",
                per.label
            )));
        }
        if lic.autoprolong && !override_autoprolong {
            return Err(Failure::Usage(format!(
                "license {elid} has the billing's own autoprolong on: renewing it here too may pay twice \
                 (turn autoprolong off, or pass --override-autoprolong)"
            )));
        }
        Ok((lic, per))
    }
    .await;
    let (lic, per) = match checked {
        Ok(x) => x,
        Err(f) => {
            end(counts, "failed", Some(f.to_string())).await?;
            return Err(f);
        }
    };
    let per_id = per.id;
    let action = crate::policy::Action {
        license: lic,
        kind: crate::policy::ActionKind::Renew,
        reason: Some("manual".into()),
        period: Some(per_id),
        policy_file: None,
        policy_hash: None,
        due: None,
    };
    let result = exec.renew(&action).await;
    let (ev, outcome) = match result {
        Ok(ev) => {
            let o = if ev.outcome == crate::renew::Outcome::Ok {
                "ok"
            } else {
                "failed"
            };
            (ev, o)
        }
        Err(e) => {
            ctx.store
                .end_cycle(
                    cycle,
                    &counts,
                    "auth_failed",
                    Some(&e.to_string()),
                    chrono::Utc::now(),
                )
                .await
                .map_err(anyhow::Error::from)?;
            return Err(Failure::Other(anyhow::anyhow!("{e}")));
        }
    };
    ev.emit(Some(cycle));
    match ev.outcome {
        crate::renew::Outcome::Ok => counts.renewed += 1,
        crate::renew::Outcome::Error => counts.failed += 1,
        crate::renew::Outcome::Unknown => counts.unknown += 1,
        _ => counts.skipped += 1,
    }
    ctx.store
        .end_cycle(
            cycle,
            &counts,
            outcome,
            ev.error_msg.as_deref(),
            chrono::Utc::now(),
        )
        .await
        .map_err(anyhow::Error::from)?;
    ctx.store
        .set_decision(
            elid,
            ev.outcome.as_str(),
            ev.reason.as_deref(),
            chrono::Utc::now(),
        )
        .await
        .map_err(anyhow::Error::from)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ev).unwrap_or_default());
    } else {
        print_events(std::slice::from_ref(&ev));
    }
    match ev.outcome {
        crate::renew::Outcome::Ok => Ok(ExitCode::SUCCESS),
        crate::renew::Outcome::Error => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: renewal refused: type={} object={} {}",
            ev.error_type.as_deref().unwrap_or("-"),
            ev.error_object.as_deref().unwrap_or("-"),
            ev.error_msg.as_deref().unwrap_or("")
        ))),
        crate::renew::Outcome::Unknown => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: the renewal's outcome is unknown ({}); it will be reconciled by re-reading the license, never resent blindly",
            ev.error_msg.as_deref().unwrap_or("")
        ))),
        _ => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: not renewed: {}",
            ev.reason.as_deref().unwrap_or("")
        ))),
    }
}

/// Validates config, catalog and policies; with `online`, logs in once.
async fn check(args: &Args, online: bool) -> Result<ExitCode, Failure> {
    let (s, policies, client) = if online {
        let (s, p, c) = connect(args, true).await?;
        (s, p, Some(c))
    } else {
        let s = settings(args)?;
        let p = policies_offline(&s)?;
        (s, p, None)
    };
    println!("config     {}: ok", s.file.display());
    println!("api        {} at {}", s.api_label(), s.billmgr.url);
    println!(
        "process    {}",
        if crate::systemd::dumpable() {
            "core dumps possible (could not make the process non-dumpable)"
        } else {
            "non-dumpable: no core file, no ptrace"
        }
    );
    if s.billmgr.insecure() {
        println!(
            "warning    {} is plain http:// to another host: the password crosses the network in clear (billmgr.allow_insecure_http)",
            s.billmgr.url
        );
    }
    println!("database   {}", s.database.display());
    println!("catalog    {} products", s.catalog.products.len());
    println!(
        "schedule   {} (UTC), window {}",
        s.schedule.cron,
        humantime::format_duration(s.schedule.window)
    );
    if policies.is_empty() {
        println!(
            "policies   {}: none; nothing will be renewed",
            s.policies_dir.display()
        );
        tracing::warn!(dir = %s.policies_dir.display(), "no policy files: licrenew will renew nothing");
    }
    for p in policies.iter() {
        let period = p
            .period
            .map(|id| s.catalog.period_label(p.product, id))
            .unwrap_or_else(|| "-".into());
        println!(
            "policy     {}: {} renew={} period={} before={}",
            p.file.display(),
            p.product_name,
            p.renew,
            period,
            humantime::format_duration(p.before)
        );
    }
    for p in policies.ignored() {
        println!(
            "ignored    {}: not a policy (only *.toml files are read)",
            p.display()
        );
    }
    if s.billmgr.password.is_none() {
        return Err(Failure::Config(ConfigError::new(
            &s.file,
            Some("billmgr.password"),
            "no password: set billmgr.password, billmgr.password_file or a systemd credential named \"password\"",
        )));
    }
    if let Some(client) = client {
        client.check_login().await?;
        println!("login      {} at {}: ok", s.billmgr.username, s.billmgr.url);
        // Licenses the billing renews by itself that a policy would renew too: one of the two
        // should go, or the account pays twice (licrenew skips them unless overridden).
        let listing = client.list(None).await?;
        let mut both = 0;
        for l in listing.licenses.iter().filter(|l| l.autoprolong) {
            let Some(p) = policies.for_product(l.product) else {
                continue;
            };
            if !p.rule_for(l).renew {
                continue;
            }
            both += 1;
            let what = if p.override_autoprolong {
                "override_autoprolong = true: licrenew renews it too, the account may pay twice"
            } else {
                "skipped by licrenew while autoprolong is on"
            };
            println!(
                "warning    license {} ({}): server-side autoprolong is on and {} renews it: {what}",
                l.elid,
                l.licname,
                p.file.display()
            );
            tracing::warn!(elid = l.elid, licname = %l.licname, policy = %p.file.display(),
                override_autoprolong = p.override_autoprolong, "license covered by both autoprolong and a renew policy");
        }
        println!(
            "licenses   {} listed, {both} covered by both autoprolong and a renew policy",
            listing.licenses.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The policies, checked before any network call: against the catalog of the pinned
/// generation, or under `api = "auto"` against either (they name products the same way in
/// both; an error is one under both).
fn policies_offline(s: &Settings) -> Result<crate::policy::Policies, Failure> {
    use crate::policy::Policies;
    if s.billmgr.api.is_some() {
        return Ok(Policies::load_dir(&s.policies_dir, &s.catalog)?);
    }
    let v5 = s.catalog_all.for_api(config::Api::Billmgr5);
    let v4 = s.catalog_all.for_api(config::Api::Billmgr4);
    match Policies::load_dir(&s.policies_dir, &v5) {
        Ok(p) => Ok(p),
        Err(e5) => Policies::load_dir(&s.policies_dir, &v4).map_err(|_| Failure::Policy(e5)),
    }
}

/// Settings with the catalog of the API generation in use (detected under `api = "auto"`), the
/// policies loaded against it, and the client that asked. The policies are checked offline
/// first (a mistake exits 78 before any call). A failed detection fails the command when
/// `strict`; otherwise it is a warning and the cycle that follows records the failure.
async fn connect(
    args: &Args,
    strict: bool,
) -> Result<(Settings, crate::policy::Policies, Client), Failure> {
    let mut s = settings(args)?;
    let mut policies = policies_offline(&s)?;
    let client = Client::new(&s.billmgr)?;
    if s.billmgr.api.is_none() {
        match client.generation().await {
            Ok(d) => {
                s.use_generation(d.api());
                policies = crate::policy::Policies::load_dir(&s.policies_dir, &s.catalog)?;
            }
            Err(e) if strict => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "could not detect the API generation"),
        }
    }
    Ok((s, policies, client))
}

fn settings(args: &Args) -> Result<Settings, Failure> {
    let path = config::resolve_path(args.config.as_deref());
    let s = config::load(&path)?;
    crate::telemetry::init(s.log_format, &s.log_level);
    if s.billmgr.insecure() {
        tracing::warn!(url = %s.billmgr.url, "billmgr.allow_insecure_http: the password crosses the network in clear");
    }
    for k in &s.ignored_env {
        tracing::warn!(variable = %k, "ignored: config overrides are spelled LICRENEW__SECTION__KEY, in upper case");
    }
    if s.renewal.settle < s.billmgr.timeout {
        // A renewal the client gave up on may still be applied until the server's own work
        // ends; judging it failed sooner invites a second payment.
        tracing::warn!(settle = ?s.renewal.settle, timeout = ?s.billmgr.timeout,
            "renewal.settle is shorter than billmgr.timeout: an unknown outcome could be judged failed while the server may still apply it");
    }
    Ok(s)
}

/// The settings when a config file is given or exists at the default place; `None` otherwise.
fn optional_settings(args: &Args) -> Result<Option<Settings>, Failure> {
    let path = config::resolve_path(args.config.as_deref());
    let explicit = args.config.is_some() || std::env::var_os("LICRENEW_CONFIG").is_some();
    if !explicit && !path.exists() {
        return Ok(None);
    }
    settings(args).map(Some)
}

fn resolve<'c>(
    catalog: &'c Catalog,
    product: &str,
    period: &str,
) -> Result<(std::borrow::Cow<'c, Product>, Period), Failure> {
    catalog
        .period_for(product, period)
        .map_err(|e| Failure::Usage(e.to_string()))
}

fn print_catalog(catalog: &Catalog, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(catalog).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![vec![
        "API".to_owned(),
        "PRODUCT".into(),
        "PRICE".into(),
        "PERIOD".into(),
        "LABEL".into(),
        "KIND".into(),
    ]];
    for p in &catalog.products {
        for per in &p.periods {
            rows.push(vec![
                p.generation.as_str().to_owned(),
                p.name.clone(),
                p.price.to_string(),
                per.id.to_string(),
                per.label.clone(),
                per.kind.describe(),
            ]);
        }
    }
    print_table(&rows);
}

fn print_licenses(catalog: &Catalog, licenses: &[License], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(licenses).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "IP".into(),
        "PRODUCT".into(),
        "PERIOD".into(),
        "EXPIRES".into(),
        "STATUS".into(),
    ]];
    for l in licenses {
        let product = catalog.product_name(l.product);
        let period = l
            .period
            .map(|id| catalog.period_label(l.product, id))
            .unwrap_or_default();
        rows.push(vec![
            l.elid.to_string(),
            l.licname.clone(),
            l.ip.clone(),
            product,
            period,
            l.expiry.to_string(),
            l.status.to_string(),
        ]);
    }
    print_table(&rows);
    println!("{} license(s)", licenses.len());
}

/// Left-aligned columns separated by two spaces.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_stored(catalog: &Catalog, rows: &[crate::store::StoredLicense], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    let mut t = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "PRODUCT".into(),
        "EXPIRES".into(),
        "STATUS".into(),
        "LAST OUTCOME".into(),
        "REASON".into(),
    ]];
    for l in rows {
        let mut status = l.to_license().status.to_string();
        if l.gone_since.is_some() {
            status.push_str(" (gone)");
        }
        t.push(vec![
            l.elid.to_string(),
            l.licname.clone(),
            catalog.product_name(l.product),
            l.expiry.to_string(),
            status,
            l.last_outcome.clone().unwrap_or_default(),
            l.last_reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&t);
    println!("{} license(s)", rows.len());
}

/// One line of `history`: a renewal, an order or an edit.
#[derive(serde::Serialize)]
struct HistoryItem<'a> {
    kind: &'static str,
    #[serde(flatten)]
    renewal: Option<&'a crate::store::JournalRow>,
    #[serde(flatten)]
    operation: Option<&'a crate::store::OperationRow>,
}

impl HistoryItem<'_> {
    fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.renewal
            .map(|r| r.created_at)
            .or(self.operation.map(|o| o.created_at))
            .unwrap_or_default()
    }
}

fn print_history(
    catalog: &Catalog,
    rows: &[crate::store::JournalRow],
    ops: &[crate::store::OperationRow],
    limit: usize,
    json: bool,
) {
    let mut items: Vec<HistoryItem> = rows
        .iter()
        .map(|r| HistoryItem {
            kind: "renewal",
            renewal: Some(r),
            operation: None,
        })
        .chain(ops.iter().map(|o| HistoryItem {
            kind: if o.kind == "order" { "order" } else { "edit" },
            renewal: None,
            operation: Some(o),
        }))
        .collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.created_at()));
    items.truncate(limit);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return;
    }
    let error_of = |t: &Option<String>, c: &Option<String>, m: &Option<String>| match (t, c, m) {
        (Some(t), _, m) => format!("{t}: {}", m.as_deref().unwrap_or("")),
        (None, Some(c), m) => format!("{c}: {}", m.as_deref().unwrap_or("")),
        (None, None, Some(m)) => m.clone(),
        _ => String::new(),
    };
    let mut t = vec![vec![
        "KIND".to_owned(),
        "ID".into(),
        "WHEN (UTC)".into(),
        "ELID".into(),
        "LICNAME".into(),
        "PERIOD".into(),
        "EXPIRY BEFORE".into(),
        "STATE".into(),
        "NEW EXPIRY / IP".into(),
        "ERROR".into(),
    ]];
    for item in &items {
        if let Some(r) = item.renewal {
            t.push(vec![
                item.kind.to_owned(),
                r.id.to_string(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.elid.to_string(),
                r.licname.clone(),
                catalog.period_label(r.product, r.period),
                r.expiry_before.to_string(),
                r.state.clone(),
                r.new_expiry.map(|d| d.to_string()).unwrap_or_default(),
                error_of(&r.error_type, &r.error_class, &r.error_msg),
            ]);
        } else if let Some(o) = item.operation {
            let period = match (o.product, o.period) {
                (Some(p), Some(per)) => catalog.period_label(p, per),
                _ => String::new(),
            };
            t.push(vec![
                item.kind.to_owned(),
                o.id.to_string(),
                o.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                o.elid.map(|e| e.to_string()).unwrap_or_default(),
                o.licname.clone().unwrap_or_default(),
                period,
                String::new(),
                o.state.clone(),
                o.ip.clone().unwrap_or_default(),
                error_of(&o.error_type, &o.error_class, &o.error_msg),
            ]);
        }
    }
    print_table(&t);
}

fn print_events(events: &[crate::renew::Event]) {
    if events.is_empty() {
        return;
    }
    let mut t = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "PRODUCT".into(),
        "EXPIRES".into(),
        "OUTCOME".into(),
        "PERIOD".into(),
        "DETAIL".into(),
    ]];
    for e in events {
        let detail = match (&e.reason, &e.error_type) {
            (_, Some(t)) => format!(
                "{t} {}: {}",
                e.error_object.as_deref().unwrap_or(""),
                e.error_msg.as_deref().unwrap_or("")
            ),
            (Some(r), None) => r.clone(),
            (None, None) => e
                .new_expiry
                .map(|d| format!("new expiry {d}"))
                .unwrap_or_default(),
        };
        t.push(vec![
            e.elid.to_string(),
            e.licname.clone(),
            e.product.clone(),
            e.expiry.to_string(),
            e.outcome.as_str().to_owned(),
            e.period.clone().unwrap_or_default(),
            detail,
        ]);
    }
    print_table(&t);
}
