//! Alerts as an on-call receives them: one digest per cycle, `expiring_uncovered`, `resolved`,
//! nothing during a dry run, and mail through a local SMTP sink.

use crate::ledger::events;
use crate::support::{Env, code, days, stderr};
use licrenew::sim::{Fault, FaultKind};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const LITE: &str =
    "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

/// A Lite license due in 2 days whose renewal the billing refuses (`times`: how often).
fn place_refused(env: &Env, elid: i64, times: Option<u32>) {
    env.place(elid, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    env.sim.add_fault(Fault {
        func: Some(env.func("software.period")),
        elid: Some(elid),
        kind: FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "Not enough money".into(),
        },
        times,
    });
}

async fn receiver() -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

async fn documents(server: &wiremock::MockServer) -> Vec<serde_json::Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON document"))
        .collect()
}

fn alerts_in(doc: &serde_json::Value) -> Vec<(String, i64)> {
    doc["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["kind"].as_str().unwrap_or("").to_owned(),
                        x["elid"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_cycle_with_four_failures_sends_one_digest() {
    let env = Env::new().await;
    for elid in 5001..=5004 {
        place_refused(&env, elid, None);
    }
    env.write_policy("lite.toml", LITE);
    let hook = receiver().await;
    env.write_config(&format!("[alerts]\nwebhook = \"{}/hook\"\n", hook.uri()));

    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;

    assert_eq!(code(&first), 1, "{}", stderr(&first));
    assert_eq!(code(&second), 1);
    let docs = documents(&hook).await;
    assert_eq!(docs.len(), 1, "one delivery, and nothing again: {docs:?}");
    assert_eq!(docs[0]["kind"], "digest");
    assert_eq!(docs[0]["count"], 4);
    let mut got = alerts_in(&docs[0]);
    got.sort();
    assert_eq!(
        got,
        (5001..=5004)
            .map(|e| ("renewal_error".to_owned(), e))
            .collect::<Vec<_>>()
    );
    assert_eq!(events(&first, "alert").len(), 4, "each alert is logged");
    assert!(events(&second, "alert").is_empty(), "raised again, not new");
}

#[tokio::test]
async fn with_digest_off_each_alert_is_its_own_delivery() {
    let env = Env::new().await;
    for elid in [5101, 5102] {
        place_refused(&env, elid, None);
    }
    env.write_policy("lite.toml", LITE);
    let hook = receiver().await;
    env.write_config(&format!(
        "[alerts]\nwebhook = \"{}/hook\"\ndigest = false\n",
        hook.uri()
    ));

    env.run(&["renew"]).await;

    let docs = documents(&hook).await;
    let mut kinds: Vec<_> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("").to_owned(),
                d["elid"].as_i64(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("renewal_error".to_owned(), Some(5101)),
            ("renewal_error".to_owned(), Some(5102))
        ]
    );
}

#[tokio::test]
async fn an_uncovered_license_is_alerted_once_and_renew_false_silences_it() {
    let env = Env::new().await;
    // No policy covers ISPmanager Pro.
    env.place(5201, env.p.pro, env.p.pro_month, env.today() + days(2), 2);
    env.place(
        5202,
        env.p.lite,
        env.p.lite_month,
        env.today() + days(20),
        2,
    );
    env.write_policy("lite.toml", LITE);
    let hook = receiver().await;
    env.write_config(&format!("[alerts]\nwebhook = \"{}/hook\"\n", hook.uri()));

    let first = env.run(&["renew"]).await;
    let second = env.run(&["renew"]).await;
    env.write_policy("pro.toml", "product = \"ISPmanager Pro\"\nrenew = false\n");
    // A new expiry would be a new alert, were it not silenced.
    env.place(5201, env.p.pro, env.p.pro_month, env.today() + days(1), 2);
    let third = env.run(&["renew"]).await;
    let fourth = env.run(&["renew"]).await;

    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let logged = events(&first, "alert");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["kind"], "expiring_uncovered");
    assert_eq!(logged[0]["elid"], 5201);
    assert_eq!(logged[0]["reason"], "no policy");
    assert!(events(&second, "alert").is_empty());
    // The open problem is closed (said once), and nothing more is raised for it.
    let closed = events(&third, "alert");
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0]["kind"], "resolved");
    assert_eq!(closed[0]["reason"], "a policy says renew = false");
    assert!(events(&fourth, "alert").is_empty(), "{}", stderr(&fourth));
    let docs = documents(&hook).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(
        alerts_in(&docs[0]),
        [("expiring_uncovered".to_owned(), 5201)]
    );
    assert_eq!(docs[0]["alerts"][0]["severity"], "warning");
    assert_eq!(alerts_in(&docs[1]), [("resolved".to_owned(), 5201)]);
    assert_eq!(env.sim.paid_calls(5201), 0);
}

#[tokio::test]
async fn a_later_success_sends_resolved() {
    let env = Env::new().await;
    place_refused(&env, 5301, Some(1));
    env.write_policy("lite.toml", LITE);
    let hook = receiver().await;
    env.write_config(&format!("[alerts]\nwebhook = \"{}/hook\"\n", hook.uri()));

    let failed = env.run(&["renew"]).await;
    let renewed = env.run(&["renew"]).await;
    let quiet = env.run(&["renew"]).await;

    assert_eq!(code(&failed), 1);
    assert_eq!(code(&renewed), 0, "{}", stderr(&renewed));
    assert_eq!(env.sim.paid_calls(5301), 1, "refused once, then paid once");
    let docs = documents(&hook).await;
    assert_eq!(docs.len(), 2, "{docs:?}");
    assert_eq!(alerts_in(&docs[0]), [("renewal_error".to_owned(), 5301)]);
    assert_eq!(alerts_in(&docs[1]), [("resolved".to_owned(), 5301)]);
    let resolved = &docs[1]["alerts"][0];
    assert_eq!(resolved["severity"], "info");
    assert_eq!(resolved["resolves"][0], docs[0]["alerts"][0]["id"]);
    assert!(
        resolved["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("renewed: ")),
        "{resolved}"
    );
    assert!(events(&quiet, "alert").is_empty());
}

#[tokio::test]
async fn notify_renewed_also_sends_each_renewal() {
    let env = Env::new().await;
    env.place(5401, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    env.write_policy("lite.toml", LITE);
    let hook = receiver().await;
    env.write_config(&format!(
        "[alerts]\nwebhook = \"{}/hook\"\nnotify = \"renewed\"\n",
        hook.uri()
    ));

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let docs = documents(&hook).await;
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(alerts_in(&docs[0]), [("renewed".to_owned(), 5401)]);
    assert_eq!(docs[0]["alerts"][0]["severity"], "info");
    assert!(docs[0]["alerts"][0]["new_expiry"].is_string());
}

#[tokio::test]
async fn a_dry_run_delivers_nothing_not_even_what_waits_in_the_outbox() {
    let env = Env::new().await;
    place_refused(&env, 5501, None);
    env.write_policy("lite.toml", LITE);
    // The receiver is down while the alert is raised: it waits in the outbox.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    env.write_config(&format!(
        "[alerts]\nwebhook = \"http://{addr}/hook\"\nretry = \"10ms\"\ntimeout = \"1s\"\n"
    ));
    env.run(&["renew"]).await;
    let hook = wiremock::MockServer::builder()
        .listener(std::net::TcpListener::bind(addr).expect("rebind"))
        .start()
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let dry = env.run(&["renew", "--dry-run"]).await;
    let after_dry = documents(&hook).await.len();
    let real = env.run(&["renew"]).await;

    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    assert_eq!(after_dry, 0, "a dry run delivers nothing");
    assert!(events(&dry, "alert").is_empty());
    assert_eq!(code(&real), 1);
    let docs = documents(&hook).await;
    assert_eq!(docs.len(), 1, "the queued digest, once: {docs:?}");
    assert_eq!(alerts_in(&docs[0]), [("renewal_error".to_owned(), 5501)]);
}

/// A plain SMTP receiver on loopback: records each message's envelope and data.
struct SmtpSink {
    addr: std::net::SocketAddr,
    mails: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                    let mut mail = String::new();
                    let mut in_data = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                store.lock().expect("lock").push(std::mem::take(&mut mail));
                                let _ = w.write_all(b"250 queued\r\n").await;
                            } else {
                                mail.push_str(&line);
                                mail.push('\n');
                            }
                            continue;
                        }
                        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                            "DATA" => {
                                in_data = true;
                                mail.push_str("envelope-done\n");
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                break;
                            }
                            _ => b"502 no\r\n",
                        };
                        if verb == "MAIL" || verb == "RCPT" {
                            mail.push_str(&line);
                            mail.push('\n');
                        }
                        let _ = w.write_all(reply).await;
                    }
                });
            }
        });
        SmtpSink { addr, mails }
    }
}

#[tokio::test]
async fn an_alert_arrives_by_mail_at_a_local_smtp_sink() {
    let env = Env::new().await;
    place_refused(&env, 5601, None);
    env.write_policy("lite.toml", LITE);
    let sink = SmtpSink::start().await;
    env.write_config(&format!(
        "[alerts]\nhost = \"billing-1\"\n[alerts.email]\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"licrenew@example.net\"\nto = [\"oncall@example.net\", \"Ops <ops@example.net>\"]\n",
        sink.addr.port()
    ));

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        events(&out, "alert_delivered")
            .iter()
            .any(|e| e["sink"] == "email"),
        "{}",
        stderr(&out)
    );
    let mails = sink.mails.lock().expect("lock").clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert!(mail.contains("MAIL FROM:<licrenew@example.net>"), "{mail}");
    assert!(mail.contains("RCPT TO:<oncall@example.net>"), "{mail}");
    assert!(mail.contains("RCPT TO:<ops@example.net>"), "{mail}");
    assert!(
        mail.contains("Subject: [licrenew billing-1] critical: 1 critical: renewal_error"),
        "{mail}"
    );
    assert!(mail.contains("renewal of license 5601"), "{mail}");
    assert!(mail.contains("\"kind\":\"digest\""), "{mail}");
}

#[tokio::test]
async fn plain_smtp_to_another_host_is_refused_by_check() {
    let env = Env::new().await;
    env.write_config(
        "[alerts.email]\nserver = \"mail.example.net\"\ntls = \"none\"\nfrom = \"a@example.net\"\nto = [\"b@example.net\"]\n",
    );

    let out = env.run(&["check"]).await;

    assert_eq!(code(&out), 78);
    assert!(
        stderr(&out).contains("alerts.email.tls"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_hook_that_does_not_read_its_input_does_not_kill_a_one_shot_command() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    // Enough alerts (no policy covers ISPmanager Pro) for a digest larger than a pipe's buffer:
    // the write meets a closed pipe, whatever the timing.
    for elid in 7000..7400 {
        env.place(elid, env.p.pro, env.p.pro_month, env.today() + days(2), 2);
    }
    env.write_config("[alerts]\ncommand = \"/bin/sh -c 'exec 0<&-; exit 0'\"\n");

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "killed by SIGPIPE? {:?}", out.status);
    assert!(
        events(&out, "alert_delivered")
            .iter()
            .any(|e| e["sink"] == "command"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_hook_that_leaves_a_background_child_is_delivered_once_not_timed_out() {
    let env = Env::new().await;
    place_refused(&env, 5701, None);
    env.write_policy("lite.toml", LITE);
    env.write_config(
        "[alerts]\ncommand = \"/bin/sh -c 'sleep 30 & echo started a helper >&2; exit 0'\"\ntimeout = \"3s\"\n",
    );

    let started = std::time::Instant::now();
    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        events(&out, "alert_delivered")
            .iter()
            .any(|e| e["sink"] == "command"),
        "{}",
        stderr(&out)
    );
    assert!(events(&out, "alert_retry").is_empty(), "{}", stderr(&out));
    assert!(
        events(&out, "alert_command_stderr")
            .iter()
            .any(|e| e["message"] == "started a helper"),
        "{}",
        stderr(&out)
    );
}
