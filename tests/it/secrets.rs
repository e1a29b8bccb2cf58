//! Secrets: one canary password through every command, both auth modes, faults and refusals,
//! at `trace` log level. stdout, stderr, the database and every file written must not hold it
//! (nor a session id), and no request URL may carry a credential. The other reliability tests
//! check the same after each of their scenarios (`Env::run` and `ledger::assert_invariants`).

use crate::ledger::{LITE, assert_no_panic, place_due};
use crate::support::{CANARY, Env, assert_no_canary, code, stderr, stdout};
use licrenew::sim::{Fault, FaultKind};

fn fault(func: &str, kind: FaultKind) -> Fault {
    Fault {
        func: Some(func.into()),
        elid: None,
        kind,
        times: Some(1),
    }
}

/// Every session id the simulator handed out, as the client sent it back.
fn session_ids(env: &Env) -> Vec<String> {
    let mut ids: Vec<String> = env
        .sim
        .requests()
        .iter()
        .flat_map(|r| {
            r.form
                .iter()
                .filter(|(k, _)| k == "auth")
                .map(|(_, v)| v.clone())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// No file below the Env's folder (the password file aside) contains `needle`.
fn assert_not_in_files(env: &Env, needle: &str) {
    fn walk(dir: &std::path::Path, skip: &std::path::Path, needle: &[u8]) {
        for entry in std::fs::read_dir(dir).expect("readdir").flatten() {
            let p = entry.path();
            if p == skip {
                continue;
            }
            if p.is_dir() {
                walk(&p, skip, needle);
            } else if let Ok(bytes) = std::fs::read(&p) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds a secret",
                    p.display()
                );
            }
        }
    }
    walk(env.dir.path(), &env.path("secret"), needle.as_bytes());
}

#[tokio::test]
async fn every_command_in_both_auth_modes_with_faults_keeps_every_secret_out_of_output_and_files() {
    for auth in ["authinfo", "session"] {
        let env = Env::new().await;
        env.write_policy("lite.toml", LITE);
        place_due(&env, 3001, 3);
        env.place(3010, 11, 16, env.today() + chrono::Duration::days(20), 2);
        let vars = [
            ("LICRENEW__BILLMGR__AUTH", auth),
            ("LICRENEW__RENEWAL__SETTLE", "0s"),
        ];
        env.sim
            .add_fault(fault("software.period", FaultKind::DropAfter));
        env.sim
            .add_fault(fault("software.edit", FaultKind::Malformed));
        env.sim
            .add_fault(fault("software", FaultKind::SessionExpired));
        let commands: &[&[&str]] = &[
            &["check", "--online"],
            &["licenses", "--live"],
            &["licenses", "--live", "--json", "--expiring", "30d"],
            &["sync"],
            &["renew", "--dry-run"],
            &["renew"],
            &["renew"],
            &["history"],
            &["history", "--json"],
            &["licenses", "--json"],
            &[
                "ip-check",
                "--product",
                "lite",
                "--period",
                "1 month",
                "--ip",
                "198.51.100.7",
            ],
            &["edit", "3010", "--licname", "renamed.example.net"],
            &["prolong", "3010", "--period", "1 month", "--json"],
            &[
                "order",
                "--product",
                "lite",
                "--period",
                "1 month",
                "--licname",
                "new",
                "--ip",
                "198.51.100.8",
            ],
        ];

        let mut outs = Vec::new();
        for args in commands {
            outs.push(env.run_env(args, &vars).await);
        }

        for (args, out) in commands.iter().zip(&outs) {
            assert_no_panic(out);
            assert!(code(out) <= 1, "{auth} {args:?}: {}", stderr(out));
        }
        assert_eq!(
            code(&outs[0]),
            0,
            "{auth}: check --online: {}",
            stderr(&outs[0])
        );
        assert_eq!(
            code(&outs[6]),
            0,
            "{auth}: the second renew settles: {}",
            stderr(&outs[6])
        );
        env.assert_no_canary_in_files();
        env.assert_no_credentials_in_urls();
        let sids = session_ids(&env);
        assert_eq!(sids.is_empty(), auth == "authinfo", "{auth}: {sids:?}");
        for sid in &sids {
            for out in &outs {
                assert!(
                    !stdout(out).contains(sid.as_str()),
                    "{auth}: a session id in stdout"
                );
                assert!(
                    !stderr(out).contains(sid.as_str()),
                    "{auth}: a session id in stderr"
                );
            }
            assert_not_in_files(&env, sid);
        }
        assert_eq!(env.sim.paid_calls(3001), 1);
    }
}

#[tokio::test]
async fn a_config_syntax_error_on_the_password_line_does_not_echo_the_password() {
    let env = Env::new().await;
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace(
            "password_file = \"secret\"",
            &format!("password = \"{CANARY}\" trailing-garbage"),
        );
    std::fs::write(&env.config, text).expect("write");

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&env.config.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(env.sim.requests().is_empty());
}

#[tokio::test]
async fn a_password_of_the_wrong_type_is_refused_without_echoing_it() {
    let env = Env::new().await;
    let text = std::fs::read_to_string(&env.config)
        .expect("config")
        .replace(
            "password_file = \"secret\"",
            &format!("password = [\"{CANARY}\"]"),
        );
    std::fs::write(&env.config, text).expect("write");

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("password"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_password_echoed_by_the_server_in_an_error_is_kept_out_of_logs_and_the_journal() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    place_due(&env, 3001, 1);
    env.sim.add_fault(fault(
        "software.period",
        FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some(format!("authinfo=reseller:{CANARY}")),
            msg: format!("Bad request: authinfo=reseller:{CANARY}&func=software.period"),
        },
    ));

    let out = env.run(&["renew"]).await;
    let history = env.run(&["history", "--json"]).await;

    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let ev = crate::ledger::renewal_event(&out, 3001);
    assert_eq!(ev["error_type"], "value", "{ev}");
    assert!(
        ev["error_msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Bad request: authinfo=")),
        "the rest of the message is kept: {ev}"
    );
    assert_eq!(code(&history), 0);
    env.assert_no_canary_in_files();
}

#[tokio::test]
async fn a_refused_password_is_not_echoed_anywhere() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    place_due(&env, 3001, 1);
    // A wrong password that contains the canary, so any echo of it is caught.
    std::fs::write(env.path("secret"), format!("{CANARY}-old\n")).expect("write");

    let renew = env.run(&["renew"]).await;
    let check = env
        .run_env(
            &["check", "--online"],
            &[("LICRENEW__BILLMGR__AUTH", "session")],
        )
        .await;

    assert_eq!(code(&renew), 1, "{}", stderr(&renew));
    assert_eq!(code(&check), 1, "{}", stderr(&check));
    assert!(stderr(&check).contains("type=auth"), "{}", stderr(&check));
    assert_no_canary("stderr", &stderr(&check));
    env.assert_no_canary_in_files();
    env.assert_no_credentials_in_urls();
}

/// A hostile server echoes the credentials it was sent into the places outside testing found
/// leaking (a tag name, the root element, an unclosed tag, a list row's expiry, a view's id,
/// the paid call's answer): stderr, stdout, the journal, the alert outbox and the alert hook's
/// input hold zero bytes of the password.
#[tokio::test]
async fn credentials_a_server_echoes_anywhere_in_an_answer_reach_nothing_written() {
    let cases: [(&str, &str, Option<i64>); 6] = [
        ("software", "<doc><x></{authinfo}></doc>", None),
        ("software", "<{password}/>", None),
        ("software", "<doc><{password}>", None),
        (
            "software",
            "<doc><elem><id>3009</id><licname>x</licname><price>7</price><period>8</period><status>2</status><expiredate>{authinfo}</expiredate></elem></doc>",
            None,
        ),
        (
            "software.edit",
            "<doc><id>{password}</id><expiredate>2030-01-01</expiredate><price>7</price></doc>",
            Some(3001),
        ),
        ("software.period", "<doc><{password}><ok/>", Some(3001)),
    ];
    for (func, body, elid) in cases {
        let env = Env::new().await;
        env.write_policy("lite.toml", LITE);
        let hook = env.path("hook-input");
        let script = env.path("hook.sh");
        std::fs::write(&script, format!("#!/bin/sh\ncat >> {}\n", hook.display())).expect("hook");
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .expect("chmod");
        env.write_config(&format!(
            "[alerts]\ncommand = \"{}\"\n[renewal]\nsettle = \"0s\"\n",
            script.display()
        ));
        place_due(&env, 3001, 1);
        env.sim.add_fault(Fault {
            func: Some(func.into()),
            elid,
            kind: FaultKind::Echo { body: body.into() },
            times: None,
        });

        let out = env.run(&["renew"]).await;

        assert_no_panic(&out);
        assert_eq!(code(&out), 1, "{func}: {}", stderr(&out));
        assert_no_canary("stdout", &stdout(&out));
        assert_no_canary("stderr", &stderr(&out));
        assert!(
            stderr(&out).contains("[redacted]"),
            "{func}: the echo was seen and blanked: {}",
            stderr(&out)
        );
        assert!(hook.exists(), "{func}: the alert hook ran");
        assert_not_in_files(&env, CANARY);
        let encoded: String = url::form_urlencoded::byte_serialize(CANARY.as_bytes()).collect();
        assert_not_in_files(&env, &encoded);
    }
}
