//! licrenew: keeps ISPsystem software licenses renewed through the BILLmanager API.
//!
//! # Layout
//! - [`catalog`], [`domain`]: products, periods and the license model; no I/O.
//! - [`config`]: the TOML config file and env overrides → validated [`config::Settings`].
//! - [`billmgr`]: the HTTP client, the XML parser and the dialect seam between API generations.
//! - [`sim`]: a stateful BILLmanager simulator on loopback, for tests, benches and `demo`.
//! - [`telemetry`]: one tracing subscriber, JSON or pretty, on stderr.
//! - [`cli`]: clap definitions and one function per subcommand.

pub mod billmgr;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod domain;
pub mod sim;
pub mod telemetry;
