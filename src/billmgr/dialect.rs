//! The seam between API generations: function names, parameter names and row shapes.
//!
//! Callers of [`super::Client`] never see which generation they talk to; everything that
//! differs between BILLmanager 4 (`software.*`) and 5/6 (`soft.*`, `service.prolong`) lives here.
//! Must not do I/O.

use super::xml::Fields;
use crate::config::Api;
use crate::domain::{License, PendingLicense, Row, RowError, Status, parse_date};
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

    /// A list row (or a view's fields) → what it is. `None` for rows that are not licenses
    /// (no id and no expiry: summary or UI rows). A row with an id but no readable expiry is a
    /// license that cannot be read (issue 10.7), unless it is ordered and not active yet.
    pub fn license(&self, row: &Fields) -> Option<Row> {
        let id_raw = row.non_empty("id").or_else(|| row.non_empty("elid"));
        let raw_exp = row.non_empty("expiredate");
        if id_raw.is_none() && raw_exp.is_none() {
            return None;
        }
        // A summary or UI row (`<id>total</id>`, no date) is not a license either.
        if raw_exp.is_none() && id_raw.is_some_and(|i| i.parse::<i64>().is_err()) {
            return None;
        }
        let id_raw = id_raw.unwrap_or("?");
        let bad = |reason: String| {
            Row::Bad(RowError {
                elid: id_raw.to_owned(),
                reason,
            })
        };
        let Ok(elid) = id_raw.parse::<i64>() else {
            return Some(bad(format!("id {id_raw:?} is not a number")));
        };
        // 5/6 may give a localized `status` with the raw value in `orig`, or only
        // `item_status`; `Fields::get` prefers `orig`.
        let status = Status::parse(
            row.non_empty("status")
                .or_else(|| row.non_empty("item_status"))
                .unwrap_or_default(),
        );
        let licname = row.get("licname").unwrap_or_default().to_owned();
        let ip = row.get("ip").unwrap_or_default().to_owned();
        let Some(raw_exp) = raw_exp else {
            if status == Status::Ordered {
                return Some(Row::Pending(PendingLicense {
                    elid,
                    licname,
                    ip,
                    status,
                }));
            }
            return Some(bad("no expiredate".into()));
        };
        let Some(expiry) = parse_date(raw_exp) else {
            return Some(bad(format!("expiredate {raw_exp:?} is not YYYY-MM-DD")));
        };
        let product_field = if self.v5() { "pricelist" } else { "price" };
        let raw_price = row.get(product_field).unwrap_or_default();
        let Ok(product) = raw_price.parse::<i64>() else {
            return Some(bad(format!(
                "{product_field} {raw_price:?} is not a number"
            )));
        };
        let period = row.get("period").and_then(|p| p.parse::<i64>().ok());
        Some(Row::License(License {
            elid,
            licname,
            ip,
            product,
            period,
            expiry,
            status,
            autoprolong: self.v5() && autoprolong_on(row.get("autoprolong")),
        }))
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
        let Some(Row::License(l)) = Dialect(Api::Billmgr5).license(&r) else {
            panic!("a license")
        };
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
    fn rows_without_id_and_expiry_are_not_licenses_and_a_license_row_without_expiry_is_unreadable()
    {
        let d = Dialect(Api::Billmgr4);
        assert!(
            d.license(&row(&[("licname", "x"), ("total", "3")]))
                .is_none()
        );
        let Some(Row::Bad(no_expiry)) = d.license(&row(&[("id", "1"), ("licname", "x")])) else {
            panic!("a row with an id and no expiry is an unreadable license")
        };
        assert_eq!(
            (no_expiry.elid.as_str(), no_expiry.reason.as_str()),
            ("1", "no expiredate")
        );
        let Some(Row::Pending(p)) = d.license(&row(&[("id", "2"), ("status", "1")])) else {
            panic!("an ordered license without an expiry is pending")
        };
        assert_eq!(p.elid, 2);
        let Some(Row::Bad(bad)) =
            d.license(&row(&[("id", "7"), ("expiredate", "soon"), ("price", "7")]))
        else {
            panic!("a bad date is a bad row")
        };
        assert!(bad.reason.contains("soon"));
        let Some(Row::License(ok)) = d.license(&row(&[
            ("id", "7"),
            ("expiredate", "2024-07-01"),
            ("price", "7"),
            ("period", "8"),
            ("status", "2"),
        ])) else {
            panic!("a license")
        };
        assert_eq!(ok.elid, 7);
        assert_eq!(ok.period, Some(8));
        assert_eq!(ok.status, Status::Active);
    }
}
