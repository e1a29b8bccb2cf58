//! Leadership on a real PostgreSQL (the building block of issue 15): one holder per account
//! key, the next takes over when it gives up, and a holder whose session is cut learns it lost.

use crate::schema::pg_db;
use licrenew::leader::{Leadership, holder, key, session_options};
use sqlx::Connection;
use std::time::Duration;

#[tokio::test]
async fn one_instance_leads_per_account_and_the_next_takes_over_when_it_lets_go() {
    let Some(db) = pg_db().await else { return };
    let opts = session_options(&db.url).expect("url");
    let k = key("leader", "https://billing.example/billmgr", "reseller");
    let other_account = key("leader", "https://billing.example/billmgr", "someone-else");

    let first = Leadership::try_acquire(&opts, k).await.expect("connect");
    let second = Leadership::try_acquire(&opts, k).await.expect("connect");
    let elsewhere = Leadership::try_acquire(&opts, other_account)
        .await
        .expect("connect");
    let mut first = first.expect("the first leads");
    let mut admin = sqlx::PgConnection::connect(&db.url).await.expect("admin");
    let shown = holder(&mut admin, k).await.expect("holder");
    let held = first.still_held(Duration::from_secs(2)).await;
    first.release().await;
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        Leadership::acquire(&opts, k, Duration::from_millis(100), &stop),
    )
    .await
    .expect("takes over quickly");

    assert!(second.is_none(), "a second instance stands by");
    assert!(elsewhere.is_some(), "another account has its own key");
    assert!(held);
    assert_eq!(
        shown.as_deref(),
        Some(licrenew::leader::application_name().as_str()),
        "who leads is visible"
    );
    let next = next.expect("the standby leads");
    next.release().await;
    if let Some(e) = elsewhere {
        e.release().await;
    }
    let _ = admin.close().await;
}

#[tokio::test]
async fn a_leader_whose_session_is_cut_knows_it_lost_and_a_standby_takes_over() {
    let Some(db) = pg_db().await else { return };
    let opts = session_options(&db.url).expect("url");
    let k = key("leader", "https://billing.example/billmgr", "partition");
    let mut leader = Leadership::try_acquire(&opts, k)
        .await
        .expect("connect")
        .expect("leads");
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let standby_opts = opts.clone();
    let standby = tokio::spawn(async move {
        Leadership::acquire(&standby_opts, k, Duration::from_millis(200), &stop).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !standby.is_finished(),
        "the standby waits while the leader holds the key"
    );

    // The partition: the leader's backend is terminated from another session.
    let mut admin = sqlx::PgConnection::connect(&db.url).await.expect("admin");
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.classid = (($1 >> 32) & 4294967295)::oid AND l.objid = ($1 & 4294967295)::oid",
    )
    .bind(k)
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    let lost = !leader.still_held(Duration::from_secs(2)).await;
    let taken = tokio::time::timeout(Duration::from_secs(10), standby)
        .await
        .expect("the standby takes over within 10 s")
        .expect("task");

    assert_eq!(cut, [true]);
    assert!(lost, "the old leader learns it lost");
    let taken = taken.expect("the standby leads");
    taken.release().await;
    leader.release().await;
    let _ = admin.close().await;
}
