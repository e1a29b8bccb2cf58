//! The money-safe executor: re-read, intent, paid call, outcome; and reconciliation of
//! renewals whose outcome is unknown.
//!
//! Owns the order of operations that makes a renewal safe: the license is re-read just before
//! paying, the intent row is committed before the request leaves, every answer is classified
//! honestly (`<ok/>` → ok, `<error>` → error, anything else after sending → unknown), and an
//! unknown outcome is settled only by re-reading the license, never by sending again. It may
//! refuse what the planner proposes; it never chooses what to renew.

use crate::billmgr::{Certainty, Client, Error as ApiFailure};
use crate::catalog::Catalog;
use crate::domain::{License, Status};
use crate::policy::{Action, GONE_CLASS, JournalState};
use crate::stop::unless_stopped;
use crate::store::{Intent, IntentResult, JournalRow, Settlement, Store, StoreError};
use chrono::{NaiveDate, Utc};
use std::time::Duration;

/// What happened to one license in a cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
    Unknown,
    Skipped,
    ReconciledOk,
    ReconciledFailed,
    DryRun,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Unknown => "unknown",
            Outcome::Skipped => "skipped",
            Outcome::ReconciledOk => "reconciled_ok",
            Outcome::ReconciledFailed => "reconciled_failed",
            Outcome::DryRun => "dry_run",
        }
    }
}

/// One `event="renewal"` record: what was decided or done about one license.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Event {
    pub elid: i64,
    pub licname: String,
    pub product: String,
    pub period: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub error_type: Option<String>,
    pub error_object: Option<String>,
    pub error_msg: Option<String>,
    pub expiry: NaiveDate,
    pub new_expiry: Option<NaiveDate>,
    pub policy_file: Option<String>,
    /// What the renewal costs (or would), where the billing shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::domain::Money>,
}

impl Event {
    pub fn new(catalog: &Catalog, l: &License, period: Option<i64>, outcome: Outcome) -> Event {
        Event {
            elid: l.elid,
            licname: l.licname.clone(),
            product: catalog.product_name(l.product),
            period: period.map(|p| catalog.period_label(l.product, p)),
            outcome,
            reason: None,
            error_type: None,
            error_object: None,
            error_msg: None,
            expiry: l.expiry,
            new_expiry: None,
            policy_file: None,
            cost: l.cost.clone(),
        }
    }

    fn reason(mut self, r: impl Into<String>) -> Event {
        self.reason = Some(r.into());
        self
    }

    fn error(mut self, e: &ApiFailure) -> Event {
        match e.api_detail() {
            Some(api) => {
                self.error_type = Some(match e.kind {
                    crate::billmgr::ErrorKind::Contradictory(_) => e.class().to_owned(),
                    _ => api.kind.clone(),
                });
                self.error_object = api.object.clone();
                self.error_msg = api.msg.clone();
            }
            None => {
                self.error_type = Some(e.class().to_owned());
                self.error_msg = Some(e.kind.to_string());
            }
        }
        self
    }

    /// Emits the event as one log line with its fields at the top level.
    pub fn emit(&self, cycle: Option<i64>) {
        macro_rules! ev {
            ($lvl:expr, $msg:expr) => {
                tracing::event!(
                    $lvl,
                    event = "renewal",
                    cycle,
                    elid = self.elid,
                    licname = %self.licname,
                    product = %self.product,
                    period = self.period.as_deref(),
                    outcome = self.outcome.as_str(),
                    reason = self.reason.as_deref(),
                    error_type = self.error_type.as_deref(),
                    error_object = self.error_object.as_deref(),
                    error_msg = self.error_msg.as_deref(),
                    expiry = %self.expiry,
                    new_expiry = self.new_expiry.map(|d| d.to_string()),
                    policy_file = self.policy_file.as_deref(),
                    $msg
                )
            };
        }
        match self.outcome {
            Outcome::Error | Outcome::Unknown | Outcome::ReconciledFailed => {
                ev!(tracing::Level::WARN, "renewal")
            }
            // One per license and cycle, 96 % of all lines: DEBUG, summed up per cycle at INFO.
            Outcome::Skipped => ev!(tracing::Level::DEBUG, "renewal"),
            _ => ev!(tracing::Level::INFO, "renewal"),
        }
    }
}

/// A failure that must end the cycle: the server refused the login, or the journal cannot be
/// written (no paid call may go out without its intent row).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("login refused: {0}")]
    Auth(ApiFailure),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the executor needs.
pub struct Executor<'a> {
    pub client: &'a Client,
    pub store: &'a Store,
    pub catalog: &'a Catalog,
    /// How long after sending an unknown outcome may be judged failed.
    pub settle: Duration,
    /// Paid calls allowed in this cycle (counted from the journal).
    pub max_per_cycle: u32,
    pub cycle: Option<i64>,
    /// `policy` for the daemon, `manual` for `licrenew prolong`.
    pub source: &'static str,
    /// A stop asked for abandons every read at once (the paid call in flight is awaited).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The reason of a renewal the server answered but a re-read did not confirm.
pub const NOT_CONFIRMED: &str = "not confirmed";
/// The pause before the one retry of a paid call refused as busy or for an expired session.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One pass of the executor: done, or refused in a way that allows one more try.
enum Attempt {
    Done(Event),
    /// A definite refusal (nothing applied) that may succeed if sent again through the same
    /// fences: the server was busy, or the session expired during the call. Carries the
    /// journal row of the refused call.
    Retry(Event, &'static str, i64),
}

impl Executor<'_> {
    /// Settles a journal row whose outcome is not known by re-reading the license.
    ///
    /// Only two things settle it (issue 10.1): a re-read showing the expiry moved
    /// (`reconciled_ok`), or, once `settle` has passed since the call, a re-read showing the
    /// license unchanged and not processing (`reconciled_failed`). Anything else before
    /// `settle` — `missed`, another error, a transport failure — leaves it open. A license
    /// still missing after `settle` is closed as `license gone` and never renewed again.
    pub async fn reconcile(&self, row: &JournalRow) -> Result<Event, Fatal> {
        let now = Utc::now();
        let stored = License {
            elid: row.elid,
            licname: row.licname.clone(),
            ip: String::new(),
            product: row.product,
            period: Some(row.period),
            expiry: row.expiry_before,
            status: Status::Active,
            autoprolong: false,
            special: None,
            cost: None,
            pricelist_label: None,
        };
        let ev = |outcome| {
            let mut e = Event::new(self.catalog, &stored, Some(row.period), outcome);
            e.policy_file = row.policy_file.clone();
            e
        };
        let age = (now - row.created_at).to_std().unwrap_or_default();
        let settled = age >= self.settle;
        let Some(read) = unless_stopped(self.stop.as_ref(), self.client.view(row.elid)).await
        else {
            self.keep_open(row, "interrupted").await?;
            return Ok(ev(Outcome::Unknown).reason("settling (stopping)"));
        };
        let fresh = match read {
            Ok(l) => l,
            Err(e) if e.is_auth() => return Err(Fatal::Auth(e)),
            Err(e) if e.is_missed() && settled => {
                // Missing for longer than a renewal can take to land: it is gone, and the
                // renewal did not land on it. Never renewed again.
                let s = Settlement {
                    error_class: Some(GONE_CLASS.into()),
                    error_msg: Some(format!(
                        "license gone: not found {}s after the call",
                        age.as_secs()
                    )),
                    ..Settlement::default()
                };
                self.store
                    .settle(row.id, JournalState::ReconciledFailed, &s, now)
                    .await?;
                self.store.mark_gone(row.elid, now).await?;
                return Ok(ev(Outcome::ReconciledFailed)
                    .reason("license gone")
                    .error(&e));
            }
            Err(e) => {
                // Not proof of anything before `settle`: a license being processed may not be
                // found for a while, and a failed read says nothing about the renewal.
                self.keep_open(row, "interrupted").await?;
                let why = if e.is_missed() {
                    "settling (license not found yet)".to_owned()
                } else {
                    format!("settling (could not re-read: {})", e.kind)
                };
                return Ok(ev(Outcome::Unknown).reason(why).error(&e));
            }
        };
        self.store.update_license(&fresh, now).await?;
        if fresh.expiry < row.expiry_before || fresh.product != row.product {
            // Not what a renewal (or its absence) leaves behind: stop and let a person look.
            self.keep_open(row, "conflict").await?;
            return Ok(ev(Outcome::Unknown).reason(format!(
                "conflicting evidence: expiry {} → {}, product {} → {}; not renewing until resolved",
                row.expiry_before, fresh.expiry, row.product, fresh.product
            )));
        }
        if fresh.expiry > row.expiry_before {
            let s = Settlement {
                new_expiry: Some(fresh.expiry),
                ..Settlement::default()
            };
            self.store
                .settle(row.id, JournalState::ReconciledOk, &s, now)
                .await?;
            let mut e = ev(Outcome::ReconciledOk).reason("expiry moved");
            e.new_expiry = Some(fresh.expiry);
            return Ok(e);
        }
        if fresh.status == Status::Processing {
            self.keep_open(row, "interrupted").await?;
            return Ok(ev(Outcome::Unknown).reason("settling (license processing)"));
        }
        if !settled {
            self.keep_open(row, "interrupted").await?;
            return Ok(ev(Outcome::Unknown).reason("settling"));
        }
        let s = Settlement {
            error_msg: Some(format!(
                "expiry unchanged {}s after the call",
                age.as_secs()
            )),
            ..Settlement::default()
        };
        self.store
            .settle(row.id, JournalState::ReconciledFailed, &s, now)
            .await?;
        Ok(ev(Outcome::ReconciledFailed).reason("expiry unchanged"))
    }

    /// A `sending` row that stays open becomes `unknown`: the process that sent it is gone.
    async fn keep_open(&self, row: &JournalRow, class: &str) -> Result<(), StoreError> {
        if row.state == JournalState::Sending.as_str() {
            let s = Settlement {
                error_class: Some(class.into()),
                ..Settlement::default()
            };
            self.store
                .settle(row.id, JournalState::Unknown, &s, Utc::now())
                .await?;
        }
        Ok(())
    }

    /// Renews one license the planner proposed, or refuses to. A paid call refused because the
    /// server was busy, or because the session expired during it, is sent once more through
    /// the same fences (a fresh re-read and a new intent row), never more than once.
    pub async fn renew(&self, action: &Action) -> Result<Event, Fatal> {
        match self.renew_once(action).await? {
            Attempt::Done(ev) => Ok(ev),
            Attempt::Retry(first, why, row) => {
                first.emit(self.cycle);
                tracing::info!(
                    event = "renewal_retry",
                    elid = first.elid,
                    reason = why,
                    pause_ms = RETRY_PAUSE.as_millis() as u64,
                    "paid call refused ({why}); re-reading and sending it once more"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
                // A refusal is definite, but should the billing have applied it all the same,
                // the journal must say so rather than pay again (the re-read would refuse the
                // retry anyway, the expiry having moved).
                if let Some(Ok(now)) =
                    unless_stopped(self.stop.as_ref(), self.client.view(first.elid)).await
                    && now.expiry > first.expiry
                {
                    let s = Settlement {
                        new_expiry: Some(now.expiry),
                        error_msg: Some(format!("refused ({why}), yet the expiry moved")),
                        ..Settlement::default()
                    };
                    self.store
                        .settle(row, JournalState::ReconciledOk, &s, Utc::now())
                        .await?;
                    let mut e = first.reason("expiry moved");
                    e.outcome = Outcome::ReconciledOk;
                    e.new_expiry = Some(now.expiry);
                    e.error_type = None;
                    e.error_object = None;
                    e.error_msg = None;
                    return Ok(e);
                }
                match self.renew_once(action).await? {
                    Attempt::Done(ev) | Attempt::Retry(ev, _, _) => Ok(ev),
                }
            }
        }
    }

    async fn renew_once(&self, action: &Action) -> Result<Attempt, Fatal> {
        let planned = &action.license;
        let done = |e: Event| Ok(Attempt::Done(e));
        let Some(period) = action.period else {
            return done(
                Event::new(self.catalog, planned, None, Outcome::Skipped).reason("no period"),
            );
        };
        let base = |l: &License, outcome| {
            let mut e = Event::new(self.catalog, l, Some(period), outcome);
            e.policy_file = action.policy_file.as_ref().map(|p| p.display().to_string());
            e.cost = action.cost.clone().or(e.cost);
            e
        };
        // Defence in depth: the period must be one of the product's, and not a trial.
        if !crate::policy::is_renewal_period(self.catalog, planned.product, period) {
            return done(base(planned, Outcome::Skipped).reason("period not valid for product"));
        }

        // 1. Re-read just before paying.
        let Some(read) = unless_stopped(self.stop.as_ref(), self.client.view(planned.elid)).await
        else {
            return done(base(planned, Outcome::Skipped).reason("stopping"));
        };
        let fresh = match read {
            Ok(l) => l,
            Err(e) if e.is_auth() => return Err(Fatal::Auth(e)),
            Err(e) => {
                return done(
                    base(planned, Outcome::Error)
                        .reason("re-read before renewal failed")
                        .error(&e),
                );
            }
        };
        if let Some(why) = refuse(self.catalog, planned, &fresh) {
            // The form is the truth: remembered, so the next list is resolved with it.
            self.store.update_license(&fresh, Utc::now()).await?;
            return done(base(&fresh, Outcome::Skipped).reason(why));
        }

        crate::failpoint::hit("before-intent");

        // 2. Intent, committed before the request leaves (in one transaction with the
        //    license just re-read: one commit instead of two).
        let intent = Intent {
            elid: fresh.elid,
            licname: fresh.licname.clone(),
            product: fresh.product,
            period,
            expiry_before: fresh.expiry,
            source: self.source,
            cycle_id: self.cycle,
            policy_file: action.policy_file.as_ref().map(|p| p.display().to_string()),
            policy_hash: action.policy_hash.clone(),
            cost: action.cost.clone(),
        };
        let cap = self.cycle.map(|_| self.max_per_cycle);
        let id = match self
            .store
            .record_view_and_intent(&fresh, &intent, cap, Utc::now())
            .await?
        {
            IntentResult::Written(id) => id,
            IntentResult::Duplicate => {
                return done(base(&fresh, Outcome::Skipped).reason("already renewed (journal)"));
            }
            IntentResult::CapReached => {
                return done(base(&fresh, Outcome::Skipped).reason("cycle cap"));
            }
        };
        crate::failpoint::hit("after-intent");

        // 3. The paid call, exactly once.
        let result = self.client.renew(fresh.elid, period).await;
        crate::failpoint::hit("after-call");

        // 4. The outcome, recorded.
        let now = Utc::now();
        match result {
            Ok(ans) => {
                // The server said yes. It is `ok` only once a license read afterwards shows
                // the expiry moved (issue 10.3): the journal must say what the billing says.
                let after = unless_stopped(self.stop.as_ref(), self.client.view(fresh.elid))
                    .await
                    .unwrap_or_else(|| {
                        Err(ApiFailure::new(
                            "view",
                            Some(fresh.elid),
                            crate::billmgr::ErrorKind::Invalid(
                                "stopping: the license was not read again".into(),
                            ),
                        ))
                    });
                let detail = match &after {
                    Ok(a) if a.expiry > fresh.expiry => None,
                    Ok(a) => Some(format!(
                        "the server answered {} but the license still expires on {}",
                        if ans.confirmed {
                            "<ok/>".to_owned()
                        } else {
                            format!(
                                "a new expiry ({}) without <ok/>",
                                ans.new_expiry.map(|d| d.to_string()).unwrap_or_default()
                            )
                        },
                        a.expiry
                    )),
                    Err(e) => Some(format!(
                        "the server answered yes, but the license could not be read afterwards: {}",
                        e.kind
                    )),
                };
                let Some(detail) = detail else {
                    let after = after.ok();
                    let new_expiry = after.as_ref().map(|a| a.expiry);
                    let s = Settlement {
                        new_expiry,
                        ..Settlement::default()
                    };
                    // The outcome first: a failure to update the license row must not leave a
                    // confirmed renewal looking open (the license row is best effort, in the
                    // same commit).
                    self.store
                        .settle_with_license(id, JournalState::Ok, &s, after.as_ref(), now)
                        .await?;
                    crate::failpoint::hit("after-outcome");
                    let mut e = base(&fresh, Outcome::Ok);
                    e.new_expiry = new_expiry;
                    return done(e);
                };
                // Unknown, settled later by re-reading like any unknown row; never assumed
                // paid (a lapse) and never assumed refused (a second payment).
                let s = Settlement {
                    error_class: Some("not_confirmed".into()),
                    error_msg: Some(format!("{NOT_CONFIRMED}: {detail}")),
                    ..Settlement::default()
                };
                self.store
                    .settle_with_license(id, JournalState::Unknown, &s, after.as_ref().ok(), now)
                    .await?;
                crate::failpoint::hit("after-outcome");
                let mut e = base(&fresh, Outcome::Unknown).reason(NOT_CONFIRMED);
                e.error_type = Some("not_confirmed".into());
                e.error_msg = Some(detail);
                if let Err(err) = after
                    && err.is_auth()
                {
                    e.emit(self.cycle);
                    return Err(Fatal::Auth(err));
                }
                done(e)
            }
            Err(err) => {
                let (state, outcome) = match err.certainty() {
                    Certainty::Refused | Certainty::NotSent => {
                        (JournalState::Error, Outcome::Error)
                    }
                    Certainty::Unknown => (JournalState::Unknown, Outcome::Unknown),
                };
                let api = err.api_detail();
                let s = Settlement {
                    error_class: Some(err.class().to_owned()),
                    error_type: api.map(|a| a.kind.clone()),
                    error_object: api.and_then(|a| a.object.clone()),
                    error_msg: Some(
                        api.and_then(|a| a.msg.clone())
                            .unwrap_or_else(|| err.kind.to_string()),
                    ),
                    new_expiry: None,
                };
                self.store.settle(id, state, &s, now).await?;
                crate::failpoint::hit("after-outcome");
                let e = base(&fresh, outcome).error(&err);
                if err.is_auth() {
                    e.emit(self.cycle);
                    return Err(Fatal::Auth(err));
                }
                if err.is_busy() {
                    return Ok(Attempt::Retry(e.reason("server busy"), "server busy", id));
                }
                if err.is_access() && self.client.uses_sessions() {
                    return Ok(Attempt::Retry(
                        e.reason("session expired during the call"),
                        "session expired",
                        id,
                    ));
                }
                done(e)
            }
        }
    }
}

/// Why a license re-read just before paying must not be renewed now, if it must not. The
/// list shows display values and the form keys: both were resolved to ids and normalised
/// values, so a label against its key is never "changed since listing".
fn refuse(catalog: &Catalog, planned: &License, fresh: &License) -> Option<String> {
    match fresh.status {
        Status::Active | Status::Suspended => {}
        ref s => return Some(format!("status is now {s}")),
    }
    if let Some(special) = &fresh.special {
        return Some(format!("status change in progress ({special})"));
    }
    if fresh.product != planned.product {
        return Some("product changed since listing".into());
    }
    // Which period the license ran on does not change what is paid (the policy's period);
    // only one that turned out to be a trial does.
    if fresh.period != planned.period
        && fresh
            .period
            .is_none_or(|p| catalog.is_trial(fresh.product, p))
    {
        return Some("period changed since listing (now a trial)".into());
    }
    if fresh.autoprolong && !planned.autoprolong {
        return Some("autoprolong turned on since listing".into());
    }
    if fresh.expiry > planned.expiry {
        // Extended since the listing (by hand, by the billing, by another licrenew): no
        // problem to alert about; the next listing shows the new expiry.
        return Some(format!(
            "renewed elsewhere since listing ({} → {})",
            planned.expiry, fresh.expiry
        ));
    }
    if fresh.expiry != planned.expiry {
        return Some(format!(
            "expiry changed since listing ({} → {})",
            planned.expiry, fresh.expiry
        ));
    }
    None
}
