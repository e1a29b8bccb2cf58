//! Alerts: what a cycle raises and resolves, and the outbox that delivers it.
//!
//! Owns the alert kinds, their severities and stable ids (raised every cycle, sent once),
//! the open problems (`alert_log`: one per subject such as `license:1009` or `login`) that
//! suppress a second alert for the same cause and give a `resolved` alert when they clear, the
//! `notify` level, the per-cycle digest, and the delivery task: webhook (JSON POST), command
//! (JSON on stdin) and email (SMTP), retried with exponential backoff from the outbox table.
//! Must not block or delay a renewal: raising only writes rows, and delivery runs in its own
//! task. Every kind and field is documented in README.md ("Alerts").

use crate::config::{AlertSettings, NotifyLevel, SmtpTls};
use crate::daemon::CycleReport;
use crate::domain::{License, Status};
use crate::policy::Policies;
use crate::renew::{Event, Outcome};
use crate::store::{AlertRow, OpenProblem, Store, StoreError};
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The JSON document of one alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable dedupe key: the same id is never sent twice.
    pub id: String,
    /// See README.md "Alerts" for every kind.
    pub kind: String,
    pub severity: Severity,
    pub timestamp: DateTime<Utc>,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_expiry: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The billing's error (`type: msg`) or the transport error, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why, in a few words: `no policy`, `cycle cap`, `balance`, `not confirmed`, …
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<i64>,
    /// For `resolved`: the ids of the alerts whose problem cleared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolves: Vec<String>,
    /// What the problem is about (`license:1009`, `login`, `balance`…): an open problem per
    /// subject suppresses a second alert for it and is resolved when it clears. Not sent.
    #[serde(skip)]
    pub subject: Option<String>,
}

impl Alert {
    pub fn new(kind: &str, severity: Severity, id: String, reason: &str, message: String) -> Alert {
        Alert {
            id,
            kind: kind.into(),
            severity,
            timestamp: DateTime::<Utc>::MIN_UTC,
            host: String::new(),
            elid: None,
            licname: None,
            product: None,
            expiry: None,
            new_expiry: None,
            outcome: None,
            error: None,
            reason: reason.into(),
            message,
            cycle: None,
            resolves: Vec::new(),
            subject: None,
        }
    }

    fn about(mut self, subject: impl Into<String>) -> Alert {
        self.subject = Some(subject.into());
        self
    }

    fn cycle(mut self, cycle: i64) -> Alert {
        self.cycle = Some(cycle);
        self
    }

    fn license(mut self, elid: i64, licname: &str, product: &str, expiry: NaiveDate) -> Alert {
        self.elid = Some(elid);
        self.licname = Some(licname.into());
        self.product = Some(product.into());
        self.expiry = Some(expiry);
        self.subject = Some(license_subject(elid));
        self
    }

    fn from_event(
        cycle: i64,
        kind: &str,
        severity: Severity,
        ev: &Event,
        reason: &str,
        message: String,
    ) -> Alert {
        let error = match (&ev.error_type, &ev.error_msg) {
            (Some(t), Some(m)) => Some(format!("{t}: {m}")),
            (Some(t), None) => Some(t.clone()),
            (None, m) => m.clone(),
        };
        let mut a = Alert::new(
            kind,
            severity,
            format!("{kind}:{}:{}", ev.elid, ev.expiry),
            reason,
            message,
        )
        .license(ev.elid, &ev.licname, &ev.product, ev.expiry);
        a.outcome = Some(ev.outcome.as_str().into());
        a.error = error;
        a.new_expiry = ev.new_expiry;
        a.cycle = Some(cycle);
        a
    }

    /// Whether `notify` lets this alert be delivered (every alert is logged).
    pub fn wanted(&self, notify: NotifyLevel) -> bool {
        match self.kind.as_str() {
            "renewed" => notify >= NotifyLevel::Renewed,
            "cycle" => notify >= NotifyLevel::All,
            _ => true,
        }
    }
}

fn license_subject(elid: i64) -> String {
    format!("license:{elid}")
}

/// What a cycle's alerts are computed from.
pub struct CycleFacts<'a> {
    pub report: &'a CycleReport,
    /// The licenses the cycle listed.
    pub listed: &'a [License],
    pub policies: &'a Policies,
    pub catalog: &'a crate::catalog::Catalog,
    pub today: NaiveDate,
    pub alert_before: Duration,
    /// Problems alerted earlier and not resolved yet, by subject.
    pub open: &'a HashMap<String, OpenProblem>,
    /// The stored licenses of open license problems (a license renewed elsewhere or deleted
    /// leaves the listed window: its problem is resolved from what the sync re-read).
    pub stored: &'a HashMap<i64, crate::store::StoredLicense>,
}

/// The alerts a finished cycle raises, and the `resolved` alerts of the problems it cleared.
/// Timestamp and host are set when they are queued ([`queue`]).
pub fn raise(f: &CycleFacts) -> Vec<Alert> {
    let report = f.report;
    let cycle = report.cycle;
    let mut out = Vec::new();
    // Licenses with a paid outcome this cycle: one failure, one alert.
    let mut attempted: HashSet<i64> = HashSet::new();
    let mut skipped: HashMap<i64, &str> = HashMap::new();
    for ev in &report.events {
        match ev.outcome {
            Outcome::Error => {
                attempted.insert(ev.elid);
                out.push(Alert::from_event(
                    cycle,
                    "renewal_error",
                    Severity::Critical,
                    ev,
                    "refused",
                    format!(
                        "renewal of license {} ({}) was refused; it is tried again next cycle",
                        ev.elid, ev.licname
                    ),
                ))
            }
            Outcome::Unknown => {
                attempted.insert(ev.elid);
                if ev
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("settling"))
                {
                    continue;
                }
                let reason = ev.reason.as_deref().unwrap_or("unknown outcome");
                out.push(Alert::from_event(
                    cycle,
                    "renewal_unknown",
                    Severity::Warning,
                    ev,
                    reason,
                    format!(
                        "renewal of license {} ({}) has an unknown outcome; it is never resent blindly and will be reconciled",
                        ev.elid, ev.licname
                    ),
                ))
            }
            Outcome::ReconciledFailed if ev.reason.as_deref() == Some("license gone") => {
                attempted.insert(ev.elid);
                out.push(Alert::from_event(
                    cycle,
                    "license_gone",
                    Severity::Warning,
                    ev,
                    "license gone",
                    format!(
                        "license {} ({}) was not found after its renewal's outcome settled: it is gone and will not be renewed again",
                        ev.elid, ev.licname
                    ),
                ))
            }
            Outcome::Ok | Outcome::ReconciledOk => {
                attempted.insert(ev.elid);
                let mut a = Alert::from_event(
                    cycle,
                    "renewed",
                    Severity::Info,
                    ev,
                    if ev.outcome == Outcome::Ok {
                        "renewed"
                    } else {
                        "reconciled"
                    },
                    format!(
                        "license {} ({}) renewed: {} → {}",
                        ev.elid,
                        ev.licname,
                        ev.expiry,
                        ev.new_expiry
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "?".into())
                    ),
                );
                a.id = format!("renewed:{}:{}", ev.elid, ev.expiry);
                a.subject = None;
                out.push(a);
            }
            Outcome::ReconciledFailed => {}
            Outcome::Skipped | Outcome::DryRun => {
                if let Some(r) = ev.reason.as_deref() {
                    skipped.insert(ev.elid, r);
                }
            }
        }
    }
    let m = &report.money;
    if m.skipped_for_balance > 0 && !f.open.contains_key("balance") {
        let short = m
            .shortfall
            .as_ref()
            .map(|s| format!("; {s} short"))
            .unwrap_or_default();
        let mut a = Alert::new(
            "insufficient_balance",
            Severity::Critical,
            format!("insufficient_balance:{cycle}"),
            "balance",
            format!(
                "the balance ({}) does not cover this cycle's renewals: {} skipped{short}",
                m.balance
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_default(),
                m.skipped_for_balance
            ),
        )
        .about("balance")
        .cycle(cycle);
        a.error = m.shortfall.as_ref().map(|s| format!("{s} short"));
        out.push(a);
    }
    if m.skipped_for_spend_cap > 0 && !f.open.contains_key("spend_cap") {
        let mut a = Alert::new(
            "spend_cap",
            Severity::Warning,
            format!("spend_cap:{cycle}"),
            "spend cap",
            format!(
                "renewal.max_spend_per_day reached: {} renewal(s) skipped this cycle",
                m.skipped_for_spend_cap
            ),
        )
        .about("spend_cap")
        .cycle(cycle);
        a.error = m
            .spent_last_day
            .as_ref()
            .map(|s| format!("{s} spent in 24 h"));
        out.push(a);
    }
    for l in &report.lapsed {
        let reason = "expired";
        out.push(
            Alert::new(
                "license_lapsed",
                Severity::Critical,
                format!("license_lapsed:{}:{}", l.elid, l.expiry),
                reason,
                format!(
                    "license {} ({}) lapsed: it expired on {} ({}) and nothing renewed it",
                    l.elid, l.licname, l.expiry, l.status
                ),
            )
            .license(l.elid, &l.licname, &l.product, l.expiry)
            .cycle(cycle),
        );
        attempted.insert(l.elid);
    }
    let failed_cycle = matches!(report.outcome.as_str(), "auth_failed" | "api_failed");
    if failed_cycle {
        let (subject, reason) = if report.outcome == "auth_failed" {
            ("login", "login refused")
        } else {
            ("api", "API unavailable")
        };
        if !f.open.contains_key(subject) {
            let mut a = Alert::new(
                "cycle_failed",
                Severity::Critical,
                format!("cycle_failed:{}:{cycle}", report.outcome),
                reason,
                format!("cycle {cycle} ended early: {}", report.outcome),
            )
            .about(subject)
            .cycle(cycle);
            a.outcome = Some(report.outcome.clone());
            a.error = report.error.clone();
            out.push(a);
        }
    }
    if report.unreadable_rows > 0 && !f.open.contains_key("unreadable_rows") {
        let mut a = Alert::new(
            "unreadable_rows",
            Severity::Warning,
            format!("unreadable_rows:{cycle}"),
            "unreadable rows",
            format!(
                "{} license row(s) in the list could not be read: those licenses are not renewed",
                report.unreadable_rows
            ),
        )
        .about("unreadable_rows")
        .cycle(cycle);
        a.error = report.error.clone();
        out.push(a);
    }
    let horizon = f
        .today
        .checked_add_days(chrono::Days::new(f.alert_before.as_secs().div_ceil(86_400)))
        .unwrap_or(NaiveDate::MAX);
    for l in f.listed {
        if attempted.contains(&l.elid) || l.expiry > horizon || matches!(l.status, Status::Deleted)
        {
            continue;
        }
        // Past due is worse than "expires soon": it is raised (critical, its own id) even
        // while a problem about the license, or a cycle-wide cause, is open.
        let past_due = l.expiry < f.today;
        let suffix = if past_due { ":expired" } else { "" };
        if !past_due && f.open.contains_key(&license_subject(l.elid)) {
            continue;
        }
        // The billing renews these by itself; only a past-due one means its autoprolong failed.
        let billing_renews =
            |override_autoprolong: bool| l.autoprolong && !override_autoprolong && !past_due;
        let product = f.catalog.product_name(l.product);
        let (kind, severity, reason) = match f.policies.for_product(l.product) {
            None => {
                if billing_renews(false) {
                    continue;
                }
                let severity = if past_due {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                ("expiring_uncovered", severity, "no policy")
            }
            Some(policy) => {
                if !policy.rule_for(l).renew || billing_renews(policy.override_autoprolong) {
                    continue;
                }
                let reason = skipped.get(&l.elid).copied().unwrap_or("not renewed");
                // A renewal already on its way (paid, being applied, settling) is no problem.
                if [
                    "already renewed",
                    "renewed elsewhere",
                    "processing",
                    "settling",
                ]
                .iter()
                .any(|r| reason.starts_with(r))
                {
                    continue;
                }
                // A cycle-wide cause has its own alert (balance, spend cap, failed cycle),
                // until the license is past due.
                let cycle_wide = ["balance", "spend cap"]
                    .iter()
                    .any(|r| reason.starts_with(r))
                    || failed_cycle;
                if cycle_wide && !past_due {
                    continue;
                }
                ("expiring_unrenewed", Severity::Critical, reason)
            }
        };
        let verb = if past_due { "expired" } else { "expires" };
        let message = if kind == "expiring_uncovered" {
            format!(
                "license {} ({}) {verb} on {} and no policy covers {product}: licrenew will not renew it",
                l.elid, l.licname, l.expiry
            )
        } else {
            format!(
                "license {} ({}) {verb} on {} and is still not renewed although a policy covers it ({reason})",
                l.elid, l.licname, l.expiry
            )
        };
        out.push(
            Alert::new(
                kind,
                severity,
                format!("{kind}:{}:{}{suffix}", l.elid, l.expiry),
                reason,
                message,
            )
            .license(l.elid, &l.licname, &product, l.expiry)
            .cycle(cycle),
        );
    }
    out.extend(resolutions(f));
    out
}

/// `resolved` alerts for the open problems this cycle cleared.
fn resolutions(f: &CycleFacts) -> Vec<Alert> {
    let report = f.report;
    let listed: HashMap<i64, &License> = f.listed.iter().map(|l| (l.elid, l)).collect();
    let renewed: HashMap<i64, &Event> = report
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok | Outcome::ReconciledOk))
        .map(|e| (e.elid, e))
        .collect();
    // Only a cycle that ran to its end can clear a problem: an interrupted one checked nothing.
    let ran = matches!(report.outcome.as_str(), "ok" | "failed");
    let mut out = Vec::new();
    let open: BTreeMap<&String, &OpenProblem> = f.open.iter().collect();
    for (subject, p) in open {
        let before = p.alert.as_ref();
        let why: Option<String> = match subject.as_str() {
            "login" => ran.then(|| "login accepted".into()),
            "api" => ran.then(|| "the API answers again".into()),
            "balance" => {
                (ran && report.money.balance.is_some() && report.money.skipped_for_balance == 0)
                    .then(|| "the balance covers the renewals".into())
            }
            "spend_cap" => (ran
                && report.money.spent_last_day.is_some()
                && report.money.skipped_for_spend_cap == 0)
                .then(|| "renewals are within max_spend_per_day again".into()),
            "unreadable_rows" => {
                (ran && report.unreadable_rows == 0).then(|| "every listed row was read".into())
            }
            s => match s
                .strip_prefix("license:")
                .and_then(|e| e.parse::<i64>().ok())
            {
                Some(elid) => license_resolution(f, p, elid, &listed, &renewed, ran),
                None => None,
            },
        };
        let Some(why) = why else { continue };
        let mut a = Alert::new(
            "resolved",
            Severity::Info,
            format!("resolved:{subject}:{}", report.cycle),
            &why,
            format!(
                "resolved: {}{}",
                before
                    .map(|a| a.message.as_str())
                    .unwrap_or(p.kind.as_str()),
                format_args!(" — {why}")
            ),
        )
        .about(subject.clone())
        .cycle(report.cycle);
        if let Some(b) = before {
            a.elid = b.elid;
            a.licname = b.licname.clone();
            a.product = b.product.clone();
            a.expiry = b.expiry;
        }
        if let Some(ev) = a.elid.and_then(|e| renewed.get(&e)) {
            a.new_expiry = ev.new_expiry;
        }
        a.resolves = p.ids.clone();
        out.push(a);
    }
    out
}

/// Why a license's open problem cleared, if it did: renewed this cycle; its expiry moved past
/// the one alerted (listed, or re-read by the sync after it left the window); deleted or gone;
/// or, for `expiring_uncovered`, a policy decides about it now.
fn license_resolution(
    f: &CycleFacts,
    p: &OpenProblem,
    elid: i64,
    listed: &HashMap<i64, &License>,
    renewed: &HashMap<i64, &Event>,
    ran: bool,
) -> Option<String> {
    if let Some(ev) = renewed.get(&elid) {
        return Some(format!(
            "renewed: {} → {}",
            ev.expiry,
            ev.new_expiry
                .map(|d| d.to_string())
                .unwrap_or_else(|| "?".into())
        ));
    }
    if !ran {
        return None;
    }
    let stored = f.stored.get(&elid);
    let was = p.alert.as_ref().and_then(|a| a.expiry);
    let (expiry, product) = match (listed.get(&elid), stored) {
        (Some(l), _) => (l.expiry, l.product),
        (None, Some(s)) if s.gone_since.is_some() => return Some("license gone".into()),
        (None, Some(s)) if s.status == 4 => return Some("license deleted".into()),
        (None, Some(s)) => (s.expiry, s.product),
        (None, None) => return None,
    };
    if let Some(was) = was
        && expiry > was
    {
        return Some(format!("expiry moved: {was} → {expiry}"));
    }
    if p.kind == "expiring_uncovered" {
        let policy = f.policies.for_product(product)?;
        let renews = match listed.get(&elid) {
            Some(l) => policy.rule_for(l).renew,
            None => policy.renew,
        };
        return Some(if renews {
            "a policy covers it now".into()
        } else {
            "a policy says renew = false".into()
        });
    }
    None
}

/// A one-line summary of a cycle, for `notify = "all"`.
pub fn cycle_summary(report: &CycleReport) -> Alert {
    let mut a = Alert::new(
        "cycle",
        Severity::Info,
        format!("cycle:{}", report.cycle),
        &report.outcome,
        report.summary(),
    )
    .cycle(report.cycle);
    a.outcome = Some(report.outcome.clone());
    a
}

/// Records the alerts (an id already seen is dropped; a `resolved` closes its subject's open
/// problems), logs the new ones at their severity, and queues what `notify` lets through for
/// every configured destination: one digest document per call (`digest = true`) or one per
/// alert. Returns how many deliveries were queued.
pub async fn queue(
    store: &Store,
    settings: &AlertSettings,
    alerts: Vec<Alert>,
    now: DateTime<Utc>,
) -> Result<u32, StoreError> {
    let mut fresh = Vec::new();
    let mut batch = store.alert_batch().await?;
    // Resolutions first: they close what was open before this cycle, never what it raises.
    let mut alerts = alerts;
    alerts.sort_by_key(|a| a.kind != "resolved");
    for mut a in alerts {
        a.timestamp = now;
        a.host = settings.host.clone();
        let payload = serde_json::to_string(&a).unwrap_or_default();
        let new = if a.kind == "resolved" {
            let closed = match &a.subject {
                Some(s) => batch.resolve_problem(s, &a.resolves, now).await?,
                None => Vec::new(),
            };
            if a.resolves.is_empty() {
                a.resolves = closed.clone();
            }
            !closed.is_empty()
        } else if a.kind == "cycle" {
            // A summary per cycle: its id (the cycle number) never repeats; not kept.
            true
        } else {
            batch
                .record_alert(&a.id, &a.kind, a.subject.as_deref(), &payload, now)
                .await?
        };
        if !new {
            continue;
        }
        if a.wanted(settings.notify) {
            fresh.push(a.clone());
        }
        // A renewal and a cycle have their own log events (`renewal`, `cycle`).
        if matches!(a.kind.as_str(), "renewed" | "cycle") {
            continue;
        }
        let fields = (
            &a.id,
            a.elid,
            a.licname.as_deref(),
            a.expiry.map(|d| d.to_string()),
            a.error.as_deref(),
        );
        match a.severity {
            Severity::Critical => {
                tracing::error!(event = "alert", kind = %a.kind, severity = "critical", id = %fields.0, reason = %a.reason,
                elid = fields.1, licname = fields.2, expiry = fields.3, error = fields.4, "{}", a.message)
            }
            Severity::Warning => {
                tracing::warn!(event = "alert", kind = %a.kind, severity = "warning", id = %fields.0, reason = %a.reason,
                elid = fields.1, licname = fields.2, expiry = fields.3, error = fields.4, "{}", a.message)
            }
            Severity::Info => {
                tracing::info!(event = "alert", kind = %a.kind, severity = "info", id = %fields.0, reason = %a.reason,
                elid = fields.1, licname = fields.2, expiry = fields.3, error = fields.4, "{}", a.message)
            }
        }
    }
    let sinks = settings.sinks();
    if fresh.is_empty() || sinks.is_empty() {
        batch.commit().await?;
        return Ok(0);
    }
    let docs: Vec<(String, String, Severity, String)> = if settings.digest {
        let d = Digest::of(&fresh, &settings.host, now);
        vec![(
            d.id.clone(),
            d.kind.to_owned(),
            d.severity,
            serde_json::to_string(&d).unwrap_or_default(),
        )]
    } else {
        fresh
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.kind.clone(),
                    a.severity,
                    serde_json::to_string(a).unwrap_or_default(),
                )
            })
            .collect()
    };
    let mut queued = 0;
    for (id, kind, severity, payload) in &docs {
        for sink in &sinks {
            if batch
                .enqueue_alert(
                    &format!("{id}|{sink}"),
                    sink,
                    kind,
                    severity.as_str(),
                    id,
                    payload,
                    now,
                )
                .await?
            {
                queued += 1;
            }
        }
    }
    batch.commit().await?;
    Ok(queued)
}

/// Every alert of one cycle in one document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Digest {
    pub id: String,
    /// Always `digest`.
    pub kind: String,
    /// The highest severity of its alerts.
    pub severity: Severity,
    pub timestamp: DateTime<Utc>,
    pub host: String,
    pub count: usize,
    /// `2 critical, 1 info: renewal_error ×2, resolved ×1`.
    pub summary: String,
    pub alerts: Vec<Alert>,
}

impl Digest {
    fn of(alerts: &[Alert], host: &str, now: DateTime<Utc>) -> Digest {
        let severity = alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info);
        let mut by_sev: BTreeMap<std::cmp::Reverse<Severity>, usize> = BTreeMap::new();
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for a in alerts {
            *by_sev.entry(std::cmp::Reverse(a.severity)).or_default() += 1;
            *by_kind.entry(a.kind.as_str()).or_default() += 1;
        }
        let sev = by_sev
            .iter()
            .map(|(s, n)| format!("{n} {}", s.0.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let kinds = by_kind
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let cycle = alerts.iter().find_map(|a| a.cycle);
        Digest {
            id: format!(
                "digest:{}:{}",
                cycle.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                now.timestamp_millis()
            ),
            kind: "digest".into(),
            severity,
            timestamp: now,
            host: host.into(),
            count: alerts.len(),
            summary: format!("{sev}: {kinds}"),
            alerts: alerts.to_vec(),
        }
    }
}

/// Delivers due alerts until `stop`; `wake` makes it look at the outbox at once. The
/// settings are those in `settings` at each pass (a reload changes them).
pub async fn deliver_forever(
    store: Store,
    settings: watch::Receiver<AlertSettings>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    wake: std::sync::Arc<Notify>,
    mut leading: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // A standby leaves the shared outbox to the leader.
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = stop.changed() => return,
                r = leading.changed() => if r.is_err() { return },
            }
        }
        let current = settings.borrow().clone();
        if let Some(http) = http_client(&current)
            && let Err(e) = deliver_due(&store, &current, &http, Some(&metrics), Some(&stop)).await
        {
            tracing::error!(event = "alert_outbox", error = %e, "alerts: outbox unavailable");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(current.retry.min(Duration::from_secs(30))) => {}
        }
    }
}

fn http_client(settings: &AlertSettings) -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("licrenew/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(event = "alert_outbox", error = %crate::billmgr::error::describe_transport(e), "alerts: cannot build an HTTP client; alerts stay in the outbox");
            None
        }
    }
}

/// One delivery pass, for one-shot commands (`licrenew renew` from cron); what fails stays in
/// the outbox for the next run or the service.
pub async fn deliver_once(store: &Store, settings: &AlertSettings) -> Result<(), StoreError> {
    if settings.sinks().is_empty() {
        return Ok(());
    }
    match http_client(settings) {
        Some(http) => deliver_due(store, settings, &http, None, None).await,
        None => Ok(()),
    }
}

/// One pass over the outbox.
pub async fn deliver_due(
    store: &Store,
    settings: &AlertSettings,
    http: &reqwest::Client,
    metrics: Option<&crate::metrics::Metrics>,
    stop: Option<&watch::Receiver<bool>>,
) -> Result<(), StoreError> {
    for row in store.due_alerts(Utc::now(), 100).await? {
        // A stop ends the pass between deliveries (what is left stays in the outbox).
        if stop.is_some_and(|s| *s.borrow()) {
            break;
        }
        let started = std::time::Instant::now();
        match deliver(&row, settings, http).await {
            Ok(()) => {
                store.alert_delivered(row.id, Utc::now()).await?;
                tracing::info!(event = "alert_delivered", sink = %row.sink, kind = %row.event, id = %row.alert_id,
                    attempts = row.attempts + 1, duration_ms = started.elapsed().as_millis() as u64, "alert delivered");
            }
            Err(why) => {
                if let Some(m) = metrics {
                    m.alert_delivery_failed();
                }
                let wait = backoff(settings.retry, row.attempts);
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                store.alert_failed(row.id, &why, next).await?;
                tracing::warn!(event = "alert_retry", sink = %row.sink, kind = %row.event, id = %row.alert_id, attempts = row.attempts + 1,
                    retry_in_ms = wait.as_millis() as u64, error = %why, "alert delivery failed; will retry");
            }
        }
    }
    if let Some(m) = metrics {
        let (pending, _) = store.alert_counts().await?;
        m.set_alerts_pending(pending);
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
            let mut req = http
                .post(url)
                .header("content-type", "application/json")
                .body(row.payload.clone());
            for (name, value) in &settings.webhook_headers {
                let mut v = reqwest::header::HeaderValue::from_str(value.expose_secret())
                    .map_err(|_| format!("header {name}: not a valid value"))?;
                v.set_sensitive(true);
                req = req.header(name.as_str(), v);
            }
            let resp = req
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
            run_command(&cmd, row, settings.timeout).await
        }
        "email" => {
            let email = settings
                .email
                .as_ref()
                .ok_or("no email configured any more")?;
            send_mail(email, row, settings.timeout).await
        }
        other => Err(format!("unknown sink {other}")),
    }
}

/// Runs the hook (no shell) with the document on stdin and `LICRENEW_ALERT_*` in its
/// environment; what it writes to stderr is logged.
async fn run_command(cmd: &[String], row: &AlertRow, timeout: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _sigpipe = IgnoreSigpipe::new();
    let (program, args) = cmd.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // The hook gets the alert, not our environment (secrets, credentials directory):
        // only an allow-list is passed on.
        .env_clear()
        .envs(
            ["PATH", "LANG", "TZ"]
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .env("LICRENEW_ALERT_KIND", &row.event)
        .env("LICRENEW_ALERT_SEVERITY", &row.severity)
        .env("LICRENEW_ALERT_ID", &row.alert_id)
        // Its own process group: a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id();
    // stderr is read on the side (the first 16 KiB kept, the rest drained, never left to
    // fill the pipe); the verdict is the exit status, not the end of stderr, which a
    // background child of the hook may hold open.
    let stderr = child.stderr.take();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = kept.clone();
    let reader = tokio::spawn(async move {
        let Some(mut e) = stderr else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = e.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut k = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let room = (16 * 1024usize).saturating_sub(k.len());
            k.extend_from_slice(&buf[..n.min(room)]);
        }
    });
    let stdin = child.stdin.take();
    let payload = row.payload.clone();
    let run = async {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(payload.as_bytes()).await;
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, run).await {
        Ok(status) => status.map_err(|e| format!("{program}: {e}"))?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: a signal to the hook's own process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            reader.abort();
            return Err(format!("{program} did not finish within {timeout:?}"));
        }
    };
    let mut reader = reader;
    if tokio::time::timeout(Duration::from_millis(200), &mut reader)
        .await
        .is_err()
    {
        // A background child of the hook holds stderr open: what was read is enough.
        reader.abort();
    }
    let err = std::mem::take(
        &mut *kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for line in String::from_utf8_lossy(&err)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        if status.success() {
            tracing::info!(event = "alert_command_stderr", program = %program, id = %row.alert_id, "{line}");
        } else {
            tracing::warn!(event = "alert_command_stderr", program = %program, id = %row.alert_id, "{line}");
        }
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

/// While a hook runs, SIGPIPE is ignored: a hook that exits without reading its stdin must
/// not kill licrenew (one-shot commands restore SIGPIPE's default so that `| head` ends them
/// quietly; the service never does). The write then fails with EPIPE, which is ignored.
struct IgnoreSigpipe(libc::sighandler_t);

impl IgnoreSigpipe {
    fn new() -> IgnoreSigpipe {
        // SAFETY: changing a signal's disposition touches no memory of ours.
        IgnoreSigpipe(unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreSigpipe {
    fn drop(&mut self) {
        if self.0 != libc::SIG_ERR {
            // SAFETY: as above; restores what was there.
            unsafe {
                libc::signal(libc::SIGPIPE, self.0);
            }
        }
    }
}

/// One mail per delivery: a subject with host, severity and counts, a text body with one line
/// per alert, and the JSON document after it.
async fn send_mail(
    email: &crate::config::EmailSettings,
    row: &AlertRow,
    timeout: Duration,
) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let (subject, lines) = mail_text(&row.payload);
    let mut msg = Message::builder()
        .from(email.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(subject);
    for to in &email.to {
        msg = msg.to(to.parse().map_err(|e| format!("to: {e}"))?);
    }
    let body = format!("{lines}\n\n{}\n", row.payload);
    let msg = msg
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the mail: {e}"))?;
    let builder = match email.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&email.server)
            .map_err(|e| format!("smtp {}: {e}", email.server))?,
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&email.server)
            .map_err(|e| format!("smtp {}: {e}", email.server))?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.server),
    };
    let mut builder = builder.port(email.port).timeout(Some(timeout));
    if let (Some(user), Some(pw)) = (&email.username, &email.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            pw.expose_secret().to_owned(),
        ));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("smtp {}:{}: {e}", email.server, email.port))
}

/// The subject and text lines of a delivered document (digest or single alert).
fn mail_text(payload: &str) -> (String, String) {
    if let Ok(d) = serde_json::from_str::<Digest>(payload) {
        let lines = d
            .alerts
            .iter()
            .map(|a| format!("[{}] {}: {}", a.severity.as_str(), a.kind, a.message))
            .collect::<Vec<_>>()
            .join("\n");
        return (
            format!(
                "[licrenew {}] {}: {}",
                d.host,
                d.severity.as_str(),
                d.summary
            ),
            lines,
        );
    }
    match serde_json::from_str::<Alert>(payload) {
        Ok(a) => (
            format!("[licrenew {}] {}: {}", a.host, a.severity.as_str(), a.kind),
            a.message,
        ),
        Err(_) => ("[licrenew] alert".into(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use std::path::PathBuf;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).expect("date")
    }

    fn catalog() -> Catalog {
        Catalog::builtin().for_api(crate::config::Api::Billmgr4)
    }

    fn product(name: &str) -> i64 {
        catalog()
            .products
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.price)
            .expect("product in the built-in catalog")
    }

    fn lic(elid: i64, product_name: &str, days: u64) -> License {
        License {
            elid,
            licname: format!("srv{elid}"),
            ip: "192.0.2.1".into(),
            product: product(product_name),
            period: None,
            expiry: today() + chrono::Days::new(days),
            status: Status::Active,
            autoprolong: false,
            special: None,
            cost: None,
            pricelist_label: None,
        }
    }

    fn policies(text: &str) -> Policies {
        Policies::from_sources(&[(PathBuf::from("lite.toml"), text.to_owned())], &catalog())
            .expect("policies")
    }

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

    fn event(l: &License, outcome: Outcome) -> Event {
        let mut e = Event::new(&catalog(), l, None, outcome);
        if outcome == Outcome::Error {
            e.error_type = Some("value".into());
            e.error_msg = Some("Not enough money".into());
        }
        if outcome == Outcome::Ok {
            e.new_expiry = Some(l.expiry + chrono::Days::new(30));
        }
        e
    }

    const LITE: &str =
        "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

    fn raise_with(
        report: &CycleReport,
        listed: &[License],
        policies: &Policies,
        open: &HashMap<String, OpenProblem>,
    ) -> Vec<Alert> {
        raise(&CycleFacts {
            report,
            listed,
            policies,
            catalog: &catalog(),
            today: today(),
            alert_before: Duration::from_secs(72 * 3600),
            open,
            stored: &HashMap::new(),
        })
    }

    fn kinds(alerts: &[Alert]) -> Vec<(String, Option<i64>)> {
        alerts.iter().map(|a| (a.kind.clone(), a.elid)).collect()
    }

    #[test]
    fn unreadable_rows_and_failed_cycles_raise_one_alert_until_resolved() {
        let none = HashMap::new();
        let p = Policies::default();

        let rows = raise_with(&report("failed", 3), &[], &p, &none);
        let auth = raise_with(&report("auth_failed", 0), &[], &p, &none);
        let quiet = raise_with(&report("ok", 0), &[], &p, &none);
        let mut open = HashMap::new();
        open.insert(
            "login".to_owned(),
            OpenProblem {
                ids: vec!["cycle_failed:auth_failed:6".into()],
                kind: "cycle_failed".into(),
                alert: None,
            },
        );
        let again = raise_with(&report("auth_failed", 0), &[], &p, &open);
        let accepted = raise_with(&report("ok", 0), &[], &p, &open);

        assert_eq!(
            rows.iter()
                .map(|a| (a.id.as_str(), a.severity))
                .collect::<Vec<_>>(),
            [("unreadable_rows:7", Severity::Warning)]
        );
        assert_eq!(
            auth.iter()
                .map(|a| (a.id.as_str(), a.reason.as_str(), a.severity))
                .collect::<Vec<_>>(),
            [(
                "cycle_failed:auth_failed:7",
                "login refused",
                Severity::Critical
            )]
        );
        assert!(quiet.is_empty());
        assert!(again.is_empty(), "still the same open problem: {again:?}");
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].kind, "resolved");
        assert_eq!(accepted[0].reason, "login accepted");
        assert_eq!(accepted[0].resolves, ["cycle_failed:auth_failed:6"]);
    }

    #[test]
    fn one_failure_gives_one_alert_not_also_expiring_unrenewed() {
        let l = lic(11, "ISPmanager Lite", 2);
        let mut r = report("failed", 0);
        r.events.push(event(&l, Outcome::Error));

        let out = raise_with(
            &r,
            std::slice::from_ref(&l),
            &policies(LITE),
            &HashMap::new(),
        );

        assert_eq!(kinds(&out), [("renewal_error".to_owned(), Some(11))]);
        assert_eq!(out[0].error.as_deref(), Some("value: Not enough money"));
        assert_eq!(out[0].severity, Severity::Critical);
        assert_eq!(out[0].id, format!("renewal_error:11:{}", l.expiry));
    }

    #[test]
    fn a_covered_license_left_unrenewed_says_why_and_an_open_problem_silences_it() {
        let l = lic(12, "ISPmanager Lite", 1);
        let mut r = report("ok", 0);
        let mut skipped = event(&l, Outcome::Skipped);
        skipped.reason = Some("cycle cap".into());
        r.events.push(skipped);

        let out = raise_with(
            &r,
            std::slice::from_ref(&l),
            &policies(LITE),
            &HashMap::new(),
        );
        let mut open = HashMap::new();
        open.insert(
            "license:12".to_owned(),
            OpenProblem {
                ids: vec![out[0].id.clone()],
                kind: "expiring_unrenewed".into(),
                alert: Some(out[0].clone()),
            },
        );
        let again = raise_with(&r, std::slice::from_ref(&l), &policies(LITE), &open);

        assert_eq!(kinds(&out), [("expiring_unrenewed".to_owned(), Some(12))]);
        assert_eq!(out[0].reason, "cycle cap");
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn an_uncovered_license_is_alerted_unless_a_policy_says_renew_false() {
        let pro = lic(21, "ISPmanager Pro", 2);
        let mut lapsed = lic(22, "ISPmanager Pro", 0);
        lapsed.expiry = today() - chrono::Days::new(1);
        let later = lic(23, "ISPmanager Pro", 30);
        let mut deleted = lic(24, "ISPmanager Pro", 1);
        deleted.status = Status::Deleted;
        let listed = [pro.clone(), lapsed, later, deleted];

        let out = raise_with(&report("ok", 0), &listed, &policies(LITE), &HashMap::new());
        let silenced = raise_with(
            &report("ok", 0),
            &listed,
            &policies("product = \"ISPmanager Pro\"\nrenew = false\n"),
            &HashMap::new(),
        );
        let excepted = raise_with(
            &report("ok", 0),
            &[pro],
            &policies(
                "product = \"ISPmanager Pro\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"1d\"\n[[except]]\nelid = 21\nrenew = false\n",
            ),
            &HashMap::new(),
        );

        assert_eq!(
            out.iter()
                .map(|a| (a.kind.as_str(), a.elid, a.severity, a.reason.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "expiring_uncovered",
                    Some(21),
                    Severity::Warning,
                    "no policy"
                ),
                (
                    "expiring_uncovered",
                    Some(22),
                    Severity::Critical,
                    "no policy"
                ),
            ]
        );
        assert!(silenced.is_empty(), "{silenced:?}");
        assert!(excepted.is_empty(), "{excepted:?}");
    }

    #[test]
    fn a_later_renewal_or_a_moved_expiry_resolves_the_license_problem() {
        let l = lic(31, "ISPmanager Lite", 2);
        let m = lic(32, "ISPmanager Lite", 2);
        let mut open = HashMap::new();
        for x in [&l, &m] {
            let mut r = report("failed", 0);
            r.events.push(event(x, Outcome::Error));
            let first = raise_with(
                &r,
                std::slice::from_ref(x),
                &policies(LITE),
                &HashMap::new(),
            );
            open.insert(
                format!("license:{}", x.elid),
                OpenProblem {
                    ids: vec![first[0].id.clone()],
                    kind: "renewal_error".into(),
                    alert: Some(first[0].clone()),
                },
            );
        }
        let mut r = report("ok", 0);
        r.events.push(event(&l, Outcome::Ok));
        let mut moved = m.clone();
        moved.expiry = m.expiry + chrono::Days::new(365);

        let out = raise_with(&r, &[l.clone(), moved.clone()], &policies(LITE), &open);
        let resolved: Vec<_> = out.iter().filter(|a| a.kind == "resolved").collect();

        assert_eq!(resolved.len(), 2, "{out:?}");
        assert_eq!(resolved[0].elid, Some(31));
        assert!(
            resolved[0].reason.starts_with("renewed: "),
            "{:?}",
            resolved[0]
        );
        assert_eq!(
            resolved[0].resolves,
            [format!("renewal_error:31:{}", l.expiry)]
        );
        assert_eq!(resolved[1].elid, Some(32));
        assert_eq!(
            resolved[1].reason,
            format!("expiry moved: {} → {}", m.expiry, moved.expiry)
        );
        assert!(
            out.iter()
                .any(|a| a.kind == "renewed" && a.elid == Some(31))
        );
    }

    #[test]
    fn notify_levels_let_through_what_they_name() {
        let a = |kind: &str| Alert::new(kind, Severity::Info, kind.into(), "", String::new());
        assert!(a("resolved").wanted(NotifyLevel::Error));
        assert!(a("renewal_error").wanted(NotifyLevel::Error));
        assert!(!a("renewed").wanted(NotifyLevel::Error));
        assert!(a("renewed").wanted(NotifyLevel::Renewed));
        assert!(!a("cycle").wanted(NotifyLevel::Renewed));
        assert!(a("cycle").wanted(NotifyLevel::All));
    }

    #[test]
    fn a_digest_carries_the_highest_severity_and_counts_and_reads_as_a_mail() {
        let now = Utc::now();
        let alerts = [
            Alert::new(
                "renewal_error",
                Severity::Critical,
                "a".into(),
                "",
                "one".into(),
            )
            .cycle(3),
            Alert::new(
                "renewal_error",
                Severity::Critical,
                "b".into(),
                "",
                "two".into(),
            )
            .cycle(3),
            Alert::new("resolved", Severity::Info, "c".into(), "", "three".into()).cycle(3),
        ];

        let d = Digest::of(&alerts, "billing-1", now);
        let (subject, lines) = mail_text(&serde_json::to_string(&d).expect("json"));

        assert_eq!(d.severity, Severity::Critical);
        assert_eq!(d.count, 3);
        assert_eq!(
            d.summary,
            "2 critical, 1 info: renewal_error ×2, resolved ×1"
        );
        assert!(d.id.starts_with("digest:3:"), "{}", d.id);
        assert_eq!(
            subject,
            "[licrenew billing-1] critical: 2 critical, 1 info: renewal_error ×2, resolved ×1"
        );
        assert_eq!(lines.lines().count(), 3);
    }

    #[test]
    fn a_huge_alert_before_does_not_overflow() {
        let out = raise(&CycleFacts {
            report: &report("ok", 0),
            listed: &[],
            policies: &Policies::default(),
            catalog: &catalog(),
            today: today(),
            alert_before: Duration::from_secs(u64::MAX / 2),
            open: &HashMap::new(),
            stored: &HashMap::new(),
        });
        assert!(out.is_empty());
    }

    fn open_with(alert: &Alert) -> HashMap<String, OpenProblem> {
        HashMap::from([(
            alert.subject.clone().expect("a subject"),
            OpenProblem {
                ids: vec![alert.id.clone()],
                kind: alert.kind.clone(),
                alert: Some(alert.clone()),
            },
        )])
    }

    #[test]
    fn past_due_escalates_to_critical_even_while_a_problem_is_open() {
        let soon = lic(41, "ISPmanager Pro", 2);
        let first = raise_with(
            &report("ok", 0),
            std::slice::from_ref(&soon),
            &policies(LITE),
            &HashMap::new(),
        );
        let mut lapsed = soon.clone();
        lapsed.expiry = today() - chrono::Days::new(1);
        let mut earlier = first[0].clone();
        earlier.expiry = Some(lapsed.expiry);
        let open_same_expiry = open_with(&earlier);

        let later = raise_with(
            &report("ok", 0),
            std::slice::from_ref(&lapsed),
            &policies(LITE),
            &open_same_expiry,
        );

        assert_eq!(first[0].severity, Severity::Warning);
        assert_eq!(later.len(), 1, "{later:?}");
        assert_eq!(later[0].severity, Severity::Critical);
        assert_eq!(
            later[0].id,
            format!("expiring_uncovered:41:{}:expired", lapsed.expiry)
        );
    }

    #[test]
    fn a_covered_license_past_due_is_alerted_even_when_the_balance_is_the_cause() {
        let mut l = lic(42, "ISPmanager Lite", 0);
        l.expiry = today() - chrono::Days::new(1);
        let mut r = report("ok", 0);
        let mut skipped = event(&l, Outcome::Skipped);
        skipped.reason = Some("balance".into());
        r.events.push(skipped);
        let soon = lic(43, "ISPmanager Lite", 1);
        let mut s2 = event(&soon, Outcome::Skipped);
        s2.reason = Some("spend cap (cost unknown: 43)".into());
        r.events.push(s2);

        let out = raise_with(&r, &[l, soon], &policies(LITE), &HashMap::new());

        assert_eq!(
            kinds(&out),
            [("expiring_unrenewed".to_owned(), Some(42))],
            "{out:?}"
        );
        assert!(out[0].id.ends_with(":expired"));
        assert_eq!(out[0].reason, "balance");
    }

    #[test]
    fn a_problem_resolves_from_the_stored_license_when_it_left_the_window() {
        let l = lic(44, "ISPmanager Pro", 2);
        let first = raise_with(
            &report("ok", 0),
            std::slice::from_ref(&l),
            &policies(LITE),
            &HashMap::new(),
        );
        let open = open_with(&first[0]);
        let stored_row = |expiry: NaiveDate, gone: bool| crate::store::StoredLicense {
            elid: 44,
            licname: l.licname.clone(),
            ip: l.ip.clone(),
            product: l.product,
            period: None,
            expiry,
            status: 2,
            status_raw: "2".into(),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            gone_since: gone.then(Utc::now),
            last_outcome: None,
            last_reason: None,
            last_decided: None,
            autoprolong: false,
            lapsed_since: None,
            pricelist_label: None,
            special: None,
            cost_cents: None,
            cost_currency: None,
        };
        let facts = |stored: &HashMap<i64, crate::store::StoredLicense>, outcome: &str| {
            raise(&CycleFacts {
                report: &report(outcome, 0),
                listed: &[],
                policies: &policies(LITE),
                catalog: &catalog(),
                today: today(),
                alert_before: Duration::from_secs(72 * 3600),
                open: &open,
                stored,
            })
        };
        let moved = HashMap::from([(44, stored_row(l.expiry + chrono::Days::new(365), false))]);
        let gone = HashMap::from([(44, stored_row(l.expiry, true))]);

        let by_move = facts(&moved, "ok");
        let by_gone = facts(&gone, "ok");
        let interrupted = facts(&moved, "interrupted");

        assert_eq!(by_move.len(), 1, "{by_move:?}");
        assert_eq!(by_move[0].kind, "resolved");
        assert!(
            by_move[0].reason.starts_with("expiry moved: "),
            "{:?}",
            by_move[0]
        );
        assert_eq!(by_gone[0].reason, "license gone");
        assert!(
            interrupted.is_empty(),
            "an interrupted cycle checked nothing: {interrupted:?}"
        );
    }

    #[test]
    fn an_interrupted_or_api_failed_cycle_resolves_no_login_balance_or_spend_cap() {
        let mut open = HashMap::new();
        for subject in ["login", "balance", "spend_cap", "api"] {
            open.insert(
                subject.to_owned(),
                OpenProblem {
                    ids: vec![format!("{subject}:1")],
                    kind: "x".into(),
                    alert: None,
                },
            );
        }
        let none = Policies::default();

        let interrupted = raise_with(&report("interrupted", 0), &[], &none, &open);
        let api_failed = raise_with(&report("api_failed", 0), &[], &none, &open);
        let ok = raise_with(&report("ok", 0), &[], &none, &open);

        assert!(interrupted.is_empty(), "{interrupted:?}");
        assert!(api_failed.is_empty(), "{api_failed:?}");
        // Balance and spend cap were not checked (no balance read, no cap counted).
        let mut cleared: Vec<_> = ok.iter().map(|a| a.reason.as_str()).collect();
        cleared.sort();
        assert_eq!(cleared, ["login accepted", "the API answers again"]);
    }

    #[tokio::test]
    async fn the_store_reopens_a_resolved_id_and_resolves_only_what_was_open_before() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("a.db")).await.expect("store");
        let settings = crate::config::AlertSettings {
            webhook: None,
            webhook_headers: Vec::new(),
            command: None,
            email: None,
            alert_before: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            retry: Duration::from_secs(1),
            digest: true,
            notify: NotifyLevel::Error,
            host: "h".into(),
        };
        let l = lic(45, "ISPmanager Pro", 2);
        let uncovered = raise_with(
            &report("ok", 0),
            std::slice::from_ref(&l),
            &policies(LITE),
            &HashMap::new(),
        );
        let mut resolved = Alert::new(
            "resolved",
            Severity::Info,
            "resolved:license:45:2".into(),
            "x",
            "x".into(),
        );
        resolved.subject = Some("license:45".into());
        let mut err = Alert::new(
            "renewal_error",
            Severity::Critical,
            "renewal_error:45:x".into(),
            "refused",
            "x".into(),
        );
        err.subject = Some("license:45".into());

        let first = queue(&store, &settings, uncovered.clone(), Utc::now())
            .await
            .expect("q");
        let logged_first = store.open_problems().await.expect("open").len();
        // One call: the resolution of the old problem and a new problem of the same license.
        queue(
            &store,
            &settings,
            vec![err.clone(), resolved.clone()],
            Utc::now(),
        )
        .await
        .expect("q");
        let open_after = store.open_problems().await.expect("open");
        // The first problem raised again after its resolution is new again.
        let mut resolved2 = resolved.clone();
        resolved2.id = "resolved:license:45:3".into();
        queue(&store, &settings, vec![resolved2], Utc::now())
            .await
            .expect("q");
        let record = || {
            store.record_alert(
                &uncovered[0].id,
                "expiring_uncovered",
                Some("license:45"),
                "{}",
                Utc::now(),
            )
        };
        let reopened = record().await.expect("record");
        let again = record().await.expect("record");
        store.close().await;

        assert_eq!(first, 0, "no destination: nothing queued for delivery");
        assert_eq!(logged_first, 1);
        assert_eq!(
            open_after.get("license:45").map(|p| p.ids.clone()),
            Some(vec!["renewal_error:45:x".to_owned()]),
            "the new problem stays open"
        );
        assert!(reopened, "raised again after its resolution: new");
        assert!(!again, "still open: not new");
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_an_hour() {
        let r = Duration::from_secs(30);
        assert_eq!(backoff(r, 0), Duration::from_secs(30));
        assert_eq!(backoff(r, 3), Duration::from_secs(240));
        assert_eq!(backoff(r, 40), Duration::from_secs(3600));
    }
}
