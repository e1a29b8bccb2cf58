//! Renewal policies and the planner: which license to renew, when, and for which period.
//!
//! Owns the policy files (`policies.d/*.toml`, one per product: parsing, validation against the
//! catalog, errors that name the file and line, the SHA-256 of each file for the journal) and
//! [`evaluate`], the pure function turning licenses + policies + journal + today into a
//! [`Plan`] of actions as data.
//!
//! Must not: do I/O beyond reading the policy folder it is pointed at ([`Policies::load_dir`]),
//! read the clock (`today` is a parameter), be async, or pay for anything. The plan only
//! proposes; the executor re-checks caps, fences and the license itself before it pays.
//!
//! Layout: [`load`] reads and validates policy files; [`plan`] is the planner.

pub mod load;
pub mod plan;

#[cfg(test)]
mod props;

pub use load::{DEFAULT_BEFORE, Policies, Policy, PolicyError, Rule};
pub use plan::{
    Action, ActionKind, GONE_CLASS, JournalEntry, JournalState, Plan, due_date, evaluate,
    is_renewal_period,
};
