//! The one integration test binary: the client against a mock HTTP server, and the real
//! `licrenew` binary against the simulator on loopback with real SQLite files.

mod cli;
mod client;
mod daemon;
mod service;
mod sim_smoke;
mod support;
