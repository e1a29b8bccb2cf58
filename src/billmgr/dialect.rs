//! The seam between API generations: function names, parameter names and row shapes.
//!
//! Callers of [`super::Client`] never see which generation they talk to; everything that
//! differs between BILLmanager 4 (`software.*`) and 5/6 (`soft.*`, `service.prolong`) lives here.
//! Must not do I/O.

use super::xml::Fields;
use crate::config::Api;
use crate::domain::{
    License, Money, PendingLicense, Row, RowError, Status, Unresolved, parse_date,
};
use chrono::NaiveDate;

/// One request: a function and its parameters (without `out`, `lang` and credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub func: &'static str,
    pub elid: Option<i64>,
    pub params: Vec<(&'static str, String)>,
    /// Parameters whose names come from the server (the fields of a form read back).
    pub extra: Vec<(String, String)>,
    /// A list: its answer may be large (`billmgr.max_body_mib`); any other answer is small
    /// (`billmgr.max_answer_kib`).
    pub list: bool,
}

impl Call {
    fn new(func: &'static str) -> Call {
        Call {
            func,
            elid: None,
            params: Vec::new(),
            extra: Vec::new(),
            list: false,
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

    pub fn api(&self) -> Api {
        self.0
    }

    /// The generation's name as configured (`billmgr4`, `billmgr5`).
    pub fn name(&self) -> &'static str {
        if self.v5() { "billmgr5" } else { "billmgr4" }
    }

    /// The first call of a process under `api = "auto"`: one row of the 5/6 list. BILLmanager 4
    /// answers it with an unknown-function error.
    pub fn probe() -> Call {
        Call::new("soft").p("p_cnt", 1).p("p_num", 1)
    }

    /// The saved 5/6 list filter's form (read, to learn its fields), `None` under 4.
    pub fn filter_form(&self) -> Option<Call> {
        self.v5().then(|| Call::new("soft.filter"))
    }

    /// Submits the 5/6 list filter with every field of its form empty: what the panel's
    /// "reset" does. A filter saved in the panel would otherwise hide licenses from the list.
    pub fn reset_filter(&self, fields: &[String]) -> Call {
        let mut c = Call::new("soft.filter");
        c.extra = fields.iter().map(|f| (f.clone(), String::new())).collect();
        c.sok()
    }

    /// The account's balance: `whoami` (attributes of `<user>`), else `dashboard.info`.
    pub fn balance_calls(&self) -> [Call; 2] {
        [Call::new("whoami"), Call::new("dashboard.info")]
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
        let mut c = if self.v5() {
            Call::new("soft").p("p_cnt", PAGE_SIZE).p("p_num", page)
        } else {
            Call::new("software")
        };
        c.list = true;
        c
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
            // `sok` as JBS sends it; the answer is read the same way with or without it.
            Call::new("soft.checkip")
                .p("pricelist", product)
                .p("period", period)
                .p("ip", ip)
                .sok()
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
        // 5/6: `expiredate` may be a label for services billed by the day; the real date is
        // then in `real_expiredate`.
        let raw_exp = raw_exp.filter(|d| parse_date(d).is_some()).or_else(|| {
            (self.v5())
                .then(|| row.non_empty("real_expiredate"))
                .flatten()
                .filter(|d| parse_date(d).is_some())
                .or(raw_exp)
        });
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
        if !self.v5() {
            let raw_price = row.get("price").unwrap_or_default();
            let Ok(product) = raw_price.parse::<i64>() else {
                return Some(bad(format!("price {raw_price:?} is not a number")));
            };
            return Some(Row::License(License {
                elid,
                licname,
                ip,
                product,
                period: row.get("period").and_then(|p| p.parse::<i64>().ok()),
                expiry,
                status,
                autoprolong: false,
                special: None,
                cost: None,
                pricelist_label: None,
            }));
        }
        // 5/6 lists show the tariff's display name in `pricelist` and its id in
        // `pricelist_id` (when at all); forms show the id in `pricelist`.
        let number = |k: &str| {
            row.non_empty(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|n| *n != 0)
        };
        let product = number("pricelist_id").or_else(|| number("pricelist"));
        let label = row
            .non_empty("pricelist")
            .filter(|v| v.parse::<i64>().is_err())
            .or_else(|| row.non_empty("pricelist_name"))
            .map(str::to_owned);
        let period = row.non_empty("period").and_then(period_months);
        let cost = row
            .non_empty("item_cost")
            .and_then(|c| Money::parse(c, row.non_empty("currency_str")))
            .or_else(|| row.non_empty("cost").and_then(|c| Money::parse(c, None)));
        let license = License {
            elid,
            licname,
            ip,
            product: product.unwrap_or(0),
            period,
            expiry,
            status,
            autoprolong: autoprolong_on(row.get("autoprolong")),
            special: row.non_empty("special_status").map(str::to_owned),
            cost,
            pricelist_label: label,
        };
        if product.is_none() || period.is_none() {
            return Some(Row::Unresolved(Unresolved {
                product_known: product.is_some(),
                period_known: period.is_some(),
                license,
            }));
        }
        Some(Row::License(license))
    }

    /// The id of a newly ordered license, wherever the answer puts it (`id`, `elid`,
    /// `item.id`, at the top or one `<doc>` down: the parser lifts nested fields).
    pub fn ordered_id(&self, doc: &super::xml::Document) -> Option<i64> {
        ["id", "elid", "item.id"]
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
            v.to_lowercase().as_str(),
            "0" | "off"
                | "no"
                | "none"
                | "null"
                | "false"
                | "disabled"
                | "-"
                | "отключено"
                | "отключен"
                | "выключено"
                | "нет"
                | "не продлевать"
        ),
    }
}

/// A 5/6 `period` → months: a number (`1`, `12`, `-100` for a trial), or a label such as
/// "1 month", "3 months", "1 year", "Trial", "1 месяц", "1 год". `None` when it is neither.
pub fn period_months(raw: &str) -> Option<i64> {
    let t = raw.trim().to_lowercase();
    let t = t.strip_prefix("per ").unwrap_or(&t).trim().to_owned();
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    if t.starts_with("trial") || t.starts_with("тест") || t.starts_with("проб") {
        return Some(-100);
    }
    let (num, unit) = match t.split_once(char::is_whitespace) {
        Some((n, u)) => (n.parse::<i64>().ok()?, u.trim()),
        // "month" / "year" alone.
        None => (1, t.as_str()),
    };
    if unit.starts_with("month") || unit.starts_with("мес") {
        Some(num)
    } else if unit.starts_with("year") || unit.starts_with("год") || unit.starts_with("лет") {
        num.checked_mul(12)
    } else {
        None
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
        for off in [Some("Отключено"), Some("нет"), Some("Disabled")] {
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
    fn billmgr5_rows_prefer_pricelist_id_and_keep_the_display_name_unresolved_otherwise() {
        let d = Dialect(Api::Billmgr5);
        let base = [
            ("id", "1001"),
            ("expiredate", "2030-01-01"),
            ("pricelist", "ISPmanager 6 Lite"),
            ("period", "1 month"),
            ("autoprolong", "Отключено"),
            ("cost", "9.00 EUR / Month"),
        ];
        let mut with_id = base.to_vec();
        with_id.push(("pricelist_id", "55227"));
        let Some(Row::License(l)) = d.license(&row(&with_id)) else {
            panic!("pricelist_id resolves the product")
        };
        assert_eq!(
            (l.product, l.period, l.autoprolong),
            (55227, Some(1), false)
        );
        assert_eq!(l.pricelist_label.as_deref(), Some("ISPmanager 6 Lite"));
        assert_eq!(l.cost.as_ref().map(Money::display), Some("9.00 EUR".into()));

        let Some(Row::Unresolved(u)) = d.license(&row(&base)) else {
            panic!("a display name alone is never a bad row")
        };
        assert!(!u.product_known && u.period_known);
        assert_eq!(
            u.license.pricelist_label.as_deref(),
            Some("ISPmanager 6 Lite")
        );

        let mut no_period = with_id.clone();
        no_period.retain(|(k, _)| *k != "period");
        let Some(Row::Unresolved(u)) = d.license(&row(&no_period)) else {
            panic!("a missing period is resolved from the form")
        };
        assert!(u.product_known && !u.period_known);
    }

    #[test]
    fn billmgr5_rows_fall_back_to_real_expiredate_and_read_special_status() {
        let d = Dialect(Api::Billmgr5);
        let Some(Row::License(l)) = d.license(&row(&[
            ("id", "7"),
            ("expiredate", "daily"),
            ("real_expiredate", "2030-02-03"),
            ("pricelist", "55227"),
            ("period", "12"),
            ("special_status", "Scheduled for deletion"),
        ])) else {
            panic!("a license")
        };
        assert_eq!(l.expiry, NaiveDate::from_ymd_opt(2030, 2, 3).expect("date"));
        assert_eq!(l.special.as_deref(), Some("Scheduled for deletion"));
    }

    #[test]
    fn periods_read_as_months_from_numbers_and_labels() {
        for (raw, want) in [
            ("1", Some(1)),
            ("-100", Some(-100)),
            ("1 month", Some(1)),
            ("3 months", Some(3)),
            ("1 year", Some(12)),
            ("2 years", Some(24)),
            ("Trial", Some(-100)),
            ("1 месяц", Some(1)),
            ("1 год", Some(12)),
            ("per month", Some(1)),
            ("soon", None),
        ] {
            assert_eq!(period_months(raw), want, "{raw}");
        }
    }

    #[test]
    fn an_order_answer_names_its_id_as_id_elid_or_item_id() {
        let d = Dialect(Api::Billmgr5);
        for body in [
            "<doc><id>1006</id></doc>",
            "<doc><elid>1006</elid></doc>",
            "<doc><item.id>1006</item.id></doc>",
            "<doc><doc><item.id>1006</item.id></doc></doc>",
        ] {
            let (doc, _) = crate::billmgr::xml::parse(body.as_bytes()).expect("parses");
            assert_eq!(d.ordered_id(&doc), Some(1006), "{body}");
        }
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
