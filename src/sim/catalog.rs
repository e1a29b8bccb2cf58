//! The simulator's own copy of the BILLmanager 4 product/period table (§6 of billmgr-api.md),
//! and its own BILLmanager 5/6 tariff table.
//!
//! Owns: which `price` ids exist, which `period` ids belong to each, and what a period means
//! (trial, N months, lifetime); for 5/6, which `pricelist` ids exist, which periods (months,
//! `-100` = trial) each sells and at what display price. Must not: import the crate's `catalog`
//! module. The simulator is the independent witness the client is tested against, so a typo
//! shared by both would hide itself; the v4 table is copied from the ordering guide on purpose.
//!
//! The 5/6 tariff ids and prices are **sample values defined by this simulator**: real
//! BILLmanager 5/6 installations number their tariffs themselves, so ids differ per billing
//! (only `55227` for ISPmanager 6 Lite is quoted in the reference, as an example).

/// What buying or renewing with a period id does to the expiry date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Term {
    /// Two weeks; can be ordered, never renewed.
    Trial,
    /// This many calendar months (a "1 year" period is 12).
    Months(u32),
    /// Paid once; the expiry becomes [`LIFETIME_EXPIRY`].
    Lifetime,
}

/// A product of the ordering guide.
#[derive(Debug)]
pub(crate) struct Product {
    pub(crate) price: i64,
    pub(crate) name: &'static str,
    pub(crate) periods: &'static [(i64, Term)],
}

/// The expiry date the real server shows for lifetime licenses.
pub(crate) const LIFETIME_EXPIRY: (i32, u32, u32) = (2099, 12, 31);

/// Length of a trial, in days.
pub(crate) const TRIAL_DAYS: u64 = 14;

use Term::{Lifetime, Months, Trial};

pub(crate) const PRODUCTS: &[Product] = &[
    Product {
        price: 7,
        name: "ISPmanager Lite",
        periods: &[(7, Trial), (8, Months(1)), (9, Lifetime)],
    },
    Product {
        price: 11,
        name: "ISPmanager Pro",
        periods: &[(15, Trial), (16, Months(1)), (17, Lifetime)],
    },
    Product {
        price: 15,
        name: "VDSmanager-Linux",
        periods: &[(24, Trial), (25, Months(1)), (26, Lifetime)],
    },
    Product {
        price: 884,
        name: "VDSmanager-FreeBSD",
        periods: &[(534, Trial), (535, Months(1)), (536, Lifetime)],
    },
    Product {
        price: 432,
        name: "BILLmanager Standard",
        periods: &[(246, Trial), (380, Months(1)), (381, Months(12))],
    },
    Product {
        price: 434,
        name: "BILLmanager Advanced",
        periods: &[(247, Trial), (382, Months(1)), (383, Months(12))],
    },
    Product {
        price: 435,
        name: "BILLmanager Corporate",
        periods: &[(248, Trial), (384, Months(1)), (385, Months(12))],
    },
    Product {
        price: 16,
        name: "DSmanager",
        periods: &[
            (27, Trial),
            (28, Months(1)),
            (29, Months(12)),
            (661, Lifetime),
        ],
    },
    Product {
        price: 17,
        name: "DNSmanager",
        periods: &[(30, Trial), (31, Lifetime)],
    },
    Product {
        price: 18,
        name: "IPmanager",
        periods: &[(32, Trial), (33, Lifetime)],
    },
];

/// The product with this `price` id.
pub(crate) fn product(price: i64) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.price == price)
}

/// What `period` means for the product `price`; `None` when the period is not one of its own.
pub(crate) fn term(price: i64, period: i64) -> Option<Term> {
    product(price)?
        .periods
        .iter()
        .find(|(id, _)| *id == period)
        .map(|(_, t)| *t)
}

/// The `period` of a BILLmanager 5/6 trial.
pub(crate) const TRIAL_PERIOD: i64 = -100;

/// A BILLmanager 5/6 tariff (`pricelist`).
#[derive(Debug)]
pub(crate) struct Tariff {
    pub(crate) pricelist: i64,
    pub(crate) name: &'static str,
    /// `(period in months or TRIAL_PERIOD, price of that period in cents)`.
    pub(crate) periods: &'static [(i64, u32)],
}

/// The currency of [`Tariff`] prices, as shown in `cost`.
pub(crate) const CURRENCY: &str = "EUR";

pub(crate) const TARIFFS: &[Tariff] = &[
    Tariff {
        pricelist: 55227,
        name: "ISPmanager 6 Lite",
        periods: &[(TRIAL_PERIOD, 0), (1, 650), (12, 6_500)],
    },
    Tariff {
        pricelist: 55229,
        name: "ISPmanager 6 Pro",
        periods: &[(TRIAL_PERIOD, 0), (1, 1_250), (12, 12_500)],
    },
    Tariff {
        pricelist: 55231,
        name: "ISPmanager 6 Host",
        periods: &[(TRIAL_PERIOD, 0), (1, 2_500), (12, 25_000)],
    },
    Tariff {
        pricelist: 55233,
        name: "ISPmanager 6 Business",
        periods: &[(TRIAL_PERIOD, 0), (1, 4_500), (12, 45_000)],
    },
    Tariff {
        pricelist: 55251,
        name: "DNSmanager 6",
        periods: &[(TRIAL_PERIOD, 0), (12, 3_000)],
    },
    Tariff {
        pricelist: 55261,
        name: "VMmanager 6",
        periods: &[(TRIAL_PERIOD, 0), (1, 1_500), (12, 15_000)],
    },
];

/// The 5/6 tariff with this `pricelist` id.
pub(crate) fn tariff(pricelist: i64) -> Option<&'static Tariff> {
    TARIFFS.iter().find(|t| t.pricelist == pricelist)
}

impl Tariff {
    /// What `period` (months, or [`TRIAL_PERIOD`]) means for this tariff; `None` when the
    /// tariff does not sell it.
    pub(crate) fn term(&self, period: i64) -> Option<Term> {
        self.periods
            .iter()
            .find(|(p, _)| *p == period)
            .and_then(|&(p, _)| match p {
                TRIAL_PERIOD => Some(Trial),
                n => u32::try_from(n).ok().filter(|n| *n > 0).map(Months),
            })
    }

    /// The periods this tariff renews for (every one but the trial), in months.
    pub(crate) fn renewal_months(&self) -> impl Iterator<Item = i64> + '_ {
        self.periods
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| *p != TRIAL_PERIOD)
    }

    /// The display price of one `period`, e.g. `12.50 EUR`; `None` when it is not sold.
    pub(crate) fn cost(&self, period: i64) -> Option<String> {
        self.periods
            .iter()
            .find(|(p, _)| *p == period)
            .map(|(_, cents)| format!("{}.{:02} {CURRENCY}", cents / 100, cents % 100))
    }
}

/// The label of a 5/6 renewal period in the `service.prolong` form.
pub(crate) fn months_label(months: i64) -> String {
    match months {
        TRIAL_PERIOD => "Trial".to_owned(),
        1 => "1 month".to_owned(),
        12 => "1 year".to_owned(),
        n if n % 12 == 0 => format!("{} years", n / 12),
        n => format!("{n} months"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_period_id_belongs_to_exactly_one_product() {
        let mut ids: Vec<i64> = PRODUCTS
            .iter()
            .flat_map(|p| p.periods.iter().map(|(id, _)| *id))
            .collect();
        let total = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total);
    }

    #[test]
    fn every_product_has_exactly_one_trial() {
        for p in PRODUCTS {
            assert_eq!(
                p.periods.iter().filter(|(_, t)| *t == Term::Trial).count(),
                1,
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn every_tariff_sells_a_trial_and_dnsmanager_only_a_year_besides() {
        let mut ids: Vec<i64> = TARIFFS.iter().map(|t| t.pricelist).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), TARIFFS.len());
        for t in TARIFFS {
            assert_eq!(t.term(TRIAL_PERIOD), Some(Term::Trial), "{}", t.name);
            assert_eq!(t.term(12), Some(Term::Months(12)), "{}", t.name);
            assert_eq!(t.term(3), None, "{}", t.name);
        }
        let dns = tariff(55251).expect("DNSmanager 6");
        assert_eq!(dns.term(1), None);
        assert_eq!(dns.renewal_months().collect::<Vec<_>>(), vec![12]);
        let lite = tariff(55227).expect("ISPmanager 6 Lite");
        assert_eq!(lite.renewal_months().collect::<Vec<_>>(), vec![1, 12]);
        assert!(tariff(7).is_none());
    }

    #[test]
    fn a_tariff_cost_is_display_text_with_the_currency() {
        let pro = tariff(55229).expect("ISPmanager 6 Pro");
        assert_eq!(pro.cost(1).as_deref(), Some("12.50 EUR"));
        assert_eq!(pro.cost(TRIAL_PERIOD).as_deref(), Some("0.00 EUR"));
        assert_eq!(pro.cost(6), None);
        assert_eq!(months_label(12), "1 year");
        assert_eq!(months_label(1), "1 month");
    }

    #[test]
    fn a_period_of_another_product_is_not_accepted() {
        assert_eq!(term(7, 8), Some(Term::Months(1)));
        assert_eq!(term(11, 8), None);
        assert_eq!(term(435, 385), Some(Term::Months(12)));
        assert_eq!(term(999, 8), None);
    }
}
