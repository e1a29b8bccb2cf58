//! Bad input: config and policy files with every kind of mistake. Each exits 78 with a message
//! naming the file (and the line where the parser knows it), sends nothing and leaves the
//! database exactly as it was.

use crate::ledger::{LITE, assert_no_panic, place_due};
use crate::support::{Env, code, stderr, stdout};
use std::path::PathBuf;

/// An account with the Lite policy, one due license and a database from one `sync`.
async fn account() -> Env {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    place_due(&env, 3001, 1);
    let out = env.run(&["sync"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env
}

/// The database and its side files, byte for byte.
fn snapshot(env: &Env) -> Vec<(String, Vec<u8>)> {
    ["licrenew.db", "licrenew.db-wal", "licrenew.db-shm"]
        .iter()
        .map(|f| {
            (
                f.to_string(),
                std::fs::read(env.path(f)).unwrap_or_default(),
            )
        })
        .collect()
}

/// Breaks the account with `arrange`, runs `renew`, and checks: exit 78, every string of
/// `says` in stderr, no request sent, the database unchanged.
async fn refused(what: &str, arrange: impl FnOnce(&Env) -> Vec<String>) {
    let env = account().await;
    let sent = env.sim.requests().len();
    let before = snapshot(&env);
    let says = arrange(&env);

    let out = env.run(&["renew"]).await;

    assert_no_panic(&out);
    assert_eq!(code(&out), 78, "{what}: {}", stderr(&out));
    for s in &says {
        assert!(
            stderr(&out).contains(s.as_str()),
            "{what}: {s:?} missing in {}",
            stderr(&out)
        );
    }
    assert_eq!(env.sim.requests().len(), sent, "{what}: nothing sent");
    assert!(snapshot(&env) == before, "{what}: the database changed");
    assert_eq!(env.sim.paid_calls_total(), 0);
    env.assert_no_canary_in_files();
}

fn config_path(env: &Env) -> String {
    env.config.display().to_string()
}

fn policy_path(env: &Env, name: &str) -> String {
    env.path("policies.d").join(name).display().to_string()
}

#[tokio::test]
async fn an_unknown_config_key_is_refused_naming_file_and_key() {
    refused("unknown key", |env| {
        env.write_config("[renewal]\nmax_per_cylce = 3\n");
        vec![config_path(env), "max_per_cylce".into()]
    })
    .await;
}

#[tokio::test]
async fn a_config_value_of_the_wrong_type_is_refused_naming_file_and_key() {
    refused("wrong type", |env| {
        env.write_config("[renewal]\nmax_per_cycle = \"many\"\n");
        vec![config_path(env), "max_per_cycle".into()]
    })
    .await;
}

#[tokio::test]
async fn a_bad_config_duration_is_refused_naming_file_and_key() {
    refused("bad duration", |env| {
        env.write_config("[renewal]\nsettle = \"5 minutes-ish\"\n");
        vec![config_path(env), "settle".into()]
    })
    .await;
}

#[tokio::test]
async fn a_bad_cron_is_refused_naming_file_and_key() {
    refused("bad cron", |env| {
        env.write_config("[schedule]\ncron = \"every day at noon\"\n");
        vec![config_path(env), "schedule.cron".into()]
    })
    .await;
}

#[tokio::test]
async fn a_config_syntax_error_is_refused_naming_file_and_line() {
    refused("syntax", |env| {
        env.write_config("[renewal\nsettle = \"1s\"\n");
        let text = std::fs::read_to_string(&env.config).expect("config");
        let line = text
            .lines()
            .position(|l| l == "[renewal")
            .expect("the broken line")
            + 1;
        vec![config_path(env), format!("line {line}")]
    })
    .await;
}

#[tokio::test]
async fn a_missing_password_file_is_refused_naming_file_and_key() {
    refused("missing password file", |env| {
        std::fs::remove_file(env.path("secret")).expect("rm");
        vec![config_path(env), "billmgr.password_file".into()]
    })
    .await;
}

#[tokio::test]
async fn an_unknown_policy_key_is_refused_naming_file_and_line() {
    refused("unknown policy key", |env| {
        env.write_policy("lite.toml", &format!("{LITE}autoprolong = true\n"));
        vec![
            format!("{}:5", policy_path(env, "lite.toml")),
            "autoprolong".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn a_policy_value_of_the_wrong_type_is_refused_naming_file_and_line() {
    refused("policy wrong type", |env| {
        env.write_policy(
            "lite.toml",
            &LITE.replace("renew = true", "renew = \"yes\""),
        );
        vec![
            format!("{}:2", policy_path(env, "lite.toml")),
            "invalid type".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn a_bad_policy_duration_is_refused_naming_file_and_line() {
    refused("policy bad duration", |env| {
        env.write_policy("lite.toml", &LITE.replace("\"7d\"", "\"a week\""));
        vec![
            format!("{}:4", policy_path(env, "lite.toml")),
            "a week".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn an_unknown_product_is_refused_naming_file_and_line() {
    refused("unknown product", |env| {
        env.write_policy(
            "ultra.toml",
            "renew = true\nproduct = \"ISPmanager Ultra\"\nperiod = 8\n",
        );
        vec![
            format!("{}:2", policy_path(env, "ultra.toml")),
            "unknown product".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn an_unknown_period_is_refused_naming_file_and_line() {
    refused("unknown period", |env| {
        env.write_policy("lite.toml", &LITE.replace("\"1 month\"", "\"2 years\""));
        vec![
            format!("{}:3", policy_path(env, "lite.toml")),
            "unknown period \"2 years\"".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn a_period_of_another_product_is_refused_naming_file_and_line() {
    refused("foreign period", |env| {
        env.write_policy(
            "pro.toml",
            "product = \"ISPmanager Pro\"\nrenew = true\nperiod = 8\n",
        );
        vec![
            format!("{}:3", policy_path(env, "pro.toml")),
            "period 8 belongs to ISPmanager Lite, not to ISPmanager Pro".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn a_trial_period_is_refused_naming_file_and_line() {
    refused("trial period", |env| {
        env.write_policy("lite.toml", &LITE.replace("\"1 month\"", "\"trial\""));
        vec![
            format!("{}:3", policy_path(env, "lite.toml")),
            "a trial is never a renewal period".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn two_policy_files_for_one_product_are_refused_naming_both() {
    refused("two files", |env| {
        env.write_policy("zz-lite-again.toml", "product = 7\nrenew = false\n");
        vec![
            format!("{}:1", policy_path(env, "zz-lite-again.toml")),
            policy_path(env, "lite.toml"),
            "one file per product".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn a_policy_file_that_is_not_text_is_refused_naming_it() {
    refused("not UTF-8", |env| {
        std::fs::write(
            env.path("policies.d").join("bin.toml"),
            b"product = \xff\xfe\n",
        )
        .expect("write");
        vec![policy_path(env, "bin.toml"), "not UTF-8".into()]
    })
    .await;
}

#[tokio::test]
async fn a_missing_policy_folder_is_refused_naming_it() {
    refused("missing folder", |env| {
        std::fs::remove_dir_all(env.path("policies.d")).expect("rm");
        vec![
            env.path("policies.d").display().to_string(),
            "cannot read the policy folder".into(),
        ]
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_policy_file_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    // Root reads any file whatever its mode, so as root the binary runs as `nobody`.
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let env = account().await;
    let sent = env.sim.requests().len();
    let before = snapshot(&env);
    let locked = env.path("policies.d").join("locked.toml");
    std::fs::write(&locked, "product = 11\nrenew = false\n").expect("write");
    let mode = |p: &PathBuf, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    mode(&locked, 0o000);
    if root {
        for (p, m) in [
            (env.dir.path().to_owned(), 0o755),
            (env.path("policies.d"), 0o755),
            (env.config.clone(), 0o644),
            (env.path("secret"), 0o644),
            (env.path("policies.d").join("lite.toml"), 0o644),
        ] {
            mode(&p, m);
        }
    }

    let mut cmd = env.command(&["renew"], &[]);
    if root {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().await.expect("runs");

    assert_no_panic(&out);
    crate::support::assert_no_canary("stderr", &stderr(&out));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}: cannot read", locked.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sim.requests().len(), sent);
    assert!(snapshot(&env) == before, "the database changed");
}

#[tokio::test]
async fn an_empty_policy_folder_is_valid_renews_nothing_and_check_warns() {
    let env = account().await;
    std::fs::remove_file(env.path("policies.d").join("lite.toml")).expect("rm");

    let check = env.run(&["check"]).await;
    let renew = env.run(&["renew"]).await;

    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert!(
        stdout(&check).contains("none; nothing will be renewed"),
        "{}",
        stdout(&check)
    );
    assert!(
        stderr(&check).contains("no policy files"),
        "{}",
        stderr(&check)
    );
    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    let ev = crate::ledger::renewal_event(&renew, 3001);
    assert_eq!(
        (ev["outcome"].as_str(), ev["reason"].as_str()),
        (Some("skipped"), Some("no policy"))
    );
    assert_eq!(env.sim.paid_calls_total(), 0);
}
