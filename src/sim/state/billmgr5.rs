//! The BILLmanager 5/6 functions of the simulator: `soft` (paged list), `soft.edit` (view,
//! change name/IP), `soft.order.param` (order, or the unpaid cart), `soft.checkip` and
//! `service.prolong` (form, free preview, paid renewal), written from billmgr-api.md §1–§4 and
//! §8, with the same business rules as the BILLmanager 4 functions next door.
//!
//! Owns: the 5/6 wire shapes (tariff ids in `pricelist`, periods in months with `-100` for a
//! trial, `p_cnt`/`p_num`/`p_elems` paging, `item_status` with `orig`, answers nested one
//! `<doc>` down) and the `<tparams>` echo. Must not: do I/O, read the clock, or panic; like
//! the rest of `state`, it runs under the state lock.

use std::fmt::Write as _;

use chrono::{Days, Months, NaiveDate};

use super::super::SimLicense;
use super::super::catalog::{self, TRIAL_DAYS, TRIAL_PERIOD, Tariff, Term};
use super::super::sample::{FIRST_ID, SplitMix64};
use super::super::xml::{ApiError, Doc, esc};
use super::{Answer, Params, State, parse_ipv4};

/// Rows per `soft` page when `p_cnt` is absent (or not a positive number).
pub(crate) const DEFAULT_PAGE: usize = 20;

/// Request parameters echoed in a 5/6 `<tparams>`. Credentials (`authinfo`, `password`, the
/// session id `auth`) are never echoed.
const ECHO: &[&str] = &[
    "func",
    "out",
    "lang",
    "elid",
    "p_cnt",
    "p_num",
    "sok",
    "pricelist",
    "period",
    "licname",
    "ip",
    "remoteip",
    "autoprolong",
    "skipbasket",
    "clicked_button",
];

/// The [`ECHO`] parameters the request carried, in that order.
pub(super) fn echo(p: &Params) -> Vec<(&'static str, &str)> {
    ECHO.iter()
        .filter_map(|&k| p.get(k).map(|v| (k, v)))
        .collect()
}

/// `item_status` of a 5/6 row: the `orig` attribute and the localized text.
fn item_status(status: u8) -> (String, &'static str) {
    match status {
        1 => ("1".to_owned(), "Ordered"),
        2 => ("2".to_owned(), "Active"),
        3 => ("3_autosuspend".to_owned(), "Suspended"),
        4 => ("4".to_owned(), "Deleted"),
        5 => ("5".to_owned(), "Processing"),
        other => (other.to_string(), "Unknown"),
    }
}

/// A fake activation key, stable per license id (shown by `soft.edit` only; never log it).
fn lickey(id: i64) -> String {
    let mut rng = SplitMix64::new((id as u64) ^ 0x11C3_6E7A_5EC2_E700);
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:04X}-{:04X}-{:04X}-{:04X}-{:04X}-{:04X}",
        a >> 48,
        (a >> 32) & 0xFFFF,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        (b >> 32) & 0xFFFF
    )
}

/// The expiry `period` months (or a trial's 14 days) after `from`.
fn advance(from: NaiveDate, term: Term) -> Option<NaiveDate> {
    match term {
        Term::Trial => from.checked_add_days(Days::new(TRIAL_DAYS)),
        Term::Months(n) => from.checked_add_months(Months::new(n)),
        // The 5/6 table sells no lifetime period.
        Term::Lifetime => None,
    }
}

/// A display creation date: one period before the expiry, never after `today`.
fn createdate(l: &SimLicense, today: NaiveDate) -> NaiveDate {
    let before = match l.period {
        TRIAL_PERIOD => l.expiredate.checked_sub_days(Days::new(TRIAL_DAYS)),
        n => u32::try_from(n)
            .ok()
            .and_then(|m| l.expiredate.checked_sub_months(Months::new(m))),
    };
    before.unwrap_or(l.expiredate).min(today)
}

/// How a 5/6 rendering shows a license: a list row shows display values (the tariff's name,
/// autoprolong as a word, the status only as `item_status`), a form shows keys (the tariff id,
/// `autoprolong` `null`/`1`/`12`, a numeric `status`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A list row; `with_id`: the row also carries `pricelist_id`; `suffix` follows the
    /// tariff's name (a billing's own wording of its tariffs).
    Row {
        with_id: bool,
        suffix: &'static str,
    },
    Form,
}

/// The fields every 5/6 rendering of a license shares (row, view, saved edit).
fn write_license(buf: &mut String, l: &SimLicense, shape: Shape, special: Option<&String>) {
    let (orig, text) = item_status(l.status);
    let tariff = catalog::tariff(l.price);
    let tariff_name = tariff.map_or("", |t| t.name);
    let _ = write!(
        buf,
        "<id>{}</id><licname>{}</licname><ip>{}</ip>",
        l.id,
        esc(&l.licname),
        esc(&l.ip),
    );
    match shape {
        Shape::Row { with_id, suffix } => {
            let _ = write!(
                buf,
                "<pricelist>{}{}</pricelist>",
                esc(tariff_name),
                esc(suffix)
            );
            if with_id {
                let _ = write!(buf, "<pricelist_id>{}</pricelist_id>", l.price);
            }
        }
        Shape::Form => {
            let _ = write!(
                buf,
                "<elid>{}</elid><pricelist>{}</pricelist><pricelist_name>{}</pricelist_name><status>{}</status>",
                l.id,
                l.price,
                esc(tariff_name),
                l.status
            );
        }
    }
    let _ = write!(
        buf,
        "<period>{}</period><expiredate>{}</expiredate><real_expiredate>{}</real_expiredate>\
         <item_status orig=\"{}\">{text}</item_status>",
        l.period,
        l.expiredate.format("%Y-%m-%d"),
        l.expiredate.format("%Y-%m-%d"),
        esc(&orig),
    );
    match (shape, l.autoprolong) {
        (Shape::Row { .. }, Some(m)) => {
            let _ = write!(
                buf,
                "<autoprolong>{}</autoprolong>",
                esc(&catalog::months_label(i64::from(m)))
            );
        }
        (Shape::Row { .. }, None) => buf.push_str("<autoprolong></autoprolong>"),
        (Shape::Form, Some(m)) => {
            let _ = write!(buf, "<autoprolong>{m}</autoprolong>");
        }
        (Shape::Form, None) => buf.push_str("<autoprolong>null</autoprolong>"),
    }
    if let Some(special) = special {
        let _ = write!(buf, "<special_status>{}</special_status>", esc(special));
    }
}

/// "month", "year", "3 months": the unit of a price display.
fn per_label(months: i64) -> String {
    match months {
        1 => "month".to_owned(),
        12 => "year".to_owned(),
        n => catalog::months_label(n),
    }
}

/// The fields of the 5/6 list filter form.
const FILTER_FIELDS: &[&str] = &["licname", "ip", "pricelist", "status"];

/// The value a saved filter compares for `field` of a license (`None`: not a filter field).
fn list_field(l: &SimLicense, field: &str) -> Option<String> {
    match field {
        "licname" => Some(l.licname.clone()),
        "ip" => Some(l.ip.clone()),
        "pricelist" => Some(l.price.to_string()),
        "status" => Some(l.status.to_string()),
        _ => None,
    }
}

/// A positive count parameter (`p_cnt`, `p_num`); anything else counts as absent.
fn positive(p: &Params, key: &str) -> Option<usize> {
    p.filled(key)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

/// `pricelist`, `period` (months sold by that tariff, trial included) and `ip`, validated in
/// that order.
fn validate_tariff(p: &Params) -> Result<(&'static Tariff, i64, Term, String), ApiError> {
    let raw = p.get("pricelist").unwrap_or("");
    let tariff = raw
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(catalog::tariff)
        .ok_or_else(|| tariff_value(raw))?;
    let raw_period = p.get("period").unwrap_or("");
    let (period, term) = raw_period
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| tariff.term(n).map(|t| (n, t)))
        .ok_or_else(|| ApiError::value("period", raw_period))?;
    let ip = parse_ipv4(p.get("ip").unwrap_or(""))?;
    Ok((tariff, period, term, ip))
}

fn tariff_value(raw: &str) -> ApiError {
    ApiError::new(
        "value",
        Some("pricelist"),
        Some(raw),
        "The \"Tariff\" field has invalid value.",
    )
}

/// `autoprolong` of an order: absent, blank or `null` is off; else months the tariff renews for.
fn validate_autoprolong(p: &Params, tariff: &Tariff) -> Result<Option<u32>, ApiError> {
    let raw = p.get("autoprolong").unwrap_or("");
    match raw.trim() {
        "" | "null" => Ok(None),
        v => v
            .parse::<i64>()
            .ok()
            .filter(|m| tariff.renewal_months().any(|r| r == *m))
            .and_then(|m| u32::try_from(m).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    "value",
                    Some("autoprolong"),
                    Some(raw),
                    "The \"Auto renewal\" field has invalid value.",
                )
            }),
    }
}

/// Only `skipbasket=on` with `clicked_button=finish` pays at once; anything else (the
/// `basket` button, no `skipbasket`, no button) lands in the cart unpaid.
fn pays_now(p: &Params) -> bool {
    p.get("skipbasket").map(str::trim) == Some("on")
        && p.get("clicked_button").map(str::trim) == Some("finish")
}

fn v5_doc(p: &Params, func: &str, user: &str, capacity: usize) -> Doc {
    Doc::open_v5(func, Some(user), &echo(p), capacity)
}

/// `<doc><ok/></doc>` in the 5/6 envelope.
fn v5_ok(p: &Params, func: &str, user: &str) -> String {
    let mut d = v5_doc(p, func, user, 256);
    d.ok();
    d.finish()
}

impl State {
    // ---- soft (paged list) -------------------------------------------------------------

    pub(super) fn soft_list(&self, p: &Params, user: &str, today: NaiveDate) -> String {
        let p_cnt = positive(p, "p_cnt").unwrap_or(DEFAULT_PAGE);
        let p_num = positive(p, "p_num").unwrap_or(1);
        // A filter saved in the panel applies to API lists too, and `p_elems` counts only what
        // it lets through: the list looks complete.
        let filter = self
            .saved_filters
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let shown: Vec<&SimLicense> = self
            .licenses
            .values()
            .filter(|l| {
                filter
                    .iter()
                    .all(|(k, v)| list_field(l, k).is_none_or(|f| &f == v))
            })
            .collect();
        let total = shown.len();
        let skip = (p_num - 1).saturating_mul(p_cnt);
        let rows = p_cnt.min(total.saturating_sub(skip));
        let mut d = v5_doc(p, "soft", user, 2048 + 420 * rows);
        d.raw(concat!(
            "<metadata name=\"soft\" type=\"list\" key=\"id\" keyname=\"licname\" mgr=\"billmgr\">",
            "<toolbar><toolbtn name=\"edit\" func=\"soft.edit\"/><toolbtn name=\"prolong\" func=\"service.prolong\"/></toolbar>",
            "<coldata><col name=\"id\" type=\"data\" sort=\"digit\"/><col name=\"licname\" type=\"data\" sort=\"alpha\"/>",
            "<col name=\"ip\" type=\"data\" sort=\"alpha\"/><col name=\"expiredate\" type=\"data\" sort=\"digit\"/>",
            "<col name=\"item_status\" type=\"msg\" sort=\"alpha\"/></coldata></metadata>",
            "<messages name=\"soft\"><msg name=\"title\">Licenses</msg><msg name=\"licname\">Name</msg>",
            "<msg name=\"expiredate\">Expires</msg><msg name=\"list_empty\">No licenses</msg></messages>",
            "<page>list</page>",
        ));
        for l in shown.iter().copied().skip(skip).take(rows) {
            let start = d.buf().len();
            let with_id = !self.rows_without_pricelist_id;
            let suffix = self.tariff_suffix;
            let b = d.buf();
            b.push_str("<elem>");
            write_license(
                b,
                l,
                Shape::Row { with_id, suffix },
                self.special.get(&l.id),
            );
            let cost = catalog::tariff(l.price)
                .and_then(|t| t.cost(l.period))
                .map(|c| format!("{c} / {}", per_label(l.period)))
                .unwrap_or_default();
            let _ = write!(
                b,
                "<cost>{}</cost><createdate>{}</createdate></elem>",
                esc(&cost),
                createdate(l, today).format("%Y-%m-%d")
            );
            self.strip_hidden(l.id, d.buf(), start);
        }
        d.field("p_cnt", p_cnt)
            .field("p_num", p_num)
            .field("p_elems", total)
            .raw("<p_sort>id</p_sort><p_order>asc</p_order>");
        d.finish()
    }

    // ---- soft.filter (the saved list filter) -------------------------------------------

    /// Without `sok`: the filter form with the saved values. With `sok`: the non-empty fields
    /// become the saved filter (all empty resets it), as the panel's filter does.
    pub(super) fn soft_filter(&mut self, p: &Params, user: &str) -> String {
        if p.submitted() {
            let set: Vec<(String, String)> = FILTER_FIELDS
                .iter()
                .filter_map(|k| p.filled(k).map(|v| ((*k).to_owned(), v.trim().to_owned())))
                .collect();
            if set.is_empty() {
                self.saved_filters.remove(user);
            } else {
                self.saved_filters.insert(user.to_owned(), set);
            }
            return v5_ok(p, "soft.filter", user);
        }
        let saved = self.saved_filters.get(user).cloned().unwrap_or_default();
        let mut d = v5_doc(p, "soft.filter", user, 512);
        for k in FILTER_FIELDS {
            let v = saved
                .iter()
                .find(|(f, _)| f == k)
                .map_or("", |(_, v)| v.as_str());
            d.field(k, v);
        }
        d.finish()
    }

    // ---- whoami and dashboard.info (the balance) ---------------------------------------

    /// The account, with its balance and a localized currency label in attributes of `<user>`.
    pub(super) fn whoami(&self, p: &Params, user: &str) -> String {
        let mut d = v5_doc(p, "whoami", user, 256);
        let _ = write!(
            d.buf(),
            "<user id=\"1\" name=\"{}\" realname=\"Reseller\" balance=\"{}.{:02}\" currency=\"€\"/>",
            esc(user),
            self.balance / 100,
            (self.balance % 100).abs()
        );
        d.finish()
    }

    /// The dashboard: one row whose `realbalance` is "123.45 EUR".
    pub(super) fn dashboard_info(&self, p: &Params, user: &str) -> String {
        let mut d = v5_doc(p, "dashboard.info", user, 256);
        let _ = write!(
            d.buf(),
            "<elem><realbalance>{}.{:02} {}</realbalance></elem>",
            self.balance / 100,
            (self.balance % 100).abs(),
            catalog::CURRENCY
        );
        d.finish()
    }

    /// Takes `cents` from the balance, or refuses when it does not cover them.
    fn charge(&mut self, cents: i64) -> Result<(), ApiError> {
        if cents > self.balance {
            // The type of this refusal is not documented publicly: a guess, kept pessimistic.
            return Err(ApiError::new(
                "value",
                Some("amount"),
                Some(&format!("{}.{:02}", cents / 100, cents % 100)),
                "Insufficient funds on the balance",
            ));
        }
        self.balance -= cents;
        Ok(())
    }

    // ---- soft.edit (view; change name/IP) ----------------------------------------------

    pub(super) fn soft_edit(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        let Some(elid) = p.filled("elid") else {
            return Err(ApiError::missed("elid", p.get("elid").unwrap_or("")));
        };
        if p.submitted() {
            // The saved form, one `<doc>` down and without `<ok/>` (as JBS handles it).
            let id = self.apply_change(p, elid, today)?;
            let l = self.find(&id.to_string())?;
            let mut d = v5_doc(p, "soft.edit", user, 768);
            let special = self.special.get(&l.id).cloned();
            let b = d.buf();
            b.push_str("<doc>");
            write_license(b, &l, Shape::Form, special.as_ref());
            b.push_str("</doc>");
            return Ok(d.finish());
        }
        let l = self.find(elid)?;
        let tariff = catalog::tariff(l.price);
        let mut d = v5_doc(p, "soft.edit", user, 1024);
        let special = self.special.get(&l.id).cloned();
        write_license(d.buf(), &l, Shape::Form, special.as_ref());
        d.field("remoteip", &l.ip)
            .field(
                "cost",
                tariff.and_then(|t| t.cost(l.period)).unwrap_or_default(),
            )
            .field("createdate", createdate(&l, today).format("%Y-%m-%d"))
            .field("lickey", lickey(l.id))
            .field(
                "ip_change_date",
                l.last_ip_change
                    .map(|x| x.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            );
        Ok(d.finish())
    }

    // ---- soft.order.param (order; cart) ------------------------------------------------

    pub(super) fn soft_order(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        if !p.submitted() {
            let mut d = v5_doc(p, "soft.order.param", user, 1024);
            for k in ["pricelist", "period", "licname", "ip", "autoprolong"] {
                d.field(k, p.get(k).unwrap_or(""));
            }
            d.raw("<slist name=\"pricelist\">");
            for t in catalog::TARIFFS {
                let _ = write!(
                    d.buf(),
                    "<val key=\"{}\">{}</val>",
                    t.pricelist,
                    esc(t.name)
                );
            }
            d.raw("</slist>");
            return Ok(d.finish());
        }
        let (tariff, period, term, ip) = validate_tariff(p)?;
        let licname = p.get("licname").unwrap_or("").trim();
        if licname.is_empty() {
            return Err(ApiError::value("licname", licname));
        }
        let autoprolong = validate_autoprolong(p, tariff)?;
        if !pays_now(p) {
            self.cart_calls += 1;
            return Ok(v5_ok(p, "soft.order.param", user));
        }
        let expiredate =
            advance(today, term).ok_or_else(|| ApiError::value("period", &period.to_string()))?;
        let cents = tariff
            .periods
            .iter()
            .find(|(m, _)| *m == period)
            .map_or(0, |(_, c)| i64::from(*c));
        self.charge(cents)?;
        let id = self
            .licenses
            .keys()
            .next_back()
            .map_or(FIRST_ID, |max| (max + 1).max(FIRST_ID));
        self.licenses.insert(
            id,
            SimLicense {
                id,
                licname: licname.to_owned(),
                ip,
                price: tariff.pricelist,
                period,
                expiredate,
                status: 2,
                last_ip_change: None,
                autoprolong,
            },
        );
        self.paid_total += 1;
        // The id as JBS has read it since 2015: `item.id`.
        let mut d = v5_doc(p, "soft.order.param", user, 256);
        d.field("item.id", id);
        Ok(d.finish())
    }

    // ---- soft.checkip ------------------------------------------------------------------

    pub(super) fn soft_checkip(&self, p: &Params, user: &str) -> Answer {
        let (tariff, _, _, ip) = validate_tariff(p)?;
        let taken = self
            .licenses
            .values()
            .any(|l| l.price == tariff.pricelist && l.status != 4 && l.ip == ip);
        if taken {
            return Err(ApiError::new(
                "exists",
                Some("ip"),
                Some(&ip),
                "A license of this tariff for this IP address already exists",
            ));
        }
        Ok(v5_ok(p, "soft.checkip", user))
    }

    // ---- service.prolong (form, free preview, paid renewal) ----------------------------

    pub(super) fn prolong(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        let elid = p.filled("elid").unwrap_or("");
        let lic = self.find(elid)?;
        if lic.status == 4 {
            return Err(ApiError::missed("elid", elid));
        }
        let old = lic.expiredate.format("%Y-%m-%d").to_string();
        // The form's period list, each with its price ("6.50 EUR per month").
        let period_list = |d: &mut Doc| {
            d.raw("<slist name=\"period\">");
            for m in catalog::tariff(lic.price)
                .into_iter()
                .flat_map(Tariff::renewal_months)
            {
                let cost = catalog::tariff(lic.price)
                    .and_then(|t| t.cost(m))
                    .unwrap_or_default();
                let _ = write!(
                    d.buf(),
                    "<val key=\"{m}\">{} per {}</val>",
                    esc(&cost),
                    esc(&per_label(m))
                );
            }
            d.raw("</slist>");
        };
        if !p.submitted() && p.filled("period").is_none() {
            let mut d = v5_doc(p, "service.prolong", user, 512);
            d.field("elid", lic.id).field("expiredate", &old);
            period_list(&mut d);
            return Ok(d.finish());
        }
        let (months, new_expiry) = prolong_target(&lic, p.get("period").unwrap_or(""), today)?;
        let nested = |d: &mut Doc| {
            let _ = write!(
                d.buf(),
                "<doc><expiredate>{old}</expiredate><newexpiredate>{}</newexpiredate></doc>",
                new_expiry.format("%Y-%m-%d")
            );
        };
        if !p.submitted() {
            // A free preview: the form again, flat, with the new expiry for that period.
            // Nothing changes, nothing is counted.
            let mut d = v5_doc(p, "service.prolong", user, 512);
            d.field("elid", lic.id)
                .field("expiredate", &old)
                .field("period", months)
                .field("newexpiredate", new_expiry.format("%Y-%m-%d"));
            period_list(&mut d);
            return Ok(d.finish());
        }
        if p.get("clicked_button").map(str::trim) == Some("basket") {
            self.cart_calls += 1;
            return Ok(v5_ok(p, "service.prolong", user));
        }
        let (id, old_expiry) = (lic.id, lic.expiredate);
        let cents = catalog::tariff(lic.price)
            .and_then(|t| t.periods.iter().find(|(m, _)| *m == months))
            .map_or(0, |(_, c)| i64::from(*c));
        self.charge(cents)?;
        if let Some(l) = self.licenses.get_mut(&id) {
            l.expiredate = new_expiry;
            l.status = 2;
            l.period = months;
        }
        *self.paid_by_elid.entry(id).or_default() += 1;
        *self.renewals_by_expiry.entry((id, old_expiry)).or_default() += 1;
        self.paid_total += 1;
        let mut d = v5_doc(p, "service.prolong", user, 512);
        nested(&mut d);
        Ok(d.finish())
    }
}

/// The business rules of a renewal (billmgr-api.md §8), shared by the preview and the paid
/// call: `(months, new expiry)` or the refusal. `lic` is not deleted.
fn prolong_target(
    lic: &SimLicense,
    raw_period: &str,
    today: NaiveDate,
) -> Result<(i64, NaiveDate), ApiError> {
    if lic.status == 5 {
        return Err(ApiError::new(
            "value",
            Some("elid"),
            Some(&lic.id.to_string()),
            "The service is being processed",
        ));
    }
    if lic.period == TRIAL_PERIOD {
        return Err(ApiError::new(
            "value",
            Some("period"),
            Some(raw_period),
            "A trial license cannot be renewed",
        ));
    }
    let months = raw_period.trim().parse::<i64>().ok();
    let term = months.and_then(|m| catalog::tariff(lic.price)?.term(m));
    let (Some(months), Some(term @ Term::Months(_))) = (months, term) else {
        return Err(ApiError::value("period", raw_period));
    };
    super::not_too_early(lic, today)?;
    let base = super::renewal_base(lic, today);
    let new_expiry = advance(base, term).ok_or_else(|| ApiError::value("period", raw_period))?;
    Ok((months, new_expiry))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::super::{SimApi, SimConfig};
    use super::*;

    const AUTH: (&str, &str) = ("authinfo", "demo:demo-password");
    const LITE: i64 = 55227;
    const DNS: i64 = 55251;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn today() -> NaiveDate {
        d(2024, 6, 15)
    }

    fn state(api: SimApi, licenses: usize) -> State {
        let cfg = SimConfig {
            api,
            licenses,
            ..SimConfig::default()
        };
        State::new(&cfg, today(), 7)
    }

    fn empty() -> State {
        state(SimApi::Billmgr5, 0)
    }

    fn lic(id: i64, pricelist: i64, period: i64, expiredate: NaiveDate, status: u8) -> SimLicense {
        SimLicense {
            id,
            licname: format!("lic{id}.example.net"),
            ip: format!("203.0.113.{}", id % 250),
            price: pricelist,
            period,
            expiredate,
            status,
            last_ip_change: None,
            autoprolong: None,
        }
    }

    fn put(st: &mut State, l: SimLicense) {
        st.licenses.insert(l.id, l);
    }

    fn call(st: &mut State, pairs: &[(&str, &str)]) -> String {
        call_on(st, pairs, today())
    }

    fn call_on(st: &mut State, pairs: &[(&str, &str)], on: NaiveDate) -> String {
        let mut all = vec![AUTH];
        all.extend_from_slice(pairs);
        let p = Params::merge(
            Vec::new(),
            all.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        st.process(&p, on, Instant::now())
    }

    fn ids(doc: &str) -> Vec<i64> {
        doc.split("<elem><id>")
            .skip(1)
            .filter_map(|s| s.split('<').next()?.parse().ok())
            .collect()
    }

    fn prolong(st: &mut State, elid: &str, period: &str, sok: bool) -> String {
        let mut p = vec![
            ("func", "service.prolong"),
            ("elid", elid),
            ("period", period),
        ];
        if sok {
            p.push(("sok", "ok"));
        }
        call(st, &p)
    }

    const ORDER: [(&str, &str); 8] = [
        ("func", "soft.order.param"),
        ("pricelist", "55227"),
        ("period", "1"),
        ("licname", "new.example.net"),
        ("ip", "192.0.2.77"),
        ("sok", "ok"),
        ("skipbasket", "on"),
        ("clicked_button", "finish"),
    ];

    /// `ORDER` with `key` set to `value`, or removed when `value` is `None`.
    fn order_with(
        key: &'static str,
        value: Option<&'static str>,
    ) -> Vec<(&'static str, &'static str)> {
        let mut o: Vec<_> = ORDER.iter().copied().filter(|(k, _)| *k != key).collect();
        o.extend(value.map(|v| (key, v)));
        o
    }

    // ---- soft ---------------------------------------------------------------------------

    #[test]
    fn paging_returns_every_row_once_across_pages_with_the_total_in_p_elems() {
        let mut st = state(SimApi::Billmgr5, 45);
        let mut seen = Vec::new();
        for (page, rows) in [("1", 20), ("2", 20), ("3", 5), ("4", 0)] {
            let doc = call(
                &mut st,
                &[("func", "soft"), ("p_cnt", "20"), ("p_num", page)],
            );
            assert_eq!(doc.matches("<elem>").count(), rows, "page {page}: {doc}");
            assert!(doc.contains("<p_elems>45</p_elems>"), "{doc}");
            assert!(doc.contains(&format!("<p_num>{page}</p_num>")), "{doc}");
            assert!(doc.contains("<p_cnt>20</p_cnt>"), "{doc}");
            seen.extend(ids(&doc));
        }
        assert_eq!(seen, (1001..=1045).collect::<Vec<_>>());
    }

    #[test]
    fn without_p_cnt_a_page_holds_twenty_rows_and_garbage_counts_as_absent() {
        let mut st = state(SimApi::Billmgr5, 30);
        let doc = call(&mut st, &[("func", "soft")]);
        assert_eq!(doc.matches("<elem>").count(), 20);
        assert!(doc.contains("<p_cnt>20</p_cnt><p_num>1</p_num><p_elems>30</p_elems>"));
        let doc = call(
            &mut st,
            &[("func", "soft"), ("p_cnt", "-5"), ("p_num", "x")],
        );
        assert_eq!(ids(&doc), (1001..=1020).collect::<Vec<_>>());
        let big = call(
            &mut st,
            &[
                ("func", "soft"),
                ("p_cnt", "100000"),
                ("p_num", "99999999999"),
            ],
        );
        assert!(!big.contains("<elem>"), "{big}");
        assert!(big.contains("<p_elems>30</p_elems>"), "{big}");
    }

    #[test]
    fn an_empty_account_lists_no_elem_at_all() {
        let mut st = empty();
        let doc = call(&mut st, &[("func", "soft")]);
        assert!(!doc.contains("<elem>"), "{doc}");
        assert!(doc.contains("<p_elems>0</p_elems>"), "{doc}");
    }

    #[test]
    fn a_row_carries_every_5_6_field_and_the_root_is_decorated() {
        let mut st = empty();
        put(&mut st, lic(1101, LITE, 1, d(2024, 7, 1), 2));
        let mut suspended = lic(1102, 55229, 12, d(2024, 6, 1), 3);
        suspended.autoprolong = Some(12);
        put(&mut st, suspended);
        let doc = call(&mut st, &[("func", "soft")]);
        // The pessimistic list shape: the tariff by name (its id beside it), the status only
        // as `item_status`, autoprolong as a word, the cost as display text.
        assert!(
            doc.contains(
                "<elem><id>1101</id><licname>lic1101.example.net</licname><ip>203.0.113.101</ip>\
                 <pricelist>ISPmanager 6 Lite</pricelist><pricelist_id>55227</pricelist_id><period>1</period>\
                 <expiredate>2024-07-01</expiredate><real_expiredate>2024-07-01</real_expiredate>\
                 <item_status orig=\"2\">Active</item_status><autoprolong></autoprolong>\
                 <cost>6.50 EUR / month</cost><createdate>2024-06-01</createdate></elem>"
            ),
            "{doc}"
        );
        assert!(
            doc.contains(
                "<item_status orig=\"3_autosuspend\">Suspended</item_status>\
                 <autoprolong>1 year</autoprolong><cost>125.00 EUR / year</cost><createdate>2023-06-01</createdate>"
            ),
            "{doc}"
        );
        assert!(!doc.contains("<status>"), "{doc}");
        st.rows_without_pricelist_id = true;
        let bare = call(&mut st, &[("func", "soft")]);
        assert!(!bare.contains("pricelist_id"), "{bare}");
        assert!(
            doc.contains("<doc lang=\"en\" func=\"soft\" binary=\"/billmgr\" host=\""),
            "{doc}"
        );
        for noise in [
            "<metadata ",
            "<messages ",
            "<page>",
            "<p_sort>",
            "<tparams>",
        ] {
            assert!(doc.contains(noise), "{noise}: {doc}");
        }
        assert!(!doc.contains("<price>"), "{doc}");
    }

    #[test]
    fn hostile_text_is_escaped_in_rows() {
        let mut st = empty();
        let mut l = lic(1001, LITE, 1, d(2024, 7, 1), 2);
        l.licname = "</licname><status>9</status>\u{0}".to_owned();
        put(&mut st, l);
        let doc = call(&mut st, &[("func", "soft")]);
        assert!(
            doc.contains(
                "<licname>&lt;/licname&gt;&lt;status&gt;9&lt;/status&gt;\u{FFFD}</licname>"
            ),
            "{doc}"
        );
    }

    // ---- generations, envelope, secrets -------------------------------------------------

    #[test]
    fn each_generation_refuses_the_functions_of_the_other_as_missed_func() {
        let mut v5 = state(SimApi::Billmgr5, 2);
        for f in [
            "software",
            "software.filter",
            "software.edit",
            "software.licinfo",
            "software.period",
        ] {
            let doc = call(&mut v5, &[("func", f), ("elid", "1001")]);
            assert!(
                doc.contains("<error type=\"missed\" object=\"func\""),
                "{f}: {doc}"
            );
        }
        let mut v4 = state(SimApi::Billmgr4, 2);
        for f in [
            "soft",
            "soft.edit",
            "soft.order.param",
            "soft.checkip",
            "service.prolong",
        ] {
            let doc = call(&mut v4, &[("func", f), ("elid", "1001")]);
            assert!(
                doc.contains("<error type=\"missed\" object=\"func\""),
                "{f}: {doc}"
            );
        }
        assert!(v4.licenses.values().all(|l| l.price < 1000));
        assert!(v5.licenses.values().all(|l| l.price > 55_000));
    }

    #[test]
    fn errors_and_sessions_use_the_5_6_envelope_and_never_echo_credentials() {
        let mut st = empty();
        let p = |pairs: &[(&str, &str)]| {
            Params::merge(
                Vec::new(),
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
        };
        let bad = st.process(
            &p(&[("authinfo", "demo:canary-Pw-4711"), ("func", "soft")]),
            today(),
            Instant::now(),
        );
        assert!(
            bad.contains("binary=\"/billmgr\"") && bad.contains("object=\"badpassword\""),
            "{bad}"
        );
        let login = st.process(
            &p(&[
                ("func", "auth"),
                ("username", "demo"),
                ("password", "demo-password"),
            ]),
            today(),
            Instant::now(),
        );
        let sid = login
            .split("<auth id=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("an auth id")
            .to_owned();
        let list = st.process(
            &p(&[
                ("auth", &sid),
                ("func", "soft"),
                ("password", "canary-Pw-4711"),
            ]),
            today(),
            Instant::now(),
        );
        assert!(list.contains("<p_elems>0</p_elems>"), "{list}");
        for doc in [&bad, &login, &list] {
            assert!(
                !doc.contains("canary-Pw-4711") && !doc.contains("demo-password"),
                "{doc}"
            );
        }
        assert!(!list.contains(&sid), "the session id is not echoed: {list}");
    }

    // ---- soft.edit ----------------------------------------------------------------------

    #[test]
    fn the_edit_view_shows_the_license_with_key_remote_ip_tariff_name_and_ip_change_date() {
        let mut st = empty();
        let mut l = lic(1001, 55231, 12, d(2024, 9, 1), 2);
        l.last_ip_change = Some(d(2024, 5, 2));
        put(&mut st, l);
        let doc = call(&mut st, &[("func", "soft.edit"), ("elid", "1001")]);
        for want in [
            "<id>1001</id>",
            "<pricelist>55231</pricelist>",
            "<period>12</period>",
            "<expiredate>2024-09-01</expiredate>",
            "<remoteip>203.0.113.1</remoteip>",
            "<pricelist_name>ISPmanager 6 Host</pricelist_name>",
            "<ip_change_date>2024-05-02</ip_change_date>",
            "<lickey>",
        ] {
            assert!(doc.contains(want), "{want}: {doc}");
        }
        assert!(!doc.contains("<doc><id>"), "a view is not nested: {doc}");
        let again = call(&mut st, &[("func", "soft.edit"), ("elid", "1001")]);
        assert_eq!(
            doc.split("<lickey>").nth(1),
            again.split("<lickey>").nth(1),
            "the key is stable"
        );
    }

    #[test]
    fn a_saved_edit_answers_the_form_nested_without_ok_and_keeps_the_monthly_ip_rule() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 7, 1), 2));
        let edit = |st: &mut State, ip: &'static str, on: NaiveDate| {
            call_on(
                st,
                &[
                    ("func", "soft.edit"),
                    ("elid", "1001"),
                    ("licname", "renamed"),
                    ("ip", ip),
                    ("sok", "ok"),
                ],
                on,
            )
        };
        let saved = edit(&mut st, "192.0.2.1", d(2024, 6, 3));
        assert!(
            saved.contains(
                "<doc><id>1001</id><licname>renamed</licname><ip>192.0.2.1</ip><elid>1001</elid><pricelist>55227</pricelist>"
            ),
            "{saved}"
        );
        assert!(!saved.contains("<ok/>"), "{saved}");
        assert_eq!(st.licenses[&1001].last_ip_change, Some(d(2024, 6, 3)));
        let refused = edit(&mut st, "192.0.2.2", d(2024, 6, 30));
        assert!(
            refused.contains("<error type=\"value\" object=\"ip\"")
                && refused.contains("<param name=\"value\">192.0.2.2</param>")
                && refused.contains("The IP address can be changed only once a month"),
            "{refused}"
        );
        assert_eq!(st.licenses[&1001].ip, "192.0.2.1");
        assert!(edit(&mut st, "192.0.2.2", d(2024, 7, 1)).contains("<ip>192.0.2.2</ip>"));
        assert_eq!(st.licenses[&1001].ip, "192.0.2.2");
    }

    #[test]
    fn a_deleted_or_unknown_license_cannot_be_edited_and_blank_names_are_refused() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 7, 1), 4));
        put(&mut st, lic(1002, LITE, 1, d(2024, 7, 1), 2));
        let save = |st: &mut State, elid: &str, name: &str| {
            call(
                st,
                &[
                    ("func", "soft.edit"),
                    ("elid", elid),
                    ("licname", name),
                    ("sok", "ok"),
                ],
            )
        };
        assert!(save(&mut st, "1001", "x").contains("<error type=\"missed\" object=\"elid\""));
        assert!(save(&mut st, "4242", "x").contains("<error type=\"missed\" object=\"elid\""));
        assert!(save(&mut st, "1002", " ").contains("<error type=\"value\" object=\"licname\""));
        assert!(call(&mut st, &[("func", "soft.edit")]).contains("object=\"elid\""));
        assert!(
            call(&mut st, &[("func", "soft.edit"), ("elid", "1001")])
                .contains("<status>4</status>")
        );
        assert_eq!(st.licenses[&1002].licname, "lic1002.example.net");
    }

    // ---- soft.order.param ---------------------------------------------------------------

    #[test]
    fn a_paid_order_creates_the_license_for_its_months_and_answers_its_id() {
        let mut st = empty();
        put(&mut st, lic(1500, LITE, 1, d(2024, 7, 1), 2));
        let doc = call(&mut st, &order_with("autoprolong", Some("12")));
        assert!(doc.contains("<item.id>1501</item.id>"), "{doc}");
        let l = &st.licenses[&1501];
        assert_eq!(
            (l.price, l.period, l.expiredate, l.status, l.autoprolong),
            (LITE, 1, d(2024, 7, 15), 2, Some(12))
        );
        assert_eq!(
            (l.licname.as_str(), l.ip.as_str()),
            ("new.example.net", "192.0.2.77")
        );
        assert_eq!(st.paid_total, 1);
        assert_eq!(st.cart_calls, 0);

        call(&mut st, &order_with("period", Some("-100")));
        assert_eq!(st.licenses[&1502].expiredate, d(2024, 6, 29));
        assert_eq!(st.licenses[&1502].period, TRIAL_PERIOD);
        call(&mut st, &order_with("autoprolong", Some("null")));
        assert_eq!(st.licenses[&1503].autoprolong, None);
        assert_eq!(st.paid_total, 3);
    }

    #[test]
    fn an_order_for_the_cart_creates_nothing_and_pays_nothing() {
        let mut st = empty();
        let carts = [
            order_with("clicked_button", Some("basket")),
            order_with("skipbasket", None),
            order_with("clicked_button", None),
        ];
        for o in &carts {
            let doc = call(&mut st, o);
            assert!(doc.contains("<ok/>") && !doc.contains("<id>"), "{doc}");
        }
        assert!(st.licenses.is_empty());
        assert_eq!(st.paid_total, 0);
        assert_eq!(st.cart_calls, 3);
    }

    #[test]
    fn an_order_with_an_invalid_field_names_that_field_and_changes_nothing() {
        let mut st = empty();
        let cases: [(&'static str, Option<&'static str>, &str); 7] = [
            ("pricelist", Some("7"), "pricelist"),
            ("pricelist", None, "pricelist"),
            ("period", Some("3"), "period"),
            ("period", Some("8"), "period"),
            ("ip", Some("192.0.2.300"), "ip"),
            ("licname", Some("  "), "licname"),
            ("autoprolong", Some("6"), "autoprolong"),
        ];
        for (key, value, object) in cases {
            let doc = call(&mut st, &order_with(key, value));
            assert!(
                doc.contains(&format!("<error type=\"value\" object=\"{object}\"")),
                "{key}: {doc}"
            );
        }
        // Validation comes before the cart: a bad field in a cart order is refused too.
        let mut cart = order_with("clicked_button", Some("basket"));
        cart.retain(|(k, _)| *k != "ip");
        cart.push(("ip", "nope"));
        assert!(call(&mut st, &cart).contains("object=\"ip\""));
        let dns_monthly = [
            ("pricelist", "55251"),
            ("period", "12"),
            ("autoprolong", "1"),
        ];
        let mut o: Vec<_> = ORDER
            .iter()
            .copied()
            .filter(|(k, _)| !["pricelist", "period"].contains(k))
            .collect();
        o.extend(dns_monthly);
        assert!(call(&mut st, &o).contains("object=\"autoprolong\""));
        o.retain(|(k, _)| *k != "period");
        o.push(("period", "1"));
        assert!(call(&mut st, &o).contains("object=\"period\""));
        assert!(st.licenses.is_empty());
        assert_eq!((st.paid_total, st.cart_calls), (0, 0));
    }

    #[test]
    fn an_order_without_sok_only_returns_the_form() {
        let mut st = empty();
        let o = order_with("sok", None);
        let doc = call(&mut st, &o);
        assert!(!doc.contains("<ok/>") && !doc.contains("<id>"), "{doc}");
        assert!(doc.contains("<slist name=\"pricelist\">"), "{doc}");
        assert!(st.licenses.is_empty());
        assert_eq!((st.paid_total, st.cart_calls), (0, 0));
    }

    // ---- soft.checkip -------------------------------------------------------------------

    #[test]
    fn checkip_refuses_an_ip_in_use_by_a_live_license_of_that_tariff_only() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 7, 1), 2));
        put(&mut st, lic(1002, DNS, 12, d(2024, 7, 1), 4));
        let check = |st: &mut State, pricelist: &str, period: &str, ip: &str| {
            call(
                st,
                &[
                    ("func", "soft.checkip"),
                    ("pricelist", pricelist),
                    ("period", period),
                    ("ip", ip),
                ],
            )
        };
        let taken = check(&mut st, "55227", "1", "203.0.113.1");
        assert!(
            taken.contains("<error type=\"exists\" object=\"ip\"")
                && taken.contains("<param name=\"value\">203.0.113.1</param>"),
            "{taken}"
        );
        assert!(check(&mut st, "55229", "12", "203.0.113.1").contains("<ok/>"));
        assert!(
            check(&mut st, "55251", "12", "203.0.113.2").contains("<ok/>"),
            "a deleted license frees its ip"
        );
        assert!(check(&mut st, "55251", "1", "203.0.113.9").contains("object=\"period\""));
        assert!(check(&mut st, "55251", "-100", "203.0.113.9").contains("<ok/>"));
        assert!(check(&mut st, "1", "1", "203.0.113.9").contains("object=\"pricelist\""));
        assert_eq!(st.licenses.len(), 2);
    }

    // ---- service.prolong ----------------------------------------------------------------

    #[test]
    fn a_paid_prolong_extends_from_the_expiry_counts_once_and_answers_nested() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 6, 20), 2));
        let doc = prolong(&mut st, "1001", "1", true);
        assert!(
            doc.contains(
                "<doc><expiredate>2024-06-20</expiredate><newexpiredate>2024-07-20</newexpiredate></doc>"
            ),
            "{doc}"
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 7, 20));
        assert_eq!(st.paid_by_elid.get(&1001), Some(&1));
        assert_eq!(st.renewals_by_expiry.get(&(1001, d(2024, 6, 20))), Some(&1));
        assert_eq!(st.paid_total, 1);
        prolong(&mut st, "1001", "12", true);
        assert_eq!(st.licenses[&1001].expiredate, d(2025, 7, 20));
        assert_eq!(st.licenses[&1001].period, 12);
        assert_eq!(st.paid_by_elid.get(&1001), Some(&2));
    }

    #[test]
    fn a_prolong_without_sok_previews_for_free_and_without_period_returns_the_form() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 6, 20), 2));
        put(&mut st, lic(1002, DNS, 12, d(2024, 6, 20), 2));
        let preview = prolong(&mut st, "1001", "12", false);
        assert!(
            preview.contains(
                "<elid>1001</elid><expiredate>2024-06-20</expiredate><period>12</period><newexpiredate>2025-06-20</newexpiredate>"
            ),
            "a flat preview: {preview}"
        );
        assert!(
            preview.contains("<val key=\"12\">65.00 EUR per year</val>"),
            "the price of each period: {preview}"
        );
        let form = call(&mut st, &[("func", "service.prolong"), ("elid", "1001")]);
        assert!(
            form.contains(
                "<expiredate>2024-06-20</expiredate><slist name=\"period\">\
                           <val key=\"1\">6.50 EUR per month</val><val key=\"12\">65.00 EUR per year</val></slist>"
            ),
            "{form}"
        );
        assert!(!form.contains("newexpiredate"), "{form}");
        let dns = call(&mut st, &[("func", "service.prolong"), ("elid", "1002")]);
        assert!(
            dns.contains("<slist name=\"period\"><val key=\"12\">30.00 EUR per year</val></slist>"),
            "{dns}"
        );
        let refused = prolong(&mut st, "1002", "1", false);
        assert!(
            refused.contains("object=\"period\""),
            "the preview applies the rules: {refused}"
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 6, 20));
        assert_eq!(st.paid_total, 0);
        assert!(st.paid_by_elid.is_empty() && st.renewals_by_expiry.is_empty());
    }

    #[test]
    fn a_trial_prolong_is_refused_even_for_a_period_the_tariff_sells() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, TRIAL_PERIOD, d(2024, 6, 20), 2));
        put(&mut st, lic(1002, LITE, 1, d(2024, 6, 20), 2));
        for (elid, period, sok) in [
            ("1001", "1", true),
            ("1001", "-100", true),
            ("1001", "12", false),
            ("1002", "-100", true),
        ] {
            let doc = prolong(&mut st, elid, period, sok);
            assert!(
                doc.contains("<error type=\"value\" object=\"period\""),
                "{elid} {period}: {doc}"
            );
        }
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 6, 20));
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_prolong_for_a_period_not_sold_or_garbage_is_refused() {
        let mut st = empty();
        put(&mut st, lic(1001, DNS, 12, d(2024, 6, 20), 2));
        for period in ["1", "3", "", "x", "99999999999999999999"] {
            let doc = prolong(&mut st, "1001", period, true);
            assert!(
                doc.contains("<error type=\"value\" object=\"period\""),
                "{period}: {doc}"
            );
        }
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_prolong_too_early_names_the_first_allowed_date() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 12, d(2025, 7, 1), 2));
        for sok in [true, false] {
            let doc = prolong(&mut st, "1001", "12", sok);
            assert!(
                doc.contains("<error type=\"value\" object=\"expiredate\"")
                    && doc.contains("<param name=\"value\">2024-07-01</param>")
                    && doc.contains("<msg>The service can be renewed only after 2024-07-01</msg>"),
                "{doc}"
            );
        }
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_suspended_or_expired_license_is_prolonged_from_today_and_reactivated() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 6, 1), 3));
        put(&mut st, lic(1002, LITE, 1, d(2024, 6, 1), 2));
        for elid in ["1001", "1002"] {
            let doc = prolong(&mut st, elid, "1", true);
            assert!(
                doc.contains("<newexpiredate>2024-07-15</newexpiredate>"),
                "{doc}"
            );
        }
        assert_eq!(st.licenses[&1001].status, 2);
        assert_eq!(st.licenses[&1002].expiredate, d(2024, 7, 15));
    }

    #[test]
    fn deleted_processing_and_unknown_licenses_are_not_prolonged() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 6, 20), 4));
        put(&mut st, lic(1002, LITE, 1, d(2024, 6, 20), 5));
        assert!(
            prolong(&mut st, "1001", "1", true).contains("<error type=\"missed\" object=\"elid\"")
        );
        assert!(
            call(&mut st, &[("func", "service.prolong"), ("elid", "1001")])
                .contains("<error type=\"missed\" object=\"elid\"")
        );
        let processing = prolong(&mut st, "1002", "1", true);
        assert!(
            processing.contains("<error type=\"value\" object=\"elid\"")
                && processing.contains("The service is being processed"),
            "{processing}"
        );
        let unknown = prolong(&mut st, "4242", "1", true);
        assert!(
            unknown.contains("<error type=\"missed\" object=\"elid\"")
                && unknown.contains("<param name=\"value\">4242</param>"),
            "{unknown}"
        );
        assert!(prolong(&mut st, "1001, 1002", "1", true).contains("type=\"missed\""));
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_prolong_into_the_cart_extends_nothing_and_pays_nothing() {
        let mut st = empty();
        put(&mut st, lic(1001, LITE, 1, d(2024, 6, 20), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "service.prolong"),
                ("elid", "1001"),
                ("period", "1"),
                ("sok", "ok"),
                ("clicked_button", "basket"),
            ],
        );
        assert!(
            doc.contains("<ok/>") && !doc.contains("newexpiredate"),
            "{doc}"
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 6, 20));
        assert_eq!((st.paid_total, st.cart_calls), (0, 1));
    }
}
