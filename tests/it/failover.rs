//! Two `licrenew run` on one PostgreSQL database (issue 15): one leads, the other stands by;
//! when the leader dies in the middle of a paid call the standby takes over, reconciles and
//! the account is extended once; when the leader's locks are cut while it still believes it
//! leads, the fence on its intents stops it from paying, and the standby pays once.

use crate::ledger::{LITE, journal, place_due};
use crate::support::{Env, NEXT_PG};
use licrenew::config::Api;
use licrenew::sim::{Fault, FaultKind};
use sqlx::Connection;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// A BILLmanager 5/6 account whose state is in a fresh PostgreSQL database, with the Lite
/// policy and a cycle every second; `heartbeat` is how often the leader checks it leads.
async fn pair_env(heartbeat: &str) -> Option<Env> {
    let db = licrenew::pgtest::PgTestDatabase::create().await?;
    let url = db.url.clone();
    NEXT_PG.with(|c| *c.borrow_mut() = Some(db));
    let env = Env::for_api(Api::Billmgr5).await;
    env.write_config(&format!(
        "[database]\nurl = \"{url}\"\nstandby_retry = \"300ms\"\nheartbeat = \"{heartbeat}\"\n\
         [schedule]\ncron = \"* * * * * *\"\njitter = \"0s\"\n"
    ));
    env.write_policy("lite.toml", LITE);
    Some(env)
}

/// One `licrenew run`, its JSON log in a file of the test folder.
struct Instance {
    child: Child,
    log: PathBuf,
}

impl Instance {
    fn start(env: &Env, name: &str) -> Instance {
        Instance::start_with(env, name, &[])
    }

    fn start_with(env: &Env, name: &str, vars: &[(&str, &str)]) -> Instance {
        let log = env.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = env
            .command(&["run"], vars)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("licrenew run starts");
        Instance { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn events(&self, name: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == name)
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether this instance said it leads now.
    fn took_over(&self) -> bool {
        self.events("leader").iter().any(|e| e["leading"] == true)
    }
}

/// `application_name` of the session holding the account's leader lock, if any.
async fn leader_session(env: &Env) -> Option<String> {
    let pg = env.pg.as_ref().expect("on PostgreSQL");
    let mut c = sqlx::PgConnection::connect(&pg.url).await.expect("admin");
    let url = url::Url::parse(&env.sim.url()).expect("url");
    let key = licrenew::leader::key("leader", url.as_str(), "reseller");
    let who = licrenew::leader::holder(&mut c, key).await.expect("holder");
    let _ = c.close().await;
    who
}

/// Waits (up to 30 s) for one of `pair` to lead; its index.
async fn wait_for_leader(env: &Env, pair: &[&Instance]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(app) = leader_session(env).await {
            let pid: u32 = app
                .rsplit(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("application_name ends with the pid");
            if let Some(i) = pair.iter().position(|p| p.pid() == pid) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "nobody leads after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn arrived(env: &Env, func: &str, elid: i64) -> bool {
    env.sim.requests().iter().any(|r| {
        r.func == func
            && r.form
                .iter()
                .any(|(k, v)| k == "elid" && *v == elid.to_string())
    })
}

#[tokio::test]
async fn the_standby_takes_over_from_a_leader_killed_during_a_paid_call_and_nothing_is_paid_twice()
{
    let Some(env) = pair_env("1s").await else {
        return;
    };
    let due = place_due(&env, 3001, 1);
    // The paid call is held 4 s by the server (and lands then, whoever waits for it).
    env.sim.add_fault(Fault {
        func: Some(env.p.renew_func.into()),
        elid: Some(3001),
        kind: FaultKind::Delay { ms: 4000 },
        times: Some(1),
    });
    let a = Instance::start(&env, "a");
    let b = Instance::start(&env, "b");
    let first = wait_for_leader(&env, &[&a, &b]).await;
    let (mut leader, standby) = if first == 0 { (a, b) } else { (b, a) };

    wait_until(
        "the paid call in flight",
        Duration::from_secs(20),
        async || arrived(&env, env.p.renew_func, 3001),
    )
    .await;
    wait_until(
        "the standby saying so",
        Duration::from_secs(10),
        async || !standby.events("standby").is_empty(),
    )
    .await;
    let said = standby.events("standby");
    let leader_pid = leader.pid();
    leader.child.start_kill().expect("SIGKILL");
    let _ = leader.child.wait().await;
    let killed = Instant::now();
    wait_until("the standby leading", Duration::from_secs(30), async || {
        standby.took_over()
    })
    .await;
    let takeover = killed.elapsed();
    // The held call lands (the server applies it after its delay); the new leader reconciles
    // the row the dead one left open instead of paying again.
    wait_until(
        "the open row reconciled",
        Duration::from_secs(30),
        async || {
            journal(&env)
                .await
                .iter()
                .any(|r| r.elid == 3001 && r.state == "reconciled_ok")
        },
    )
    .await;
    // A few more cycles of the new leader: still nothing paid again.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    eprintln!("takeover after the kill: {takeover:?}");
    assert_eq!(
        said[0]["leader"],
        format!("{} pid {}", licrenew::overview::hostname(), leader_pid),
        "the standby names who leads"
    );
    assert!(takeover < Duration::from_secs(30), "{takeover:?}");
    assert_eq!(env.sim.paid_calls(3001), 1, "one extension, not two");
    for (elid, expiry, n) in env.sim.renewals_by_expiry() {
        assert_eq!(n, 1, "license {elid} renewed {n} times from {expiry}");
    }
    let rows: Vec<_> = journal(&env)
        .await
        .into_iter()
        .filter(|r| r.elid == 3001 && r.expiry_before == due[0].1)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one journal row for the one purchase: {rows:?}"
    );
    assert_eq!(rows[0].state, "reconciled_ok");
    // Who leads is visible to an admin, from any shell.
    let status = env.run(&["status"]).await;
    let text = crate::support::stdout(&status);
    assert!(text.contains("(postgres)"), "{text}");
    assert!(
        text.contains(&format!(
            "leader     {} pid {}",
            licrenew::overview::hostname(),
            standby.pid()
        )),
        "{text}"
    );
    let check = env.run(&["check"]).await;
    assert!(
        crate::support::stdout(&check).contains(&format!("pid {}", standby.pid())),
        "{}",
        crate::support::stdout(&check)
    );
    let alerts: Vec<_> = standby
        .events("alert")
        .into_iter()
        .filter(|e| e["kind"] == "leader")
        .collect();
    assert!(
        alerts.iter().any(|e| e["severity"] == "warning"),
        "a change of leader is alerted: {}",
        standby.log()
    );
}

#[tokio::test]
async fn a_leader_cut_from_the_database_pays_nothing_more_and_the_standby_renews_once() {
    // The leader does not check its leadership during this test (heartbeat 60 s): what stops
    // it is the fence on the intent, not its own belief.
    let Some(env) = pair_env("60s").await else {
        return;
    };
    place_due(&env, 3101, 1);
    let view = env.func("software.edit");
    // The re-read before paying is held 2 s: the cut happens while the leader waits for it.
    // The new leader's paid call is held 2.5 s, so the old one, when its re-read returns,
    // still sees the license unrenewed and goes on to write its intent: only the fence
    // stops it.
    env.sim.add_fault(Fault {
        func: Some(view.clone()),
        elid: Some(3101),
        kind: FaultKind::Delay { ms: 2000 },
        times: Some(1),
    });
    env.sim.add_fault(Fault {
        func: Some(env.p.renew_func.into()),
        elid: Some(3101),
        kind: FaultKind::Delay { ms: 2500 },
        times: Some(1),
    });
    let a = Instance::start(&env, "a");
    let b = Instance::start(&env, "b");
    let first = wait_for_leader(&env, &[&a, &b]).await;
    let (mut old, standby) = if first == 0 { (a, b) } else { (b, a) };
    wait_until(
        "the leader re-reading",
        Duration::from_secs(20),
        async || arrived(&env, &view, 3101),
    )
    .await;

    // The partition: every session in which the leader holds a lock is terminated.
    let app = leader_session(&env).await.expect("a leader");
    let pg = env.pg.as_ref().expect("pg");
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.expect("admin");
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(a.pid, 5000) FROM pg_stat_activity a
         WHERE a.application_name = $1
           AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)",
    )
    .bind(&app)
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    let _ = admin.close().await;
    assert!(!cut.is_empty() && cut.iter().all(|c| *c), "{cut:?}");

    wait_until("the standby leading", Duration::from_secs(30), async || {
        standby.took_over()
    })
    .await;
    wait_until("one renewal", Duration::from_secs(30), async || {
        env.sim.paid_calls(3101) == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !old.log().contains("no longer holds its lock") {
        assert!(
            Instant::now() < deadline,
            "the old leader was not refused by the fence: {}",
            old.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both keep running for a few more cycles.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    assert_eq!(env.sim.paid_calls(3101), 1, "one extension, not two");
    for (elid, expiry, n) in env.sim.renewals_by_expiry() {
        assert_eq!(n, 1, "license {elid} renewed {n} times from {expiry}");
    }
    assert!(
        old.events("renewal")
            .iter()
            .all(|e| e["outcome"] != "ok" && e["outcome"] != "unknown"),
        "the cut leader sent nothing: {}",
        old.log()
    );
    assert!(
        standby
            .events("renewal")
            .iter()
            .any(|e| e["elid"] == 3101 && e["outcome"] == "ok"),
        "the new leader renewed: {}",
        standby.log()
    );
    let rows: Vec<_> = journal(&env)
        .await
        .into_iter()
        .filter(|r| r.elid == 3101)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state, "ok");
    assert!(
        old.events("leader").iter().any(|e| e["leading"] == false),
        "the old leader knows it lost: {}",
        old.log()
    );
    assert!(
        old.child.try_wait().expect("wait").is_none(),
        "the old leader stands by, it does not exit: {}",
        old.log()
    );
}

#[tokio::test]
async fn a_postgresql_database_serves_one_billing_account() {
    let Some(env) = pair_env("1s").await else {
        return;
    };
    let mut first = Instance::start(&env, "a");
    wait_for_leader(&env, &[&first]).await;
    crate::support::signal(first.pid(), "TERM");
    let stopped = first.child.wait().await.expect("exit");
    // The same database, another account.
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        text.replace("username = \"reseller\"", "username = \"someone-else\""),
    )
    .expect("config");
    let other = env.run(&["run"]).await;

    let check = env.run(&["check"]).await;

    assert!(stopped.success(), "{}", first.log());
    // A config mistake for this database: 78, so systemd does not restart it in a loop.
    assert_eq!(
        crate::support::code(&other),
        78,
        "{}",
        crate::support::stderr(&other)
    );
    assert_eq!(crate::support::code(&check), 78);
    assert!(
        crate::support::stderr(&check).contains("another billing account"),
        "{}",
        crate::support::stderr(&check)
    );
    assert!(
        crate::support::stderr(&other).contains("another billing account"),
        "{}",
        crate::support::stderr(&other)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn get(port: u16, path: &str) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("answer")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn the_leader_gauge_and_the_status_page_say_who_leads() {
    let Some(env) = pair_env("1s").await else {
        return;
    };
    let ports = [free_port(), free_port()];
    let listen: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let a = Instance::start_with(&env, "a", &[("LICRENEW__METRICS__LISTEN", &listen[0])]);
    let b = Instance::start_with(&env, "b", &[("LICRENEW__METRICS__LISTEN", &listen[1])]);
    let first = wait_for_leader(&env, &[&a, &b]).await;
    let (lead_port, standby_port) = (ports[first], ports[1 - first]);
    // The gauge follows the leadership: wait until the leader's says so.
    wait_until("the leader's gauge", Duration::from_secs(15), async || {
        get(lead_port, "/metrics")
            .await
            .contains("licrenew_leader 1")
    })
    .await;

    let standby_metrics = get(standby_port, "/metrics").await;
    let lead_page = get(lead_port, "/").await;
    let standby_page = get(standby_port, "/").await;

    assert!(
        standby_metrics.contains("licrenew_leader 0"),
        "{standby_metrics}"
    );
    assert!(lead_page.contains("this instance leads"), "{lead_page}");
    assert!(lead_page.contains("(postgres)"), "{lead_page}");
    assert!(
        standby_page.contains("this instance stands by;"),
        "{standby_page}"
    );
    assert!(standby_page.contains("running, led by "), "{standby_page}");
}

/// The server's TLS certificate on this kind of machine (Debian's snakeoil), when the test
/// server has TLS on.
async fn server_tls_cert(env: &Env) -> Option<&'static str> {
    let pg = env.pg.as_ref()?;
    let mut c = sqlx::PgConnection::connect(&pg.url).await.ok()?;
    let (on, file): (String, String) =
        sqlx::query_as("SELECT current_setting('ssl'), current_setting('ssl_cert_file')")
            .fetch_one(&mut c)
            .await
            .ok()?;
    let _ = c.close().await;
    let cert = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    if on == "on" && file == cert && std::path::Path::new(cert).exists() {
        Some(cert)
    } else {
        eprintln!("skipped: the test server has no TLS with {cert} (ssl = {on}, {file})");
        None
    }
}

#[tokio::test]
async fn the_database_connection_can_be_tls_verified_against_a_given_ca() {
    let Some(env) = pair_env("1s").await else {
        return;
    };
    let Some(cert) = server_tls_cert(&env).await else {
        return;
    };
    let url = env.pg.as_ref().expect("pg").url.clone();
    let write = |params: &str| {
        env.write_config(&format!(
            "[database]\nurl = \"{url}?{params}\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\n"
        ))
    };
    // verify-full checks the host name too: the snakeoil certificate names the machine,
    // not 127.0.0.1, so it is refused; verify-ca checks the chain only.
    write(&format!("sslmode=verify-full&sslrootcert={cert}"));
    let refused = env.run(&["status"]).await;
    write(&format!("sslmode=verify-ca&sslrootcert={cert}"));
    let service = Instance::start(&env, "tls");
    wait_for_leader(&env, &[&service]).await;
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("admin");
    let sessions: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid
         WHERE a.application_name = $1",
    )
    .bind(format!(
        "licrenew {} {}",
        licrenew::overview::hostname(),
        service.pid()
    ))
    .fetch_all(&mut admin)
    .await
    .expect("pg_stat_ssl");
    let _ = admin.close().await;

    assert_eq!(
        crate::support::code(&refused),
        1,
        "{}",
        crate::support::stderr(&refused)
    );
    assert!(!sessions.is_empty(), "the service has sessions");
    assert!(
        sessions.iter().all(|s| *s),
        "every session of the service is encrypted: {sessions:?}"
    );
}

#[tokio::test]
async fn on_postgresql_a_reload_that_changes_the_account_is_refused() {
    let Some(env) = pair_env("1s").await else {
        return;
    };
    let mut service = Instance::start(&env, "a");
    wait_for_leader(&env, &[&service]).await;
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(
        &env.config,
        text.replace("username = \"reseller\"", "username = \"someone-else\""),
    )
    .expect("config");
    let pid = service.pid().to_string();

    let reload = env.run(&["reload", "--pid", &pid]).await;
    let still = leader_session(&env).await;
    crate::support::signal(service.pid(), "TERM");
    let _ = service.child.wait().await;

    assert_eq!(
        crate::support::code(&reload),
        1,
        "{}",
        crate::support::stderr(&reload)
    );
    assert!(
        crate::support::stdout(&reload).contains("takes a restart")
            || crate::support::stderr(&reload).contains("takes a restart"),
        "{}{}",
        crate::support::stdout(&reload),
        crate::support::stderr(&reload)
    );
    assert!(still.is_some(), "it still leads with the running config");
}
