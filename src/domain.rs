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

/// What one row of a list (or one view) is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    License(License),
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
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").ok()
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
    fn dates_parse_strictly() {
        assert_eq!(
            parse_date("2024-07-01"),
            NaiveDate::from_ymd_opt(2024, 7, 1)
        );
        assert_eq!(parse_date("0000-00-00"), None);
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("tomorrow"), None);
    }
}
