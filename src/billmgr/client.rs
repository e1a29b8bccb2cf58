//! The BILLmanager HTTP client: every operation of the API, for either generation, through the
//! dialect seam.
//!
//! Owns: POST form bodies (`out=xml`, `lang=en`, credentials in the body only), the two auth
//! modes, timeouts, no redirects, a body-size cap, retries for reads only, and a fuse that stops
//! all calls after a login refusal (lockouts exist). Must not log bodies or parameters, put a
//! credential in a URL, or retry a paid or mutating call.

use super::dialect::{Call, Dialect};
use super::error::{ApiError, Error, ErrorKind, describe_transport};
use super::xml::{self, Document, Fields};
use crate::config::{AuthMode, BillmgrSettings};
use crate::domain::{License, PendingLicense, Row, RowError};
use chrono::NaiveDate;
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The licenses of one list call, plus the rows that looked like licenses but did not parse.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub licenses: Vec<License>,
    /// Ordered licenses not active yet (no expiry): shown, never planned.
    pub pending: Vec<PendingLicense>,
    pub bad_rows: Vec<RowError>,
}

/// The answer to an IP availability check: the server accepted the combination; any data it
/// returned is kept as name/value pairs for display.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IpCheck {
    pub fields: Vec<(String, String)>,
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
    dialect: Dialect,
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
        Ok(Client {
            http,
            cfg: cfg.clone(),
            password,
            dialect: Dialect(cfg.api),
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

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Lists licenses. With a window, only those whose expiry falls inside it: BILLmanager 4
    /// filters on the server (the saved filter is set, used and cleared again), 5/6 has no such
    /// filter, so every page is read and filtered here. Without a window, all of them (the
    /// saved filter is cleared first, since the server keeps it per user).
    pub async fn list(&self, window: Option<(NaiveDate, NaiveDate)>) -> Result<Listing, Error> {
        if !self.dialect.has_server_filter() {
            let mut listing = self.list_pages().await?;
            if let Some((from, to)) = window {
                listing
                    .licenses
                    .retain(|l| l.expiry >= from && l.expiry <= to);
            }
            return Ok(listing);
        }
        self.call_ok(&self.dialect.set_filter(window), Kind::Read)
            .await?;
        let listing = self.list_pages().await;
        if window.is_some()
            && let Err(e) = self
                .call_ok(&self.dialect.set_filter(None), Kind::Read)
                .await
        {
            tracing::warn!(error = %e, "could not clear the saved license filter");
        }
        listing
    }

    /// Reads the list, page after page where the generation pages it, until `p_elems` rows
    /// were seen (or a page comes back empty).
    async fn list_pages(&self) -> Result<Listing, Error> {
        /// A bound on pages, so a server that ignores `p_num` cannot keep us here.
        const MAX_PAGES: usize = 10_000;
        let dialect = self.dialect;
        let mut listing = Listing::default();
        let mut rows_seen = 0usize;
        let mut seen = std::collections::HashSet::new();
        let mut page = 1;
        loop {
            let call = dialect.list(page);
            let before = listing.licenses.len();
            let doc = self
                .call_rows(
                    &call,
                    Kind::Read,
                    &mut |row: Fields| match dialect.license(&row) {
                        Some(Row::License(l)) => listing.licenses.push(l),
                        Some(Row::Pending(p)) => listing.pending.push(p),
                        Some(Row::Bad(e)) => listing.bad_rows.push(e),
                        None => {}
                    },
                )
                .await?;
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
            // A server that ignores p_num answers page 1 again: its first row was seen before.
            if let Some(first) = listing.licenses.get(before)
                && !seen.insert(first.elid)
            {
                return Err(Error::new(
                    call.func,
                    None,
                    ErrorKind::Unexpected(format!(
                        "page {page} repeats earlier rows: the server ignores p_num"
                    )),
                ));
            }
            seen.extend(
                listing.licenses[before.min(listing.licenses.len())..]
                    .iter()
                    .skip(1)
                    .map(|l| l.elid),
            );
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
        }
        for bad in &listing.bad_rows {
            tracing::warn!(row = %bad, "skipped a license row that does not parse");
        }
        Ok(listing)
    }

    /// The new expiry a renewal would give, where the API previews it for free (5/6
    /// `service.prolong` without `sok`); `Ok(None)` where it does not.
    pub async fn preview_renew(&self, elid: i64, period: i64) -> Result<Option<NaiveDate>, Error> {
        let Some(call) = self.dialect.preview_renew(elid, period) else {
            return Ok(None);
        };
        let doc = self.call_ok_or_data(&call, Kind::Read).await?;
        Ok(doc
            .fields
            .get("newexpiredate")
            .and_then(crate::domain::parse_date))
    }

    /// Reads one license.
    pub async fn view(&self, elid: i64) -> Result<License, Error> {
        let call = self.dialect.view(elid);
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
        match self.dialect.license(&doc.fields) {
            Some(Row::License(l)) if l.elid == elid => Ok(l),
            Some(Row::Pending(_)) => Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected(format!(
                    "license {elid} is ordered and not active yet: it has no expiry"
                )),
            )),
            Some(Row::License(l)) => Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected(format!(
                    "asked for license {elid}, the answer is license {}",
                    l.elid
                )),
            )),
            Some(Row::Bad(e)) => Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected(e.reason),
            )),
            None => Err(Error::new(
                call.func,
                Some(elid),
                ErrorKind::Unexpected("the answer has no expiredate: not a license".into()),
            )),
        }
    }

    /// Orders a new license (paid). Returns its id when the answer carries one.
    pub async fn order(
        &self,
        product: i64,
        period: i64,
        licname: &str,
        ip: &str,
    ) -> Result<Option<i64>, Error> {
        let call = self.dialect.order(product, period, licname, ip);
        let doc = self.call_ok_or_data(&call, Kind::Write).await?;
        let id = self.dialect.ordered_id(&doc);
        if id.is_none() && doc.ok.is_none() {
            return Err(Error::new(
                call.func,
                None,
                ErrorKind::Unexpected("neither <ok/> nor a new license id".into()),
            ));
        }
        Ok(id)
    }

    /// Asks whether a license of this product/period can be bound to `ip`.
    pub async fn check_ip(&self, product: i64, period: i64, ip: &str) -> Result<IpCheck, Error> {
        let call = self.dialect.check_ip(product, period, ip);
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

    /// Changes a license's name and/or IP.
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
        let call = self.dialect.edit(elid, licname, ip);
        self.call_ok(&call, Kind::Write).await.map(|_| ())
    }

    /// Renews a license for `period` (paid). Sent exactly once.
    pub async fn renew(&self, elid: i64, period: i64) -> Result<Renewed, Error> {
        let call = self.dialect.renew(elid, period);
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
        let doc = self.call_rows(call, kind, &mut |_| {}).await?;
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
        self.call_rows(call, kind, &mut |_| {}).await
    }

    /// Sends a call (retrying reads), handing rows to `on_row`; API errors become `Err`.
    async fn call_rows(
        &self,
        call: &Call,
        kind: Kind,
        on_row: &mut dyn FnMut(Fields),
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
                tracing::info!(func = call.func, "session expired; logging in again");
                *self.session.lock().await = None;
                relogged = true;
                attempt -= 1;
                continue;
            }
            if kind == Kind::Read && attempt < attempts && err.is_transient() {
                let delay = backoff(attempt);
                tracing::warn!(func = call.func, elid = call.elid, attempt, error = %err, retry_in = ?delay, "read failed; retrying");
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
        on_row: &mut dyn FnMut(Fields),
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
        let doc = self.post(call.func, call.elid, &form, on_row).await?;
        if let Some(raw) = doc.error.clone() {
            let sid = match self.cfg.auth {
                AuthMode::Session => form.iter().find(|(k, _)| *k == "auth").map(|(_, v)| *v),
                AuthMode::Authinfo => None,
            };
            let api = Box::new(self.api_error(raw, sid));
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

    /// An `<error>` as an [`ApiError`], with the password and the session id blanked out
    /// wherever the server echoed them.
    fn api_error(&self, raw: xml::RawError, sid: Option<&str>) -> ApiError {
        let mut e = ApiError::from_raw(raw);
        e.redact(&[self.password.expose_secret(), sid.unwrap_or_default()]);
        e
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
        let doc = self.post("auth", None, &form, &mut |_| {}).await?;
        if let Some(raw) = doc.error {
            let err = Error::new(
                "auth",
                None,
                ErrorKind::Api(Box::new(self.api_error(raw, None))),
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
        tracing::debug!("logged in");
        Ok(SecretString::from(sid))
    }

    /// One HTTP exchange, counted in the metrics.
    async fn post(
        &self,
        func: &str,
        elid: Option<i64>,
        form: &[(&str, &str)],
        on_row: &mut dyn FnMut(Fields),
    ) -> Result<Document, Error> {
        let started = Instant::now();
        let res = self.exchange(func, elid, form, on_row).await;
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

    /// One HTTP exchange: POST the form, check status, read the body under the cap, parse it.
    async fn exchange(
        &self,
        func: &str,
        elid: Option<i64>,
        form: &[(&str, &str)],
        on_row: &mut dyn FnMut(Fields),
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
            && len > self.cfg.max_body
        {
            return Err(fail(ErrorKind::TooLarge(self.cfg.max_body)));
        }
        let body = self.read_body(resp).await.map_err(fail)?;
        let doc = xml::parse_with(&body, on_row).map_err(|e| fail(ErrorKind::Xml(e)))?;
        tracing::debug!(
            func,
            elid,
            bytes = body.len(),
            rows = doc.rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "api call"
        );
        Ok(doc)
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, ErrorKind> {
        let mut body = Vec::with_capacity(
            resp.content_length().unwrap_or(4096).min(self.cfg.max_body) as usize,
        );
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > self.cfg.max_body {
                        return Err(ErrorKind::TooLarge(self.cfg.max_body));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(self.classify(e)),
            }
        }
    }

    fn classify(&self, e: reqwest::Error) -> ErrorKind {
        if e.is_timeout() {
            ErrorKind::Timeout(self.cfg.timeout)
        } else if e.is_connect() {
            ErrorKind::Connect(describe_transport(e))
        } else {
            ErrorKind::Transport(describe_transport(e))
        }
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
