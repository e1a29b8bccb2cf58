//! The client against a mock HTTP server: the exact requests it sends, and every error path.

use crate::support::{CANARY, assert_no_canary, billmgr};
use licrenew::billmgr::{Certainty, Client, ErrorKind, xml::XmlError};
use licrenew::config::AuthMode;
use std::time::Duration;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const ENDPOINT: &str = "/manager/billmgr";

fn xml(body: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/xml; charset=UTF-8")
        .set_body_string(body)
}

async fn server() -> MockServer {
    MockServer::start().await
}

fn client(server: &MockServer, auth: AuthMode) -> Client {
    Client::new(&billmgr(&format!("{}{ENDPOINT}", server.uri()), auth)).expect("client")
}

fn form(req: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

fn field<'a>(f: &'a [(String, String)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Every request: POST, form-encoded, no query string, credentials only in the body.
async fn assert_requests_are_clean(server: &MockServer) -> Vec<Vec<(String, String)>> {
    let reqs = server.received_requests().await.expect("recording on");
    assert!(!reqs.is_empty());
    reqs.iter()
        .map(|r| {
            assert_eq!(r.method.as_str(), "POST");
            assert_eq!(r.url.path(), ENDPOINT);
            assert_eq!(r.url.query(), None, "nothing may travel in the URL");
            assert_no_canary("the URL", r.url.as_str());
            let ct = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            assert_eq!(ct, "application/x-www-form-urlencoded");
            let f = form(r);
            assert_eq!(field(&f, "out"), Some("xml"));
            assert_eq!(field(&f, "lang"), Some("en"));
            f
        })
        .collect()
}

#[tokio::test]
async fn renew_posts_software_period_with_sok_and_authinfo_in_the_body() {
    let s = server().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(xml("<doc><ok/></doc>"))
        .mount(&s)
        .await;

    let ans = client(&s, AuthMode::Authinfo)
        .renew(334673, 8)
        .await
        .expect("ok");

    assert_eq!(ans.new_expiry, None);
    let forms = assert_requests_are_clean(&s).await;
    assert_eq!(forms.len(), 1, "a paid call is sent exactly once");
    let f = &forms[0];
    assert_eq!(field(f, "func"), Some("software.period"));
    assert_eq!(field(f, "elid"), Some("334673"));
    assert_eq!(field(f, "period"), Some("8"));
    assert_eq!(field(f, "sok"), Some("ok"));
    assert_eq!(
        field(f, "authinfo"),
        Some(format!("reseller:{CANARY}").as_str())
    );
}

#[tokio::test]
async fn order_check_ip_and_edit_send_the_guides_fields() {
    let s = server().await;
    Mock::given(body_string_contains("func=software.edit"))
        .and(body_string_contains("price=7"))
        .respond_with(xml("<doc><ok/><id>4242</id></doc>"))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software.licinfo"))
        .respond_with(xml("<doc><ok/><ip>111.222.111.222</ip></doc>"))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software.edit"))
        .and(body_string_contains("elid=334673"))
        .respond_with(xml("<doc><ok/></doc>"))
        .mount(&s)
        .await;
    let c = client(&s, AuthMode::Authinfo);

    let id = c
        .order(7, 8, "web1", "111.222.111.222")
        .await
        .expect("order");
    let check = c.check_ip(7, 8, "111.222.111.222").await.expect("licinfo");
    c.edit(334673, Some("NEWLICNAME"), None)
        .await
        .expect("edit");

    assert_eq!(id, Some(4242));
    assert_eq!(
        check.fields,
        vec![("ip".to_owned(), "111.222.111.222".to_owned())]
    );
    let forms = assert_requests_are_clean(&s).await;
    let pick = |f: &Vec<(String, String)>, keys: &[&str]| -> Vec<Option<String>> {
        keys.iter()
            .map(|k| field(f, k).map(str::to_owned))
            .collect()
    };
    let keys = ["func", "elid", "price", "period", "licname", "ip", "sok"];
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        pick(&forms[0], &keys),
        vec![
            s("software.edit"),
            None,
            s("7"),
            s("8"),
            s("web1"),
            s("111.222.111.222"),
            s("ok")
        ]
    );
    assert_eq!(
        pick(&forms[1], &keys),
        vec![
            s("software.licinfo"),
            None,
            s("7"),
            s("8"),
            None,
            s("111.222.111.222"),
            s("ok")
        ]
    );
    assert_eq!(
        pick(&forms[2], &keys),
        vec![
            s("software.edit"),
            s("334673"),
            None,
            None,
            s("NEWLICNAME"),
            None,
            s("ok")
        ]
    );
}

#[tokio::test]
async fn a_windowed_list_sets_the_filter_lists_and_clears_it() {
    let s = server().await;
    Mock::given(body_string_contains("func=software.filter"))
        .respond_with(xml("<doc><ok/></doc>"))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software&"))
        .respond_with(xml(
            r#"<doc lang="en"><tparams><func>software</func></tparams>
<elem><id>1101</id><licname>web1.example.net</licname><ip>203.0.113.10</ip><price>7</price><period>8</period><expiredate>2024-07-01</expiredate><status>2</status></elem>
<elem><id>total</id><licname>summary row without a date</licname></elem>
<elem><id>1103</id><price>7</price><expiredate>never</expiredate></elem>
</doc>"#,
        ))
        .mount(&s)
        .await;
    let from = chrono::NaiveDate::from_ymd_opt(2024, 6, 1).expect("date");
    let to = chrono::NaiveDate::from_ymd_opt(2024, 7, 31).expect("date");

    let listing = client(&s, AuthMode::Authinfo)
        .list(Some((from, to)))
        .await
        .expect("list");

    assert_eq!(listing.licenses.len(), 1);
    assert_eq!(listing.licenses[0].elid, 1101);
    assert_eq!(
        listing.bad_rows.len(),
        1,
        "the row with a bad date is reported, not fatal"
    );
    let forms = assert_requests_are_clean(&s).await;
    let funcs: Vec<_> = forms
        .iter()
        .map(|f| field(f, "func").unwrap_or("").to_owned())
        .collect();
    assert_eq!(funcs, ["software.filter", "software", "software.filter"]);
    assert_eq!(field(&forms[0], "expires"), Some("2024-06-01"));
    assert_eq!(field(&forms[0], "expiree"), Some("2024-07-31"));
    assert_eq!(field(&forms[0], "sok"), Some("ok"));
    assert_eq!(
        field(&forms[2], "expires"),
        Some(""),
        "the saved filter is cleared"
    );
}

#[tokio::test]
async fn an_empty_list_has_no_elem_and_is_not_an_error() {
    let s = server().await;
    Mock::given(body_string_contains("func=software.filter"))
        .respond_with(xml("<doc><ok/></doc>"))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software&"))
        .respond_with(xml("<doc><p_cnt>0</p_cnt></doc>"))
        .mount(&s)
        .await;

    let listing = client(&s, AuthMode::Authinfo)
        .list(None)
        .await
        .expect("list");

    assert!(listing.licenses.is_empty());
    assert!(listing.bad_rows.is_empty());
}

#[tokio::test]
async fn a_nested_doc_answer_is_read_at_either_depth() {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(xml("<doc><doc><expiredate>2024-07-01</expiredate><newexpiredate>2024-08-01</newexpiredate></doc></doc>"))
        .mount(&s)
        .await;

    let ans = client(&s, AuthMode::Authinfo)
        .renew(1, 8)
        .await
        .expect("renewed");

    assert_eq!(ans.new_expiry, chrono::NaiveDate::from_ymd_opt(2024, 8, 1));
}

/// Runs one renewal against a mock answer and returns the error.
async fn renew_error(resp: ResponseTemplate) -> licrenew::billmgr::Error {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(resp)
        .mount(&s)
        .await;
    let err = client(&s, AuthMode::Authinfo)
        .renew(77, 8)
        .await
        .expect_err("must fail");
    assert_eq!(err.func, "software.period");
    assert_eq!(err.elid, Some(77));
    assert_no_canary("an error's Display", &err.to_string());
    assert_no_canary("an error's Debug", &format!("{err:?}"));
    assert_eq!(
        s.received_requests().await.map(|r| r.len()),
        Some(1),
        "never resent"
    );
    err
}

#[tokio::test]
async fn malformed_xml_is_a_malformed_error_with_an_unknown_outcome() {
    let err = renew_error(xml("<doc><ok></doc>")).await;
    assert!(
        matches!(err.kind, ErrorKind::Xml(XmlError::Malformed { .. })),
        "{err:?}"
    );
    assert_eq!(err.certainty(), Certainty::Unknown);
}

#[tokio::test]
async fn a_truncated_body_is_a_truncated_error() {
    let err = renew_error(xml("<doc><elem><id>1</id><expiredate>2024-")).await;
    assert!(
        matches!(err.kind, ErrorKind::Xml(XmlError::Truncated(_))),
        "{err:?}"
    );
    assert_eq!(err.certainty(), Certainty::Unknown);
}

#[tokio::test]
async fn http_500_is_an_http_error_with_an_unknown_outcome() {
    let err = renew_error(ResponseTemplate::new(500).set_body_string("<html>oops</html>")).await;
    assert!(
        matches!(err.kind, ErrorKind::Http { status: 500 }),
        "{err:?}"
    );
    assert_eq!(err.certainty(), Certainty::Unknown);
    assert_eq!(
        err.to_string(),
        "software.period (elid 77): HTTP status 500"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let err = renew_error(
        ResponseTemplate::new(302).insert_header("location", "https://elsewhere.example/login"),
    )
    .await;
    assert!(
        matches!(err.kind, ErrorKind::Redirect { status: 302 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_the_paid_call_is_not_retried() {
    let err = renew_error(xml("<doc><ok/></doc>").set_delay(Duration::from_secs(4))).await;
    assert!(matches!(err.kind, ErrorKind::Timeout(..)), "{err:?}");
    assert_eq!(err.certainty(), Certainty::Unknown);
}

#[tokio::test]
async fn an_empty_or_html_200_body_is_an_error() {
    let err = renew_error(xml("")).await;
    assert!(
        matches!(err.kind, ErrorKind::Xml(XmlError::Empty)),
        "{err:?}"
    );
    let err = renew_error(xml("<html><body>Service Unavailable</body></html>")).await;
    assert!(
        matches!(err.kind, ErrorKind::Xml(XmlError::NotADoc(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_value_error_keeps_type_object_msg_and_value() {
    let err = renew_error(xml(
        r#"<doc><error type="value" object="period" lang="en"><param name="object" type="msg">period</param><param name="value">380</param><msg>The "Period" field has invalid value.</msg></error></doc>"#,
    ))
    .await;
    let api = err.api().expect("api error");
    assert_eq!(api.kind, "value");
    assert_eq!(api.object.as_deref(), Some("period"));
    assert_eq!(api.value.as_deref(), Some("380"));
    assert_eq!(
        api.msg.as_deref(),
        Some("The \"Period\" field has invalid value.")
    );
    assert_eq!(err.certainty(), Certainty::Refused);
}

#[tokio::test]
async fn an_auth_error_stops_every_further_request() {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(xml(
            r#"<doc><error type="auth" object="badpassword" lang="en" code="1"><param name="object" type="msg">badpassword</param><detail>Invalid username or password</detail><msg>Invalid username or password</msg></error></doc>"#,
        ))
        .mount(&s)
        .await;
    let c = client(&s, AuthMode::Authinfo);

    let first = c.view(5).await.expect_err("refused");
    let second = c.view(6).await.expect_err("fused");

    assert!(first.is_auth(), "{first:?}");
    assert_eq!(
        first.api().and_then(|a| a.object.as_deref()),
        Some("badpassword")
    );
    assert!(matches!(second.kind, ErrorKind::Invalid(_)), "{second:?}");
    assert_eq!(
        s.received_requests().await.map(|r| r.len()),
        Some(1),
        "no second login attempt"
    );
    assert_no_canary("auth error", &format!("{first} {first:?} {second}"));
}

#[tokio::test]
async fn reads_are_retried_with_backoff_but_only_reads() {
    let s = server().await;
    Mock::given(body_string_contains("func=software.edit"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software.edit"))
        .respond_with(xml(
            "<doc><id>9</id><licname>a</licname><ip>1.2.3.4</ip><price>7</price><period>8</period><expiredate>2030-01-01</expiredate><status>2</status></doc>",
        ))
        .mount(&s)
        .await;
    let mut cfg = billmgr(&format!("{}{ENDPOINT}", s.uri()), AuthMode::Authinfo);
    cfg.read_attempts = 3;
    let c = Client::new(&cfg).expect("client");

    let lic = c.view(9).await.expect("third attempt works");

    assert_eq!(
        lic.expiry,
        chrono::NaiveDate::from_ymd_opt(2030, 1, 1).expect("date")
    );
    assert_eq!(s.received_requests().await.map(|r| r.len()), Some(3));
}

#[tokio::test]
async fn session_mode_logs_in_once_and_again_after_the_session_expires() {
    let s = server().await;
    Mock::given(body_string_contains("func=auth&"))
        .respond_with(xml(r#"<doc><auth id="sid-1">sid-1</auth></doc>"#))
        .mount(&s)
        .await;
    // The first view with the session gets the expired-session answer, later ones work.
    Mock::given(body_string_contains("func=software.edit"))
        .respond_with(xml(r#"<doc><error type="access" lang="en"><msg>Insufficient privileges to perform this function</msg></error></doc>"#))
        .up_to_n_times(1)
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software.edit"))
        .respond_with(xml(
            "<doc><licname>a</licname><price>7</price><period>8</period><expiredate>2030-01-01</expiredate><status>2</status></doc>",
        ))
        .mount(&s)
        .await;
    let c = client(&s, AuthMode::Session);

    let lic = c.view(9).await.expect("after one re-login");

    assert_eq!(lic.elid, 9);
    let forms = assert_requests_are_clean(&s).await;
    let funcs: Vec<_> = forms
        .iter()
        .map(|f| field(f, "func").unwrap_or("").to_owned())
        .collect();
    assert_eq!(funcs, ["auth", "software.edit", "auth", "software.edit"]);
    assert_eq!(field(&forms[0], "password"), Some(CANARY));
    assert_eq!(field(&forms[1], "auth"), Some("sid-1"));
    assert_eq!(
        field(&forms[1], "authinfo"),
        None,
        "session mode never sends the password again"
    );
}

#[tokio::test]
async fn an_expired_session_on_a_paid_call_is_a_refusal_not_a_resend() {
    let s = server().await;
    Mock::given(body_string_contains("func=auth&"))
        .respond_with(xml(r#"<doc><auth id="sid-1">sid-1</auth></doc>"#))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("func=software.period"))
        .respond_with(xml(
            r#"<doc><error type="access"><msg>Insufficient privileges</msg></error></doc>"#,
        ))
        .mount(&s)
        .await;

    let err = client(&s, AuthMode::Session)
        .renew(3, 8)
        .await
        .expect_err("refused");

    assert!(err.is_access());
    assert_eq!(err.certainty(), Certainty::Refused);
    let n = s.received_requests().await.map(|r| r.len());
    assert_eq!(
        n,
        Some(2),
        "login + one paid call, never a second paid call"
    );
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_refused() {
    let s = server().await;
    let big = format!("<doc>{}</doc>", "<elem><id>1</id></elem>".repeat(100_000));
    Mock::given(method("POST"))
        .respond_with(xml(&big))
        .mount(&s)
        .await;

    let err = client(&s, AuthMode::Authinfo)
        .view(1)
        .await
        .expect_err("too big");

    assert!(matches!(err.kind, ErrorKind::TooLarge(_)), "{err:?}");
}

#[tokio::test]
async fn a_refused_connection_is_known_not_sent() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let c = Client::new(&billmgr(
        &format!("http://127.0.0.1:{port}{ENDPOINT}"),
        AuthMode::Authinfo,
    ))
    .expect("client");

    let err = c.renew(1, 8).await.expect_err("no server");

    assert!(matches!(err.kind, ErrorKind::Connect(_)), "{err:?}");
    assert_eq!(err.certainty(), Certainty::NotSent);
    assert_no_canary("connect error", &format!("{err} {err:?}"));
    // The server's host, never its URL.
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "the host is named: {err}"
    );
    assert!(
        !err.to_string().contains("http://") && !err.to_string().contains(ENDPOINT),
        "no URL in transport errors: {err}"
    );
}

fn client_v5(server: &MockServer) -> Client {
    let mut cfg = billmgr(&format!("{}{ENDPOINT}", server.uri()), AuthMode::Authinfo);
    cfg.api = Some(licrenew::config::Api::Billmgr5);
    Client::new(&cfg).expect("client")
}

#[tokio::test]
async fn billmgr5_renews_with_service_prolong_in_months_and_reads_the_nested_new_expiry() {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(xml("<doc><doc><expiredate>2024-07-01</expiredate><newexpiredate>2025-07-01</newexpiredate></doc></doc>"))
        .mount(&s)
        .await;

    let ans = client_v5(&s).renew(334673, 12).await.expect("renewed");

    assert_eq!(ans.new_expiry, chrono::NaiveDate::from_ymd_opt(2025, 7, 1));
    let forms = assert_requests_are_clean(&s).await;
    assert_eq!(forms.len(), 1);
    let f = &forms[0];
    assert_eq!(field(f, "func"), Some("service.prolong"));
    assert_eq!(field(f, "elid"), Some("334673"));
    assert_eq!(field(f, "period"), Some("12"));
    assert_eq!(field(f, "sok"), Some("ok"));
}

#[tokio::test]
async fn billmgr5_lists_page_by_page_and_filters_the_window_locally() {
    let s = server().await;
    let row = |id: u32, exp: &str| {
        format!(
            "<elem><id>{id}</id><pricelist>55227</pricelist><period>1</period><expiredate>{exp}</expiredate><item_status orig=\"2\">Active</item_status><autoprolong/></elem>"
        )
    };
    Mock::given(body_string_contains("p_num=1"))
        .respond_with(xml(&format!(
            "<doc><p_elems>3</p_elems>{}{}</doc>",
            row(1, "2024-06-10"),
            row(2, "2030-01-01")
        )))
        .mount(&s)
        .await;
    Mock::given(body_string_contains("p_num=2"))
        .respond_with(xml(&format!(
            "<doc><p_elems>3</p_elems>{}</doc>",
            row(3, "2024-06-20")
        )))
        .mount(&s)
        .await;
    let from = chrono::NaiveDate::from_ymd_opt(2024, 6, 1).expect("date");
    let to = chrono::NaiveDate::from_ymd_opt(2024, 7, 31).expect("date");

    let listing = client_v5(&s).list(Some((from, to))).await.expect("list");

    let ids: Vec<i64> = listing.licenses.iter().map(|l| l.elid).collect();
    assert_eq!(ids, [1, 3], "only the window, from both pages");
    assert!(
        listing
            .licenses
            .iter()
            .all(|l| l.status == licrenew::domain::Status::Active && !l.autoprolong)
    );
    let forms = assert_requests_are_clean(&s).await;
    let funcs: Vec<_> = forms
        .iter()
        .map(|f| field(f, "func").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        funcs,
        ["soft.filter", "soft", "soft"],
        "the saved filter's form is read first (here the server has none); no software.filter on 5/6"
    );
}

#[tokio::test]
async fn billmgr5_keeps_paging_when_the_server_uses_smaller_pages_than_asked() {
    let s = server().await;
    let row = |id: u32| {
        format!(
            "<elem><id>{id}</id><pricelist>55227</pricelist><period>1</period><expiredate>2024-06-10</expiredate><status>2</status></elem>"
        )
    };
    for (page, ids) in [(1, [1, 2]), (2, [3, 4])] {
        Mock::given(body_string_contains(format!("p_num={page}&")))
            .respond_with(xml(&format!(
                "<doc><p_cnt>2</p_cnt><p_elems>5</p_elems>{}{}</doc>",
                row(ids[0]),
                row(ids[1])
            )))
            .mount(&s)
            .await;
    }
    Mock::given(body_string_contains("p_num=3&"))
        .respond_with(xml(&format!(
            "<doc><p_cnt>2</p_cnt><p_elems>5</p_elems>{}</doc>",
            row(5)
        )))
        .mount(&s)
        .await;

    let listing = client_v5(&s).list(None).await.expect("list");

    assert_eq!(
        listing.licenses.iter().map(|l| l.elid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn billmgr5_refuses_a_list_that_ignores_paging_instead_of_dropping_licenses() {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(xml(
            "<doc><p_elems>5</p_elems><elem><id>1</id><pricelist>55227</pricelist><expiredate>2024-06-10</expiredate><status>2</status></elem><elem><id>2</id><pricelist>55227</pricelist><expiredate>2024-06-10</expiredate><status>2</status></elem></doc>",
        ))
        .mount(&s)
        .await;

    let err = client_v5(&s).list(None).await.expect_err("pages repeat");

    assert!(matches!(err.kind, ErrorKind::Unexpected(_)), "{err:?}");
    assert!(err.to_string().contains("p_num"), "{err}");
}

#[tokio::test]
async fn a_renewal_answer_without_ok_is_marked_unconfirmed() {
    let s = server().await;
    Mock::given(method("POST"))
        .respond_with(xml(
            "<doc><doc><newexpiredate>2025-07-01</newexpiredate></doc></doc>",
        ))
        .mount(&s)
        .await;

    let ans = client_v5(&s).renew(1, 1).await.expect("a date came back");

    assert!(
        !ans.confirmed,
        "only <ok/> confirms; the executor re-reads the license otherwise"
    );
}

/// A sink that keeps the elids it is handed and counts the rows between two `pace` calls;
/// each `pace` waits a little, as a database writer that falls behind would.
#[derive(Default)]
struct SlowSink {
    elids: Vec<i64>,
    since_pace: usize,
    most_between_paces: usize,
    paces: usize,
}

impl licrenew::billmgr::LicenseSink for SlowSink {
    fn license(&mut self, license: licrenew::domain::License) {
        self.elids.push(license.elid);
        self.since_pace += 1;
    }

    fn pace(&mut self) -> Option<futures_util::future::LocalBoxFuture<'_, ()>> {
        self.most_between_paces = self.most_between_paces.max(self.since_pace);
        self.since_pace = 0;
        self.paces += 1;
        Some(Box::pin(tokio::time::sleep(Duration::from_millis(2))))
    }
}

#[tokio::test]
async fn a_list_streamed_to_a_slow_sink_gives_the_same_licenses_at_the_sinks_pace() {
    use licrenew::sim::{SimApi, SimConfig};
    for (api, setting) in [
        (SimApi::Billmgr4, licrenew::config::Api::Billmgr4),
        (SimApi::Billmgr5, licrenew::config::Api::Billmgr5),
    ] {
        let sim = licrenew::sim::start(
            "127.0.0.1:0".parse().expect("addr"),
            SimConfig {
                api,
                licenses: 6000,
                username: "reseller".into(),
                password: CANARY.into(),
                ..SimConfig::default()
            },
        )
        .await
        .expect("simulator");
        let mut settings = billmgr(&sim.url(), AuthMode::Authinfo);
        settings.api = Some(setting);
        settings.max_body = 64 * 1024 * 1024;
        let client = Client::new(&settings).expect("client");
        let today = sim.today();
        let window = Some((
            today - chrono::Days::new(30),
            today + chrono::Days::new(200),
        ));

        let whole = client.list(window).await.expect("list");
        let mut sink = SlowSink::default();
        let streamed = client.list_into(window, &mut sink).await.expect("list");

        let want: Vec<i64> = whole.licenses.iter().map(|l| l.elid).collect();
        assert!(want.len() > 1000, "{api:?}: {} listed", want.len());
        assert_eq!(sink.elids, want, "{api:?}: the same licenses, in order");
        assert!(streamed.licenses.is_empty(), "kept by the sink only");
        assert_eq!(streamed.bad_rows.len(), whole.bad_rows.len());
        assert_eq!(streamed.pending.len(), whole.pending.len());
        // The sink is asked to keep pace after every batch of parsed rows: no more than one
        // batch (512 rows) reaches it unpaced, so a slow sink holds the download back.
        assert!(
            sink.paces * 512 >= want.len(),
            "{api:?}: {} paces",
            sink.paces
        );
        assert!(
            sink.most_between_paces <= 512,
            "{api:?}: {} rows between two paces",
            sink.most_between_paces
        );
    }
}
