//! The edge paths outside testing found to pay twice or to let a license lapse silently
//! (issue 10), one test each, in both API generations where the path exists.

use crate::both_apis;
use crate::ledger::{
    LITE, assert_invariants, assert_no_panic, events, journal, place_due, renewal_event, wait_for,
};
use crate::support::{Env, code, stderr, stdout};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};
use std::process::Stdio;

async fn account(api: Api) -> Env {
    let env = Env::for_api(api).await;
    env.write_policy("lite.toml", LITE);
    env
}

fn fault(func: &str, elid: Option<i64>, kind: FaultKind, times: Option<u32>) -> Fault {
    Fault {
        func: Some(func.into()),
        elid,
        kind,
        times,
    }
}

/// A short timeout, and a settle time far longer than any test: nothing may be judged failed.
const SLOW_SETTLE: &[(&str, &str)] = &[
    ("LICRENEW__BILLMGR__TIMEOUT", "1s"),
    ("LICRENEW__RENEWAL__SETTLE", "5m"),
];

/// A short timeout and no settle wait.
const FAST: &[(&str, &str)] = &[
    ("LICRENEW__BILLMGR__TIMEOUT", "1s"),
    ("LICRENEW__RENEWAL__SETTLE", "0s"),
];

fn alerts_of(out: &std::process::Output, kind: &str) -> Vec<serde_json::Value> {
    events(out, "alert")
        .into_iter()
        .filter(|a| a["kind"] == kind)
        .collect()
}

// ---- 1. a `missed` re-read before `settle` ----------------------------------------------------

async fn a_missed_re_read_before_settle_leaves_the_renewal_open_and_pays_once(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        FaultKind::Delay { ms: 2500 },
        Some(1),
    ));

    let first = env.run_env(&["renew"], SLOW_SETTLE).await;
    env.sim.add_fault(fault(
        &env.func("software.edit"),
        Some(3001),
        FaultKind::ErrorDoc {
            r#type: "missed".into(),
            object: Some("elid".into()),
            msg: "The object '3001' of type 'elid' is missing".into(),
        },
        Some(1),
    ));
    let second = env.run_env(&["renew"], SLOW_SETTLE).await;
    let open_after_second = journal(&env).await;
    wait_for(
        || env.sim.paid_calls(3001) == 1,
        "the delayed renewal landing",
    )
    .await;
    let third = env.run_env(&["renew"], SLOW_SETTLE).await;

    assert_no_panic(&first);
    assert_eq!(renewal_event(&first, 3001)["outcome"], "unknown");
    assert_no_panic(&second);
    let ev = renewal_event(&second, 3001);
    assert_eq!(ev["outcome"], "unknown", "{ev}");
    assert!(
        ev["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("settling")),
        "{ev}"
    );
    let states: Vec<_> = open_after_second.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, ["unknown"], "a missed re-read settles nothing");
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    assert_eq!(renewal_event(&third, 3001)["outcome"], "reconciled_ok");
    assert_eq!(env.sim.paid_calls(3001), 1, "paid exactly once");
    assert_invariants(&env, &due).await;
}

async fn a_license_still_missing_after_settle_is_closed_as_gone_alerted_and_never_renewed(
    api: Api,
) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        FaultKind::Http { status: 502 },
        Some(1),
    ));
    let first = env.run_env(&["renew"], FAST).await;
    let lic = env.sim.remove_license(3001).expect("placed");

    let second = env.run_env(&["renew"], FAST).await;
    env.sim.upsert_license(lic);
    let third = env.run_env(&["renew"], FAST).await;

    assert_eq!(renewal_event(&first, 3001)["outcome"], "unknown");
    let gone = events(&second, "renewal")
        .into_iter()
        .find(|e| e["elid"] == 3001 && e["outcome"] == "reconciled_failed")
        .expect("the open renewal is closed");
    assert_eq!(gone["reason"], "license gone", "{gone}");
    assert_eq!(
        alerts_of(&second, "license_gone").len(),
        1,
        "{}",
        stderr(&second)
    );
    let rows = journal(&env).await;
    assert_eq!(rows[0].error_class.as_deref(), Some("gone"));
    let again = renewal_event(&third, 3001);
    assert_eq!(
        (again["outcome"].as_str(), again["reason"].as_str()),
        (Some("skipped"), Some("license gone")),
        "{again}"
    );
    assert_eq!(env.sim.paid_calls(3001), 0);
    assert_eq!(due.len(), 1);
}

// ---- 2. `<ok/>` and `<error>` in one answer --------------------------------------------------

async fn an_answer_with_ok_and_error_is_unknown_then_reconciled_never_paid_again(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        FaultKind::Contradictory {
            r#type: "value".into(),
            msg: "Payment is being processed".into(),
        },
        Some(1),
    ));

    let first = env.run_env(&["renew"], FAST).await;
    let rows = journal(&env).await;
    let second = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&first);
    assert_eq!(code(&first), 1);
    let ev = renewal_event(&first, 3001);
    assert_eq!(
        (ev["outcome"].as_str(), ev["error_type"].as_str()),
        (Some("unknown"), Some("contradictory")),
        "{ev}"
    );
    assert_eq!(rows[0].state, "unknown");
    assert_eq!(rows[0].error_class.as_deref(), Some("contradictory"));
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(renewal_event(&second, 3001)["outcome"], "reconciled_ok");
    assert_invariants(&env, &due).await;
}

// ---- 3. an answer never confirmed is not "bought" --------------------------------------------

/// The server says yes (`kind`) but applies nothing; the re-read after the call fails
/// `failing_rereads` times. The row must be `unknown` / `not confirmed`, then settled and
/// renewed exactly once.
async fn unconfirmed(api: Api, kind: FaultKind, failing_rereads: u32) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        kind,
        Some(1),
    ));
    if failing_rereads > 0 {
        env.sim.add_fault(fault(
            &env.func("software.edit"),
            Some(3001),
            FaultKind::After {
                skip: 1,
                then: Box::new(FaultKind::Http { status: 500 }),
            },
            Some(failing_rereads),
        ));
    }

    let first = env.run_env(&["renew"], FAST).await;
    let rows = journal(&env).await;
    let second = env.run_env(&["renew"], FAST).await;

    assert_no_panic(&first);
    assert_eq!(code(&first), 1, "{}", stderr(&first));
    let ev = renewal_event(&first, 3001);
    assert_eq!(
        (ev["outcome"].as_str(), ev["reason"].as_str()),
        (Some("unknown"), Some("not confirmed")),
        "{ev}"
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "unknown");
    assert!(
        rows[0]
            .error_msg
            .as_deref()
            .is_some_and(|m| m.starts_with("not confirmed")),
        "{:?}",
        rows[0]
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let settled: Vec<_> = events(&second, "renewal")
        .into_iter()
        .filter(|e| e["elid"] == 3001)
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(settled, ["reconciled_failed", "ok"]);
    for r in journal(&env)
        .await
        .iter()
        .filter(|r| r.state == "ok" || r.state == "reconciled_ok")
    {
        assert!(
            r.new_expiry.is_some(),
            "every ok row has its new expiry: {r:?}"
        );
    }
    assert_invariants(&env, &due).await;
}

async fn a_new_expiry_without_ok_nothing_applied_and_a_failing_re_read_is_not_confirmed(api: Api) {
    // read_attempts = 2 in the test config: both attempts of the re-read fail.
    unconfirmed(api, FaultKind::NewExpiryNotApplied, 2).await;
}

async fn an_ok_with_the_expiry_unchanged_is_not_confirmed(api: Api) {
    unconfirmed(api, FaultKind::OkNotApplied, 0).await;
}

// ---- 4. an interrupted `prolong` -------------------------------------------------------------

async fn a_prolong_retried_after_an_interrupted_one_reports_the_landed_renewal_and_pays_nothing(
    api: Api,
) {
    let env = Env::for_api(api).await;
    let due = place_due(&env, 3001, 1);
    let expiry = due[0].1;
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        FaultKind::Delay { ms: 1500 },
        Some(1),
    ));
    let mut cmd = env.command(
        &["prolong", "3001", "--period", "1 month"],
        &[("LICRENEW__BILLMGR__TIMEOUT", "10s")],
    );
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    wait_for(
        || crate::ledger::seen_for(&env, &env.func("software.period"), 3001),
        "the paid call in flight",
    )
    .await;
    crate::support::signal(pid, "TERM");
    let interrupted = child.wait_with_output().await.expect("exits");
    wait_for(|| env.sim.paid_calls(3001) == 1, "the renewal landing").await;

    let retry = env.run(&["prolong", "3001", "--period", "1 month"]).await;
    let paid_after_retry = env.sim.paid_calls(3001);
    let later = env.run(&["prolong", "3001", "--period", "1 month"]).await;

    assert!(!interrupted.status.success(), "SIGTERM ended the first run");
    assert_no_panic(&retry);
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    let new = expiry
        .checked_add_months(chrono::Months::new(1))
        .expect("date");
    assert!(
        stdout(&retry).contains(&format!(
            "the earlier renewal of 3001 landed: {expiry} → {new}; nothing paid now"
        )),
        "{}",
        stdout(&retry)
    );
    assert_eq!(paid_after_retry, 1, "the retry paid nothing");
    assert_eq!(code(&later), 0, "{}", stderr(&later));
    assert_eq!(
        env.sim.paid_calls(3001),
        2,
        "a later, separate prolong extends"
    );
}

// ---- 5. orders are journaled ----------------------------------------------------------------

fn order_args(env: &Env, ip: &str) -> Vec<String> {
    let (product, period) = match env.api {
        Api::Billmgr4 => ("ISPmanager Lite", "1 month"),
        Api::Billmgr5 => ("ISPmanager 6 Lite", "1 month"),
    };
    vec![
        "order".into(),
        "--product".into(),
        product.into(),
        "--period".into(),
        period.into(),
        "--licname".into(),
        "new.example.net".into(),
        "--ip".into(),
        ip.into(),
    ]
}

async fn a_timed_out_order_retried_finds_the_license_instead_of_buying_a_second(api: Api) {
    let env = Env::for_api(api).await;
    let order_func = match api {
        Api::Billmgr4 => "software.edit",
        Api::Billmgr5 => "soft.order.param",
    };
    env.sim.add_fault(fault(
        order_func,
        None,
        FaultKind::Delay { ms: 2500 },
        Some(1),
    ));
    let args = order_args(&env, "198.51.100.7");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let first = env.run_env(&args, SLOW_SETTLE).await;
    wait_for(|| env.sim.paid_calls_total() == 1, "the order landing").await;
    let retry = env.run_env(&args, SLOW_SETTLE).await;
    let history = env.run(&["history", "--json"]).await;

    assert_no_panic(&first);
    assert_eq!(code(&first), 1);
    let err = stderr(&first);
    assert!(
        err.contains("unknown outcome") && err.contains("licenses --live"),
        "says what to check: {err}"
    );
    assert_eq!(code(&retry), 0, "{}", stderr(&retry));
    let created = env
        .sim
        .licenses()
        .into_iter()
        .find(|l| l.licname == "new.example.net")
        .expect("the order created a license");
    assert!(
        stdout(&retry).contains(&format!("already created license {}", created.id)),
        "{}",
        stdout(&retry)
    );
    assert_eq!(env.sim.paid_calls_total(), 1, "bought once");
    let items: serde_json::Value = serde_json::from_str(&stdout(&history)).expect("json");
    let orders: Vec<_> = items
        .as_array()
        .expect("array")
        .iter()
        .filter(|i| i["kind"] == "order")
        .collect();
    assert_eq!(orders.len(), 1, "{items}");
    assert_eq!(orders[0]["state"], "reconciled_ok");
    assert_eq!(orders[0]["elid"], created.id);
}

async fn an_order_for_an_ip_that_already_holds_that_product_is_refused_unless_allowed(api: Api) {
    let env = Env::for_api(api).await;
    let holder = env.place(
        3001,
        env.p.lite,
        env.p.lite_month,
        env.today() + chrono::Duration::days(40),
        2,
    );
    let args = order_args(&env, &holder.ip);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();

    let refused = env.run(&args).await;
    let paid_after_refusal = env.sim.paid_calls_total();
    args.push("--allow-duplicate");
    let allowed = env.run(&args).await;

    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("is not available for")
            && stderr(&refused).contains("--allow-duplicate"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(paid_after_refusal, 0);
    // The simulator itself refuses a second license of a product on one IP: what matters is
    // that licrenew sent the order (and journaled its refusal) instead of refusing locally.
    let sent = env
        .sim
        .requests()
        .iter()
        .filter(|r| {
            r.form
                .iter()
                .any(|(k, v)| k == "licname" && v == "new.example.net")
        })
        .count();
    assert!(sent >= 1, "the order was sent with --allow-duplicate");
    assert_no_panic(&allowed);
}

// ---- 6. policy files that cannot be read ------------------------------------------------------

#[tokio::test]
async fn a_policy_entry_that_cannot_be_read_exits_78_naming_it_and_others_are_listed_as_ignored() {
    let env = account(Api::Billmgr4).await;
    env.write_policy("lite.toml.bak", "garbage = [");
    let ok = env.run(&["check"]).await;
    std::os::unix::fs::symlink("/nonexistent/x", env.path("policies.d/dangling.toml"))
        .expect("symlink");
    let dangling = env.run(&["check"]).await;
    std::fs::remove_file(env.path("policies.d/dangling.toml")).expect("rm");
    std::fs::create_dir(env.path("policies.d/dir.toml")).expect("mkdir");
    let dir = env.run(&["renew"]).await;

    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("ignored") && stdout(&ok).contains("lite.toml.bak"),
        "{}",
        stdout(&ok)
    );
    assert_eq!(code(&dangling), 78);
    assert!(
        stderr(&dangling).contains("dangling.toml"),
        "{}",
        stderr(&dangling)
    );
    assert_eq!(code(&dir), 78);
    assert!(stderr(&dir).contains("dir.toml"), "{}", stderr(&dir));
    assert!(env.sim.requests().is_empty(), "nothing was called");
}

// ---- 7. list rows without an expiry ------------------------------------------------------------

async fn a_listed_license_without_an_expiry_fails_the_cycle_by_name_unless_it_is_only_ordered(
    api: Api,
) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.place(
        3002,
        env.p.lite,
        env.p.lite_month,
        env.today() + chrono::Duration::days(3),
        2,
    );
    env.place(
        3003,
        env.p.lite,
        env.p.lite_month,
        env.today() + chrono::Duration::days(3),
        1,
    );
    for elid in [3002, 3003] {
        env.sim.hide_field(elid, "expiredate");
        env.sim.hide_field(elid, "real_expiredate");
    }

    let out = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 1, "an unreadable license fails the cycle");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("3002") && l.contains("no expiredate")),
        "names the license: {err}"
    );
    assert!(
        !err.lines()
            .any(|l| l.contains("3003") && l.contains("no expiredate")),
        "an ordered license is not unreadable: {err}"
    );
    assert_eq!(alerts_of(&out, "unreadable_rows").len(), 1, "{err}");
    assert_eq!(renewal_event(&out, 3001)["outcome"], "ok");
    assert_invariants(&env, &due).await;
}

// ---- 8. a license past the lookback ------------------------------------------------------------

async fn a_license_that_falls_out_of_the_window_unrenewed_is_lapsed_alerted_once_and_shown(
    api: Api,
) {
    let env = account(api).await;
    // Suspended 40 days ago, no policy covers DNSmanager: nothing will renew it.
    let past = env.today() - chrono::Duration::days(40);
    let dns = match api {
        Api::Billmgr4 => (17, 31),
        Api::Billmgr5 => (55251, 12),
    };
    env.place(3005, dns.0, dns.1, past, 3);
    let wide = [("LICRENEW__SCHEDULE__LOOKBACK", "60d")];

    let stored = env.run_env(&["sync"], &wide).await;
    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;
    let listed = env.run(&["licenses", "--json"]).await;

    assert_eq!(code(&stored), 0, "{}", stderr(&stored));
    assert_no_panic(&first);
    let lapsed = alerts_of(&first, "license_lapsed");
    assert_eq!(lapsed.len(), 1, "{}", stderr(&first));
    assert_eq!(lapsed[0]["elid"], 3005);
    assert!(
        alerts_of(&second, "license_lapsed").is_empty(),
        "alerted once"
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout(&listed)).expect("json");
    let row = rows
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["elid"] == 3005)
        .expect("the lapsed license stays visible");
    assert!(row["lapsed_since"].is_string(), "{row}");
}

// ---- 10. busy refusals ---------------------------------------------------------------------------

async fn a_paid_call_refused_as_busy_is_sent_once_more_after_a_pause(api: Api) {
    let env = account(api).await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(3001),
        FaultKind::ErrorDoc {
            r#type: String::new(),
            object: None,
            msg: "Request in process, please wait".into(),
        },
        Some(1),
    ));

    let out = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let retry = events(&out, "renewal_retry");
    assert_eq!(retry.len(), 1, "{}", stderr(&out));
    assert_eq!(retry[0]["reason"], "server busy");
    let states: Vec<_> = journal(&env)
        .await
        .iter()
        .map(|r| r.state.clone())
        .collect();
    assert_eq!(states, ["error", "ok"]);
    assert_invariants(&env, &due).await;
}

#[tokio::test]
async fn a_paid_call_busy_twice_is_sent_at_most_twice_in_a_cycle() {
    let env = account(Api::Billmgr4).await;
    place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        "software.period",
        Some(3001),
        FaultKind::ErrorDoc {
            r#type: String::new(),
            object: None,
            msg: "Request in process, please wait".into(),
        },
        None,
    ));

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 1);
    let sent = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.func == "software.period")
        .count();
    assert_eq!(sent, 2, "one retry, never more");
    assert_eq!(env.sim.paid_calls(3001), 0);
}

both_apis!(a_missed_re_read_before_settle_leaves_the_renewal_open_and_pays_once);
both_apis!(a_license_still_missing_after_settle_is_closed_as_gone_alerted_and_never_renewed);
both_apis!(an_answer_with_ok_and_error_is_unknown_then_reconciled_never_paid_again);
both_apis!(a_new_expiry_without_ok_nothing_applied_and_a_failing_re_read_is_not_confirmed);
both_apis!(an_ok_with_the_expiry_unchanged_is_not_confirmed);
both_apis!(a_prolong_retried_after_an_interrupted_one_reports_the_landed_renewal_and_pays_nothing);
both_apis!(a_timed_out_order_retried_finds_the_license_instead_of_buying_a_second);
both_apis!(an_order_for_an_ip_that_already_holds_that_product_is_refused_unless_allowed);
both_apis!(a_listed_license_without_an_expiry_fails_the_cycle_by_name_unless_it_is_only_ordered);
both_apis!(a_license_that_falls_out_of_the_window_unrenewed_is_lapsed_alerted_once_and_shown);
both_apis!(a_paid_call_refused_as_busy_is_sent_once_more_after_a_pause);
