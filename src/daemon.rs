//! One renewal cycle ([`run_once`]) and the long-running service ([`run`]) that schedules it.
//!
//! Owns the cycle: sync the expiry window into the database, reconcile unknown outcomes, plan,
//! execute with bounded concurrency, record and log the cycle. And the service: the process
//! lock, the tokio-cron-scheduler job (which only asks for a cycle), one cycle at a time,
//! jitter, SIGHUP reload that keeps the old config when the new one is invalid, and SIGTERM
//! that lets the paid call in flight finish and be recorded. Must not overlap two cycles.

use crate::billmgr::Client;
use crate::config::Settings;
use crate::domain::License;
use crate::policy::{self, ActionKind, Policies};
use crate::renew::{Event, Executor, Fatal, Outcome};
use crate::stop::unless_stopped;
use crate::store::{CycleCounts, Store};
use chrono::{NaiveDate, Utc};
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// At most this many licenses that left the window are re-read one by one per cycle.
const GONE_CHECKS_PER_CYCLE: usize = 100;

/// Everything a cycle works with.
pub struct Ctx {
    pub settings: Settings,
    pub policies: Policies,
    pub client: Client,
    pub store: Store,
    /// Wakes the alert delivery task after a cycle raised alerts.
    pub alert_wake: Arc<tokio::sync::Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sync, reconcile, plan, renew.
    Renew,
    /// Sync and plan; no paid call and no journal change.
    DryRun,
    /// Sync only.
    Sync,
}

impl Mode {
    fn kind(&self) -> &'static str {
        match self {
            Mode::Renew => "renew",
            Mode::DryRun => "dry_run",
            Mode::Sync => "sync",
        }
    }
}

/// What one cycle did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CycleReport {
    pub cycle: i64,
    pub kind: &'static str,
    pub counts: CycleCounts,
    /// `ok`, `failed` (some renewal failed or is unknown), `auth_failed`, `api_failed`,
    /// `interrupted`.
    pub outcome: String,
    pub error: Option<String>,
    pub events: Vec<Event>,
    pub duration_ms: u64,
    /// List rows that looked like licenses but could not be read: never renewed, so the
    /// cycle fails and alerts rather than ignore them quietly.
    pub unreadable_rows: u32,
    /// Licenses this cycle found lapsed (past the lookback, not renewed).
    pub lapsed: Vec<LapsedLicense>,
    /// Costs, balance and spend cap.
    pub money: MoneyReport,
}

/// A license found lapsed: it fell out of the listed window and still expires before it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LapsedLicense {
    pub elid: i64,
    pub licname: String,
    pub product: String,
    pub expiry: NaiveDate,
    pub status: String,
}

impl CycleReport {
    /// Whether the command that ran it should exit non-zero.
    pub fn failed(&self) -> bool {
        self.outcome != "ok" && self.outcome != "interrupted"
            || self.counts.failed > 0
            || self.counts.unknown > 0
    }

    pub fn summary(&self) -> String {
        let c = &self.counts;
        if self.kind == "dry_run" {
            let would = self
                .events
                .iter()
                .filter(|e| e.outcome == Outcome::DryRun)
                .count();
            return format!(
                "cycle {} (dry run): {} listed, would renew {would}, {} skipped, nothing paid — {}{}",
                self.cycle,
                c.listed,
                c.skipped as usize - would.min(c.skipped as usize),
                self.outcome,
                self.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        format!(
            "cycle {} ({}): {} listed, {} renewed, {} failed, {} unknown, {} skipped, {} reconciled — {}{}",
            self.cycle,
            self.kind,
            c.listed,
            c.renewed,
            c.failed,
            c.unknown,
            c.skipped,
            c.reconciled,
            self.outcome,
            self.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
    }
}

/// How far ahead a sync must list, and why: `schedule.window`, widened to the longest
/// `before` of a policy that renews (plus a day, so a license due today is listed) and to
/// `alert_before`, so no license a policy should renew or an alert should name goes unlisted.
pub fn effective_window(settings: &Settings, policies: &Policies) -> (Duration, Option<String>) {
    let day = Duration::from_secs(86_400);
    let mut window = settings.schedule.window.min(MAX_WINDOW);
    let mut why = None;
    for p in policies.iter().filter(|p| p.renews_any()) {
        let need = p.longest_before().saturating_add(day).min(MAX_WINDOW);
        if need > window {
            window = need;
            why = Some(format!(
                "before = {} in {}",
                humantime::format_duration(p.longest_before()),
                p.file.display()
            ));
        }
    }
    let alert = settings
        .alerts
        .alert_before
        .saturating_add(day)
        .min(MAX_WINDOW);
    if alert > window {
        window = alert;
        why = Some(format!(
            "alerts.alert_before = {}",
            humantime::format_duration(settings.alerts.alert_before)
        ));
    }
    (window, why)
}

/// The farthest a sync looks ahead or back (ten years): a larger setting is taken as this, so
/// a date computed from it never overflows (an overflow would have emptied the window).
const MAX_WINDOW: Duration = Duration::from_secs(3650 * 86_400);

/// The expiry window of a sync: from `lookback` ago (past-due but not yet deleted licenses) to
/// the effective window ahead ([`effective_window`]).
pub fn window(
    settings: &Settings,
    policies: &Policies,
    today: NaiveDate,
) -> (NaiveDate, NaiveDate) {
    let days = |d: Duration| chrono::Days::new(d.min(MAX_WINDOW).as_secs().div_ceil(86_400));
    let (ahead, _) = effective_window(settings, policies);
    (
        today
            .checked_sub_days(days(settings.schedule.lookback))
            .unwrap_or(NaiveDate::MIN),
        today
            .checked_add_days(days(ahead))
            .unwrap_or(NaiveDate::MAX),
    )
}

/// Runs one cycle. Errors are only returned when the database itself fails; API failures end
/// the cycle and are reported in it.
pub async fn run_once(
    ctx: &Ctx,
    mode: Mode,
    stop: &watch::Receiver<bool>,
) -> Result<CycleReport, crate::store::StoreError> {
    let started = Instant::now();
    let cycle = ctx.store.begin_cycle(mode.kind(), Utc::now()).await?;
    if let Some(d) = ctx.client.dialect() {
        ctx.store.set_meta("api", d.name(), Utc::now()).await?;
    }
    if mode == Mode::Renew {
        ctx.metrics.cycle_started(Utc::now());
    }
    let mut report = CycleReport {
        cycle,
        kind: mode.kind(),
        counts: CycleCounts::default(),
        outcome: "ok".into(),
        error: None,
        events: Vec::new(),
        duration_ms: 0,
        unreadable_rows: 0,
        lapsed: Vec::new(),
        money: MoneyReport::default(),
    };
    let mut listed = Vec::new();
    let body = cycle_body(ctx, mode, stop, cycle, &mut report, &mut listed).await;
    // The last decision about each license (shown by `licrenew licenses`), all in one
    // transaction: one commit for the cycle rather than one per license. The journal, not
    // this, is what guards money; it was written before and after each paid call.
    let decisions: Vec<(i64, &str, Option<&str>)> = report
        .events
        .iter()
        .map(|e| (e.elid, e.outcome.as_str(), e.reason.as_deref()))
        .collect();
    let decided = ctx.store.set_decisions(&decisions, Utc::now()).await;
    drop(decisions);
    let body = match (body, decided) {
        (Ok(()), Err(e)) => Err(Fatal::Store(e)),
        (b, _) => b,
    };
    match body {
        Ok(()) => {}
        Err(Fatal::Auth(e)) => {
            report.outcome = "auth_failed".into();
            report.error = Some(e.to_string());
        }
        Err(Fatal::Store(e)) => {
            // Record what we can, then surface the database failure.
            report.outcome = "failed".into();
            report.error = Some(e.to_string());
            let _ = ctx
                .store
                .end_cycle(
                    cycle,
                    &report.counts,
                    &report.outcome,
                    report.error.as_deref(),
                    Utc::now(),
                )
                .await;
            return Err(e);
        }
    }
    if report.outcome == "ok" && *stop.borrow() {
        report.outcome = "interrupted".into();
    }
    if report.outcome == "ok" && (report.counts.failed > 0 || report.counts.unknown > 0) {
        report.outcome = "failed".into();
    }
    if report.outcome == "ok" && report.unreadable_rows > 0 {
        report.outcome = "failed".into();
        report.error = Some(format!(
            "{} license row(s) could not be read and are not renewed (see the sync warnings)",
            report.unreadable_rows
        ));
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    if mode == Mode::Renew {
        ctx.metrics
            .cycle_finished(Utc::now(), &report.outcome, started.elapsed());
    }
    ctx.store
        .end_cycle(
            cycle,
            &report.counts,
            &report.outcome,
            report.error.as_deref(),
            Utc::now(),
        )
        .await?;
    let c = &report.counts;
    let level_ok = report.outcome == "ok" || report.outcome == "interrupted";
    macro_rules! cycle_event {
        ($lvl:expr) => {
            tracing::event!($lvl, event = "cycle", cycle, kind = report.kind, listed = c.listed, renewed = c.renewed,
                failed = c.failed, unknown = c.unknown, skipped = c.skipped, reconciled = c.reconciled,
                outcome = %report.outcome, error = report.error.as_deref(), duration_ms = report.duration_ms, "cycle finished")
        };
    }
    if level_ok {
        cycle_event!(tracing::Level::INFO);
    } else {
        cycle_event!(tracing::Level::WARN);
    }
    // Decisions not to pay are logged at DEBUG one by one; this one line sums them up.
    let mut reasons: std::collections::BTreeMap<&str, u32> = Default::default();
    for e in report
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Skipped | Outcome::DryRun))
    {
        *reasons
            .entry(e.reason.as_deref().unwrap_or(e.outcome.as_str()))
            .or_default() += 1;
    }
    if !reasons.is_empty() {
        let summary = reasons
            .iter()
            .map(|(r, n)| format!("{r}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(event = "decisions", cycle, skipped = reasons.values().sum::<u32>(), reasons = %summary, "decisions not to pay, by reason");
    }
    if mode == Mode::Renew {
        let open = ctx.store.open_problems().await?;
        let mut stored = std::collections::HashMap::new();
        for elid in open
            .keys()
            .filter_map(|s| s.strip_prefix("license:")?.parse::<i64>().ok())
        {
            if let Some(l) = ctx.store.license(elid).await? {
                stored.insert(elid, l);
            }
        }
        let mut alerts = crate::alerts::raise(&crate::alerts::CycleFacts {
            report: &report,
            listed: &listed,
            policies: &ctx.policies,
            catalog: &ctx.settings.catalog,
            today: Utc::now().date_naive(),
            alert_before: ctx.settings.alerts.alert_before,
            open: &open,
            stored: &stored,
        });
        alerts.push(crate::alerts::cycle_summary(&report));
        if crate::alerts::queue(&ctx.store, &ctx.settings.alerts, alerts, Utc::now()).await? > 0 {
            ctx.alert_wake.notify_one();
        }
    }
    // After the alerts: a failure here must not lose them, nor stop the service.
    if ctx.settings.metrics_listen.is_some()
        && mode == Mode::Renew
        && let Err(e) = refresh_metrics(ctx).await
    {
        tracing::warn!(event = "metrics", error = %e, "could not refresh the per-license metrics");
    }
    crate::systemd::alive();
    Ok(report)
}

async fn cycle_body(
    ctx: &Ctx,
    mode: Mode,
    stop: &watch::Receiver<bool>,
    cycle: i64,
    report: &mut CycleReport,
    listed_out: &mut Vec<License>,
) -> Result<(), Fatal> {
    let s = &ctx.settings;
    let today = Utc::now().date_naive();
    let listed: &[License] = match sync(ctx, today, stop, mode != Mode::Sync).await {
        Ok(synced) => {
            report.counts.listed = synced.listed as u32;
            report.unreadable_rows = synced.unreadable;
            report.lapsed = synced
                .lapsed
                .iter()
                .map(|l| LapsedLicense {
                    elid: l.elid,
                    licname: l.licname.clone(),
                    product: s.catalog.product_name(l.product),
                    expiry: l.expiry,
                    status: l.status.label().to_owned(),
                })
                .collect();
            *listed_out = synced.licenses;
            listed_out
        }
        Err(SyncError::Fatal(f)) => return Err(f),
        Err(SyncError::Api(e)) => {
            report.outcome = "api_failed".into();
            report.error = Some(e.to_string());
            return Ok(());
        }
        Err(SyncError::Stopped) => {
            report.outcome = "interrupted".into();
            return Ok(());
        }
    };
    if mode == Mode::Sync {
        return Ok(());
    }
    let exec = Executor {
        client: &ctx.client,
        store: &ctx.store,
        catalog: &s.catalog,
        settle: s.renewal.settle,
        max_per_cycle: s.renewal.max_per_cycle,
        cycle: Some(cycle),
        source: "policy",
        stop: Some(stop.clone()),
    };
    // Licenses whose open renewal is still unknown after this cycle's re-read: reported once
    // (here), not a second time by the planner, which sees the same open row.
    let mut still_open = std::collections::HashSet::new();
    if mode == Mode::Renew {
        for row in ctx.store.open_renewals().await? {
            let ev = exec.reconcile(&row).await?;
            if ev.outcome == Outcome::Unknown {
                still_open.insert(ev.elid);
            }
            record(ctx, report, ev, cycle).await?;
        }
    }
    let journal = ctx.store.journal_for_planning().await?;
    let mut plan = policy::evaluate(
        listed,
        &ctx.policies,
        &s.catalog,
        &journal,
        today,
        s.renewal.max_per_cycle,
    );
    // What each planned renewal costs, and whether the balance and the spend cap allow it.
    let previews = price(ctx, &mut plan, mode, stop).await?;
    report.money = gate(ctx, &mut plan, mode).await?;
    for a in &plan.actions {
        let outcome = match (a.kind, mode) {
            (ActionKind::Renew, Mode::DryRun) => Outcome::DryRun,
            (ActionKind::Renew, _) => continue,
            (ActionKind::Skip, _) => Outcome::Skipped,
            (ActionKind::Unknown, _) if still_open.contains(&a.license.elid) => continue,
            (ActionKind::Unknown, _) => Outcome::Unknown,
        };
        let mut ev = Event::new(&s.catalog, &a.license, a.period, outcome);
        ev.reason = a.reason.clone();
        if a.period.is_some()
            && a.reason
                .as_deref()
                .is_none_or(|r| r == "balance" || r.starts_with("spend cap"))
        {
            ev.cost = a.cost.clone();
        }
        ev.new_expiry = previews.get(&a.license.elid).copied().flatten();
        ev.policy_file = a.policy_file.as_ref().map(|p| p.display().to_string());
        record(ctx, report, ev, cycle).await?;
    }
    if mode == Mode::DryRun {
        return Ok(());
    }
    let halt = AtomicBool::new(false);
    let mut results = futures_util::stream::iter(plan.renewals())
        .map(|a| {
            let exec = &exec;
            let halt = &halt;
            async move {
                if *stop.borrow() || halt.load(Ordering::SeqCst) {
                    return None;
                }
                let r = exec.renew(a).await;
                if r.is_err() {
                    halt.store(true, Ordering::SeqCst);
                }
                Some(r)
            }
        })
        .buffer_unordered(s.renewal.concurrency.max(1) as usize);
    // Each outcome is logged (and the watchdog fed) as soon as it is known, not at the end of
    // the batch: a long batch must neither starve the watchdog nor hold back the events.
    let mut fatal = None;
    while let Some(r) = results.next().await {
        match r {
            None => {}
            Some(Ok(ev)) => record(ctx, report, ev, cycle).await?,
            Some(Err(f)) => fatal = fatal.or(Some(f)),
        }
    }
    match fatal {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Fills in what each planned renewal costs: the catalog's price of the period, else the
/// license's own cost when it renews for the period it runs on, else (5/6) the free preview,
/// which a dry run asks for anyway (for the new expiry, returned by elid).
async fn price(
    ctx: &Ctx,
    plan: &mut policy::Plan,
    mode: Mode,
    stop: &watch::Receiver<bool>,
) -> Result<std::collections::HashMap<i64, Option<NaiveDate>>, Fatal> {
    let mut previews = std::collections::HashMap::new();
    for a in plan
        .actions
        .iter_mut()
        .filter(|a| a.kind == ActionKind::Renew)
    {
        let Some(period) = a.period else { continue };
        a.cost = ctx
            .settings
            .catalog
            .period_of(a.license.product, period)
            .and_then(|p| p.price)
            .or_else(|| {
                (a.license.period == Some(period))
                    .then(|| a.license.cost.clone())
                    .flatten()
            });
        if a.cost.is_some() && mode != Mode::DryRun {
            continue;
        }
        crate::systemd::alive();
        let Some(answer) =
            unless_stopped(Some(stop), ctx.client.preview_renew(a.license.elid, period)).await
        else {
            break;
        };
        match answer {
            Ok(Some(p)) => {
                a.cost = a.cost.take().or(p.cost);
                previews.insert(a.license.elid, p.new_expiry);
            }
            Ok(None) => {}
            Err(e) if e.is_auth() => return Err(Fatal::Auth(e)),
            Err(e) => {
                tracing::warn!(event = "preview", elid = a.license.elid, error = %e, "renewal preview failed")
            }
        }
    }
    Ok(previews)
}

/// What the balance and the spend cap did to a cycle's plan.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MoneyReport {
    /// The account's balance before the cycle paid (5/6 `whoami`).
    pub balance: Option<crate::domain::Money>,
    /// What the planned renewals cost, per currency (those of known cost).
    pub planned: Vec<crate::domain::Money>,
    /// Renewals skipped because the balance (plus `credit_limit`) did not cover them.
    pub skipped_for_balance: u32,
    /// How much more than the balance (plus credit) the planned renewals cost.
    pub shortfall: Option<crate::domain::Money>,
    /// Renewals skipped by `max_spend_per_day`.
    pub skipped_for_spend_cap: u32,
    /// Spent in the last 24 hours (journal) before this cycle, in the cap's currency.
    pub spent_last_day: Option<crate::domain::Money>,
}

/// Pays in order of expiry while the money lasts: a renewal the balance (plus
/// `[renewal] credit_limit`) does not cover is skipped with reason `balance`, one that would
/// pass `max_spend_per_day` (counted from the journal over 24 hours, unknown outcomes
/// included) with reason `spend cap`. The alerts come from the returned report.
async fn gate(ctx: &Ctx, plan: &mut policy::Plan, mode: Mode) -> Result<MoneyReport, Fatal> {
    use crate::domain::Money;
    let r = &ctx.settings.renewal;
    let mut report = MoneyReport::default();
    let has_renewals = plan.actions.iter().any(|a| a.kind == ActionKind::Renew);
    if !has_renewals {
        return Ok(report);
    }
    if mode != Mode::Sync {
        match ctx.client.balance().await {
            Ok(b) => {
                if let Some(b) = &b {
                    ctx.metrics
                        .set_balance(&b.amount.currency, b.amount.cents as f64 / 100.0);
                    let _ = ctx
                        .store
                        .set_meta(
                            "balance",
                            &serde_json::to_string(&b.amount).unwrap_or_default(),
                            Utc::now(),
                        )
                        .await;
                }
                report.balance = b.map(|b| b.amount);
            }
            Err(e) if e.is_auth() => return Err(Fatal::Auth(e)),
            Err(e) => tracing::warn!(event = "balance", error = %e, "could not read the balance"),
        }
    }
    let day_ago = Utc::now() - chrono::Duration::hours(24);
    let spent = ctx.store.spent_since(day_ago).await?;
    let mut planned: std::collections::BTreeMap<String, i64> = Default::default();
    for a in plan.actions.iter().filter(|a| a.kind == ActionKind::Renew) {
        if let Some(c) = &a.cost {
            *planned.entry(c.currency.clone()).or_default() += c.cents;
        }
    }
    report.planned = planned
        .iter()
        .map(|(currency, cents)| Money {
            cents: *cents,
            currency: currency.clone(),
        })
        .collect();
    let mut left = report
        .balance
        .as_ref()
        .map(|b| (b.currency.clone(), b.cents + r.credit_limit_cents));
    // The cap is in the account's currency: the balance's, else that of the first cost.
    let cap_currency = report
        .balance
        .as_ref()
        .map(|b| b.currency.clone())
        .or_else(|| planned.keys().next().cloned());
    let mut cap_left = r.max_spend_per_day_cents.map(|cap| {
        let used = spent
            .iter()
            .filter(|(c, _)| Some(c) == cap_currency.as_ref())
            .map(|(_, v)| *v)
            .sum::<i64>();
        report.spent_last_day = cap_currency.clone().map(|currency| Money {
            cents: used,
            currency,
        });
        cap - used
    });
    // Renewals come first in the plan, earliest expiry first.
    for a in plan
        .actions
        .iter_mut()
        .filter(|a| a.kind == ActionKind::Renew)
    {
        let cost = a.cost.clone();
        if let (Some(c), Some((currency, l))) = (&cost, left.as_mut())
            && &c.currency == currency
        {
            if c.cents > *l {
                a.kind = ActionKind::Skip;
                a.reason = Some("balance".into());
                report.skipped_for_balance += 1;
                continue;
            }
            *l -= c.cents;
        }
        if let Some(cl) = cap_left.as_mut() {
            match &cost {
                Some(c) if Some(&c.currency) == cap_currency.as_ref() && c.cents <= *cl => {
                    *cl -= c.cents;
                }
                Some(_) => {
                    a.kind = ActionKind::Skip;
                    a.reason = Some("spend cap".into());
                    report.skipped_for_spend_cap += 1;
                }
                None => {
                    a.kind = ActionKind::Skip;
                    a.reason = Some(
                        "spend cap (cost unknown: set the period's price in the catalog)".into(),
                    );
                    report.skipped_for_spend_cap += 1;
                }
            }
        }
    }
    if let Some(b) = &report.balance
        && let Some(need) = planned.get(&b.currency)
    {
        let short = need - (b.cents + r.credit_limit_cents);
        if short > 0 {
            report.shortfall = Some(Money {
                cents: short,
                currency: b.currency.clone(),
            });
        }
    }
    Ok(report)
}

/// Refreshes the per-license series (and the outbox gauge) from the database: the operator's
/// view of every license, with the date the plan renews it.
pub async fn refresh_metrics(ctx: &Ctx) -> Result<(), crate::store::StoreError> {
    let today = Utc::now().date_naive();
    let stored = ctx.store.licenses().await?;
    let journal = ctx.store.journal_for_planning().await?;
    let views =
        crate::overview::license_views(&stored, &ctx.settings, &ctx.policies, &journal, today);
    ctx.metrics.set_licenses(&views, today);
    let (pending, _) = ctx.store.alert_counts().await?;
    ctx.metrics.set_alerts_pending(pending);
    Ok(())
}

/// Logs an event and counts it; [`run_once`] remembers it on the license row at the end.
async fn record(ctx: &Ctx, report: &mut CycleReport, ev: Event, cycle: i64) -> Result<(), Fatal> {
    crate::systemd::alive();
    ev.emit(Some(cycle));
    let planning = ev
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("settling"));
    match ev.outcome {
        Outcome::Skipped | Outcome::DryRun => ctx
            .metrics
            .observe_decision(ev.reason.as_deref().unwrap_or(ev.outcome.as_str())),
        Outcome::Unknown if planning => ctx.metrics.observe_decision("settling"),
        o => ctx.metrics.observe_renewal(o.as_str(), &ev.product),
    }
    let c = &mut report.counts;
    match ev.outcome {
        Outcome::Ok => c.renewed += 1,
        Outcome::Error => c.failed += 1,
        Outcome::Unknown => c.unknown += 1,
        Outcome::Skipped | Outcome::DryRun => c.skipped += 1,
        Outcome::ReconciledOk | Outcome::ReconciledFailed => c.reconciled += 1,
    }
    report.events.push(ev);
    Ok(())
}

enum SyncError {
    Fatal(Fatal),
    Api(crate::billmgr::Error),
    /// A stop was asked for during a read: abandoned.
    Stopped,
}

impl From<crate::store::StoreError> for SyncError {
    fn from(e: crate::store::StoreError) -> Self {
        SyncError::Fatal(Fatal::Store(e))
    }
}

/// Rows a sync hands to its writer at a time while the list still downloads, and the most
/// it writes in one transaction (one commit, one fsync, for many chunks).
const WRITE_CHUNK: usize = 1024;
const ROWS_PER_TX: usize = 16_384;
/// The longest a sync keeps a write transaction open waiting for the list's next rows.
const TX_OPEN_FOR: Duration = Duration::from_millis(200);

/// A listing recorded as it streams in: each row compared with the stored one as it arrives,
/// new and changed rows handed in chunks to a writer that runs beside the download (short
/// transactions, never across a paid call), and the licenses kept only for a cycle that
/// plans. A writer four chunks behind makes the download wait.
struct Recording {
    recorder: crate::store::ListingRecorder,
    kept: Option<Vec<License>>,
    /// The hash of the last kept copy of each license.
    kept_hashes: std::collections::HashMap<i64, i64>,
    to_writer: Option<tokio::sync::mpsc::Sender<Vec<crate::store::ListedRow>>>,
}

impl crate::billmgr::LicenseSink for Recording {
    fn license(&mut self, license: License) {
        match &mut self.kept {
            Some(kept) => {
                let hash = self.recorder.add(&license);
                // Listed again the same (a read retried after a timeout hands its rows
                // again): kept once. Listed again differently: both kept, and the planner
                // refuses to choose between them ("duplicate elid").
                if self.kept_hashes.insert(license.elid, hash) != Some(hash) {
                    kept.push(license);
                }
            }
            None => {
                self.recorder.add_owned(license);
            }
        }
    }

    fn pace(&mut self) -> Option<futures_util::future::LocalBoxFuture<'_, ()>> {
        if self.recorder.pending() < WRITE_CHUNK {
            return None;
        }
        let to_writer = self.to_writer.clone()?;
        let rows = self.recorder.take_pending();
        // A writer that failed has gone; the sync ends on its error (see `sync`).
        Some(Box::pin(async move {
            let _ = to_writer.send(rows).await;
        }))
    }
}

/// Lists the window, records it as it streams in, and re-reads licenses that left it.
/// `keep`: keep the listed licenses for planning (a sync-only cycle does not).
async fn sync(
    ctx: &Ctx,
    today: NaiveDate,
    stop: &watch::Receiver<bool>,
    keep: bool,
) -> Result<Synced, SyncError> {
    let (from, to) = window(&ctx.settings, &ctx.policies, today);
    let stop = Some(stop);
    let now = Utc::now();
    let (to_writer, mut rows) = tokio::sync::mpsc::channel::<Vec<crate::store::ListedRow>>(4);
    let mut rec = Recording {
        recorder: ctx.store.listing_recorder().await?,
        kept: keep.then(Vec::new),
        kept_hashes: std::collections::HashMap::new(),
        to_writer: Some(to_writer),
    };
    let writer = async move {
        ctx.store
            .write_listed_stream(&mut rows, now, ROWS_PER_TX, TX_OPEN_FOR)
            .await
    };
    let listed = {
        let mut lister = std::pin::pin!(async {
            let listed =
                unless_stopped(stop, ctx.client.list_into(Some((from, to)), &mut rec)).await;
            // What is queued is written; then the writer ends.
            rec.to_writer = None;
            listed
        });
        let mut writer = std::pin::pin!(writer);
        tokio::select! {
            biased;
            listed = &mut lister => {
                writer.await?;
                listed
            }
            // The writer ends first only when it failed: `?` abandons the list. (It cannot
            // end well while the list still holds its sender.)
            written = &mut writer => {
                written?;
                lister.await
            }
        }
    };
    let mut listing = match listed.ok_or(SyncError::Stopped)? {
        Ok(l) => l,
        Err(e) if e.is_auth() => return Err(SyncError::Fatal(Fatal::Auth(e))),
        Err(e) => return Err(SyncError::Api(e)),
    };
    if !listing.unresolved.is_empty() || listing.total.is_some() {
        let known: std::collections::HashMap<i64, crate::store::StoredLicense> = ctx
            .store
            .licenses()
            .await?
            .into_iter()
            .map(|l| (l.elid, l))
            .collect();
        if let Some(total) = listing.total {
            let active = known
                .values()
                .filter(|l| l.gone_since.is_none() && l.status == 2)
                .count();
            if total < active {
                tracing::warn!(
                    event = "sync",
                    listed_total = total,
                    known_active = active,
                    "the server lists fewer licenses than the database knows active: a filter saved in the panel, or licenses moved away"
                );
            }
        }
        let unresolved = std::mem::take(&mut listing.unresolved);
        if !unresolved.is_empty() {
            let r = match crate::resolve::resolve(
                stop,
                &ctx.client,
                &ctx.settings.catalog,
                &known,
                unresolved,
            )
            .await
            {
                Ok(r) => r,
                Err(e) if e.is_auth() => return Err(SyncError::Fatal(Fatal::Auth(e))),
                Err(e) => return Err(SyncError::Api(e)),
            };
            if r.views > 0 {
                tracing::info!(
                    event = "sync",
                    forms_read = r.views,
                    "read license forms for tariffs the list names without an id"
                );
            }
            for bad in &r.bad {
                tracing::warn!(event = "bad_row", row = %bad, "skipped a license row that does not parse");
            }
            for l in r.licenses {
                crate::billmgr::LicenseSink::license(&mut rec, l);
            }
            listing.bad_rows.extend(r.bad);
        }
    }
    for rows in rec.recorder.take_pending().chunks(ROWS_PER_TX) {
        ctx.store.write_listed(rows, now).await?;
    }
    let Recording { recorder, kept, .. } = rec;
    let mut kept = kept.unwrap_or_default();
    let stats = recorder.finish(to);
    let mut listed_count = (stats.inserted + stats.updated + stats.unchanged) as usize;
    let missing = &stats.left;
    let mut gone = 0;
    let mut lapsed = Vec::new();
    for &elid in missing.iter().take(GONE_CHECKS_PER_CYCLE) {
        crate::systemd::alive();
        let read = unless_stopped(stop, ctx.client.view(elid))
            .await
            .ok_or(SyncError::Stopped)?;
        match read {
            Ok(fresh) => {
                ctx.store.update_license(&fresh, now).await?;
                if fresh.status == crate::domain::Status::Deleted {
                    ctx.store.mark_gone(elid, now).await?;
                    gone += 1;
                    tracing::info!(event = "left_window", elid, licname = %fresh.licname, class = "deleted", "license deleted");
                } else if fresh.expiry > to {
                    // By licrenew (a renewal reconciled from a re-read) or by someone else:
                    // either way it now expires beyond the window.
                    tracing::info!(event = "left_window", elid, licname = %fresh.licname, class = "renewed",
                        expiry = %fresh.expiry, "license renewed: it now expires beyond the window");
                } else if fresh.expiry >= from {
                    // Still inside the window although the list left it out: plan it anyway, a
                    // license the list forgot must not lapse.
                    tracing::warn!(
                        event = "left_window",
                        elid,
                        "license in the window missing from the list; planned from a re-read"
                    );
                    listed_count += 1;
                    if keep {
                        kept.push(fresh);
                    }
                } else {
                    // Past the lookback and not renewed: lapsed. Said once, then kept visible.
                    if ctx.store.mark_lapsed(elid, now).await? {
                        tracing::warn!(event = "left_window", elid, licname = %fresh.licname, class = "lapsed",
                            expiry = %fresh.expiry, status = %fresh.status, "license lapsed: past due beyond the lookback and not renewed");
                        lapsed.push(fresh);
                    }
                }
            }
            Err(e) if e.is_auth() => return Err(SyncError::Fatal(Fatal::Auth(e))),
            Err(e) if e.is_missed() => {
                ctx.store.mark_gone(elid, now).await?;
                gone += 1;
            }
            Err(e) => {
                tracing::warn!(event = "left_window", elid, error = %e, "could not re-read a license that left the window")
            }
        }
    }
    tracing::info!(
        event = "sync",
        from = %from,
        to = %to,
        listed = listed_count,
        inserted = stats.inserted,
        updated = stats.updated,
        unchanged = stats.unchanged,
        bad_rows = listing.bad_rows.len(),
        left_window = missing.len(),
        gone,
        lapsed = lapsed.len(),
        pending = listing.pending.len(),
        "licenses synced"
    );
    Ok(Synced {
        listed: listed_count,
        licenses: kept,
        unreadable: listing.bad_rows.len() as u32,
        lapsed,
    })
}

/// What a sync hands to the rest of the cycle.
struct Synced {
    /// How many the list showed inside the window.
    listed: usize,
    /// Those licenses, when asked to keep them.
    licenses: Vec<License>,
    unreadable: u32,
    /// Licenses found lapsed in this sync (each once).
    lapsed: Vec<License>,
}

/// Opens what a command that renews needs: the database and the client. The renewal lock is
/// not taken here: only while a cycle or a paid command runs ([`Ctx::lock`]).
pub async fn open(settings: Settings, policies: Policies) -> anyhow::Result<Ctx> {
    let client = Client::new(&settings.billmgr)?;
    open_with(settings, policies, client).await
}

/// [`open`] with a client already made (one that detected the API generation, say).
pub async fn open_with(
    settings: Settings,
    policies: Policies,
    client: Client,
) -> anyhow::Result<Ctx> {
    let store = Store::connect(&settings.database).await?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let client = client.with_metrics(metrics.clone());
    Ok(Ctx {
        settings,
        policies,
        client,
        store,
        alert_wake: Arc::new(tokio::sync::Notify::new()),
        metrics,
    })
}

impl Ctx {
    /// One delivery pass over the outbox for a one-shot command. On PostgreSQL only when no
    /// service leads: the leader delivers the shared outbox (one sender, no duplicates).
    pub async fn deliver_once(&self) -> Result<(), crate::store::StoreError> {
        if let Some(opts) = self.store.pg_options() {
            let leader = crate::leader::who_leads(opts, self.settings.lock_key("leader")).await?;
            if let Some(who) = leader {
                tracing::debug!(event = "alert_outbox", leader = %who, "alerts left to the leading service");
                return Ok(());
            }
        }
        crate::alerts::deliver_once(&self.store, &self.settings.alerts).await
    }

    /// The renewal lock, held while a cycle or a paid command runs: waits (saying so) for
    /// another process's cycle or command to end, or with `wait` false fails at once.
    pub async fn lock(
        &self,
        wait: bool,
    ) -> Result<crate::store::RenewalLock, crate::store::StoreError> {
        self.store
            .renewal_lock(self.settings.lock_key("renew"), wait)
            .await
    }
}

/// Under `api = "auto"`, before a cycle: if the generation is not known yet (the server was
/// unreachable at start), detects it and switches the catalog and the policies to it. `Err`
/// with the reason when that fails; the cycle is then not run.
pub async fn ensure_generation(ctx: &mut Ctx) -> Result<(), String> {
    if ctx.settings.billmgr.api.is_some() {
        return Ok(());
    }
    let d = ctx
        .client
        .generation()
        .await
        .map_err(|e| format!("cannot detect the API generation: {e}"))?;
    let mut settings = ctx.settings.clone();
    settings.use_generation(d.api());
    let policies = Policies::load_dir(&settings.policies_dir, &settings.catalog)
        .map_err(|e| format!("policies invalid for the detected {}: {e}", d.name()))?;
    ctx.settings = settings;
    ctx.policies = policies;
    Ok(())
}

/// The longest random delay before a cycle: `[schedule] jitter`, but never more than a tenth
/// of the interval between two ticks.
pub fn max_jitter(cron: &str, jitter: Duration) -> Duration {
    let interval = crate::config::parse_cron(cron)
        .ok()
        .and_then(|c| {
            let now = Utc::now();
            let a = c.find_next_occurrence(&now, false).ok()?;
            let b = c.find_next_occurrence(&a, false).ok()?;
            (b - a).to_std().ok()
        })
        .unwrap_or(Duration::ZERO);
    jitter.min(interval / 10)
}

/// The outcome of a reload as `licrenew reload` waits for it (`meta` key `reload`).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// Counts reloads over the database's life: `licrenew reload` waits for it to change.
    pub seq: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// The last reload outcome recorded in the database.
pub async fn last_reload(store: &Store) -> Result<ReloadOutcome, crate::store::StoreError> {
    Ok(store
        .meta("reload")
        .await?
        .and_then(|(v, _)| serde_json::from_str(&v).ok())
        .unwrap_or_default())
}

/// Records a reload's outcome (database, metrics) and alerts when it was refused, so a refused
/// reload is seen: `systemctl reload` fails, the gauge drops to 0, an alert goes out.
async fn record_reload(ctx: &Ctx, refused: Option<String>) -> anyhow::Result<()> {
    let now = Utc::now();
    let seq = last_reload(&ctx.store).await?.seq + 1;
    let outcome = ReloadOutcome {
        seq,
        ok: refused.is_none(),
        error: refused.clone(),
    };
    ctx.store
        .set_meta("reload", &serde_json::to_string(&outcome)?, now)
        .await?;
    ctx.metrics.reload_finished(outcome.ok, now);
    let alert = match refused {
        Some(why) => {
            let mut a = crate::alerts::Alert::new(
                "config_reload_failed",
                crate::alerts::Severity::Warning,
                format!("config_reload_failed:{seq}"),
                "reload refused",
                "a reload of config and policies was refused: the running ones are kept".into(),
            );
            a.subject = Some("reload".into());
            a.error = Some(why);
            a
        }
        None => {
            let mut a = crate::alerts::Alert::new(
                "resolved",
                crate::alerts::Severity::Info,
                format!("resolved:reload:{seq}"),
                "reload taken",
                "resolved: config and policies reloaded".into(),
            );
            a.subject = Some("reload".into());
            a
        }
    };
    if crate::alerts::queue(&ctx.store, &ctx.settings.alerts, vec![alert], now).await? > 0 {
        ctx.alert_wake.notify_one();
    }
    Ok(())
}

/// Reloads config and policies from disk; `Err` (with the reason) keeps the old ones.
fn reload(ctx: &mut Ctx) -> Result<bool, String> {
    let file = ctx.settings.file.clone();
    let mut settings = crate::config::load(&file).map_err(|e| e.to_string())?;
    if settings.billmgr.api.is_none()
        && ctx.settings.api_detected
        && let Some(api) = ctx.settings.billmgr.api
        && settings.billmgr.url == ctx.settings.billmgr.url
    {
        // Still `auto`, same server: the generation detected earlier holds.
        settings.use_generation(api);
    }
    let policies =
        Policies::load_dir(&settings.policies_dir, &settings.catalog).map_err(|e| e.to_string())?;
    let client = Client::new(&settings.billmgr)
        .map_err(|e| e.to_string())?
        .with_metrics(ctx.metrics.clone());
    if ctx.store.pg_options().is_some()
        && (settings.billmgr.url != ctx.settings.billmgr.url
            || settings.billmgr.username != ctx.settings.billmgr.username)
    {
        // The leader's and the renewal lock's keys derive from them: instances with the old
        // and the new keys would not exclude each other.
        return Err("billmgr.url or billmgr.username changed: on PostgreSQL that takes a restart of every instance (they compete for a lock named after the account)".into());
    }
    if settings.database != ctx.settings.database {
        tracing::warn!(
            event = "reload",
            "database.url changed: takes effect after a restart"
        );
    }
    let cron_changed = settings.schedule.cron != ctx.settings.schedule.cron;
    let database = ctx.settings.database.clone();
    ctx.settings = settings;
    ctx.settings.database = database;
    ctx.policies = policies;
    ctx.client = client;
    Ok(cron_changed)
}

/// The service: runs cycles on the cron schedule until SIGTERM/SIGINT.
pub async fn run(settings: Settings, policies: Policies) -> anyhow::Result<()> {
    let mut ctx = open(settings, policies).await?;
    // Seen by `licrenew status` and the status page: this process runs the service.
    // (PostgreSQL: the leader records itself when it takes over; a standby is not "the
    // service" the status shows.)
    let mut lead = Lead::new(&ctx);
    if let Some(path) = ctx.settings.database.sqlite_path()
        && let Some((to, _)) = ctx.store.meta("moved_to").await?
    {
        // A config mistake (exit 78, no restart loop): the journal lives elsewhere now.
        return Err(crate::config::ConfigError::new(
            &ctx.settings.file,
            Some("database.url"),
            format!("{} was copied to {to} (licrenew db copy): nothing renews with this file; point [database] url there", path.display()),
        )
        .into());
    }
    if !lead.shared() {
        record_service(&ctx).await?;
    } else {
        // One PostgreSQL database per billing account: its instances compete for a lock
        // named after the account, and its journal is that account's.
        let account = format!(
            "{} {}",
            ctx.settings.billmgr.url, ctx.settings.billmgr.username
        );
        match ctx.store.meta("account").await? {
            Some((stored, _)) if stored != account => {
                return Err(crate::config::ConfigError::new(
                    &ctx.settings.file,
                    Some("billmgr.url"),
                    crate::overview::account_mismatch(&stored),
                )
                .into());
            }
            Some(_) => {}
            None => ctx.store.set_meta("account", &account, Utc::now()).await?,
        }
    }
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!(
            event = "shutdown",
            "stop requested: finishing the call in flight"
        );
        let _ = stop_tx.send(true);
    });
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // SIGUSR1: a cycle now (`systemctl kill -s USR1 licrenew`).
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;

    // An intent row left by a process that died is reconciled before anything else
    // (PostgreSQL: by whichever instance comes to lead, when it does).
    if !lead.shared() {
        let _lock = ctx.lock(true).await?;
        startup_reconcile(&ctx).await?;
    }
    let (page_tx, page_rx) = watch::channel(Arc::new((ctx.settings.clone(), ctx.policies.clone())));
    if let Some(listen) = ctx.settings.metrics_listen {
        refresh_metrics(&ctx).await?;
        let interval = crate::metrics::cron_interval(&ctx.settings.schedule.cron)
            .unwrap_or(Duration::from_secs(6 * 3600));
        let page = crate::http::PageSource {
            store: ctx.store.clone(),
            current: page_rx.clone(),
        };
        crate::http::serve(
            listen,
            ctx.metrics.clone(),
            interval,
            Some(page),
            stop.clone(),
        )
        .await?;
    }
    // A reload reaches the delivery task too (new destinations, URL, headers, timeouts).
    let (alerts_tx, alerts_rx) = watch::channel(ctx.settings.alerts.clone());
    // Only the leader delivers (the outbox is shared on PostgreSQL).
    let delivery = tokio::spawn(crate::alerts::deliver_forever(
        ctx.store.clone(),
        alerts_rx,
        ctx.metrics.clone(),
        ctx.alert_wake.clone(),
        lead.leading(),
        stop.clone(),
    ));

    let busy = Arc::new(AtomicBool::new(false));
    // `true` for a scheduled tick (a random jitter first), `false` for a cycle asked for now
    // (at start, SIGUSR1).
    let (tick_tx, mut ticks) = tokio::sync::mpsc::channel::<bool>(1);
    let mut sched = tokio_cron_scheduler::JobScheduler::new().await?;
    let mut job = sched
        .add(make_job(
            &ctx.settings.schedule.cron,
            tick_tx.clone(),
            busy.clone(),
        )?)
        .await?;
    sched.start().await?;
    crate::systemd::ready();
    crate::systemd::alive();
    // The loop feeds the watchdog as it turns; a cycle feeds it as it makes progress.
    let mut heartbeat = tokio::time::interval(
        crate::systemd::watchdog()
            .map(|w| w / 4)
            .unwrap_or(Duration::from_secs(3600)),
    );
    let next = crate::config::next_cycle(&ctx.settings.schedule.cron, Utc::now());
    let (window, widened) = effective_window(&ctx.settings, &ctx.policies);
    tracing::info!(event = "started", cron = %ctx.settings.schedule.cron, database = %ctx.settings.database,
        policies = ctx.policies.iter().count(), run_at_start = ctx.settings.schedule.run_at_start,
        window_ms = window.as_millis() as u64, window_widened_by = widened.as_deref(),
        next_cycle = next.map(|t| t.to_rfc3339()), "licrenew running (schedule in UTC)");
    // Started with a config and policies that load: a refused reload from before is over.
    let mut started_ok = crate::alerts::Alert::new(
        "resolved",
        crate::alerts::Severity::Info,
        format!("resolved:reload:start:{}", Utc::now().timestamp()),
        "started with a valid config",
        "resolved: config and policies load (the service was restarted)".into(),
    );
    started_ok.subject = Some("reload".into());
    if crate::alerts::queue(
        &ctx.store,
        &ctx.settings.alerts,
        vec![started_ok],
        Utc::now(),
    )
    .await?
        > 0
    {
        ctx.alert_wake.notify_one();
    }
    if ctx.settings.schedule.run_at_start {
        let _ = tick_tx.try_send(false);
    }

    let mut stop_rx = stop.clone();
    // PostgreSQL: a standby asks for the leadership at once and then every `standby_retry`;
    // the leader checks it still holds it every `heartbeat`.
    let mut standby = tokio::time::interval(ctx.settings.standby_retry);
    let mut said_standby = false;
    standby.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut still = tokio::time::interval(ctx.settings.heartbeat);
    still.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop_rx.changed() => break,
            _ = heartbeat.tick() => crate::systemd::alive(),
            _ = standby.tick(), if lead.shared() && !lead.is_leading() => {
                if lead.try_lead(&ctx, &stop).await {
                    said_standby = false;
                    if ctx.settings.schedule.run_at_start {
                        let _ = tick_tx.try_send(false);
                    }
                } else if !said_standby && let Some(who) = lead.holder().await {
                    // (Only when another instance does hold it: a database that is away
                    // has its own warning.)
                    said_standby = true;
                    tracing::info!(event = "standby", leader = %who, "standing by: another instance leads and runs the cycles");
                }
            }
            _ = still.tick(), if lead.is_leading() && lead.shared() => {
                lead.check(&ctx).await;
                if !lead.is_leading() {
                    standby.reset();
                }
            }
            _ = usr1.recv() => {
                tracing::info!(event = "trigger", "SIGUSR1: a cycle now");
                let _ = tick_tx.try_send(false);
            }
            _ = hup.recv() => {
                let result = reload(&mut ctx);
                match &result {
                    Ok(cron_changed) => {
                        if *cron_changed {
                            sched.remove(&job).await?;
                            job = sched.add(make_job(&ctx.settings.schedule.cron, tick_tx.clone(), busy.clone())?).await?;
                        }
                        tracing::info!(event = "reload", policies = ctx.policies.iter().count(), "config and policies reloaded");
                    }
                    Err(why) => tracing::error!(event = "reload", error = %why, "reload refused: keeping the running config and policies"),
                }
                if let Err(e) = record_reload(&ctx, result.err()).await {
                    // (PostgreSQL: the database may be away for a moment; a standby stays.)
                    if !lead.shared() {
                        return Err(e);
                    }
                    tracing::error!(event = "reload", error = %e, "the reload's outcome could not be recorded");
                }
                alerts_tx.send_replace(ctx.settings.alerts.clone());
                page_tx.send_replace(Arc::new((ctx.settings.clone(), ctx.policies.clone())));
            }
            Some(scheduled) = ticks.recv() => {
                if !lead.is_leading() {
                    tracing::debug!(event = "tick_skipped", "standby: the leader runs the cycles");
                    continue;
                }
                busy.store(true, Ordering::SeqCst);
                let delay = if scheduled {
                    max_jitter(&ctx.settings.schedule.cron, ctx.settings.schedule.jitter)
                        .mul_f64(crate::billmgr::client::random_fraction())
                } else {
                    Duration::ZERO
                };
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(delay) => false,
                    _ = stop_rx.changed() => true,
                };
                if stopped {
                    break;
                }
                if let Err(why) = ensure_generation(&mut ctx).await {
                    tracing::error!(event = "cycle", outcome = "api_failed", error = %why, "cycle not run");
                    ctx.metrics.cycle_finished(Utc::now(), "api_failed", Duration::ZERO);
                    // Not silent: the same open problem as a cycle that failed on the API.
                    let mut a = crate::alerts::Alert::new(
                        "cycle_failed",
                        crate::alerts::Severity::Critical,
                        format!("cycle_failed:api_failed:start:{}", Utc::now().timestamp()),
                        "API unavailable",
                        "no cycle can run: the API generation could not be detected".into(),
                    );
                    a.subject = Some("api".into());
                    a.outcome = Some("api_failed".into());
                    a.error = Some(why.to_string());
                    if !ctx.store.open_problems().await?.contains_key("api")
                        && crate::alerts::queue(&ctx.store, &ctx.settings.alerts, vec![a], Utc::now()).await? > 0
                    {
                        ctx.alert_wake.notify_one();
                    }
                    busy.store(false, Ordering::SeqCst);
                    continue;
                }
                if !ctx.settings.api_detected || page_rx.borrow().0.billmgr.api.is_none() {
                    page_tx.send_replace(Arc::new((ctx.settings.clone(), ctx.policies.clone())));
                }
                // The lock only for the cycle: manual commands run between ticks, and a
                // manual paid command running now is waited for.
                let lock = tokio::select! {
                    l = ctx.lock(true) => Some(l),
                    _ = stop_rx.changed() => None,
                };
                let Some(lock) = lock else { break };
                let lock = match lock {
                    Ok(l) => l,
                    Err(e) if lead.shared() => {
                        tracing::error!(event = "cycle", outcome = "failed", error = %e, "cycle not run: the renewal lock could not be taken");
                        busy.store(false, Ordering::SeqCst);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let result = lead.run_cycle(&ctx, &stop).await;
                drop(lock);
                busy.store(false, Ordering::SeqCst);
                match result {
                    Ok(report) => {
                        println!("{}", report.summary());
                        crate::systemd::status(&report.summary());
                    }
                    // PostgreSQL: a database that went away (or a leadership lost) ends the
                    // cycle, not the service: it stands by and competes again.
                    Err(e) if lead.shared() && stands_by_after(&e) => {
                        tracing::error!(event = "cycle", outcome = "failed", error = %e, "cycle ended by a database failure: standing by");
                        lead.lose(&ctx, &e.to_string()).await;
                        standby.reset();
                    }
                    Err(e) => return Err(e.into()),
                }
                if *stop.borrow() {
                    break;
                }
            }
        }
    }
    crate::systemd::stopping();
    forget_service(&ctx).await;
    lead.release(&ctx).await;
    let _ = sched.shutdown().await;
    let _ = delivery.await;
    ctx.store.close().await;
    tracing::info!(event = "stopped", "licrenew stopped");
    Ok(())
}

/// Records this process as the running service (`meta` key `service`: `status`, the page).
async fn record_service(ctx: &Ctx) -> Result<(), crate::store::StoreError> {
    let record = crate::overview::ServiceRecord {
        pid: i64::from(std::process::id()),
        host: crate::overview::hostname(),
        started_at: Utc::now(),
    };
    ctx.store
        .set_meta(
            "service",
            &serde_json::to_string(&record).unwrap_or_default(),
            Utc::now(),
        )
        .await
}

/// Removes the service record if it is this process's (a standby never removes the leader's).
async fn forget_service(ctx: &Ctx) {
    let ours = match ctx.store.meta("service").await {
        Ok(Some((v, _))) => {
            serde_json::from_str::<crate::overview::ServiceRecord>(&v).is_ok_and(|r| {
                r.pid == i64::from(std::process::id()) && r.host == crate::overview::hostname()
            })
        }
        _ => false,
    };
    if ours {
        let _ = ctx.store.delete_meta("service").await;
    }
}

/// How long the leader waits for the server to confirm it still leads: long enough for a
/// busy server, short enough not to leave a running cycle unpolled.
fn heartbeat_timeout(ctx: &Ctx) -> Duration {
    ctx.settings
        .heartbeat
        .clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// Whether a database error on PostgreSQL means "this instance lost its database or its
/// lock" (stand by and compete again) rather than a fault that restarting will not cure
/// (exit, as on SQLite, so systemd and the admin see it).
fn stands_by_after(e: &crate::store::StoreError) -> bool {
    use crate::store::StoreError;
    match e {
        StoreError::NotLeader(_) | StoreError::Busy(_) => true,
        StoreError::Sql(e) => match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions (08…), operator intervention (57…: a terminated backend,
            // a shutting-down server).
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
            _ => false,
        },
        _ => false,
    }
}

/// The service's leadership. SQLite: one process per database, always the leader.
/// PostgreSQL: every `licrenew run` on the database competes for a session-level advisory
/// lock on the account's key; the holder runs cycles and delivers alerts, the others stand
/// by. Every intent is fenced on the lock (see `Store::set_leader_fence`), so an instance
/// that lost it pays nothing, whatever it still believes.
struct Lead {
    opts: Option<sqlx::postgres::PgConnectOptions>,
    key: i64,
    held: Option<crate::leader::Leadership>,
    tx: watch::Sender<bool>,
}

impl Lead {
    fn new(ctx: &Ctx) -> Lead {
        let opts = ctx.store.pg_options().cloned();
        let leading = opts.is_none();
        ctx.metrics.set_leader(leading);
        Lead {
            opts,
            key: ctx.settings.lock_key("leader"),
            held: None,
            tx: watch::channel(leading).0,
        }
    }

    /// Several instances may share the database (PostgreSQL).
    fn shared(&self) -> bool {
        self.opts.is_some()
    }

    fn is_leading(&self) -> bool {
        !self.shared() || self.held.is_some()
    }

    /// Follows whether this instance leads.
    fn leading(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// One attempt to lead; on success records it, says so, alerts, and reconciles every
    /// open journal row before anything else. `true` when this instance now leads.
    async fn try_lead(&mut self, ctx: &Ctx, stop: &watch::Receiver<bool>) -> bool {
        let Some(opts) = &self.opts else { return true };
        let l = match crate::leader::Leadership::try_acquire(opts, self.key).await {
            Ok(Some(l)) => l,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(event = "leader", error = %e, "standby: the database is not reachable");
                return false;
            }
        };
        ctx.store.set_leader_fence(Some(l.fence()));
        self.held = Some(l);
        let previous = ctx
            .store
            .meta("service")
            .await
            .ok()
            .flatten()
            .and_then(|(v, _)| serde_json::from_str::<crate::overview::ServiceRecord>(&v).ok())
            .map(|r| format!("{} pid {}", r.host, r.pid));
        let me = format!("{} pid {}", crate::overview::hostname(), std::process::id());
        tracing::warn!(event = "leader", leading = true, host = %crate::overview::hostname(), pid = std::process::id(),
            previous = previous.as_deref(), "this instance leads: it runs the cycles");
        let taken = async {
            record_service(ctx).await?;
            // A change of hands is worth a look (why did the other one stop?); a first
            // start is not.
            let changed = previous.as_ref().is_some_and(|p| *p != me);
            let a = crate::alerts::Alert::new(
                "leader",
                if changed {
                    crate::alerts::Severity::Warning
                } else {
                    crate::alerts::Severity::Info
                },
                format!(
                    "leader:{}:{}:{}",
                    crate::overview::hostname(),
                    std::process::id(),
                    Utc::now().timestamp()
                ),
                "leader changed",
                match &previous {
                    Some(p) if *p != me => format!("{me} now leads (before: {p})"),
                    _ => format!("{me} now leads"),
                },
            );
            crate::alerts::queue(&ctx.store, &ctx.settings.alerts, vec![a], Utc::now()).await?;
            // Open rows of the previous leader first: never paid again, settled on evidence.
            // (A manual command holding the renewal lock is waited for, but not past a stop.)
            let mut stop = stop.clone();
            let lock = tokio::select! {
                l = ctx.lock(true) => l?,
                _ = stop.changed() => anyhow::bail!("stopping"),
            };
            let done = startup_reconcile(ctx).await;
            drop(lock);
            done
        }
        .await;
        if let Err(e) = taken {
            tracing::error!(event = "leader", error = %e, "could not take over: standing by");
            self.lose(ctx, &e.to_string()).await;
            return false;
        }
        ctx.metrics.set_leader(true);
        self.tx.send_replace(true);
        ctx.alert_wake.notify_one();
        true
    }

    /// Who leads now (`<host> pid <pid>`), for a standby's log line.
    async fn holder(&self) -> Option<String> {
        crate::leader::who_leads(self.opts.as_ref()?, self.key)
            .await
            .ok()
            .flatten()
    }

    /// The leader's heartbeat: still listed as the lock's holder, within the heartbeat.
    async fn check(&mut self, ctx: &Ctx) {
        let timeout = heartbeat_timeout(ctx);
        if let Some(l) = self.held.as_mut()
            && !l.still_held(timeout).await
        {
            self.lose(
                ctx,
                "the database no longer lists this instance as the leader",
            )
            .await;
        }
    }

    /// Leadership over: nothing more is written as an intent, the cycles and deliveries
    /// stop, and the instance stands by.
    async fn lose(&mut self, ctx: &Ctx, why: &str) {
        if !self.shared() {
            return;
        }
        ctx.store.set_leader_fence(None);
        ctx.metrics.set_leader(false);
        self.tx.send_replace(false);
        if let Some(l) = self.held.take() {
            tracing::warn!(
                event = "leader",
                leading = false,
                reason = why,
                "leadership lost: standing by"
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), l.release()).await;
        }
    }

    /// Gives the leadership up at exit.
    async fn release(&mut self, ctx: &Ctx) {
        ctx.store.set_leader_fence(None);
        if let Some(l) = self.held.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), l.release()).await;
        }
    }

    /// One renewal cycle; on PostgreSQL the leadership is checked while it runs and the cycle
    /// is stopped (as by SIGTERM: reads abandoned, the paid call in flight awaited) as soon
    /// as it is lost.
    async fn run_cycle(
        &mut self,
        ctx: &Ctx,
        stop: &watch::Receiver<bool>,
    ) -> Result<CycleReport, crate::store::StoreError> {
        if !self.shared() {
            return run_once(ctx, Mode::Renew, stop).await;
        }
        let (cycle_stop_tx, cycle_stop) = watch::channel(*stop.borrow());
        let mut outer = stop.clone();
        let mut outer_open = true;
        let mut check = tokio::time::interval(ctx.settings.heartbeat);
        check.tick().await;
        let mut lost = None;
        let cycle = run_once(ctx, Mode::Renew, &cycle_stop);
        tokio::pin!(cycle);
        let result = loop {
            tokio::select! {
                r = &mut cycle => break r,
                changed = outer.changed(), if outer_open => {
                    outer_open = changed.is_ok();
                    if *outer.borrow() {
                        cycle_stop_tx.send_replace(true);
                    }
                }
                _ = check.tick(), if lost.is_none() => {
                    let timeout = heartbeat_timeout(ctx);
                    if let Some(l) = self.held.as_mut()
                        && !l.still_held(timeout).await
                    {
                        // No intent passes the fence any more; stop reading too.
                        ctx.store.set_leader_fence(None);
                        cycle_stop_tx.send_replace(true);
                        lost = Some(());
                    }
                }
            }
        };
        if lost.is_some() {
            self.lose(
                ctx,
                "the database no longer lists this instance as the leader",
            )
            .await;
        }
        result
    }
}

fn make_job(
    cron: &str,
    tx: tokio::sync::mpsc::Sender<bool>,
    busy: Arc<AtomicBool>,
) -> anyhow::Result<tokio_cron_scheduler::Job> {
    Ok(tokio_cron_scheduler::Job::new_async(
        cron,
        move |_id, _sched| {
            let tx = tx.clone();
            let busy = busy.clone();
            Box::pin(async move {
                if busy.load(Ordering::SeqCst) || tx.try_send(true).is_err() {
                    tracing::info!(
                        event = "tick_skipped",
                        "a cycle is still running: this tick is skipped"
                    );
                }
            })
        },
    )?)
}

/// Reconciles every open journal row once, before the first cycle.
pub async fn startup_reconcile(ctx: &Ctx) -> anyhow::Result<()> {
    let rows = ctx.store.open_renewals().await?;
    if rows.is_empty() {
        return Ok(());
    }
    tracing::info!(
        event = "reconcile",
        open = rows.len(),
        "renewals with an unknown outcome found at start"
    );
    let exec = Executor {
        client: &ctx.client,
        store: &ctx.store,
        catalog: &ctx.settings.catalog,
        settle: ctx.settings.renewal.settle,
        max_per_cycle: 0,
        cycle: None,
        source: "policy",
        stop: None,
    };
    for row in rows {
        match exec.reconcile(&row).await {
            Ok(ev) => {
                ev.emit(None);
                ctx.store
                    .set_decision(
                        ev.elid,
                        ev.outcome.as_str(),
                        ev.reason.as_deref(),
                        Utc::now(),
                    )
                    .await?;
            }
            Err(Fatal::Auth(e)) => {
                tracing::error!(event = "reconcile", error = %e, "login refused while reconciling");
                break;
            }
            Err(Fatal::Store(e)) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_lost_database_or_lock_stands_by_and_other_faults_stop_the_service() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");

        assert!(stands_by_after(&StoreError::NotLeader("lost".into())));
        assert!(stands_by_after(&StoreError::Sql(sqlx::Error::Io(io()))));
        assert!(stands_by_after(&StoreError::Sql(sqlx::Error::PoolTimedOut)));
        assert!(!stands_by_after(&StoreError::Sql(sqlx::Error::RowNotFound)));
        assert!(!stands_by_after(&StoreError::Locked("disk".into())));
    }
}
