//! The HTTP side, on `[metrics] listen`: `GET /` (the read-only status page, rendered on the
//! server, refreshing itself every minute), `GET /metrics` (OpenMetrics), `GET /healthz`
//! (200 `ok` or 503 with the reason).
//!
//! Owns the listener and its bounds: at most [`MAX_CONNECTIONS`] connections at once (beyond
//! that, the kernel's backlog waits, and no descriptor of ours is used), a request's headers
//! must arrive within [`HEADER_TIMEOUT`], and no connection lives longer than
//! [`CONNECTION_LIFETIME`]: 1,100 idle clients cannot take the descriptors a renewal cycle needs.
//! On stop, connections are dropped at once. Must not mutate anything or show a secret.

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a request's headers to arrive (a client that sends nothing is dropped).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    interval: Duration,
    page: Option<PageSource>,
}

/// What the status page is built from: the database and the settings and policies in effect
/// (replaced on reload).
#[derive(Clone)]
pub struct PageSource {
    pub store: crate::store::Store,
    pub current: watch::Receiver<Arc<(crate::config::Settings, crate::policy::Policies)>>,
}

/// Serves `GET /metrics` and `GET /healthz` on `listen` until `stop` turns true (or its sender
/// is dropped). Returns the bound address (`listen` may use port 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    interval: Duration,
    page: Option<PageSource>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/", get(page_handler))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(AppState {
            metrics,
            interval,
            page,
        });
    let task = tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        loop {
            // A free slot first, then a connection: beyond the cap, clients wait in the
            // kernel's backlog and cost no descriptor of ours.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => break },
                _ = stop.wait_for(|s| *s) => break,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => break,
            };
            while connections.try_join_next().is_some() {}
            let (socket, _) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(event = "http", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
        connections.shutdown().await;
    });
    tracing::info!(event = "http", listen = %addr, "serving the status page, /metrics and /healthz");
    Ok((addr, task))
}

async fn page_handler(State(state): State<AppState>) -> Response {
    let html = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    let Some(page) = state.page else {
        return (
            StatusCode::NOT_FOUND,
            html,
            "no status page here\n".to_owned(),
        )
            .into_response();
    };
    let current = page.current.borrow().clone();
    match crate::overview::build(&page.store, &current.0, &current.1, Utc::now()).await {
        Ok(o) => (StatusCode::OK, html, crate::page::render(&o)).into_response(),
        Err(e) => {
            tracing::warn!(event = "http", error = %e, "status page: database not readable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                html,
                "the database cannot be read now\n".to_owned(),
            )
                .into_response()
        }
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn health_handler(State(state): State<AppState>) -> Response {
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match state.metrics.health(Utc::now(), state.interval) {
        Ok(()) => (StatusCode::OK, text_plain, "ok\n".to_owned()).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            text_plain,
            format!("{reason}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0)
            .single()
            .expect("valid test time")
    }

    #[tokio::test]
    async fn server_exposes_metrics_and_health_until_stopped() {
        let m = Arc::new(Metrics::created_at(at(0, 0)));
        m.observe_renewal("ok", "ISPmanager Lite");
        m.cycle_finished(Utc::now(), "ok", Duration::from_secs(1));
        let (stop_tx, stop) = watch::channel(false);
        let (addr, task) = serve(
            "127.0.0.1:0".parse().expect("literal address"),
            m.clone(),
            Duration::from_secs(3600),
            None,
            stop,
        )
        .await
        .expect("bind on loopback");
        let http = reqwest::Client::new();

        let scrape = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("scrape /metrics");
        assert_eq!(scrape.status(), 200);
        assert_eq!(
            scrape
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(OPENMETRICS_CONTENT_TYPE)
        );
        let body = scrape.text().await.expect("metrics body");
        assert!(
            body.contains(
                "licrenew_renewals_total{outcome=\"ok\",product=\"ISPmanager Lite\"} 1\n"
            ),
            "{body}"
        );

        let healthy = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("get /healthz");
        assert_eq!(healthy.status(), 200);
        assert_eq!(healthy.text().await.expect("health body"), "ok\n");

        m.observe_login(false);
        let sick = http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("get /healthz");
        assert_eq!(sick.status(), 503);
        assert_eq!(
            sick.text().await.expect("health body"),
            "last login refused\n"
        );

        stop_tx.send(true).expect("server still listening");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops when asked")
            .expect("server task did not panic");
    }
}
