//! The money invariants the reliability tests (crash, faults, bad input, secrets) assert after
//! every scenario: the simulator's ledger of paid calls against licrenew's journal.
//!
//! - no double renewal: the simulator applied at most one renewal per (license, expiry);
//! - no lost outcome: every renewal the simulator applied has a journal row for that
//!   (license, expiry) that says it was bought, and no row claims a purchase that did not land;
//! - no corruption: `PRAGMA integrity_check` answers `ok`;
//! - no leak: no file in the test folder holds the password, no request URL carries credentials.

use crate::support::Env;
use chrono::NaiveDate;
use licrenew::store::{JournalRow, Store};
use std::process::Output;
use std::time::Duration;

/// The journal rows (oldest first) and the integrity check of the database at `path`.
pub async fn read_db(path: &std::path::Path) -> (Vec<JournalRow>, String) {
    assert!(path.exists(), "no database at {}", path.display());
    let store = Store::open(path).await.expect("database opens");
    let mut rows = store.history(None, 100_000).await.expect("journal");
    rows.reverse();
    let integrity = store.integrity_check().await.expect("integrity check");
    store.close().await;
    (rows, integrity)
}

/// The journal rows (oldest first) and the integrity check of the Env's database (SQLite
/// file or PostgreSQL).
pub async fn read_env_db(env: &Env) -> (Vec<JournalRow>, String) {
    if env.pg.is_none() {
        return read_db(&env.path("licrenew.db")).await;
    }
    assert!(
        !env.path("licrenew.db").exists(),
        "a test on PostgreSQL left a SQLite file: the config did not reach the binary"
    );
    let store = Store::connect(&env.database())
        .await
        .expect("database opens");
    let mut rows = store.history(None, 100_000).await.expect("journal");
    rows.reverse();
    let integrity = store.integrity_check().await.expect("integrity check");
    store.close().await;
    (rows, integrity)
}

/// The journal of the Env's default database.
pub async fn journal(env: &Env) -> Vec<JournalRow> {
    read_env_db(env).await.0
}

/// Asserts every money invariant against the database at `db`, and that each license of `due`
/// (elid, expiry before the scenario) was extended exactly once, by one month.
pub async fn assert_invariants_at(env: &Env, db: &std::path::Path, due: &[(i64, NaiveDate)]) {
    let (rows, integrity) = read_db(db).await;
    check_invariants(env, rows, integrity, due);
}

fn check_invariants(env: &Env, rows: Vec<JournalRow>, integrity: String, due: &[(i64, NaiveDate)]) {
    let paid = env.sim.renewals_by_expiry();

    assert_eq!(integrity, "ok", "PRAGMA integrity_check");
    for (elid, expiry, n) in &paid {
        assert_eq!(*n, 1, "license {elid} renewed {n} times from {expiry}");
        let bought = rows.iter().any(|r| {
            r.elid == *elid
                && r.expiry_before == *expiry
                && matches!(r.state.as_str(), "ok" | "reconciled_ok")
        });
        assert!(
            bought,
            "lost outcome: license {elid} was renewed from {expiry} but the journal says {:?}",
            rows.iter()
                .filter(|r| r.elid == *elid)
                .map(|r| (r.expiry_before, r.state.as_str()))
                .collect::<Vec<_>>()
        );
    }
    for r in &rows {
        let landed = paid
            .iter()
            .any(|(e, d, _)| *e == r.elid && *d == r.expiry_before);
        match r.state.as_str() {
            "ok" | "reconciled_ok" => {
                assert!(landed, "journal claims a renewal that never landed: {r:?}")
            }
            "error" | "reconciled_failed" => {
                // A failed row may share its expiry with a later successful one, never alone.
                let later_ok = rows.iter().any(|o| {
                    o.id > r.id
                        && o.elid == r.elid
                        && o.expiry_before == r.expiry_before
                        && matches!(o.state.as_str(), "ok" | "reconciled_ok")
                });
                assert!(
                    !landed || later_ok,
                    "journal says failed but the renewal landed: {r:?}"
                );
            }
            open => panic!("journal row still open ({open}) after settling: {r:?}"),
        }
    }
    for (elid, before) in due {
        let lic = env.sim.license(*elid).expect("license exists");
        assert_eq!(env.sim.paid_calls(*elid), 1, "license {elid}: paid calls");
        assert_eq!(
            Some(lic.expiredate),
            before.checked_add_months(chrono::Months::new(1)),
            "license {elid}: one extension of one month"
        );
    }
    env.assert_no_canary_in_files();
    env.assert_no_credentials_in_urls();
}

/// [`assert_invariants_at`] for the Env's default database.
pub async fn assert_invariants(env: &Env, due: &[(i64, NaiveDate)]) {
    let (rows, integrity) = read_env_db(env).await;
    check_invariants(env, rows, integrity, due);
}

/// Runs `licrenew renew` until a cycle exits 0 (open outcomes settled), at most `tries` times,
/// pausing `pause` between runs; returns the outputs.
pub async fn settle(
    env: &Env,
    env_vars: &[(&str, &str)],
    tries: usize,
    pause: Duration,
) -> Vec<Output> {
    let mut outs = Vec::new();
    for _ in 0..tries {
        let out = env.run_env(&["renew"], env_vars).await;
        assert_no_panic(&out);
        let done = out.status.code() == Some(0);
        outs.push(out);
        if done {
            return outs;
        }
        tokio::time::sleep(pause).await;
    }
    let last = outs.last().map(crate::support::stderr).unwrap_or_default();
    panic!("no clean cycle after {tries} runs; last stderr:\n{last}");
}

/// The JSON lines of stderr with `event = name`.
pub fn events(out: &Output, name: &str) -> Vec<serde_json::Value> {
    crate::support::stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

/// The `event = "renewal"` line about `elid` (the last one when there are several).
pub fn renewal_event(out: &Output, elid: i64) -> serde_json::Value {
    events(out, "renewal")
        .into_iter()
        .rev()
        .find(|e| e["elid"] == elid)
        .unwrap_or_else(|| {
            panic!(
                "no renewal event for {elid}:\n{}",
                crate::support::stderr(out)
            )
        })
}

/// The process did not panic (a panic prints this phrase; exit 101).
pub fn assert_no_panic(out: &Output) {
    let err = crate::support::stderr(out);
    assert!(!err.contains("panicked"), "panic:\n{err}");
    assert_ne!(out.status.code(), Some(101), "panic exit:\n{err}");
}

/// The policy used by the reliability tests: ISPmanager Lite, one month, a week ahead.
pub const LITE: &str =
    "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

/// Places `n` ISPmanager Lite licenses from `first` expiring in 3 days (due under [`LITE`]) and
/// returns them as (elid, expiry).
pub fn place_due(env: &Env, first: i64, n: i64) -> Vec<(i64, NaiveDate)> {
    let expiry = env.today() + chrono::Duration::days(3);
    (first..first + n)
        .map(|id| {
            env.place(id, env.p.lite, env.p.lite_month, expiry, 2);
            (id, expiry)
        })
        .collect()
}

/// Waits up to 20 s for `cond`.
pub async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a request for `func` reached the simulator.
pub fn seen(env: &Env, func: &str) -> bool {
    env.sim.requests().iter().any(|r| r.func == func)
}

/// Whether a request for `func` about license `elid` reached the simulator.
pub fn seen_for(env: &Env, func: &str, elid: i64) -> bool {
    let elid = elid.to_string();
    env.sim
        .requests()
        .iter()
        .any(|r| r.func == func && r.form.iter().any(|(k, v)| k == "elid" && *v == elid))
}
