//! Crash points: the real binary is killed (`kill -9`, or an abort at a failpoint, which is as
//! abrupt) at every point of a renewal, restarted, and left to reconcile. Each point is hit
//! several times; after each, every money invariant of [`crate::ledger`] must hold.

use crate::all_backends;
use crate::ledger::{
    LITE, assert_invariants, assert_no_panic, journal, place_due, seen_for, settle, wait_for,
};
use crate::support::{Env, assert_no_canary, stderr};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Runs of one point per test.
const REPEATS: i64 = 3;
const PAUSE: Duration = Duration::from_millis(400);

/// An account with the Lite policy and a one-second settle time, so an attempt that never left
/// is judged failed quickly (and the simulator never applies anything later than that).
async fn account(api: Api) -> Env {
    let env = Env::for_api(api).await;
    env.write_config("[renewal]\nsettle = \"1s\"\n");
    env.write_policy("lite.toml", LITE);
    env
}

/// Rows of the journal about licenses `first..first + 2`.
async fn rows_for(env: &Env, first: i64) -> Vec<(i64, String)> {
    journal(env)
        .await
        .into_iter()
        .filter(|r| r.elid >= first && r.elid < first + 2)
        .map(|r| (r.elid, r.state))
        .collect()
}

fn paid_for(env: &Env, first: i64) -> u32 {
    (first..first + 2).map(|e| env.sim.paid_calls(e)).sum()
}

/// Arms `point`, runs a cycle that aborts there, checks what the crash left with `after_crash`,
/// restarts until the cycle is clean and checks the invariants; `REPEATS` times.
async fn crash_at_failpoint(api: Api, point: &str, after_crash: impl Fn(&[(i64, String)], u32)) {
    let env = account(api).await;
    let mut due = Vec::new();
    for rep in 0..REPEATS {
        let first = 4000 + rep * 10;
        due.extend(place_due(&env, first, 2));

        let out = env
            .run_env(&["renew"], &[("LICRENEW_FAILPOINT", point)])
            .await;

        assert_eq!(
            out.status.signal(),
            Some(6),
            "aborted at {point}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(&format!("failpoint {point} reached")));
        after_crash(&rows_for(&env, first).await, paid_for(&env, first));
        settle(&env, &[], 12, PAUSE).await;
        assert_invariants(&env, &due).await;
    }
}

async fn a_crash_before_the_intent_row_leaves_no_trace_and_the_restart_renews_once(api: Api) {
    crash_at_failpoint(api, "before-intent", |rows, paid| {
        assert!(rows.is_empty(), "no intent row yet: {rows:?}");
        assert_eq!(paid, 0);
    })
    .await;
}

async fn a_crash_after_the_intent_commit_is_settled_as_not_sent_and_renewed_once(api: Api) {
    crash_at_failpoint(api, "after-intent", |rows, paid| {
        assert!(
            !rows.is_empty() && rows.iter().all(|(_, s)| s == "sending"),
            "{rows:?}"
        );
        assert_eq!(paid, 0, "the request never left");
    })
    .await;
}

async fn a_crash_after_the_answer_before_the_outcome_is_reconciled_as_bought_not_paid_again(
    api: Api,
) {
    crash_at_failpoint(api, "after-call", |rows, paid| {
        assert!(rows.iter().any(|(_, s)| s == "sending"), "{rows:?}");
        assert!(paid >= 1, "the server applied it");
    })
    .await;
}

async fn a_crash_after_the_outcome_is_recorded_changes_nothing_on_restart(api: Api) {
    crash_at_failpoint(api, "after-outcome", |rows, paid| {
        assert!(rows.iter().any(|(_, s)| s == "ok"), "{rows:?}");
        assert!(paid >= 1);
    })
    .await;
}

/// Starts `renew`, waits for `moment`, then SIGKILLs it; `REPEATS` times, each with a fresh
/// fault on the first of two new due licenses.
async fn kill_when(
    api: Api,
    fault: impl Fn() -> FaultKind,
    moment: impl Fn(&Env, i64) -> bool,
    what: &str,
) {
    let env = account(api).await;
    let mut due = Vec::new();
    for rep in 0..REPEATS {
        let first = 5000 + rep * 10;
        due.extend(place_due(&env, first, 2));
        env.sim.add_fault(Fault {
            func: Some(env.func("software.period")),
            elid: Some(first),
            kind: fault(),
            times: Some(1),
        });
        let mut child = env
            .command(&["renew"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");

        wait_for(|| moment(&env, first), what).await;
        child.start_kill().expect("SIGKILL");
        let killed = child.wait_with_output().await.expect("output");
        let open = rows_for(&env, first).await;

        assert_eq!(killed.status.signal(), Some(9));
        assert_no_canary("stdout", &crate::support::stdout(&killed));
        assert_no_canary("stderr", &stderr(&killed));
        assert!(
            open.iter().any(|(e, s)| *e == first && s == "sending"),
            "the intent row is committed and open: {open:?}"
        );
        // The server applies the delayed request whatever the client does; wait for it so the
        // restart sees the truth (in production `renewal.settle` covers that time).
        wait_for(|| env.sim.paid_calls(first) == 1, "the server applying it").await;
        let outs = settle(&env, &[], 12, PAUSE).await;
        let reconciled = outs.iter().any(|o| {
            crate::ledger::events(o, "renewal")
                .iter()
                .any(|e| e["elid"] == first && e["outcome"] == "reconciled_ok")
        });
        assert!(reconciled, "the killed renewal is reconciled as bought");
        assert_invariants(&env, &due).await;
    }
}

async fn a_kill_while_the_paid_call_is_in_flight_is_reconciled_as_one_extension(api: Api) {
    kill_when(
        api,
        || FaultKind::Delay { ms: 600 },
        |env, first| seen_for(env, &env.func("software.period"), first),
        "the paid call in flight",
    )
    .await;
}

async fn a_kill_after_the_server_applied_but_before_the_answer_is_reconciled_as_one_extension(
    api: Api,
) {
    kill_when(
        api,
        || FaultKind::DelayAfter { ms: 10_000 },
        |env, first| env.sim.paid_calls(first) == 1,
        "the server applying the renewal",
    )
    .await;
}

async fn a_kill_at_any_moment_of_a_cycle_never_pays_twice_nor_loses_an_outcome(api: Api) {
    // Arrange: how long one uninterrupted cycle takes on this machine.
    let env = account(api).await;
    let mut due = place_due(&env, 6000, 2);
    let started = Instant::now();
    let out = env.run(&["renew"]).await;
    assert_no_panic(&out);
    let cycle = started.elapsed();

    // Act + assert: kill at evenly spread moments across (and a little past) such a cycle.
    const MOMENTS: u32 = 8;
    for k in 0..MOMENTS {
        let first = 6100 + i64::from(k) * 10;
        due.extend(place_due(&env, first, 2));
        let mut child = env
            .command(&["renew"], &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        tokio::time::sleep(cycle * k / (MOMENTS - 2)).await;
        let _ = child.start_kill();
        let killed = child.wait_with_output().await.expect("output");
        assert_no_panic(&killed);
        assert_no_canary("stderr", &stderr(&killed));
        settle(&env, &[], 12, PAUSE).await;
        assert_invariants(&env, &due).await;
    }
}

all_backends!(a_crash_before_the_intent_row_leaves_no_trace_and_the_restart_renews_once);
all_backends!(a_crash_after_the_intent_commit_is_settled_as_not_sent_and_renewed_once);
all_backends!(a_crash_after_the_answer_before_the_outcome_is_reconciled_as_bought_not_paid_again);
all_backends!(a_crash_after_the_outcome_is_recorded_changes_nothing_on_restart);
all_backends!(a_kill_while_the_paid_call_is_in_flight_is_reconciled_as_one_extension);
all_backends!(a_kill_after_the_server_applied_but_before_the_answer_is_reconciled_as_one_extension);
all_backends!(a_kill_at_any_moment_of_a_cycle_never_pays_twice_nor_loses_an_outcome);
