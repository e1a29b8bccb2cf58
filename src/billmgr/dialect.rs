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

/// Rows asked for per `soft` page (BILLmanager 5/6 paging).
pub const PAGE_SIZE: usize = 1000;

impl Dialect {
    fn v5(&self) -> bool {
        self.0 == Api::Billmgr5
    }

    /// Whether the server filters the list by expiry (`software.filter`, BILLmanager 4 only).
    pub fn has_server_filter(&self) -> bool {
        !self.v5()
    }

    /// Whether the list is paged (`p_cnt`/`p_num`, BILLmanager 5/6).
    pub fn is_paged(&self) -> bool {
        self.v5()
    }

    /// Sets the server-side saved expiry filter (`None` clears it). BILLmanager 4 only.
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

    /// The list; `page` (from 1) for the paged generation.
    pub fn list(&self, page: usize) -> Call {
        if self.v5() {
            Call::new("soft").p("p_cnt", PAGE_SIZE).p("p_num", page)
        } else {
            Call::new("software")
        }
    }

    pub fn view(&self, elid: i64) -> Call {
        Call::new(if self.v5() {
            "soft.edit"
        } else {
            "software.edit"
        })
        .elid(elid)
    }

    /// Orders a license. `period` is a period id (4) or months (5/6).
    pub fn order(&self, product: i64, period: i64, licname: &str, ip: &str) -> Call {
        if self.v5() {
            // skipbasket + finish pay at once; "basket" would leave it unpaid in the cart.
            // autoprolong=null: licrenew's policies decide renewals, not the billing.
            Call::new("soft.order.param")
                .p("pricelist", product)
                .p("period", period)
                .p("licname", licname)
                .p("ip", ip)
                .p("skipbasket", "on")
                .p("clicked_button", "finish")
                .p("autoprolong", "null")
                .sok()
        } else {
            Call::new("software.edit")
                .p("price", product)
                .p("period", period)
                .p("licname", licname)
                .p("ip", ip)
                .sok()
        }
    }

    pub fn check_ip(&self, product: i64, period: i64, ip: &str) -> Call {
        if self.v5() {
            Call::new("soft.checkip")
                .p("pricelist", product)
                .p("period", period)
                .p("ip", ip)
        } else {
            Call::new("software.licinfo")
                .p("price", product)
                .p("period", period)
                .p("ip", ip)
                .sok()
        }
    }

    pub fn edit(&self, elid: i64, licname: Option<&str>, ip: Option<&str>) -> Call {
        let mut c = Call::new(if self.v5() {
            "soft.edit"
        } else {
            "software.edit"
        })
        .elid(elid);
        if let Some(n) = licname {
            c = c.p("licname", n);
        }
        if let Some(i) = ip {
            c = c.p("ip", i);
        }
        c.sok()
    }

    /// The paid renewal: `software.period` (period id) or `service.prolong` (months).
    pub fn renew(&self, elid: i64, period: i64) -> Call {
        let func = if self.v5() {
            "service.prolong"
        } else {
            "software.period"
        };
        Call::new(func).elid(elid).p("period", period).sok()
    }

    /// A free preview of a renewal's new expiry (`service.prolong` without `sok`); `None` where
    /// the generation has none.
    pub fn preview_renew(&self, elid: i64, period: i64) -> Option<Call> {
        self.v5()
            .then(|| Call::new("service.prolong").elid(elid).p("period", period))
    }

    /// A list row (or a view's fields) → a license. `None` for rows that are not licenses
    /// (no `expiredate`).
    pub fn license(&self, row: &Fields) -> Option<Result<License, RowError>> {
        row.get("expiredate")?;
        let id_raw = row.get("id").or_else(|| row.get("elid")).unwrap_or("?");
        let bad = |reason: String| RowError {
            elid: id_raw.to_owned(),
            reason,
        };
        let product_field = if self.v5() { "pricelist" } else { "price" };
        Some((|| {
            let elid = id_raw
                .parse::<i64>()
                .map_err(|_| bad(format!("id {id_raw:?} is not a number")))?;
            let raw_exp = row.get("expiredate").unwrap_or_default();
            let expiry = parse_date(raw_exp)
                .ok_or_else(|| bad(format!("expiredate {raw_exp:?} is not YYYY-MM-DD")))?;
            let raw_price = row.get(product_field).unwrap_or_default();
            let product = raw_price
                .parse::<i64>()
                .map_err(|_| bad(format!("{product_field} {raw_price:?} is not a number")))?;
            let period = row.get("period").and_then(|p| p.parse::<i64>().ok());
            // 5/6 may give a localized `status` with the raw value in `orig`, or only
            // `item_status`; `Fields::get` prefers `orig`.
            let status = row
                .non_empty("status")
                .or_else(|| row.non_empty("item_status"))
                .unwrap_or_default();
            Ok(License {
                elid,
                licname: row.get("licname").unwrap_or_default().to_owned(),
                ip: row.get("ip").unwrap_or_default().to_owned(),
                product,
                period,
                expiry,
                status: Status::parse(status),
                autoprolong: self.v5() && autoprolong_on(row.get("autoprolong")),
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

/// Whether an `autoprolong` value means "on". Empty or absent is off, and so are the usual
/// spellings of off; anything else (months, or a localized period such as "1 month") is on:
/// when in doubt, licrenew assumes the billing renews it and does not pay a second time.
pub fn autoprolong_on(raw: Option<&str>) -> bool {
    match raw.map(str::trim) {
        None | Some("") => false,
        Some(v) => !matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "off" | "no" | "none" | "null" | "false" | "disabled" | "-"
        ),
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
    fn billmgr5_renews_with_service_prolong_in_months_and_previews_without_sok() {
        let d = Dialect(Api::Billmgr5);
        let c = d.renew(5, 12);
        assert_eq!(c.func, "service.prolong");
        assert_eq!(
            c.params,
            vec![
                ("elid", "5".into()),
                ("period", "12".into()),
                ("sok", "ok".into())
            ]
        );
        let p = d.preview_renew(5, 12).expect("a preview");
        assert!(
            p.params.iter().all(|(k, _)| *k != "sok"),
            "a preview must not submit"
        );
        assert!(Dialect(Api::Billmgr4).preview_renew(5, 8).is_none());
        let o = d.order(55227, 1, "x", "1.2.3.4");
        assert!(o.params.contains(&("clicked_button", "finish".into())));
        assert!(o.params.contains(&("skipbasket", "on".into())));
        assert!(!o.params.iter().any(|(_, v)| v == "basket"));
    }

    #[test]
    fn autoprolong_is_off_only_when_clearly_off() {
        for off in [
            None,
            Some(""),
            Some(" "),
            Some("0"),
            Some("Off"),
            Some("null"),
        ] {
            assert!(!autoprolong_on(off), "{off:?}");
        }
        for on in [Some("1"), Some("12"), Some("1 month"), Some("Ежемесячно")] {
            assert!(autoprolong_on(on), "{on:?}");
        }
    }

    #[test]
    fn billmgr5_rows_read_pricelist_orig_status_and_autoprolong() {
        let mut r = row(&[
            ("id", "9"),
            ("expiredate", "2030-01-01"),
            ("pricelist", "55227"),
            ("period", "-100"),
            ("autoprolong", "1"),
        ]);
        r.0.push((
            "item_status".into(),
            Value {
                text: "Suspended".into(),
                orig: Some("3_autosuspend".into()),
            },
        ));
        let l = Dialect(Api::Billmgr5)
            .license(&r)
            .expect("row")
            .expect("valid");
        assert_eq!(
            (l.product, l.period, l.autoprolong),
            (55227, Some(-100), true)
        );
        assert_eq!(l.status, Status::Suspended);
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
