//! What an operator looks at: every known license with its days left, policy and planned
//! renewal date, per-product counts, upcoming renewals with their cost, problems, recent
//! outcomes and the service's state. One model for `licrenew licenses`, `licrenew status` and
//! the status page.
//!
//! Owns the assembling of that model from the database, the settings and the policies (the
//! planner, run on the stored licenses, says when each would renew or why not). Must not call
//! the API, take the renewal lock or write anything.

use crate::config::Settings;
use crate::domain::{License, Money, Status};
use crate::policy::{ActionKind, Policies};
use crate::store::{JournalRow, Store, StoreError, StoredLicense};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One license as an operator sees it. The same JSON shape wherever it is printed: product
/// and period both as id and name.
#[derive(Clone, Debug, Serialize)]
pub struct LicenseView {
    pub elid: i64,
    pub licname: String,
    pub ip: String,
    pub product_id: i64,
    pub product: String,
    pub period_id: Option<i64>,
    pub period: Option<String>,
    pub expiry: NaiveDate,
    /// Negative when past due.
    pub days_left: i64,
    pub status: String,
    /// `renew`, `no renew` or `none`.
    pub policy: &'static str,
    pub autoprolong: bool,
    /// When the plan will renew it (today when it is due now); `None` with `why_not`.
    pub renews_on: Option<NaiveDate>,
    pub why_not: Option<String>,
    /// What its renewal costs, where known.
    pub cost: Option<Money>,
    pub lapsed_since: Option<DateTime<Utc>>,
    pub gone_since: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_reason: Option<String>,
}

/// Counts for one product.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProductCounts {
    pub product: String,
    pub licenses: u32,
    pub covered: u32,
    pub not_renewed: u32,
    pub no_policy: u32,
    pub autoprolong: u32,
}

/// A renewal the plan will make within a horizon.
#[derive(Clone, Debug, Serialize)]
pub struct Upcoming {
    pub date: NaiveDate,
    pub elid: i64,
    pub licname: String,
    pub product: String,
    pub period: Option<String>,
    pub cost: Option<Money>,
}

/// Something an operator must look at.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// `renewal_failed`, `renewal_unknown`, `lapsed`, `expiring_uncovered`.
    pub kind: &'static str,
    pub elid: i64,
    pub licname: String,
    pub detail: String,
}

/// The service as the database sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceView {
    /// A `licrenew run` process recorded itself and is alive on this host.
    pub running: bool,
    pub pid: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_cycle_at: Option<DateTime<Utc>>,
    pub last_cycle_outcome: Option<String>,
    pub last_cycle_error: Option<String>,
    pub next_cycle: Option<DateTime<Utc>>,
    /// `ok`, `refused` or `unknown` (no cycle yet).
    pub login: &'static str,
    pub api: String,
    pub database: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// PostgreSQL: the instance that leads now (`<host> pid <pid>`), from the server's locks.
    pub leader: Option<String>,
    /// PostgreSQL: the other licrenew processes connected (`<host> pid <pid>`), standbys
    /// and commands.
    pub others: Vec<String>,
    /// PostgreSQL: whether the process showing this leads (the status page of an instance).
    pub this_leads: Option<bool>,
    /// SQLite: the database this file was copied to (`db copy`); nothing renews with it.
    pub moved_to: Option<String>,
    pub alerts_pending: i64,
    pub alerts_failing: i64,
    pub balance: Option<Money>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub service: ServiceView,
    pub products: Vec<ProductCounts>,
    pub upcoming_7d: Vec<Upcoming>,
    pub upcoming_30d: Vec<Upcoming>,
    /// Totals per currency of the 7- and 30-day lists.
    pub total_7d: Vec<Money>,
    pub total_30d: Vec<Money>,
    pub problems: Vec<Problem>,
    pub recent: Vec<JournalRow>,
    pub licenses: Vec<LicenseView>,
}

/// The process of `licrenew run` recorded in the database (`meta` key `service`).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ServiceRecord {
    pub pid: i64,
    pub host: String,
    pub started_at: DateTime<Utc>,
}

/// Why an instance refuses a PostgreSQL database that served another billing account.
pub fn account_mismatch(stored: &str) -> String {
    format!(
        "this database holds the state of another billing account ({stored}): use one database per account; if this account's URL or user really changed, stop every instance and delete the row: DELETE FROM meta WHERE key = 'account'"
    )
}

/// This machine's name (for the service record and alerts).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` exists on this machine.
pub fn alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks for the process; it sends nothing.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Licenses read from the API (`licenses --live`) as an operator sees them: the same shape as
/// stored ones.
pub fn live_views(
    live: &[License],
    settings: &Settings,
    policies: &Policies,
    journal: &[crate::policy::JournalEntry],
    today: NaiveDate,
) -> Vec<LicenseView> {
    let stored: Vec<StoredLicense> = live
        .iter()
        .map(|l| StoredLicense {
            elid: l.elid,
            licname: l.licname.clone(),
            ip: l.ip.clone(),
            product: l.product,
            period: l.period,
            expiry: l.expiry,
            status: i64::from(l.status.code()),
            status_raw: match &l.status {
                Status::Unknown(raw) => raw.clone(),
                s => s.code().to_string(),
            },
            first_seen: DateTime::<Utc>::MIN_UTC,
            last_seen: DateTime::<Utc>::MIN_UTC,
            gone_since: None,
            last_outcome: None,
            last_reason: None,
            last_decided: None,
            autoprolong: l.autoprolong,
            lapsed_since: None,
            pricelist_label: l.pricelist_label.clone(),
            special: l.special.clone(),
            cost_cents: l.cost.as_ref().map(|c| c.cents),
            cost_currency: l.cost.as_ref().map(|c| c.currency.clone()),
        })
        .collect();
    license_views(&stored, settings, policies, journal, today)
}

/// Every stored license as an operator sees it, the planner's view included.
pub fn license_views(
    stored: &[StoredLicense],
    settings: &Settings,
    policies: &Policies,
    journal: &[crate::policy::JournalEntry],
    today: NaiveDate,
) -> Vec<LicenseView> {
    let catalog = &settings.catalog;
    let live: Vec<License> = stored
        .iter()
        .filter(|s| s.gone_since.is_none())
        .map(StoredLicense::to_license)
        .collect();
    let plan = crate::policy::evaluate(&live, policies, catalog, journal, today, u32::MAX);
    let decided: BTreeMap<i64, &crate::policy::Action> =
        plan.actions.iter().map(|a| (a.license.elid, a)).collect();
    stored
        .iter()
        .map(|s| {
            let l = s.to_license();
            let policy = match policies.for_product(l.product) {
                None => "none",
                Some(p) if p.rule_for(&l).renew => "renew",
                Some(_) => "no renew",
            };
            let (renews_on, why_not) = match decided.get(&l.elid) {
                _ if s.gone_since.is_some() => (None, Some("gone".to_owned())),
                Some(a) if a.kind == ActionKind::Renew => {
                    (Some(today.max(a.due.unwrap_or(today))), None)
                }
                Some(a) if a.reason.as_deref() == Some("not due") => (a.due, None),
                Some(a) => (None, a.reason.clone()),
                None => (None, None),
            };
            let period_id = decided
                .get(&l.elid)
                .and_then(|a| a.period)
                .or_else(|| {
                    policies
                        .for_product(l.product)
                        .and_then(|p| p.rule_for(&l).period)
                })
                .or(l.period);
            let cost = period_id
                .and_then(|p| catalog.period_of(l.product, p).and_then(|per| per.price))
                .or_else(|| l.cost.clone());
            LicenseView {
                elid: l.elid,
                licname: l.licname.clone(),
                ip: l.ip.clone(),
                product_id: l.product,
                product: catalog.product_name(l.product),
                period_id,
                period: period_id.map(|p| catalog.period_label(l.product, p)),
                expiry: l.expiry,
                days_left: (l.expiry - today).num_days(),
                status: match (&l.status, s.lapsed_since) {
                    (st, Some(_)) => format!("{st} (lapsed)"),
                    (st, None) => st.label().to_owned(),
                },
                policy,
                autoprolong: l.autoprolong,
                renews_on,
                why_not,
                cost,
                lapsed_since: s.lapsed_since,
                gone_since: s.gone_since,
                last_outcome: s.last_outcome.clone(),
                last_reason: s.last_reason.clone(),
            }
        })
        .collect()
}

fn totals(items: &[Upcoming]) -> Vec<Money> {
    let mut by: BTreeMap<String, i64> = BTreeMap::new();
    for u in items {
        if let Some(c) = &u.cost {
            *by.entry(c.currency.clone()).or_default() += c.cents;
        }
    }
    by.into_iter()
        .map(|(currency, cents)| Money { cents, currency })
        .collect()
}

/// Assembles the overview at `now`.
pub async fn build(
    store: &Store,
    settings: &Settings,
    policies: &Policies,
    now: DateTime<Utc>,
) -> Result<Overview, StoreError> {
    let today = now.date_naive();
    let stored = store.licenses().await?;
    let journal = store.journal_for_planning().await?;
    let licenses = license_views(&stored, settings, policies, &journal, today);

    let mut products: BTreeMap<String, ProductCounts> = BTreeMap::new();
    for l in licenses.iter().filter(|l| l.gone_since.is_none()) {
        let c = products.entry(l.product.clone()).or_default();
        c.product = l.product.clone();
        c.licenses += 1;
        match l.policy {
            "renew" => c.covered += 1,
            "no renew" => c.not_renewed += 1,
            _ => c.no_policy += 1,
        }
        if l.autoprolong {
            c.autoprolong += 1;
        }
    }
    let upcoming = |days: i64| -> Vec<Upcoming> {
        let mut v: Vec<Upcoming> = licenses
            .iter()
            .filter_map(|l| {
                let date = l.renews_on?;
                ((date - today).num_days() <= days).then(|| Upcoming {
                    date,
                    elid: l.elid,
                    licname: l.licname.clone(),
                    product: l.product.clone(),
                    period: l.period.clone(),
                    cost: l.cost.clone(),
                })
            })
            .collect();
        v.sort_by_key(|u| (u.date, u.elid));
        v
    };
    let upcoming_7d = upcoming(7);
    let upcoming_30d = upcoming(30);

    let mut problems = Vec::new();
    for r in store
        .unresolved_failures(now - chrono::Duration::days(30))
        .await?
    {
        let kind = match r.state.as_str() {
            "unknown" | "sending" => "renewal_unknown",
            _ => "renewal_failed",
        };
        problems.push(Problem {
            kind,
            elid: r.elid,
            licname: r.licname.clone(),
            detail: format!(
                "{} at {}: {}",
                r.state,
                r.created_at.format("%Y-%m-%d %H:%M"),
                r.error_msg
                    .clone()
                    .or(r.error_type.clone())
                    .unwrap_or_default()
            ),
        });
    }
    let alert_days = settings.alerts.alert_before.as_secs().div_ceil(86_400) as i64;
    for l in licenses.iter().filter(|l| l.gone_since.is_none()) {
        if l.lapsed_since.is_some() {
            problems.push(Problem {
                kind: "lapsed",
                elid: l.elid,
                licname: l.licname.clone(),
                detail: format!("expired on {} and not renewed", l.expiry),
            });
        } else if l.days_left <= alert_days
            && l.renews_on.is_none()
            && !l.status.starts_with(Status::Deleted.label())
            && l.policy != "no renew"
        {
            problems.push(Problem {
                kind: "expiring_uncovered",
                elid: l.elid,
                licname: l.licname.clone(),
                detail: format!(
                    "expires on {} ({} days) and nothing renews it: {}",
                    l.expiry,
                    l.days_left,
                    l.why_not.clone().unwrap_or_else(|| "no plan".into())
                ),
            });
        }
    }

    let record: Option<ServiceRecord> = store
        .meta("service")
        .await?
        .and_then(|(v, _)| serde_json::from_str(&v).ok());
    let mut running = record
        .as_ref()
        .is_some_and(|r| r.host == hostname() && alive(r.pid));
    // PostgreSQL: who leads is what the server's locks say now (any host).
    let (mut leader, mut others, mut this_leads) = (None, Vec::new(), None);
    if let Some(opts) = store.pg_options() {
        use sqlx::Connection;
        let me = crate::leader::application_name();
        let mut conn = crate::leader::connect(opts).await?;
        let found = crate::leader::instances(&mut conn, settings.lock_key("leader")).await;
        let _ = conn.close().await;
        for (app, leads) in found? {
            if app == me {
                this_leads = Some(leads);
                if !leads {
                    continue;
                }
            }
            if leads {
                leader = Some(crate::leader::describe(&app));
            } else if app != me {
                others.push(crate::leader::describe(&app));
            }
        }
        running = leader.is_some();
    }
    let last = store.last_cycle("renew").await?;
    let (pending, failing) = store.alert_counts().await?;
    let balance = store
        .meta("balance")
        .await?
        .and_then(|(v, _)| serde_json::from_str(&v).ok());
    let api = match settings.billmgr.api {
        Some(_) => settings.api_label(),
        None => store
            .meta("api")
            .await?
            .map(|(v, _)| format!("{v} (detected)"))
            .unwrap_or_else(|| settings.api_label()),
    };
    let service = ServiceView {
        running,
        pid: record.as_ref().filter(|_| running).map(|r| r.pid),
        backend: store.backend(),
        moved_to: store.meta("moved_to").await?.map(|(v, _)| v),
        leader,
        others,
        this_leads,
        started_at: record.as_ref().filter(|_| running).map(|r| r.started_at),
        last_cycle_at: last.as_ref().map(|l| l.1),
        last_cycle_outcome: last.as_ref().map(|l| l.2.clone()),
        last_cycle_error: last.as_ref().and_then(|l| l.3.clone()),
        next_cycle: crate::config::next_cycle(&settings.schedule.cron, now),
        login: match last.as_ref().map(|l| l.2.as_str()) {
            None => "unknown",
            Some("auth_failed") => "refused",
            Some(_) => "ok",
        },
        api,
        database: settings.database.to_string(),
        alerts_pending: pending,
        alerts_failing: failing,
        balance,
    };
    Ok(Overview {
        generated_at: now,
        service,
        products: products.into_values().collect(),
        total_7d: totals(&upcoming_7d),
        total_30d: totals(&upcoming_30d),
        upcoming_7d,
        upcoming_30d,
        problems,
        recent: store.history(None, 10).await?,
        licenses,
    })
}
