//! Answers of the real BILLmanager reconstructed from public evidence
//! (`tests/fixtures/billmgr/`, each file naming its source; `EVIDENCE.md` has the details),
//! served over HTTP and read through the real client: each must yield the fields the client
//! relies on. Every fixture is read twice: as stored (a comment first) and with the XML
//! declaration real answers start with.

use crate::support::billmgr;
use chrono::NaiveDate;
use licrenew::billmgr::Client;
use licrenew::billmgr::dialect::Dialect;
use licrenew::config::{Api, AuthMode};
use licrenew::domain::{Money, Row, Status};
use std::path::PathBuf;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/billmgr")
}

/// The fixtures this file checks; a new fixture without a check fails
/// `every_fixture_is_checked`.
const CHECKED: &[&str] = &[
    "v4-login-refused.xml",
    "v4-software-list.xml",
    "v4-error-code.xml",
    "v4-error-code-obj.xml",
    "v4-error-code1.xml",
    "v5-login-ok.xml",
    "v5-login-refused.xml",
    "v5-soft-list-page.xml",
    "v5-soft-edit-view.xml",
    "v5-soft-edit-saved.xml",
    "v5-soft-edit-saved-flat.xml",
    "v5-order-answer.xml",
    "v5-order-answer-item-id.xml",
    "v5-prolong-preview.xml",
    "v5-prolong-paid.xml",
    "v5-checkip-available.xml",
    "v5-checkip-taken.xml",
    "v5-whoami.xml",
    "v5-dashboard-info.xml",
    "v5-error-auth.xml",
    "v5-error-access.xml",
    "v5-error-missed.xml",
    "v5-error-value.xml",
    "v5-error-exists.xml",
    "v5-error-xml.xml",
    "v5-error-busy.xml",
];

/// The fixture's text: as stored, or with an XML declaration first.
fn fixture(name: &str, declared: bool) -> String {
    let text = std::fs::read_to_string(dir().join(name)).expect("fixture");
    assert!(
        text.starts_with("<!-- source:"),
        "{name} must start with its source"
    );
    if declared {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{text}")
    } else {
        text
    }
}

fn answer(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/xml; charset=UTF-8")
        .set_body_string(body)
}

/// A server answering every request with the fixture, and a client of generation `api`.
async fn serving(name: &str, declared: bool, api: Api, auth: AuthMode) -> (MockServer, Client) {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer(fixture(name, declared)))
        .mount(&s)
        .await;
    let mut cfg = billmgr(&format!("{}/billmgr", s.uri()), auth);
    cfg.api = Some(api);
    (s, Client::new(&cfg).expect("client"))
}

fn day(s: &str) -> NaiveDate {
    licrenew::domain::parse_date(s).expect("date")
}

#[test]
fn every_fixture_is_checked() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("fixtures")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    files.sort();
    let mut checked: Vec<String> = CHECKED.iter().map(|s| s.to_string()).collect();
    checked.sort();
    assert_eq!(files, checked);
}

#[tokio::test]
async fn logins_succeed_with_a_session_id_and_refusals_stop_as_auth_errors_in_both_generations() {
    for declared in [false, true] {
        let (_s, ok) = serving(
            "v5-login-ok.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Session,
        )
        .await;
        ok.check_login().await.expect("a session id");

        let (_s, v5) = serving(
            "v5-login-refused.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Session,
        )
        .await;
        let e = v5.check_login().await.expect_err("refused");
        assert!(e.is_auth(), "{e}");
        assert_eq!(
            e.api().and_then(|a| a.object.as_deref()),
            Some("badpassword")
        );

        let (s, v4) = serving(
            "v4-login-refused.xml",
            declared,
            Api::Billmgr4,
            AuthMode::Authinfo,
        )
        .await;
        let e = v4.list(None).await.expect_err("refused");
        assert!(e.is_auth(), "<authfail/> is a refused login: {e}");
        let again = v4.list(None).await.expect_err("fuse");
        assert!(!again.is_auth(), "no further call after a refusal: {again}");
        assert_eq!(s.received_requests().await.expect("recorded").len(), 1);
    }
}

#[tokio::test]
async fn a_billmgr4_list_yields_licenses_and_its_ordered_row_as_pending() {
    for declared in [false, true] {
        let s = MockServer::start().await;
        Mock::given(body_string_contains("func=software.filter"))
            .respond_with(answer("<doc><ok/></doc>".into()))
            .mount(&s)
            .await;
        Mock::given(body_string_contains("func=software&"))
            .respond_with(answer(fixture("v4-software-list.xml", declared)))
            .mount(&s)
            .await;
        let c = Client::new(&billmgr(
            &format!("{}/manager/billmgr", s.uri()),
            AuthMode::Authinfo,
        ))
        .expect("client");

        let listing = c.list(None).await.expect("list");

        let ids: Vec<_> = listing
            .licenses
            .iter()
            .map(|l| (l.elid, l.product, l.period))
            .collect();
        assert_eq!(ids, [(1101, 7, Some(8)), (1102, 11, Some(15))]);
        assert_eq!(listing.licenses[1].status, Status::Suspended);
        assert_eq!(listing.pending.len(), 1);
        assert_eq!(listing.pending[0].elid, 1103);
        assert!(listing.bad_rows.is_empty(), "{:?}", listing.bad_rows);
    }
}

#[test]
fn a_5_6_list_page_yields_ids_names_costs_statuses_and_what_needs_the_form() {
    for declared in [false, true] {
        let text = fixture("v5-soft-list-page.xml", declared);
        let d = Dialect(Api::Billmgr5);
        let (doc, rows) = licrenew::billmgr::xml::parse(text.as_bytes()).expect("parses");
        let rows: Vec<Row> = rows.iter().filter_map(|r| d.license(r)).collect();

        assert_eq!(doc.fields.get("p_elems"), Some("7"));
        let Row::License(a) = &rows[0] else {
            panic!("{:?}", rows[0])
        };
        assert_eq!((a.elid, a.product, a.period), (1001, 55227, Some(1)));
        assert_eq!(a.pricelist_label.as_deref(), Some("ISPmanager 6 Lite"));
        assert_eq!(a.cost, Money::parse("9.00 EUR", None));
        assert!(!a.autoprolong);
        let Row::Unresolved(b) = &rows[1] else {
            panic!(
                "a row with only a display name needs the form: {:?}",
                rows[1]
            )
        };
        assert!(!b.product_known && b.period_known);
        assert_eq!(b.license.status, Status::Suspended, "from item_status orig");
        assert!(b.license.autoprolong, "\"1 month\" is on");
        let Row::License(c) = &rows[2] else {
            panic!("{:?}", rows[2])
        };
        assert_eq!(c.special.as_deref(), Some("Scheduled for deletion"));
        let Row::License(trial) = &rows[3] else {
            panic!("{:?}", rows[3])
        };
        assert_eq!(trial.period, Some(-100));
        assert!(
            matches!(&rows[4], Row::Pending(p) if p.elid == 1005),
            "{:?}",
            rows[4]
        );
    }
}

#[tokio::test]
async fn a_5_6_form_gives_the_numeric_tariff_and_the_autoprolong_key() {
    for declared in [false, true] {
        let (_s, c) = serving(
            "v5-soft-edit-view.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Authinfo,
        )
        .await;

        let l = c.view(1001).await.expect("view");

        assert_eq!((l.product, l.period), (55227, Some(1)));
        assert!(!l.autoprolong, "`null` is off");
        assert_eq!(l.expiry, day("2024-07-01"));
        assert_eq!(l.status, Status::Active);
    }
}

#[tokio::test]
async fn a_saved_5_6_edit_without_ok_is_a_success_when_its_fields_show_the_change() {
    for name in ["v5-soft-edit-saved.xml", "v5-soft-edit-saved-flat.xml"] {
        for declared in [false, true] {
            let (_s, c) = serving(name, declared, Api::Billmgr5, AuthMode::Authinfo).await;

            c.edit(1001, None, Some("203.0.113.20"))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let other = c.edit(1001, None, Some("203.0.113.99")).await;
            assert!(other.is_err(), "{name}: fields that do not show the change");
        }
    }
}

#[tokio::test]
async fn an_order_answer_gives_the_new_id_as_id_or_item_id() {
    for name in ["v5-order-answer.xml", "v5-order-answer-item-id.xml"] {
        for declared in [false, true] {
            let (_s, c) = serving(name, declared, Api::Billmgr5, AuthMode::Authinfo).await;

            let id = c
                .order(55227, 1, "web1.example.net", "203.0.113.10")
                .await
                .expect("ordered");

            assert_eq!(id, Some(1006), "{name}");
        }
    }
}

#[tokio::test]
async fn a_prolong_preview_gives_the_new_expiry_and_the_price_and_the_paid_answer_the_new_expiry() {
    for declared in [false, true] {
        let (_s, c) = serving(
            "v5-prolong-preview.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Authinfo,
        )
        .await;
        let p = c
            .preview_renew(1001, 1)
            .await
            .expect("preview")
            .expect("5/6");
        assert_eq!(p.new_expiry, Some(day("2024-08-01")));
        assert_eq!(p.cost, Money::parse("9.00 EUR", None));
        let year = c
            .preview_renew(1001, 12)
            .await
            .expect("preview")
            .expect("5/6");
        assert_eq!(year.cost, Money::parse("90.00 EUR", None));

        let (_s, c) = serving(
            "v5-prolong-paid.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Authinfo,
        )
        .await;
        let r = c.renew(1001, 1).await.expect("answered");
        assert_eq!(r.new_expiry, Some(day("2024-08-01")));
        assert!(
            !r.confirmed,
            "no <ok/>: the caller must re-read before calling it bought"
        );
    }
}

#[tokio::test]
async fn an_ip_check_is_available_without_an_error_and_not_available_with_one() {
    for declared in [false, true] {
        let (_s, c) = serving(
            "v5-checkip-available.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Authinfo,
        )
        .await;
        c.check_ip(55227, 1, "203.0.113.20")
            .await
            .expect("available");

        let (s, c) = serving(
            "v5-checkip-taken.xml",
            declared,
            Api::Billmgr5,
            AuthMode::Authinfo,
        )
        .await;
        let e = c
            .check_ip(55227, 1, "203.0.113.20")
            .await
            .expect_err("taken");
        assert_eq!(e.api().map(|a| a.kind.as_str()), Some("exists"));
        let sent = s.received_requests().await.expect("recorded");
        let form = String::from_utf8_lossy(&sent[0].body).into_owned();
        assert!(
            form.contains("sok=ok"),
            "checkip sends sok, as JBS does: {form}"
        );
    }
}

#[tokio::test]
async fn the_balance_comes_from_whoami_else_from_dashboard_info() {
    for declared in [false, true] {
        let (_s, c) = serving("v5-whoami.xml", declared, Api::Billmgr5, AuthMode::Authinfo).await;
        let b = c.balance().await.expect("balance").expect("shown");
        assert_eq!((b.amount.cents, b.amount.currency.as_str()), (12345, "EUR"));
        assert_eq!(b.source, "whoami");

        let s = MockServer::start().await;
        Mock::given(body_string_contains("func=whoami"))
            .respond_with(answer("<doc><user name=\"x\"/></doc>".into()))
            .mount(&s)
            .await;
        Mock::given(body_string_contains("func=dashboard.info"))
            .respond_with(answer(fixture("v5-dashboard-info.xml", declared)))
            .mount(&s)
            .await;
        let mut cfg = billmgr(&format!("{}/billmgr", s.uri()), AuthMode::Authinfo);
        cfg.api = Some(Api::Billmgr5);
        let c = Client::new(&cfg).expect("client");
        let b = c.balance().await.expect("balance").expect("shown");
        assert_eq!((b.amount.cents, b.amount.currency.as_str()), (12345, "EUR"));
        assert_eq!(b.source, "dashboard.info");
    }
}

#[tokio::test]
async fn error_documents_keep_their_type_object_and_message() {
    // (fixture, generation, type, object, a word of the message)
    let cases = [
        (
            "v5-error-auth.xml",
            Api::Billmgr5,
            "auth",
            Some("badip"),
            None,
        ),
        ("v5-error-access.xml", Api::Billmgr5, "access", None, None),
        (
            "v5-error-missed.xml",
            Api::Billmgr5,
            "missed",
            Some("elid"),
            Some("not found"),
        ),
        ("v5-error-value.xml", Api::Billmgr5, "value", None, None),
        ("v5-error-exists.xml", Api::Billmgr5, "exists", None, None),
        ("v5-error-xml.xml", Api::Billmgr5, "xml", None, None),
        (
            "v5-error-busy.xml",
            Api::Billmgr5,
            "unknown",
            None,
            Some("Request in process"),
        ),
        (
            "v4-error-code.xml",
            Api::Billmgr4,
            "value",
            Some("ip"),
            None,
        ),
        (
            "v4-error-code-obj.xml",
            Api::Billmgr4,
            "missed",
            Some("user"),
            None,
        ),
        (
            "v4-error-code1.xml",
            Api::Billmgr4,
            "code 1",
            None,
            Some("Failed to allocate memory"),
        ),
    ];
    for (name, api, kind, object, msg) in cases {
        for declared in [false, true] {
            let (_s, c) = serving(name, declared, api, AuthMode::Authinfo).await;

            let e = c.view(1001).await.expect_err(name);

            let a = e.api().unwrap_or_else(|| panic!("{name}: {e}"));
            assert_eq!(a.kind, kind, "{name}");
            if let Some(o) = object {
                assert_eq!(a.object.as_deref(), Some(o), "{name}");
            }
            if let Some(m) = msg {
                assert!(
                    a.msg.as_deref().is_some_and(|t| t.contains(m)),
                    "{name}: {a:?}"
                );
            }
            if name == "v5-error-busy.xml" {
                assert!(e.is_busy(), "a busy refusal is told apart");
            }
        }
    }
}
