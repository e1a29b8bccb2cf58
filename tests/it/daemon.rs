//! The renewal daemon as the real binary against the simulator, with real SQLite files.

use crate::all_backends;
use crate::ledger::wait_for;
use crate::support::{Env, code, days, signal, stderr, stdout};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};
use std::time::Duration;

const LITE_POLICY: &str = r#"product = "ISPmanager Lite"
renew = true
period = "1 month"
before = "7d"

[[except]]
licname = "srv2006*"
renew = false
"#;

/// An account with one license of every kind the planner must tell apart.
async fn account(api: Api) -> Env {
    let env = Env::for_api(api).await;
    let t = env.today();
    let p = env.p;
    env.place(2001, p.lite, p.lite_month, t + days(3), 2); // due
    env.place(2002, p.lite, p.lite_month, t + days(20), 2); // not due
    env.place(2003, p.pro, p.pro_month, t + days(2), 2); // no policy (Pro)
    env.place(2004, p.lite, p.lite_trial, t + days(2), 2); // trial
    env.place(2005, p.lite, p.lite_month, t + days(2), 4); // deleted
    env.place(2006, p.lite, p.lite_month, t + days(1), 2); // excepted by licname
    env.place(2007, p.lite, p.lite_month, t - days(5), 3); // suspended, past due
    env.write_policy("ispmanager-lite.toml", LITE_POLICY);
    env
}

fn renewal_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "renewal")
        .collect()
}

fn fault(func: &str, elid: Option<i64>, kind: FaultKind, times: Option<u32>) -> Fault {
    Fault {
        func: Some(func.into()),
        elid,
        kind,
        times,
    }
}

async fn due_licenses_are_renewed_exactly_once_with_the_policys_period_and_nothing_else_is(
    api: Api,
) {
    let env = account(api).await;
    let before = env.sim.license(2001).expect("license");

    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;

    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(env.sim.paid_calls(2001), 1);
    assert_eq!(
        env.sim.paid_calls(2007),
        1,
        "past-due suspended license renewed"
    );
    assert_eq!(
        env.sim.paid_calls_total(),
        2,
        "no-policy, trial, deleted, excepted, not-due: untouched"
    );
    let after = env.sim.license(2001).expect("license");
    assert_eq!(
        after.expiredate,
        before
            .expiredate
            .checked_add_months(chrono::Months::new(1))
            .expect("date")
    );
    assert_eq!(after.period, env.p.lite_month);
    let why: std::collections::HashMap<i64, String> = renewal_events(&stderr(&first))
        .iter()
        .map(|e| {
            (
                e["elid"].as_i64().unwrap_or(0),
                format!(
                    "{} {}",
                    e["outcome"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or("")
                ),
            )
        })
        .collect();
    assert_eq!(why[&2001].trim(), "ok");
    assert_eq!(why[&2002], "skipped not due");
    assert_eq!(why[&2003], "skipped no policy");
    assert_eq!(why[&2004], "skipped trial");
    assert_eq!(why[&2005], "skipped deleted");
    assert_eq!(why[&2006], "skipped except #1: renew = false");
    let again = renewal_events(&stderr(&second));
    assert!(again.iter().all(|e| e["outcome"] != "ok"), "{again:?}");
    env.assert_no_credentials_in_urls();
    env.assert_no_canary_in_files();
}

async fn every_renewal_event_is_one_json_line_with_the_documented_fields(api: Api) {
    let env = account(api).await;

    let out = env.run(&["renew"]).await;

    let events = renewal_events(&stderr(&out));
    assert_eq!(events.len(), 7, "one event per license");
    let ok = events.iter().find(|e| e["elid"] == 2001).expect("2001");
    for k in [
        "timestamp",
        "level",
        "message",
        "event",
        "elid",
        "licname",
        "product",
        "period",
        "outcome",
        "cycle",
    ] {
        assert!(!ok[k].is_null(), "{k} missing in {ok}");
    }
    assert_eq!(ok["product"], "ISPmanager Lite");
    assert_eq!(ok["period"], "1 month");
    let cycle = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "cycle")
        .expect("a cycle event");
    assert_eq!(cycle["renewed"], 2);
    assert_eq!(cycle["skipped"], 5);
    assert_eq!(cycle["outcome"], "ok");
}

async fn an_error_document_for_one_license_is_recorded_and_the_others_still_renew(api: Api) {
    let env = account(api).await;
    env.sim.add_fault(Fault {
        func: Some(env.p.renew_func.into()),
        elid: Some(2001),
        kind: FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "The \"Period\" field has invalid value.".into(),
        },
        times: None,
    });

    let out = env.run(&["renew"]).await;
    let history = env.run(&["history", "--elid", "2001", "--json"]).await;

    assert_eq!(code(&out), 1, "a failed renewal fails the command");
    assert_eq!(
        env.sim.paid_calls(2007),
        1,
        "the other due license is renewed"
    );
    assert_eq!(env.sim.paid_calls(2001), 0);
    let ev = renewal_events(&stderr(&out))
        .into_iter()
        .find(|e| e["elid"] == 2001)
        .expect("event");
    assert_eq!(
        (
            ev["outcome"].as_str(),
            ev["error_type"].as_str(),
            ev["error_object"].as_str()
        ),
        (Some("error"), Some("value"), Some("period"))
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout(&history)).expect("json");
    assert_eq!(rows[0]["state"], "error");
    assert_eq!(rows[0]["error_type"], "value");
    assert_eq!(
        rows[0]["error_msg"],
        "The \"Period\" field has invalid value."
    );
}

async fn dry_run_prints_the_plan_and_makes_no_paid_call(api: Api) {
    let env = account(api).await;

    let out = env.run(&["renew", "--dry-run"]).await;
    let all = env.run(&["renew", "--dry-run", "--all"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sim.paid_calls_total(), 0);
    let text = stdout(&out);
    // The licenses it would renew first, then one line per skip reason, then the count.
    assert!(
        text.lines().any(|l| l.starts_with("2001")
            && l.contains("ISPmanager Lite")
            && l.contains("1 month")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with('1') && l.contains("skipped (no policy)")),
        "{text}"
    );
    assert!(text.contains("would renew 2"), "{text}");
    assert!(
        stdout(&all)
            .lines()
            .any(|l| l.starts_with("2003") && l.contains("no policy")),
        "{}",
        stdout(&all)
    );
    let submitted = |r: &licrenew::sim::RecordedRequest| r.form.iter().any(|(k, _)| k == "sok");
    assert!(
        !env.sim
            .requests()
            .iter()
            .any(|r| r.func == env.p.renew_func && submitted(r))
    );
}

async fn an_answer_lost_after_the_server_applied_is_reconciled_and_not_paid_again(api: Api) {
    let env = account(api).await;
    env.sim.add_fault(fault(
        env.p.renew_func,
        Some(2001),
        FaultKind::DropAfter,
        Some(1),
    ));

    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;
    let history = env.run(&["history", "--elid", "2001", "--json"]).await;

    assert_eq!(code(&first), 1, "an unknown outcome fails the cycle");
    let ev = renewal_events(&stderr(&first))
        .into_iter()
        .find(|e| e["elid"] == 2001)
        .expect("event");
    assert_eq!(ev["outcome"], "unknown");
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let rec = renewal_events(&stderr(&second))
        .into_iter()
        .find(|e| e["elid"] == 2001 && e["outcome"] == "reconciled_ok");
    assert!(rec.is_some(), "{}", stderr(&second));
    assert_eq!(env.sim.paid_calls(2001), 1, "paid once, not twice");
    let rows: serde_json::Value = serde_json::from_str(&stdout(&history)).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1));
    assert_eq!(rows[0]["state"], "reconciled_ok");
}

async fn an_answer_lost_before_the_server_applied_is_renewed_once_after_settling(api: Api) {
    let env = account(api).await;
    env.write_config("[renewal]\nsettle = \"0s\"\n");
    env.sim.add_fault(fault(
        env.p.renew_func,
        Some(2001),
        FaultKind::DropBefore,
        Some(1),
    ));

    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;
    let history = env.run(&["history", "--elid", "2001", "--json"]).await;

    assert_eq!(code(&first), 1);
    assert_eq!(
        env.sim.paid_calls(2001),
        1,
        "renewed once in the second cycle"
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&history)).expect("json");
    let states: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["state"].as_str())
        .collect();
    assert_eq!(states, ["ok", "reconciled_failed"], "newest first");
}

async fn an_unknown_outcome_is_left_alone_while_settling(api: Api) {
    let env = account(api).await;
    env.sim.add_fault(fault(
        env.p.renew_func,
        Some(2001),
        FaultKind::DropBefore,
        Some(1),
    ));

    env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;

    assert_eq!(
        env.sim.paid_calls(2001),
        0,
        "default settle is 5 minutes: no resend"
    );
    let ev = renewal_events(&stderr(&second))
        .into_iter()
        .filter(|e| e["elid"] == 2001)
        .collect::<Vec<_>>();
    assert!(ev.iter().all(|e| e["outcome"] == "unknown"), "{ev:?}");
    assert!(ev.iter().any(|e| e["reason"] == "settling"), "{ev:?}");
    // One license still settling is one unknown outcome in the cycle, not one per phase.
    assert_eq!(ev.len(), 1, "{ev:?}");
    let cycle = crate::ledger::events(&second, "cycle");
    assert_eq!(
        cycle.last().map(|c| c["unknown"].clone()),
        Some(1.into()),
        "{cycle:?}"
    );
}

async fn a_bad_policy_file_exits_78_naming_file_and_line_and_changes_nothing(api: Api) {
    let env = account(api).await;
    env.write_policy(
        "zz-broken.toml",
        "product = \"ISPmanager Pro\"\nrenew = true\nperiod = \"trial\"\n",
    );

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("zz-broken.toml:3"), "{err}");
    assert!(
        env.sim.requests().is_empty(),
        "no request before the policies are valid"
    );
    assert!(!env.database_exists().await, "the database is not touched");
}

async fn the_database_shows_licenses_and_their_last_outcome(api: Api) {
    let env = account(api).await;

    env.run(&["renew"]).await;
    let out = env.run(&["licenses", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let by_id = |id: i64| {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["elid"] == id)
            .cloned()
            .expect("row")
    };
    assert_eq!(by_id(2001)["last_outcome"], "ok");
    assert_eq!(by_id(2003)["last_reason"], "no policy");
    assert_eq!(rows.as_array().map(Vec::len), Some(7));
}

async fn manual_commands_work_beside_an_idle_service_and_wait_for_a_running_cycle(api: Api) {
    let env = account(api).await;
    env.write_config("[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_at_start = false\n");
    let mut daemon = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    env.wait_for_database().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Idle between ticks: nothing is locked, every command works.
    let dry = env.run(&["renew", "--dry-run"]).await;
    let history = env.run(&["history"]).await;
    let licenses = env.run(&["licenses"]).await;
    let renew = env.run(&["renew"]).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;

    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    assert_eq!(code(&history), 0, "{}", stderr(&history));
    assert_eq!(code(&licenses), 0, "{}", stderr(&licenses));
    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    assert_eq!(env.sim.paid_calls(2001), 1);

    // A cycle in progress (its paid call held by the server): `--no-wait` fails fast, a plain
    // `renew` waits for it, then works, and pays nothing twice.
    env.place(2008, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    env.sim.add_fault(fault(
        &env.func("software.period"),
        Some(2008),
        FaultKind::Delay { ms: 3000 },
        Some(1),
    ));
    env.write_config("[schedule]\ncron = \"0 0 0 1 1 *\"\n[billmgr]\n");
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        text.replace("\n[billmgr]\n", "\n")
            .replace("timeout = \"3s\"", "timeout = \"10s\""),
    )
    .expect("config");
    let mut daemon = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for(
        || crate::ledger::seen_for(&env, &env.func("software.period"), 2008),
        "the cycle's paid call in flight",
    )
    .await;
    let refused = env.run(&["renew", "--no-wait"]).await;
    let waited = env.run(&["renew"]).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;

    assert_eq!(code(&refused), 1);
    assert!(
        stderr(&refused).contains("another licrenew process"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(code(&waited), 0, "{}", stderr(&waited));
    assert!(stderr(&waited).contains("waiting"), "{}", stderr(&waited));
    assert_eq!(env.sim.paid_calls(2008), 1, "paid once, by the cycle");
}

async fn run_renews_on_schedule_picks_up_a_policy_on_sighup_and_exits_0_on_sigterm(api: Api) {
    let env = account(api).await;
    env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
    let mut daemon = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = daemon.id().expect("pid") as i32;

    wait_for(
        || env.sim.paid_calls(2001) == 1,
        "the first scheduled renewal",
    )
    .await;
    env.write_policy(
        "ispmanager-pro.toml",
        "product = \"ISPmanager Pro\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n",
    );
    signal(pid, "HUP");
    wait_for(
        || env.sim.paid_calls(2003) == 1,
        "the Pro license after reload",
    )
    .await;
    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .expect("exits")
        .expect("status");

    assert_eq!(status.code(), Some(0));
    assert_eq!(env.sim.paid_calls(2001), 1, "one renewal over many cycles");
    assert_eq!(env.sim.paid_calls(2003), 1);
}

async fn an_invalid_policy_on_sighup_keeps_the_running_ones(api: Api) {
    let env = account(api).await;
    env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
    let daemon = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = daemon.id().expect("pid") as i32;
    wait_for(|| env.sim.paid_calls(2001) == 1, "the first renewal").await;

    env.write_policy(
        "broken.toml",
        "product = \"ISPmanager Pro\"\nrenew = maybe\n",
    );
    signal(pid, "HUP");
    // A license that becomes due after the bad reload is still renewed by the old policies.
    env.place(2010, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    wait_for(
        || env.sim.paid_calls(2010) == 1,
        "renewal under the kept policies",
    )
    .await;
    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), daemon.wait_with_output())
        .await
        .expect("exits")
        .expect("output");

    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("reload refused"), "{}", stderr(&out));
    assert_eq!(env.sim.paid_calls(2003), 0);
}

async fn a_kill_9_while_the_paid_call_is_in_flight_leads_to_one_extension_not_two(api: Api) {
    let env = account(api).await;
    // The server applies the renewal 1.5 s after it arrives, whatever the client does.
    env.sim.add_fault(fault(
        env.p.renew_func,
        Some(2001),
        FaultKind::Delay { ms: 1500 },
        Some(1),
    ));
    let mut first = env
        .command(&["renew"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");

    wait_for(
        || {
            // 2007 is renewed concurrently: wait for 2001's own paid call, and for 2007's to
            // be applied (otherwise a kill before the server applied it leaves 2007 settling
            // and the second run exits 1 for that reason, not for 2001's).
            env.sim.requests().iter().any(|r| {
                r.func == env.p.renew_func && r.form.iter().any(|(k, v)| k == "elid" && v == "2001")
            }) && env.sim.paid_calls(2007) == 1
        },
        "the paid call in flight",
    )
    .await;
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    wait_for(|| env.sim.paid_calls(2001) == 1, "the server applying it").await;
    let second = env.run(&["renew"]).await;

    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(env.sim.paid_calls(2001), 1, "one extension, not two");
    let rec = renewal_events(&stderr(&second))
        .into_iter()
        .find(|e| e["elid"] == 2001)
        .expect("event");
    assert_eq!(rec["outcome"], "reconciled_ok");
}

all_backends!(due_licenses_are_renewed_exactly_once_with_the_policys_period_and_nothing_else_is);
all_backends!(every_renewal_event_is_one_json_line_with_the_documented_fields);
all_backends!(an_error_document_for_one_license_is_recorded_and_the_others_still_renew);
all_backends!(dry_run_prints_the_plan_and_makes_no_paid_call);
all_backends!(an_answer_lost_after_the_server_applied_is_reconciled_and_not_paid_again);
all_backends!(an_answer_lost_before_the_server_applied_is_renewed_once_after_settling);
all_backends!(an_unknown_outcome_is_left_alone_while_settling);
all_backends!(a_bad_policy_file_exits_78_naming_file_and_line_and_changes_nothing);
all_backends!(the_database_shows_licenses_and_their_last_outcome);
all_backends!(manual_commands_work_beside_an_idle_service_and_wait_for_a_running_cycle);
all_backends!(run_renews_on_schedule_picks_up_a_policy_on_sighup_and_exits_0_on_sigterm);
all_backends!(an_invalid_policy_on_sighup_keeps_the_running_ones);
all_backends!(a_kill_9_while_the_paid_call_is_in_flight_leads_to_one_extension_not_two);

#[tokio::test]
async fn a_license_with_server_side_autoprolong_is_skipped_unless_the_policy_overrides_it() {
    let env = Env::for_api(Api::Billmgr5).await;
    let t = env.today();
    let mut auto = env.place(2101, env.p.lite, env.p.lite_month, t + days(2), 2);
    auto.autoprolong = Some(1);
    env.sim.upsert_license(auto);
    env.place(2102, env.p.lite, env.p.lite_month, t + days(2), 2);
    env.write_policy("ispmanager-lite.toml", LITE_POLICY);

    let first = env.run(&["renew"]).await;
    env.write_policy(
        "ispmanager-lite.toml",
        &format!("override_autoprolong = true\n{LITE_POLICY}"),
    );
    let second = env.run(&["renew"]).await;

    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let ev = renewal_events(&stderr(&first))
        .into_iter()
        .find(|e| e["elid"] == 2101)
        .expect("event");
    assert_eq!(
        (ev["outcome"].as_str(), ev["reason"].as_str()),
        (Some("skipped"), Some("autoprolong"))
    );
    assert_eq!(
        env.sim.paid_calls(2102),
        1,
        "the license without autoprolong is renewed"
    );
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert_eq!(
        env.sim.paid_calls(2101),
        1,
        "renewed only once the policy overrides autoprolong"
    );
}

#[tokio::test]
async fn billmgr5_dry_run_shows_the_previewed_new_expiry_and_pays_nothing() {
    let env = account(Api::Billmgr5).await;
    let before = env.sim.license(2001).expect("license").expiredate;

    let out = env.run(&["renew", "--dry-run", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sim.paid_calls_total(), 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let ev = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["elid"] == 2001)
        .cloned()
        .expect("2001");
    assert_eq!(ev["outcome"], "dry_run");
    let want = before
        .checked_add_months(chrono::Months::new(1))
        .expect("date")
        .to_string();
    assert_eq!(ev["new_expiry"].as_str(), Some(want.as_str()));
    let funcs: Vec<String> = env.sim.requests().iter().map(|r| r.func.clone()).collect();
    assert!(
        funcs.iter().any(|f| f == "service.prolong"),
        "the preview was asked: {funcs:?}"
    );
    assert!(
        env.sim
            .requests()
            .iter()
            .filter(|r| r.func == "service.prolong")
            .all(|r| !r.form.iter().any(|(k, _)| k == "sok")),
        "a preview never submits"
    );
}

#[tokio::test]
async fn conflicting_evidence_during_reconciliation_stops_renewals_of_that_license() {
    let env = account(Api::Billmgr4).await;
    env.write_config("[renewal]\nsettle = \"0s\"\n");
    env.sim.add_fault(fault(
        env.p.renew_func,
        Some(2001),
        FaultKind::DropBefore,
        Some(1),
    ));
    env.run(&["renew"]).await;
    // Someone moved the expiry backwards: neither "renewed" nor "unchanged".
    let mut l = env.sim.license(2001).expect("license");
    l.expiredate -= days(10);
    env.sim.upsert_license(l);

    let out = env.run(&["renew"]).await;

    assert_eq!(
        env.sim.paid_calls(2001),
        0,
        "nothing is paid while the evidence conflicts"
    );
    let ev = renewal_events(&stderr(&out))
        .into_iter()
        .find(|e| e["elid"] == 2001)
        .expect("event");
    assert_eq!(ev["outcome"], "unknown");
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or("")
            .contains("conflicting evidence"),
        "{ev}"
    );
    assert_eq!(code(&out), 1, "an unknown outcome fails the command");
}
