//! The BILLmanager HTTP client: every operation of the API, for either generation, through the
//! dialect seam.
//!
//! Owns: POST form bodies (`out=xml`, `lang=en`, credentials in the body only), the two auth
//! modes, timeouts, no redirects, a body-size cap, retries for reads only, and a fuse that stops
//! all calls after a login refusal (lockouts exist). Must not log bodies or parameters, put a
//! credential in a URL, or retry a paid or mutating call.

use super::dialect::{Call, Dialect};
use super::error::{ApiError, Error, ErrorKind, describe_transport};
use super::redact::Redactor;
use super::xml::{self, Document, Fields};
use crate::config::{AuthMode, BillmgrSettings};
use crate::domain::{License, Money, PendingLicense, Row, RowError, Unresolved};
use chrono::NaiveDate;
use futures_util::future::LocalBoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The licenses of one list call, plus the rows that looked like licenses but did not parse.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub licenses: Vec<License>,
    /// 5/6 rows whose product or period the list does not give as a number: the caller
    /// resolves them (catalog names, remembered forms, `soft.edit`) before planning.
    pub unresolved: Vec<Unresolved>,
    /// Ordered licenses not active yet (no expiry): shown, never planned.
    pub pending: Vec<PendingLicense>,
    pub bad_rows: Vec<RowError>,
    /// The row count the server announced (5/6 `p_elems`), when it did.
    pub total: Option<usize>,
}

/// Where the licenses of a list go as they are read ([`Client::list_into`]).
pub trait LicenseSink {
    fn license(&mut self, license: License);
    /// Awaited after each batch of rows (see [`Rows::pace`]).
    fn pace(&mut self) -> Option<LocalBoxFuture<'_, ()>> {
        None
    }
}

impl LicenseSink for Vec<License> {
    fn license(&mut self, license: License) {
        self.push(license);
    }
}

/// Where the `<elem>` rows of an answer go as they are parsed.
pub trait Rows {
    fn row(&mut self, row: Fields);
    /// A consumer that only wants the rows as licenses says in which dialect: the parser's
    /// thread then reads them (and frees the raw rows where it made them), and they come to
    /// [`Rows::license_row`] instead of [`Rows::row`].
    fn dialect(&self) -> Option<Dialect> {
        None
    }
    fn license_row(&mut self, _row: Option<Row>) {}
    /// Awaited after each batch of rows: a consumer that writes them somewhere slower than
    /// they are parsed makes the download wait here instead of letting them pile up.
    fn pace(&mut self) -> Option<LocalBoxFuture<'_, ()>> {
        None
    }
}

impl<F: FnMut(Fields)> Rows for F {
    fn row(&mut self, row: Fields) {
        self(row)
    }
}

/// A row as it crosses from the parser's thread.
enum Parsed {
    Fields(Fields),
    License(Option<Row>),
}

/// The rows of one list page: licenses inside the window to the sink, the rest of the kinds
/// into the listing, and the elids seen (to catch a server that ignores `p_num`).
struct PageRows<'a> {
    dialect: Dialect,
    window: Option<(NaiveDate, NaiveDate)>,
    listing: &'a mut Listing,
    sink: &'a mut dyn LicenseSink,
    first_elid: Option<i64>,
    elids: Vec<i64>,
}

impl Rows for PageRows<'_> {
    fn row(&mut self, row: Fields) {
        self.license_row(self.dialect.license(&row));
    }
    fn dialect(&self) -> Option<Dialect> {
        Some(self.dialect)
    }
    fn license_row(&mut self, parsed: Option<Row>) {
        let elid = match &parsed {
            Some(Row::License(l)) => Some(l.elid),
            Some(Row::Unresolved(u)) => Some(u.license.elid),
            Some(Row::Pending(p)) => Some(p.elid),
            _ => None,
        };
        if let Some(e) = elid {
            self.first_elid.get_or_insert(e);
            self.elids.push(e);
        }
        let inside = |expiry: NaiveDate| {
            self.window
                .is_none_or(|(from, to)| expiry >= from && expiry <= to)
        };
        match parsed {
            Some(Row::License(l)) if inside(l.expiry) => self.sink.license(l),
            Some(Row::Unresolved(u)) if inside(u.license.expiry) => self.listing.unresolved.push(u),
            Some(Row::Pending(p)) => self.listing.pending.push(p),
            Some(Row::Bad(e)) => self.listing.bad_rows.push(e),
            _ => {}
        }
    }
    fn pace(&mut self) -> Option<LocalBoxFuture<'_, ()>> {
        self.sink.pace()
    }
}

/// The account's balance as the billing shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Balance {
    pub amount: Money,
    /// `whoami` or `dashboard.info`.
    pub source: &'static str,
}

/// The answer to an IP availability check: the server accepted the combination; any data it
/// returned is kept as name/value pairs for display.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IpCheck {
    pub fields: Vec<(String, String)>,
}

/// A free preview of a renewal (5/6).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Preview {
    pub new_expiry: Option<NaiveDate>,
    /// The price of the period, as the form's period list shows it.
    pub cost: Option<Money>,
}

/// The answer to a renewal the server confirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Renewed {
    /// The new expiry when the server says it (BILLmanager 5/6 `newexpiredate`).
    pub new_expiry: Option<NaiveDate>,
    /// The answer carried `<ok/>`. Without it, only `newexpiredate` suggested success, which
    /// the caller must verify by re-reading the license.
    pub confirmed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// May be retried: it changes nothing.
    Read,
    /// Changes something (possibly paid): sent once, never retried here.
    Write,
}

pub struct Client {
    http: reqwest::Client,
    cfg: BillmgrSettings,
    password: SecretString,
    /// The generation: pinned by the config, or detected on the first call (`api = "auto"`).
    dialect: std::sync::OnceLock<Dialect>,
    detecting: Mutex<()>,
    /// Blanks the password, `username:password` and the session id out of everything an
    /// answer brings: the one redaction point (see [`super::redact`]).
    redactor: std::sync::RwLock<Redactor>,
    session: Mutex<Option<SecretString>>,
    /// Set after the server refused a login: no further request is made by this client.
    auth_refused: AtomicBool,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.cfg.url.as_str())
            .field("username", &self.cfg.username)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client. Fails (as a config problem) when no password is configured.
    pub fn new(cfg: &BillmgrSettings) -> Result<Client, Error> {
        let password = cfg.password.clone().ok_or_else(|| {
            Error::new(
                "init",
                None,
                ErrorKind::Invalid(
                    "no password: set billmgr.password, billmgr.password_file or a systemd credential named \"password\""
                        .into(),
                ),
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("licrenew/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new("init", None, ErrorKind::Invalid(describe_transport(e))))?;
        let redactor = Redactor::new(&[
            password.expose_secret(),
            &format!("{}:{}", cfg.username, password.expose_secret()),
        ]);
        let dialect = std::sync::OnceLock::new();
        if let Some(api) = cfg.api {
            let _ = dialect.set(Dialect(api));
        }
        Ok(Client {
            http,
            cfg: cfg.clone(),
            password,
            dialect,
            detecting: Mutex::new(()),
            redactor: std::sync::RwLock::new(redactor),
            session: Mutex::new(None),
            auth_refused: AtomicBool::new(false),
            metrics: None,
        })
    }

    /// Counts every API call (function, result, latency) and login outcome in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Client {
        self.metrics = Some(metrics);
        self
    }

    /// Whether this client logs in once and sends a session id (`auth = "session"`).
    pub fn uses_sessions(&self) -> bool {
        self.cfg.auth == AuthMode::Session
    }

    /// The generation when it is known (pinned, or detected earlier), without a call.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect.get().copied()
    }

    /// The generation, detected on the first call of the process under `api = "auto"`: one
    /// row of the 5/6 list (`soft`, `p_cnt=1`); an unknown-function answer means BILLmanager 4.
    pub async fn generation(&self) -> Result<Dialect, Error> {
        if let Some(d) = self.dialect.get() {
            return Ok(*d);
        }
        let _one = self.detecting.lock().await;
        if let Some(d) = self.dialect.get() {
            return Ok(*d);
        }
        let probe = Dialect::probe();
        let detected = match self
            .call_rows(&probe, Kind::Read, &mut |_: Fields| {})
            .await
        {
            Ok(_) => Dialect(crate::config::Api::Billmgr5),
            Err(e) if e.is_auth() => return Err(e),
            // `missed` (the function), or a BILLmanager 4 numeric error without a type.
            Err(e)
                if e.is_missed()
                    || e.api().is_some_and(|a| {
                        a.kind.starts_with("code ") || a.object.as_deref() == Some("func")
                    }) =>
            {
                Dialect(crate::config::Api::Billmgr4)
            }
            Err(e) if e.api().is_some() => {
                return Err(Error::new(
                    "soft",
                    None,
                    ErrorKind::Unexpected(format!(
                        "cannot tell the API generation from the answer to `soft` ({e}): set billmgr.api to \"billmgr4\" or \"billmgr5\""
                    )),
                ));
            }
            Err(e) => return Err(e),
        };
        let _ = self.dialect.set(detected);
        tracing::info!(event = "api_detected", api = detected.name(), url = %self.cfg.url.as_str(),
            "API generation detected");
        Ok(detected)
    }

    /// Lists licenses. With a window, only those whose expiry falls inside it: BILLmanager 4
    /// filters on the server (the saved filter is set, used and cleared again), 5/6 has no such
    /// filter, so every page is read and filtered here. Without a window, all of them (the
    /// saved filter is cleared first, since the server keeps it per user).
    pub async fn list(&self, window: Option<(NaiveDate, NaiveDate)>) -> Result<Listing, Error> {
        let mut licenses = Vec::new();
        let mut listing = self.list_into(window, &mut licenses).await?;
        listing.licenses = licenses;
        Ok(listing)
    }

    /// [`Client::list`], the licenses going to `sink` as they are read rather than into the
    /// returned listing (whose `licenses` stay empty): a caller that records them as they come
    /// keeps no copy of a large list, and may slow the download down to its own pace. A read
    /// retried after a failure hands the rows it had read again.
    pub async fn list_into(
        &self,
        window: Option<(NaiveDate, NaiveDate)>,
        sink: &mut dyn LicenseSink,
    ) -> Result<Listing, Error> {
        let dialect = self.generation().await?;
        if !dialect.has_server_filter() {
            self.reset_saved_filter(dialect).await?;
            return self.list_pages(dialect, window, sink).await;
        }
        self.call_ok(&dialect.set_filter(window), Kind::Read)
            .await?;
        let listing = self.list_pages(dialect, None, sink).await;
        if window.is_some()
            && let Err(e) = self.call_ok(&dialect.set_filter(None), Kind::Read).await
        {
            tracing::warn!(event = "list_filter", error = %e, "could not clear the saved license filter");
        }
        listing
    }

    /// BILLmanager 5/6 keeps list filters per account: one saved in the panel silently hides
    /// licenses from API lists. Resets it the way the panel does: read the filter form, submit
    /// every field empty. A server without `soft.filter` is fine (a debug line).
    async fn reset_saved_filter(&self, dialect: Dialect) -> Result<(), Error> {
        let Some(form) = dialect.filter_form() else {
            return Ok(());
        };
        let doc = match self.call_rows(&form, Kind::Read, &mut |_: Fields| {}).await {
            Ok(doc) => doc,
            Err(e) if e.is_auth() => return Err(e),
            Err(e) if e.api().is_some() => {
                tracing::debug!(event = "list_filter", error = %e, "no list filter to reset (soft.filter refused)");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(event = "list_filter", error = %e, "could not read the saved list filter; listing anyway");
                return Ok(());
            }
        };
        const NOT_FILTER_FIELDS: &[&str] = &[
            "func",
            "out",
            "lang",
            "sok",
            "elid",
            "p_cnt",
            "p_num",
            "p_elems",
            "page",
            "clicked_button",
            "progressid",
            "snext",
            "sback",
            "auth",
            "authinfo",
            "username",
        ];
        let mut fields: Vec<String> = doc
            .fields
            .0
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !NOT_FILTER_FIELDS.contains(&k.as_str()))
            .collect();
        fields.dedup();
        if fields.is_empty() {
            return Ok(());
        }
        let set = doc.fields.0.iter().any(|(k, v)| {
            fields.contains(k) && !v.raw().trim().is_empty() && v.raw().trim() != "null"
        });
        if let Err(e) = self
            .call_rows(
                &dialect.reset_filter(&fields),
                Kind::Read,
                &mut |_: Fields| {},
            )
            .await
        {
            if e.is_auth() {
                return Err(e);
            }
            tracing::warn!(event = "list_filter", error = %e, "could not reset the saved list filter; listing anyway");
        } else if set {
            tracing::warn!(
                event = "filter_reset",
                "a list filter saved in the panel was reset: it hid licenses from licrenew"
            );
        }
        Ok(())
    }

    /// Reads the list, page after page where the generation pages it, until `p_elems` rows
    /// were seen (or a page comes back empty). `window`: keep only the rows expiring inside
    /// it (where the server does not filter).
    async fn list_pages(
        &self,
        dialect: Dialect,
        window: Option<(NaiveDate, NaiveDate)>,
        sink: &mut dyn LicenseSink,
    ) -> Result<Listing, Error> {
        /// A bound on pages, so a server that ignores `p_num` cannot keep us here.
        const MAX_PAGES: usize = 10_000;
        let mut listing = Listing::default();
        let mut rows_seen = 0usize;
        let mut seen = std::collections::HashSet::new();
        let mut page = 1;
        loop {
            let call = dialect.list(page);
            let mut rows = PageRows {
                dialect,
                window,
                listing: &mut listing,
                sink: &mut *sink,
                first_elid: None,
                elids: Vec::new(),
            };
            let doc = self.call_rows(&call, Kind::Read, &mut rows).await?;
            let PageRows {
                first_elid, elids, ..
            } = rows;
            if doc.rows == 0 && doc.ok.is_some() {
                return Err(Error::new(
                    call.func,
                    None,
                    ErrorKind::Unexpected(
                        "<ok/> in place of a list (an account with two-factor login cannot be used by licrenew)".into(),
                    ),
                ));
            }
            if !dialect.is_paged() {
                break;
            }
            rows_seen += doc.rows;
            let total = doc
                .fields
                .get("p_elems")
                .and_then(|v| v.parse::<usize>().ok());
            listing.total = total.or(listing.total);
            // A server that ignores p_num answers page 1 again: its first row was seen before.
            if let Some(first) = first_elid
                && seen.contains(&first)
            {
                return Err(Error::new(
                    call.func,
                    None,
                    ErrorKind::Unexpected(format!(
                        "page {page} repeats earlier rows: the server ignores p_num"
                    )),
                ));
            }
            seen.extend(elids);
            // Go on while the server says there are more rows; without a total, while pages
            // come back full. Whatever page size the server really uses.
            let more = doc.rows > 0
                && page < MAX_PAGES
                && match total {
                    Some(t) => rows_seen < t,
                    None => doc.rows >= super::dialect::PAGE_SIZE,
                };
            if !more {
                if let Some(t) = total
                    && rows_seen < t
                {
                    // Licenses we did not see would silently never be renewed.
                    return Err(Error::new(
                        call.func,
                        None,
                        ErrorKind::Unexpected(format!(
                            "read {rows_seen} of {t} rows the server announced"
                        )),
                    ));
                }
                break;
            }
            page += 1;
            crate::systemd::alive();
        }
        for bad in &listing.bad_rows {
            tracing::warn!(event = "bad_row", row = %bad, "skipped a license row that does not parse");
        }
        Ok(listing)
    }

    /// What a renewal would give, where the API previews it for free (5/6 `service.prolong`
    /// without `sok`): the new expiry, and the price of the period when the form shows it
    /// (its period list reads "9.00 EUR per month"). `Ok(None)` where there is no preview.
    pub async fn preview_renew(&self, elid: i64, period: i64) -> Result<Option<Preview>, Error> {
        let dialect = self.generation().await?;
        let Some(call) = dialect.preview_renew(elid, period) else {
            return Ok(None);
        };
        let doc = self.call_ok_or_data(&call, Kind::Read).await?;
        let cost = doc
            .options
            .iter()
            .find(|(list, key, _)| list == "period" && key == &period.to_string())
            .and_then(|(_, _, text)| Money::parse(text, None));
        Ok(Some(Preview {
            new_expiry: doc
                .fields
                .get("newexpiredate")
                .and_then(crate::domain::parse_date),
            cost,
        }))
    }

    /// Reads one license. Under 5/6 its form carries the numeric tariff the list may not.
    pub async fn view(&self, elid: i64) -> Result<License, Error> {
        let dialect = self.generation().await?;
        let call = dialect.view(elid);
        let mut doc = self.call_ok_or_data(&call, Kind::Read).await?;
        if doc.fields.get("id").is_none() && doc.fields.get("elid").is_none() {
            // A form may omit the id; the elid asked for is the license.
            doc.fields.0.push((
                "id".into(),
                xml::Value {
                    text: elid.to_string(),
                    orig: None,
                },
            ));
        }
        let unexpected = |msg: String| {
            Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected(msg),
            ))
        };
        let license = match dialect.license(&doc.fields) {
            Some(Row::License(l)) => l,
            Some(Row::Unresolved(u)) if u.product_known => u.license,
            Some(Row::Unresolved(u)) => {
                return unexpected(format!(
                    "the form of license {elid} names its tariff {:?} but no tariff id",
                    u.license.pricelist_label.unwrap_or_default()
                ));
            }
            Some(Row::Pending(_)) => {
                return unexpected(format!(
                    "license {elid} is ordered and not active yet: it has no expiry"
                ));
            }
            Some(Row::Bad(e)) => return unexpected(e.reason),
            None => return unexpected("the answer has no expiredate: not a license".into()),
        };
        if license.elid != elid {
            return unexpected(format!(
                "asked for license {elid}, the answer is license {}",
                license.elid
            ));
        }
        Ok(license)
    }

    /// Orders a new license (paid). Returns its id when the answer carries one.
    pub async fn order(
        &self,
        product: i64,
        period: i64,
        licname: &str,
        ip: &str,
    ) -> Result<Option<i64>, Error> {
        let dialect = self.generation().await?;
        let call = dialect.order(product, period, licname, ip);
        let doc = self.call_ok_or_data(&call, Kind::Write).await?;
        let id = dialect.ordered_id(&doc);
        if id.is_none() && doc.ok.is_none() {
            return Err(Error::new(
                call.func,
                None,
                ErrorKind::Unexpected("neither <ok/> nor a new license id".into()),
            ));
        }
        Ok(id)
    }

    /// Asks whether a license of this product/period can be bound to `ip`. Any `<error>` means
    /// "not available" (an `Err` with the server's reason); any other answer means available.
    pub async fn check_ip(&self, product: i64, period: i64, ip: &str) -> Result<IpCheck, Error> {
        let dialect = self.generation().await?;
        let call = dialect.check_ip(product, period, ip);
        let doc = self.call_ok_or_data(&call, Kind::Read).await?;
        Ok(IpCheck {
            fields: doc
                .fields
                .0
                .iter()
                .map(|(k, v)| (k.clone(), v.raw().trim().to_owned()))
                .collect(),
        })
    }

    /// Changes a license's name and/or IP. BILLmanager 5/6 may answer the saved form (possibly
    /// one `<doc>` down) without `<ok/>`: that is success when there is no `<error>` and the
    /// fields show the change; when the answer shows neither, the license is read again.
    pub async fn edit(
        &self,
        elid: i64,
        licname: Option<&str>,
        ip: Option<&str>,
    ) -> Result<(), Error> {
        if licname.is_none() && ip.is_none() {
            return Err(Error::new(
                "software.edit",
                Some(elid),
                ErrorKind::Invalid("nothing to change: give a new name and/or IP".into()),
            ));
        }
        let dialect = self.generation().await?;
        let call = dialect.edit(elid, licname, ip);
        let doc = self.call_ok_or_data(&call, Kind::Write).await?;
        if doc.ok.is_some() {
            return Ok(());
        }
        let shows = |fields: &Fields| {
            licname.is_none_or(|n| fields.get("licname") == Some(n.trim()))
                && ip.is_none_or(|i| fields.get("ip") == Some(i.trim()))
        };
        let answered = doc.fields.has("licname") || doc.fields.has("ip");
        if answered && shows(&doc.fields) {
            return Ok(());
        }
        // Neither `<ok/>` nor the fields: read the license to see whether the change is there.
        let now = self.view(elid).await?;
        if licname.is_none_or(|n| now.licname == n.trim()) && ip.is_none_or(|i| now.ip == i.trim())
        {
            return Ok(());
        }
        Err(Error::new(
            call.func,
            Some(elid),
            ErrorKind::Unexpected("no <ok/>, and the license does not show the change".into()),
        ))
    }

    /// Renews a license for `period` (paid). Sent exactly once.
    pub async fn renew(&self, elid: i64, period: i64) -> Result<Renewed, Error> {
        let dialect = self.generation().await?;
        let call = dialect.renew(elid, period);
        let doc = self.call_ok_or_data(&call, Kind::Write).await?;
        let new_expiry = doc
            .fields
            .get("newexpiredate")
            .and_then(crate::domain::parse_date);
        if doc.ok.is_none() && new_expiry.is_none() {
            return Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected("neither <ok/> nor a new expiry".into()),
            ));
        }
        Ok(Renewed {
            new_expiry,
            confirmed: doc.ok.is_some(),
        })
    }

    /// The account's balance (5/6): `whoami` (`<user balance= currency=>`), else the
    /// `realbalance` of `dashboard.info`. `Ok(None)` under BILLmanager 4 or when neither shows it.
    pub async fn balance(&self) -> Result<Option<Balance>, Error> {
        let dialect = self.generation().await?;
        if !dialect.is_paged() {
            return Ok(None);
        }
        let [whoami, dashboard] = dialect.balance_calls();
        match self.call_ok_or_data(&whoami, Kind::Read).await {
            Ok(doc) => {
                if let Some(amount) = doc.attr("user", "balance").and_then(|b| {
                    Money::parse(b, Some(doc.attr("user", "currency").unwrap_or("?")))
                }) {
                    return Ok(Some(Balance {
                        amount,
                        source: "whoami",
                    }));
                }
            }
            Err(e) if e.is_auth() => return Err(e),
            Err(e) => tracing::debug!(event = "balance", error = %e, "whoami gave no balance"),
        }
        let mut rows = Vec::new();
        match self
            .call_rows(&dashboard, Kind::Read, &mut |r: Fields| rows.push(r))
            .await
        {
            Ok(doc) => Ok(rows
                .iter()
                .chain(std::iter::once(&doc.fields))
                .find_map(|r| {
                    r.non_empty("realbalance")
                        .and_then(|b| Money::parse(b, None))
                })
                .map(|amount| Balance {
                    amount,
                    source: "dashboard.info",
                })),
            Err(e) if e.is_auth() => Err(e),
            Err(e) => {
                tracing::debug!(event = "balance", error = %e, "dashboard.info gave no balance");
                Ok(None)
            }
        }
    }

    /// Logs in once (`func=auth`) to prove the credentials work, in either auth mode.
    pub async fn check_login(&self) -> Result<(), Error> {
        let sid = self.login().await?;
        if self.cfg.auth == AuthMode::Session {
            *self.session.lock().await = Some(sid);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    /// A call whose answer must be `<ok/>`.
    async fn call_ok(&self, call: &Call, kind: Kind) -> Result<Document, Error> {
        let doc = self.call_rows(call, kind, &mut |_: Fields| {}).await?;
        if doc.ok.is_none() {
            return Err(Error::new(
                call.func,
                call.elid,
                ErrorKind::Unexpected("no <ok/> in the answer".into()),
            ));
        }
        Ok(doc)
    }

    /// A call whose answer is `<ok/>` and/or data fields.
    async fn call_ok_or_data(&self, call: &Call, kind: Kind) -> Result<Document, Error> {
        self.call_rows(call, kind, &mut |_: Fields| {}).await
    }

    /// Sends a call (retrying reads), handing rows to `on_row`; API errors become `Err`.
    async fn call_rows(
        &self,
        call: &Call,
        kind: Kind,
        on_row: &mut dyn Rows,
    ) -> Result<Document, Error> {
        let attempts = if kind == Kind::Read {
            self.cfg.read_attempts.max(1)
        } else {
            1
        };
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = self.send_once(call, kind, on_row).await;
            let err = match res {
                Ok(doc) => return Ok(doc),
                Err(e) => e,
            };
            if err.is_auth() {
                self.auth_refused.store(true, Ordering::SeqCst);
                return Err(err);
            }
            if err.is_access() && self.cfg.auth == AuthMode::Session && kind == Kind::Write {
                // A change refused for an expired session was not applied; it is not resent
                // here (the caller re-reads first), but the next call logs in again.
                *self.session.lock().await = None;
                return Err(err);
            }
            if err.is_access()
                && self.cfg.auth == AuthMode::Session
                && !relogged
                && kind == Kind::Read
            {
                // An expired session answers `access`: log in again, once.
                tracing::info!(
                    event = "login",
                    func = call.func,
                    "session expired; logging in again"
                );
                *self.session.lock().await = None;
                relogged = true;
                attempt -= 1;
                continue;
            }
            if kind == Kind::Read && attempt < attempts && err.is_transient() {
                let delay = backoff(attempt);
                tracing::warn!(event = "api_retry", func = call.func, elid = call.elid, attempt, error = %err, retry_in_ms = delay.as_millis() as u64, "read failed; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(err);
        }
    }

    async fn send_once(
        &self,
        call: &Call,
        kind: Kind,
        on_row: &mut dyn Rows,
    ) -> Result<Document, Error> {
        if self.auth_refused.load(Ordering::SeqCst) {
            return Err(Error::new(
                call.func,
                call.elid,
                ErrorKind::Invalid("the server refused the login earlier; no further request is made (fix the credentials, then reload)".into()),
            ));
        }
        let mut form: Vec<(&str, &str)> = vec![("out", "xml"), ("lang", "en"), ("func", call.func)];
        form.extend(call.params.iter().map(|(k, v)| (*k, v.as_str())));
        form.extend(call.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let authinfo;
        let sid;
        match self.cfg.auth {
            AuthMode::Authinfo => {
                authinfo = SecretString::from(format!(
                    "{}:{}",
                    self.cfg.username,
                    self.password.expose_secret()
                ));
                form.push(("authinfo", authinfo.expose_secret()));
            }
            AuthMode::Session => {
                sid = self.session_id().await?;
                form.push(("auth", sid.expose_secret()));
            }
        }
        let cap = if call.list {
            self.cfg.max_body
        } else {
            self.cfg.max_answer
        };
        let doc = self.post(call.func, call.elid, &form, cap, on_row).await?;
        if let Some(raw) = doc.error.clone() {
            let api = Box::new(ApiError::from_raw(raw));
            // A change answered with both a success mark and an error may have been applied:
            // it is neither a refusal nor a success (issue 10.2).
            let says_yes = doc.ok.is_some() || doc.fields.has("newexpiredate");
            let kind = if kind == Kind::Write && says_yes {
                ErrorKind::Contradictory(api)
            } else {
                ErrorKind::Api(api)
            };
            return Err(Error::new(call.func, call.elid, kind));
        }
        Ok(doc)
    }

    async fn session_id(&self) -> Result<SecretString, Error> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let sid = self.login().await?;
        *guard = Some(sid.clone());
        Ok(sid)
    }

    async fn login(&self) -> Result<SecretString, Error> {
        if self.auth_refused.load(Ordering::SeqCst) {
            return Err(Error::new(
                "auth",
                None,
                ErrorKind::Invalid("the server refused the login earlier; not trying again".into()),
            ));
        }
        let form: Vec<(&str, &str)> = vec![
            ("out", "xml"),
            ("lang", "en"),
            ("func", "auth"),
            ("username", &self.cfg.username),
            ("password", self.password.expose_secret()),
        ];
        let doc = self
            .post(
                "auth",
                None,
                &form,
                self.cfg.max_answer,
                &mut |_: Fields| {},
            )
            .await?;
        if let Some(raw) = doc.error {
            let err = Error::new(
                "auth",
                None,
                ErrorKind::Api(Box::new(ApiError::from_raw(raw))),
            );
            // Any refused login trips the fuse: retrying bad credentials leads to lockouts.
            self.auth_refused.store(true, Ordering::SeqCst);
            return Err(err);
        }
        let sid = doc
            .attr("auth", "id")
            .or_else(|| doc.fields.non_empty("auth"))
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    "auth",
                    None,
                    ErrorKind::Unexpected("no session id in the login answer".into()),
                )
            })?;
        tracing::debug!(event = "login", "logged in");
        if let Ok(mut r) = self.redactor.write() {
            *r = Redactor::new(&[
                self.password.expose_secret(),
                &format!("{}:{}", self.cfg.username, self.password.expose_secret()),
                &sid,
            ]);
        }
        Ok(SecretString::from(sid))
    }

    /// One HTTP exchange, counted in the metrics.
    async fn post(
        &self,
        func: &str,
        elid: Option<i64>,
        form: &[(&str, &str)],
        cap: u64,
        on_row: &mut dyn Rows,
    ) -> Result<Document, Error> {
        let started = Instant::now();
        let redactor = self.redactor.read().map(|r| r.clone()).unwrap_or_default();
        let res = match self
            .exchange(func, elid, form, cap, &redactor, on_row)
            .await
        {
            Ok(mut doc) => {
                redact_document(&redactor, &mut doc);
                Ok(doc)
            }
            Err(mut e) => {
                redact_error(&redactor, &mut e.kind);
                Err(e)
            }
        };
        if let Some(m) = &self.metrics {
            let result = match &res {
                Ok(doc) if doc.error.is_some() => "api_error",
                Ok(_) => "ok",
                Err(e) => e.class(),
            };
            m.observe_api_call(func, result, started.elapsed());
            if let Ok(doc) = &res {
                let refused = doc
                    .error
                    .as_ref()
                    .is_some_and(|e| e.kind.as_deref() == Some("auth"));
                m.observe_login(!refused);
            }
        }
        res
    }

    /// One HTTP exchange: POST the form, check the status, and parse the body as it streams
    /// in, under `cap` bytes. The body never exists whole in memory: a list of 100,000 licenses
    /// goes from the socket through the parser to `on_row`, row by row.
    async fn exchange(
        &self,
        func: &str,
        elid: Option<i64>,
        form: &[(&str, &str)],
        cap: u64,
        redactor: &Redactor,
        on_row: &mut dyn Rows,
    ) -> Result<Document, Error> {
        let fail = |kind| Error::new(func, elid, kind);
        let started = Instant::now();
        let resp = self
            .http
            .post(self.cfg.url.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| fail(self.classify(e)))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(fail(ErrorKind::Redirect {
                status: status.as_u16(),
            }));
        }
        if !status.is_success() {
            return Err(fail(ErrorKind::Http {
                status: status.as_u16(),
            }));
        }
        if let Some(len) = resp.content_length()
            && len > cap
        {
            return Err(fail(ErrorKind::TooLarge(cap)));
        }
        let (doc, bytes) = self
            .parse_stream(resp, cap, redactor, on_row)
            .await
            .map_err(fail)?;
        let mut doc = doc;
        if doc.error.is_none() && doc.fields.has("authfail") {
            // BILLmanager 4 refuses a login with `<doc><authfail/></doc>` (REG.RU's client
            // checks for it), not an `<error>`: the same refusal as `type="auth"`.
            doc.error = Some(xml::RawError {
                kind: Some("auth".into()),
                object: Some("authfail".into()),
                msg: Some("login refused (authfail)".into()),
                ..xml::RawError::default()
            });
        }
        tracing::debug!(
            event = "api_call",
            func,
            elid,
            bytes,
            rows = doc.rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "api call"
        );
        Ok(doc)
    }

    /// Feeds the response body to the parser on a blocking thread as it arrives, and the rows
    /// back here through a small bounded channel, each redacted there (and read as a license
    /// there when `on_row` wants licenses). Returns the document and the bytes read.
    async fn parse_stream(
        &self,
        resp: reqwest::Response,
        cap: u64,
        redactor: &Redactor,
        on_row: &mut dyn Rows,
    ) -> Result<(Document, u64), ErrorKind> {
        use futures_util::StreamExt;
        use std::sync::atomic::AtomicU64;
        /// Rows go to the caller in batches (one wake-up per batch, not per row), and at
        /// most this many batches wait: enough to keep both sides busy, few enough to keep
        /// memory flat.
        const BATCH: usize = 512;
        const BATCHES_AHEAD: usize = 4;
        struct Seen {
            bytes: AtomicU64,
            too_large: AtomicBool,
            failure: std::sync::Mutex<Option<ErrorKind>>,
        }
        let seen = std::sync::Arc::new(Seen {
            bytes: AtomicU64::new(0),
            too_large: AtomicBool::new(false),
            failure: std::sync::Mutex::new(None),
        });
        let timeout = self.cfg.timeout;
        let host = self.host();
        let tap = seen.clone();
        let stream = resp.bytes_stream().map(move |chunk| match chunk {
            Ok(b) => {
                let n = tap.bytes.fetch_add(b.len() as u64, Ordering::SeqCst) + b.len() as u64;
                if n > cap {
                    tap.too_large.store(true, Ordering::SeqCst);
                    Err(std::io::Error::other("answer larger than the cap"))
                } else {
                    Ok(b)
                }
            }
            Err(e) => {
                let kind = classify_with(e, timeout, &host);
                if let Ok(mut slot) = tap.failure.lock() {
                    slot.get_or_insert(kind);
                }
                Err(std::io::Error::other("the connection failed"))
            }
        });
        let input = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Parsed>>(BATCHES_AHEAD);
        let redactor = redactor.clone();
        let dialect = on_row.dialect();
        let parser = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let doc = xml::parse_reader(
                std::io::BufReader::with_capacity(64 * 1024, input),
                |mut row| {
                    redact_fields(&redactor, &mut row);
                    batch.push(match dialect {
                        Some(d) => Parsed::License(d.license(&row)),
                        None => Parsed::Fields(row),
                    });
                    if batch.len() == BATCH {
                        // The receiver is gone only when the caller gave up on this answer.
                        let _ = tx.blocking_send(std::mem::replace(
                            &mut batch,
                            Vec::with_capacity(BATCH),
                        ));
                    }
                },
            );
            if !batch.is_empty() {
                let _ = tx.blocking_send(batch);
            }
            doc
        });
        while let Some(rows) = rx.recv().await {
            for row in rows {
                match row {
                    Parsed::Fields(f) => on_row.row(f),
                    Parsed::License(l) => on_row.license_row(l),
                }
            }
            if let Some(wait) = on_row.pace() {
                wait.await;
            }
        }
        let parsed = parser
            .await
            .map_err(|e| ErrorKind::Unexpected(format!("the parser stopped: {e}")))?;
        let bytes = seen.bytes.load(Ordering::SeqCst);
        match parsed {
            Ok(doc) => Ok((doc, bytes)),
            Err(_) if seen.too_large.load(Ordering::SeqCst) => Err(ErrorKind::TooLarge(cap)),
            Err(e) => {
                let failure = seen.failure.lock().ok().and_then(|mut f| f.take());
                Err(failure.unwrap_or(ErrorKind::Xml(e)))
            }
        }
    }

    fn classify(&self, e: reqwest::Error) -> ErrorKind {
        classify_with(e, self.cfg.timeout, &self.host())
    }

    /// `host[:port]` of the endpoint.
    fn host(&self) -> String {
        let host = self.cfg.url.host_str().unwrap_or("?");
        match self.cfg.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }
}

fn redact_fields(r: &Redactor, f: &mut Fields) {
    for (k, v) in &mut f.0 {
        r.clean_in_place(k);
        r.clean_in_place(&mut v.text);
        r.clean_opt(&mut v.orig);
    }
}

/// Blanks secrets out of everything a parsed answer holds (but the session id a login answer
/// carries, which is read from `attrs` before any redactor knows it).
fn redact_document(r: &Redactor, doc: &mut Document) {
    r.clean_opt(&mut doc.ok);
    redact_fields(r, &mut doc.fields);
    for (e, a, v) in &mut doc.attrs {
        r.clean_in_place(e);
        r.clean_in_place(a);
        r.clean_in_place(v);
    }
    for (l, k, t) in &mut doc.options {
        r.clean_in_place(l);
        r.clean_in_place(k);
        r.clean_in_place(t);
    }
    if let Some(e) = doc.error.as_mut() {
        for f in [
            &mut e.kind,
            &mut e.object,
            &mut e.code,
            &mut e.val,
            &mut e.msg,
            &mut e.detail,
        ] {
            r.clean_opt(f);
        }
        for (k, v) in &mut e.params {
            r.clean_in_place(k);
            r.clean_in_place(v);
        }
    }
}

/// Blanks secrets out of an error's text: element names and details the parser quotes from the
/// answer, transport texts, unexpected-answer messages.
fn redact_error(r: &Redactor, kind: &mut ErrorKind) {
    use xml::XmlError;
    match kind {
        ErrorKind::Connect(t)
        | ErrorKind::Transport(t)
        | ErrorKind::Unexpected(t)
        | ErrorKind::Invalid(t) => r.clean_in_place(t),
        ErrorKind::Xml(XmlError::NotADoc(t) | XmlError::Truncated(t) | XmlError::Read(t)) => {
            r.clean_in_place(t)
        }
        ErrorKind::Xml(XmlError::Malformed { detail, .. }) => r.clean_in_place(detail),
        ErrorKind::Api(a) | ErrorKind::Contradictory(a) => {
            r.clean_in_place(&mut a.kind);
            r.clean_opt(&mut a.object);
            r.clean_opt(&mut a.code);
            r.clean_opt(&mut a.msg);
            r.clean_opt(&mut a.value);
            for (k, v) in &mut a.params {
                r.clean_in_place(k);
                r.clean_in_place(v);
            }
        }
        ErrorKind::Xml(XmlError::Empty)
        | ErrorKind::Timeout(..)
        | ErrorKind::Http { .. }
        | ErrorKind::Redirect { .. }
        | ErrorKind::TooLarge(_) => {}
    }
}

/// A transport failure, naming the server's host (never the URL: it is not needed, and a
/// URL is where credentials hide in other clients).
fn classify_with(e: reqwest::Error, timeout: Duration, host: &str) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Timeout(timeout, host.to_owned())
    } else if e.is_connect() {
        ErrorKind::Connect(format!("{host}: {}", describe_transport(e)))
    } else {
        ErrorKind::Transport(format!("{host}: {}", describe_transport(e)))
    }
}

/// Capped exponential backoff with jitter: between half and all of 250 ms × 2^(attempt−1),
/// capped at 8 s.
fn backoff(attempt: u32) -> Duration {
    let cap = Duration::from_millis(250)
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(Duration::from_secs(8));
    cap.mul_f64(0.5 + random_fraction() / 2.0)
}

/// A random number in [0, 1) for jitter. It needs no cryptography, only independence between
/// processes and calls, which the std hasher's per-instance random keys give.
pub(crate) fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for a in 1..20 {
            let d = backoff(a);
            assert!(d <= Duration::from_secs(8), "{a}: {d:?}");
            assert!(d >= Duration::from_millis(125), "{a}: {d:?}");
        }
        assert!(backoff(1) < Duration::from_millis(251));
    }
}
