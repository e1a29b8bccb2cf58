//! Shared helpers: settings for a given endpoint, the canary password, a config file on disk.

#![allow(dead_code)]

use licrenew::config::{Api, AuthMode, BillmgrSettings};
use secrecy::SecretString;
use std::time::Duration;

/// A password that must never show up anywhere but in request bodies.
pub const CANARY: &str = "canary-7f3a9c-Pw";

pub fn billmgr(url: &str, auth: AuthMode) -> BillmgrSettings {
    BillmgrSettings {
        url: url::Url::parse(url).expect("url"),
        api: Api::Billmgr4,
        username: "reseller".into(),
        password: Some(SecretString::from(CANARY.to_owned())),
        auth,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        read_attempts: 1,
        max_body: 1024 * 1024,
    }
}

/// Asserts that no text shows the canary password (or its URL-encoded form).
pub fn assert_no_canary(what: &str, text: &str) {
    let encoded: String = url::form_urlencoded::byte_serialize(CANARY.as_bytes()).collect();
    assert!(!text.contains(CANARY), "{what} leaks the password: {text}");
    assert!(
        !text.contains(&encoded),
        "{what} leaks the encoded password: {text}"
    );
}
