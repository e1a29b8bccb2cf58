//! Alerts: what to raise after a cycle, and the outbox that delivers it.
//!
//! Owns the alert kinds (a renewal error, an unknown outcome, a cycle ended by an API or auth
//! failure, a license covered by a renew policy that expires within `alert_before` and is still
//! not renewed), their de-duplication keys (raised every cycle, sent once), and the delivery
//! task: webhook (JSON POST) and/or command (JSON on stdin), retried with exponential backoff
//! from the outbox table. Must not block or delay a renewal: raising only writes a row, and
//! delivery runs in its own task.

use crate::config::AlertSettings;
use crate::daemon::CycleReport;
use crate::domain::{License, Status};
use crate::policy::Policies;
use crate::renew::{Event, Outcome};
use crate::store::{AlertRow, Store, StoreError};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The JSON document delivered for one alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `renewal_error`, `renewal_unknown`, `cycle_failed`, `expiring_unrenewed`,
    /// `unreadable_rows`, `license_lapsed`, `license_gone`.
    pub event: String,
    pub elid: Option<i64>,
    pub licname: Option<String>,
    pub product: Option<String>,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub expiry: Option<NaiveDate>,
    pub cycle: Option<i64>,
    pub message: String,
    /// What makes this alert unique: the same key is never sent twice.
    #[serde(skip)]
    pub key: String,
}

fn from_event(kind: &str, ev: &Event, cycle: i64, message: String) -> Alert {
    let error = match (&ev.error_type, &ev.error_msg) {
        (Some(t), Some(m)) => Some(format!("{t}: {m}")),
        (Some(t), None) => Some(t.clone()),
        (None, m) => m.clone().or_else(|| ev.reason.clone()),
    };
    Alert {
        key: format!("{kind}:{}:{}", ev.elid, ev.expiry),
        event: kind.into(),
        elid: Some(ev.elid),
        licname: Some(ev.licname.clone()),
        product: Some(ev.product.clone()),
        outcome: Some(ev.outcome.as_str().into()),
        error,
        expiry: Some(ev.expiry),
        cycle: Some(cycle),
        message,
    }
}

/// The alerts a finished cycle raises. `licenses` are those the cycle listed.
pub fn raise(
    report: &CycleReport,
    licenses: &[License],
    policies: &Policies,
    catalog: &crate::catalog::Catalog,
    today: NaiveDate,
    alert_before: Duration,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for ev in &report.events {
        match ev.outcome {
            Outcome::Error => out.push(from_event(
                "renewal_error",
                ev,
                report.cycle,
                format!("renewal of license {} ({}) failed", ev.elid, ev.licname),
            )),
            Outcome::Unknown if !ev.reason.as_deref().is_some_and(|r| r.starts_with("settling")) => out.push(from_event(
                "renewal_unknown",
                ev,
                report.cycle,
                format!(
                    "renewal of license {} ({}) has an unknown outcome; it will be reconciled",
                    ev.elid, ev.licname
                ),
            )),
            Outcome::ReconciledFailed if ev.reason.as_deref() == Some("license gone") => {
                out.push(from_event(
                    "license_gone",
                    ev,
                    report.cycle,
                    format!(
                        "license {} ({}) was not found after its renewal's outcome settled: it is gone and will not be renewed again",
                        ev.elid, ev.licname
                    ),
                ))
            }
            _ => {}
        }
    }
    let m = &report.money;
    if m.skipped_for_balance > 0 {
        let short = m
            .shortfall
            .as_ref()
            .map(|s| format!("; {s} short"))
            .unwrap_or_default();
        out.push(Alert {
            key: format!("insufficient_balance:{}", report.cycle),
            event: "insufficient_balance".into(),
            elid: None,
            licname: None,
            product: None,
            outcome: None,
            error: m.shortfall.as_ref().map(|s| format!("{s} short")),
            expiry: None,
            cycle: Some(report.cycle),
            message: format!(
                "the balance ({}) does not cover this cycle's renewals: {} skipped{short}",
                m.balance
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_default(),
                m.skipped_for_balance
            ),
        });
    }
    if m.skipped_for_spend_cap > 0 {
        out.push(Alert {
            key: format!("spend_cap:{}", report.cycle),
            event: "spend_cap".into(),
            elid: None,
            licname: None,
            product: None,
            outcome: None,
            error: m
                .spent_last_day
                .as_ref()
                .map(|s| format!("{s} spent in 24 h")),
            expiry: None,
            cycle: Some(report.cycle),
            message: format!(
                "renewal.max_spend_per_day reached: {} renewal(s) skipped this cycle",
                m.skipped_for_spend_cap
            ),
        });
    }
    for l in &report.lapsed {
        out.push(Alert {
            key: format!("license_lapsed:{}:{}", l.elid, l.expiry),
            event: "license_lapsed".into(),
            elid: Some(l.elid),
            licname: Some(l.licname.clone()),
            product: Some(l.product.clone()),
            outcome: None,
            error: None,
            expiry: Some(l.expiry),
            cycle: Some(report.cycle),
            message: format!(
                "license {} ({}) lapsed: it expired on {} ({}) and nothing renewed it",
                l.elid, l.licname, l.expiry, l.status
            ),
        });
    }
    if matches!(report.outcome.as_str(), "auth_failed" | "api_failed") {
        out.push(Alert {
            key: format!("cycle_failed:{}:{today}", report.outcome),
            event: "cycle_failed".into(),
            elid: None,
            licname: None,
            product: None,
            outcome: Some(report.outcome.clone()),
            error: report.error.clone(),
            expiry: None,
            cycle: Some(report.cycle),
            message: format!("cycle {} ended early: {}", report.cycle, report.outcome),
        });
    }
    if report.unreadable_rows > 0 {
        out.push(Alert {
            key: format!("unreadable_rows:{today}"),
            event: "unreadable_rows".into(),
            elid: None,
            licname: None,
            product: None,
            outcome: Some(report.outcome.clone()),
            error: report.error.clone(),
            expiry: None,
            cycle: Some(report.cycle),
            message: format!(
                "{} license row(s) in the list could not be read: those licenses are not renewed",
                report.unreadable_rows
            ),
        });
    }
    let renewed: HashSet<i64> = report
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok | Outcome::ReconciledOk))
        .map(|e| e.elid)
        .collect();
    let horizon = today
        .checked_add_days(chrono::Days::new(alert_before.as_secs().div_ceil(86_400)))
        .unwrap_or(NaiveDate::MAX);
    for l in licenses {
        if renewed.contains(&l.elid) || l.expiry > horizon || matches!(l.status, Status::Deleted) {
            continue;
        }
        let Some(policy) = policies.for_product(l.product) else {
            continue;
        };
        if !policy.rule_for(l).renew {
            continue;
        }
        // The billing renews these by itself; only a past-due one means its autoprolong failed.
        if l.autoprolong && !policy.override_autoprolong && l.expiry >= today {
            continue;
        }
        out.push(Alert {
            key: format!("expiring_unrenewed:{}:{}", l.elid, l.expiry),
            event: "expiring_unrenewed".into(),
            elid: Some(l.elid),
            licname: Some(l.licname.clone()),
            product: Some(catalog.product_name(l.product)),
            outcome: None,
            error: None,
            expiry: Some(l.expiry),
            cycle: Some(report.cycle),
            message: format!(
                "license {} ({}) expires on {} and is still not renewed although a policy covers it",
                l.elid, l.licname, l.expiry
            ),
        });
    }
    out
}

/// Logs each alert and writes one outbox row per configured sink. Returns how many were new.
pub async fn enqueue(
    store: &Store,
    settings: &AlertSettings,
    alerts: &[Alert],
    now: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let mut sinks = Vec::new();
    if settings.webhook.is_some() {
        sinks.push("webhook");
    }
    if settings.command.is_some() {
        sinks.push("command");
    }
    let mut new = 0;
    for a in alerts {
        let payload = serde_json::to_string(a).unwrap_or_default();
        let mut fresh = sinks.is_empty();
        for sink in &sinks {
            if store
                .enqueue_alert(&format!("{}|{sink}", a.key), sink, &a.event, &payload, now)
                .await?
            {
                fresh = true;
            }
        }
        if fresh {
            new += 1;
            tracing::warn!(event = "alert", alert = %a.event, elid = a.elid, licname = a.licname.as_deref(),
                outcome = a.outcome.as_deref(), error = a.error.as_deref(), expiry = a.expiry.map(|d| d.to_string()),
                "{}", a.message);
        }
    }
    Ok(new)
}

/// Delivers due alerts until `stop`; `wake` makes it look at the outbox at once.
pub async fn deliver_forever(
    store: Store,
    settings: AlertSettings,
    wake: std::sync::Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(http) = http_client(&settings) else {
        return;
    };
    loop {
        if let Err(e) = deliver_due(&store, &settings, &http).await {
            tracing::error!(error = %e, "alerts: outbox unavailable");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.retry.min(Duration::from_secs(30))) => {}
        }
    }
}

fn http_client(settings: &AlertSettings) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %crate::billmgr::error::describe_transport(e), "alerts: cannot build an HTTP client; alerts stay in the outbox");
            None
        }
    }
}

/// One delivery pass, for one-shot commands (`licrenew renew` from cron); what fails stays in
/// the outbox for the next run or the service.
pub async fn deliver_once(store: &Store, settings: &AlertSettings) -> Result<(), StoreError> {
    if settings.webhook.is_none() && settings.command.is_none() {
        return Ok(());
    }
    match http_client(settings) {
        Some(http) => deliver_due(store, settings, &http).await,
        None => Ok(()),
    }
}

/// One pass over the outbox.
pub async fn deliver_due(
    store: &Store,
    settings: &AlertSettings,
    http: &reqwest::Client,
) -> Result<(), StoreError> {
    for row in store.due_alerts(Utc::now(), 100).await? {
        match deliver(&row, settings, http).await {
            Ok(()) => {
                store.alert_delivered(row.id, Utc::now()).await?;
                tracing::info!(event = "alert_delivered", sink = %row.sink, alert = %row.event, attempts = row.attempts + 1, "alert delivered");
            }
            Err(why) => {
                let wait = backoff(settings.retry, row.attempts);
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                store.alert_failed(row.id, &why, next).await?;
                tracing::warn!(event = "alert_retry", sink = %row.sink, alert = %row.event, attempts = row.attempts + 1,
                    retry_in_ms = wait.as_millis() as u64, error = %why, "alert delivery failed; will retry");
            }
        }
    }
    Ok(())
}

/// `retry` doubled per failed attempt, capped at one hour.
fn backoff(retry: Duration, attempts: i64) -> Duration {
    retry
        .saturating_mul(1u32 << attempts.clamp(0, 16) as u32)
        .min(Duration::from_secs(3600))
}

async fn deliver(
    row: &AlertRow,
    settings: &AlertSettings,
    http: &reqwest::Client,
) -> Result<(), String> {
    match row.sink.as_str() {
        "webhook" => {
            let url = settings
                .webhook
                .clone()
                .ok_or("no webhook configured any more")?;
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .body(row.payload.clone())
                .send()
                .await
                .map_err(crate::billmgr::error::describe_transport)?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(format!("webhook answered HTTP {}", resp.status().as_u16()))
            }
        }
        "command" => {
            let cmd = settings
                .command
                .clone()
                .ok_or("no command configured any more")?;
            run_command(&cmd, &row.payload, settings.timeout).await
        }
        other => Err(format!("unknown sink {other}")),
    }
}

async fn run_command(
    cmd: &std::path::Path,
    payload: &str,
    timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // The hook gets the alert, not our environment (secrets, credentials directory):
        // only an allow-list is passed on.
        .env_clear()
        .envs(
            ["PATH", "LANG", "TZ"]
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", cmd.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload.as_bytes()).await;
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("{} exited with {s}", cmd.display())),
        Ok(Err(e)) => Err(format!("{}: {e}", cmd.display())),
        Err(_) => Err(format!(
            "{} did not finish within {timeout:?}",
            cmd.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: &str, unreadable_rows: u32) -> CycleReport {
        CycleReport {
            cycle: 7,
            kind: "renew",
            counts: Default::default(),
            outcome: outcome.into(),
            error: None,
            events: Vec::new(),
            duration_ms: 0,
            unreadable_rows,
            lapsed: Vec::new(),
            money: Default::default(),
        }
    }

    #[test]
    fn unreadable_rows_and_failed_cycles_raise_one_alert_a_day() {
        let catalog = crate::catalog::Catalog::builtin();
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).expect("date");
        let policies = Policies::default();

        let rows = raise(
            &report("failed", 3),
            &[],
            &policies,
            &catalog,
            today,
            Duration::from_secs(3600),
        );
        let auth = raise(
            &report("auth_failed", 0),
            &[],
            &policies,
            &catalog,
            today,
            Duration::from_secs(3600),
        );
        let quiet = raise(
            &report("ok", 0),
            &[],
            &policies,
            &catalog,
            today,
            Duration::from_secs(3600),
        );

        assert_eq!(
            rows.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            ["unreadable_rows:2026-11-27"]
        );
        assert_eq!(
            auth.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            ["cycle_failed:auth_failed:2026-11-27"]
        );
        assert!(quiet.is_empty());
    }

    #[test]
    fn a_huge_alert_before_does_not_overflow() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).expect("date");
        let out = raise(
            &report("ok", 0),
            &[],
            &Policies::default(),
            &crate::catalog::Catalog::builtin(),
            today,
            Duration::from_secs(u64::MAX / 2),
        );
        assert!(out.is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_an_hour() {
        let r = Duration::from_secs(30);
        assert_eq!(backoff(r, 0), Duration::from_secs(30));
        assert_eq!(backoff(r, 3), Duration::from_secs(240));
        assert_eq!(backoff(r, 40), Duration::from_secs(3600));
    }
}
