//! A stricter `check`: every mistake at once with file and line, the window in effect, the
//! alert command, secrets readable by others, and what no policy covers.

use crate::support::{Env, code, days, stderr, stdout};
use std::os::unix::fs::PermissionsExt;

const LITE: &str =
    "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn every_config_mistake_is_named_at_once_with_its_line() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.write_config(
        "[schedule]\ncron = \"every day\"\n[renewal]\nconcurrency = 0\n[alerts]\nnotify = \"loud\"\n",
    );
    let text = std::fs::read_to_string(env.path("licrenew.toml")).expect("config");
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|n| n + 1)
            .expect("in the config")
    };

    let out = env.run(&["check"]).await;

    assert_eq!(code(&out), 78);
    let err = stderr(&out);
    for (key, needle) in [
        ("schedule.cron", "cron ="),
        ("renewal.concurrency", "concurrency ="),
        ("alerts.notify", "notify ="),
    ] {
        let at = format!("licrenew.toml:{}: {key}:", line_of(needle));
        assert!(err.contains(&at), "{at} in\n{err}");
    }
}

#[tokio::test]
async fn policy_mistakes_a_missing_password_and_a_missing_hook_are_named_together() {
    let env = Env::new().await;
    env.write_policy("a.toml", "product = \"No Such Product\"\nrenew = true\n");
    env.write_policy("b.toml", "product = \"ISPmanager Lite\"\nrenew = maybe\n");
    env.write_config("[alerts]\ncommand = \"/nonexistent/licrenew-hook --flag\"\n");
    // No password at all (no key, no credential, no file beside the config).
    let text = std::fs::read_to_string(env.path("licrenew.toml")).expect("config");
    std::fs::write(
        env.path("licrenew.toml"),
        text.replace("password_file = \"secret\"\n", ""),
    )
    .expect("config");

    let out = env.run(&["check"]).await;

    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let err = stderr(&out);
    for expected in [
        "a.toml:1:",
        "b.toml:2:",
        "alerts.command: /nonexistent/licrenew-hook",
        "billmgr.password: no password",
    ] {
        assert!(err.contains(expected), "{expected:?} in\n{err}");
    }
}

#[tokio::test]
async fn an_alert_command_that_is_not_executable_is_refused() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    std::fs::write(env.path("hook.sh"), "#!/bin/sh\n").expect("hook");
    chmod(&env.path("hook.sh"), 0o644);
    env.write_config("[alerts]\ncommand = \"hook.sh\"\n");

    let refused = env.run(&["check"]).await;
    chmod(&env.path("hook.sh"), 0o755);
    let taken = env.run(&["check"]).await;

    assert_eq!(code(&refused), 78);
    assert!(
        stderr(&refused).contains("not executable"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(code(&taken), 0, "{}", stderr(&taken));
}

#[tokio::test]
async fn secrets_readable_by_group_or_others_are_warned_about() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.write_config("");
    chmod(&env.path("secret"), 0o644);

    let open = env.run(&["check"]).await;
    chmod(&env.path("secret"), 0o600);
    let closed = env.run(&["check"]).await;

    assert_eq!(code(&open), 0, "{}", stderr(&open));
    assert!(
        stdout(&open).contains("holds a secret and is readable by group or others (mode 644)"),
        "{}",
        stdout(&open)
    );
    assert!(!stdout(&closed).contains("readable by group"));
}

#[tokio::test]
async fn a_before_longer_than_the_window_widens_it_and_the_license_is_renewed() {
    let env = Env::new().await;
    env.write_policy(
        "lite.toml",
        "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"20d\"\n",
    );
    env.write_config("[schedule]\nwindow = \"5d\"\n");
    env.place(
        6001,
        env.p.lite,
        env.p.lite_month,
        env.today() + days(15),
        2,
    );

    let check = env.run(&["check"]).await;
    let renew = env.run(&["renew"]).await;

    assert_eq!(code(&check), 0, "{}", stderr(&check));
    let window = stdout(&check)
        .lines()
        .find(|l| l.starts_with("window"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        window.contains("21days ahead") && window.contains("schedule.window 5days widened"),
        "{window}"
    );
    assert!(window.contains("before = 20days"), "{window}");
    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    assert_eq!(env.sim.paid_calls(6001), 1, "listed and renewed");
}

#[tokio::test]
async fn check_online_names_the_generation_and_what_no_policy_covers() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.place(6101, env.p.lite, env.p.lite_month, env.today() + days(3), 2);
    env.place(6102, env.p.pro, env.p.pro_month, env.today() + days(4), 2);
    env.place(6103, env.p.pro, env.p.pro_month, env.today() + days(40), 2);
    env.unpin_api();

    let out = env.run(&["check", "--online"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(detected) in use"), "{text}");
    let uncovered = text
        .lines()
        .find(|l| l.starts_with("uncovered"))
        .unwrap_or_default();
    assert!(
        uncovered.contains("ISPmanager Pro: 2 license(s)")
            && uncovered.contains("6102")
            && uncovered.contains("6103"),
        "{text}"
    );
    assert!(!uncovered.contains("6101"), "{text}");
}

#[tokio::test]
async fn a_config_that_does_not_load_is_named_with_the_policy_mistakes() {
    let env = Env::new().await;
    env.write_policy("a.toml", "product = \"No Such Product\"\nrenew = true\n");
    env.write_config("");
    std::fs::remove_file(env.path("secret")).expect("no password file");

    let out = env.run(&["check"]).await;

    assert_eq!(code(&out), 78);
    let err = stderr(&out);
    assert!(err.contains("billmgr.password_file"), "{err}");
    assert!(err.contains("a.toml:1: unknown product"), "{err}");
}

#[tokio::test]
async fn every_log_line_of_a_cycle_has_an_event_and_durations_in_milliseconds() {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.place(6201, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    env.place(6202, env.p.pro, env.p.pro_month, env.today() + days(2), 2);

    let out = env.run(&["renew"]).await;

    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.len() > 5, "{lines:?}");
    for l in &lines {
        assert!(l["event"].is_string(), "no event: {l}");
        for (k, v) in l.as_object().expect("object") {
            if k.contains("duration") || k.contains("elapsed") || k.ends_with("_in") {
                assert!(k.ends_with("_ms") && v.is_u64(), "{k} = {v} in {l}");
            }
        }
    }
}

#[tokio::test]
async fn the_database_stores_one_timestamp_format() {
    use sqlx::{Connection, Row};
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.place(6301, env.p.lite, env.p.lite_month, env.today() + days(2), 2);
    env.place(6302, env.p.pro, env.p.pro_month, env.today() + days(2), 2);
    env.write_config("[alerts]\ncommand = \"/bin/true\"\n");
    assert_eq!(code(&env.run(&["renew"]).await), 0);
    assert_eq!(
        code(&env.run(&["prolong", "6301", "--period", "1 month"]).await),
        0
    );

    let url = format!("sqlite://{}", env.path("licrenew.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.expect("db");
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&mut db)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    let mut seen = 0;
    for t in &tables {
        let cols: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({t})")))
            .fetch_all(&mut db)
            .await
            .expect("columns")
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .filter(|c| {
                c.ends_with("_at")
                    || c.ends_with("_since")
                    || c.ends_with("_seen")
                    || c == "last_decided"
            })
            .collect();
        for c in cols {
            let values: Vec<Option<String>> =
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {c} FROM {t}")))
                    .fetch_all(&mut db)
                    .await
                    .expect("values")
                    .iter()
                    .map(|r| r.get::<Option<String>, _>(0))
                    .collect();
            for v in values.into_iter().flatten() {
                seen += 1;
                let ok = chrono::DateTime::parse_from_rfc3339(&v)
                    .is_ok_and(|d| d.offset().local_minus_utc() == 0)
                    && v.ends_with("+00:00")
                    && v.as_bytes().get(10) == Some(&b'T');
                assert!(ok, "{t}.{c} = {v:?}: not RFC 3339 UTC (+00:00)");
            }
        }
    }
    assert!(seen > 10, "{seen} timestamps checked");
}

#[tokio::test]
async fn a_huge_alert_before_or_before_neither_panics_nor_empties_the_window() {
    let env = Env::new().await;
    env.write_policy(
        "lite.toml",
        "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n",
    );
    env.write_policy(
        "pro.toml",
        "product = \"ISPmanager Pro\"\nrenew = false\nbefore = \"300000years\"\n",
    );
    env.write_config("[alerts]\nalert_before = \"18446744073709551615s\"\n");
    env.place(6401, env.p.lite, env.p.lite_month, env.today() + days(3), 2);

    let check = env.run(&["check"]).await;
    let renew = env.run(&["renew"]).await;

    assert_eq!(code(&check), 0, "{}", stderr(&check));
    assert!(stdout(&check).contains("window"), "{}", stdout(&check));
    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    assert_eq!(
        env.sim.paid_calls(6401),
        1,
        "the license was listed and renewed"
    );
}

#[tokio::test]
async fn check_warns_when_the_policies_fit_one_api_generation_only_under_auto() {
    let env = Env::new().await;
    env.unpin_api();
    for f in std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/policies.example.d"
    ))
    .expect("examples")
    .flatten()
    {
        std::fs::copy(f.path(), env.path("policies.d").join(f.file_name())).expect("copy");
    }

    let out = env.run(&["check"]).await;
    // Once a cycle detected the generation (BILLmanager 4 here), the warning is noise.
    env.run(&["renew", "--dry-run"]).await;
    let known = env.run(&["check"]).await;

    assert!(
        stdout(&out).contains("the policies load for BILLmanager 4 only"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&known).contains("the policies load for"),
        "{}",
        stdout(&known)
    );
}
