//! Every admin operation run as the real binary against the simulator on loopback.

use crate::both_apis;
use crate::support::{CANARY, Env, code, days, stderr, stdout};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};

#[tokio::test]
async fn catalog_needs_no_config_and_lists_every_product() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_licrenew"))
        .arg("catalog")
        .env_remove("LICRENEW_CONFIG")
        .output()
        .await
        .expect("runs");

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for name in [
        "ISPmanager Lite",
        "ISPmanager Pro",
        "VDSmanager-FreeBSD",
        "BILLmanager Corporate",
        "DSmanager",
        "IPmanager",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(
        text.contains("661"),
        "DSmanager lifetime period id:\n{text}"
    );
}

async fn licenses_live_shows_the_accounts_licenses_as_a_table_and_as_json(api: Api) {
    let env = Env::for_api_with(api, 12).await;

    let table = env.run(&["licenses", "--live"]).await;
    let json = env.run(&["licenses", "--live", "--json"]).await;

    assert_eq!(code(&table), 0, "{}", stderr(&table));
    assert!(
        stdout(&table).contains("12 license(s)"),
        "{}",
        stdout(&table)
    );
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    let mut ids: Vec<i64> = parsed
        .as_array()
        .expect("array")
        .iter()
        .map(|l| l["elid"].as_i64().expect("elid"))
        .collect();
    ids.sort();
    let mut want: Vec<i64> = env.sim.licenses().iter().map(|l| l.id).collect();
    want.sort();
    assert_eq!(ids, want);
    env.assert_no_credentials_in_urls();
}

async fn order_creates_a_license_and_prints_its_id(api: Api) {
    let env = Env::for_api(api).await;

    let out = env
        .run(&[
            "order",
            "--product",
            "ISPmanager Lite",
            "--period",
            "1 month",
            "--licname",
            "web9",
            "--ip",
            "198.51.100.9",
            "--json",
        ])
        .await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let id = v["elid"].as_i64().expect("an id");
    let lic = env.sim.license(id).expect("the license exists");
    assert_eq!(
        (lic.price, lic.period, lic.licname.as_str(), lic.ip.as_str()),
        (env.p.lite, env.p.lite_month, "web9", "198.51.100.9")
    );
    assert_eq!(env.sim.paid_calls_total(), 1);
    assert!(
        !env.sim
            .requests()
            .iter()
            .any(|r| r.form.iter().any(|(_, v)| v == "basket")),
        "an order is never left unpaid in the cart"
    );
    env.assert_no_credentials_in_urls();
}

#[tokio::test]
async fn a_period_of_another_product_is_refused_before_any_call() {
    let env = Env::new().await;

    let out = env
        .run(&[
            "order",
            "--product",
            "ISPmanager Pro",
            "--period",
            "8",
            "--licname",
            "x",
            "--ip",
            "198.51.100.9",
        ])
        .await;
    let unknown = env
        .run(&[
            "ip-check",
            "--product",
            "IPmanager",
            "--period",
            "1 year",
            "--ip",
            "198.51.100.9",
        ])
        .await;

    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("period 8 belongs to ISPmanager Lite, not to ISPmanager Pro"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&unknown), 2, "{}", stderr(&unknown));
    assert!(env.sim.requests().is_empty(), "no request may leave");
}

async fn ip_check_says_available_or_not_with_the_apis_error(api: Api) {
    let env = Env::for_api(api).await;
    env.place(
        2001,
        env.p.lite,
        env.p.lite_month,
        env.today() + days(20),
        2,
    );

    let free = env
        .run(&[
            "ip-check",
            "--product",
            "lite",
            "--period",
            "1 month",
            "--ip",
            "198.51.100.77",
        ])
        .await;
    let taken = env
        .run(&[
            "ip-check",
            "--product",
            "lite",
            "--period",
            "1 month",
            "--ip",
            "203.0.113.2",
        ])
        .await;

    assert_eq!(code(&free), 0, "{}", stderr(&free));
    assert!(stdout(&free).contains("available"), "{}", stdout(&free));
    assert_eq!(code(&taken), 1, "{}", stderr(&taken));
    assert!(
        stderr(&taken).contains("type=exists object=ip"),
        "{}",
        stderr(&taken)
    );
    assert_eq!(env.sim.paid_calls_total(), 0);
}

async fn edit_changes_the_name_and_a_second_ip_change_in_a_month_is_refused(api: Api) {
    let env = Env::for_api(api).await;
    env.place(
        2002,
        env.p.lite,
        env.p.lite_month,
        env.today() + days(20),
        2,
    );

    let name = env
        .run(&["edit", "2002", "--licname", "renamed.example.net"])
        .await;
    let ip1 = env.run(&["edit", "2002", "--ip", "198.51.100.20"]).await;
    let ip2 = env.run(&["edit", "2002", "--ip", "198.51.100.21"]).await;
    let nothing = env.run(&["edit", "2002"]).await;

    assert_eq!(code(&name), 0, "{}", stderr(&name));
    assert_eq!(code(&ip1), 0, "{}", stderr(&ip1));
    assert_eq!(code(&ip2), 1, "{}", stderr(&ip2));
    assert!(
        stderr(&ip2).contains("type=value object=ip"),
        "{}",
        stderr(&ip2)
    );
    assert_eq!(code(&nothing), 2);
    let lic = env.sim.license(2002).expect("license");
    assert_eq!(
        (lic.licname.as_str(), lic.ip.as_str()),
        ("renamed.example.net", "198.51.100.20")
    );
}

async fn prolong_renews_once_and_refuses_a_trial_or_foreign_period_before_paying(api: Api) {
    let env = Env::for_api(api).await;
    let exp = env.today() + days(5);
    env.place(2003, env.p.pro, env.p.pro_month, exp, 2);

    let trial = env.run(&["prolong", "2003", "--period", "trial"]).await;
    let foreign = env.run(&["prolong", "2003", "--period", "8"]).await;
    let ok = env.run(&["prolong", "2003", "--period", "1 month"]).await;

    assert_eq!(code(&trial), 2, "{}", stderr(&trial));
    assert_eq!(code(&foreign), 2, "{}", stderr(&foreign));
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    assert_eq!(env.sim.paid_calls(2003), 1);
    assert_eq!(
        env.sim.license(2003).expect("license").expiredate,
        exp.checked_add_months(chrono::Months::new(1))
            .expect("date")
    );
    env.assert_no_credentials_in_urls();
}

async fn an_api_error_exits_1_and_prints_type_object_and_message(api: Api) {
    let env = Env::for_api(api).await;
    env.place(2004, env.p.lite, env.p.lite_month, env.today() + days(5), 2);
    env.sim.add_fault(Fault {
        func: Some(env.p.renew_func.into()),
        elid: None,
        kind: FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "The period is not valid".into(),
        },
        times: None,
    });

    let out = env.run(&["prolong", "2004", "--period", "1 month"]).await;

    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("type=value object=period"), "{err}");
    assert!(err.contains("The period is not valid"), "{err}");
    assert_eq!(env.sim.paid_calls(2004), 0);
}

async fn a_wrong_password_exits_1_with_the_auth_error_and_tries_once(api: Api) {
    let env = Env::for_api(api).await;
    std::fs::write(env.path("secret"), "not-the-password\n").expect("write");

    let out = env.run(&["licenses", "--live"]).await;

    assert_eq!(code(&out), 1);
    // BILLmanager 4 refuses with `<authfail/>`, 5/6 with `<error type="auth">`.
    let object = match api {
        Api::Billmgr4 => "authfail",
        Api::Billmgr5 => "badpassword",
    };
    assert!(
        stderr(&out).contains(&format!("type=auth object={object}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sim.login_failures(), 1, "one attempt, no loop");
}

async fn a_config_error_exits_78_names_file_and_key_and_sends_nothing(api: Api) {
    let env = Env::for_api(api).await;
    env.write_config("[renewal]\nmax_per_cylce = 3\n");

    let out = env.run(&["licenses", "--live"]).await;

    assert_eq!(code(&out), 78);
    let err = stderr(&out);
    assert!(err.contains(&env.config.display().to_string()), "{err}");
    assert!(err.contains("max_per_cylce"), "{err}");
    assert!(env.sim.requests().is_empty());
}

async fn session_auth_logs_in_and_survives_an_expired_session(api: Api) {
    let env = Env::for_api(api).await;
    env.place(2005, env.p.lite, env.p.lite_month, env.today() + days(5), 2);
    env.write_config("");
    let text = std::fs::read_to_string(&env.config)
        .expect("read")
        .replace("read_attempts = 2", "read_attempts = 2\nauth = \"session\"");
    std::fs::write(&env.config, text).expect("write");
    env.sim.add_fault(Fault {
        func: Some(env.p.list_func.into()),
        elid: None,
        kind: FaultKind::SessionExpired,
        times: Some(1),
    });

    let out = env.run(&["licenses", "--live", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("2005"));
    let funcs: Vec<String> = env.sim.requests().iter().map(|r| r.func.clone()).collect();
    assert_eq!(
        funcs.iter().filter(|f| *f == "auth").count(),
        2,
        "{funcs:?}"
    );
    for r in env.sim.requests().iter().filter(|r| r.func != "auth") {
        assert!(
            r.form
                .iter()
                .all(|(k, v)| k != "authinfo" && !v.contains(CANARY)),
            "{r:?}"
        );
    }
}

both_apis!(licenses_live_shows_the_accounts_licenses_as_a_table_and_as_json);
both_apis!(order_creates_a_license_and_prints_its_id);
both_apis!(ip_check_says_available_or_not_with_the_apis_error);
both_apis!(edit_changes_the_name_and_a_second_ip_change_in_a_month_is_refused);
both_apis!(prolong_renews_once_and_refuses_a_trial_or_foreign_period_before_paying);
both_apis!(an_api_error_exits_1_and_prints_type_object_and_message);
both_apis!(a_wrong_password_exits_1_with_the_auth_error_and_tries_once);
both_apis!(a_config_error_exits_78_names_file_and_key_and_sends_nothing);
both_apis!(session_auth_logs_in_and_survives_an_expired_session);

#[tokio::test]
async fn billmgr5_reads_every_page_of_a_large_account() {
    let env = Env::for_api_with(Api::Billmgr5, 2500).await;

    let out = env.run(&["licenses", "--live", "--json"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let mut got: Vec<i64> = parsed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|l| l["elid"].as_i64())
        .collect();
    got.sort();
    let mut want: Vec<i64> = env.sim.licenses().iter().map(|l| l.id).collect();
    want.sort();
    assert_eq!(got, want);
    let pages: Vec<String> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.func == "soft")
        .filter_map(|r| {
            r.form
                .iter()
                .find(|(k, _)| k == "p_num")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);
    assert!(
        !env.sim
            .requests()
            .iter()
            .any(|r| r.func.starts_with("software")),
        "no v4 function on a v5 server"
    );
}

#[tokio::test]
async fn billmgr5_orders_a_tariff_id_the_catalog_does_not_know_instead_of_refusing_it() {
    let env = Env::for_api(Api::Billmgr5).await;

    let out = env
        .run(&[
            "order",
            "--product",
            "77777",
            "--period",
            "12",
            "--licname",
            "x",
            "--ip",
            "198.51.100.9",
            // The simulator's IP check refuses a tariff it does not know; the point here is
            // that licrenew sends the id instead of refusing it locally.
            "--allow-duplicate",
        ])
        .await;

    let sent = env
        .sim
        .requests()
        .into_iter()
        .find(|r| r.func == "soft.order.param")
        .expect("the order was sent");
    let field = |k: &str| {
        sent.form
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        (field("pricelist").as_deref(), field("period").as_deref()),
        (Some("77777"), Some("12"))
    );
    assert_eq!(
        code(&out),
        1,
        "the simulator does not sell 77777: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("type=value"), "{}", stderr(&out));
}

#[tokio::test]
async fn prolong_refuses_a_license_the_billing_auto_renews_unless_told_to_override() {
    let env = Env::for_api(Api::Billmgr5).await;
    let mut lic = env.place(2201, env.p.lite, env.p.lite_month, env.today() + days(3), 2);
    lic.autoprolong = Some(1);
    env.sim.upsert_license(lic);

    let refused = env.run(&["prolong", "2201", "--period", "1 month"]).await;
    let forced = env
        .run(&[
            "prolong",
            "2201",
            "--period",
            "1 month",
            "--override-autoprolong",
        ])
        .await;

    assert_eq!(code(&refused), 2, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("autoprolong"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert_eq!(env.sim.paid_calls(2201), 1);
}

/// README's first command: `licrenew demo` runs its simulator, loads its sample policies
/// under `api = "auto"` (BILLmanager 4-only products included), renews, and stops on SIGINT.
#[tokio::test]
async fn the_demo_renews_and_stops_cleanly() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_licrenew"))
        .args(["demo", "--every", "1", "--licenses", "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the demo");
    let pid = child.id().expect("pid");
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let renewed = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = err.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if line.contains("cycle finished") && line.contains("renewed") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    crate::support::signal(pid, "INT");
    let out = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the demo stops")
        .expect("status");

    assert!(renewed, "no cycle finished:\n{log}");
    assert!(!log.contains("unknown product"), "{log}");
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("licrenew demo"));
}
