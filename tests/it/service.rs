//! `licrenew run` as a service: systemd notifications and alert delivery.

use crate::ledger::wait_for;
use crate::support::{Env, days, signal};
use licrenew::sim::{Fault, FaultKind};
use std::time::Duration;

const LITE: &str =
    "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

#[tokio::test]
async fn systemd_gets_ready_after_migrations_watchdog_from_the_loop_status_and_stopping() {
    let env = Env::new().await;
    env.place(3001, 7, 8, env.today() + days(2), 2);
    env.write_policy("lite.toml", LITE);
    env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
    let sock_path = env.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let db = env.path("licrenew.db");
    let sp = sock_path.to_string_lossy().into_owned();
    let child = env
        .command(
            &["run"],
            &[("NOTIFY_SOCKET", &sp), ("WATCHDOG_USEC", "400000")],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");

    let mut seen: Vec<String> = Vec::new();
    let mut db_ready_at_ready = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 4096];
    let mut stopped = false;
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("READY=1") && db_ready_at_ready.is_none() {
            db_ready_at_ready = Some(migrated(&db).await);
        }
        seen.push(msg);
        let has = |s: &str| seen.iter().any(|m| m.contains(s));
        if !stopped
            && has("READY=1")
            && has("STATUS=cycle")
            && seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
        {
            signal(pid, "TERM");
            stopped = true;
        }
        if has("STOPPING=1") {
            break;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits")
        .expect("status");

    assert_eq!(
        db_ready_at_ready,
        Some(true),
        "READY=1 only after the database is migrated: {seen:?}"
    );
    let ready = seen
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY");
    let status_msg = seen
        .iter()
        .find(|m| m.starts_with("STATUS="))
        .expect("STATUS");
    assert!(status_msg.contains("renewed"), "{status_msg}");
    assert!(
        seen.iter()
            .skip(ready)
            .filter(|m| m.contains("WATCHDOG=1"))
            .count()
            >= 2,
        "{seen:?}"
    );
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    assert_eq!(status.status.code(), Some(0));
}

/// Whether the database file exists with every migration applied (read-only: the test must
/// not migrate it itself).
async fn migrated(db: &std::path::Path) -> bool {
    use sqlx::{ConnectOptions, Row};
    if !db.exists() {
        return false;
    }
    let Ok(mut conn) = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
    else {
        return false;
    };
    let applied = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get::<i64, _>(0));
    applied.is_ok_and(|n| n as usize == licrenew::store::MIGRATOR.iter().count())
}

#[tokio::test]
async fn every_alert_is_delivered_exactly_once_across_a_receiver_outage() {
    let env = Env::new().await;
    // 3001 fails to renew each cycle (and expires within 72h); 3002 renews fine.
    env.place(3001, 7, 8, env.today() + days(1), 2);
    env.place(3002, 7, 8, env.today() + days(2), 2);
    env.write_policy("lite.toml", LITE);
    env.sim.add_fault(Fault {
        func: Some("software.period".into()),
        elid: Some(3001),
        kind: FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "Not enough money".into(),
        },
        times: None,
    });
    // A port with nobody listening: the receiver is down.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let hook_log = env.path("hook.log");
    let hook = env.path("hook.sh");
    let args_log = env.path("args.log");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nprintf '%s|%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$LICRENEW_ALERT_KIND\" \"$LICRENEW_ALERT_SEVERITY\" \"$LICRENEW_ALERT_ID\" >> {}\ncat >> {}\necho >> {}\necho 'hook says hi' >&2\n",
            args_log.display(),
            hook_log.display(),
            hook_log.display()
        ),
    )
    .expect("hook");
    std::fs::write(
        env.path("webhook.headers"),
        "# sent with every webhook delivery\nAuthorization: Bearer hook-token-1\n",
    )
    .expect("headers");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&hook)
        .status()
        .expect("chmod");
    env.write_config(&format!(
        "[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n[alerts]\nwebhook = \"http://{addr}/hook\"\ncommand = \"hook.sh --team 'on call'\"\nwebhook_headers_file = \"webhook.headers\"\nretry = \"200ms\"\ntimeout = \"2s\"\n"
    ));
    let log = std::fs::File::create(env.path("service.log")).expect("log file");
    let child = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");

    // Several cycles raise the same alerts while the webhook is down.
    wait_for(|| env.sim.paid_calls(3002) == 1, "the good renewal").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let receiver = wiremock::MockServer::builder()
        .listener(std::net::TcpListener::bind(addr).expect("rebind the receiver's port"))
        .start()
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let got = || async { receiver.received_requests().await.unwrap_or_default().len() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got().await < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // more cycles: nothing is sent again
    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits")
        .expect("status");

    assert_eq!(out.status.code(), Some(0));
    let bodies: Vec<serde_json::Value> = receiver
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json alert"))
        .collect();
    // One digest: the refusal of 3001 once (no expiring_unrenewed for the same cause, nothing
    // again in later cycles), the good renewal of 3002 not at all (notify = "error").
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let digest = &bodies[0];
    assert_eq!(digest["kind"], "digest");
    assert_eq!(digest["severity"], "critical");
    assert_eq!(digest["count"], 1);
    assert!(
        digest["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{digest}"
    );
    let kinds: Vec<(String, i64)> = digest["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().unwrap_or("").to_owned(),
                b["elid"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("renewal_error".to_owned(), 3001)],
        "each alert once"
    );
    let err = &digest["alerts"][0];
    assert_eq!(err["licname"], "srv3001.example.net");
    assert_eq!(err["product"], "ISPmanager Lite");
    assert_eq!(err["outcome"], "error");
    assert_eq!(err["severity"], "critical");
    assert_eq!(err["reason"], "refused");
    assert!(err["timestamp"].is_string(), "{err}");
    assert_eq!(err["host"], digest["host"]);
    assert_eq!(
        err["id"].as_str(),
        Some(format!("renewal_error:3001:{}", env.today() + days(1)).as_str())
    );
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("Not enough money"),
        "{err}"
    );
    assert!(err["expiry"].is_string());
    let request = &receiver.received_requests().await.unwrap_or_default()[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        header("user-agent").starts_with("licrenew/"),
        "{:?}",
        request.headers
    );
    assert_eq!(header("authorization"), "Bearer hook-token-1");
    let hooked = std::fs::read_to_string(&hook_log).expect("the command ran");
    assert_eq!(
        hooked
            .lines()
            .filter(|l| l.contains("\"kind\":\"digest\""))
            .count(),
        1,
        "{hooked}"
    );
    let args = std::fs::read_to_string(&args_log).expect("the command's arguments");
    let id = digest["id"].as_str().expect("digest id");
    assert_eq!(args, format!("--team|on call|digest|critical|{id}\n"));
    let logged = std::fs::read_to_string(env.path("service.log")).expect("log");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("alert_command_stderr") && l.contains("hook says hi")),
        "the hook's stderr is logged"
    );
    assert!(
        !logged.contains("hook-token-1"),
        "a header value is a secret"
    );
    env.assert_no_canary_in_files();
}

#[tokio::test]
async fn metrics_match_the_database_after_a_cycle_and_healthz_turns_503_when_cycles_fail() {
    let env = Env::new().await;
    env.place(3001, 7, 8, env.today() + days(2), 2);
    env.place(3002, 7, 8, env.today() + days(20), 2);
    // Not covered (no policy for ISPmanager Pro), expires in 2 days.
    env.place(3003, 11, 16, env.today() + days(2), 3);
    // Covered, expires in 2 days, renewed 1 day before: planned for tomorrow.
    env.place(3004, 7, 8, env.today() + days(2), 2);
    // Deleted: no series at all.
    env.place(3005, 7, 8, env.today() + days(2), 4);
    env.write_policy(
        "lite.toml",
        &format!("{LITE}[[except]]\nelid = 3004\nrenew = true\nbefore = \"1d\"\n"),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    env.write_config(&format!("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    let child = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            match http
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
            {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(_) => (0, String::new()),
            }
        }
    };

    wait_for(|| env.sim.paid_calls(3001) == 1, "the renewal").await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // a cycle after the renewal: gauges refreshed
    let (code, text) = get("/metrics").await;
    let (health_ok, _) = get("/healthz").await;
    env.sim.add_fault(Fault {
        func: Some("software.filter".into()),
        elid: None,
        kind: FaultKind::Http { status: 500 },
        times: None,
    });
    let mut unhealthy = (0, String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        unhealthy = get("/healthz").await;
        if unhealthy.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits")
        .expect("status");

    assert_eq!(code, 200);
    assert_eq!(health_ok, 200);
    let value = |series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let store = licrenew::store::Store::open(&env.path("licrenew.db"))
        .await
        .expect("db");
    let rows = store.licenses().await.expect("rows");
    store.close().await;
    let lite_active = rows
        .iter()
        .filter(|r| r.product == 7 && r.status == 2 && r.gone_since.is_none())
        .count() as f64;
    assert_eq!(
        value("licrenew_licenses{product=\"ISPmanager Lite\",status=\"active\"}"),
        Some(lite_active),
        "{text}"
    );
    assert_eq!(
        value("licrenew_licenses{product=\"ISPmanager Pro\",status=\"suspended\"}"),
        Some(1.0),
        "{text}"
    );
    let r3001 = rows.iter().find(|r| r.elid == 3001).expect("3001");
    let end_of_day = r3001
        .expiry
        .and_hms_opt(23, 59, 59)
        .expect("time")
        .and_utc()
        .timestamp() as f64;
    let expiry = text
        .lines()
        .find(|l| {
            l.starts_with("licrenew_license_expiry_timestamp_seconds{")
                && l.contains("elid=\"3001\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("expiry series of 3001");
    assert!(
        (expiry - end_of_day).abs() <= 1.0,
        "{expiry} vs {end_of_day}"
    );
    assert!(
        value("licrenew_renewals_total{outcome=\"ok\",product=\"ISPmanager Lite\"}")
            .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        !text.contains("outcome=\"skipped\""),
        "decisions are not renewals: {text}"
    );
    assert!(text.contains("licrenew_decisions_total{reason="), "{text}");
    assert!(
        text.contains("licrenew_api_calls_total{func=\"software.period\",result=\"ok\"}"),
        "{text}"
    );
    // The intent of LicenseExpiringNotRenewed: expiring within 3 days, not deleted, not
    // deliberately left, and no renewal timestamp.
    let now = chrono::Utc::now().timestamp() as f64;
    let series = |name: &str, elid: i64| value(&format!("{name}{{elid=\"{elid}\"}}"));
    let info = |elid: i64| {
        text.lines()
            .find(|l| l.starts_with(&format!("licrenew_license_info{{elid=\"{elid}\",")))
            .map(str::to_owned)
    };
    let fires = |elid: i64| {
        let expiring = series("licrenew_license_expiry_timestamp_seconds", elid)
            .is_some_and(|e| e < now + 3.0 * 86400.0);
        let kept = info(elid).is_some_and(|l| !l.contains("policy=\"no_renew\""));
        expiring && kept && series("licrenew_license_renewal_timestamp_seconds", elid).is_none()
    };
    let renewal_3004 = series("licrenew_license_renewal_timestamp_seconds", 3004)
        .expect("a covered license due in 2 days has a renewal timestamp");
    assert!(renewal_3004 <= now + 2.0 * 86400.0, "{renewal_3004}");
    assert!(!fires(3004));
    assert!(
        series("licrenew_license_renewal_timestamp_seconds", 3003).is_none(),
        "nothing covers 3003: {text}"
    );
    assert!(
        info(3003).is_some_and(|l| l.contains("policy=\"none\"")),
        "{text}"
    );
    assert!(fires(3003), "LicenseExpiringNotRenewed fires for 3003");
    assert!(
        !text.contains("elid=\"3005\""),
        "a deleted license has no series: {text}"
    );
    assert!(
        series("licrenew_license_renewal_timestamp_seconds", 3002).is_some(),
        "{text}"
    );
    assert!(
        text.contains("licrenew_api_call_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        value("licrenew_last_successful_cycle_timestamp_seconds").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert_eq!(
        unhealthy.0, 503,
        "healthz after failing cycles: {unhealthy:?}"
    );
    assert!(unhealthy.1.contains("no successful cycle"), "{unhealthy:?}");
    assert_eq!(out.status.code(), Some(0));
}
