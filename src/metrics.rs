//! Prometheus metrics and the health rule; served over HTTP by [`crate::http`].
//!
//! Owns the `licrenew_…` series (one explicit prometheus-client registry per [`Metrics`], no
//! global recorder, so every test gets its own) and the health rule (a recent successful cycle
//! and an accepted login). Callers
//! report what happened through the `observe_*`/`cycle_*`/`set_licenses` methods. Must not
//! decide anything about renewals, touch the database or the API, or read the clock outside
//! [`Metrics::new`] and the HTTP handlers (everything else takes `now`/`at` as a parameter).

use crate::domain::Status;
use crate::overview::LicenseView;
use chrono::{DateTime, NaiveDate, NaiveTime, SubsecRound, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

/// The `Content-Type` of `GET /metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of one API call: a fast answer takes tens of milliseconds, the client timeout is
/// 30 s by default and a large listing may take up to a minute.
const API_CALL_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of one cycle: a sync of a few licenses takes a second, thousands of licenses with
/// renewals (each re-read, then paid) take many minutes.
const CYCLE_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// A status for a label: the five known ones by name, anything else `unknown` (a raw value
/// as a label would let the server grow the series count).
fn status_label(status: &str) -> String {
    let known = ["ordered", "active", "suspended", "deleted", "processing"];
    let base = status.split(' ').next().unwrap_or("");
    if known.contains(&base) {
        base.to_owned()
    } else {
        "unknown".into()
    }
}

/// A decision's reason as a bounded label: `expiry changed since listing (a → b)` →
/// `expiry changed since listing`, `except #2: renew = false` → `renew = false`.
fn reason_label(reason: &str) -> String {
    let r = reason.split(" (").next().unwrap_or(reason);
    let r = match r.split_once(": ") {
        Some((rule, rest)) if rule == "policy" || rule.starts_with("except #") => rest,
        _ => r,
    };
    r.chars().take(48).collect()
}

/// How far ahead [`cron_interval`] looks for the longest gap, and at most how many ticks.
const CRON_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(35);
const CRON_MAX_TICKS: usize = 10_000;

type TimestampGauge = Gauge<f64, AtomicU64>;
type HistogramCtor = fn() -> Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LicenseCountLabels {
    product: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ElidLabels {
    elid: i64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    elid: i64,
    licname: String,
    product: String,
    status: String,
    /// `renew`, `no_renew` or `none`.
    policy: String,
    /// `on` or `off`.
    autoprolong: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    outcome: String,
    product: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    currency: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    func: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    func: String,
}

/// What the health rule needs beyond the series.
#[derive(Debug)]
struct HealthState {
    /// When this instance was created: the grace period before the first cycle counts from it.
    created: DateTime<Utc>,
    last_success: Option<DateTime<Utc>>,
    /// `None` until the first login attempt.
    login_ok: Option<bool>,
}

/// The registry and its series. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    licenses: Family<LicenseCountLabels, Gauge>,
    license_info: Family<InfoLabels, Gauge>,
    license_expiry: Family<ElidLabels, TimestampGauge>,
    license_renewal: Family<ElidLabels, TimestampGauge>,
    upcoming_cost: Family<CostLabels, TimestampGauge>,
    renewals: Family<RenewalLabels, Counter>,
    decisions: Family<ReasonLabels, Counter>,
    cycles: Family<OutcomeLabels, Counter>,
    alerts_pending: Gauge,
    alert_failures: Counter,
    leader: Family<Vec<(String, String)>, Gauge>,
    api_calls: Family<ApiCallLabels, Counter>,
    api_call_duration: Family<FunctionLabels, Histogram, HistogramCtor>,
    last_cycle_start: TimestampGauge,
    last_cycle_end: TimestampGauge,
    last_successful_cycle: TimestampGauge,
    cycle_duration: Histogram,
    /// A family without labels so the series is absent until the first login attempt: a
    /// `0` before the first cycle (hours away on the default schedule) would read as refused.
    login_ok: Family<Vec<(String, String)>, Gauge>,
    /// 1 when the last reload (SIGHUP) was taken, 0 when it was refused (as Prometheus itself
    /// names them); the config read at start counts as a successful load.
    config_reload_ok: Gauge,
    config_reload_success: TimestampGauge,
    balance: Family<Vec<(String, String)>, TimestampGauge>,
    /// Taken for writing while the per-license families are cleared and refilled, for reading
    /// while rendering, so a scrape never sees them half-replaced (empty for an instant).
    licenses_swap: RwLock<()>,
    health: Mutex<HealthState>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::created_at(Utc::now())
    }

    pub(crate) fn created_at(created: DateTime<Utc>) -> Metrics {
        let mut registry = Registry::with_prefix("licrenew");
        let licenses = Family::<LicenseCountLabels, Gauge>::default();
        registry.register(
            "licenses",
            "Licenses in the database (not gone) by product and status, as of the last sync",
            licenses.clone(),
        );
        let license_info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "license_info",
            "1 per license known and not deleted, with its name, product, status, whether a policy renews it (renew, no_renew, none) and the billing's autoprolong",
            license_info.clone(),
        );
        let license_expiry = Family::<ElidLabels, TimestampGauge>::default();
        registry.register_with_unit(
            "license_expiry_timestamp",
            "End of the last day a license (not deleted) is valid: 23:59:59 UTC of its expiredate",
            Unit::Seconds,
            license_expiry.clone(),
        );
        let license_renewal = Family::<ElidLabels, TimestampGauge>::default();
        registry.register_with_unit(
            "license_renewal_timestamp",
            "When licrenew plans to renew a license (the start of that day, UTC); absent when nothing will",
            Unit::Seconds,
            license_renewal.clone(),
        );
        let upcoming_cost = Family::<CostLabels, TimestampGauge>::default();
        registry.register(
            "upcoming_renewals_cost",
            "What the renewals planned within the window (7d, 30d) cost, by currency (those of known cost)",
            upcoming_cost.clone(),
        );
        let renewals = Family::<RenewalLabels, Counter>::default();
        registry.register(
            "renewals",
            "Paid renewals by outcome (ok, error, unknown, reconciled_ok, reconciled_failed) and product",
            renewals.clone(),
        );
        let decisions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions not to pay (or not yet), by reason: not due, no policy, autoprolong, balance, …",
            decisions.clone(),
        );
        let cycles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cycles",
            "Cycles by outcome (ok, failed, api_failed, auth_failed, interrupted)",
            cycles.clone(),
        );
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        registry.register("build_info", "licrenew's version", build_info);
        let alerts_pending = Gauge::default();
        registry.register(
            "alerts_pending",
            "Alerts in the outbox not delivered yet",
            alerts_pending.clone(),
        );
        let alert_failures = Counter::default();
        registry.register(
            "alert_deliveries_failed",
            "Alert deliveries that failed (each is retried)",
            alert_failures.clone(),
        );
        let leader = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "leader",
            "1 when this instance leads (renews), 0 when it stands by (PostgreSQL); absent with SQLite",
            leader.clone(),
        );
        let api_calls = Family::<ApiCallLabels, Counter>::default();
        registry.register(
            "api_calls",
            "BILLmanager API calls by function and result (ok, api_error or the transport error class)",
            api_calls.clone(),
        );
        let api_call_duration: Family<FunctionLabels, Histogram, HistogramCtor> =
            Family::new_with_constructor(|| Histogram::new(API_CALL_BUCKETS));
        registry.register_with_unit(
            "api_call_duration",
            "Wall time of one BILLmanager API HTTP exchange",
            Unit::Seconds,
            api_call_duration.clone(),
        );
        let last_cycle_start = TimestampGauge::default();
        registry.register_with_unit(
            "last_cycle_start_timestamp",
            "When the last cycle started (0: none yet)",
            Unit::Seconds,
            last_cycle_start.clone(),
        );
        let last_cycle_end = TimestampGauge::default();
        registry.register_with_unit(
            "last_cycle_end_timestamp",
            "When the last cycle ended, whatever its outcome (0: none yet)",
            Unit::Seconds,
            last_cycle_end.clone(),
        );
        let last_successful_cycle = TimestampGauge::default();
        registry.register_with_unit(
            "last_successful_cycle_timestamp",
            "When the last cycle with outcome ok ended (0: none yet)",
            Unit::Seconds,
            last_successful_cycle.clone(),
        );
        let cycle_duration = Histogram::new(CYCLE_BUCKETS);
        registry.register_with_unit(
            "cycle_duration",
            "Wall time of one cycle (sync, reconcile, plan, renew)",
            Unit::Seconds,
            cycle_duration.clone(),
        );
        let login_ok = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "login_ok",
            "1 if the last login or call was accepted, 0 if the credentials were refused (absent before the first attempt)",
            login_ok.clone(),
        );
        let config_reload_ok = Gauge::default();
        config_reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 if the last reload of config and policies was taken, 0 if it was refused",
            config_reload_ok.clone(),
        );
        let config_reload_success = TimestampGauge::default();
        config_reload_success.set(created.timestamp() as f64);
        registry.register_with_unit(
            "config_last_reload_success_timestamp",
            "When config and policies were last loaded successfully",
            Unit::Seconds,
            config_reload_success.clone(),
        );
        let balance = Family::<Vec<(String, String)>, TimestampGauge>::default();
        registry.register(
            "account_balance",
            "The account's balance as the billing shows it (BILLmanager 5/6), by currency",
            balance.clone(),
        );
        Metrics {
            registry,
            balance,
            licenses,
            license_info,
            license_expiry,
            license_renewal,
            upcoming_cost,
            renewals,
            decisions,
            cycles,
            alerts_pending,
            alert_failures,
            leader,
            api_calls,
            api_call_duration,
            last_cycle_start,
            last_cycle_end,
            last_successful_cycle,
            cycle_duration,
            login_ok,
            config_reload_ok,
            config_reload_success,
            licenses_swap: RwLock::new(()),
            health: Mutex::new(HealthState {
                created,
                last_success: None,
                login_ok: None,
            }),
        }
    }

    /// One API call: `func` is the BILLmanager function (`software.period`), `result` is `ok`,
    /// `api_error` or an error class (`timeout`, `transport`, `http`, `malformed`, …);
    /// `elapsed` is the wall time of the HTTP exchange.
    pub fn observe_api_call(&self, func: &str, result: &str, elapsed: Duration) {
        self.api_calls
            .get_or_create(&ApiCallLabels {
                func: func.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.api_call_duration
            .get_or_create(&FunctionLabels {
                func: func.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A login attempt or any call's auth outcome: `true` = credentials accepted, `false` = an
    /// `auth` error.
    /// The account's balance as the billing showed it (`licrenew_account_balance{currency}`).
    pub fn set_balance(&self, currency: &str, amount: f64) {
        self.balance
            .get_or_create(&vec![("currency".to_owned(), currency.to_owned())])
            .set(amount);
    }

    /// A reload (SIGHUP) was taken (`ok`) or refused, at `at`.
    pub fn reload_finished(&self, ok: bool, at: DateTime<Utc>) {
        self.config_reload_ok.set(i64::from(ok));
        if ok {
            self.config_reload_success.set(at.timestamp() as f64);
        }
    }

    pub fn observe_login(&self, ok: bool) {
        self.login_ok.get_or_create(&Vec::new()).set(i64::from(ok));
        self.health_state().login_ok = Some(ok);
    }

    /// A paid renewal's outcome (ok, error, unknown, reconciled_ok, reconciled_failed).
    pub fn observe_renewal(&self, outcome: &str, product: &str) {
        self.renewals
            .get_or_create(&RenewalLabels {
                outcome: outcome.to_owned(),
                product: product.to_owned(),
            })
            .inc();
    }

    /// A decision not to pay, by reason (bounded to its stable part: what follows a `(` or a
    /// rule's name is left out, so a server's text cannot grow the series count).
    pub fn observe_decision(&self, reason: &str) {
        self.decisions
            .get_or_create(&ReasonLabels {
                reason: reason_label(reason),
            })
            .inc();
    }

    /// Undelivered alerts in the outbox.
    pub fn set_alerts_pending(&self, n: i64) {
        self.alerts_pending.set(n);
    }

    /// A failed alert delivery.
    pub fn alert_delivery_failed(&self) {
        self.alert_failures.inc();
    }

    /// 1 leading, 0 standing by (PostgreSQL leadership).
    pub fn set_leader(&self, leading: bool) {
        self.leader
            .get_or_create(&Vec::new())
            .set(i64::from(leading));
    }

    /// A cycle started.
    pub fn cycle_started(&self, at: DateTime<Utc>) {
        self.last_cycle_start.set(unix_seconds(at));
    }

    /// A cycle ended; `success` means its outcome was `ok`. A successful cycle listed licenses,
    /// so the credentials worked: it also counts as an accepted login.
    pub fn cycle_finished(&self, at: DateTime<Utc>, outcome: &str, duration: Duration) {
        let success = outcome == "ok";
        self.cycles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.last_cycle_end.set(unix_seconds(at));
        self.cycle_duration.observe(duration.as_secs_f64());
        if success {
            self.last_successful_cycle.set(unix_seconds(at));
            self.login_ok.get_or_create(&Vec::new()).set(1);
            let mut h = self.health_state();
            h.last_success = Some(at);
            h.login_ok = Some(true);
        }
    }

    /// Replaces the per-license series with the operator's view of every known license
    /// (call at start and after each cycle): deleted and gone licenses have no series, a
    /// license nothing will renew has no renewal timestamp.
    pub fn set_licenses(&self, views: &[LicenseView], today: NaiveDate) {
        let mut counts: std::collections::HashMap<LicenseCountLabels, i64> =
            std::collections::HashMap::new();
        let mut cost: std::collections::HashMap<CostLabels, f64> = std::collections::HashMap::new();
        let day_start = |d: NaiveDate| d.and_time(NaiveTime::MIN).and_utc().timestamp();
        let live: Vec<&LicenseView> = views
            .iter()
            .filter(|v| v.gone_since.is_none() && !v.status.starts_with(Status::Deleted.label()))
            .collect();
        for v in &live {
            *counts
                .entry(LicenseCountLabels {
                    product: v.product.clone(),
                    status: status_label(&v.status),
                })
                .or_default() += 1;
            if let (Some(on), Some(c)) = (v.renews_on, &v.cost) {
                for (window, days) in [("7d", 7), ("30d", 30)] {
                    if (on - today).num_days() <= days {
                        *cost
                            .entry(CostLabels {
                                currency: c.currency.clone(),
                                window: window.into(),
                            })
                            .or_default() += c.cents as f64 / 100.0;
                    }
                }
            }
        }
        let _swap = self
            .licenses_swap
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.licenses.clear();
        for (labels, n) in &counts {
            self.licenses.get_or_create(labels).set(*n);
        }
        self.license_info.clear();
        self.license_expiry.clear();
        self.license_renewal.clear();
        for v in &live {
            self.license_info
                .get_or_create(&InfoLabels {
                    elid: v.elid,
                    licname: v.licname.clone(),
                    product: v.product.clone(),
                    status: status_label(&v.status),
                    policy: v.policy.replace(' ', "_"),
                    autoprolong: if v.autoprolong { "on" } else { "off" }.into(),
                })
                .set(1);
            let elid = ElidLabels { elid: v.elid };
            // The license is valid through its whole expiry day (UTC).
            self.license_expiry
                .get_or_create(&elid)
                .set((day_start(v.expiry) + 86_399) as f64);
            if let Some(on) = v.renews_on {
                self.license_renewal
                    .get_or_create(&elid)
                    .set(day_start(on) as f64);
            }
        }
        self.upcoming_cost.clear();
        for (labels, amount) in &cost {
            self.upcoming_cost.get_or_create(labels).set(*amount);
        }
    }

    /// The OpenMetrics text of every series, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _swap = self
            .licenses_swap
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(event = "metrics", error = %e, "could not encode the metrics");
        }
        out
    }

    /// `Ok` while the last successful cycle is younger than 2 × `interval` (before the first
    /// one, counted from when this instance was created, as a grace period) and the last login
    /// was not refused; otherwise `Err` with the reasons.
    pub fn health(&self, now: DateTime<Utc>, interval: Duration) -> Result<(), String> {
        let h = self.health_state();
        let mut reasons = Vec::new();
        if h.login_ok == Some(false) {
            reasons.push("last login refused".to_owned());
        }
        let limit = interval.saturating_mul(2);
        // A clock that went backwards gives a negative age: treat it as fresh.
        let age = (now - h.last_success.unwrap_or(h.created))
            .to_std()
            .unwrap_or(Duration::ZERO);
        if age > limit {
            let since = if h.last_success.is_none() {
                " since start"
            } else {
                ""
            };
            reasons.push(format!(
                "no successful cycle{since} for {} (limit {})",
                short_duration(age),
                short_duration(limit)
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    fn health_state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // The state is a few plain values, each written in one statement: still valid after a
        // panic elsewhere.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unix_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// `3h 2m`, `10m`, `45s`, `2d 4h`: the two largest units, enough for a health message.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [
        (s / 86_400, "d"),
        (s / 3_600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let Some(first) = parts.iter().position(|(n, _)| *n > 0) else {
        return "0s".to_owned();
    };
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The interval between two ticks of a cron expression, for the health rule: the longest gap
/// over the coming weeks, so a weekday-only or irregular schedule does not look late over a
/// weekend or at a month's end. `None` if the expression does not parse or has fewer than two
/// ticks ahead.
pub fn cron_interval(cron: &str) -> Option<Duration> {
    cron_interval_from(cron, Utc::now())
}

fn cron_interval_from(cron: &str, from: DateTime<Utc>) -> Option<Duration> {
    let parsed = crate::config::parse_cron(cron).ok()?;
    // Not `Cron::iter_after`: croner 3.0.1's iterator steps a second past each tick before an
    // exclusive search, so it skips every other tick of a `* * * * * *` schedule. Whole
    // seconds, because croner carries a start's fraction of a second into every tick.
    let first = parsed
        .find_next_occurrence(&from.trunc_subsecs(0), false)
        .ok()?;
    let mut prev = first;
    let mut longest: Option<chrono::TimeDelta> = None;
    for _ in 0..CRON_MAX_TICKS {
        let Ok(tick) = parsed.find_next_occurrence(&prev, false) else {
            break;
        };
        let gap = tick - prev;
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        prev = tick;
        if prev - first >= CRON_HORIZON {
            break;
        }
    }
    longest?.to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0)
            .single()
            .expect("valid test time")
    }

    #[allow(clippy::too_many_arguments)]
    fn view(
        elid: i64,
        licname: &str,
        product: &str,
        status: &str,
        expiry: NaiveDate,
        policy: &'static str,
        renews_on: Option<NaiveDate>,
    ) -> LicenseView {
        LicenseView {
            elid,
            licname: licname.into(),
            ip: "192.0.2.1".into(),
            product_id: 1,
            product: product.into(),
            period_id: None,
            period: None,
            expiry,
            days_left: 0,
            status: status.into(),
            policy,
            autoprolong: false,
            renews_on,
            why_not: None,
            cost: renews_on.map(|_| crate::domain::Money {
                cents: 900,
                currency: "EUR".into(),
            }),
            lapsed_since: None,
            gone_since: None,
            last_outcome: None,
            last_reason: None,
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn line_of<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn license_series_carry_info_expiry_renewal_and_counts() {
        let today = date(2026, 11, 28);
        let views = [
            view(
                11,
                "web-1",
                "ISPmanager Lite",
                "active",
                date(2026, 12, 1),
                "renew",
                Some(date(2026, 11, 28)),
            ),
            view(
                12,
                "web-2",
                "ISPmanager Lite",
                "active",
                date(2026, 12, 5),
                "none",
                None,
            ),
            view(
                13,
                "dns-1",
                "DNSmanager",
                "suspended",
                date(2027, 1, 1),
                "no renew",
                None,
            ),
        ];
        let m = Metrics::new();

        m.set_licenses(&views, today);
        let text = m.render();

        for expected in [
            "licrenew_licenses{product=\"ISPmanager Lite\",status=\"active\"} 2\n",
            "licrenew_licenses{product=\"DNSmanager\",status=\"suspended\"} 1\n",
            // valid through 2026-12-01T23:59:59Z
            "licrenew_license_expiry_timestamp_seconds{elid=\"11\"} 1796169599.0\n",
            // renewed at the start of 2026-11-28 UTC
            "licrenew_license_renewal_timestamp_seconds{elid=\"11\"} 1795824000.0\n",
            "licrenew_license_info{elid=\"11\",licname=\"web-1\",product=\"ISPmanager Lite\",status=\"active\",policy=\"renew\",autoprolong=\"off\"} 1\n",
            "licrenew_license_info{elid=\"12\",licname=\"web-2\",product=\"ISPmanager Lite\",status=\"active\",policy=\"none\",autoprolong=\"off\"} 1\n",
            "licrenew_license_info{elid=\"13\",licname=\"dns-1\",product=\"DNSmanager\",status=\"suspended\",policy=\"no_renew\",autoprolong=\"off\"} 1\n",
            "licrenew_upcoming_renewals_cost{currency=\"EUR\",window=\"7d\"} 9.0\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains("licrenew_license_renewal_timestamp_seconds{elid=\"12\"}"),
            "{text}"
        );
        assert!(
            !text.contains("licrenew_license_renewal_timestamp_seconds{elid=\"13\"}"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_deleted_or_gone_license_loses_its_series() {
        let today = date(2026, 11, 28);
        let lite = |elid: i64, status: &str, day: u32| {
            view(
                elid,
                &format!("web-{elid}"),
                "ISPmanager Lite",
                status,
                date(2026, 12, day),
                "renew",
                None,
            )
        };
        let m = Metrics::new();
        m.set_licenses(
            &[
                lite(11, "active", 1),
                lite(12, "active", 5),
                lite(13, "ordered", 9),
            ],
            today,
        );
        let mut gone = lite(13, "ordered", 9);
        gone.gone_since = Some(at(1, 0));

        m.set_licenses(
            &[lite(11, "active", 1), lite(12, "deleted", 5), gone],
            today,
        );
        let text = m.render();

        assert!(text.contains("elid=\"11\""), "{text}");
        assert!(!text.contains("elid=\"12\""), "{text}");
        assert!(!text.contains("elid=\"13\""), "{text}");
        assert!(
            text.contains("licrenew_licenses{product=\"ISPmanager Lite\",status=\"active\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("status=\"ordered\""), "{text}");
    }

    #[test]
    fn unknown_statuses_get_a_bounded_label_and_reasons_lose_their_details() {
        let m = Metrics::new();

        m.set_licenses(
            &[view(
                1,
                "x",
                "999999",
                "9_weird",
                date(2026, 1, 1),
                "none",
                None,
            )],
            date(2026, 1, 1),
        );
        m.observe_decision("expiry changed since listing (2026-12-01 → 2027-01-01)");
        m.observe_decision("except #2: renew = false");
        let text = m.render();

        assert!(
            text.contains("licrenew_licenses{product=\"999999\",status=\"unknown\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("licrenew_decisions_total{reason=\"expiry changed since listing\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("licrenew_decisions_total{reason=\"renew = false\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn counters_and_histograms_show_what_was_observed() {
        let m = Metrics::new();

        m.observe_api_call("software.period", "ok", Duration::from_millis(120));
        m.observe_api_call("software.period", "ok", Duration::from_millis(80));
        m.observe_api_call("software", "timeout", Duration::from_secs(30));
        m.observe_renewal("ok", "ISPmanager Lite");
        m.observe_renewal("ok", "ISPmanager Lite");
        m.observe_renewal("unknown", "DNSmanager");
        let text = m.render();

        for expected in [
            "licrenew_api_calls_total{func=\"software.period\",result=\"ok\"} 2\n",
            "licrenew_api_calls_total{func=\"software\",result=\"timeout\"} 1\n",
            "licrenew_api_call_duration_seconds_count{func=\"software.period\"} 2\n",
            "licrenew_api_call_duration_seconds_sum{func=\"software.period\"} 0.2\n",
            "licrenew_api_call_duration_seconds_bucket{le=\"0.1\",func=\"software.period\"} 1\n",
            "licrenew_api_call_duration_seconds_bucket{le=\"60.0\",func=\"software\"} 1\n",
            "licrenew_renewals_total{outcome=\"ok\",product=\"ISPmanager Lite\"} 2\n",
            "licrenew_renewals_total{outcome=\"unknown\",product=\"DNSmanager\"} 1\n",
            "# TYPE licrenew_api_calls counter\n",
            "# UNIT licrenew_api_call_duration_seconds seconds\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn cycle_series_record_start_end_success_and_duration() {
        let m = Metrics::new();

        m.cycle_started(at(10, 0));
        m.cycle_finished(at(10, 1), "ok", Duration::from_secs(60));
        m.cycle_started(at(16, 0));
        m.cycle_finished(at(16, 2), "failed", Duration::from_secs(120));
        let text = m.render();

        let ts = |t: DateTime<Utc>| format!("{}.0\n", t.timestamp());
        assert!(
            text.contains(&format!(
                "licrenew_last_cycle_start_timestamp_seconds {}",
                ts(at(16, 0))
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "licrenew_last_cycle_end_timestamp_seconds {}",
                ts(at(16, 2))
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "licrenew_last_successful_cycle_timestamp_seconds {}",
                ts(at(10, 1))
            )),
            "{text}"
        );
        assert!(
            text.contains("licrenew_cycle_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains("licrenew_cycle_duration_seconds_sum 180.0\n"),
            "{text}"
        );
    }

    #[test]
    fn login_gauge_is_absent_until_the_first_attempt_then_follows_it() {
        let m = Metrics::new();
        assert!(line_of(&m.render(), "licrenew_login_ok ").is_none());

        m.observe_login(false);
        assert_eq!(
            line_of(&m.render(), "licrenew_login_ok "),
            Some("licrenew_login_ok 0")
        );

        m.observe_login(true);
        assert_eq!(
            line_of(&m.render(), "licrenew_login_ok "),
            Some("licrenew_login_ok 1")
        );
    }

    #[test]
    fn health_allows_a_grace_period_from_start_then_fails_without_a_successful_cycle() {
        let m = Metrics::created_at(at(0, 0));
        let hour = Duration::from_secs(3600);

        assert_eq!(m.health(at(1, 59), hour), Ok(()));
        assert_eq!(
            m.health(at(3, 2), hour),
            Err("no successful cycle since start for 3h 2m (limit 2h)".into())
        );
    }

    #[test]
    fn health_fails_two_intervals_after_the_last_success_and_recovers_on_the_next() {
        let m = Metrics::created_at(at(0, 0));
        let hour = Duration::from_secs(3600);
        m.cycle_finished(at(1, 0), "ok", Duration::from_secs(5));
        m.cycle_finished(at(2, 0), "failed", Duration::from_secs(5));

        assert_eq!(m.health(at(2, 59), hour), Ok(()));
        assert_eq!(
            m.health(at(4, 2), hour),
            Err("no successful cycle for 3h 2m (limit 2h)".into())
        );

        m.cycle_finished(at(4, 5), "ok", Duration::from_secs(5));
        assert_eq!(m.health(at(4, 6), hour), Ok(()));
    }

    #[test]
    fn health_fails_on_a_refused_login_and_recovers_after_a_success() {
        let m = Metrics::created_at(at(0, 0));
        let hour = Duration::from_secs(3600);

        m.observe_login(false);
        assert_eq!(m.health(at(0, 5), hour), Err("last login refused".into()));

        m.cycle_finished(at(0, 10), "ok", Duration::from_secs(5));
        assert_eq!(m.health(at(0, 11), hour), Ok(()));
        assert!(m.render().contains("licrenew_login_ok 1\n"));
    }

    #[test]
    fn health_reports_both_reasons_at_once() {
        let m = Metrics::created_at(at(0, 0));

        m.observe_login(false);

        assert_eq!(
            m.health(at(0, 30), Duration::from_secs(300)),
            Err("last login refused; no successful cycle since start for 30m (limit 10m)".into())
        );
    }

    #[test]
    fn a_clock_that_went_backwards_does_not_fail_health() {
        let m = Metrics::created_at(at(5, 0));

        assert_eq!(m.health(at(4, 0), Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn durations_are_shown_with_their_two_largest_units() {
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 2 * 60 + 5)),
            "3h 2m"
        );
        assert_eq!(short_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(
            short_duration(Duration::from_secs(2 * 86_400 + 4 * 3600 + 7)),
            "2d 4h"
        );
        assert_eq!(short_duration(Duration::from_secs(86_400 + 30)), "1d");
        assert_eq!(short_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn cron_interval_of_every_five_minutes_is_five_minutes() {
        assert_eq!(
            cron_interval("0 */5 * * * *"),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn cron_interval_takes_the_longest_gap_such_as_a_weekend() {
        // A Monday: weekdays at 09:00 leave a 3-day gap from Friday to Monday.
        let monday = at(12, 0);

        assert_eq!(
            cron_interval_from("0 0 9 * * 1-5", monday),
            Some(Duration::from_secs(3 * 86_400))
        );
        assert_eq!(
            cron_interval_from("0 17 */6 * * *", monday),
            Some(Duration::from_secs(6 * 3600))
        );
        // Days 1, 7, …, 25, 31: the gap after the 31st is a day, the others six.
        assert_eq!(
            cron_interval_from("0 0 0 */6 * *", monday),
            Some(Duration::from_secs(6 * 86_400))
        );
    }

    #[test]
    fn cron_interval_of_every_second_is_one_second_even_from_a_fractional_start() {
        let fractional = at(12, 0) + chrono::TimeDelta::milliseconds(915);

        assert_eq!(
            cron_interval_from("* * * * * *", fractional),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn cron_interval_of_a_bad_expression_is_none() {
        assert_eq!(cron_interval("every five minutes"), None);
    }
}
