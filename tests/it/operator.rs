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
        "database   /var/lib/licrenew/licrenew.db"
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
