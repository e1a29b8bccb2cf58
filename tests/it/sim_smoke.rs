//! Smoke test of the BILLmanager 4 simulator over real HTTP on loopback.
//!
//! Owns: a few end-to-end checks of `licrenew::sim` driven by a plain `reqwest` client and
//! plain string matching. Must not: use the crate's own BILLmanager client or XML parser; the
//! simulator is the witness against which that client is tested, so it is checked on its own.

use chrono::{Days, Months, NaiveDate};
use licrenew::sim::{Fault, FaultKind, SimConfig, SimHandle, SimLicense, start};

const AUTH: (&str, &str) = ("authinfo", "demo:demo-password");

async fn sim() -> SimHandle {
    let cfg = SimConfig {
        licenses: 0,
        ..SimConfig::default()
    };
    start("127.0.0.1:0".parse().expect("a socket address"), cfg)
        .await
        .expect("the simulator starts")
}

async fn call(h: &SimHandle, form: &[(&str, &str)]) -> String {
    let r = reqwest::Client::new()
        .post(h.url())
        .form(form)
        .send()
        .await
        .expect("an HTTP answer");
    assert_eq!(r.status(), 200);
    r.text().await.expect("a body")
}

fn place(h: &SimHandle, id: i64, price: i64, period: i64, expiredate: NaiveDate) {
    h.upsert_license(SimLicense {
        id,
        licname: format!("web{id}.example.net"),
        ip: format!("203.0.113.{}", id % 200),
        price,
        period,
        expiredate,
        status: 2,
        last_ip_change: None,
    });
}

#[tokio::test]
async fn the_list_shows_every_license_and_a_saved_filter_narrows_it() {
    let h = sim().await;
    let today = h.today();
    place(&h, 1001, 7, 8, today + Days::new(3));
    place(&h, 1002, 11, 16, today + Days::new(40));

    let all = call(&h, &[AUTH, ("func", "software")]).await;
    assert_eq!(all.matches("<elem>").count(), 2, "{all}");
    assert!(
        all.contains("<id>1001</id>")
            && all.contains("<price>7</price>")
            && all.contains("<period>8</period>")
    );

    let to = (today + Days::new(10)).to_string();
    let from = today.to_string();
    let saved = call(
        &h,
        &[
            AUTH,
            ("func", "software.filter"),
            ("expires", &from),
            ("expiree", &to),
            ("sok", "ok"),
        ],
    )
    .await;
    assert!(saved.contains("<ok/>"), "{saved}");
    let some = call(&h, &[AUTH, ("func", "software")]).await;
    assert!(
        some.contains("<id>1001</id>") && !some.contains("<id>1002</id>"),
        "{some}"
    );
}

#[tokio::test]
async fn a_renewal_extends_by_one_month_from_the_current_expiry_and_counts_one_paid_call() {
    let h = sim().await;
    let expiry = h.today() + Days::new(5);
    place(&h, 1001, 7, 8, expiry);

    let doc = call(
        &h,
        &[
            AUTH,
            ("func", "software.period"),
            ("elid", "1001"),
            ("period", "8"),
            ("sok", "ok"),
        ],
    )
    .await;

    assert!(doc.contains("<ok/>"), "{doc}");
    let expected = expiry
        .checked_add_months(Months::new(1))
        .expect("a valid date");
    assert_eq!(h.license(1001).map(|l| l.expiredate), Some(expected));
    assert_eq!(h.paid_calls(1001), 1);
    assert_eq!(h.paid_calls_total(), 1);
    assert_eq!(h.renewals_by_expiry(), vec![(1001, expiry, 1)]);
    assert!(
        h.requests()
            .iter()
            .all(|r| r.method == "POST" && !r.query.contains("authinfo"))
    );
}

#[tokio::test]
async fn a_trial_renewal_is_refused_and_nothing_is_paid() {
    let h = sim().await;
    let expiry = h.today() + Days::new(5);
    place(&h, 1001, 7, 7, expiry);

    let doc = call(
        &h,
        &[
            AUTH,
            ("func", "software.period"),
            ("elid", "1001"),
            ("period", "7"),
            ("sok", "ok"),
        ],
    )
    .await;

    assert!(
        doc.contains("<error type=\"value\" object=\"period\""),
        "{doc}"
    );
    assert_eq!(h.license(1001).map(|l| l.expiredate), Some(expiry));
    assert_eq!(h.paid_calls_total(), 0);
}

#[tokio::test]
async fn a_second_ip_change_in_the_same_month_is_refused() {
    let h = sim().await;
    place(&h, 1001, 7, 8, h.today() + Days::new(20));
    let change = |ip: &'static str| {
        let h = h.clone();
        async move {
            call(
                &h,
                &[
                    AUTH,
                    ("func", "software.edit"),
                    ("elid", "1001"),
                    ("ip", ip),
                    ("sok", "ok"),
                ],
            )
            .await
        }
    };

    let first = change("192.0.2.1").await;
    let second = change("192.0.2.2").await;

    assert!(first.contains("<ok/>"), "{first}");
    assert!(
        second.contains("<error type=\"value\" object=\"ip\""),
        "{second}"
    );
    assert!(
        second.contains("The IP address can be changed only once a month"),
        "{second}"
    );
    assert_eq!(h.license(1001).map(|l| l.ip), Some("192.0.2.1".to_owned()));
}

#[tokio::test]
async fn an_expired_session_gets_the_access_error() {
    let h = sim().await;
    let login = call(
        &h,
        &[
            ("func", "auth"),
            ("username", "demo"),
            ("password", "demo-password"),
        ],
    )
    .await;
    let sid = login
        .split("<auth id=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a session id")
        .to_owned();
    assert!(
        !call(&h, &[("auth", &sid), ("func", "software")])
            .await
            .contains("<error")
    );

    h.expire_sessions();
    let doc = call(&h, &[("auth", &sid), ("func", "software")]).await;

    assert!(doc.contains("<error type=\"access\""), "{doc}");
    assert!(
        doc.contains("Insufficient privileges to perform this function"),
        "{doc}"
    );
}

#[tokio::test]
async fn a_drop_after_fault_applies_the_renewal_but_the_client_sees_a_transport_error() {
    let h = sim().await;
    let expiry = h.today() + Days::new(5);
    place(&h, 1001, 7, 8, expiry);
    h.add_fault(Fault {
        func: Some("software.period".into()),
        elid: Some(1001),
        kind: FaultKind::DropAfter,
        times: Some(1),
    });

    let renew = [
        AUTH,
        ("func", "software.period"),
        ("elid", "1001"),
        ("period", "8"),
        ("sok", "ok"),
    ];
    let sent = reqwest::Client::new()
        .post(h.url())
        .form(&renew)
        .send()
        .await;

    assert!(sent.is_err(), "expected a transport error, got {sent:?}");
    assert_eq!(
        h.paid_calls(1001),
        1,
        "the renewal landed although no answer came back"
    );
    assert!(h.license(1001).is_some_and(|l| l.expiredate > expiry));
}
