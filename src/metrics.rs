//! Prometheus metrics and the health rule; served over HTTP by [`crate::http`].
//!
//! Owns the `licrenew_…` series (one explicit prometheus-client registry per [`Metrics`], no
//! global recorder, so every test gets its own) and the health rule (a recent successful cycle
//! and an accepted login). Callers
//! report what happened through the `observe_*`/`cycle_*`/`set_licenses` methods. Must not
//! decide anything about renewals, touch the database or the API, or read the clock outside
//! [`Metrics::new`] and the HTTP handlers (everything else takes `now`/`at` as a parameter).

use crate::catalog::Catalog;
use crate::domain::Status;
use crate::store::StoredLicense;
use chrono::{DateTime, NaiveTime, SubsecRound, Utc};
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
struct ExpiryLabels {
    elid: i64,
    licname: String,
    product: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiCallLabels {
    function: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
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
    license_expiry: Family<ExpiryLabels, TimestampGauge>,
    renewals: Family<OutcomeLabels, Counter>,
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
        let license_expiry = Family::<ExpiryLabels, TimestampGauge>::default();
        registry.register_with_unit(
            "license_expiry_timestamp",
            "End of the last day a license is valid (23:59:59 UTC of its expiredate), as of the last sync",
            Unit::Seconds,
            license_expiry.clone(),
        );
        let renewals = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "renewals",
            "Renewal decisions and results by outcome (ok, error, unknown, skipped, reconciled_ok, reconciled_failed, dry_run)",
            renewals.clone(),
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
            license_expiry,
            renewals,
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
                function: func.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.api_call_duration
            .get_or_create(&FunctionLabels {
                function: func.to_owned(),
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

    /// One renewal event with its outcome (`Outcome::as_str`).
    pub fn observe_renewal(&self, outcome: &str) {
        self.renewals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A cycle started.
    pub fn cycle_started(&self, at: DateTime<Utc>) {
        self.last_cycle_start.set(unix_seconds(at));
    }

    /// A cycle ended; `success` means its outcome was `ok`. A successful cycle listed licenses,
    /// so the credentials worked: it also counts as an accepted login.
    pub fn cycle_finished(&self, at: DateTime<Utc>, success: bool, duration: Duration) {
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

    /// Replaces the per-license series with the database rows (call after each sync). Rows with
    /// `gone_since` set are left out, and series of licenses no longer in `rows` disappear.
    pub fn set_licenses(&self, rows: &[StoredLicense], catalog: &Catalog) {
        let mut counts: std::collections::HashMap<LicenseCountLabels, i64> =
            std::collections::HashMap::new();
        let mut expiries = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|r| r.gone_since.is_none()) {
            let product = catalog.product_name(row.product);
            let status = match Status::parse(&row.status_raw) {
                // A raw unknown value as a label would let the server grow the series count.
                Status::Unknown(_) => "unknown".to_owned(),
                s => s.label().to_owned(),
            };
            *counts
                .entry(LicenseCountLabels {
                    product: product.clone(),
                    status,
                })
                .or_default() += 1;
            // The license is valid through its whole expiry day (UTC).
            let end_of_day = row.expiry.and_time(NaiveTime::MIN).and_utc().timestamp() + 86_399;
            expiries.push((
                ExpiryLabels {
                    elid: row.elid,
                    licname: row.licname.clone(),
                    product,
                },
                end_of_day as f64,
            ));
        }
        let _swap = self
            .licenses_swap
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.licenses.clear();
        for (labels, n) in &counts {
            self.licenses.get_or_create(labels).set(*n);
        }
        self.license_expiry.clear();
        for (labels, at) in &expiries {
            self.license_expiry.get_or_create(labels).set(*at);
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
            tracing::warn!(error = %e, "could not encode the metrics");
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

    fn catalog() -> Catalog {
        Catalog::builtin().for_api(crate::config::Api::Billmgr4)
    }

    fn price_of(catalog: &Catalog, name: &str) -> i64 {
        catalog
            .products
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.price)
            .expect("product in the built-in catalog")
    }

    fn row(
        elid: i64,
        licname: &str,
        product: i64,
        status: &str,
        expiry: NaiveDate,
    ) -> StoredLicense {
        StoredLicense {
            elid,
            licname: licname.into(),
            ip: "192.0.2.1".into(),
            product,
            period: None,
            expiry,
            status: 2,
            status_raw: status.into(),
            first_seen: at(0, 0),
            last_seen: at(0, 0),
            gone_since: None,
            last_outcome: None,
            last_reason: None,
            last_decided: None,
            autoprolong: false,
            lapsed_since: None,
            pricelist_label: None,
            special: None,
            cost_cents: None,
            cost_currency: None,
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid test date")
    }

    fn line_of<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn license_gauges_count_by_product_and_status_and_carry_expiry() {
        let cat = catalog();
        let lite = price_of(&cat, "ISPmanager Lite");
        let other = cat
            .products
            .iter()
            .find(|p| p.price != lite)
            .expect("a second product")
            .clone();
        let rows = [
            row(11, "web-1", lite, "2", date(2026, 12, 1)),
            row(12, "web-2", lite, "2", date(2026, 12, 5)),
            row(13, "dns-1", other.price, "3_autosuspend", date(2027, 1, 1)),
        ];
        let m = Metrics::new();

        m.set_licenses(&rows, &cat);
        let text = m.render();

        assert!(
            text.contains("licrenew_licenses{product=\"ISPmanager Lite\",status=\"active\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "licrenew_licenses{{product=\"{}\",status=\"suspended\"}} 1\n",
                other.name
            )),
            "{text}"
        );
        // 2026-12-01T23:59:59Z
        assert!(
            text.contains("licrenew_license_expiry_timestamp_seconds{elid=\"11\",licname=\"web-1\",product=\"ISPmanager Lite\"} 1796169599.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_vanished_or_gone_license_loses_its_series() {
        let cat = catalog();
        let lite = price_of(&cat, "ISPmanager Lite");
        let m = Metrics::new();
        m.set_licenses(
            &[
                row(11, "web-1", lite, "2", date(2026, 12, 1)),
                row(12, "web-2", lite, "2", date(2026, 12, 5)),
                row(13, "web-3", lite, "1", date(2026, 12, 9)),
            ],
            &cat,
        );
        let mut gone = row(13, "web-3", lite, "1", date(2026, 12, 9));
        gone.gone_since = Some(at(1, 0));

        m.set_licenses(
            &[row(11, "web-1", lite, "2", date(2026, 12, 1)), gone],
            &cat,
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
    fn unknown_statuses_and_products_get_bounded_labels() {
        let m = Metrics::new();

        m.set_licenses(
            &[row(1, "x", 999_999, "9_weird", date(2026, 1, 1))],
            &catalog(),
        );

        assert!(
            m.render()
                .contains("licrenew_licenses{product=\"999999\",status=\"unknown\"} 1\n")
        );
    }

    #[test]
    fn counters_and_histograms_show_what_was_observed() {
        let m = Metrics::new();

        m.observe_api_call("software.period", "ok", Duration::from_millis(120));
        m.observe_api_call("software.period", "ok", Duration::from_millis(80));
        m.observe_api_call("software", "timeout", Duration::from_secs(30));
        m.observe_renewal("ok");
        m.observe_renewal("ok");
        m.observe_renewal("unknown");
        let text = m.render();

        for expected in [
            "licrenew_api_calls_total{function=\"software.period\",result=\"ok\"} 2\n",
            "licrenew_api_calls_total{function=\"software\",result=\"timeout\"} 1\n",
            "licrenew_api_call_duration_seconds_count{function=\"software.period\"} 2\n",
            "licrenew_api_call_duration_seconds_sum{function=\"software.period\"} 0.2\n",
            "licrenew_api_call_duration_seconds_bucket{le=\"0.1\",function=\"software.period\"} 1\n",
            "licrenew_api_call_duration_seconds_bucket{le=\"60.0\",function=\"software\"} 1\n",
            "licrenew_renewals_total{outcome=\"ok\"} 2\n",
            "licrenew_renewals_total{outcome=\"unknown\"} 1\n",
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
        m.cycle_finished(at(10, 1), true, Duration::from_secs(60));
        m.cycle_started(at(16, 0));
        m.cycle_finished(at(16, 2), false, Duration::from_secs(120));
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
        m.cycle_finished(at(1, 0), true, Duration::from_secs(5));
        m.cycle_finished(at(2, 0), false, Duration::from_secs(5));

        assert_eq!(m.health(at(2, 59), hour), Ok(()));
        assert_eq!(
            m.health(at(4, 2), hour),
            Err("no successful cycle for 3h 2m (limit 2h)".into())
        );

        m.cycle_finished(at(4, 5), true, Duration::from_secs(5));
        assert_eq!(m.health(at(4, 6), hour), Ok(()));
    }

    #[test]
    fn health_fails_on_a_refused_login_and_recovers_after_a_success() {
        let m = Metrics::created_at(at(0, 0));
        let hour = Duration::from_secs(3600);

        m.observe_login(false);
        assert_eq!(m.health(at(0, 5), hour), Err("last login refused".into()));

        m.cycle_finished(at(0, 10), true, Duration::from_secs(5));
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
