//! Bounded under hostile files, environment and load (issue 14): local files that are not
//! regular files, overrides spelled in lower case, a hook's environment, plain HTTP to another
//! host, core dumps.

use crate::support::{CANARY, Env, code, stderr, stdout};
use std::time::{Duration, Instant};

fn mkfifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(ok.success());
}

/// `check` with `extra` appended to the config, bounded in time (a FIFO must not hang it).
async fn check_with(env: &Env, extra: &str) -> (std::process::Output, Duration) {
    env.write_config(extra);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), env.run(&["check"]))
        .await
        .expect("check must not hang");
    (out, started.elapsed())
}

#[tokio::test]
async fn a_password_or_catalog_that_is_not_a_small_regular_file_exits_78_at_once_naming_it() {
    let env = Env::new().await;
    mkfifo(&env.path("fifo"));
    std::fs::write(env.path("big"), vec![b'x'; 8192]).expect("big");
    let cases = [
        ("password_file = \"/dev/zero\"", "/dev/zero", "a device"),
        ("password_file = \"fifo\"", "fifo", "a FIFO"),
        ("password_file = \"big\"", "big", "4096-byte limit"),
    ];
    for (line, name, why) in cases {
        let text = std::fs::read_to_string(&env.config).expect("config");
        let text = text.replace("password_file = \"secret\"", line);
        std::fs::write(&env.config, text).expect("config");
        let started = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(20), env.run(&["check"]))
            .await
            .expect("must not hang");

        assert_eq!(code(&out), 78, "{line}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("billmgr.password_file") && err.contains(name),
            "{err}"
        );
        assert!(err.contains(why), "{line}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        env.write_config("");
    }
    for (path, why) in [("/dev/zero", "a device"), ("fifo", "a FIFO")] {
        let (out, took) = check_with(&env, &format!("[catalog]\npath = \"{path}\"\n")).await;
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("catalog.path") && stderr(&out).contains(why),
            "{}",
            stderr(&out)
        );
        assert!(took < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn a_config_that_is_a_fifo_or_too_large_exits_78_at_once() {
    let env = Env::new().await;
    let fifo = env.path("conf.fifo");
    mkfifo(&fifo);
    let big = env.path("big.toml");
    std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).expect("big");

    for (path, why) in [(&fifo, "a FIFO"), (&big, "limit")] {
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            env.command(&["check"], &[])
                .arg("--config")
                .arg(path)
                .output(),
        )
        .await
        .expect("must not hang")
        .expect("runs");
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn overrides_count_only_in_upper_case_and_others_are_named_not_used() {
    let env = Env::new().await;

    let out = env
        .run_env(
            &["check"],
            &[
                ("licrenew__billmgr__url", "https://evil.example.net/billmgr"),
                ("LICRENEW__RENEWAL__MAX_PER_CYCLE", "7"),
            ],
        )
        .await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("evil.example.net"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("licrenew__billmgr__url"),
        "the ignored variable is named: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn plain_http_to_another_host_is_refused_unless_allowed_and_then_warned() {
    let env = Env::new().await;
    let text = std::fs::read_to_string(&env.config).expect("config");
    let remote = text.replace(&env.sim.url(), "http://192.0.2.10/billmgr");
    std::fs::write(&env.config, &remote).expect("config");

    let refused = env.run(&["check"]).await;
    let allowed_text = remote.replace("[billmgr]\n", "[billmgr]\nallow_insecure_http = true\n");
    std::fs::write(&env.config, allowed_text).expect("config");
    let allowed = env.run(&["check"]).await;

    assert_eq!(code(&refused), 78);
    assert!(
        stderr(&refused).contains("billmgr.url") && stderr(&refused).contains("in clear"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(code(&allowed), 0, "{}", stderr(&allowed));
    assert!(
        stdout(&allowed).contains("in clear"),
        "{}",
        stdout(&allowed)
    );
}

#[tokio::test]
async fn the_process_is_not_dumpable() {
    let env = Env::new().await;

    let out = env.run(&["check"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("non-dumpable: no core file, no ptrace"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn the_alert_hook_gets_an_allow_listed_environment_not_ours() {
    let env = Env::new().await;
    env.write_policy("lite.toml", crate::ledger::LITE);
    let dump = env.path("hook-env");
    let script = env.path("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nenv > {}\ncat > /dev/null\n", dump.display()),
    )
    .expect("hook");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    env.write_config(&format!("[alerts]\ncommand = \"{}\"\n", script.display()));
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some("software".into()),
        elid: None,
        kind: licrenew::sim::FaultKind::Http { status: 502 },
        times: None,
    });

    let out = env
        .run_env(
            &["renew"],
            &[
                ("LICRENEW__BILLMGR__PASSWORD_FILE", "secret"),
                ("SOME_OTHER_SECRET", CANARY),
            ],
        )
        .await;

    assert_eq!(code(&out), 1);
    let seen = std::fs::read_to_string(&dump).expect("the hook ran");
    assert!(seen.contains("PATH="), "{seen}");
    assert!(!seen.contains("LICRENEW__"), "{seen}");
    assert!(!seen.contains("SOME_OTHER_SECRET"), "{seen}");
    assert!(!seen.contains(CANARY), "{seen}");
}
