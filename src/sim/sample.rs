//! Deterministic sample data: a splitmix64 generator and the sample license book.
//!
//! Owns: turning (`licenses`, `seed`, today) into the same licenses every time. Must not:
//! read the clock or use any randomness other than its seed, so two runs with one seed agree.

use chrono::{Days, NaiveDate};

use super::catalog::{LIFETIME_EXPIRY, PRODUCTS, TARIFFS, TRIAL_PERIOD, Term};
use super::{SimApi, SimLicense};

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for test data and ids.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0; the tiny modulo bias does not matter here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The first sample license id; orders continue after the highest id.
pub(crate) const FIRST_ID: i64 = 1001;

pub(crate) fn lifetime_expiry() -> NaiveDate {
    let (y, m, d) = LIFETIME_EXPIRY;
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MAX)
}

/// A unique documentation-style address for sample number `i`: 198.18.0.0/15 (benchmarking
/// range, 131,070 hosts) first, then 10.0.0.0/8 for very large books.
pub(crate) fn sample_ip(i: usize) -> String {
    const BENCH: u32 = 0xC612_0000; // 198.18.0.0
    const BENCH_HOSTS: usize = (1 << 17) - 2;
    let addr = if i < BENCH_HOSTS {
        BENCH + 1 + i as u32
    } else {
        0x0A00_0001_u32.wrapping_add((i - BENCH_HOSTS) as u32) // 10.0.0.1 onwards
    };
    std::net::Ipv4Addr::from(addr).to_string()
}

fn shift(today: NaiveDate, days: i64) -> NaiveDate {
    if days >= 0 {
        today.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        today.checked_sub_days(Days::new(days.unsigned_abs()))
    }
    .unwrap_or(today)
}

/// `n` sample licenses for `seed`, relative to `today`, in the shape `api` stores them.
pub(crate) fn generate_for(api: SimApi, n: usize, seed: u64, today: NaiveDate) -> Vec<SimLicense> {
    match api {
        SimApi::Billmgr4 => generate(n, seed, today),
        SimApi::Billmgr5 => generate_v5(n, seed, today),
    }
}

/// Status, expiry and last IP change, shared by both generations (same draws, same order).
fn life(rng: &mut SplitMix64, term: Term, today: NaiveDate) -> (u8, NaiveDate, Option<NaiveDate>) {
    let status = match rng.below(100) {
        0..3 => 4,
        3..8 => 3,
        8 => 5,
        _ => 2,
    };
    let offset = rng.below(81) as i64 - 20;
    let expiredate = match (term, status) {
        (Term::Lifetime, _) => lifetime_expiry(),
        (_, 3) => shift(today, -(1 + offset.rem_euclid(20))),
        _ => shift(today, offset),
    };
    let last_ip_change = (rng.below(100) < 5).then_some(today);
    (status, expiredate, last_ip_change)
}

/// `n` BILLmanager 4 sample licenses for `seed`, relative to `today`.
///
/// Products are spread over the whole table; ~5% trial, ~5% lifetime, the rest on a 1-month
/// (sometimes 1-year) period; expiries from today−20 to today+60; status mostly 2, ~5% 3
/// (suspended, already expired), ~3% 4 (deleted), ~1% 5 (processing); ~5% changed their IP
/// today, so the once-a-month rule bites.
pub(crate) fn generate(n: usize, seed: u64, today: NaiveDate) -> Vec<SimLicense> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Choose the kind of period first, then a product that sells it, so the shares hold
        // even though DNSmanager and IPmanager only sell trial and lifetime.
        let roll = rng.below(100);
        let wanted = |t: &Term| match roll {
            0..5 => *t == Term::Trial,
            5..10 => *t == Term::Lifetime,
            10..25 => *t == Term::Months(12),
            _ => *t == Term::Months(1),
        };
        let sellers: Vec<_> = PRODUCTS
            .iter()
            .filter(|p| p.periods.iter().any(|(_, t)| wanted(t)))
            .collect();
        let product = sellers[rng.below(sellers.len() as u64) as usize];
        let Some(&(period, term)) = product.periods.iter().find(|(_, t)| wanted(t)) else {
            continue;
        };

        let (status, expiredate, last_ip_change) = life(&mut rng, term, today);
        out.push(SimLicense {
            id: FIRST_ID + i as i64,
            licname: format!("srv{:04}.example.net", i + 1),
            ip: sample_ip(i),
            price: product.price,
            period,
            expiredate,
            status,
            last_ip_change,
            autoprolong: None,
        });
    }
    out
}

/// `n` BILLmanager 5/6 sample licenses for `seed`, relative to `today`: `price` holds a tariff
/// of [`TARIFFS`], `period` months.
///
/// ~5% trial (`-100`), ~15% on 12 months, the rest on 1 month (DNSmanager 6, which sells no
/// month, gets 12); ~15% of the paid ones have server-side autoprolong on, for their own period
/// or the other one the tariff sells; expiries, statuses and IP changes spread as for v4.
pub(crate) fn generate_v5(n: usize, seed: u64, today: NaiveDate) -> Vec<SimLicense> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_0005_0006_0000);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let tariff = &TARIFFS[rng.below(TARIFFS.len() as u64) as usize];
        let wanted = match rng.below(100) {
            0..5 => TRIAL_PERIOD,
            5..20 => 12,
            _ => 1,
        };
        let period = if tariff.term(wanted).is_some() {
            wanted
        } else {
            12
        };
        let term = tariff.term(period).unwrap_or(Term::Months(12));
        let (status, expiredate, last_ip_change) = life(&mut rng, term, today);
        let autoprolong = if period != TRIAL_PERIOD && rng.below(100) < 16 {
            let months: Vec<i64> = tariff.renewal_months().collect();
            let pick = months[rng.below(months.len() as u64) as usize];
            u32::try_from(pick).ok()
        } else {
            None
        };
        out.push(SimLicense {
            id: FIRST_ID + i as i64,
            licname: format!("srv{:04}.example.net", i + 1),
            ip: sample_ip(i),
            price: tariff.pricelist,
            period,
            expiredate,
            status,
            last_ip_change,
            autoprolong,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 15).expect("valid date")
    }

    #[test]
    fn the_same_seed_gives_the_same_licenses() {
        assert_eq!(generate(500, 7, day()), generate(500, 7, day()));
        assert_ne!(generate(500, 7, day()), generate(500, 8, day()));
    }

    #[test]
    fn ids_and_ips_are_unique_and_ids_start_at_1001() {
        let l = generate(2000, 1, day());
        assert_eq!(l.len(), 2000);
        assert_eq!(l[0].id, 1001);
        assert_eq!(l.iter().map(|x| &x.ip).collect::<HashSet<_>>().len(), 2000);
        assert_eq!(l.iter().map(|x| x.id).collect::<HashSet<_>>().len(), 2000);
    }

    #[test]
    fn addresses_stay_unique_past_the_benchmarking_range() {
        let a: HashSet<String> = (0..140_000).map(sample_ip).collect();
        assert_eq!(a.len(), 140_000);
        assert_eq!(sample_ip(0), "198.18.0.1");
    }

    #[test]
    fn v5_samples_use_the_tariff_table_months_trials_and_some_autoprolong() {
        let l = generate_v5(5000, 42, day());
        assert_eq!(l, generate_v5(5000, 42, day()));
        assert_eq!(l[0].id, 1001);
        for t in TARIFFS {
            assert!(l.iter().any(|x| x.price == t.pricelist), "no {}", t.name);
        }
        for x in &l {
            let t = super::super::catalog::tariff(x.price).expect("a known tariff");
            assert!(t.term(x.period).is_some(), "{x:?}");
            if let Some(m) = x.autoprolong {
                assert!(x.period != TRIAL_PERIOD, "{x:?}");
                assert!(t.term(i64::from(m)) == Some(Term::Months(m)), "{x:?}");
            }
        }
        let count = |f: &dyn Fn(&SimLicense) -> bool| l.iter().filter(|x| f(x)).count();
        let trials = count(&|x| x.period == TRIAL_PERIOD);
        let yearly = count(&|x| x.period == 12);
        let monthly = count(&|x| x.period == 1);
        let auto = count(&|x| x.autoprolong.is_some());
        assert!((150..400).contains(&trials), "{trials} trials");
        assert!(monthly > yearly && yearly > trials, "{monthly} {yearly}");
        assert!((550..950).contains(&auto), "{auto} with autoprolong");
        assert!(count(&|x| x.autoprolong == Some(1)) > 0);
        assert!(count(&|x| x.autoprolong == Some(12)) > 0);
        for s in [2, 3, 4, 5] {
            assert!(l.iter().any(|x| x.status == s), "no status {s}");
        }
        let (lo, hi) = (shift(day(), -20), shift(day(), 60));
        assert!(l.iter().all(|x| (lo..=hi).contains(&x.expiredate)));
        assert!(
            l.iter()
                .filter(|x| x.status == 3)
                .all(|x| x.expiredate < day())
        );
    }

    #[test]
    fn samples_cover_every_product_status_and_kind_of_period() {
        let l = generate(5000, 42, day());
        for p in PRODUCTS {
            assert!(l.iter().any(|x| x.price == p.price), "no {}", p.name);
        }
        for s in [2, 3, 4, 5] {
            assert!(l.iter().any(|x| x.status == s), "no status {s}");
        }
        let trials = l
            .iter()
            .filter(|x| super::super::catalog::term(x.price, x.period) == Some(Term::Trial))
            .count();
        assert!((100..500).contains(&trials), "{trials} trials");
        let lifetime = l
            .iter()
            .filter(|x| x.expiredate == lifetime_expiry())
            .count();
        assert!(lifetime > 100, "{lifetime} lifetime");
        let lo = shift(day(), -20);
        let hi = shift(day(), 60);
        assert!(
            l.iter()
                .all(|x| x.expiredate == lifetime_expiry() || (lo..=hi).contains(&x.expiredate))
        );
        assert!(
            l.iter()
                .all(|x| super::super::catalog::term(x.price, x.period).is_some())
        );
    }
}
