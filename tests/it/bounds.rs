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

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Raises this process's open-files soft limit to its hard limit.
fn raise_own_nofile() {
    // SAFETY: getrlimit/setrlimit read and write a plain struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The service's stderr, written to a file while it runs.
fn log_file(env: &Env) -> (std::fs::File, std::path::PathBuf) {
    let p = env.path("service.log");
    (std::fs::File::create(&p).expect("log file"), p)
}

#[tokio::test]
async fn eleven_hundred_idle_connections_to_the_metrics_port_do_not_starve_a_cycle() {
    raise_own_nofile();
    let env = Env::new().await;
    env.write_policy("lite.toml", crate::ledger::LITE);
    let port = free_port();
    env.write_config(&format!(
        "[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let (log, log_path) = log_file(&env);
    let mut cmd = env.command(&["run"], &[]);
    cmd.stdout(std::process::Stdio::null()).stderr(log);
    // SAFETY: setrlimit in the child before exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    crate::ledger::wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the metrics port",
    )
    .await;

    // 1,100 clients connect (in waves, as the kernel lets them) and say nothing. A listener
    // that accepted them all would run out of its 1,024 descriptors.
    let pid = child.id().expect("pid");
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let mut idle = Vec::new();
    let mut most = 0;
    for _ in 0..4 {
        let attempts = (idle.len()..1100).map(|_| {
            tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
        });
        idle.extend(
            futures_util::future::join_all(attempts)
                .await
                .into_iter()
                .filter_map(|c| c.ok().and_then(Result::ok)),
        );
        most = most.max(descriptors());
    }
    let due = crate::ledger::place_due(&env, 3001, 1);
    crate::ledger::wait_for(
        || env.sim.paid_calls(3001) == 1,
        "a cycle renewing beside the idle connections",
    )
    .await;
    most = most.max(descriptors());
    let opened = idle.len();
    drop(idle);
    let scrape = tokio::time::timeout(
        Duration::from_secs(15),
        reqwest::get(format!("http://127.0.0.1:{port}/healthz")),
    )
    .await;
    crate::support::signal(pid, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;

    assert!(
        most < 200,
        "the service held {most} descriptors with {opened} clients connected"
    );
    assert!(
        scrape.is_ok_and(|r| r.is_ok()),
        "the endpoint answers once the idle clients are gone"
    );
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(!log.contains("Too many open files"), "{log}");
    crate::ledger::assert_invariants(&env, &due).await;
}

#[tokio::test]
async fn sigterm_while_reads_hang_exits_within_ten_seconds() {
    let env = Env::new().await;
    // Five stored licenses that left the window: each is re-read, and the server never answers.
    let past = env.today() - chrono::Duration::days(40);
    for id in 3001..3006 {
        env.place(id, 17, 31, past, 3);
    }
    let stored = env
        .run_env(&["sync"], &[("LICRENEW__SCHEDULE__LOOKBACK", "60d")])
        .await;
    assert_eq!(code(&stored), 0, "{}", stderr(&stored));
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some("software.edit".into()),
        elid: None,
        kind: licrenew::sim::FaultKind::Delay { ms: 120_000 },
        times: None,
    });
    env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
    let text = std::fs::read_to_string(&env.config).expect("config");
    // A long timeout, so only abandoning the reads can make the exit prompt.
    std::fs::write(
        &env.config,
        text.replace("\ntimeout = \"3s\"", "\ntimeout = \"60s\""),
    )
    .expect("config");
    let child = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    crate::ledger::wait_for(
        || crate::ledger::seen(&env, "software.edit"),
        "a re-read in flight",
    )
    .await;

    let started = Instant::now();
    crate::support::signal(pid, "TERM");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits")
        .expect("status");

    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_watchdog_is_fed_between_the_pages_of_a_slow_list() {
    let env = Env::for_api_with(licrenew::config::Api::Billmgr5, 4500).await;
    env.write_config("[schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n");
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some("soft".into()),
        elid: None,
        kind: licrenew::sim::FaultKind::Delay { ms: 1500 },
        times: None,
    });
    let sock_path = env.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind");
    let sp = sock_path.to_string_lossy().into_owned();
    let child = env
        .command(
            &["run"],
            &[("NOTIFY_SOCKET", &sp), ("WATCHDOG_USEC", "5000000")],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");

    // From READY until the first cycle's STATUS (5 pages of 1.5 s): the gaps between pings.
    let mut buf = vec![0u8; 4096];
    let mut last_ping: Option<Instant> = None;
    let mut gaps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("WATCHDOG=1") || msg.contains("READY=1") {
            if let Some(t) = last_ping {
                gaps.push(t.elapsed());
            }
            last_ping = Some(Instant::now());
        }
        if msg.contains("STATUS=cycle") {
            break;
        }
    }
    crate::support::signal(pid, "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output()).await;

    let pages = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.func == "soft" && r.form.iter().any(|(k, v)| k == "p_cnt" && v != "1"))
        .count();
    assert!(pages >= 5, "a paged list: {pages}");
    let worst = gaps.iter().max().copied().unwrap_or_default();
    assert!(!gaps.is_empty());
    assert!(
        worst < Duration::from_secs(4),
        "a gap of {worst:?} between watchdog pings (WatchdogSec 5 s): {gaps:?}"
    );
}

#[tokio::test]
async fn a_refused_reload_fails_the_reload_command_drops_the_gauge_and_alerts() {
    let env = Env::new().await;
    env.write_policy("lite.toml", crate::ledger::LITE);
    let port = free_port();
    env.write_config(&format!(
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let (log, log_path) = log_file(&env);
    let mut child = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid").to_string();
    crate::ledger::wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the service",
    )
    .await;
    let gauge = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
            .lines()
            .find(|l| l.starts_with("licrenew_config_last_reload_successful"))
            .unwrap_or_default()
            .to_owned()
    };

    env.write_policy(
        "lite.toml",
        "product = \"ISPmanager Lite\"\nrenew = maybe\n",
    );
    let refused = env.run(&["reload", "--pid", &pid]).await;
    let after_refusal = gauge().await;
    env.write_policy("lite.toml", crate::ledger::LITE);
    let taken = env.run(&["reload", "--pid", &pid]).await;
    let after_fix = gauge().await;
    let _ = child.start_kill();
    let _ = child.wait().await;

    assert_eq!(code(&refused), 1, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("reload refused") && stderr(&refused).contains("lite.toml"),
        "{}",
        stderr(&refused)
    );
    assert!(after_refusal.ends_with(" 0"), "{after_refusal}");
    assert_eq!(code(&taken), 0, "{}", stderr(&taken));
    assert!(after_fix.ends_with(" 1"), "{after_fix}");
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("config_reload_failed"), "{log}");
}
