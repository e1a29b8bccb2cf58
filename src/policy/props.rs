//! Property tests: over random licenses of the built-in catalog, random policy files (loaded
//! through `from_sources`, so only what the loader accepts), random journals, days and caps,
//! the planner never breaks a money rule. The checks are written from the rules, not from the
//! planner's code.

use super::load::ceil_days;
use super::*;
use crate::catalog::{Catalog, PeriodKind};
use crate::domain::{License, Status};
use chrono::{Days, NaiveDate};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use std::collections::HashMap;
use std::path::PathBuf;

const LICNAMES: &[&str] = &["web-1", "web-22", "test-a", "TEST-b", "db", "mail"];
const GLOBS: &[&str] = &["test-*", "web-?", "*", "db", "MAIL"];
const IPS: &[&str] = &[
    "198.51.100.1",
    "198.51.100.2",
    "2001:db8::1",
    "2001:DB8:0::1",
];
const ELIDS: std::ops::Range<i64> = 1000..1025;
/// A price id no product has: its licenses must never be renewed.
const STRAY_PRODUCT: i64 = 999;

fn base() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).expect("a valid date")
}

fn add_days(d: NaiveDate, n: i64) -> NaiveDate {
    if n >= 0 {
        d.checked_add_days(Days::new(n.unsigned_abs()))
    } else {
        d.checked_sub_days(Days::new(n.unsigned_abs()))
    }
    .expect("test dates stay in range")
}

#[derive(Clone, Debug)]
struct RawLicense {
    elid: i64,
    product: Index,
    period_pick: u8,
    period: Index,
    period_raw: i64,
    expiry: i64,
    status: u8,
    licname: Index,
    ip: Index,
}

fn raw_license() -> impl Strategy<Value = RawLicense> {
    (
        ELIDS,
        any::<Index>(),
        0u8..4,
        any::<Index>(),
        -120i64..700,
        -40i64..120,
        0u8..10,
        any::<Index>(),
        any::<Index>(),
    )
        .prop_map(
            |(elid, product, period_pick, period, period_raw, expiry, status, licname, ip)| {
                RawLicense {
                    elid,
                    product,
                    period_pick,
                    period,
                    period_raw,
                    expiry,
                    status,
                    licname,
                    ip,
                }
            },
        )
}

fn build_license(raw: &RawLicense, catalog: &Catalog) -> License {
    let mut prices: Vec<i64> = catalog.products.iter().map(|p| p.price).collect();
    prices.push(STRAY_PRODUCT);
    let product = *raw.product.get(&prices);
    let own: Vec<i64> = catalog
        .by_price(product)
        .map(|p| p.periods.iter().map(|x| x.id).collect())
        .unwrap_or_default();
    let all: Vec<i64> = catalog
        .products
        .iter()
        .flat_map(|p| p.periods.iter().map(|x| x.id))
        .collect();
    let period = match raw.period_pick {
        0 if !own.is_empty() => Some(*raw.period.get(&own)),
        0 | 1 => Some(*raw.period.get(&all)),
        2 => Some(raw.period_raw),
        _ => None,
    };
    // Mostly renewable statuses: the others are one rule, the renewable ones reach all.
    let status = match raw.status {
        0 => Status::Ordered,
        1 => Status::Deleted,
        2 => Status::Processing,
        3 => Status::Unknown("7".into()),
        4 | 5 => Status::Suspended,
        _ => Status::Active,
    };
    License {
        elid: raw.elid,
        licname: (*raw.licname.get(LICNAMES)).to_owned(),
        ip: (*raw.ip.get(IPS)).to_owned(),
        product,
        period,
        expiry: add_days(base(), raw.expiry),
        status,
        autoprolong: false,
        special: None,
        cost: None,
        pricelist_label: None,
    }
}

#[derive(Clone, Debug)]
struct RawExcept {
    licname: Option<Index>,
    elid: Option<i64>,
    ip: Option<Index>,
    renew: Option<bool>,
    period: Option<Index>,
    before_hours: Option<u32>,
}

#[derive(Clone, Debug)]
struct RawPolicy {
    renew: bool,
    period: Option<Index>,
    before_hours: Option<u32>,
    renew_trials: bool,
    excepts: Vec<RawExcept>,
}

/// `before` up to 27 days minus an hour: always shorter than the shortest renewal period.
fn before_hours() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(0u32..27 * 24)
}

fn raw_except() -> impl Strategy<Value = RawExcept> {
    (
        prop::option::of(any::<Index>()),
        prop::option::of(ELIDS),
        prop::option::of(any::<Index>()),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<Index>()),
        before_hours(),
    )
        .prop_map(
            |(licname, elid, ip, renew, period, before_hours)| RawExcept {
                licname,
                elid,
                ip,
                renew,
                period,
                before_hours,
            },
        )
}

fn raw_policy() -> impl Strategy<Value = RawPolicy> {
    (
        prop::bool::weighted(0.75),
        prop::option::of(any::<Index>()),
        before_hours(),
        any::<bool>(),
        prop::collection::vec(raw_except(), 0..4),
    )
        .prop_map(
            |(renew, period, before_hours, renew_trials, excepts)| RawPolicy {
                renew,
                period,
                before_hours,
                renew_trials,
                excepts,
            },
        )
}

/// Writes a policy file the loader accepts: paid periods only, a period wherever it renews,
/// at least one matcher per except.
fn render_policy(raw: &RawPolicy, price: i64, catalog: &Catalog) -> String {
    let paid: Vec<i64> = catalog
        .by_price(price)
        .map(|p| {
            p.periods
                .iter()
                .filter(|x| !x.kind.is_trial())
                .map(|x| x.id)
                .collect()
        })
        .unwrap_or_default();
    let mut period = raw.period.as_ref().map(|i| *i.get(&paid));
    if raw.renew && period.is_none() {
        period = Some(paid[0]);
    }
    let mut text = format!("product = {price}\nrenew = {}\n", raw.renew);
    if let Some(p) = period {
        text += &format!("period = {p}\n");
    }
    if let Some(h) = raw.before_hours {
        text += &format!("before = \"{h}h\"\n");
    }
    text += &format!("renew_trials = {}\n", raw.renew_trials);
    for e in &raw.excepts {
        text += "\n[[except]]\n";
        let mut matched = false;
        if let Some(g) = &e.licname {
            text += &format!("licname = \"{}\"\n", g.get(GLOBS));
            matched = true;
        }
        if let Some(ip) = &e.ip {
            text += &format!("ip = \"{}\"\n", ip.get(IPS));
            matched = true;
        }
        if let Some(elid) = e.elid.or((!matched).then_some(ELIDS.start)) {
            text += &format!("elid = {elid}\n");
        }
        let own_period = e.period.as_ref().map(|i| *i.get(&paid));
        let renews = e.renew.unwrap_or(raw.renew);
        let renew = if renews && own_period.or(period).is_none() {
            Some(false)
        } else {
            e.renew
        };
        if let Some(r) = renew {
            text += &format!("renew = {r}\n");
        }
        if let Some(p) = own_period {
            text += &format!("period = {p}\n");
        }
        if let Some(h) = e.before_hours {
            text += &format!("before = \"{h}h\"\n");
        }
    }
    text
}

#[derive(Debug)]
struct Scenario {
    licenses: Vec<License>,
    policies: Policies,
    journal: Vec<JournalEntry>,
    today: NaiveDate,
    cap: u32,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let catalog = Catalog::builtin().for_api(crate::config::Api::Billmgr4);
    let products = catalog.products.len();
    (
        prop::collection::vec(raw_license(), 0..14),
        prop::collection::vec(
            prop::option::weighted(0.8, raw_policy()),
            products..=products,
        ),
        prop::collection::vec((any::<Index>(), ELIDS, 0u8..3, 0usize..6), 0..8),
        0i64..90,
        0u32..6,
    )
        .prop_map(
            move |(raw_licenses, raw_policies, raw_journal, today, cap)| {
                let licenses: Vec<License> = raw_licenses
                    .iter()
                    .map(|r| build_license(r, &catalog))
                    .collect();
                let sources: Vec<(PathBuf, String)> = raw_policies
                    .iter()
                    .zip(&catalog.products)
                    .filter_map(|(raw, product)| {
                        raw.as_ref().map(|raw| {
                            (
                                PathBuf::from(format!("policies.d/{}.toml", product.price)),
                                render_policy(raw, product.price, &catalog),
                            )
                        })
                    })
                    .collect();
                let policies = Policies::from_sources(&sources, &catalog)
                    .unwrap_or_else(|e| panic!("generated policies must load: {e}\n{sources:?}"));
                let journal = raw_journal
                    .iter()
                    .map(|(license, stray_elid, expiry_pick, state)| {
                        let (elid, expiry) =
                            match licenses.get(license.index(licenses.len().max(1))) {
                                Some(l) if *expiry_pick < 2 => (
                                    l.elid,
                                    add_days(l.expiry, if *expiry_pick == 0 { 0 } else { -30 }),
                                ),
                                _ => (*stray_elid, base()),
                            };
                        JournalEntry {
                            gone: false,
                            elid,
                            expiry_before: expiry,
                            state: JournalState::ALL[*state],
                        }
                    })
                    .collect();
                Scenario {
                    licenses,
                    policies,
                    journal,
                    today: add_days(base(), today),
                    cap,
                }
            },
        )
}

fn run(s: &Scenario) -> Plan {
    evaluate(
        &s.licenses,
        &s.policies,
        &Catalog::builtin().for_api(crate::config::Api::Billmgr4),
        &s.journal,
        s.today,
        s.cap,
    )
}

#[test]
fn the_random_scenarios_reach_every_decision() {
    // Arrange: properties over plans that never renew would prove nothing.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = scenario();
    let mut seen: HashMap<String, usize> = HashMap::new();

    // Act
    for _ in 0..300 {
        let s = strategy
            .new_tree(&mut runner)
            .expect("a scenario")
            .current();
        for a in run(&s).actions {
            let key = match a.kind {
                ActionKind::Renew => "renew".to_owned(),
                _ => a.reason.unwrap_or_default().replace(char::is_numeric, "N"),
            };
            *seen.entry(key).or_default() += 1;
        }
    }

    // Assert
    for want in [
        "renew",
        "deleted",
        "processing",
        "not active yet",
        "unknown status",
        "no policy",
        "settling",
        "already renewed",
        "policy: renew = false",
        "except #N: renew = false",
        "trial",
        "not due",
        "cycle cap",
        "duplicate elid",
    ] {
        assert!(
            seen.get(want).is_some_and(|&n| n > 0),
            "{want:?} never seen: {seen:?}"
        );
    }
}

proptest! {

    #[test]
    fn the_planner_gives_exactly_one_action_per_license(s in scenario()) {
        let plan = run(&s);

        let mut want: Vec<&License> = s.licenses.iter().collect();
        let mut got: Vec<&License> = plan.actions.iter().map(|a| &a.license).collect();
        want.sort_by_key(|l| (l.elid, l.expiry, l.product, l.period, l.licname.clone(), l.ip.clone(), l.status.code()));
        got.sort_by_key(|l| (l.elid, l.expiry, l.product, l.period, l.licname.clone(), l.ip.clone(), l.status.code()));
        prop_assert_eq!(want, got);
        for a in &plan.actions {
            prop_assert_eq!(a.reason.is_none(), a.kind == ActionKind::Renew, "{:?}", a);
        }
    }

    #[test]
    fn the_planner_never_renews_without_a_policy(s in scenario()) {
        let plan = run(&s);

        for a in plan.renewals() {
            let policy = s.policies.for_product(a.license.product);
            prop_assert!(policy.is_some(), "{:?}", a);
            prop_assert_eq!(a.policy_file.as_ref(), policy.map(|p| &p.file));
            prop_assert_eq!(a.policy_hash.as_ref(), policy.map(|p| &p.hash));
            prop_assert!(policy.is_some_and(|p| p.rule_for(&a.license).renew), "{:?}", a);
        }
    }

    #[test]
    fn the_planner_never_renews_a_license_that_is_not_active_or_suspended(s in scenario()) {
        let plan = run(&s);

        for a in plan.renewals() {
            prop_assert!(
                matches!(a.license.status, Status::Active | Status::Suspended),
                "{:?}", a
            );
        }
    }

    #[test]
    fn the_planner_never_renews_a_trial_unless_the_policy_renews_trials(s in scenario()) {
        let catalog = Catalog::builtin().for_api(crate::config::Api::Billmgr4);

        let plan = run(&s);

        for a in plan.renewals() {
            let on_trial = a.license.period
                .and_then(|id| catalog.by_period(id))
                .is_some_and(|(_, p)| p.kind == PeriodKind::Trial);
            let opted_in = s.policies.for_product(a.license.product).is_some_and(|p| p.renew_trials);
            prop_assert!(!on_trial || opted_in, "{:?}", a);
        }
    }

    #[test]
    fn the_planner_never_renews_outside_the_before_window(s in scenario()) {
        let plan = run(&s);

        for a in plan.renewals() {
            let policy = s.policies.for_product(a.license.product).expect("checked elsewhere");
            let rule = policy.rule_for(&a.license);
            let days_left = (a.license.expiry - s.today).num_days();
            let window = i64::try_from(ceil_days(rule.before)).expect("small");
            prop_assert!(days_left <= window, "{:?} with {:?}", a, rule);
            prop_assert_eq!(a.due, Some(add_days(a.license.expiry, -window)));
        }
    }

    #[test]
    fn the_planner_never_renews_a_cycle_already_bought_or_still_open(s in scenario()) {
        let plan = run(&s);

        for a in plan.renewals() {
            for e in s.journal.iter().filter(|e| e.elid == a.license.elid) {
                prop_assert!(!e.state.is_open(), "{:?} while {:?}", a, e);
                prop_assert!(
                    !(e.state.is_success() && e.expiry_before == a.license.expiry),
                    "{:?} after {:?}", a, e
                );
            }
        }
        let mut per_elid: HashMap<i64, usize> = HashMap::new();
        for a in plan.renewals() {
            *per_elid.entry(a.license.elid).or_default() += 1;
        }
        prop_assert!(per_elid.values().all(|&n| n == 1), "{:?}", per_elid);
    }

    #[test]
    fn the_planner_never_exceeds_the_cap_and_keeps_the_most_urgent(s in scenario()) {
        let plan = run(&s);

        let renewed: Vec<&Action> = plan.renewals().collect();
        prop_assert!(renewed.len() <= s.cap as usize);
        let capped: Vec<&Action> = plan.actions.iter()
            .filter(|a| a.reason.as_deref() == Some("cycle cap"))
            .collect();
        if !capped.is_empty() {
            prop_assert_eq!(renewed.len(), s.cap as usize);
        }
        for c in &capped {
            for r in &renewed {
                prop_assert!(r.license.expiry <= c.license.expiry, "{:?} before {:?}", r, c);
            }
        }
        let first_rest = plan.actions.iter().position(|a| a.kind != ActionKind::Renew);
        if let Some(i) = first_rest {
            prop_assert!(plan.actions[i..].iter().all(|a| a.kind != ActionKind::Renew));
        }
    }

    #[test]
    fn the_planner_never_pays_for_a_trial_or_another_products_period(s in scenario()) {
        let catalog = Catalog::builtin().for_api(crate::config::Api::Billmgr4);

        let plan = run(&s);

        for a in plan.renewals() {
            let period = a.period.and_then(|id| catalog.by_period(id));
            prop_assert!(period.is_some(), "{:?}", a);
            if let Some((owner, p)) = period {
                prop_assert_eq!(owner.price, a.license.product, "{:?}", a);
                prop_assert!(!p.kind.is_trial(), "{:?}", a);
            }
        }
    }
}
