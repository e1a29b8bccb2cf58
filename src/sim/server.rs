//! The simulator's HTTP side: accept loop, one hyper HTTP/1 connection per socket, fault
//! injection at the socket and body level, and the JSON control API under `/_sim/`.
//!
//! Owns: reading requests (form body merged over the query string), recording them, picking
//! a fault and shaping the answer bytes. Must not: hold the state lock across an `.await`,
//! decide any business rule (that is `state`), or parse XML.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDate;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::state::Params;
use super::xml::{ApiError, Doc};
use super::{Fault, FaultKind, RecordedRequest, Shared, SimApi, SimLicense};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Request bodies above this size get a 413 (BILLmanager forms are tiny).
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Bytes per chunk of a `SlowDrip` answer.
const DRIP_BYTES: usize = 16;
const XML: &str = "text/xml; charset=UTF-8";
const HTML: &str = "text/html; charset=UTF-8";

/// Returned by the service to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose by the simulator ({0})")]
pub(crate) struct Dropped(&'static str);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            // A send or a dropped last handle both end the loop.
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    tokio::spawn(serve_connection(socket, Arc::clone(&shared), stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(event = "sim", error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(socket: TcpStream, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let _ = socket.set_nodelay(true);
    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
    let conn = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(event = "sim", error = %e, "simulator connection ended with an error");
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                HTML,
                "<html><body>413</body></html>",
            ));
        }
    };
    let path = parts.uri.path().to_owned();
    if let Some(cmd) = path.strip_prefix("/_sim/") {
        return Ok(control(&shared, &parts.method, cmd, &body));
    }
    let query = parts.uri.query().unwrap_or("").to_owned();
    // The work runs in its own task: if the client hangs up, hyper drops this future, but a
    // request that was received still lands, as it would on a real server.
    let task = tokio::spawn(billmgr(shared, parts.method.to_string(), path, query, body));
    task.await.unwrap_or(Err(Dropped("handler task failed")))
}

async fn billmgr(
    shared: Arc<Shared>,
    method: String,
    path: String,
    query: String,
    body: Bytes,
) -> Result<Response<Body>, Dropped> {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let params = Params::merge(
        url::form_urlencoded::parse(query.as_bytes()).into_owned(),
        form.iter().cloned(),
    );
    let func = params.get("func").unwrap_or("").to_owned();
    let elid = params
        .get("elid")
        .and_then(|e| e.trim().parse::<i64>().ok());
    let fault = {
        let mut st = shared.lock();
        st.record(RecordedRequest {
            method,
            path,
            query,
            func: func.clone(),
            form,
        });
        st.take_fault(&func, elid)
    };
    let Some(fault) = fault else {
        return Ok(xml(process(&shared, &params)));
    };
    tracing::debug!(event = "sim", ?fault, %func, "simulator injects a fault");
    match fault {
        FaultKind::Delay { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(xml(process(&shared, &params)))
        }
        FaultKind::DelayAfter { ms } => {
            let doc = process(&shared, &params);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(xml(doc))
        }
        FaultKind::Http { status } => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| !s.is_informational())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let page = format!(
                "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n\
                 <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            Ok(plain(status, HTML, page))
        }
        FaultKind::DropBefore => Err(Dropped("drop_before")),
        FaultKind::DropAfter => {
            process(&shared, &params);
            Err(Dropped("drop_after"))
        }
        FaultKind::Malformed => {
            process(&shared, &params);
            Ok(plain(
                StatusCode::OK,
                XML,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc><elem><id>1</elem><ok/></id>\u{1}&&& <<junk>> \
                 Fatal error: Allowed memory size exhausted</do",
            ))
        }
        FaultKind::Truncated => {
            let doc = Bytes::from(process(&shared, &params));
            Ok(plain(StatusCode::OK, XML, doc.slice(..doc.len() / 2)))
        }
        FaultKind::Html200 => Ok(plain(
            StatusCode::OK,
            HTML,
            "<!DOCTYPE html>\n<html><head><title>Error</title></head><body><h1>Service temporarily unavailable</h1>\
             <p>The billing system is under maintenance. Please try again later.</p></body></html>\n",
        )),
        FaultKind::EmptyBody => Ok(plain(StatusCode::OK, XML, Bytes::new())),
        FaultKind::ErrorDoc {
            r#type,
            object,
            msg,
        } => {
            let api = shared.lock().api();
            Ok(xml(ApiError::new(&r#type, object.as_deref(), None, msg)
                .to_doc_for(api, &func, None, &[])))
        }
        FaultKind::SessionExpired => {
            shared.lock().expire_sessions();
            Ok(xml(process(&shared, &params)))
        }
        FaultKind::SlowDrip { chunk_ms } => Ok(drip(process(&shared, &params), chunk_ms)),
        FaultKind::Huge { bytes } => Ok(huge(&func, bytes)),
        FaultKind::Echo { body } => {
            let authinfo = params.get("authinfo").unwrap_or("");
            let password = authinfo.split_once(':').map_or("", |(_, p)| p);
            let auth = params.get("auth").unwrap_or("");
            Ok(plain(
                StatusCode::OK,
                XML,
                body.replace("{authinfo}", authinfo)
                    .replace("{password}", password)
                    .replace("{auth}", auth),
            ))
        }
        // `take_fault` unwraps one `After`; a nested one only delays, then passes through.
        FaultKind::After { .. } => Ok(xml(process(&shared, &params))),
        FaultKind::Contradictory { r#type, msg } => {
            let api = shared.lock().api();
            let doc = process(&shared, &params);
            let err = ApiError::new(&r#type, None, None, msg).to_doc_for(api, &func, None, &[]);
            // The error element of a document of its own, put beside the real answer's
            // content (before its closing tag).
            let element = err
                .find("<error")
                .and_then(|a| err.rfind("</error>").map(|b| &err[a..b + "</error>".len()]))
                .unwrap_or("<error type=\"value\"/>");
            let at = doc.rfind("</doc>").unwrap_or(doc.len());
            let mut out = doc[..at].to_owned();
            if !out.contains("<ok") && !out.contains("newexpiredate") {
                out.push_str("<ok/>");
            }
            out.push_str(element);
            out.push_str(&doc[at..]);
            Ok(xml(out))
        }
        FaultKind::OkNotApplied => {
            let mut d = Doc::open(&func, None, 64);
            d.ok();
            Ok(xml(d.finish()))
        }
        FaultKind::NewExpiryNotApplied => {
            let expiry = elid
                .and_then(|id| shared.lock().licenses.get(&id).map(|l| l.expiredate))
                .unwrap_or_else(|| shared.today());
            let next = expiry
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(expiry);
            Ok(xml(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc><doc><expiredate>{expiry}</expiredate><newexpiredate>{next}</newexpiredate></doc></doc>\n"
            )))
        }
    }
}

/// Runs the request against the state; the lock is held only for this synchronous step.
fn process(shared: &Shared, params: &Params) -> String {
    let today = shared.today();
    shared.lock().process(params, today, Instant::now())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn plain(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn xml(doc: String) -> Response<Body> {
    plain(StatusCode::OK, XML, doc)
}

/// The real document, `DRIP_BYTES` at a time, one chunk every `chunk_ms`.
fn drip(doc: String, chunk_ms: u64) -> Response<Body> {
    let bytes = Bytes::from(doc);
    let len = bytes.len();
    let chunks = stream::unfold((bytes, true), move |(rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(Duration::from_millis(chunk_ms)).await;
        }
        let mut rest = rest;
        let chunk = rest.split_to(DRIP_BYTES.min(rest.len()));
        Some((Ok::<_, io::Error>(Frame::data(chunk)), (rest, false)))
    });
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(XML));
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len as u64));
    r
}

/// A well-formed `<doc>` whose noise rows add up to at least `bytes`, generated lazily so a
/// client that stops reading at its cap costs the simulator nothing.
fn huge(func: &str, bytes: usize) -> Response<Body> {
    let head = Doc::open(func, None, 0).finish();
    let head = head
        .trim_end()
        .strip_suffix("</doc>")
        .unwrap_or(&head)
        .to_owned();
    const ROWS_PER_CHUNK: usize = 512;
    let row = |n: usize| {
        format!("<elem><noise>{:0>64}</noise><n>{n}</n></elem>", "")
            .replace("00000000", "abcdefgh")
            .into_bytes()
    };
    let mut sent = 0usize;
    let mut n = 0usize;
    let mut state = 0u8; // 0 head, 1 rows, 2 tail, 3 done
    let chunks = stream::iter(std::iter::from_fn(move || {
        let out = match state {
            0 => {
                state = 1;
                head.clone().into_bytes()
            }
            1 => {
                let mut buf = Vec::with_capacity(ROWS_PER_CHUNK * 96);
                while sent < bytes && buf.len() < ROWS_PER_CHUNK * 90 {
                    let r = row(n);
                    sent += r.len();
                    n += 1;
                    buf.extend_from_slice(&r);
                }
                if sent >= bytes {
                    state = 2;
                }
                buf
            }
            2 => {
                state = 3;
                b"</doc>\n".to_vec()
            }
            _ => return None,
        };
        Some(Ok::<_, io::Error>(Frame::data(Bytes::from(out))))
    }));
    let mut r = Response::new(StreamBody::new(chunks).boxed_unsync());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(XML));
    r
}

// ---- control API ---------------------------------------------------------------------

#[derive(Serialize)]
struct StateView {
    api: SimApi,
    today: NaiveDate,
    licenses: Vec<SimLicense>,
    paid_calls_total: u32,
    /// Orders/renewals put into the cart unpaid (BILLmanager 5/6); a client must keep it 0.
    cart_calls: u32,
    renewals_by_expiry: Vec<(i64, NaiveDate, u32)>,
    login_failures: u32,
}

#[derive(Deserialize)]
struct TodayBody {
    date: NaiveDate,
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    plain(status, "application/json", body)
}

fn control_ok() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "ok": true }))
}

fn control_err(status: StatusCode, msg: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

fn control(shared: &Shared, method: &Method, cmd: &str, body: &[u8]) -> Response<Body> {
    match (method, cmd) {
        (&Method::GET, "state") => {
            let today = shared.today();
            let st = shared.lock();
            let view = StateView {
                api: st.api(),
                today,
                licenses: st.licenses.values().cloned().collect(),
                paid_calls_total: st.paid_total,
                cart_calls: st.cart_calls,
                renewals_by_expiry: st
                    .renewals_by_expiry
                    .iter()
                    .map(|(&(id, d), &n)| (id, d, n))
                    .collect(),
                login_failures: st.login_failures,
            };
            drop(st);
            json(StatusCode::OK, &view)
        }
        (&Method::POST, "fault") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                shared.lock().faults.push(f);
                control_ok()
            }
            Err(e) => control_err(StatusCode::BAD_REQUEST, e),
        },
        (&Method::POST, "clear") => {
            shared.lock().faults.clear();
            control_ok()
        }
        (&Method::POST, "today") => match serde_json::from_slice::<TodayBody>(body) {
            Ok(t) => {
                let real = chrono::Utc::now().date_naive();
                shared.lock().day_offset = (t.date - real).num_days();
                control_ok()
            }
            Err(e) => control_err(StatusCode::BAD_REQUEST, e),
        },
        (&Method::POST, "expire_sessions") => {
            shared.lock().expire_sessions();
            control_ok()
        }
        (&Method::POST, "license") => match serde_json::from_slice::<SimLicense>(body) {
            Ok(l) => {
                shared.lock().licenses.insert(l.id, l);
                control_ok()
            }
            Err(e) => control_err(StatusCode::BAD_REQUEST, e),
        },
        (_, "state" | "fault" | "clear" | "today" | "expire_sessions" | "license") => {
            control_err(StatusCode::METHOD_NOT_ALLOWED, "wrong method")
        }
        _ => control_err(StatusCode::NOT_FOUND, "unknown control command"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{SimConfig, SimHandle, SimLicense, start};
    use super::*;

    const AUTH: (&str, &str) = ("authinfo", "demo:demo-password");

    async fn sim(licenses: usize) -> SimHandle {
        let cfg = SimConfig {
            licenses,
            ..SimConfig::default()
        };
        start("127.0.0.1:0".parse().expect("a socket address"), cfg)
            .await
            .expect("the simulator starts")
    }

    async fn post(h: &SimHandle, form: &[(&str, &str)]) -> reqwest::Result<String> {
        reqwest::Client::new()
            .post(h.url())
            .form(form)
            .send()
            .await?
            .text()
            .await
    }

    fn active(h: &SimHandle, id: i64, price: i64, period: i64, days_left: u64) -> SimLicense {
        let l = SimLicense {
            id,
            licname: format!("t{id}"),
            ip: "192.0.2.10".to_owned(),
            price,
            period,
            expiredate: h.today() + chrono::Days::new(days_left),
            status: 2,
            last_ip_change: None,
            autoprolong: None,
        };
        h.upsert_license(l.clone());
        l
    }

    #[tokio::test]
    async fn get_query_parameters_work_and_the_form_body_wins() {
        let h = sim(3).await;
        let url = format!(
            "{}?authinfo=demo:demo-password&func=nothing&out=xml",
            h.url()
        );
        let r = reqwest::Client::new()
            .post(url)
            .form(&[("func", "software")])
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.headers()[CONTENT_TYPE], XML);
        let body = r.text().await.expect("a body");
        assert_eq!(body.matches("<elem>").count(), 3, "{body}");
        let get = reqwest::get(format!(
            "{}?authinfo=demo:demo-password&func=software",
            h.url()
        ))
        .await
        .expect("an answer");
        assert!(get.text().await.expect("a body").contains("<elem>"));
        let seen = h.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].func.as_str()),
            ("POST", "software")
        );
        assert!(
            seen[0].query.contains("authinfo"),
            "the raw query is recorded as sent"
        );
        assert_eq!(
            seen[0].form,
            vec![("func".to_owned(), "software".to_owned())]
        );
        assert_eq!(seen[1].method, "GET");
    }

    #[tokio::test]
    async fn an_http_fault_answers_that_status_and_changes_nothing() {
        let h = sim(0).await;
        active(&h, 1001, 7, 8, 5);
        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Http { status: 503 },
            times: Some(1),
        });
        let renew = [
            AUTH,
            ("func", "software.period"),
            ("elid", "1001"),
            ("period", "8"),
            ("sok", "ok"),
        ];
        let r = reqwest::Client::new()
            .post(h.url())
            .form(&renew)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 503);
        assert_eq!(h.paid_calls_total(), 0);
        assert!(
            post(&h, &renew).await.expect("an answer").contains("<ok/>"),
            "the fault fired once only"
        );
        assert_eq!(h.paid_calls(1001), 1);
    }

    #[tokio::test]
    async fn a_delayed_request_still_lands_after_the_client_gave_up() {
        let h = sim(0).await;
        let before = active(&h, 1001, 7, 8, 5);
        h.add_fault(Fault {
            func: Some("software.period".into()),
            elid: None,
            kind: FaultKind::Delay { ms: 300 },
            times: None,
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(50))
            .build()
            .expect("a client");
        let renew = [
            AUTH,
            ("func", "software.period"),
            ("elid", "1001"),
            ("period", "8"),
            ("sok", "ok"),
        ];
        assert!(client.post(h.url()).form(&renew).send().await.is_err());
        assert_eq!(h.paid_calls(1001), 0, "nothing yet during the delay");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(h.paid_calls(1001), 1);
        let after = h.license(1001).expect("still there");
        assert!(after.expiredate > before.expiredate);
    }

    #[tokio::test]
    async fn truncated_malformed_empty_and_html_answers_look_as_promised() {
        let h = sim(2).await;
        let list = [AUTH, ("func", "software")];
        let full_doc = post(&h, &list).await.expect("an answer");

        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Truncated,
            times: Some(1),
        });
        let r = reqwest::Client::new()
            .post(h.url())
            .form(&list)
            .send()
            .await
            .expect("an answer");
        let declared = r.content_length();
        let cut = r.bytes().await.expect("a body");
        assert_eq!(declared, Some(cut.len() as u64));
        assert!(cut.len() < full_doc.len() && !String::from_utf8_lossy(&cut).contains("</doc>"));

        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Malformed,
            times: Some(1),
        });
        let junk = post(&h, &list).await.expect("an answer");
        assert!(
            junk.contains("<id>1</elem>") && !junk.contains("</doc>"),
            "{junk}"
        );

        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::EmptyBody,
            times: Some(1),
        });
        assert_eq!(post(&h, &list).await.expect("an answer"), "");

        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Html200,
            times: Some(1),
        });
        let r = reqwest::Client::new()
            .post(h.url())
            .form(&list)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200);
        assert!(r.text().await.expect("a body").contains("<html>"));

        let kind = FaultKind::ErrorDoc {
            r#type: "xml".into(),
            object: Some("x<y".into()),
            msg: "boom".into(),
        };
        h.add_fault(Fault {
            func: None,
            elid: None,
            kind,
            times: Some(1),
        });
        let e = post(&h, &list).await.expect("an answer");
        assert!(
            e.contains("<error type=\"xml\" object=\"x&lt;y\" lang=\"en\">")
                && e.contains("<msg>boom</msg>"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_slow_drip_delivers_the_whole_document_eventually() {
        let h = sim(1).await;
        let list = [AUTH, ("func", "software")];
        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::SlowDrip { chunk_ms: 1 },
            times: Some(1),
        });
        let doc = post(&h, &list).await.expect("an answer");
        assert!(
            doc.contains("<elem>") && doc.trim_end().ends_with("</doc>"),
            "{doc}"
        );
    }

    #[tokio::test]
    async fn a_huge_answer_is_well_formed_and_at_least_that_big() {
        let h = sim(0).await;
        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Huge { bytes: 3_000_000 },
            times: Some(1),
        });
        let doc = post(&h, &[AUTH, ("func", "software")])
            .await
            .expect("an answer");
        assert!(doc.len() >= 3_000_000);
        assert!(doc.starts_with("<?xml") && doc.trim_end().ends_with("</doc>"));
        assert_eq!(
            doc.matches("<elem>").count(),
            doc.matches("</elem>").count()
        );
    }

    #[tokio::test]
    async fn a_session_expired_fault_makes_the_request_itself_fail_with_access() {
        let h = sim(1).await;
        let login = post(
            &h,
            &[
                ("func", "auth"),
                ("username", "demo"),
                ("password", "demo-password"),
            ],
        )
        .await
        .expect("an answer");
        let sid = login
            .split("<auth id=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a session id")
            .to_owned();
        assert!(
            post(&h, &[("auth", &sid), ("func", "software")])
                .await
                .expect("an answer")
                .contains("<elem>")
        );
        h.add_fault(Fault {
            func: None,
            elid: None,
            kind: FaultKind::SessionExpired,
            times: Some(1),
        });
        let doc = post(&h, &[("auth", &sid), ("func", "software")])
            .await
            .expect("an answer");
        assert!(doc.contains("<error type=\"access\""), "{doc}");
    }

    #[tokio::test]
    async fn the_control_api_reports_state_and_takes_faults_and_dates() {
        let h = sim(2).await;
        let c = reqwest::Client::new();
        let base = format!("http://{}/_sim", h.addr());
        let fault = r#"{"func":"software","kind":{"kind":"empty_body"},"times":1}"#;
        let r = c
            .post(format!("{base}/fault"))
            .body(fault)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200);
        assert_eq!(
            post(&h, &[AUTH, ("func", "software")])
                .await
                .expect("an answer"),
            ""
        );
        let r = c
            .post(format!("{base}/fault"))
            .body("{not json")
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 400);

        let r = c
            .post(format!("{base}/today"))
            .body(r#"{"date":"2030-01-02"}"#)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200);
        assert_eq!(h.today().to_string(), "2030-01-02");

        let state: serde_json::Value = serde_json::from_str(
            &c.get(format!("{base}/state"))
                .send()
                .await
                .expect("an answer")
                .text()
                .await
                .expect("a body"),
        )
        .expect("JSON");
        assert_eq!(state["today"], "2030-01-02");
        assert_eq!(state["licenses"].as_array().map(Vec::len), Some(2));
        assert_eq!(state["paid_calls_total"], 0);
        assert_eq!(state["api"], "billmgr4");
        assert_eq!(state["cart_calls"], 0);

        for cmd in ["clear", "expire_sessions"] {
            assert_eq!(
                c.post(format!("{base}/{cmd}"))
                    .send()
                    .await
                    .expect("an answer")
                    .status(),
                200
            );
        }
        assert_eq!(
            c.get(format!("{base}/nope"))
                .send()
                .await
                .expect("an answer")
                .status(),
            404
        );
        assert!(h.requests().iter().all(|r| !r.path.starts_with("/_sim/")));
    }

    #[tokio::test]
    async fn a_hundred_thousand_licenses_list_in_one_answer() {
        let h = sim(100_000).await;
        let started = std::time::Instant::now();
        let doc = post(&h, &[AUTH, ("func", "software")])
            .await
            .expect("an answer");
        let took = started.elapsed();
        assert_eq!(doc.matches("<elem>").count(), 100_000);
        assert!(took < Duration::from_secs(20), "listing took {took:?}");
    }

    #[tokio::test]
    async fn garbage_and_non_utf8_bodies_get_an_error_document() {
        let h = sim(1).await;
        let c = reqwest::Client::new();
        let bodies: [&[u8]; 4] = [
            b"func=software.period&authinfo=demo:demo-password&elid=%FF%FE&period=\xff&sok=ok",
            b"\xff\xfe\x00=%%%&&&==",
            b"func=software.filter&authinfo=demo:demo-password&expires=2024-02-30&sok=ok",
            b"func=software.edit&authinfo=demo%3Ademo-password&price=7&period=8&ip=1.2.3.4.5&licname=x&sok=ok",
        ];
        for body in bodies {
            let r = c
                .post(h.url())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.to_vec())
                .send()
                .await
                .expect("an answer");
            assert_eq!(r.status(), 200);
            let doc = r.text().await.expect("a body");
            assert!(doc.contains("<error type="), "{doc}");
        }
        assert_eq!(h.paid_calls_total(), 0);
    }

    #[tokio::test]
    async fn after_shutdown_no_new_connection_is_served() {
        let h = sim(0).await;
        let url = h.url();
        h.clone().shutdown().await;
        let r = reqwest::Client::new()
            .post(url)
            .form(&[AUTH, ("func", "software")])
            .send()
            .await;
        assert!(r.is_err(), "{r:?}");
    }

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

    #[tokio::test]
    async fn a_billmgr5_simulator_serves_at_slash_billmgr_and_reports_its_api() {
        let h = sim5(3).await;
        assert!(h.url().ends_with("/billmgr") && !h.url().contains("/manager/"));
        assert_eq!(h.api(), SimApi::Billmgr5);
        let list = post(&h, &[AUTH, ("func", "soft")])
            .await
            .expect("an answer");
        assert_eq!(list.matches("<elem>").count(), 3, "{list}");
        let old = post(&h, &[AUTH, ("func", "software")])
            .await
            .expect("an answer");
        assert!(
            old.contains("<error type=\"missed\" object=\"func\""),
            "{old}"
        );
        let state: serde_json::Value = serde_json::from_str(
            &reqwest::get(format!("http://{}/_sim/state", h.addr()))
                .await
                .expect("an answer")
                .text()
                .await
                .expect("a body"),
        )
        .expect("JSON");
        assert_eq!(state["api"], "billmgr5");
        assert!(
            state["licenses"][0]["price"]
                .as_i64()
                .is_some_and(|p| p > 55_000)
        );
    }

    #[tokio::test]
    async fn faults_match_the_new_functions_by_func_and_elid() {
        let h = sim5(0).await;
        h.upsert_license(SimLicense {
            id: 1001,
            licname: "t".into(),
            ip: "192.0.2.10".into(),
            price: 55227,
            period: 1,
            expiredate: h.today() + chrono::Days::new(3),
            status: 2,
            last_ip_change: None,
            autoprolong: None,
        });
        h.add_fault(Fault {
            func: Some("service.prolong".into()),
            elid: Some(1001),
            kind: FaultKind::DropAfter,
            times: Some(1),
        });
        let renew = [
            AUTH,
            ("func", "service.prolong"),
            ("elid", "1001"),
            ("period", "1"),
            ("sok", "ok"),
        ];
        assert!(post(&h, &renew).await.is_err());
        assert_eq!(h.paid_calls(1001), 1, "applied although dropped");
        h.add_fault(Fault {
            func: Some("soft".into()),
            elid: None,
            kind: FaultKind::ErrorDoc {
                r#type: "xml".into(),
                object: None,
                msg: "boom".into(),
            },
            times: Some(1),
        });
        let e = post(&h, &[AUTH, ("func", "soft")])
            .await
            .expect("an answer");
        assert!(
            e.contains("binary=\"/billmgr\"") && e.contains("<error type=\"xml\""),
            "{e}"
        );
    }
}
