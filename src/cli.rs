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
    about = "Keeps ISPsystem software licenses renewed through the BILLmanager API"
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
    },
    /// Show licenses
    Licenses {
        /// Read them straight from the API
        #[arg(long)]
        live: bool,
        /// Only those expiring within this time (e.g. "30d"); with --live uses the server filter
        #[arg(long, value_parser = humantime::parse_duration)]
        expiring: Option<std::time::Duration>,
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
    },
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Config(#[from] ConfigError),
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
            Failure::Config(_) => ExitCode::from(78),
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
                .map(|s| s.catalog)
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
        } => {
            crate::telemetry::init(config::LogFormat::Json, "info");
            let cfg = crate::sim::SimConfig {
                licenses: *licenses,
                seed: *seed,
                username: username.clone(),
                password: password.clone(),
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
        } => {
            let s = settings(&args)?;
            let (prod, per) = resolve(&s.catalog, product, period)?;
            let client = Client::new(&s.billmgr)?;
            let id = client.order(prod.price, per.id, licname, ip).await?;
            tracing::info!(event = "order", product = %prod.name, period = %per.label, licname = %licname, elid = id, outcome = "ok", "license ordered");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"outcome": "ok", "elid": id, "product": prod.name, "period": per.label})
                );
            } else {
                match id {
                    Some(id) => println!("ordered {} ({}) as license {id}", prod.name, per.label),
                    None => println!(
                        "ordered {} ({}); the answer named no id: see `licrenew licenses --live`",
                        prod.name, per.label
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::IpCheck {
            product,
            period,
            ip,
        } => {
            let s = settings(&args)?;
            let (prod, per) = resolve(&s.catalog, product, period)?;
            let client = Client::new(&s.billmgr)?;
            match client.check_ip(prod.price, per.id, ip).await {
                Ok(check) => {
                    if args.json {
                        let fields: serde_json::Map<_, _> = check
                            .fields
                            .into_iter()
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
            let client = Client::new(&s.billmgr)?;
            client
                .edit(*elid, licname.as_deref(), ip.as_deref())
                .await?;
            tracing::info!(
                event = "edit",
                elid,
                licname = licname.as_deref(),
                ip = ip.as_deref(),
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
        Command::Prolong { elid, period } => {
            let s = settings(&args)?;
            let client = Client::new(&s.billmgr)?;
            let lic = client.view(*elid).await?;
            let prod = s.catalog.by_price(lic.product).ok_or_else(|| {
                Failure::Usage(format!(
                    "license {elid} is of product {} which the catalog does not know",
                    lic.product
                ))
            })?;
            let (prod, per) = resolve(&s.catalog, &prod.price.to_string(), period)?;
            if per.kind.is_trial() {
                return Err(Failure::Usage(format!(
                    "{} is a trial period: trials cannot be renewed",
                    per.label
                )));
            }
            let ans = client.renew(*elid, per.id).await?;
            tracing::info!(event = "renewal", elid, licname = %lic.licname, product = %prod.name, period = %per.label, outcome = "ok", "license renewed by hand");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"elid": elid, "outcome": "ok", "period": per.label, "expiry_before": lic.expiry, "new_expiry": ans.new_expiry})
                );
            } else {
                println!(
                    "license {elid} renewed for {} (expiry was {})",
                    per.label, lic.expiry
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Licenses { live, expiring } => {
            if !live {
                return Err(Failure::Usage(
                    "licenses are read from the API with --live (the local database arrives with the renewal daemon)".into(),
                ));
            }
            let s = settings(&args)?;
            let client = Client::new(&s.billmgr)?;
            let window = expiring.map(|d| {
                let today = chrono::Utc::now().date_naive();
                let back = chrono::Duration::from_std(s.schedule.lookback).unwrap_or_default();
                let fwd = chrono::Duration::from_std(d).unwrap_or_default();
                (today - back, today + fwd)
            });
            let listing = client.list(window).await?;
            print_licenses(&s.catalog, &listing.licenses, args.json);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn settings(args: &Args) -> Result<Settings, Failure> {
    let path = config::resolve_path(args.config.as_deref());
    let s = config::load(&path)?;
    crate::telemetry::init(s.log_format, &s.log_level);
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
) -> Result<(&'c Product, &'c Period), Failure> {
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
        "PRODUCT".to_owned(),
        "PRICE".into(),
        "PERIOD".into(),
        "LABEL".into(),
        "KIND".into(),
    ]];
    for p in &catalog.products {
        for per in &p.periods {
            rows.push(vec![
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
        let product = catalog
            .by_price(l.product)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| l.product.to_string());
        let period = l
            .period
            .map(|id| {
                catalog
                    .by_period(id)
                    .map(|(_, p)| p.label.clone())
                    .unwrap_or_else(|| id.to_string())
            })
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
