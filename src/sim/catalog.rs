//! The simulator's own copy of the BILLmanager 4 product/period table (§6 of billmgr-api.md).
//!
//! Owns: which `price` ids exist, which `period` ids belong to each, and what a period means
//! (trial, N months, lifetime). Must not: import the crate's `catalog` module. The simulator is
//! the independent witness the client is tested against, so a typo shared by both would hide
//! itself; this table is copied from the ordering guide on purpose.

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
    fn a_period_of_another_product_is_not_accepted() {
        assert_eq!(term(7, 8), Some(Term::Months(1)));
        assert_eq!(term(11, 8), None);
        assert_eq!(term(435, 385), Some(Term::Months(12)));
        assert_eq!(term(999, 8), None);
    }
}
