//! licrenew: keeps ISPsystem software licenses renewed through the BILLmanager API.
//!
//! # Layout
//! - [`catalog`], [`domain`]: products, periods and the license model; no I/O.
//! - [`config`]: the TOML config file and env overrides → validated [`config::Settings`].
//! - [`billmgr`]: the HTTP client, the XML parser and the dialect seam between API generations.
//! - [`privileges`]: a root command works as the database's owner.
//! - [`policy`]: policy files and the pure planner `evaluate(licenses, policies, journal, today)`.
//! - [`stop`]: reads abandoned the moment a stop is asked for.
//! - [`store`]: the SQLite state (licenses, renewal journal, cycles) and the process lock.
//! - [`page`]: the status page (HTML of the overview).
//! - [`overview`]: what an operator looks at (licenses, status, the status page), from the database.
//! - [`orders`]: manual orders and edits, journaled so a retry never buys twice.
//! - [`resolve`]: 5/6 list rows that name their tariff: catalog names, remembered forms, views.
//! - [`renew`]: the money-safe executor (re-read, intent, paid call, outcome) and reconciliation.
//! - [`daemon`]: one cycle (`run_once`) and the scheduled service (`run`).
//! - [`files`]: reading admin-supplied files (regular files only, size-capped).
//! - [`http`]: `/metrics` and `/healthz` behind a bounded listener.
//! - [`failpoint`]: crash points for tests, armed by `LICRENEW_FAILPOINT`.
//! - [`sim`]: a stateful BILLmanager simulator on loopback, for tests, benches and `demo`.
//! - [`telemetry`]: one tracing subscriber, JSON or pretty, on stderr.
//! - [`cli`]: clap definitions and one function per subcommand.

pub mod alerts;
pub mod billmgr;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod failpoint;
pub mod files;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod orders;
pub mod overview;
pub mod page;
pub mod pgtest;
pub mod policy;
pub mod privileges;
pub mod renew;
pub mod resolve;
pub mod sim;
pub mod stop;
pub mod store;
pub mod systemd;
pub mod telemetry;
