//! The one integration test binary: the client against a mock HTTP server, and the real
//! `licrenew` binary against the simulator on loopback with real SQLite files.

mod alerts;
mod badinput;
mod bounds;
mod check;
mod cli;
mod client;
mod contrib;
mod crash;
mod daemon;
mod dbcopy;
mod failover;
mod faults;
mod fixtures;
mod journald;
mod leader;
mod ledger;
mod money_edges;
mod operator;
mod page;
mod real_shapes;
mod schema;
mod secrets;
mod service;
mod sim_smoke;
mod storage;
mod support;
mod xml_fuzz;
mod xml_gen;
