//! `licrenew db copy`: moving a running installation from its SQLite file to PostgreSQL keeps
//! every license, journal row, cycle, order and alert, and the journal keeps guarding money
//! there (issue 15).

use crate::ledger::{LITE, place_due};
use crate::support::{Env, code, stderr, stdout};
use std::time::Duration;

/// `licrenew db copy --from FROM --to TO`.
async fn db_copy(env: &Env, from: &str, to: &str) -> std::process::Output {
    env.run(&["db", "copy", "--from", from, "--to", to]).await
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).expect("json")
}

/// Timestamps cut to microseconds, what PostgreSQL keeps (SQLite keeps nanoseconds).
fn micros(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(a) => Value::Array(a.iter().map(micros).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), micros(v))).collect()),
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let t = t.with_timezone(&chrono::Utc);
                let cut =
                    chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::microseconds(1))
                        .unwrap_or(t);
                Value::String(cut.to_rfc3339())
            }
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}

#[tokio::test]
async fn a_sqlite_installation_moves_to_postgresql_whole_and_nothing_is_paid_again() {
    let Some(pg) = licrenew::pgtest::PgTestDatabase::create().await else {
        return;
    };
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    let due = place_due(&env, 5001, 3);
    // A journal with an outcome of each kind worth keeping: renewed, refused.
    env.sim.add_fault(licrenew::sim::Fault {
        func: Some(env.p.renew_func.into()),
        elid: Some(5003),
        kind: licrenew::sim::FaultKind::ErrorDoc {
            r#type: "balance".into(),
            object: None,
            msg: "Not enough money".into(),
        },
        times: None,
    });
    env.run(&["renew"]).await;
    env.run(&["renew"]).await;
    let history = json(&env.run(&["history", "--json"]).await);
    let licenses = json(&env.run(&["licenses", "--json"]).await);
    assert!(
        history.as_array().is_some_and(|a| a.len() >= 3),
        "{history}"
    );

    let db = env.path("licrenew.db");
    let copy = db_copy(&env, &format!("sqlite://{}", db.display()), &pg.url).await;
    let again = db_copy(&env, &db.to_string_lossy(), &pg.url).await;
    // The file renews nothing any more (two journals would not exclude each other); what
    // only reads still works.
    let old_file = env.run(&["renew"]).await;
    let old_history = env.run(&["history"]).await;
    let old_status = env.run(&["status"]).await;
    let old_check = env.run(&["check"]).await;
    let old_service = env.run(&["run"]).await;
    let recopy = {
        let other = licrenew::pgtest::PgTestDatabase::create()
            .await
            .expect("a second database");
        db_copy(&env, &db.to_string_lossy(), &other.url).await
    };
    // The same config, now on PostgreSQL.
    env.write_config(&format!("[database]\nurl = \"{}\"\n", pg.url));
    let history_pg = json(&env.run(&["history", "--json"]).await);
    let licenses_pg = json(&env.run(&["licenses", "--json"]).await);
    env.sim.clear_faults();
    let renew = env.run(&["renew", "--json"]).await;

    assert_eq!(code(&copy), 0, "{}", stderr(&copy));
    let text = stdout(&copy);
    for table in ["licenses", "cycles", "renewals", "alerts"] {
        assert!(text.contains(table), "{text}");
    }
    assert!(text.contains("verified"), "{text}");
    assert_eq!(
        code(&again),
        1,
        "the moved file is not copied again, not even into the filled database"
    );
    assert!(
        stderr(&again).contains("already copied"),
        "{}",
        stderr(&again)
    );
    assert_eq!(code(&old_file), 1, "{}", stderr(&old_file));
    assert!(
        stderr(&old_file).contains("was copied to"),
        "{}",
        stderr(&old_file)
    );
    assert_eq!(code(&old_history), 0, "{}", stderr(&old_history));
    assert!(
        stdout(&old_status).contains("moved      to postgres://"),
        "{}",
        stdout(&old_status)
    );
    // A config mistake, named by check, and the service exits 78 (no restart loop).
    assert_eq!(code(&old_check), 78, "{}", stderr(&old_check));
    assert!(
        stderr(&old_check).contains("was copied to"),
        "{}",
        stderr(&old_check)
    );
    assert_eq!(code(&old_service), 78, "{}", stderr(&old_service));
    assert_eq!(code(&recopy), 1, "a moved file is not copied a second time");
    assert!(
        stderr(&recopy).contains("already copied"),
        "{}",
        stderr(&recopy)
    );
    assert_eq!(
        micros(&history_pg),
        micros(&history),
        "the journal is the same on PostgreSQL"
    );
    assert_eq!(
        micros(&licenses_pg),
        micros(&licenses),
        "the licenses are the same"
    );
    assert_eq!(code(&renew), 0, "{}", stderr(&renew));
    // What was bought before the move is not bought again; the refused one is now renewed.
    for (elid, _) in &due {
        assert_eq!(env.sim.paid_calls(*elid), 1, "license {elid}");
    }
    let report = json(&renew);
    let cycle = report["cycle"].as_i64().expect("cycle id");
    let before: i64 = history
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["cycle_id"].as_i64())
        .max()
        .expect("cycles");
    assert!(
        cycle > before,
        "ids continue after the copied ones: {cycle} vs {before}"
    );
}

#[tokio::test]
async fn db_copy_refuses_while_the_source_is_in_use_even_idle_and_names_a_bad_url_plainly() {
    let Some(pg) = licrenew::pgtest::PgTestDatabase::create().await else {
        return;
    };
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    env.run(&["sync"]).await;
    let db = env.path("licrenew.db");
    // An idle service (no cycle, so no file lock) is found by its record.
    env.write_config("[schedule]\ncron = \"0 0 0 1 1 *\"\nrun_at_start = false\n");
    let mut service = env
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = db_copy(&env, &db.to_string_lossy(), &pg.url).await;
    crate::support::signal(service.id().expect("pid"), "TERM");
    let _ = service.wait().await;
    let held = licrenew::store::lock(&db).expect("lock");

    let busy = db_copy(&env, &db.to_string_lossy(), &pg.url).await;
    drop(held);
    let wrong_way = db_copy(&env, &pg.url, &db.to_string_lossy()).await;
    let missing = db_copy(&env, "/nonexistent/x.db", &pg.url).await;
    // Another installation into a database that already holds one.
    let copied = db_copy(&env, &db.to_string_lossy(), &pg.url).await;
    let other = Env::new().await;
    other.run(&["sync"]).await;
    let filled = db_copy(
        &other,
        &other.path("licrenew.db").to_string_lossy(),
        &pg.url,
    )
    .await;

    assert_eq!(code(&idle), 1, "{}", stderr(&idle));
    assert!(
        stderr(&idle).contains("stop the service first"),
        "{}",
        stderr(&idle)
    );
    assert_eq!(code(&busy), 1, "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("stop the service"),
        "{}",
        stderr(&busy)
    );
    assert_eq!(code(&wrong_way), 2, "{}", stderr(&wrong_way));
    assert_eq!(code(&missing), 2, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("no such database file"));
    assert_eq!(code(&copied), 0, "{}", stderr(&copied));
    assert_eq!(code(&filled), 1, "a filled database is refused");
    assert!(stderr(&filled).contains("not empty"), "{}", stderr(&filled));
}
