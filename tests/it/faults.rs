//! The fault matrix: every failure the simulator can inject, on a read and on the paid call,
//! each with the right exit code, the right recorded outcome, nothing lost and no panic.

use crate::all_backends;
use crate::ledger::{
    LITE, assert_invariants, assert_no_panic, events, journal, place_due, renewal_event, wait_for,
};
use crate::support::{CANARY, Env, code, stderr};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};
use std::process::Stdio;
use std::time::Duration;

/// A one-second timeout for every request, and no settle wait, so the second run of a scenario
/// settles at once what the first left open.
const FAST: &[(&str, &str)] = &[
    ("LICRENEW__BILLMGR__TIMEOUT", "1s"),
    ("LICRENEW__RENEWAL__SETTLE", "0s"),
    ("LICRENEW__BILLMGR__MAX_BODY_MIB", "1"),
];

async fn account(api: Api) -> Env {
    let env = Env::for_api(api).await;
    env.write_policy("lite.toml", LITE);
    env
}

/// How many list calls the simulator answered.
fn list_reads(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| r.func == env.func("software"))
        .count()
}

fn fault(func: &str, elid: Option<i64>, kind: FaultKind, times: Option<u32>) -> Fault {
    Fault {
        func: Some(func.into()),
        elid,
        kind,
        times,
    }
}

// ---- the paid call ---------------------------------------------------------------------------

/// One fault on the paid call of a due license: the first cycle records an unknown outcome of
/// class `class` and exits 1; the next cycle settles it by re-reading (bought when `applied`,
/// else failed and renewed once), so the license ends extended exactly once.
async fn paid_call_fault(api: Api, kind: FaultKind, applied: bool, class: &str) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        kind,
        Some(1),
    ));

    let first = env.run_env(&["renew"], FAST).await;
    let open = journal(&env).await;
    if applied {
        wait_for(|| env.sim.paid_calls(3001) == 1, "the server applying it").await;
    }
    let paid_after_first = env.sim.paid_calls(3001);
    let second = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&first);
    assert_eq!(code(&first), 1, "an unknown outcome fails the cycle");
    let ev = renewal_event(&first, 3001);
    assert_eq!(ev["outcome"], "unknown", "{ev}");
    assert_eq!(ev["error_type"], class, "{ev}");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].state, "unknown");
    assert_eq!(open[0].error_class.as_deref(), Some(class));
    assert_eq!(paid_after_first, u32::from(applied));
    assert_no_panic(&second);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let settled = events(&second, "renewal");
    let by_reconcile = settled
        .iter()
        .any(|e| e["elid"] == 3001 && e["outcome"] == "reconciled_ok");
    let renewed_again = settled
        .iter()
        .any(|e| e["elid"] == 3001 && e["outcome"] == "ok");
    assert_eq!((by_reconcile, renewed_again), (applied, !applied));
    assert_invariants(&env, &due).await;
}

async fn a_paid_call_answered_after_the_timeout_is_unknown_then_reconciled_as_bought(api: Api) {
    paid_call_fault(api, FaultKind::Delay { ms: 2500 }, true, "timeout").await;
}

async fn a_paid_call_applied_at_once_but_answered_after_the_timeout_is_reconciled_as_bought(
    api: Api,
) {
    paid_call_fault(api, FaultKind::DelayAfter { ms: 2500 }, true, "timeout").await;
}

async fn a_5xx_on_the_paid_call_is_unknown_then_failed_and_renewed_once(api: Api) {
    paid_call_fault(api, FaultKind::Http { status: 502 }, false, "http").await;
}

async fn a_connection_dropped_before_the_server_applied_is_renewed_once_after_settling(api: Api) {
    paid_call_fault(api, FaultKind::DropBefore, false, "transport").await;
}

async fn a_connection_dropped_after_the_server_applied_is_reconciled_not_paid_again(api: Api) {
    paid_call_fault(api, FaultKind::DropAfter, true, "transport").await;
}

async fn a_malformed_answer_to_the_paid_call_is_unknown_not_failed(api: Api) {
    paid_call_fault(api, FaultKind::Malformed, true, "malformed").await;
}

async fn a_truncated_answer_to_the_paid_call_is_unknown_not_failed(api: Api) {
    paid_call_fault(api, FaultKind::Truncated, true, "truncated").await;
}

async fn an_html_error_page_with_status_200_on_the_paid_call_is_unknown(api: Api) {
    paid_call_fault(api, FaultKind::Html200, false, "malformed").await;
}

async fn an_empty_answer_to_the_paid_call_is_unknown(api: Api) {
    paid_call_fault(api, FaultKind::EmptyBody, false, "empty_body").await;
}

async fn a_slow_drip_answer_to_the_paid_call_past_the_timeout_is_unknown_then_reconciled(api: Api) {
    paid_call_fault(api, FaultKind::SlowDrip { chunk_ms: 200 }, true, "timeout").await;
}

async fn a_huge_answer_to_the_paid_call_stops_at_the_size_cap_and_is_unknown(api: Api) {
    paid_call_fault(api, FaultKind::Huge { bytes: 8 << 20 }, false, "too_large").await;
}

// ---- reads ------------------------------------------------------------------------------------

async fn a_list_that_times_out_on_every_attempt_fails_the_cycle_after_read_attempts_and_pays_nothing(
    api: Api,
) {
    let env = account(api).await;
    place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::Delay { ms: 1500 },
        None,
    ));

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1);
    let cycle = events(&out, "cycle").pop().expect("a cycle event");
    assert_eq!(cycle["outcome"], "api_failed", "{cycle}");
    assert!(
        cycle["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within 1s")),
        "{cycle}"
    );
    let lists = list_reads(&env);
    assert_eq!(lists, 2, "read_attempts = 2, then give up");
    assert_eq!(env.sim.paid_calls_total(), 0);
    assert!(journal(&env).await.is_empty());
}

async fn a_re_read_that_times_out_is_retried_once_and_the_renewal_goes_through(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.edit"),
        Some(3001),
        FaultKind::Delay { ms: 1500 },
        Some(1),
    ));

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(renewal_event(&out, 3001)["outcome"], "ok");
    assert_invariants(&env, &due).await;
}

async fn a_re_read_that_always_times_out_is_an_error_before_any_intent_or_payment(api: Api) {
    let env = account(api).await;
    place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.edit"),
        Some(3001),
        FaultKind::Delay { ms: 1500 },
        None,
    ));

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1);
    let ev = renewal_event(&out, 3001);
    assert_eq!(
        (ev["outcome"].as_str(), ev["reason"].as_str()),
        (Some("error"), Some("re-read before renewal failed"))
    );
    assert_eq!(ev["error_type"], "timeout");
    assert!(
        journal(&env).await.is_empty(),
        "no intent without a re-read"
    );
    assert!(!crate::ledger::seen(&env, &env.func("software.period")));
}

async fn a_5xx_on_the_list_is_retried_and_a_persistent_one_fails_the_cycle(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::Http { status: 503 },
        Some(1),
    ));

    let once = env.run_env(&["renew"], FAST).await;
    place_due(&env, 3002, 1);
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::Http { status: 500 },
        None,
    ));
    let always = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&once);
    assert_eq!(code(&once), 0, "{}", stderr(&once));
    assert_no_panic(&always);
    assert_eq!(code(&always), 1);
    let cycle = events(&always, "cycle").pop().expect("cycle");
    assert_eq!(cycle["outcome"], "api_failed");
    assert!(
        cycle["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP status 500")),
        "{cycle}"
    );
    assert_eq!(env.sim.paid_calls(3002), 0);
    assert_invariants(&env, &due).await;
}

async fn garbled_answers_to_the_list_fail_the_cycle_with_their_class_and_pay_nothing(api: Api) {
    let cases = [
        (FaultKind::Malformed, "malformed XML"),
        (FaultKind::Truncated, "truncated document"),
        (
            FaultKind::Html200,
            "not a BILLmanager document: root element is <html>",
        ),
        (FaultKind::EmptyBody, "empty body"),
        (FaultKind::SlowDrip { chunk_ms: 100 }, "no answer within 1s"),
        (
            FaultKind::ErrorDoc {
                r#type: "xml".into(),
                object: None,
                msg: "XPath error".into(),
            },
            "API error type=xml: XPath error",
        ),
    ];
    for (kind, says) in cases {
        let env = account(api).await;
        place_due(&env, 3001, 3);
        env.sim
            .add_fault(fault(&env.func("software"), None, kind, None));

        let out = env.run_env(&["renew"], FAST).await;

        assert_no_panic(&out);
        assert_eq!(code(&out), 1, "{says}");
        let cycle = events(&out, "cycle").pop().expect("cycle");
        assert_eq!(cycle["outcome"], "api_failed", "{cycle}");
        assert!(
            cycle["error"].as_str().is_some_and(|e| e.contains(says)),
            "{says}: {cycle}"
        );
        assert_eq!(env.sim.paid_calls_total(), 0);
        assert!(journal(&env).await.is_empty());
        env.assert_no_canary_in_files();
    }
}

async fn a_list_truncated_once_is_read_again_and_each_license_is_renewed_once(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 6);
    // The first read breaks off halfway: the rows before the break reach the sync (it
    // records them as they stream in), and the retried read hands them again.
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::Truncated,
        Some(1),
    ));

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lists = list_reads(&env);
    assert_eq!(lists, 2, "read again once");
    for (elid, _) in &due {
        let ev = renewal_event(&out, *elid);
        assert_eq!(
            ev["outcome"], "ok",
            "listed twice the same, renewed once: {ev}"
        );
        assert_eq!(env.sim.paid_calls(*elid), 1);
    }
    let cycle = events(&out, "cycle").pop().expect("cycle");
    assert_eq!(cycle["listed"], 6, "{cycle}");
    assert_invariants(&env, &due).await;
}

async fn a_slow_drip_list_that_ends_within_the_timeout_is_read_whole(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 2);
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::SlowDrip { chunk_ms: 2 },
        Some(1),
    ));

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_invariants(&env, &due).await;
}

/// Runs the binary with `config` to completion and returns (exit code, stderr, peak resident set
/// in bytes), the peak as the kernel measured it for exactly this child (`wait4`).
fn run_measured(
    config: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> (Option<i32>, String, u64) {
    use std::os::unix::process::ExitStatusExt;
    let err_file = tempfile::tempfile().expect("stderr file");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_licrenew"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LICRENEW_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(err_file.try_clone().expect("clone"));
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    // The child's own peak, polled from /proc: `ru_maxrss` of wait4 starts from the spawning
    // process's high-water mark (std spawns with CLONE_VM), which is this test binary's, busy
    // with other tests' simulators.
    let poller = std::thread::spawn(move || {
        let mut hwm_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                hwm_kib = hwm_kib.max(v);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        hwm_kib
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child and not reaped yet (`child.wait` is never called).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    drop(child);
    let mut err = String::new();
    let mut f = err_file;
    std::io::Seek::rewind(&mut f).expect("rewind");
    std::io::Read::read_to_string(&mut f, &mut err).expect("stderr");
    crate::support::assert_no_canary("stderr", &err);
    let code = std::process::ExitStatus::from_raw(status).code();
    let _ = usage;
    (code, err, poller.join().unwrap_or(0) * 1024)
}

async fn a_huge_list_answer_is_refused_at_the_size_cap_with_a_clear_error_and_bounded_memory(
    api: Api,
) {
    let env = account(api).await;
    place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software"),
        None,
        FaultKind::Huge { bytes: 512 << 20 },
        None,
    ));
    let config = env.config.clone();

    let (code, err, peak) =
        tokio::task::spawn_blocking(move || run_measured(&config, &["renew"], FAST))
            .await
            .expect("measured run");

    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("answer larger than the 1048576-byte cap"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        peak < 96 << 20,
        "peak memory {} MiB for a 512 MiB answer capped at 1 MiB",
        peak >> 20
    );
    assert_eq!(env.sim.paid_calls_total(), 0);
    assert!(journal(&env).await.is_empty());
}

// ---- logins and sessions ------------------------------------------------------------------------

async fn bad_credentials_fail_the_cycle_after_one_login_attempt(api: Api) {
    let env = account(api).await;
    place_due(&env, 3001, 1);
    std::fs::write(env.path("secret"), "not-the-password\n").expect("write");

    let out = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1);
    let cycle = events(&out, "cycle").pop().expect("cycle");
    assert_eq!(cycle["outcome"], "auth_failed", "{cycle}");
    // BILLmanager 4 refuses with `<authfail/>`, 5/6 with `<error type="auth">`.
    let object = match api {
        Api::Billmgr4 => "authfail",
        Api::Billmgr5 => "badpassword",
    };
    assert!(
        cycle["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("type=auth object={object}"))),
        "{cycle}"
    );
    assert_eq!(env.sim.login_failures(), 1);
    assert_eq!(env.sim.paid_calls_total(), 0);
}

async fn the_service_with_bad_credentials_does_not_retry_in_a_loop(api: Api) {
    for auth in ["authinfo", "session"] {
        let env = account(api).await;
        place_due(&env, 3001, 1);
        env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
        std::fs::write(env.path("secret"), "not-the-password\n").expect("write");
        let child = env
            .command(&["run"], &[("LICRENEW__BILLMGR__AUTH", auth)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id().expect("pid");

        tokio::time::sleep(Duration::from_millis(3500)).await;
        let requests = env.sim.requests().len();
        let failures = env.sim.login_failures();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("exits")
            .expect("output");

        assert_eq!(out.status.code(), Some(0), "{auth}: {}", stderr(&out));
        assert_eq!(failures, 1, "{auth}: one refused login over three cycles");
        assert_eq!(requests, 1, "{auth}: nothing sent after the refusal");
        let cycles = events(&out, "cycle");
        assert!(cycles.len() >= 2, "{auth}: the service kept its schedule");
        assert_no_panic(&out);
        crate::support::assert_no_canary("stdout", &crate::support::stdout(&out));
        crate::support::assert_no_canary("stderr", &stderr(&out));
        assert_eq!(env.sim.paid_calls_total(), 0);
    }
}

async fn a_session_that_expires_mid_cycle_is_renewed_for_reads_and_a_refused_paid_call_is_sent_once_more(
    api: Api,
) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 2);
    let session = [
        ("LICRENEW__BILLMGR__AUTH", "session"),
        ("LICRENEW__RENEWAL__CONCURRENCY", "1"),
        ("LICRENEW__BILLMGR__TIMEOUT", "1s"),
    ];
    // The session dies before the re-read of 3001, and again before the paid call of 3002.
    env.sim.add_fault(fault(
        &env.func("software.edit"),
        Some(3001),
        FaultKind::SessionExpired,
        Some(1),
    ));
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3002),
        FaultKind::SessionExpired,
        Some(1),
    ));

    let first = env.run_env(&["renew"], &session).await;
    let rows = journal(&env).await;
    let second = env.run_env(&["renew"], &session).await;

    assert_no_panic(&first);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(renewal_event(&first, 3001)["outcome"], "ok");
    // The refusal is logged, then the license is re-read and paid once more in the same cycle.
    let evs: Vec<_> = events(&first, "renewal")
        .into_iter()
        .filter(|e| e["elid"] == 3002)
        .collect();
    let seen: Vec<_> = evs
        .iter()
        .map(|e| (e["outcome"].as_str(), e["error_type"].as_str()))
        .collect();
    assert_eq!(seen, [(Some("error"), Some("access")), (Some("ok"), None)]);
    assert!(!events(&first, "renewal_retry").is_empty());
    let states: Vec<_> = rows.iter().map(|r| (r.elid, r.state.as_str())).collect();
    assert_eq!(states, [(3001, "ok"), (3002, "error"), (3002, "ok")]);
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(env.sim.paid_calls(3002), 1, "paid exactly once");
    let logins = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.func == "auth")
        .count();
    assert_eq!(
        logins, 4,
        "one login per process, one more after each expiry"
    );
    for r in env.sim.requests().iter().filter(|r| r.func != "auth") {
        assert!(
            r.form
                .iter()
                .all(|(k, v)| k != "authinfo" && !v.contains(CANARY)),
            "{r:?}"
        );
    }
    assert_invariants(&env, &due).await;
}

// ---- API error types --------------------------------------------------------------------------

async fn each_api_error_type_on_the_paid_call_is_recorded_as_refused_with_its_fields(api: Api) {
    let cases = [
        ("auth", Some("badpassword"), "Invalid username or password"),
        (
            "access",
            None,
            "Insufficient privileges to perform this function",
        ),
        ("missed", Some("elid"), "The object is not found"),
        ("exists", Some("software"), "Already exists"),
        (
            "value",
            Some("period"),
            "The \"Period\" field has invalid value.",
        ),
        (
            "licence",
            Some("key"),
            "A license problem nobody documented",
        ),
    ];
    for (kind, object, msg) in cases {
        let env = account(api).await;
        let due = place_due(&env, 3001, 2);
        let vars = [("LICRENEW__RENEWAL__CONCURRENCY", "1")];
        env.sim.add_fault(fault(
            &env.func("software.period"),
            Some(3001),
            FaultKind::ErrorDoc {
                r#type: kind.into(),
                object: object.map(str::to_owned),
                msg: msg.into(),
            },
            Some(1),
        ));

        let first = env.run_env(&["renew"], &vars).await;
        let rows = journal(&env).await;
        let requests_after = env.sim.requests().len();
        let second = env.run_env(&["renew"], &vars).await;

        assert_no_panic(&first);
        assert_eq!(code(&first), 1, "{kind}");
        let ev = renewal_event(&first, 3001);
        assert_eq!(ev["outcome"], "error", "{kind}: {ev}");
        assert_eq!(ev["error_type"], kind, "{ev}");
        assert_eq!(ev["error_object"].as_str(), object, "{ev}");
        assert_eq!(ev["error_msg"], msg, "{ev}");
        let row = rows.iter().find(|r| r.elid == 3001).expect("journal row");
        assert_eq!(row.state, "error", "{kind}");
        assert_eq!(row.error_type.as_deref(), Some(kind));
        assert_eq!(row.error_object.as_deref(), object);
        assert_eq!(row.error_msg.as_deref(), Some(msg));
        let cycle = events(&first, "cycle").pop().expect("cycle");
        if kind == "auth" {
            assert_eq!(cycle["outcome"], "auth_failed", "{cycle}");
            assert!(
                !rows.iter().any(|r| r.elid == 3002),
                "a refused login ends the cycle"
            );
            let seen = env.sim.requests();
            assert_eq!(
                seen[requests_after - 1].func,
                env.func("software.period"),
                "nothing is sent after the refusal"
            );
        } else {
            assert_eq!(cycle["outcome"], "failed", "{cycle}");
            assert_eq!(renewal_event(&first, 3002)["outcome"], "ok", "{kind}");
        }
        assert_eq!(code(&second), 0, "{kind}: {}", stderr(&second));
        assert_invariants(&env, &due).await;
    }
}

all_backends!(a_paid_call_answered_after_the_timeout_is_unknown_then_reconciled_as_bought);
all_backends!(a_paid_call_applied_at_once_but_answered_after_the_timeout_is_reconciled_as_bought);
all_backends!(a_5xx_on_the_paid_call_is_unknown_then_failed_and_renewed_once);
all_backends!(a_connection_dropped_before_the_server_applied_is_renewed_once_after_settling);
all_backends!(a_connection_dropped_after_the_server_applied_is_reconciled_not_paid_again);
all_backends!(a_malformed_answer_to_the_paid_call_is_unknown_not_failed);
all_backends!(a_truncated_answer_to_the_paid_call_is_unknown_not_failed);
all_backends!(an_html_error_page_with_status_200_on_the_paid_call_is_unknown);
all_backends!(an_empty_answer_to_the_paid_call_is_unknown);
all_backends!(a_slow_drip_answer_to_the_paid_call_past_the_timeout_is_unknown_then_reconciled);
all_backends!(a_huge_answer_to_the_paid_call_stops_at_the_size_cap_and_is_unknown);
all_backends!(a_re_read_that_times_out_is_retried_once_and_the_renewal_goes_through);
all_backends!(a_re_read_that_always_times_out_is_an_error_before_any_intent_or_payment);
all_backends!(a_5xx_on_the_list_is_retried_and_a_persistent_one_fails_the_cycle);
all_backends!(garbled_answers_to_the_list_fail_the_cycle_with_their_class_and_pay_nothing);
all_backends!(a_list_truncated_once_is_read_again_and_each_license_is_renewed_once);
all_backends!(a_slow_drip_list_that_ends_within_the_timeout_is_read_whole);
all_backends!(a_huge_list_answer_is_refused_at_the_size_cap_with_a_clear_error_and_bounded_memory);
all_backends!(bad_credentials_fail_the_cycle_after_one_login_attempt);
all_backends!(the_service_with_bad_credentials_does_not_retry_in_a_loop);
all_backends!(each_api_error_type_on_the_paid_call_is_recorded_as_refused_with_its_fields);
all_backends!(
    a_list_that_times_out_on_every_attempt_fails_the_cycle_after_read_attempts_and_pays_nothing
);
all_backends!(
    a_session_that_expires_mid_cycle_is_renewed_for_reads_and_a_refused_paid_call_is_sent_once_more
);
