//! The seam between API generations: function names, parameter names and row shapes.
//!
//! Callers of [`super::Client`] never see which generation they talk to; everything that
//! differs between BILLmanager 4 (`software.*`) and 5/6 (`soft.*`, `service.prolong`) lives here.
//! Must not do I/O.

use super::xml::Fields;
use crate::config::Api;
use crate::domain::{License, RowError, Status, parse_date};
use chrono::NaiveDate;

/// One request: a function and its parameters (without `out`, `lang` and credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub func: &'static str,
    pub elid: Option<i64>,
    pub params: Vec<(&'static str, String)>,
}

impl Call {
    fn new(func: &'static str) -> Call {
        Call {
            func,
            elid: None,
            params: Vec::new(),
        }
    }
    fn elid(mut self, elid: i64) -> Call {
        self.elid = Some(elid);
        self.params.push(("elid", elid.to_string()));
        self
    }
    fn p(mut self, k: &'static str, v: impl ToString) -> Call {
        self.params.push((k, v.to_string()));
        self
    }
    fn sok(self) -> Call {
        self.p("sok", "ok")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect(pub Api);

impl Dialect {
    /// Sets the server-side saved expiry filter (`None` clears it).
    pub fn set_filter(&self, window: Option<(NaiveDate, NaiveDate)>) -> Call {
        let (from, to) = match window {
            Some((f, t)) => (
                f.format("%Y-%m-%d").to_string(),
                t.format("%Y-%m-%d").to_string(),
            ),
            None => (String::new(), String::new()),
        };
        Call::new("software.filter")
            .p("expires", from)
            .p("expiree", to)
            .sok()
    }

    pub fn list(&self) -> Call {
        Call::new("software")
    }

    pub fn view(&self, elid: i64) -> Call {
        Call::new("software.edit").elid(elid)
    }

    pub fn order(&self, product: i64, period: i64, licname: &str, ip: &str) -> Call {
        Call::new("software.edit")
            .p("price", product)
            .p("period", period)
            .p("licname", licname)
            .p("ip", ip)
            .sok()
    }

    pub fn check_ip(&self, product: i64, period: i64, ip: &str) -> Call {
        Call::new("software.licinfo")
            .p("price", product)
            .p("period", period)
            .p("ip", ip)
            .sok()
    }

    pub fn edit(&self, elid: i64, licname: Option<&str>, ip: Option<&str>) -> Call {
        let mut c = Call::new("software.edit").elid(elid);
        if let Some(n) = licname {
            c = c.p("licname", n);
        }
        if let Some(i) = ip {
            c = c.p("ip", i);
        }
        c.sok()
    }

    pub fn renew(&self, elid: i64, period: i64) -> Call {
        Call::new("software.period")
            .elid(elid)
            .p("period", period)
            .sok()
    }

    /// A list row → a license. `None` for rows that are not licenses (no `expiredate`).
    pub fn license(&self, row: &Fields) -> Option<Result<License, RowError>> {
        row.get("expiredate")?;
        let id_raw = row.get("id").or_else(|| row.get("elid")).unwrap_or("?");
        let bad = |reason: String| RowError {
            elid: id_raw.to_owned(),
            reason,
        };
        Some((|| {
            let elid = id_raw
                .parse::<i64>()
                .map_err(|_| bad(format!("id {id_raw:?} is not a number")))?;
            let raw_exp = row.get("expiredate").unwrap_or_default();
            let expiry = parse_date(raw_exp)
                .ok_or_else(|| bad(format!("expiredate {raw_exp:?} is not YYYY-MM-DD")))?;
            let raw_price = row.get("price").unwrap_or_default();
            let product = raw_price
                .parse::<i64>()
                .map_err(|_| bad(format!("price {raw_price:?} is not a number")))?;
            let period = row.get("period").and_then(|p| p.parse::<i64>().ok());
            Ok(License {
                elid,
                licname: row.get("licname").unwrap_or_default().to_owned(),
                ip: row.get("ip").unwrap_or_default().to_owned(),
                product,
                period,
                expiry,
                status: Status::parse(row.get("status").unwrap_or_default()),
            })
        })())
    }

    /// The id of a newly ordered license, wherever the answer puts it.
    pub fn ordered_id(&self, doc: &super::xml::Document) -> Option<i64> {
        ["id", "elid"]
            .iter()
            .find_map(|k| doc.fields.get(k).and_then(|v| v.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billmgr::xml::Value;

    fn row(pairs: &[(&str, &str)]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            text: v.to_string(),
                            orig: None,
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn renew_is_software_period_with_sok() {
        let c = Dialect(Api::Billmgr4).renew(334673, 8);
        assert_eq!(c.func, "software.period");
        assert_eq!(
            c.params,
            vec![
                ("elid", "334673".into()),
                ("period", "8".into()),
                ("sok", "ok".into())
            ]
        );
    }

    #[test]
    fn rows_without_expiredate_are_not_licenses_and_bad_rows_are_errors() {
        let d = Dialect(Api::Billmgr4);
        assert!(d.license(&row(&[("id", "1"), ("licname", "x")])).is_none());
        let bad = d
            .license(&row(&[("id", "7"), ("expiredate", "soon"), ("price", "7")]))
            .expect("a license row");
        assert!(bad.expect_err("bad date").reason.contains("soon"));
        let ok = d
            .license(&row(&[
                ("id", "7"),
                ("expiredate", "2024-07-01"),
                ("price", "7"),
                ("period", "8"),
                ("status", "2"),
            ]))
            .expect("row")
            .expect("valid");
        assert_eq!(ok.elid, 7);
        assert_eq!(ok.period, Some(8));
        assert_eq!(ok.status, Status::Active);
    }
}
