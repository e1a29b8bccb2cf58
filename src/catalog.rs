//! The product/period table: which `price` ids exist, which `period` ids belong to each, and
//! what kind each period is (trial, N months, year, lifetime).
//!
//! Owns look-ups by id or by name/label (case-insensitive) and the rule that a period belongs to
//! exactly one product. The built-in table is `config/catalog.toml`, embedded at compile time.
//! Must not do I/O beyond reading a catalog file it is pointed at.

use crate::config::Api;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::Path;

const BUILTIN: &str = include_str!("../config/catalog.toml");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "months")]
pub enum PeriodKind {
    /// Two weeks, free; never a renewal period.
    Trial,
    Months(u32),
    Year,
    Lifetime,
}

impl PeriodKind {
    pub fn describe(&self) -> String {
        match self {
            PeriodKind::Trial => "trial (2 weeks)".into(),
            PeriodKind::Months(1) => "1 month".into(),
            PeriodKind::Months(n) => format!("{n} months"),
            PeriodKind::Year => "1 year".into(),
            PeriodKind::Lifetime => "lifetime".into(),
        }
    }

    pub fn is_trial(&self) -> bool {
        matches!(self, PeriodKind::Trial)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    pub id: i64,
    pub label: String,
    pub kind: PeriodKind,
    /// What one period costs, when the catalog says (`price = "12.50 EUR"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<crate::domain::Money>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Product {
    pub name: String,
    pub aliases: Vec<String>,
    /// The product id: `price` in BILLmanager 4, the tariff (`pricelist`) in 5/6.
    pub price: i64,
    /// Period ids as sent on the wire: period ids in BILLmanager 4, months in 5/6 (−100 = trial).
    pub periods: Vec<Period>,
    /// The API generation this entry belongs to.
    pub generation: Generation,
}

/// Which API generation a catalog entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Generation {
    #[default]
    Billmgr4,
    Billmgr5,
}

impl Generation {
    pub fn of(api: Api) -> Generation {
        match api {
            Api::Billmgr4 => Generation::Billmgr4,
            Api::Billmgr5 => Generation::Billmgr5,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Generation::Billmgr4 => "billmgr4",
            Generation::Billmgr5 => "billmgr5",
        }
    }
}

/// The periods any BILLmanager 5/6 tariff is assumed to sell when the catalog does not list
/// it: months (the wire value) and the −100 trial.
fn standard_months() -> Vec<Period> {
    let mut v = vec![Period {
        id: -100,
        label: "trial".into(),
        kind: PeriodKind::Trial,
        price: None,
    }];
    for n in [1u32, 2, 3, 6, 12, 24, 36] {
        let (label, kind) = match n {
            1 => ("1 month".to_owned(), PeriodKind::Months(1)),
            12 => ("1 year".to_owned(), PeriodKind::Year),
            n if n % 12 == 0 => (format!("{} years", n / 12), PeriodKind::Months(n)),
            n => (format!("{n} months"), PeriodKind::Months(n)),
        };
        v.push(Period {
            id: n as i64,
            label,
            kind,
            price: None,
        });
    }
    v
}

impl Product {
    /// Finds one of this product's periods by id or label (case-insensitive). A period id of
    /// another product is not found here: see [`Catalog::period_for`] for the clear error.
    pub fn period(&self, query: &str) -> Option<&Period> {
        let q = query.trim();
        match q.parse::<i64>() {
            Ok(id) => self.periods.iter().find(|p| p.id == id),
            Err(_) => self.periods.iter().find(|p| {
                p.label.eq_ignore_ascii_case(q) || p.kind.describe().eq_ignore_ascii_case(q)
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub products: Vec<Product>,
    /// BILLmanager 5/6: tariff ids differ per billing and change over time, so a numeric id the
    /// catalog does not know is accepted (with the standard month periods) instead of refused.
    #[serde(skip)]
    pub open_ids: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {msg}")]
    Invalid { origin: String, msg: String },
}

/// Why a product/period pair was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown product {0:?} (see `licrenew catalog`)")]
    UnknownProduct(String),
    #[error("unknown period {period:?} for {product} (its periods: {known})")]
    UnknownPeriod {
        product: String,
        period: String,
        known: String,
    },
    #[error("period {period} belongs to {owner}, not to {product}")]
    OtherProduct {
        product: String,
        period: i64,
        owner: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    product: Vec<RawProduct>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    price: i64,
    #[serde(default)]
    generation: Option<String>,
    periods: Vec<RawPeriod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeriod {
    id: i64,
    label: String,
    kind: String,
    months: Option<u32>,
    /// What one such period costs, with its currency: `"12.50 EUR"`. Optional; BILLmanager
    /// 5/6 shows costs itself.
    price: Option<String>,
}

impl Catalog {
    /// The table of the ordering guide, as shipped in `config/catalog.toml`.
    pub fn builtin() -> Catalog {
        Catalog::from_toml(BUILTIN, "built-in catalog")
            .expect("the built-in catalog is valid (checked by a unit test)")
    }

    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let origin = path.display().to_string();
        let bytes = crate::files::read_regular_file(path, 1024 * 1024).map_err(|msg| {
            CatalogError::Invalid {
                origin: origin.clone(),
                msg,
            }
        })?;
        let text = String::from_utf8(bytes).map_err(|_| CatalogError::Invalid {
            origin: origin.clone(),
            msg: "not UTF-8 text".into(),
        })?;
        Catalog::from_toml(&text, &origin)
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError::Parse {
            origin: origin.into(),
            source: Box::new(e),
        })?;
        let invalid = |msg: String| CatalogError::Invalid {
            origin: origin.into(),
            msg,
        };
        let mut products = Vec::new();
        for rp in raw.product {
            let mut periods = Vec::new();
            for p in rp.periods {
                let kind = match (p.kind.as_str(), p.months) {
                    ("trial", None) => PeriodKind::Trial,
                    ("months", Some(n)) if n > 0 => PeriodKind::Months(n),
                    ("year", None) => PeriodKind::Year,
                    ("lifetime", None) => PeriodKind::Lifetime,
                    (k, m) => {
                        return Err(invalid(format!(
                            "period {} of {}: kind {k:?} with months {m:?} (kinds: trial, months + months = N, year, lifetime)",
                            p.id, rp.name
                        )));
                    }
                };
                let price = match p.price.as_deref() {
                    None => None,
                    Some(text) => Some(
                        crate::domain::Money::parse(text, None)
                            .filter(|m| m.cents >= 0)
                            .ok_or_else(|| {
                                invalid(format!(
                                    "period {} of {}: price {text:?} is not an amount with a currency, e.g. \"12.50 EUR\"",
                                    p.id, rp.name
                                ))
                            })?,
                    ),
                };
                periods.push(Period {
                    id: p.id,
                    label: p.label,
                    kind,
                    price,
                });
            }
            if periods.is_empty() {
                return Err(invalid(format!("product {} has no periods", rp.name)));
            }
            let generation = match rp.generation.as_deref() {
                None | Some("billmgr4") => Generation::Billmgr4,
                Some("billmgr5") => Generation::Billmgr5,
                Some(other) => {
                    return Err(invalid(format!(
                        "product {}: generation {other:?} is not \"billmgr4\" or \"billmgr5\"",
                        rp.name
                    )));
                }
            };
            products.push(Product {
                name: rp.name,
                aliases: rp.aliases,
                price: rp.price,
                periods,
                generation,
            });
        }
        let cat = Catalog {
            products,
            open_ids: false,
        };
        for g in [Generation::Billmgr4, Generation::Billmgr5] {
            cat.generation(g).check(g).map_err(invalid)?;
        }
        Ok(cat)
    }

    /// The entries of one generation.
    pub fn generation(&self, g: Generation) -> Catalog {
        Catalog {
            products: self
                .products
                .iter()
                .filter(|p| p.generation == g)
                .cloned()
                .collect(),
            open_ids: g == Generation::Billmgr5,
        }
    }

    /// The catalog in effect for an API generation.
    pub fn for_api(&self, api: Api) -> Catalog {
        self.generation(Generation::of(api))
    }

    /// Names are unique within a generation; in BILLmanager 4 a period id belongs to exactly
    /// one product (in 5/6 periods are months, shared by every tariff).
    fn check(&self, g: Generation) -> Result<(), String> {
        let mut prices = std::collections::HashSet::new();
        let mut periods = std::collections::HashMap::new();
        let mut names = std::collections::HashSet::new();
        for p in &self.products {
            if g == Generation::Billmgr5
                && let Some(bad) = p.periods.iter().find(|x| x.id < 1 && !x.kind.is_trial())
            {
                return Err(format!(
                    "period {} of {}: billmgr5 periods are months (1, 12, …) or -100 for the trial",
                    bad.id, p.name
                ));
            }
            if !prices.insert(p.price) {
                return Err(format!("price id {} appears twice", p.price));
            }
            let own: std::collections::BTreeSet<String> = std::iter::once(&p.name)
                .chain(&p.aliases)
                .map(|n| n.to_lowercase())
                .collect();
            for n in own {
                if !names.insert(n.clone()) {
                    return Err(format!("name {n:?} names two products"));
                }
            }
            for per in p.periods.iter().filter(|_| g == Generation::Billmgr4) {
                if let Some(other) = periods.insert(per.id, &p.name) {
                    return Err(format!(
                        "period id {} belongs to both {other} and {}",
                        per.id, p.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// A product by price id, name or alias (case-insensitive).
    pub fn product(&self, query: &str) -> Option<Cow<'_, Product>> {
        let q = query.trim();
        match q.parse::<i64>() {
            Ok(id) => self.product_for(id),
            Err(_) => self
                .products
                .iter()
                .find(|p| {
                    p.name.eq_ignore_ascii_case(q)
                        || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(q))
                })
                .map(Cow::Borrowed),
        }
    }

    /// The product whose name or alias is exactly `name` (case aside): how a 5/6 list's display
    /// name of a tariff is matched. Never a number.
    pub fn product_by_name(&self, name: &str) -> Option<&Product> {
        let q = name.trim();
        self.products.iter().find(|p| {
            p.name.eq_ignore_ascii_case(q) || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(q))
        })
    }

    /// The product with this id: listed, or (open catalogs) synthesized for an unknown tariff.
    pub fn product_for(&self, price: i64) -> Option<Cow<'_, Product>> {
        match self.by_price(price) {
            Some(p) => Some(Cow::Borrowed(p)),
            None if self.open_ids && price > 0 => Some(Cow::Owned(Product {
                name: format!("pricelist {price}"),
                aliases: Vec::new(),
                price,
                periods: standard_months(),
                generation: Generation::Billmgr5,
            })),
            None => None,
        }
    }

    /// A period of a product, by the id sent on the wire.
    pub fn period_of(&self, product: i64, period: i64) -> Option<Period> {
        self.product_for(product)?
            .periods
            .iter()
            .find(|p| p.id == period)
            .cloned()
    }

    /// Whether a license's period is a trial. In BILLmanager 4 period ids are global, so an id
    /// that is some product's trial counts even on a row naming another product.
    pub fn is_trial(&self, product: i64, period: i64) -> bool {
        self.period_of(product, period)
            .is_some_and(|p| p.kind.is_trial())
            || (!self.open_ids
                && self
                    .by_period(period)
                    .is_some_and(|(_, p)| p.kind.is_trial()))
    }

    /// The display name of a product id (its id when unknown).
    pub fn product_name(&self, product: i64) -> String {
        self.by_price(product)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| product.to_string())
    }

    /// The label of a product's period (its id when unknown).
    pub fn period_label(&self, product: i64, period: i64) -> String {
        self.period_of(product, period)
            .map(|p| p.label)
            .unwrap_or_else(|| period.to_string())
    }

    pub fn by_price(&self, price: i64) -> Option<&Product> {
        self.products.iter().find(|p| p.price == price)
    }

    /// The product owning a period id, with the period.
    pub fn by_period(&self, id: i64) -> Option<(&Product, &Period)> {
        self.products
            .iter()
            .find_map(|p| p.periods.iter().find(|x| x.id == id).map(|x| (p, x)))
    }

    /// Resolves a product and one of its periods, refusing a period of another product.
    pub fn period_for(
        &self,
        product: &str,
        period: &str,
    ) -> Result<(Cow<'_, Product>, Period), LookupError> {
        let prod = self
            .product(product)
            .ok_or_else(|| LookupError::UnknownProduct(product.into()))?;
        if let Some(p) = prod.period(period) {
            let p = p.clone();
            return Ok((prod, p));
        }
        if let Ok(id) = period.trim().parse::<i64>()
            && !self.open_ids
            && let Some((owner, _)) = self.by_period(id)
        {
            return Err(LookupError::OtherProduct {
                product: prod.name.clone(),
                period: id,
                owner: owner.name.clone(),
            });
        }
        Err(LookupError::UnknownPeriod {
            product: prod.name.clone(),
            period: period.into(),
            known: prod
                .periods
                .iter()
                .map(|p| format!("{} = {}", p.id, p.label))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_has_every_product_of_the_ordering_guide() {
        let c = Catalog::builtin().for_api(Api::Billmgr4);
        let table: &[(i64, &[i64])] = &[
            (7, &[7, 8, 9]),
            (11, &[15, 16, 17]),
            (15, &[24, 25, 26]),
            (884, &[534, 535, 536]),
            (432, &[246, 380, 381]),
            (434, &[247, 382, 383]),
            (435, &[248, 384, 385]),
            (16, &[27, 28, 29, 661]),
            (17, &[30, 31]),
            (18, &[32, 33]),
        ];
        assert_eq!(c.products.len(), table.len());
        for (price, periods) in table {
            let p = c.by_price(*price).expect("product");
            let ids: Vec<i64> = p.periods.iter().map(|x| x.id).collect();
            assert_eq!(&ids, periods, "{}", p.name);
            assert!(
                p.periods[0].kind.is_trial(),
                "{} starts with its trial",
                p.name
            );
        }
        assert_eq!(
            c.by_period(661).map(|(p, x)| (p.price, x.kind)),
            Some((16, PeriodKind::Lifetime))
        );
        assert_eq!(
            c.by_period(381).map(|(_, x)| x.kind),
            Some(PeriodKind::Year)
        );
    }

    #[test]
    fn lookups_work_by_id_name_alias_and_label_ignoring_case() {
        let c = Catalog::builtin().for_api(Api::Billmgr4);
        assert_eq!(c.product("7").map(|p| p.price), Some(7));
        assert_eq!(c.product("ispmanager LITE").map(|p| p.price), Some(7));
        assert_eq!(c.product("lite").map(|p| p.price), Some(7));
        assert_eq!(c.product("nope"), None);
        let (_, per) = c.period_for("ISPmanager Lite", "1 MONTH").expect("period");
        assert_eq!(per.id, 8);
        let (_, per) = c.period_for("dsmanager", "Lifetime").expect("period");
        assert_eq!(per.id, 661);
        let (_, per) = c.period_for("11", "16").expect("period");
        assert_eq!(per.label, "1 month");
    }

    #[test]
    fn a_period_of_another_product_is_refused_by_name() {
        let c = Catalog::builtin().for_api(Api::Billmgr4);
        let err = c
            .period_for("ISPmanager Pro", "8")
            .expect_err("Lite's period");
        assert_eq!(
            err,
            LookupError::OtherProduct {
                product: "ISPmanager Pro".into(),
                period: 8,
                owner: "ISPmanager Lite".into()
            }
        );
        assert!(matches!(
            c.period_for("ISPmanager Pro", "2 years"),
            Err(LookupError::UnknownPeriod { .. })
        ));
    }

    #[test]
    fn billmgr5_names_resolve_to_tariffs_and_unknown_tariff_ids_are_accepted_in_months() {
        let c = Catalog::builtin().for_api(Api::Billmgr5);
        let (p, per) = c
            .period_for("ISPmanager Lite", "1 year")
            .expect("known tariff");
        assert_eq!((p.price, per.id), (55227, 12));
        let (p, per) = c.period_for("77777", "1").expect("unknown tariff id");
        assert_eq!(
            (p.price, per.id, per.kind),
            (77777, 1, PeriodKind::Months(1))
        );
        let (_, per) = c.period_for("77777", "6 months").expect("label");
        assert_eq!(per.id, 6);
        assert!(c.period_of(77777, -100).is_some_and(|p| p.kind.is_trial()));
        assert!(
            c.period_for("ISPmanager Lite", "8").is_err(),
            "a v4 period id is not a month count"
        );
        assert!(c.period_for("no such tariff", "1").is_err());
        let v4 = Catalog::builtin().for_api(Api::Billmgr4);
        assert!(v4.product("77777").is_none(), "billmgr4 ids stay closed");
    }

    #[test]
    fn a_catalog_file_with_a_period_in_two_products_is_refused() {
        let text = r#"
[[product]]
name = "A"
price = 1
periods = [{ id = 5, label = "1 month", kind = "months", months = 1 }]
[[product]]
name = "B"
price = 2
periods = [{ id = 5, label = "1 month", kind = "months", months = 1 }]
"#;
        let err = Catalog::from_toml(text, "x.toml").expect_err("dup");
        assert!(
            err.to_string()
                .contains("period id 5 belongs to both A and B"),
            "{err}"
        );
        let err = Catalog::from_toml("[[product]]\nname=1", "y.toml").expect_err("bad");
        assert!(err.to_string().starts_with("y.toml:"), "{err}");
    }
}
