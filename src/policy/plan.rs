//! The planner: licenses + policies + journal + today → [`Plan`].
//!
//! Pure: no I/O, no clock, not async. One [`Action`] per license; the rules are applied in a
//! fixed order and the first that decides wins, so each skip carries the one reason that
//! mattered. The `reason` strings are short and stable: logs and tests match them.

use super::load::{Policies, ceil_days};
use crate::catalog::Catalog;
use crate::domain::{License, Status};
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// The state of one renewal attempt in the intent journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// Intent committed; the paid request may be in flight.
    Sending,
    /// The server answered `<ok/>`.
    Ok,
    /// The server answered a parsed `<error>`: nothing was bought.
    Error,
    /// The request may have been sent and its outcome is not known yet.
    Unknown,
    /// Reconciliation saw the expiry move: it was bought.
    ReconciledOk,
    /// Reconciliation saw nothing happen after the settle time.
    ReconciledFailed,
}

impl JournalState {
    pub const ALL: [JournalState; 6] = [
        JournalState::Sending,
        JournalState::Ok,
        JournalState::Error,
        JournalState::Unknown,
        JournalState::ReconciledOk,
        JournalState::ReconciledFailed,
    ];

    /// The stored spelling (same as serde's).
    pub fn as_str(&self) -> &'static str {
        match self {
            JournalState::Sending => "sending",
            JournalState::Ok => "ok",
            JournalState::Error => "error",
            JournalState::Unknown => "unknown",
            JournalState::ReconciledOk => "reconciled_ok",
            JournalState::ReconciledFailed => "reconciled_failed",
        }
    }

    pub fn parse(s: &str) -> Option<JournalState> {
        JournalState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// The outcome is not settled: nothing may be renewed for this license until it is.
    pub fn is_open(&self) -> bool {
        matches!(self, JournalState::Sending | JournalState::Unknown)
    }

    /// The renewal was bought.
    pub fn is_success(&self) -> bool {
        matches!(self, JournalState::Ok | JournalState::ReconciledOk)
    }
}

impl std::fmt::Display for JournalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The journal's `error_class` of a row closed because the license was gone.
pub const GONE_CLASS: &str = "gone";

/// What the planner needs from one journal row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    pub elid: i64,
    /// The license's expiry when the renewal was attempted (the journal's unique key with elid).
    pub expiry_before: NaiveDate,
    pub state: JournalState,
    /// A `reconciled_failed` row closed because the license was not found after `settle`: the
    /// license is gone, and is never renewed again for that expiry.
    pub gone: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Renew,
    Skip,
    /// An earlier renewal's outcome is still open: wait for reconciliation.
    Unknown,
}

/// The decision for one license.
#[derive(Clone, Debug, Serialize)]
pub struct Action {
    pub license: License,
    pub kind: ActionKind,
    /// Why it is not renewed (`None` on `Renew`).
    pub reason: Option<String>,
    /// Catalog period id to pay for; set only on `Renew`.
    pub period: Option<i64>,
    /// The policy that decided, whenever one was found for the product.
    pub policy_file: Option<PathBuf>,
    pub policy_hash: Option<String>,
    /// First day the license is due for renewal, once it was computed (rule 7 onwards).
    pub due: Option<NaiveDate>,
    /// What the renewal will cost, where it is known (filled in after planning: the planner
    /// does no I/O).
    pub cost: Option<crate::domain::Money>,
}

impl Action {
    fn new(license: &License, kind: ActionKind, reason: Option<String>) -> Action {
        Action {
            license: license.clone(),
            kind,
            reason,
            period: None,
            policy_file: None,
            policy_hash: None,
            due: None,
            cost: None,
        }
    }

    fn skip(license: &License, reason: impl Into<String>) -> Action {
        Action::new(license, ActionKind::Skip, Some(reason.into()))
    }
}

/// One action per license: renewals first (earliest expiry first), then the rest by elid.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn renewals(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| a.kind == ActionKind::Renew)
    }
}

/// First day a license expiring on `expiry` is due under `before`: `expiry` minus `before`
/// rounded up to whole days. Saturates at the earliest date for absurd `before` values.
pub fn due_date(expiry: NaiveDate, before: Duration) -> NaiveDate {
    expiry
        .checked_sub_days(Days::new(ceil_days(before)))
        .unwrap_or(NaiveDate::MIN)
}

/// Whether `period` may be paid for to renew a license of `product`: it is one of the product's
/// periods in the catalog and not a trial. The executor may call it again before paying.
pub fn is_renewal_period(catalog: &Catalog, product: i64, period: i64) -> bool {
    catalog
        .period_of(product, period)
        .is_some_and(|p| !p.kind.is_trial())
}

/// Decides what to do with each license. See the module docs of [`crate::policy`] for what it
/// must not do; the decision rules are listed in order inside.
pub fn evaluate(
    licenses: &[License],
    policies: &Policies,
    catalog: &Catalog,
    journal: &[JournalEntry],
    today: NaiveDate,
    max_renewals: u32,
) -> Plan {
    let open: HashSet<i64> = journal
        .iter()
        .filter(|e| e.state.is_open())
        .map(|e| e.elid)
        .collect();
    let bought: HashSet<(i64, NaiveDate)> = journal
        .iter()
        .filter(|e| e.state.is_success())
        .map(|e| (e.elid, e.expiry_before))
        .collect();
    let gone: HashSet<(i64, NaiveDate)> = journal
        .iter()
        .filter(|e| e.gone)
        .map(|e| (e.elid, e.expiry_before))
        .collect();
    let mut copies: HashMap<i64, usize> = HashMap::new();
    for l in licenses {
        *copies.entry(l.elid).or_default() += 1;
    }
    let ctx = Context {
        policies,
        catalog,
        open: &open,
        bought: &bought,
        gone: &gone,
        copies: &copies,
        today,
    };

    let (mut candidates, mut rest): (Vec<Action>, Vec<Action>) = licenses
        .iter()
        .map(|l| ctx.decide(l))
        .partition(|a| a.kind == ActionKind::Renew);

    // Rule 9: the cap. The most urgent (earliest expiry) win; the sort is stable.
    candidates.sort_by_key(|a| (a.license.expiry, a.license.elid));
    let cap = usize::try_from(max_renewals).unwrap_or(usize::MAX);
    let capped = candidates.split_off(cap.min(candidates.len()));
    rest.extend(capped.into_iter().map(|mut a| {
        a.kind = ActionKind::Skip;
        a.reason = Some("cycle cap".into());
        a.period = None;
        a
    }));

    rest.sort_by_key(|a| a.license.elid);
    candidates.extend(rest);
    Plan {
        actions: candidates,
    }
}

struct Context<'a> {
    policies: &'a Policies,
    catalog: &'a Catalog,
    open: &'a HashSet<i64>,
    bought: &'a HashSet<(i64, NaiveDate)>,
    gone: &'a HashSet<(i64, NaiveDate)>,
    copies: &'a HashMap<i64, usize>,
    today: NaiveDate,
}

impl Context<'_> {
    /// Rules 1–8 (and the duplicate guard) for one license; rule 9, the cap, needs them all.
    fn decide(&self, license: &License) -> Action {
        // 1. Only active and suspended (unpaid; a renewal reactivates it) licenses are renewed.
        let status_reason = match &license.status {
            Status::Active | Status::Suspended => None,
            Status::Deleted => Some("deleted"),
            Status::Processing => Some("processing"),
            Status::Ordered => Some("not active yet"),
            Status::Unknown(_) => Some("unknown status"),
        };
        if let Some(reason) = status_reason {
            return Action::skip(license, reason);
        }
        // 1b. A status change in progress (BILLmanager 6 `special_status`): never paid.
        if let Some(special) = &license.special {
            return Action::skip(license, format!("status change in progress ({special})"));
        }

        // 2. No policy, no renewal.
        let Some(policy) = self.policies.for_product(license.product) else {
            return Action::skip(license, "no policy");
        };
        let from_policy = |mut a: Action| {
            a.policy_file = Some(policy.file.clone());
            a.policy_hash = Some(policy.hash.clone());
            a
        };

        // 3. An open outcome (for any expiry) may already have bought a period.
        if self.open.contains(&license.elid) {
            return from_policy(Action::new(
                license,
                ActionKind::Unknown,
                Some("settling".into()),
            ));
        }

        // 3b. An earlier renewal found the license gone: whatever shows up under this id with
        // the same expiry is not paid for again without a person looking.
        if self.gone.contains(&(license.elid, license.expiry)) {
            return from_policy(Action::skip(license, "license gone"));
        }

        // 4. This billing cycle was already bought.
        if self.bought.contains(&(license.elid, license.expiry)) {
            return from_policy(Action::skip(license, "already renewed"));
        }

        // 5. The policy (or its first matching except) says no.
        let rule = policy.rule_for(license);
        if !rule.renew {
            return from_policy(Action::skip(
                license,
                format!("{}: renew = false", rule.source),
            ));
        }

        // 5b. The billing renews it by itself (server-side autoprolong): renewing too would
        // pay twice, unless the policy explicitly takes over.
        if license.autoprolong && !policy.override_autoprolong {
            return from_policy(Action::skip(license, "autoprolong"));
        }

        // 6. Trials are not renewed unless the policy opts in.
        // A row without a readable period might be a trial: treated as one.
        let on_trial = license
            .period
            .is_none_or(|id| self.catalog.is_trial(license.product, id));
        if on_trial && !policy.renew_trials {
            return from_policy(Action::skip(license, "trial"));
        }

        // 7. Not inside the `before` window yet (past-due licenses are inside it).
        let due = due_date(license.expiry, rule.before);
        let with_due = |a: Action| {
            let mut a = from_policy(a);
            a.due = Some(due);
            a
        };
        if self.today < due {
            return with_due(Action::skip(license, "not due"));
        }

        // 8. The period to pay for: validated at load, checked again here because paying for a
        // wrong one is not undoable.
        let Some(period) = rule.period else {
            return with_due(Action::skip(license, "no period"));
        };
        if !is_renewal_period(self.catalog, license.product, period) {
            return with_due(Action::skip(license, "period not valid for product"));
        }

        // The store keys licenses by elid, so two rows with one elid mean a sync bug: renewing
        // either could pay twice for one license.
        if self.copies.get(&license.elid).is_some_and(|&n| n > 1) {
            return with_due(Action::skip(license, "duplicate elid"));
        }

        // 10. Renew (rule 9, the cap, is applied over all candidates by `evaluate`).
        let mut a = with_due(Action::new(license, ActionKind::Renew, None));
        a.period = Some(period);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn day(s: &str) -> NaiveDate {
        crate::domain::parse_date(s).expect("a valid test date")
    }

    fn lite(elid: i64, expiry: &str) -> License {
        License {
            elid,
            licname: format!("srv{elid}"),
            ip: "198.51.100.7".into(),
            product: 7,
            period: Some(8),
            expiry: day(expiry),
            status: Status::Active,
            autoprolong: false,
            special: None,
            cost: None,
            pricelist_label: None,
        }
    }

    fn policies(files: &[(&str, &str)]) -> Policies {
        let sources: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(name, text)| (PathBuf::from(name), (*text).to_owned()))
            .collect();
        Policies::from_sources(
            &sources,
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        )
        .expect("valid test policies")
    }

    const LITE_MONTHLY: &str = "product = 7\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n";

    fn lite_monthly() -> Policies {
        policies(&[("lite.toml", LITE_MONTHLY)])
    }

    fn plan(licenses: &[License], policies: &Policies, journal: &[JournalEntry]) -> Plan {
        evaluate(
            licenses,
            policies,
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
            journal,
            day("2025-03-01"),
            10,
        )
    }

    fn only(plan: &Plan) -> &Action {
        assert_eq!(plan.actions.len(), 1, "{plan:?}");
        &plan.actions[0]
    }

    fn entry(elid: i64, expiry: &str, state: JournalState) -> JournalEntry {
        JournalEntry {
            gone: false,
            elid,
            expiry_before: day(expiry),
            state,
        }
    }

    #[test]
    fn a_due_license_with_a_policy_is_renewed_with_the_policy_period_file_and_hash() {
        // Arrange
        let ps = lite_monthly();
        let policy: &Policy = ps.for_product(7).expect("lite");

        // Act
        let p = plan(&[lite(1, "2025-03-05")], &ps, &[]);

        // Assert
        let a = only(&p);
        assert_eq!(a.kind, ActionKind::Renew);
        assert_eq!(a.reason, None);
        assert_eq!(a.period, Some(8));
        assert_eq!(a.policy_file, Some(PathBuf::from("lite.toml")));
        assert_eq!(a.policy_hash.as_deref(), Some(policy.hash.as_str()));
        assert_eq!(a.due, Some(day("2025-02-26")));
        assert_eq!(p.renewals().count(), 1);
    }

    #[test]
    fn statuses_other_than_active_and_suspended_are_skipped_with_their_reason() {
        // Arrange
        let cases = [
            (Status::Deleted, "deleted"),
            (Status::Processing, "processing"),
            (Status::Ordered, "not active yet"),
            (Status::Unknown("9".into()), "unknown status"),
        ];

        for (status, reason) in cases {
            let mut l = lite(1, "2025-03-02");
            l.status = status;

            // Act
            let p = plan(&[l], &lite_monthly(), &[]);

            // Assert
            let a = only(&p);
            assert_eq!(a.kind, ActionKind::Skip);
            assert_eq!(a.reason.as_deref(), Some(reason));
            assert_eq!(a.period, None);
        }
    }

    #[test]
    fn a_suspended_past_due_license_is_renewed() {
        // Arrange
        let mut l = lite(1, "2025-02-10");
        l.status = Status::Suspended;

        // Act
        let p = plan(&[l], &lite_monthly(), &[]);

        // Assert
        assert_eq!(only(&p).kind, ActionKind::Renew);
    }

    #[test]
    fn a_license_without_a_policy_for_its_product_is_skipped() {
        // Arrange
        let mut l = lite(1, "2025-03-02");
        l.product = 11;
        l.period = Some(16);

        // Act
        let p = plan(&[l], &lite_monthly(), &[]);

        // Assert
        let a = only(&p);
        assert_eq!(a.kind, ActionKind::Skip);
        assert_eq!(a.reason.as_deref(), Some("no policy"));
        assert_eq!(a.policy_file, None);
    }

    #[test]
    fn an_open_journal_entry_for_any_expiry_makes_the_license_settling() {
        // Arrange
        let journal = [
            entry(1, "2025-01-31", JournalState::Sending),
            entry(2, "2024-12-31", JournalState::Unknown),
        ];

        // Act
        let p = plan(
            &[lite(1, "2025-03-02"), lite(2, "2025-03-02")],
            &lite_monthly(),
            &journal,
        );

        // Assert
        for a in &p.actions {
            assert_eq!(a.kind, ActionKind::Unknown, "{a:?}");
            assert_eq!(a.reason.as_deref(), Some("settling"));
        }
        assert_eq!(p.renewals().count(), 0);
    }

    #[test]
    fn a_success_entry_for_the_same_expiry_means_already_renewed() {
        // Arrange
        let journal = [
            entry(1, "2025-03-02", JournalState::Ok),
            entry(2, "2025-03-02", JournalState::ReconciledOk),
            entry(3, "2025-02-02", JournalState::Ok),
        ];
        let licenses = [
            lite(1, "2025-03-02"),
            lite(2, "2025-03-02"),
            lite(3, "2025-03-02"),
        ];

        // Act
        let p = plan(&licenses, &lite_monthly(), &journal);

        // Assert
        let reasons: Vec<(i64, Option<&str>)> = p
            .actions
            .iter()
            .map(|a| (a.license.elid, a.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (3, None),
                (1, Some("already renewed")),
                (2, Some("already renewed"))
            ]
        );
    }

    #[test]
    fn error_and_reconciled_failed_entries_do_not_block_a_renewal() {
        // Arrange
        let journal = [
            entry(1, "2025-03-02", JournalState::Error),
            entry(1, "2025-03-02", JournalState::ReconciledFailed),
        ];

        // Act
        let p = plan(&[lite(1, "2025-03-02")], &lite_monthly(), &journal);

        // Assert
        assert_eq!(only(&p).kind, ActionKind::Renew);
    }

    #[test]
    fn renew_false_is_skipped_naming_the_policy_or_the_except() {
        // Arrange
        let ps = policies(&[(
            "lite.toml",
            "product = 7\nrenew = false\nperiod = 8\n[[except]]\nelid = 2\nrenew = true\n[[except]]\nlicname = \"srv3\"\nrenew = false\n",
        )]);
        let licenses = [
            lite(1, "2025-03-02"),
            lite(2, "2025-03-02"),
            lite(3, "2025-03-02"),
        ];

        // Act
        let p = plan(&licenses, &ps, &[]);

        // Assert
        let reasons: Vec<(i64, Option<&str>)> = p
            .actions
            .iter()
            .map(|a| (a.license.elid, a.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (2, None),
                (1, Some("policy: renew = false")),
                (3, Some("except #2: renew = false"))
            ]
        );
    }

    #[test]
    fn a_trial_license_is_skipped_unless_the_policy_renews_trials() {
        // Arrange
        let mut l = lite(1, "2025-03-02");
        l.period = Some(7);
        let opt_in = policies(&[(
            "lite.toml",
            "product = 7\nrenew = true\nperiod = 8\nrenew_trials = true\n",
        )]);

        // Act
        let refused = plan(std::slice::from_ref(&l), &lite_monthly(), &[]);
        let allowed = plan(&[l], &opt_in, &[]);

        // Assert
        assert_eq!(only(&refused).reason.as_deref(), Some("trial"));
        assert_eq!(only(&allowed).kind, ActionKind::Renew);
        assert_eq!(only(&allowed).period, Some(8));
    }

    #[test]
    fn a_license_outside_the_before_window_is_not_due_and_shows_its_due_date() {
        // Arrange: today is 2025-03-01; 7 days before 2025-03-08 is due on the dot.
        let licenses = [lite(1, "2025-03-09"), lite(2, "2025-03-08")];

        // Act
        let p = plan(&licenses, &lite_monthly(), &[]);

        // Assert
        let second = &p.actions[1];
        assert_eq!(p.actions[0].license.elid, 2);
        assert_eq!(p.actions[0].kind, ActionKind::Renew);
        assert_eq!(second.license.elid, 1);
        assert_eq!(second.reason.as_deref(), Some("not due"));
        assert_eq!(second.due, Some(day("2025-03-02")));
        assert_eq!(second.policy_file, Some(PathBuf::from("lite.toml")));
    }

    #[test]
    fn a_partial_day_in_before_rounds_the_window_up() {
        // Arrange: 36h → 2 days, so a license expiring 2025-03-03 is due on 2025-03-01.
        let ps = policies(&[(
            "lite.toml",
            "product = 7\nrenew = true\nperiod = 8\nbefore = \"36h\"\n",
        )]);

        // Act
        let p = plan(&[lite(1, "2025-03-03"), lite(2, "2025-03-04")], &ps, &[]);

        // Assert
        let kinds: Vec<(i64, ActionKind)> =
            p.actions.iter().map(|a| (a.license.elid, a.kind)).collect();
        assert_eq!(kinds, vec![(1, ActionKind::Renew), (2, ActionKind::Skip)]);
    }

    #[test]
    fn a_rule_without_a_period_is_skipped_defensively() {
        // Arrange: a policy cannot load like this, so build it by hand through a valid one.
        let mut ps = policies(&[("lite.toml", "product = 7\nrenew = false\n")]);
        let mut list: Vec<Policy> = ps.iter().cloned().collect();
        list[0].renew = true;
        ps = Policies::from_list_for_tests(list);

        // Act
        let p = plan(&[lite(1, "2025-03-02")], &ps, &[]);

        // Assert
        assert_eq!(only(&p).reason.as_deref(), Some("no period"));
    }

    #[test]
    fn a_period_of_another_product_or_a_trial_is_refused_at_plan_time_too() {
        for bad in [16, 7, 99_999] {
            // Arrange
            let mut list: Vec<Policy> = lite_monthly().iter().cloned().collect();
            list[0].period = Some(bad);
            let ps = Policies::from_list_for_tests(list);

            // Act
            let p = plan(&[lite(1, "2025-03-02")], &ps, &[]);

            // Assert
            assert_eq!(
                only(&p).reason.as_deref(),
                Some("period not valid for product"),
                "period {bad}"
            );
        }
    }

    #[test]
    fn the_cycle_cap_keeps_the_earliest_expiries() {
        // Arrange
        let licenses = [
            lite(4, "2025-03-04"),
            lite(1, "2025-03-03"),
            lite(3, "2025-02-20"),
            lite(2, "2025-03-02"),
        ];

        // Act
        let p = evaluate(
            &licenses,
            &lite_monthly(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
            &[],
            day("2025-03-01"),
            2,
        );

        // Assert
        let got: Vec<(i64, ActionKind, Option<&str>)> = p
            .actions
            .iter()
            .map(|a| (a.license.elid, a.kind, a.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, ActionKind::Renew, None),
                (2, ActionKind::Renew, None),
                (1, ActionKind::Skip, Some("cycle cap")),
                (4, ActionKind::Skip, Some("cycle cap")),
            ]
        );
        assert!(p.actions[2..].iter().all(|a| a.period.is_none()));
    }

    #[test]
    fn a_zero_cap_renews_nothing() {
        // Arrange
        let licenses = [lite(1, "2025-03-02")];

        // Act
        let p = evaluate(
            &licenses,
            &lite_monthly(),
            &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
            &[],
            day("2025-03-01"),
            0,
        );

        // Assert
        assert_eq!(only(&p).reason.as_deref(), Some("cycle cap"));
    }

    #[test]
    fn two_rows_with_one_elid_are_both_skipped() {
        // Arrange
        let licenses = [lite(1, "2025-03-02"), lite(1, "2025-03-03")];

        // Act
        let p = plan(&licenses, &lite_monthly(), &[]);

        // Assert
        assert_eq!(p.renewals().count(), 0);
        assert!(
            p.actions
                .iter()
                .all(|a| a.reason.as_deref() == Some("duplicate elid"))
        );
    }

    #[test]
    fn non_renewals_are_ordered_by_elid() {
        // Arrange
        let mut deleted = lite(5, "2025-03-02");
        deleted.status = Status::Deleted;
        let licenses = [lite(9, "2025-06-01"), deleted, lite(2, "2025-06-01")];

        // Act
        let p = plan(&licenses, &lite_monthly(), &[]);

        // Assert
        let elids: Vec<i64> = p.actions.iter().map(|a| a.license.elid).collect();
        assert_eq!(elids, vec![2, 5, 9]);
    }

    #[test]
    fn journal_states_round_trip_through_their_names_and_serde() {
        for state in JournalState::ALL {
            // Arrange
            let name = state.as_str();

            // Act
            let parsed = JournalState::parse(name);
            let json = serde_json::to_string(&state).expect("serialize");

            // Assert
            assert_eq!(parsed, Some(state));
            assert_eq!(json, format!("\"{name}\""));
        }
        assert_eq!(JournalState::parse("Ok"), None);
        let open: Vec<&str> = JournalState::ALL
            .iter()
            .filter(|s| s.is_open())
            .map(|s| s.as_str())
            .collect();
        let success: Vec<&str> = JournalState::ALL
            .iter()
            .filter(|s| s.is_success())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(open, ["sending", "unknown"]);
        assert_eq!(success, ["ok", "reconciled_ok"]);
    }

    #[test]
    fn a_plan_serializes_with_snake_case_kinds() {
        // Arrange
        let p = plan(&[lite(1, "2025-03-02")], &lite_monthly(), &[]);

        // Act
        let json = serde_json::to_value(&p).expect("serialize");

        // Assert
        assert_eq!(json["actions"][0]["kind"], "renew");
        assert_eq!(json["actions"][0]["due"], "2025-02-23");
        assert_eq!(json["actions"][0]["period"], 8);
    }
}
