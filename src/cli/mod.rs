//! The command line: clap definitions, and one function per subcommand in a file per group.
//!
//! Owns argument parsing, turning results into stdout output (a table, or JSON with `--json`)
//! and failures into exit codes: 0 ok, 1 API/transport/runtime failure, 2 usage, 78 config.
//! Must not hold business logic: it calls the library and prints.
//!
//! Layout: `mod.rs` (arguments, dispatch, settings), `ops.rs` (order, ip-check, edit,
//! prolong: the manual operations), `cycles.rs` (renew, sync, run, reload, sim, demo),
//! `views.rs` (licenses, history, check, catalog), `print.rs` (tables).

use crate::billmgr::{self, Client};

mod cycles;
mod ops;
mod print;
mod views;
use crate::catalog::{Catalog, Period, Product};
use crate::config::{self, ConfigError, Settings};
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
files decide what is renewed, a journal (SQLite, or PostgreSQL for a leader and standbys) makes sure nothing is paid twice, and every \
outcome is logged as one JSON line on stderr. Results go to stdout.",
    after_long_help = "FILES:
  /etc/licrenew/licrenew.toml     config (every key: /usr/share/doc/licrenew/examples/licrenew.example.toml)
  /etc/licrenew/policies.d/*.toml one renewal policy per product; no policy = never renewed
  /etc/licrenew/password          the password, when the config names none (the unit loads it
                                  as the credential \"password\"; a root shell reads it directly)
  /var/lib/licrenew/licrenew.db   state and renewal journal, the same for the service and a shell

ENVIRONMENT:
  LICRENEW_CONFIG                 config file when --config is not given
  LICRENEW__SECTION__KEY          overrides one config key, e.g. LICRENEW__RENEWAL__MAX_PER_CYCLE=5
  CREDENTIALS_DIRECTORY           systemd credentials; the password is read from its file \"password\"
                                  (else from \"password\" beside the config)
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
  SIGUSR1         run a cycle now (`systemctl kill -s USR1 licrenew`)
  SIGTERM/SIGINT  finish and record the renewal in flight, then exit 0"
)]
pub struct Args {
    /// Config file [default: $LICRENEW_CONFIG, else /etc/licrenew/licrenew.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Set from the command's own `--json` (offered only where a command prints a result).
    #[arg(skip)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// A long-running process (the service, the simulator, the demo), not a one-shot command.
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Run | Command::Sim { .. } | Command::Demo { .. }
        )
    }
}

/// `--json` of a command that prints a result.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct Output {
    /// Print the result as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the product/period catalog in effect (built-in, or the config's catalog.path)
    Catalog {
        #[command(flatten)]
        out: Output,
    },
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
        /// Fail at once instead of waiting for a running cycle to end
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Ask whether a license of a product/period can be bound to an IP
    IpCheck {
        #[arg(long)]
        product: String,
        #[arg(long)]
        period: String,
        #[arg(long)]
        ip: String,
        #[command(flatten)]
        out: Output,
    },
    /// Change a license's name and/or IP (an IP can change once per calendar month)
    Edit {
        /// License id (elid)
        elid: i64,
        #[arg(long)]
        licname: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// Fail at once instead of waiting for a running cycle to end
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        out: Output,
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
        /// Fail at once instead of waiting for a running cycle to end
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Show every license the database knows (--live asks the API), with days left, the date
    /// the plan renews it (or why not), its policy, autoprolong and IP
    Licenses {
        /// Read them straight from the API instead of the database
        #[arg(long)]
        live: bool,
        /// Only those expiring within this time (e.g. "7d"), past-due ones marked; with --live
        /// uses the server filter
        #[arg(long, value_parser = humantime::parse_duration)]
        expiring: Option<std::time::Duration>,
        #[command(flatten)]
        out: Output,
    },
    /// List the licenses expiring inside the window and record them in the database
    Sync {
        /// Fail at once instead of waiting for a running cycle to end
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Run one renewal cycle now (sync, reconcile, plan, renew); exit 1 if a renewal failed
    Renew {
        /// Print the plan and make no paid call (takes no lock, never waits, delivers no alert)
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: list every skipped license, not one line per reason
        #[arg(long, requires = "dry_run")]
        all: bool,
        /// Fail at once instead of waiting for a running cycle to end
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        out: Output,
    },
    /// The service, products, upcoming renewals and their cost, problems, recent outcomes
    /// (from the database; never waits for a running cycle)
    Status {
        #[command(flatten)]
        out: Output,
    },
    /// Show the renewal journal (newest first)
    History {
        /// Only this license
        #[arg(long)]
        elid: Option<i64>,
        /// At most this many rows
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        out: Output,
    },
    /// Validate config, catalog and policies; --online also logs in
    Check {
        #[arg(long)]
        online: bool,
        #[command(flatten)]
        out: Output,
    },
    /// Run the renewal service on the configured cron schedule until SIGTERM
    Run,
    /// Database maintenance
    #[command(subcommand)]
    Db(DbCommand),
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

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy licenses, journal, cycles, orders and alerts from a SQLite file into an empty
    /// PostgreSQL database, in one transaction, and verify the counts (stop the service
    /// first; the file is then marked as moved: nothing pays with it afterwards, read-only
    /// commands still read it)
    Copy {
        /// The SQLite database: a path or sqlite:///path
        #[arg(long, value_name = "URL")]
        from: String,
        /// The PostgreSQL database: postgres://user@host/db (must hold no licrenew data)
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(Box<ConfigError>),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Usage(String),
    /// Every problem `check` found, one per line.
    #[error("{}", .0.join("\n"))]
    Checks(Vec<String>),
    #[error("{0}")]
    Api(#[from] billmgr::Error),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Config(Box::new(e))
    }
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Config(_) | Failure::Policy(_) | Failure::Checks(_) => ExitCode::from(78),
            Failure::Usage(_) => ExitCode::from(2),
            // A missing password is a configuration problem.
            Failure::Api(e) if e.func == "init" => ExitCode::from(78),
            Failure::Api(_) | Failure::Other(_) => ExitCode::from(1),
        }
    }
}

/// Runs the parsed command line.
pub async fn run(mut args: Args) -> Result<ExitCode, Failure> {
    args.json = match &args.command {
        Command::Catalog { out }
        | Command::Status { out }
        | Command::Order { out, .. }
        | Command::IpCheck { out, .. }
        | Command::Edit { out, .. }
        | Command::Prolong { out, .. }
        | Command::Licenses { out, .. }
        | Command::Sync { out, .. }
        | Command::Renew { out, .. }
        | Command::History { out, .. }
        | Command::Check { out, .. } => out.json,
        Command::Run
        | Command::Reload { .. }
        | Command::Db(_)
        | Command::Demo { .. }
        | Command::Sim { .. } => false,
    };
    match &args.command {
        Command::Catalog { .. } => views::catalog(&args),
        Command::Sim {
            listen,
            licenses,
            seed,
            username,
            password,
            api,
        } => cycles::sim(*listen, *licenses, *seed, username, password, api).await,
        Command::Order {
            product,
            period,
            licname,
            ip,
            allow_duplicate,
            no_wait,
            ..
        } => {
            ops::order(
                &args,
                product,
                period,
                licname,
                ip,
                *allow_duplicate,
                *no_wait,
            )
            .await
        }
        Command::IpCheck {
            product,
            period,
            ip,
            ..
        } => ops::ip_check(&args, product, period, ip).await,
        Command::Edit {
            elid,
            licname,
            ip,
            no_wait,
            ..
        } => ops::edit(&args, *elid, licname.as_deref(), ip.as_deref(), *no_wait).await,
        Command::Prolong {
            elid,
            period,
            override_autoprolong,
            no_wait,
            ..
        } => ops::prolong(&args, *elid, period, *override_autoprolong, *no_wait).await,
        Command::Licenses { live, expiring, .. } => views::licenses(&args, *live, *expiring).await,
        Command::Sync { no_wait, .. } => {
            cycles::cycle(&args, crate::daemon::Mode::Sync, *no_wait, false).await
        }
        Command::Renew {
            dry_run,
            all,
            no_wait,
            ..
        } => {
            let mode = if *dry_run {
                crate::daemon::Mode::DryRun
            } else {
                crate::daemon::Mode::Renew
            };
            cycles::cycle(&args, mode, *no_wait, *all).await
        }
        Command::History { elid, limit, .. } => views::history(&args, *elid, *limit).await,
        Command::Check { online, .. } => views::check(&args, *online).await,
        Command::Status { .. } => views::status(&args).await,
        Command::Run => cycles::run(&args).await,
        Command::Db(DbCommand::Copy { from, to }) => views::db_copy(from, to).await,
        Command::Reload { pid, timeout } => cycles::reload(&args, *pid, *timeout).await,
        Command::Demo { licenses, every } => crate::demo::run(*licenses, *every)
            .await
            .map_err(Failure::Other),
    }
}

/// The policies, checked before any network call ([`crate::policy::load::load_offline`]).
pub(super) fn policies_offline(s: &Settings) -> Result<crate::policy::Policies, Failure> {
    Ok(crate::policy::load::load_offline(s)?)
}

/// Settings with the catalog of the API generation in use (detected under `api = "auto"`), the
/// policies loaded against it, and the client that asked. The policies are checked offline
/// first (a mistake exits 78 before any call). A failed detection fails the command when
/// `strict`; otherwise it is a warning and the cycle that follows records the failure.
pub(super) async fn connect(
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
            Err(e) => {
                tracing::warn!(event = "api_generation", error = %e, "could not detect the API generation")
            }
        }
    }
    Ok((s, policies, client))
}

pub(super) fn settings(args: &Args) -> Result<Settings, Failure> {
    let path = config::resolve_path(args.config.as_deref());
    let s = config::load(&path)?;
    crate::telemetry::init(s.log_format, &s.log_level);
    // Config and password are read: a root shell now works as the service's user, so the
    // database, its WAL and the lock stay that user's (one database for both).
    // (PostgreSQL: no local file to own.)
    if let Some(db) = s.database.sqlite_path() {
        match crate::privileges::become_database_owner(db) {
            Ok(Some(uid)) => {
                tracing::debug!(event = "privileges", uid, database = %db.display(), "working as the database's owner")
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Failure::Other(anyhow::anyhow!(
                    "cannot work as the owner of {}: {e}",
                    db.display()
                )));
            }
        }
    }
    if s.billmgr.insecure() {
        tracing::warn!(event = "config_warning", url = %s.billmgr.url, "billmgr.allow_insecure_http: the password crosses the network in clear");
    }
    for k in &s.ignored_env {
        tracing::warn!(event = "config_warning", variable = %k, "ignored: config overrides are spelled LICRENEW__SECTION__KEY, in upper case");
    }
    if s.renewal.settle < s.billmgr.timeout {
        // A renewal the client gave up on may still be applied until the server's own work
        // ends; judging it failed sooner invites a second payment.
        tracing::warn!(
            event = "config_warning",
            settle_ms = s.renewal.settle.as_millis() as u64,
            timeout_ms = s.billmgr.timeout.as_millis() as u64,
            "renewal.settle is shorter than billmgr.timeout: an unknown outcome could be judged failed while the server may still apply it"
        );
    }
    Ok(s)
}

/// The settings when a config file is given or exists at the default place; `None` otherwise.
pub(super) fn optional_settings(args: &Args) -> Result<Option<Settings>, Failure> {
    let path = config::resolve_path(args.config.as_deref());
    let explicit = args.config.is_some() || std::env::var_os("LICRENEW_CONFIG").is_some();
    if !explicit && !path.exists() {
        return Ok(None);
    }
    settings(args).map(Some)
}

pub(super) fn resolve<'c>(
    catalog: &'c Catalog,
    product: &str,
    period: &str,
) -> Result<(std::borrow::Cow<'c, Product>, Period), Failure> {
    catalog
        .period_for(product, period)
        .map_err(|e| Failure::Usage(e.to_string()))
}
