//! Smoke test of the BILLmanager 4 and 5/6 simulators over real HTTP on loopback.
//!
//! Owns: a few end-to-end checks of `licrenew::sim` driven by a plain `reqwest` client and
//! plain string matching. Must not: use the crate's own BILLmanager client or XML parser; the
//! simulator is the witness against which that client is tested, so it is checked on its own.

use chrono::{Days, Months, NaiveDate};
use licrenew::sim::{Fault, FaultKind, SimApi, SimConfig, SimHandle, SimLicense, start};

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
        autoprolong: None,
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

// ---- BILLmanager 5/6 -------------------------------------------------------------------

/// ISPmanager 6 Lite in the simulator's own sample tariff table.
const LITE6: i64 = 55227;

async fn sim5(licenses: usize) -> SimHandle {
    let cfg = SimConfig {
        api: SimApi::Billmgr5,
        licenses,
        ..SimConfig::default()
    };
    start("127.0.0.1:0".parse().expect("a socket address"), cfg)
        .await
        .expect("the simulator starts")
}

/// A 5/6 license: `pricelist` in `price`, months (or -100 for a trial) in `period`.
fn place5(h: &SimHandle, id: i64, months: i64, expiredate: NaiveDate) {
    h.upsert_license(SimLicense {
        id,
        licname: format!("web{id}.example.net"),
        ip: format!("203.0.113.{}", id % 200),
        price: LITE6,
        period: months,
        expiredate,
        status: 2,
        last_ip_change: None,
        autoprolong: None,
    });
}

#[tokio::test]
async fn a_5_6_list_read_page_by_page_returns_every_license_once_with_the_total_in_p_elems() {
    let h = sim5(53).await;
    assert!(h.url().ends_with("/billmgr"), "{}", h.url());
    let mut ids = Vec::new();
    for page in 1..=4 {
        let doc = call(
            &h,
            &[
                AUTH,
                ("func", "soft"),
                ("p_cnt", "25"),
                ("p_num", &page.to_string()),
            ],
        )
        .await;
        assert!(doc.contains("<p_elems>53</p_elems>"), "{doc}");
        assert!(doc.contains(&format!("<p_num>{page}</p_num>")), "{doc}");
        let rows = doc.matches("<elem>").count();
        assert_eq!(rows, [25, 25, 3, 0][page - 1], "page {page}");
        ids.extend(
            doc.split("<elem><id>")
                .skip(1)
                .filter_map(|s| s.split('<').next()?.parse::<i64>().ok()),
        );
    }
    assert_eq!(ids, (1001..=1053).collect::<Vec<_>>());
    let default = call(&h, &[AUTH, ("func", "soft")]).await;
    assert_eq!(default.matches("<elem>").count(), 20, "the default page");
}

#[tokio::test]
async fn a_5_6_prolong_without_sok_is_a_free_preview_and_with_sok_extends_by_the_months_and_counts_one_paid_call()
 {
    let h = sim5(0).await;
    let expiry = h.today() + Days::new(5);
    place5(&h, 1001, 1, expiry);
    let after = |months: u32| {
        expiry
            .checked_add_months(Months::new(months))
            .expect("a valid date")
    };
    let nested = |new: NaiveDate| {
        format!("<doc><expiredate>{expiry}</expiredate><newexpiredate>{new}</newexpiredate></doc>")
    };
    let renew = |sok: bool| {
        let mut form = vec![
            AUTH,
            ("func", "service.prolong"),
            ("elid", "1001"),
            ("period", "12"),
        ];
        if sok {
            form.push(("sok", "ok"));
        }
        form
    };

    let preview = call(&h, &renew(false)).await;
    assert!(
        preview.contains(&format!(
            "<newexpiredate>{}</newexpiredate>",
            after(12).format("%Y-%m-%d")
        )) && !preview.contains("<doc><expiredate>"),
        "a flat preview: {preview}"
    );
    assert_eq!(h.license(1001).map(|l| l.expiredate), Some(expiry));
    assert_eq!(h.paid_calls_total(), 0);

    let form = call(&h, &[AUTH, ("func", "service.prolong"), ("elid", "1001")]).await;
    assert!(
        form.contains(
            "<val key=\"1\">6.50 EUR per month</val><val key=\"12\">65.00 EUR per year</val>"
        ),
        "{form}"
    );

    let paid = call(&h, &renew(true)).await;
    assert!(paid.contains(&nested(after(12))), "{paid}");
    assert_eq!(h.license(1001).map(|l| l.expiredate), Some(after(12)));
    assert_eq!(h.paid_calls(1001), 1);
    assert_eq!(h.paid_calls_total(), 1);
    assert_eq!(h.renewals_by_expiry(), vec![(1001, expiry, 1)]);
}

#[tokio::test]
async fn a_5_6_prolong_of_a_trial_is_refused_and_nothing_is_paid() {
    let h = sim5(0).await;
    let expiry = h.today() + Days::new(5);
    place5(&h, 1001, -100, expiry);

    let doc = call(
        &h,
        &[
            AUTH,
            ("func", "service.prolong"),
            ("elid", "1001"),
            ("period", "1"),
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
async fn a_5_6_order_sent_to_the_basket_creates_nothing_and_a_finished_one_creates_the_license() {
    let h = sim5(0).await;
    let order = |button: &'static str| {
        [
            AUTH,
            ("func", "soft.order.param"),
            ("pricelist", "55227"),
            ("period", "1"),
            ("licname", "new.example.net"),
            ("ip", "192.0.2.50"),
            ("sok", "ok"),
            ("skipbasket", "on"),
            ("clicked_button", button),
        ]
    };

    let basket = call(&h, &order("basket")).await;
    assert!(
        basket.contains("<ok/>") && !basket.contains("<id>"),
        "{basket}"
    );
    assert!(h.licenses().is_empty());
    assert_eq!(h.paid_calls_total(), 0);
    assert_eq!(h.cart_calls(), 1);

    let done = call(&h, &order("finish")).await;
    assert!(done.contains("<item.id>1001</item.id>"), "{done}");
    let l = h.license(1001).expect("the ordered license");
    assert_eq!((l.price, l.period, l.status), (LITE6, 1, 2));
    let expected = h
        .today()
        .checked_add_months(Months::new(1))
        .expect("a valid date");
    assert_eq!(l.expiredate, expected);
    assert_eq!(h.paid_calls_total(), 1);
}

#[tokio::test]
async fn a_5_6_saved_edit_answers_with_the_fields_in_a_nested_doc_without_ok() {
    let h = sim5(0).await;
    place5(&h, 1001, 1, h.today() + Days::new(20));

    let doc = call(
        &h,
        &[
            AUTH,
            ("func", "soft.edit"),
            ("elid", "1001"),
            ("licname", "renamed.example.net"),
            ("ip", "192.0.2.1"),
            ("sok", "ok"),
        ],
    )
    .await;

    assert!(
        doc.contains("<doc><id>1001</id><licname>renamed.example.net</licname><ip>192.0.2.1</ip>"),
        "{doc}"
    );
    assert!(!doc.contains("<ok/>"), "the saved form, no <ok/>: {doc}");
    let l = h.license(1001).expect("still there");
    assert_eq!(
        (l.licname.as_str(), l.ip.as_str()),
        ("renamed.example.net", "192.0.2.1")
    );
    let view = call(&h, &[AUTH, ("func", "soft.edit"), ("elid", "1001")]).await;
    assert!(
        view.contains("<licname>renamed.example.net</licname>") && !view.contains("<doc><id>"),
        "a view is not nested: {view}"
    );
}
