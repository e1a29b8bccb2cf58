//! The operator's day (issue 12): one database wherever licrenew is started, manual commands
//! beside the service, a cycle at start and on SIGUSR1.

use crate::ledger::{LITE, assert_invariants, place_due, wait_for};
use crate::support::{Env, code, signal, stderr, stdout};
use std::time::Duration;

/// The config without any `[database]`: the default location applies.
fn without_database(env: &Env) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("[database]") && !l.starts_with("url = \"licrenew.db\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&env.config, text).expect("config");
}

fn database_line(out: &std::process::Output) -> String {
    stdout(out)
        .lines()
        .find(|l| l.starts_with("database"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_database_is_the_same_whoever_starts_licrenew_and_an_old_one_is_warned_about() {
    let env = Env::new().await;
    without_database(&env);

    let plain = env.run(&["check"]).await;
    let state = env.path("state");
    let service = env
        .run_env(&["check"], &[("STATE_DIRECTORY", &state.to_string_lossy())])
        .await;
    std::fs::write(env.path("licrenew.db"), b"an old journal").expect("old db");
    let warned = env.run(&["check"]).await;

    assert_eq!(code(&plain), 0, "{}", stderr(&plain));
    assert_eq!(
        database_line(&plain),
        "database   /var/lib/licrenew/licrenew.db (sqlite)"
    );
    assert_eq!(database_line(&service), database_line(&plain));
    assert!(
        stdout(&warned).contains("another licrenew database exists at")
            && stdout(&warned).contains(&env.path("licrenew.db").display().to_string()),
        "{}",
        stdout(&warned)
    );
}

#[tokio::test]
async fn of_two_concurrent_prolongs_of_one_license_the_second_pays_nothing() {
    let env = Env::new().await;
    let due = place_due(&env, 3001, 1);
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some("software.period".into()),
        elid: Some(3001),
        kind: licrenew::sim::FaultKind::Delay { ms: 1500 },
        times: Some(1),
    });
    let slow = [("LICRENEW__BILLMGR__TIMEOUT", "10s")];
    let first = env
        .command(&["prolong", "3001", "--period", "1 month"], &slow)
        .output();
    let second = async {
        wait_for(
            || crate::ledger::seen_for(&env, "software.period", 3001),
            "the first paid call in flight",
        )
        .await;
        env.run_env(&["prolong", "3001", "--period", "1 month"], &slow)
            .await
    };

    let (first, second) = tokio::join!(first, second);
    let first = first.expect("first runs");

    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(code(&second), 0, "{}", stderr(&second));
    assert!(stderr(&second).contains("waiting"), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("was renewed meanwhile")
            && stdout(&second).contains("nothing paid now"),
        "{}",
        stdout(&second)
    );
    assert_eq!(env.sim.paid_calls(3001), 1, "one payment");
    assert_invariants(&env, &due).await;
}

#[tokio::test]
async fn the_service_runs_a_cycle_at_start_and_another_on_sigusr1() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.write_config("[schedule]\ncron = \"0 0 0 1 1 *\"\n");
    place_due(&env, 3001, 1);
    let mut daemon = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = daemon.id().expect("pid");

    wait_for(|| env.sim.paid_calls(3001) == 1, "the cycle at start").await;
    place_due(&env, 3002, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_signal = env.sim.paid_calls(3002);
    signal(pid, "USR1");
    wait_for(|| env.sim.paid_calls(3002) == 1, "the cycle on SIGUSR1").await;
    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), daemon.wait())
        .await
        .expect("exits")
        .expect("status");

    assert_eq!(before_signal, 0, "the schedule alone would not have run it");
    assert!(status.success());
}

/// Three ISPmanager 6 Lite licenses due (6.50 EUR a month each in the simulator), expiring on
/// consecutive days.
fn three_due(env: &Env) -> Vec<(i64, chrono::NaiveDate)> {
    (0..3)
        .map(|i| {
            let expiry = env.today() + chrono::Duration::days(2 + i);
            env.place(4001 + i, env.p.lite, env.p.lite_month, expiry, 2);
            (4001 + i, expiry)
        })
        .collect()
}

#[tokio::test]
async fn a_balance_that_covers_one_renewal_pays_the_earliest_and_alerts_the_shortfall_once() {
    let env = Env::for_api(licrenew::config::Api::Billmgr5).await;
    env.write_policy("lite.toml", LITE);
    three_due(&env);
    env.sim.set_balance(1000);

    let out = env.run(&["renew"]).await;
    let status = env.run(&["status", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sim.paid_calls(4001), 1, "the earliest expiry first");
    assert_eq!(env.sim.paid_calls(4002) + env.sim.paid_calls(4003), 0);
    for elid in [4002, 4003] {
        let ev = crate::ledger::renewal_event(&out, elid);
        assert_eq!(
            (ev["outcome"].as_str(), ev["reason"].as_str()),
            (Some("skipped"), Some("balance")),
            "{ev}"
        );
    }
    let alerts: Vec<_> = crate::ledger::events(&out, "alert")
        .into_iter()
        .filter(|a| a["kind"] == "insufficient_balance")
        .collect();
    assert_eq!(alerts.len(), 1, "{}", stderr(&out));
    assert!(
        alerts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("9.50 EUR")),
        "19.50 planned, 10.00 there: {}",
        alerts[0]
    );
    let s: serde_json::Value = serde_json::from_str(&stdout(&status)).expect("json");
    assert_eq!(s["service"]["balance"]["cents"], 1000, "{s}");
}

#[tokio::test]
async fn the_spend_cap_counts_the_last_day_and_skips_what_would_pass_it() {
    let env = Env::for_api(licrenew::config::Api::Billmgr5).await;
    env.write_policy("lite.toml", LITE);
    env.write_config("[renewal]\nmax_spend_per_day = 10\n");
    three_due(&env);

    let out = env.run(&["renew"]).await;
    let history = env.run(&["history", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sim.paid_calls(4001), 1);
    assert_eq!(env.sim.paid_calls(4002) + env.sim.paid_calls(4003), 0);
    let ev = crate::ledger::renewal_event(&out, 4002);
    assert_eq!(ev["reason"], "spend cap", "{ev}");
    let alerts: Vec<_> = crate::ledger::events(&out, "alert")
        .into_iter()
        .filter(|a| a["kind"] == "spend_cap")
        .collect();
    assert_eq!(alerts.len(), 1, "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&history)).expect("json");
    let paid = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["elid"] == 4001)
        .expect("the journal row");
    assert_eq!(
        (paid["cost_cents"].as_i64(), paid["cost_currency"].as_str()),
        (Some(650), Some("EUR"))
    );
}

#[tokio::test]
async fn a_dry_run_totals_the_cost_and_a_billmgr4_catalog_price_reaches_the_journal() {
    let v5 = Env::for_api(licrenew::config::Api::Billmgr5).await;
    v5.write_policy("lite.toml", LITE);
    three_due(&v5);
    let dry = v5.run(&["renew", "--dry-run"]).await;

    let v4 = Env::new().await;
    v4.write_policy("lite.toml", LITE);
    let catalog = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog.toml"),
    )
    .expect("catalog")
    .replacen(
        "{ id = 8, label = \"1 month\", kind = \"months\", months = 1 }",
        "{ id = 8, label = \"1 month\", kind = \"months\", months = 1, price = \"12.50 EUR\" }",
        1,
    );
    std::fs::write(v4.path("catalog.toml"), catalog).expect("catalog");
    v4.write_config("[catalog]\npath = \"catalog.toml\"\n");
    place_due(&v4, 3001, 1);
    let paid = v4.run(&["renew"]).await;
    let history = v4.run(&["history"]).await;

    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("would renew 3, total 19.50 EUR"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(v5.sim.paid_calls_total(), 0);
    assert_eq!(code(&paid), 0, "{}", stderr(&paid));
    assert!(
        stdout(&history).contains("12.50 EUR"),
        "{}",
        stdout(&history)
    );
}

#[tokio::test]
async fn licenses_and_status_show_every_license_its_plan_and_the_problems() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    let t = env.today();
    env.place(3001, 7, 8, t + chrono::Duration::days(3), 2); // due: renewed
    env.place(3002, 7, 8, t + chrono::Duration::days(20), 2); // renews on a later day
    env.place(3003, 11, 16, t + chrono::Duration::days(1), 2); // no policy, expiring
    env.place(3004, 7, 8, t + chrono::Duration::days(2), 2); // its renewal fails
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some("software.period".into()),
        elid: Some(3004),
        kind: licrenew::sim::FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "refused".into(),
        },
        times: None,
    });
    let _ = env.run(&["renew"]).await;

    let table = env.run(&["licenses", "--expiring", "30d"]).await;
    let json = env.run(&["licenses", "--json"]).await;
    let status = env.run(&["status"]).await;

    assert_eq!(code(&table), 0, "{}", stderr(&table));
    let row = |elid: &str| {
        stdout(&table)
            .lines()
            .find(|l| l.starts_with(elid))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("3002").contains(&(t + chrono::Duration::days(13)).to_string()),
        "{}",
        stdout(&table)
    );
    assert!(
        row("3003").contains("none") && row("3003").contains("no policy"),
        "{}",
        row("3003")
    );
    let views: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    let v = views
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v["elid"] == 3002)
        .expect("3002");
    assert_eq!(v["product"], "ISPmanager Lite");
    assert_eq!(v["product_id"], 7);
    assert_eq!(v["period"], "1 month");
    assert_eq!(v["policy"], "renew");
    let text = stdout(&status);
    assert!(text.contains("renewals in the next 30 days"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("renewal_failed") && l.contains("3004")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("expiring_uncovered") && l.contains("3003")),
        "{text}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    for i in 0..40 {
        env.place(5000 + i, 7, 8, env.today() + chrono::Duration::days(3), 2);
    }
    for cmd in ["catalog", "renew --dry-run --all", "licenses"] {
        let script = format!(
            "{} --config {} {cmd} 2>{} | head -1",
            env!("CARGO_BIN_EXE_licrenew"),
            env.config.display(),
            env.path("err").display()
        );
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .await
            .expect("sh");
        let err = std::fs::read_to_string(env.path("err")).expect("stderr");

        assert!(out.status.success(), "{cmd}");
        assert_eq!(stdout(&out).lines().count(), 1, "{cmd}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{cmd}: {err}"
        );
    }
}

#[tokio::test]
async fn json_is_offered_where_a_command_prints_a_result_and_refused_where_not() {
    let env = Env::new().await;

    let check = env.run(&["check", "--json"]).await;
    let status = env.run(&["status", "--json"]).await;
    let run = env.run(&["run", "--json"]).await;

    let parsed: serde_json::Value = serde_json::from_str(&stdout(&check)).expect("json");
    assert_eq!(parsed["ok"], true);
    assert!(
        parsed["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["item"] == "database")),
        "{parsed}"
    );
    serde_json::from_str::<serde_json::Value>(&stdout(&status)).expect("status json");
    assert_eq!(code(&run), 2, "a usage error: {}", stderr(&run));
}

#[tokio::test]
async fn an_override_error_names_the_variable_not_the_file() {
    let env = Env::new().await;

    let out = env
        .run_env(&["check"], &[("LICRENEW__RENEWAL__MAX_PER_CYCLE", "lots")])
        .await;

    assert_eq!(code(&out), 78);
    let err = stderr(&out);
    assert!(err.contains("LICRENEW__RENEWAL__MAX_PER_CYCLE"), "{err}");
    assert!(!err.contains("licrenew.toml"), "{err}");
}

#[tokio::test]
async fn a_root_shell_works_as_the_database_owner_and_leaves_no_root_owned_file() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid only reads.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (CI runs as root)");
        return;
    }
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    place_due(&env, 3001, 1);
    // The service's user (here `nobody`) owns the state folder, as StateDirectory= makes it.
    let state = env.path("state");
    std::fs::create_dir(&state).expect("state dir");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    env.write_config("[database]\nurl = \"state/licrenew.db\"\n");

    let renew = env.run(&["renew"]).await;
    let history = env.run(&["history"]).await;

    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    assert_eq!(code(&history), 0, "{}", stderr(&history));
    for entry in std::fs::read_dir(&state).expect("state").flatten() {
        let meta = entry.metadata().expect("meta");
        assert_eq!(
            meta.uid(),
            65534,
            "{} is owned by uid {}",
            entry.path().display(),
            meta.uid()
        );
    }
    assert_eq!(env.sim.paid_calls(3001), 1);
}
