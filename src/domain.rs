//! The license model every other module sees, whatever the API generation.
//!
//! Owns `License`, `Status` and the parsing of raw field values into them. Must not do I/O.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// A license id (`elid` on the wire).
pub type Elid = i64;

/// Server-side license status. Anything but the five known codes is `Unknown`, and an unknown
/// status is never renewed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ordered,
    Active,
    Suspended,
    Deleted,
    Processing,
    Unknown(String),
}

impl Status {
    /// Parses a raw `status` value: a number, or a 5/6 `orig` such as `3_autosuspend`.
    pub fn parse(raw: &str) -> Status {
        let lead: String = raw
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match lead.as_str() {
            "1" => Status::Ordered,
            "2" => Status::Active,
            "3" => Status::Suspended,
            "4" => Status::Deleted,
            "5" => Status::Processing,
            _ => Status::Unknown(raw.trim().to_owned()),
        }
    }

    /// The numeric code as stored and shown (0 for unknown).
    pub fn code(&self) -> u8 {
        match self {
            Status::Ordered => 1,
            Status::Active => 2,
            Status::Suspended => 3,
            Status::Deleted => 4,
            Status::Processing => 5,
            Status::Unknown(_) => 0,
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Status::Ordered => "ordered",
            Status::Active => "active",
            Status::Suspended => "suspended",
            Status::Deleted => "deleted",
            Status::Processing => "processing",
            Status::Unknown(s) => s,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One license as the API last showed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub elid: Elid,
    pub licname: String,
    pub ip: String,
    /// Product id: `price` in BILLmanager 4, `pricelist` in 5/6.
    pub product: i64,
    /// Period as the server reports it: a period id in BILLmanager 4, months in 5/6.
    pub period: Option<i64>,
    /// Last day the license is valid (the API's `expiredate`; valid through that whole day).
    pub expiry: NaiveDate,
    pub status: Status,
    /// Server-side automatic renewal is on (BILLmanager 5/6): the billing charges by itself.
    #[serde(default)]
    pub autoprolong: bool,
    /// A status change in progress (BILLmanager 6 `special_status`): never paid while set.
    #[serde(default)]
    pub special: Option<String>,
    /// What one period of it costs, as the billing shows it (BILLmanager 5/6 `cost`).
    #[serde(default)]
    pub cost: Option<Money>,
    /// The tariff's display name in the list (BILLmanager 5/6 `pricelist`), when the list
    /// gave a name rather than an id.
    #[serde(default)]
    pub pricelist_label: Option<String>,
}

/// An amount of money in a currency, in hundredths (`9.00 EUR` is 900). Parsed from the
/// billing's display strings; never computed with floats.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub cents: i64,
    /// ISO 4217 where the symbol or label is known (`€` → `EUR`, `руб.` → `RUB`), else the
    /// label as shown.
    pub currency: String,
}

impl Money {
    /// Parses a display amount: `9.00 EUR / Month`, `123.45 EUR`, `€ 9,00`, `1 234,50 руб.`.
    /// The first number is the amount; the currency is the code or symbol next to it (or
    /// `default_currency` when there is none). `None` when there is no number.
    pub fn parse(text: &str, default_currency: Option<&str>) -> Option<Money> {
        let t = text.trim();
        let start = t.find(|c: char| c.is_ascii_digit() || c == '-')?;
        let rest = &t[start..];
        let end = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || matches!(c, '.' | ',' | ' ' | '\u{a0}' | '-')))
            .map_or(rest.len(), |(i, _)| i);
        let number: String = rest[..end]
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
            .collect();
        let cents = parse_cents(&number)?;
        let before = t[..start].trim();
        let after = rest[end..]
            .trim()
            .split(['/', ' '])
            .find(|w| !w.is_empty())
            .unwrap_or("");
        let label = [after, before]
            .into_iter()
            .find(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
            .or(default_currency)?;
        Some(Money {
            cents,
            currency: currency_code(label),
        })
    }

    /// `12.50 EUR`.
    pub fn display(&self) -> String {
        let sign = if self.cents < 0 { "-" } else { "" };
        let c = self.cents.unsigned_abs();
        format!("{sign}{}.{:02} {}", c / 100, c % 100, self.currency)
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// `9.00`, `9,00`, `1234.5`, `12` → hundredths. A comma followed by exactly three digits
/// and no other separator is a thousands separator (`1,234`).
fn parse_cents(number: &str) -> Option<i64> {
    let neg = number.starts_with('-');
    let n = number.trim_start_matches('-');
    let last_sep = n.rfind(['.', ',']);
    let (int, frac) = match last_sep {
        Some(i)
            if n.len() - i - 1 == 3
                && n.matches(['.', ',']).count() == 1
                && n[i..].starts_with(',') =>
        {
            (n.replace(',', ""), String::new())
        }
        Some(i) => (n[..i].replace(['.', ','], ""), n[i + 1..].to_owned()),
        None => (n.to_owned(), String::new()),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut frac2: String = frac.chars().take(2).collect();
    while frac2.len() < 2 {
        frac2.push('0');
    }
    let frac2: i64 = frac2.parse().ok()?;
    let cents = int.checked_mul(100)?.checked_add(frac2)?;
    Some(if neg { -cents } else { cents })
}

/// A currency label as billing shows it → an ISO 4217 code where it is a known symbol.
pub fn currency_code(label: &str) -> String {
    let l = label.trim().trim_end_matches('.');
    match l.to_lowercase().as_str() {
        "€" | "eur" | "euro" => "EUR".into(),
        "$" | "usd" => "USD".into(),
        "₽" | "руб" | "р" | "rub" | "rur" => "RUB".into(),
        "₸" | "тг" | "kzt" => "KZT".into(),
        "грн" | "₴" | "uah" => "UAH".into(),
        "£" | "gbp" => "GBP".into(),
        _ if l.chars().all(|c| c.is_ascii_alphabetic()) => l.to_ascii_uppercase(),
        _ => l.to_owned(),
    }
}

/// A license that is ordered but not active yet (status 1): the list shows it without an
/// expiry, so there is nothing to plan on; it is shown, never renewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLicense {
    pub elid: Elid,
    pub licname: String,
    pub ip: String,
    pub status: Status,
}

/// A 5/6 list row whose product (a display name only) or period (absent, or a label that is not
/// one) the list does not give: resolved from the catalog's names, what the database remembers
/// of the license's form, or the form itself (`soft.edit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// `product` is 0 unless `product_known`; `period` is `None` unless `period_known`.
    pub license: License,
    pub product_known: bool,
    pub period_known: bool,
}

/// What one row of a list (or one view) is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    License(License),
    Unresolved(Unresolved),
    Pending(PendingLicense),
    /// A license row that could not be read: never renewed, and never ignored quietly.
    Bad(RowError),
}

/// Why a row of a list could not be read as a license.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("row {elid}: {reason}")]
pub struct RowError {
    /// The row's id as sent, or `?` when absent.
    pub elid: String,
    pub reason: String,
}

/// Parses `YYYY-MM-DD` (BILLmanager's `expiredate`).
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    let raw = raw.trim();
    // The usual `YYYY-MM-DD` read directly: a list of 100,000 licenses has as many dates, and
    // a format string is parsed again for each.
    let b = raw.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let num = |r: std::ops::Range<usize>| {
            b[r].iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) {
            return NaiveDate::from_ymd_opt(y as i32, m, d);
        }
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_numbers_and_orig_values() {
        assert_eq!(Status::parse("2"), Status::Active);
        assert_eq!(Status::parse("3_autosuspend"), Status::Suspended);
        assert_eq!(Status::parse(" 4 "), Status::Deleted);
        assert_eq!(Status::parse("9"), Status::Unknown("9".into()));
        assert_eq!(Status::parse(""), Status::Unknown("".into()));
    }

    #[test]
    fn money_parses_display_strings_into_hundredths_and_iso_codes() {
        let m = |t: &str| Money::parse(t, None).map(|m| (m.cents, m.currency));
        assert_eq!(m("9.00 EUR / Month"), Some((900, "EUR".into())));
        assert_eq!(m("123.45 EUR"), Some((12345, "EUR".into())));
        assert_eq!(m("€ 9,50"), Some((950, "EUR".into())));
        assert_eq!(m("1 234,50 руб."), Some((123450, "RUB".into())));
        assert_eq!(m("90.00 EUR per year"), Some((9000, "EUR".into())));
        assert_eq!(m("12"), None, "no currency, no default");
        assert_eq!(
            Money::parse("12.5", Some("€")).map(|m| m.display()),
            Some("12.50 EUR".into())
        );
        assert_eq!(m("1,234 USD"), Some((123400, "USD".into())));
        assert_eq!(m("free"), None);
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(
            parse_date("2024-07-01"),
            NaiveDate::from_ymd_opt(2024, 7, 1)
        );
        assert_eq!(parse_date("0000-00-00"), None);
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("tomorrow"), None);
        // The direct reading agrees with chrono's `%Y-%m-%d` on every shape it takes.
        for raw in [
            "2024-07-01",
            " 2024-12-31 ",
            "2024-02-29",
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "9999-12-31",
            "0001-01-01",
            "2024-7-01",
            "2024-07-1 ",
            "2024/07/01",
            "+024-07-01",
            "2024-07-0a",
            "20240-7-01",
            "2024-07-01T00:00:00",
        ] {
            assert_eq!(
                parse_date(raw),
                NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").ok(),
                "{raw:?}"
            );
        }
    }
}
