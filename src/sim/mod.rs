//! A faithful, stateful simulator of the BILLmanager license API, in either generation
//! ([`SimApi::Billmgr4`] or [`SimApi::Billmgr5`] for BILLmanager 5/6, chosen at start), served
//! over real HTTP on loopback, with fault injection and a ledger of paid calls.
//!
//! Owns: the public simulator API ([`start`], [`SimHandle`], [`SimConfig`], [`Fault`]), the
//! wire behaviour of `software`, `software.filter`, `software.edit`, `software.licinfo`,
//! `software.period` (BILLmanager 4), of `soft`, `soft.edit`, `soft.order.param`,
//! `soft.checkip`, `service.prolong` (BILLmanager 5/6) and of `auth` (both), and a JSON control
//! API under `/_sim/` for when it runs as a separate process (`licrenew sim`). A simulator
//! speaks one generation only: the other's functions answer `missed`/`func`.
//!
//! Must not: import anything from the rest of the crate or parse XML. It is the independent
//! witness the client is tested against; a parser or catalog shared with the client would
//! make a shared bug invisible. It keeps its own product table ([`catalog`]) and only
//! *generates* XML ([`xml`]).
//!
//! Layout: `catalog` (v4 product/period ids and the 5/6 tariff table), `sample` (seeded sample
//! licenses), `xml` (document writer), `state` (the world, auth and the v4 business rules,
//! synchronous) with `state/billmgr5.rs` (the 5/6 functions), `server` (hyper, faults, control
//! API).

mod catalog;
mod sample;
mod server;
mod state;
mod xml;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use state::State;

/// Which BILLmanager generation the simulator speaks (see billmgr-api.md §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimApi {
    /// The original ordering guide: `software*`, product and period *ids*, at
    /// `/manager/billmgr`.
    #[default]
    Billmgr4,
    /// BILLmanager 5/6: `soft*` and `service.prolong`, tariff ids and periods in *months*,
    /// paging, nested answers, at `/billmgr`.
    Billmgr5,
}

/// How to build the simulated account.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The API generation spoken. Default [`SimApi::Billmgr4`].
    pub api: SimApi,
    /// How many sample licenses to generate (ids from 1001). Default 25.
    pub licenses: usize,
    /// Seed of the deterministic sample generator. Default 1.
    pub seed: u64,
    /// The account's user name. Default `demo`.
    pub username: String,
    /// The account's password. Default `demo-password`.
    pub password: String,
    /// A session expires this long after its last request. Default 1 h.
    pub session_ttl: Duration,
    /// BILLmanager 5/6 list rows without `pricelist_id`: the tariff only by its display name,
    /// its id only in the license's form (`soft.edit`). Default false (name and id).
    pub rows_without_pricelist_id: bool,
    /// The account's balance in cents (BILLmanager 5/6 `whoami`). Default 1,000,000.00 EUR.
    pub balance_cents: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            api: SimApi::Billmgr4,
            licenses: 25,
            seed: 1,
            username: "demo".to_owned(),
            password: "demo-password".to_owned(),
            session_ttl: Duration::from_secs(3600),
            rows_without_pricelist_id: false,
            balance_cents: 100_000_000,
        }
    }
}

/// One license as the simulator stores it. The meaning of `price` and `period` depends on the
/// simulator's [`SimApi`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLicense {
    pub id: i64,
    pub licname: String,
    pub ip: String,
    /// BILLmanager 4: product id (`price` of the ordering guide). BILLmanager 5/6: tariff id
    /// (`pricelist`, e.g. 55227 for the simulator's ISPmanager 6 Lite).
    pub price: i64,
    /// BILLmanager 4: period id (not months). BILLmanager 5/6: months, `-100` = trial.
    pub period: i64,
    pub expiredate: NaiveDate,
    /// 1 ordered, 2 active, 3 suspended, 4 deleted, 5 processing.
    pub status: u8,
    /// The day of the last IP change; one change per calendar month is allowed.
    pub last_ip_change: Option<NaiveDate>,
    /// BILLmanager 5/6 server-side automatic renewal, in months; `None` = off. Only shown,
    /// never acted on (the simulator never charges on its own); always `None` for BILLmanager 4.
    #[serde(default)]
    pub autoprolong: Option<u32>,
}

/// An injected fault. `func`/`elid` `None` match any request; `times` `None` = forever,
/// `Some(n)` = the next `n` matching requests only. The first matching fault wins.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub func: Option<String>,
    pub elid: Option<i64>,
    pub kind: FaultKind,
    pub times: Option<u32>,
}

/// What an injected fault does. "Apply" means the request is processed and its change lands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Sleep, then process normally (the change lands after the delay even if the client gave up).
    Delay { ms: u64 },
    /// Process (apply) first, then sleep before answering.
    DelayAfter { ms: u64 },
    /// Answer this HTTP status with a small HTML body; nothing applied.
    Http { status: u16 },
    /// Close the connection without answering; nothing applied.
    DropBefore,
    /// Apply, then close the connection without answering.
    DropAfter,
    /// Apply, answer 200 with text that is not XML.
    Malformed,
    /// Apply, answer 200 with the first half of the real document.
    Truncated,
    /// Nothing applied; 200 with an HTML error page.
    Html200,
    /// Nothing applied; 200 with an empty body.
    EmptyBody,
    /// Nothing applied; 200 with this `<error>` document.
    ErrorDoc {
        r#type: String,
        object: Option<String>,
        msg: String,
    },
    /// Invalidate every session, then process normally.
    SessionExpired,
    /// Apply, then send the real document a few bytes every `chunk_ms`.
    SlowDrip { chunk_ms: u64 },
    /// Nothing applied; 200 with a well-formed `<doc>` padded with `bytes` of noise rows.
    Huge { bytes: usize },
    /// Apply, then answer the real document with this `<error>` added beside its `<ok/>` (or
    /// its new expiry): a contradictory answer.
    Contradictory { r#type: String, msg: String },
    /// Nothing applied; 200 with a bare `<ok/>`.
    OkNotApplied,
    /// Nothing applied; 200 with `body`, where `{authinfo}`, `{password}` (its part after the
    /// first `:`) and `{auth}` (the session id) are replaced by what the request sent: a
    /// hostile server echoing credentials anywhere in its answer.
    Echo { body: String },
    /// Lets the first `skip` matching requests through untouched, then acts as `then` (for
    /// "the re-read after the paid call fails" while the one before it works).
    After { skip: u32, then: Box<FaultKind> },
    /// Nothing applied; 200 with a `newexpiredate` a month after the license's expiry and no
    /// `<ok/>`.
    NewExpiryNotApplied,
}

/// One request as the simulator saw it (control-API requests under `/_sim/` excluded).
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, so tests can prove credentials never travel in the URL.
    pub query: String,
    /// `func` after merging query and body (empty if none).
    pub func: String,
    /// The decoded form body, in order.
    pub form: Vec<(String, String)>,
}

/// State shared by the handle, the accept loop and every connection.
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Poisoning cannot leave the state half-written in a way worse than a test failure,
    /// so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn today(&self) -> NaiveDate {
        let offset = self.lock().day_offset;
        shift_days(Utc::now().date_naive(), offset)
    }
}

fn shift_days(d: NaiveDate, days: i64) -> NaiveDate {
    d.checked_add_signed(chrono::TimeDelta::days(days))
        .unwrap_or(d)
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    api: SimApi,
    stop: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

/// A running simulator. Cheap to clone; the server stops when [`SimHandle::shutdown`] is
/// called or the last clone is dropped.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Binds `listen` (use port 0 for an ephemeral port) and starts serving.
pub async fn start(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let today = Utc::now().date_naive();
    let entropy = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(addr.port()).rotate_left(40);
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new(&cfg, today, entropy)),
    });
    let (stop, stop_rx) = watch::channel(false);
    let accept_task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared), stop_rx));
    Ok(SimHandle {
        inner: Arc::new(Inner {
            shared,
            addr,
            api: cfg.api,
            stop,
            accept_task: Mutex::new(Some(accept_task)),
        }),
    })
}

/// Starts the simulator, logs its URL and serves until ctrl-c.
pub async fn run_forever(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<()> {
    let h = start(listen, cfg).await?;
    if !listen.ip().is_loopback() {
        tracing::warn!(event = "sim", %listen, "simulator listening beyond loopback; its /_sim/ control API has no authentication");
    }
    tracing::info!(event = "sim", url = %h.url(), "simulator listening");
    tokio::signal::ctrl_c().await?;
    h.shutdown().await;
    Ok(())
}

impl SimHandle {
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.shared.lock()
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ADDR/manager/billmgr` for BILLmanager 4, `http://ADDR/billmgr` for 5/6 (any
    /// path outside `/_sim/` is served the same way).
    pub fn url(&self) -> String {
        match self.inner.api {
            SimApi::Billmgr4 => format!("http://{}/manager/billmgr", self.inner.addr),
            SimApi::Billmgr5 => format!("http://{}/billmgr", self.inner.addr),
        }
    }

    /// The API generation this simulator speaks.
    pub fn api(&self) -> SimApi {
        self.inner.api
    }

    pub fn add_fault(&self, f: Fault) {
        self.state().faults.push(f);
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every license, by id.
    pub fn licenses(&self) -> Vec<SimLicense> {
        self.state().licenses.values().cloned().collect()
    }

    pub fn license(&self, id: i64) -> Option<SimLicense> {
        self.state().licenses.get(&id).cloned()
    }

    /// Inserts or replaces the license with `l.id`.
    pub fn upsert_license(&self, l: SimLicense) {
        self.state().licenses.insert(l.id, l);
    }

    /// Leaves `field` out of license `elid` wherever the simulator writes it (lists and views):
    /// a row without `expiredate`, say.
    pub fn hide_field(&self, elid: i64, field: &str) {
        self.state().hidden.push((elid, field.to_owned()));
    }

    /// Sets (or clears) the BILLmanager 6 `special_status` of a license.
    pub fn set_special_status(&self, elid: i64, status: Option<&str>) {
        let mut st = self.state();
        match status {
            Some(s) => st.special.insert(elid, s.to_owned()),
            None => st.special.remove(&elid),
        };
    }

    /// Lists without `pricelist_id` from now on (or with it again).
    pub fn set_rows_without_pricelist_id(&self, on: bool) {
        self.state().rows_without_pricelist_id = on;
    }

    /// Names tariffs in 5/6 lists as "NAME SUFFIX" (a billing's own wording, matching no
    /// catalog name): only the license's form then tells the tariff.
    pub fn set_tariff_display_suffix(&self, suffix: &'static str) {
        self.state().tariff_suffix = suffix;
    }

    /// The account's balance in cents (5/6).
    pub fn balance(&self) -> i64 {
        self.state().balance
    }

    pub fn set_balance(&self, cents: i64) {
        self.state().balance = cents;
    }

    /// Saves a 5/6 list filter for `user`, as the panel would: later `soft` lists show only
    /// rows whose `field` equals `value`, until the filter is reset.
    pub fn save_list_filter(&self, user: &str, field: &str, value: &str) {
        self.state()
            .saved_filters
            .entry(user.to_owned())
            .or_default()
            .push((field.to_owned(), value.to_owned()));
    }

    /// Removes one license (the account no longer has it: `missed`).
    pub fn remove_license(&self, elid: i64) -> Option<SimLicense> {
        self.state().licenses.remove(&elid)
    }

    pub fn remove_all_licenses(&self) {
        self.state().licenses.clear();
    }

    /// The simulated date: the real UTC date plus the offset set by [`SimHandle::set_today`].
    pub fn today(&self) -> NaiveDate {
        self.inner.shared.today()
    }

    /// Moves the simulated date; the offset keeps running with the real clock after that.
    pub fn set_today(&self, d: NaiveDate) {
        let real = Utc::now().date_naive();
        self.state().day_offset = (d - real).num_days();
    }

    /// Invalidates every session; the next `auth=SID` call gets the access error.
    pub fn expire_sessions(&self) {
        self.state().expire_sessions();
    }

    /// Successful renewals applied to license `elid`.
    pub fn paid_calls(&self, elid: i64) -> u32 {
        self.state().paid_by_elid.get(&elid).copied().unwrap_or(0)
    }

    /// Renewals plus orders applied.
    pub fn paid_calls_total(&self) -> u32 {
        self.state().paid_total
    }

    /// Orders and renewals put into the cart unpaid (BILLmanager 5/6 `clicked_button=basket`
    /// or an order without `skipbasket=on`). Nothing is created, extended or paid for them; a
    /// client must keep this at 0.
    pub fn cart_calls(&self) -> u32 {
        self.state().cart_calls
    }

    /// `(elid, expiry before the renewal, count)`, sorted; a count above 1 is a double payment.
    pub fn renewals_by_expiry(&self) -> Vec<(i64, NaiveDate, u32)> {
        self.state()
            .renewals_by_expiry
            .iter()
            .map(|(&(id, d), &n)| (id, d, n))
            .collect()
    }

    /// Every BILLmanager request seen (the newest 100,000), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.iter().cloned().collect()
    }

    /// Refused logins (bad password, and any login while locked out).
    pub fn login_failures(&self) -> u32 {
        self.state().login_failures
    }

    /// Stops accepting connections and asks open ones to close after their in-flight request.
    pub async fn shutdown(self) {
        self.inner.stop.send_replace(true);
        let task = self
            .inner
            .accept_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
