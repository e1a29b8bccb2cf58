//! The simulator's mutable world and the BILLmanager 4 business rules applied to it; the
//! BILLmanager 5/6 functions live in the child module `billmgr5` (state/billmgr5.rs).
//!
//! Owns: licenses, sessions, per-user filters, the login lockout, the fault list, the
//! paid-call ledger, the cart counter and the request log, and the synchronous `process` step
//! that turns one request's parameters into one answer document in the generation chosen at
//! start. Must not: do I/O, await, or read the wall clock itself (`today` and `now` are passed
//! in), so it runs under a `std::sync::Mutex` that is never held across an `.await`; and must
//! not panic on any input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::{Datelike, Days, Months, NaiveDate};

use super::catalog::{self, TRIAL_DAYS, Term};
use super::sample::{self, FIRST_ID, SplitMix64, lifetime_expiry};
use super::xml::{ApiError, Doc, esc};
use super::{Fault, FaultKind, RecordedRequest, SimApi, SimConfig, SimLicense};

mod billmgr5;

/// Consecutive bad logins after which every login answers `blocklogon` for the rest of the run.
pub(crate) const LOCKOUT_AFTER: u32 = 10;
/// The request log keeps this many newest entries, so a long-running `licrenew sim` stays bounded.
pub(crate) const MAX_RECORDED: usize = 100_000;
/// A renewal is refused while the expiry is more than this many days away.
pub(crate) const RENEW_WINDOW_DAYS: u64 = 365;

/// Request parameters: query string first, then the form body, the body winning.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn merge(
        query: impl IntoIterator<Item = (String, String)>,
        body: impl IntoIterator<Item = (String, String)>,
    ) -> Params {
        let mut map = HashMap::new();
        map.extend(query);
        map.extend(body);
        Params(map)
    }

    /// The raw value, if the parameter was sent at all (possibly empty).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value if it was sent and is not blank.
    pub(crate) fn filled(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.trim().is_empty())
    }

    /// `sok` with any non-empty value means "submit".
    fn submitted(&self) -> bool {
        self.filled("sok").is_some()
    }
}

#[derive(Debug)]
struct Session {
    user: String,
    last_seen: Instant,
}

/// The saved `software.filter` of one user; `None` bounds are open.
#[derive(Debug, Default, Clone, Copy)]
struct Filter {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

impl Filter {
    fn admits(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
}

pub(crate) struct State {
    api: SimApi,
    username: String,
    password: String,
    session_ttl: Duration,
    pub(crate) licenses: BTreeMap<i64, SimLicense>,
    /// Simulated today minus the real UTC date, in days.
    pub(crate) day_offset: i64,
    sessions: HashMap<String, Session>,
    filters: HashMap<String, Filter>,
    pub(crate) faults: Vec<Fault>,
    /// `(elid, field)` pairs left out of what the simulator writes about that license.
    pub(crate) hidden: Vec<(i64, String)>,
    /// BILLmanager 6 `special_status` of licenses (a status change in progress).
    pub(crate) special: HashMap<i64, String>,
    /// 5/6 list rows carry no `pricelist_id` (the tariff id only in `soft.edit`).
    pub(crate) rows_without_pricelist_id: bool,
    /// Words after a tariff's name in 5/6 lists (a billing's own naming).
    pub(crate) tariff_suffix: &'static str,
    /// The account balance in cents (5/6 `whoami`); a paid call that costs more is refused.
    pub(crate) balance: i64,
    /// 5/6 list filters saved per user: `(field, value)` pairs a row must match.
    pub(crate) saved_filters: HashMap<String, Vec<(String, String)>>,
    pub(crate) paid_by_elid: HashMap<i64, u32>,
    pub(crate) paid_total: u32,
    /// Orders/renewals put into the cart unpaid (5/6 only).
    pub(crate) cart_calls: u32,
    pub(crate) renewals_by_expiry: BTreeMap<(i64, NaiveDate), u32>,
    pub(crate) requests: VecDeque<RecordedRequest>,
    pub(crate) login_failures: u32,
    consecutive_failures: u32,
    locked: bool,
    rng: SplitMix64,
    answers: u64,
}

type Answer = Result<String, ApiError>;

impl State {
    pub(crate) fn new(cfg: &SimConfig, today: NaiveDate, entropy: u64) -> State {
        let licenses = sample::generate_for(cfg.api, cfg.licenses, cfg.seed, today)
            .into_iter()
            .map(|l| (l.id, l))
            .collect();
        State {
            api: cfg.api,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            session_ttl: cfg.session_ttl,
            licenses,
            day_offset: 0,
            sessions: HashMap::new(),
            filters: HashMap::new(),
            faults: Vec::new(),
            hidden: Vec::new(),
            special: HashMap::new(),
            rows_without_pricelist_id: cfg.rows_without_pricelist_id,
            tariff_suffix: "",
            balance: cfg.balance_cents,
            saved_filters: HashMap::new(),
            paid_by_elid: HashMap::new(),
            paid_total: 0,
            cart_calls: 0,
            renewals_by_expiry: BTreeMap::new(),
            requests: VecDeque::new(),
            login_failures: 0,
            consecutive_failures: 0,
            locked: false,
            rng: SplitMix64::new(entropy ^ cfg.seed.rotate_left(17)),
            answers: 0,
        }
    }

    pub(crate) fn record(&mut self, r: RecordedRequest) {
        if self.requests.len() >= MAX_RECORDED {
            self.requests.pop_front();
        }
        self.requests.push_back(r);
    }

    /// Removes the fields hidden for license `id` (see `SimHandle::hide_field`) from what was
    /// written to `buf` since `start`.
    pub(crate) fn strip_hidden(&self, id: i64, buf: &mut String, start: usize) {
        for (_, field) in self.hidden.iter().filter(|(e, _)| *e == id) {
            let open = format!("<{field}>");
            let close = format!("</{field}>");
            while let Some(a) = buf[start..].find(&open).map(|i| i + start) {
                let Some(b) = buf[a..].find(&close).map(|i| i + a + close.len()) else {
                    break;
                };
                buf.replace_range(a..b, "");
            }
        }
    }

    pub(crate) fn api(&self) -> SimApi {
        self.api
    }

    pub(crate) fn expire_sessions(&mut self) {
        self.sessions.clear();
    }

    /// The first armed fault matching this request; counts down and disarms `times`.
    pub(crate) fn take_fault(&mut self, func: &str, elid: Option<i64>) -> Option<FaultKind> {
        self.faults.retain(|f| f.times != Some(0));
        let idx = self.faults.iter().position(|f| {
            f.func.as_deref().is_none_or(|want| want == func)
                && f.elid.is_none_or(|want| Some(want) == elid)
        })?;
        if let FaultKind::After { skip, then } = &mut self.faults[idx].kind {
            if *skip > 0 {
                *skip -= 1;
                return None;
            }
            let then = (**then).clone();
            self.faults[idx].kind = then;
        }
        let kind = self.faults[idx].kind.clone();
        if let Some(n) = self.faults[idx].times {
            if n <= 1 {
                self.faults.remove(idx);
            } else {
                self.faults[idx].times = Some(n - 1);
            }
        }
        Some(kind)
    }

    /// Authenticates and runs one BILLmanager request; always returns a whole XML document.
    pub(crate) fn process(&mut self, p: &Params, today: NaiveDate, now: Instant) -> String {
        self.answers = self.answers.wrapping_add(1);
        let func = p.get("func").unwrap_or("").to_owned();
        let user = match self.authenticate(p, &func, now) {
            Ok(u) => u,
            Err(doc) => return doc,
        };
        let answer = match (self.api, func.as_str()) {
            (SimApi::Billmgr4, "software") => Ok(self.list(&user)),
            (SimApi::Billmgr4, "software.filter") => self.filter(p, &user),
            (SimApi::Billmgr4, "software.edit") => self.edit(p, &user, today),
            (SimApi::Billmgr4, "software.licinfo") => self.licinfo(p, &user),
            (SimApi::Billmgr4, "software.period") => self.renew(p, &user, today),
            (SimApi::Billmgr5, "soft") => Ok(self.soft_list(p, &user, today)),
            (SimApi::Billmgr5, "soft.edit") => self.soft_edit(p, &user, today),
            (SimApi::Billmgr5, "soft.order.param") => self.soft_order(p, &user, today),
            (SimApi::Billmgr5, "soft.checkip") => self.soft_checkip(p, &user),
            (SimApi::Billmgr5, "service.prolong") => self.prolong(p, &user, today),
            (SimApi::Billmgr5, "soft.filter") => Ok(self.soft_filter(p, &user)),
            (SimApi::Billmgr5, "whoami") => Ok(self.whoami(p, &user)),
            (SimApi::Billmgr5, "dashboard.info") => Ok(self.dashboard_info(p, &user)),
            _ => Err(ApiError::missed("func", &func)),
        };
        answer.unwrap_or_else(|e| self.error_doc(&e, p, &func, Some(&user)))
    }

    /// An error document in the envelope of this simulator's generation.
    fn error_doc(&self, e: &ApiError, p: &Params, func: &str, user: Option<&str>) -> String {
        e.to_doc_for(self.api, func, user, &billmgr5::echo(p))
    }

    /// A new document in the envelope of this simulator's generation.
    fn open_doc(&self, p: &Params, func: &str, user: Option<&str>, capacity: usize) -> Doc {
        Doc::open_for(self.api, func, user, &billmgr5::echo(p), capacity)
    }

    // ---- authentication ----------------------------------------------------------------

    /// `Ok(user)` to go on, `Err(document)` to answer right away.
    fn authenticate(&mut self, p: &Params, func: &str, now: Instant) -> Result<String, String> {
        let ttl = self.session_ttl;
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.last_seen) <= ttl);

        if func == "auth" {
            let user = p.get("username").unwrap_or("");
            let pass = p.get("password").unwrap_or("");
            self.check_password(user, Some(pass))
                .map_err(|e| self.login_refusal(&e, p, func))?;
            let sid = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
            self.sessions.insert(
                sid.clone(),
                Session {
                    user: user.to_owned(),
                    last_seen: now,
                },
            );
            let mut d = self.open_doc(p, func, Some(user), 256);
            let _ = write!(
                d.buf(),
                "<auth id=\"{}\" level=\"16\">{}</auth>",
                esc(&sid),
                esc(&sid)
            );
            return Err(d.finish());
        }
        if let Some(authinfo) = p.filled("authinfo") {
            // Split at the first ':' so a password may itself contain ':'.
            let (user, pass) = match authinfo.split_once(':') {
                Some((u, pw)) => (u, Some(pw)),
                None => (authinfo, None),
            };
            self.check_password(user, pass)
                .map_err(|e| self.login_refusal(&e, p, func))?;
            return Ok(user.to_owned());
        }
        if let Some(sid) = p.filled("auth") {
            return match self.sessions.get_mut(sid) {
                Some(s) => {
                    s.last_seen = now;
                    Ok(s.user.clone())
                }
                None => Err(self.error_doc(&ApiError::access(), p, func, None)),
            };
        }
        Err(self.error_doc(&ApiError::access(), p, func, None))
    }

    /// A refused login: BILLmanager 4 answers `<doc><authfail/></doc>` (REG.RU's client checks
    /// for it), 5/6 an `<error type="auth">`.
    fn login_refusal(&self, e: &ApiError, p: &Params, func: &str) -> String {
        match self.api {
            SimApi::Billmgr4 => {
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc><authfail/></doc>\n".to_owned()
            }
            SimApi::Billmgr5 => self.error_doc(e, p, func, None),
        }
    }

    /// `pass` is `None` when `authinfo` had no ':' at all; that never matches.
    fn check_password(&mut self, user: &str, pass: Option<&str>) -> Result<(), ApiError> {
        if self.locked {
            self.login_failures += 1;
            return Err(ApiError::new(
                "auth",
                Some("blocklogon"),
                None,
                "Too many failed login attempts, access is temporarily blocked",
            ));
        }
        if user == self.username && pass == Some(self.password.as_str()) {
            self.consecutive_failures = 0;
            return Ok(());
        }
        self.login_failures += 1;
        self.consecutive_failures += 1;
        if self.consecutive_failures >= LOCKOUT_AFTER {
            self.locked = true;
        }
        let mut e = ApiError::new(
            "auth",
            Some("badpassword"),
            None,
            "Invalid username or password",
        );
        e.code = Some("1".to_owned());
        Err(e)
    }

    // ---- software (list) and software.filter -------------------------------------------

    fn list(&self, user: &str) -> String {
        let filter = self.filters.get(user).copied().unwrap_or_default();
        let mut d = Doc::open("software", Some(user), 1024 + 190 * self.licenses.len());
        if self.answers.is_multiple_of(2) {
            d.raw(concat!(
                "<metadata name=\"software\" type=\"list\" key=\"id\"><coldata>",
                "<col name=\"licname\" type=\"data\" sort=\"alpha\"/><col name=\"ip\" type=\"data\" sort=\"alpha\"/>",
                "<col name=\"expiredate\" type=\"data\" sort=\"digit\"/></coldata></metadata>",
                "<p_sort>expiredate</p_sort><p_order>asc</p_order>"
            ));
        }
        let mut rows = 0usize;
        for l in self
            .licenses
            .values()
            .filter(|l| filter.admits(l.expiredate))
        {
            let start = d.buf().len();
            let _ = write!(
                d.buf(),
                "<elem><id>{}</id><licname>{}</licname><ip>{}</ip><price>{}</price><period>{}</period>\
                 <expiredate>{}</expiredate><status>{}</status></elem>",
                l.id,
                esc(&l.licname),
                esc(&l.ip),
                l.price,
                l.period,
                l.expiredate.format("%Y-%m-%d"),
                l.status
            );
            self.strip_hidden(l.id, d.buf(), start);
            rows += 1;
            if rows == 1 {
                // UI noise between rows: a client must pick rows by element name, not position.
                d.raw("<p_cnt>1000</p_cnt>");
            }
        }
        let _ = write!(d.buf(), "<p_elems>{rows}</p_elems>");
        d.finish()
    }

    fn filter(&mut self, p: &Params, user: &str) -> Answer {
        let current = self.filters.get(user).copied().unwrap_or_default();
        if !p.submitted() {
            let mut d = Doc::open("software.filter", Some(user), 256);
            d.field(
                "expires",
                current.from.map(|x| x.to_string()).unwrap_or_default(),
            );
            d.field(
                "expiree",
                current.to.map(|x| x.to_string()).unwrap_or_default(),
            );
            return Ok(d.finish());
        }
        let from = parse_optional_date(p, "expires")?;
        let to = parse_optional_date(p, "expiree")?;
        if from.is_none() && to.is_none() {
            self.filters.remove(user);
        } else {
            self.filters.insert(user.to_owned(), Filter { from, to });
        }
        Ok(ok_doc("software.filter", user))
    }

    // ---- software.edit: order, view, change name/IP ------------------------------------

    fn edit(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        match (p.filled("elid"), p.submitted()) {
            (None, false) => {
                let mut d = Doc::open("software.edit", Some(user), 512);
                for k in ["price", "period", "licname", "ip"] {
                    d.field(k, p.get(k).unwrap_or(""));
                }
                // The product picker of the order form: more UI noise for the client to skip.
                d.raw("<slist name=\"price\">");
                for product in catalog::PRODUCTS {
                    let _ = write!(
                        d.buf(),
                        "<msg key=\"{}\">{}</msg>",
                        product.price,
                        esc(product.name)
                    );
                }
                d.raw("</slist>");
                Ok(d.finish())
            }
            (None, true) => self.order(p, user, today),
            (Some(elid), false) => {
                let l = self.find(elid)?;
                let mut d = Doc::open("software.edit", Some(user), 512);
                d.field("id", l.id)
                    .field("licname", &l.licname)
                    .field("ip", &l.ip)
                    .field("price", l.price)
                    .field("period", l.period)
                    .field("expiredate", l.expiredate.format("%Y-%m-%d"))
                    .field("status", l.status);
                Ok(d.finish())
            }
            (Some(elid), true) => self.change(p, user, elid, today),
        }
    }

    fn order(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        let (price, period, term, ip) = validate_product(p)?;
        let licname = p.get("licname").unwrap_or("").trim();
        if licname.is_empty() {
            return Err(ApiError::value("licname", licname));
        }
        let expiredate = match term {
            Term::Trial => today.checked_add_days(Days::new(TRIAL_DAYS)),
            Term::Months(n) => today.checked_add_months(Months::new(n)),
            Term::Lifetime => Some(lifetime_expiry()),
        }
        .ok_or_else(|| ApiError::value("period", &period.to_string()))?;
        let id = self
            .licenses
            .keys()
            .next_back()
            .map_or(FIRST_ID, |max| (max + 1).max(FIRST_ID));
        let lic = SimLicense {
            id,
            licname: licname.to_owned(),
            ip,
            price,
            period,
            expiredate,
            status: 2,
            last_ip_change: None,
            autoprolong: None,
        };
        self.licenses.insert(id, lic);
        self.paid_total += 1;
        let mut d = Doc::open("software.edit", Some(user), 256);
        d.ok().field("id", id);
        Ok(d.finish())
    }

    fn change(&mut self, p: &Params, user: &str, elid: &str, today: NaiveDate) -> Answer {
        self.apply_change(p, elid, today)?;
        Ok(ok_doc("software.edit", user))
    }

    /// The name/IP change shared by v4 `software.edit` and 5/6 `soft.edit`: a blank `licname`
    /// or a bad `ip` is a `value` error, a deleted license is `missed`, and a real IP change is
    /// allowed once per calendar month. Changes nothing on error; returns the license id.
    fn apply_change(&mut self, p: &Params, elid: &str, today: NaiveDate) -> Result<i64, ApiError> {
        let current = self.find(elid)?;
        if current.status == 4 {
            return Err(ApiError::missed("elid", elid));
        }
        let id = current.id;
        let new_name = match p.get("licname") {
            None => None,
            Some(n) if n.trim().is_empty() => return Err(ApiError::value("licname", n)),
            Some(n) => Some(n.trim().to_owned()),
        };
        let new_ip = match p.get("ip") {
            None => None,
            Some(raw) => {
                let ip = parse_ipv4(raw)?;
                (ip != current.ip).then_some(ip)
            }
        };
        if let Some(ip) = &new_ip {
            let same_month = |d: NaiveDate| d.year() == today.year() && d.month() == today.month();
            if current.last_ip_change.is_some_and(same_month) {
                return Err(ApiError::new(
                    "value",
                    Some("ip"),
                    Some(ip),
                    "The IP address can be changed only once a month",
                ));
            }
        }
        if let Some(l) = self.licenses.get_mut(&id) {
            if let Some(n) = new_name {
                l.licname = n;
            }
            if let Some(ip) = new_ip {
                l.ip = ip;
                l.last_ip_change = Some(today);
            }
        }
        Ok(id)
    }

    // ---- software.licinfo --------------------------------------------------------------

    fn licinfo(&self, p: &Params, user: &str) -> Answer {
        if !p.submitted() {
            let mut d = Doc::open("software.licinfo", Some(user), 256);
            for k in ["price", "period", "ip"] {
                d.field(k, p.get(k).unwrap_or(""));
            }
            return Ok(d.finish());
        }
        let (price, period, _, ip) = validate_product(p)?;
        let taken = self
            .licenses
            .values()
            .any(|l| l.price == price && l.status != 4 && l.ip == ip);
        if taken {
            return Err(ApiError::new(
                "exists",
                Some("ip"),
                Some(&ip),
                "A license of this product for this IP address already exists",
            ));
        }
        let mut d = Doc::open("software.licinfo", Some(user), 256);
        d.ok()
            .field("ip", ip)
            .field("price", price)
            .field("period", period);
        Ok(d.finish())
    }

    // ---- software.period (paid renewal) ------------------------------------------------

    fn renew(&mut self, p: &Params, user: &str, today: NaiveDate) -> Answer {
        let elid = p.filled("elid").unwrap_or("");
        let lic = self.find(elid)?;
        if !p.submitted() {
            let mut d = Doc::open("software.period", Some(user), 256);
            d.field("elid", lic.id)
                .field("price", lic.price)
                .field(
                    "period",
                    p.filled("period")
                        .map_or_else(|| lic.period.to_string(), str::to_owned),
                )
                .field("expiredate", lic.expiredate.format("%Y-%m-%d"));
            return Ok(d.finish());
        }
        match lic.status {
            4 => return Err(ApiError::missed("elid", elid)),
            5 => {
                return Err(ApiError::new(
                    "value",
                    Some("elid"),
                    Some(elid),
                    "The service is being processed",
                ));
            }
            _ => {}
        }
        let raw_period = p.get("period").unwrap_or("");
        let period = raw_period.trim().parse::<i64>().ok();
        let term = match period.and_then(|id| catalog::term(lic.price, id)) {
            Some(Term::Trial) | None => return Err(ApiError::value("period", raw_period)),
            Some(t) => t,
        };
        if lic.expiredate >= lifetime_expiry() {
            return Err(ApiError::value("period", raw_period));
        }
        not_too_early(&lic, today)?;
        let base = renewal_base(&lic, today);
        let new_expiry = match term {
            Term::Months(n) => base.checked_add_months(Months::new(n)),
            Term::Lifetime => Some(lifetime_expiry()),
            Term::Trial => None,
        }
        .ok_or_else(|| ApiError::value("period", raw_period))?;
        let (id, old_expiry) = (lic.id, lic.expiredate);
        if let Some(l) = self.licenses.get_mut(&id) {
            l.expiredate = new_expiry;
            l.status = 2;
            l.period = period.unwrap_or(l.period);
        }
        *self.paid_by_elid.entry(id).or_default() += 1;
        *self.renewals_by_expiry.entry((id, old_expiry)).or_default() += 1;
        self.paid_total += 1;
        Ok(ok_doc("software.period", user))
    }

    // ---- helpers -----------------------------------------------------------------------

    /// The license named by a raw `elid`, or the `missed`/`elid` error.
    fn find(&self, elid: &str) -> Result<SimLicense, ApiError> {
        elid.trim()
            .parse::<i64>()
            .ok()
            .and_then(|id| self.licenses.get(&id))
            .cloned()
            .ok_or_else(|| ApiError::missed("elid", elid))
    }
}

fn ok_doc(func: &str, user: &str) -> String {
    let mut d = Doc::open(func, Some(user), 256);
    d.ok();
    d.finish()
}

fn parse_optional_date(p: &Params, key: &str) -> Result<Option<NaiveDate>, ApiError> {
    match p.filled(key) {
        None => Ok(None),
        Some(raw) => NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
            .map(Some)
            .map_err(|_| ApiError::value(key, raw)),
    }
}

fn parse_ipv4(raw: &str) -> Result<String, ApiError> {
    raw.trim()
        .parse::<Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ApiError::value("ip", raw))
}

/// `price`, `period` (belonging to that price) and `ip`, validated in that order.
fn validate_product(p: &Params) -> Result<(i64, i64, Term, String), ApiError> {
    let raw_price = p.get("price").unwrap_or("");
    let price = raw_price
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| catalog::product(*id).is_some())
        .ok_or_else(|| ApiError::value("price", raw_price))?;
    let raw_period = p.get("period").unwrap_or("");
    let (period, term) = raw_period
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(|id| catalog::term(price, id).map(|t| (id, t)))
        .ok_or_else(|| ApiError::value("period", raw_period))?;
    let ip = parse_ipv4(p.get("ip").unwrap_or(""))?;
    Ok((price, period, term, ip))
}

/// "The service can be renewed only after DATE": more than the renewal window ahead. Shared
/// by both generations, whose renewal rules are the same.
fn not_too_early(lic: &SimLicense, today: NaiveDate) -> Result<(), ApiError> {
    if let Some(earliest) = lic
        .expiredate
        .checked_sub_days(Days::new(RENEW_WINDOW_DAYS))
        && earliest > today
    {
        let date = earliest.format("%Y-%m-%d").to_string();
        return Err(ApiError::new(
            "value",
            Some("expiredate"),
            Some(&date),
            format!("The service can be renewed only after {date}"),
        ));
    }
    Ok(())
}

/// Active and not yet expired: extended from the current expiry; expired, suspended or just
/// ordered: from today (the payment date).
fn renewal_base(lic: &SimLicense, today: NaiveDate) -> NaiveDate {
    if lic.status == 2 && lic.expiredate >= today {
        lic.expiredate
    } else {
        today
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: (&str, &str) = ("authinfo", "demo:demo-password");

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn today() -> NaiveDate {
        d(2024, 6, 15)
    }

    fn empty_state() -> State {
        let cfg = SimConfig {
            licenses: 0,
            ..SimConfig::default()
        };
        State::new(&cfg, today(), 7)
    }

    fn lic(id: i64, price: i64, period: i64, expiredate: NaiveDate, status: u8) -> SimLicense {
        SimLicense {
            id,
            licname: format!("lic{id}.example.net"),
            ip: format!("203.0.113.{}", id % 250),
            price,
            period,
            expiredate,
            status,
            last_ip_change: None,
            autoprolong: None,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::merge(
            Vec::new(),
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    /// Calls with `authinfo` credentials on the fixed `today()`.
    fn call(st: &mut State, pairs: &[(&str, &str)]) -> String {
        let mut all = vec![AUTH];
        all.extend_from_slice(pairs);
        st.process(&params(&all), today(), Instant::now())
    }

    fn put(st: &mut State, l: SimLicense) {
        st.licenses.insert(l.id, l);
    }

    #[test]
    fn a_list_without_licenses_has_no_elem_at_all() {
        let mut st = empty_state();
        let doc = call(&mut st, &[("func", "software")]);
        assert!(!doc.contains("<elem>"), "{doc}");
        assert!(doc.contains("<doc "), "{doc}");
    }

    #[test]
    fn the_list_shows_every_field_of_each_license() {
        let mut st = empty_state();
        put(&mut st, lic(1101, 7, 8, d(2024, 7, 1), 2));
        let doc = call(&mut st, &[("func", "software")]);
        assert!(
            doc.contains(
                "<elem><id>1101</id><licname>lic1101.example.net</licname><ip>203.0.113.101</ip><price>7</price>\
                 <period>8</period><expiredate>2024-07-01</expiredate><status>2</status></elem>"
            ),
            "{doc}"
        );
    }

    #[test]
    fn a_saved_filter_shapes_later_lists_until_it_is_cleared() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 6, 10), 2));
        put(&mut st, lic(1002, 7, 8, d(2024, 6, 20), 2));
        put(&mut st, lic(1003, 7, 8, d(2024, 7, 20), 2));
        let ok = call(
            &mut st,
            &[
                ("func", "software.filter"),
                ("expires", "2024-06-10"),
                ("expiree", "2024-06-20"),
                ("sok", "ok"),
            ],
        );
        assert!(ok.contains("<ok/>"), "{ok}");
        let doc = call(&mut st, &[("func", "software")]);
        assert!(
            doc.contains("<id>1001</id>") && doc.contains("<id>1002</id>"),
            "{doc}"
        );
        assert!(!doc.contains("<id>1003</id>"), "{doc}");

        call(
            &mut st,
            &[
                ("func", "software.filter"),
                ("expires", ""),
                ("expiree", "2024-06-15"),
                ("sok", "ok"),
            ],
        );
        let doc = call(&mut st, &[("func", "software")]);
        assert!(
            doc.contains("<id>1001</id>") && !doc.contains("<id>1002</id>"),
            "{doc}"
        );

        call(
            &mut st,
            &[
                ("func", "software.filter"),
                ("expires", ""),
                ("expiree", ""),
                ("sok", "ok"),
            ],
        );
        let doc = call(&mut st, &[("func", "software")]);
        assert_eq!(doc.matches("<elem>").count(), 3, "{doc}");
    }

    #[test]
    fn a_filter_with_a_bad_date_is_refused_and_changes_nothing() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 6, 10), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.filter"),
                ("expires", "2024-13-45"),
                ("sok", "ok"),
            ],
        );
        assert!(
            doc.contains("<error type=\"value\" object=\"expires\""),
            "{doc}"
        );
        let form = call(
            &mut st,
            &[("func", "software.filter"), ("expires", "2024-01-01")],
        );
        assert!(
            form.contains("<expires></expires>"),
            "a filter without sok is only the form: {form}"
        );
        assert!(call(&mut st, &[("func", "software")]).contains("<id>1001</id>"));
    }

    #[test]
    fn renewing_an_active_license_extends_it_by_one_month_from_its_current_expiry() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 6, 20), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "8"),
                ("sok", "ok"),
            ],
        );
        assert!(doc.contains("<ok/>"), "{doc}");
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 7, 20));
        assert_eq!(st.paid_by_elid.get(&1001), Some(&1));
        assert_eq!(st.paid_total, 1);
        assert_eq!(st.renewals_by_expiry.get(&(1001, d(2024, 6, 20))), Some(&1));
    }

    #[test]
    fn renewing_for_a_year_adds_twelve_months() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 432, 380, d(2024, 6, 20), 2));
        call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "381"),
                ("sok", "ok"),
            ],
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2025, 6, 20));
        assert_eq!(st.licenses[&1001].period, 381);
    }

    #[test]
    fn renewing_a_suspended_license_counts_from_today_and_reactivates_it() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 11, 16, d(2024, 6, 1), 3));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "16"),
                ("sok", "ok"),
            ],
        );
        assert!(doc.contains("<ok/>"), "{doc}");
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 7, 15));
        assert_eq!(st.licenses[&1001].status, 2);
    }

    #[test]
    fn renewing_an_expired_active_license_counts_from_today() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 11, 16, d(2024, 6, 1), 2));
        call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "16"),
                ("sok", "ok"),
            ],
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 7, 15));
    }

    #[test]
    fn a_month_is_added_with_end_of_month_clamping() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 8, 31), 2));
        call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "8"),
                ("sok", "ok"),
            ],
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 9, 30));
    }

    #[test]
    fn a_trial_period_cannot_be_renewed() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 7, d(2024, 6, 20), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "7"),
                ("sok", "ok"),
            ],
        );
        assert!(
            doc.contains("<error type=\"value\" object=\"period\""),
            "{doc}"
        );
        assert!(doc.contains("<param name=\"value\">7</param>"), "{doc}");
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 6, 20));
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_period_of_another_product_or_garbage_is_refused() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 11, 16, d(2024, 6, 20), 2));
        for period in ["8", "", "x", "99999999999999999999"] {
            let doc = call(
                &mut st,
                &[
                    ("func", "software.period"),
                    ("elid", "1001"),
                    ("period", period),
                    ("sok", "ok"),
                ],
            );
            assert!(
                doc.contains("<error type=\"value\" object=\"period\""),
                "{period}: {doc}"
            );
        }
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_lifetime_license_cannot_be_renewed() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 9, lifetime_expiry(), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "8"),
                ("sok", "ok"),
            ],
        );
        assert!(
            doc.contains("<error type=\"value\" object=\"period\""),
            "{doc}"
        );
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn renewing_too_early_names_the_first_allowed_date() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 432, 381, d(2025, 7, 1), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "381"),
                ("sok", "ok"),
            ],
        );
        assert!(
            doc.contains("<error type=\"value\" object=\"expiredate\""),
            "{doc}"
        );
        assert!(
            doc.contains("<param name=\"value\">2024-07-01</param>"),
            "{doc}"
        );
        assert!(
            doc.contains("<msg>The service can be renewed only after 2024-07-01</msg>"),
            "{doc}"
        );
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn deleted_processing_and_unknown_licenses_are_not_renewed() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 6, 20), 4));
        put(&mut st, lic(1002, 7, 8, d(2024, 6, 20), 5));
        let renew = |st: &mut State, elid: &str| {
            call(
                st,
                &[
                    ("func", "software.period"),
                    ("elid", elid),
                    ("period", "8"),
                    ("sok", "ok"),
                ],
            )
        };
        assert!(renew(&mut st, "1001").contains("<error type=\"missed\" object=\"elid\""));
        let processing = renew(&mut st, "1002");
        assert!(
            processing.contains("<error type=\"value\" object=\"elid\""),
            "{processing}"
        );
        assert!(
            processing.contains("The service is being processed"),
            "{processing}"
        );
        let unknown = renew(&mut st, "4242");
        assert!(
            unknown.contains("<error type=\"missed\" object=\"elid\""),
            "{unknown}"
        );
        assert!(
            unknown.contains("<param name=\"value\">4242</param>"),
            "{unknown}"
        );
        assert!(renew(&mut st, "1001, 1002").contains("type=\"missed\""));
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn a_renewal_without_sok_only_returns_the_form() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 6, 20), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.period"),
                ("elid", "1001"),
                ("period", "8"),
            ],
        );
        assert!(
            !doc.contains("<ok/>") && doc.contains("<expiredate>2024-06-20</expiredate>"),
            "{doc}"
        );
        assert_eq!(st.licenses[&1001].expiredate, d(2024, 6, 20));
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn an_order_gets_the_next_id_and_counts_as_a_paid_call() {
        let mut st = empty_state();
        put(&mut st, lic(1500, 7, 8, d(2024, 6, 20), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("price", "7"),
                ("period", "8"),
                ("licname", "new"),
                ("ip", "192.0.2.7"),
                ("sok", "ok"),
            ],
        );
        assert!(doc.contains("<ok/><id>1501</id>"), "{doc}");
        let l = &st.licenses[&1501];
        assert_eq!(
            (l.expiredate, l.status, l.ip.as_str()),
            (d(2024, 7, 15), 2, "192.0.2.7")
        );
        assert_eq!(st.paid_total, 1);
        assert!(st.paid_by_elid.is_empty());

        call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("price", "17"),
                ("period", "30"),
                ("licname", "t"),
                ("ip", "192.0.2.8"),
                ("sok", "ok"),
            ],
        );
        assert_eq!(st.licenses[&1502].expiredate, d(2024, 6, 29));
        call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("price", "17"),
                ("period", "31"),
                ("licname", "l"),
                ("ip", "192.0.2.9"),
                ("sok", "ok"),
            ],
        );
        assert_eq!(st.licenses[&1503].expiredate, lifetime_expiry());
    }

    #[test]
    fn the_first_order_in_an_empty_account_gets_id_1001() {
        let mut st = empty_state();
        let doc = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("price", "7"),
                ("period", "8"),
                ("licname", "a"),
                ("ip", "192.0.2.7"),
                ("sok", "ok"),
            ],
        );
        assert!(doc.contains("<id>1001</id>"), "{doc}");
    }

    #[test]
    fn an_order_with_an_invalid_field_names_that_field_and_changes_nothing() {
        let mut st = empty_state();
        let base = [("func", "software.edit"), ("sok", "ok")];
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[
                    ("price", "999"),
                    ("period", "8"),
                    ("licname", "a"),
                    ("ip", "192.0.2.1"),
                ],
                "price",
            ),
            (
                &[
                    ("price", "7"),
                    ("period", "16"),
                    ("licname", "a"),
                    ("ip", "192.0.2.1"),
                ],
                "period",
            ),
            (
                &[
                    ("price", "7"),
                    ("period", "8"),
                    ("licname", "a"),
                    ("ip", "192.0.2.300"),
                ],
                "ip",
            ),
            (
                &[
                    ("price", "7"),
                    ("period", "8"),
                    ("licname", "  "),
                    ("ip", "192.0.2.1"),
                ],
                "licname",
            ),
            (&[], "price"),
        ];
        for (fields, object) in cases {
            let mut all = base.to_vec();
            all.extend_from_slice(fields);
            let doc = call(&mut st, &all);
            assert!(
                doc.contains(&format!("<error type=\"value\" object=\"{object}\"")),
                "{object}: {doc}"
            );
        }
        assert!(st.licenses.is_empty());
        assert_eq!(st.paid_total, 0);
    }

    #[test]
    fn an_order_without_sok_only_returns_the_form() {
        let mut st = empty_state();
        let doc = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("price", "7"),
                ("period", "8"),
                ("licname", "a"),
                ("ip", "192.0.2.7"),
            ],
        );
        assert!(!doc.contains("<ok/>"), "{doc}");
        assert!(st.licenses.is_empty());
    }

    #[test]
    fn the_ip_may_change_once_per_calendar_month() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 7, 1), 2));
        let change = |st: &mut State, ip: &str, on: NaiveDate| {
            let all = [
                AUTH,
                ("func", "software.edit"),
                ("elid", "1001"),
                ("ip", ip),
                ("sok", "ok"),
            ];
            st.process(&params(&all), on, Instant::now())
        };
        assert!(change(&mut st, "192.0.2.1", d(2024, 6, 3)).contains("<ok/>"));
        assert_eq!(st.licenses[&1001].last_ip_change, Some(d(2024, 6, 3)));
        let refused = change(&mut st, "192.0.2.2", d(2024, 6, 30));
        assert!(
            refused.contains("<error type=\"value\" object=\"ip\""),
            "{refused}"
        );
        assert!(
            refused.contains("<param name=\"object\" type=\"msg\">ip</param>"),
            "{refused}"
        );
        assert!(
            refused.contains("<param name=\"value\">192.0.2.2</param>"),
            "{refused}"
        );
        assert!(
            refused.contains("The IP address can be changed only once a month"),
            "{refused}"
        );
        assert_eq!(st.licenses[&1001].ip, "192.0.2.1");
        // Sending the current address again is not a change.
        assert!(change(&mut st, "192.0.2.1", d(2024, 6, 30)).contains("<ok/>"));
        assert!(change(&mut st, "192.0.2.2", d(2024, 7, 1)).contains("<ok/>"));
        assert_eq!(st.licenses[&1001].ip, "192.0.2.2");
    }

    #[test]
    fn changing_only_the_name_leaves_the_ip_and_its_monthly_allowance_alone() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 7, 1), 2));
        let doc = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("elid", "1001"),
                ("licname", "renamed"),
                ("sok", "ok"),
            ],
        );
        assert!(doc.contains("<ok/>"), "{doc}");
        let l = &st.licenses[&1001];
        assert_eq!((l.licname.as_str(), l.last_ip_change), ("renamed", None));
        let bad = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("elid", "1001"),
                ("licname", "x"),
                ("ip", "nope"),
                ("sok", "ok"),
            ],
        );
        assert!(bad.contains("object=\"ip\""), "{bad}");
        assert_eq!(
            st.licenses[&1001].licname, "renamed",
            "a refused edit changes nothing"
        );
    }

    #[test]
    fn a_deleted_license_cannot_be_edited_but_can_be_viewed() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 7, 1), 4));
        let doc = call(
            &mut st,
            &[
                ("func", "software.edit"),
                ("elid", "1001"),
                ("licname", "x"),
                ("sok", "ok"),
            ],
        );
        assert!(
            doc.contains("<error type=\"missed\" object=\"elid\""),
            "{doc}"
        );
        let view = call(&mut st, &[("func", "software.edit"), ("elid", "1001")]);
        assert!(
            view.contains("<id>1001</id>") && view.contains("<status>4</status>"),
            "{view}"
        );
    }

    #[test]
    fn licinfo_refuses_an_ip_already_licensed_for_that_product() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 7, 1), 2));
        let ip = st.licenses[&1001].ip.clone();
        let taken = call(
            &mut st,
            &[
                ("func", "software.licinfo"),
                ("price", "7"),
                ("period", "8"),
                ("ip", &ip),
                ("sok", "ok"),
            ],
        );
        assert!(
            taken.contains("<error type=\"exists\" object=\"ip\""),
            "{taken}"
        );
        let other = call(
            &mut st,
            &[
                ("func", "software.licinfo"),
                ("price", "11"),
                ("period", "16"),
                ("ip", &ip),
                ("sok", "ok"),
            ],
        );
        assert!(
            other.contains("<ok/>") && other.contains(&format!("<ip>{ip}</ip>")),
            "{other}"
        );
        let bad = call(
            &mut st,
            &[
                ("func", "software.licinfo"),
                ("price", "11"),
                ("period", "8"),
                ("ip", &ip),
                ("sok", "ok"),
            ],
        );
        assert!(bad.contains("object=\"period\""), "{bad}");
        assert_eq!(st.licenses.len(), 1);
    }

    #[test]
    fn an_unknown_function_is_missed_func() {
        let mut st = empty_state();
        let doc = call(&mut st, &[("func", "soft.delete")]);
        assert!(
            doc.contains("<error type=\"missed\" object=\"func\""),
            "{doc}"
        );
        let none = call(&mut st, &[]);
        assert!(none.contains("object=\"func\""), "{none}");
    }

    #[test]
    fn authinfo_splits_at_the_first_colon() {
        let cfg = SimConfig {
            licenses: 0,
            password: "pa:ss".to_owned(),
            ..SimConfig::default()
        };
        let mut st = State::new(&cfg, today(), 1);
        let ok = st.process(
            &params(&[("authinfo", "demo:pa:ss"), ("func", "software")]),
            today(),
            Instant::now(),
        );
        assert!(!ok.contains("<error"), "{ok}");
        let bad = st.process(
            &params(&[("authinfo", "demo"), ("func", "software")]),
            today(),
            Instant::now(),
        );
        assert!(bad.contains("<doc><authfail/></doc>"), "{bad}");
    }

    #[test]
    fn ten_bad_logins_lock_out_even_the_right_password() {
        let mut st = empty_state();
        let with = |st: &mut State, ai: &str| {
            st.process(
                &params(&[("authinfo", ai), ("func", "software")]),
                today(),
                Instant::now(),
            )
        };
        // BILLmanager 4 says only `<authfail/>`, bad password and lockout alike.
        for _ in 0..9 {
            assert!(with(&mut st, "demo:wrong").contains("<authfail/>"));
        }
        assert!(
            !with(&mut st, "demo:demo-password").contains("authfail"),
            "a success resets the count"
        );
        for _ in 0..10 {
            assert!(with(&mut st, "demo:wrong").contains("<authfail/>"));
        }
        assert!(st.locked);
        let locked = with(&mut st, "demo:demo-password");
        assert!(locked.contains("<authfail/>"), "{locked}");
        let locked = st.process(
            &params(&[
                ("func", "auth"),
                ("username", "demo"),
                ("password", "demo-password"),
            ]),
            today(),
            Instant::now(),
        );
        assert!(locked.contains("<authfail/>"), "{locked}");
        assert_eq!(st.login_failures, 21);
    }

    #[test]
    fn a_session_lives_until_its_ttl_passes_without_requests() {
        let cfg = SimConfig {
            licenses: 1,
            session_ttl: Duration::from_secs(60),
            ..SimConfig::default()
        };
        let mut st = State::new(&cfg, today(), 1);
        let t0 = Instant::now();
        let login = st.process(
            &params(&[
                ("func", "auth"),
                ("username", "demo"),
                ("password", "demo-password"),
            ]),
            today(),
            t0,
        );
        let sid = login
            .split("<auth id=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("an auth id");
        assert_eq!(sid.len(), 32);
        let list = |st: &mut State, at: Instant| {
            st.process(&params(&[("auth", sid), ("func", "software")]), today(), at)
        };
        assert!(list(&mut st, t0 + Duration::from_secs(50)).contains("<elem>"));
        assert!(
            list(&mut st, t0 + Duration::from_secs(100)).contains("<elem>"),
            "the TTL restarts at each request"
        );
        let expired = list(&mut st, t0 + Duration::from_secs(161));
        assert!(expired.contains("<error type=\"access\""), "{expired}");
        assert!(list(&mut st, t0 + Duration::from_secs(162)).contains("<error type=\"access\""));
    }

    #[test]
    fn missing_or_bogus_credentials_get_the_access_error() {
        let mut st = empty_state();
        for p in [
            vec![("func", "software")],
            vec![("func", "software"), ("auth", "deadbeef")],
        ] {
            let doc = st.process(&params(&p), today(), Instant::now());
            assert!(
                doc.contains("<error type=\"access\" lang=\"en\"><msg>Insufficient privileges"),
                "{doc}"
            );
        }
        assert_eq!(st.login_failures, 0);
    }

    #[test]
    fn no_answer_ever_echoes_the_password() {
        let mut st = empty_state();
        put(&mut st, lic(1001, 7, 8, d(2024, 7, 1), 2));
        let canary = "canary-Pw-4711";
        for p in [
            vec![("authinfo", "demo:canary-Pw-4711"), ("func", "software")],
            vec![("func", "auth"), ("username", "demo"), ("password", canary)],
            vec![
                ("authinfo", "demo:demo-password"),
                ("func", "software"),
                ("password", canary),
            ],
            vec![
                ("authinfo", "demo:demo-password"),
                ("func", "nope"),
                ("password", canary),
            ],
        ] {
            let doc = st.process(&params(&p), today(), Instant::now());
            assert!(
                !doc.contains("demo-password") && !doc.contains(canary),
                "{doc}"
            );
        }
    }

    #[test]
    fn faults_match_by_func_and_elid_and_count_down() {
        let mut st = empty_state();
        st.faults.push(Fault {
            func: Some("software.period".into()),
            elid: Some(7),
            kind: FaultKind::DropAfter,
            times: Some(2),
        });
        st.faults.push(Fault {
            func: None,
            elid: None,
            kind: FaultKind::EmptyBody,
            times: None,
        });
        assert!(matches!(
            st.take_fault("software.period", Some(7)),
            Some(FaultKind::DropAfter)
        ));
        assert!(matches!(
            st.take_fault("software.period", Some(8)),
            Some(FaultKind::EmptyBody)
        ));
        assert!(matches!(
            st.take_fault("software.period", Some(7)),
            Some(FaultKind::DropAfter)
        ));
        assert!(matches!(
            st.take_fault("software.period", Some(7)),
            Some(FaultKind::EmptyBody)
        ));
        assert_eq!(st.faults.len(), 1);
        st.faults.push(Fault {
            func: None,
            elid: None,
            kind: FaultKind::Html200,
            times: Some(0),
        });
        st.faults.remove(0);
        assert!(
            st.take_fault("software", None).is_none(),
            "times = 0 never fires"
        );
    }

    #[test]
    fn hostile_text_is_escaped_in_lists() {
        let mut st = empty_state();
        let mut l = lic(1001, 7, 8, d(2024, 7, 1), 2);
        l.licname = "</licname><status>9</status>\u{0}".to_owned();
        put(&mut st, l);
        let doc = call(&mut st, &[("func", "software")]);
        assert!(
            doc.contains(
                "<licname>&lt;/licname&gt;&lt;status&gt;9&lt;/status&gt;\u{FFFD}</licname>"
            ),
            "{doc}"
        );
    }
}
