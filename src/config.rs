//! The config file (TOML, through the `config` crate) plus `LICRENEW__SECTION__KEY` env
//! overrides → validated [`Settings`].
//!
//! Owns: strict keys (unknown keys are errors), paths resolved against the config file's folder,
//! the password as a [`SecretString`] (from `password`, `password_file` or a systemd credential),
//! and errors that name the file and the key. Must not panic, touch the network or the database,
//! or ever put the password in an error.

use crate::catalog::Catalog;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The database when `[database] url` is not set, whoever starts licrenew.
pub const DEFAULT_DATABASE: &str = "/var/lib/licrenew/licrenew.db";

/// Where the state lives: a SQLite file (the default) or a PostgreSQL database shared by a
/// leader and its standbys. Shown (Display, Debug) without the password of a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseSpec {
    Sqlite(PathBuf),
    /// A `postgres://` URL (may hold a password: never shown as is).
    Postgres(String),
}

impl DatabaseSpec {
    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DatabaseSpec::Sqlite(p) => Some(p),
            DatabaseSpec::Postgres(_) => None,
        }
    }

    /// The PostgreSQL URL (with its password: for connecting only).
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            DatabaseSpec::Postgres(u) => Some(u),
            DatabaseSpec::Sqlite(_) => None,
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseSpec::Sqlite(_) => "sqlite",
            DatabaseSpec::Postgres(_) => "postgres",
        }
    }

    /// `postgres://…` (or `postgresql://`), `sqlite://PATH`, `sqlite:PATH` or a plain path
    /// (made absolute by `resolve`). The error never quotes a password.
    pub fn parse(u: &str, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<DatabaseSpec, String> {
        if u.starts_with("postgres://") || u.starts_with("postgresql://") {
            let spec = DatabaseSpec::Postgres(u.to_owned());
            // Parsed now, so a mistake is named at start (and never with the password).
            sqlx::postgres::PgConnectOptions::from_str(u).map_err(|e| {
                format!(
                    "not a PostgreSQL URL ({spec}): {}",
                    redact_url_error(&e.to_string())
                )
            })?;
            return Ok(spec);
        }
        let path = u
            .strip_prefix("sqlite://")
            .or_else(|| u.strip_prefix("sqlite:"))
            .unwrap_or(u);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err("names no file".into());
        }
        Ok(DatabaseSpec::Sqlite(resolve(Path::new(path))))
    }
}

/// A URL with its password replaced by `***` (and nothing else changed): the one in the
/// user part, and any query parameter whose name holds `pass` (`?password=`,
/// `sslpassword=`).
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // Rebuilt only when a parameter holds a password (else shown as written).
            if parsed
                .query_pairs()
                .any(|(k, _)| k.to_ascii_lowercase().contains("pass"))
            {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k.to_ascii_lowercase().contains("pass") {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not parseable: the host part only (no user, no query).
        Err(_) => {
            let rest = u.split_once("://").map(|(_, r)| r).unwrap_or(u);
            let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
            let host = host.split(['/', '?']).next().unwrap_or_default();
            format!("postgres://…@{host}/…")
        }
    }
}

/// A URL parser's message, which may quote the URL, reduced to what is safe to show.
fn redact_url_error(msg: &str) -> String {
    if msg.contains('@') || msg.contains("://") {
        "the URL does not parse".into()
    } else {
        msg.to_owned()
    }
}

impl std::fmt::Display for DatabaseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseSpec::Sqlite(p) => write!(f, "{}", p.display()),
            DatabaseSpec::Postgres(u) => f.write_str(&redact_url(u)),
        }
    }
}

impl std::fmt::Debug for DatabaseSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({self})", self.backend())
    }
}

/// Where earlier releases put the database when `[database] url` was not set: beside the
/// config file, or in `$STATE_DIRECTORY`. `check` warns when one of them holds a database.
pub fn old_database_locations(settings: &Settings) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = settings.file.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        out.push(dir.join("licrenew.db"));
    }
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = dirs.to_string_lossy().split(':').next()
    {
        out.push(PathBuf::from(first).join("licrenew.db"));
    }
    out.push(PathBuf::from("/etc/licrenew/licrenew.db"));
    out.retain(|p| Some(p.as_path()) != settings.database.sqlite_path());
    out.dedup();
    out
}

/// Default config path when neither `--config` nor `LICRENEW_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/licrenew/licrenew.toml";

/// A config problem. Display: `FILE: KEY: what is wrong`, or `VARIABLE: what is wrong` when
/// the value came from an environment override.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub msg: String,
    /// The `LICRENEW__…` variable the faulty value came from.
    pub env_var: Option<String>,
    /// 1-based line of the key in the file, when found.
    pub line: Option<u32>,
    /// More problems found in the same run (`check` names them all).
    pub also: Box<[ConfigError]>,
}

impl ConfigError {
    pub fn new(file: &Path, key: Option<&str>, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            key: key.map(str::to_owned),
            msg: msg.into(),
            env_var: None,
            line: None,
            also: Box::default(),
        }
    }

    /// The first of `errors`, carrying the others. `errors` must not be empty.
    pub fn all(mut errors: Vec<ConfigError>) -> ConfigError {
        let mut first = errors.remove(0);
        let mut also = std::mem::take(&mut first.also).into_vec();
        also.extend(errors);
        first.also = also.into_boxed_slice();
        first
    }

    /// Every problem: this one and those found with it.
    pub fn each(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    fn render(&self) -> String {
        self.each()
            .map(ConfigError::render_one)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn render_one(&self) -> String {
        let file = match self.line {
            Some(l) => format!("{}:{l}", self.file.display()),
            None => self.file.display().to_string(),
        };
        match (&self.env_var, &self.key) {
            (Some(var), _) => format!("{var} (environment override): {}", self.msg),
            (None, Some(k)) => format!("{file}: {k}: {}", self.msg),
            (None, None) => format!("{file}: {}", self.msg),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw shape of the file. Every section and key is documented in config/licrenew.example.toml.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    billmgr: Option<RawBillmgr>,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    renewal: RawRenewal,
    #[serde(default)]
    policies: RawPolicies,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    alerts: RawAlerts,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Address for `/metrics` and `/healthz`, e.g. "127.0.0.1:9187". Default: off.
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    /// URL receiving a JSON POST per delivery. Default: none.
    webhook: Option<String>,
    /// File of `Name: value` lines sent as webhook headers (e.g. `Authorization`).
    webhook_headers_file: Option<PathBuf>,
    /// Program (and arguments, split like a shell, run without one) given each delivery as
    /// JSON on stdin. Default: none.
    command: Option<String>,
    /// Alert when a license expires within this and nothing renewed it (or nothing will).
    #[serde(default = "default_alert_before", with = "humantime_serde")]
    alert_before: Duration,
    /// Time allowed for one delivery.
    #[serde(default = "default_alert_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// First retry delay after a failed delivery; doubles up to 1h.
    #[serde(default = "default_alert_retry", with = "humantime_serde")]
    retry: Duration,
    /// One document per cycle holding all its alerts (default), or one delivery per alert.
    #[serde(default = "yes")]
    digest: bool,
    /// `error` (default): problems and their resolution; `renewed`: also each renewal;
    /// `all`: also a summary of every cycle.
    #[serde(default = "default_notify")]
    notify: String,
    /// The `host` field of alerts. Default: this machine's host name.
    host: Option<String>,
    email: Option<RawEmail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    /// SMTP server host name.
    server: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 without.
    port: Option<u16>,
    /// `starttls` (default), `tls` (implicit TLS) or `none` (loopback only).
    #[serde(default = "default_smtp_tls")]
    tls: String,
    from: String,
    to: Vec<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_notify() -> String {
    "error".into()
}
fn default_smtp_tls() -> String {
    "starttls".into()
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            webhook: None,
            webhook_headers_file: None,
            command: None,
            alert_before: default_alert_before(),
            timeout: default_alert_timeout(),
            retry: default_alert_retry(),
            digest: true,
            notify: default_notify(),
            host: None,
            email: None,
        }
    }
}

fn default_alert_before() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_alert_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_alert_retry() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBillmgr {
    /// Full endpoint URL, e.g. `https://my.ispsystem.com/manager/billmgr`.
    url: String,
    /// API generation: `auto` (default: detected on the first call), `billmgr4`, `billmgr5`.
    #[serde(default = "default_api")]
    api: String,
    username: String,
    password: Option<Password>,
    password_file: Option<PathBuf>,
    /// `authinfo` (default) or `session`.
    #[serde(default = "default_auth")]
    auth: String,
    /// Total time for one request, e.g. "30s". Default 30s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// Time to establish a connection. Default 10s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    /// Attempts for read calls (list, view, IP check); paid calls are never retried. Default 3.
    #[serde(default = "default_read_attempts")]
    read_attempts: u32,
    /// Allow `http://` to a host that is not this machine (the password would cross the
    /// network in clear). Default false.
    #[serde(default)]
    allow_insecure_http: bool,
    /// Largest list answer accepted, in MiB (lists are parsed as they stream in). Default 256.
    #[serde(default = "default_max_body_mib")]
    max_body_mib: u64,
    /// Largest answer to anything but a list (a view, a paid call, a login), in KiB.
    /// Default 1024.
    #[serde(default = "default_max_answer_kib")]
    max_answer_kib: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    path: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    /// PostgreSQL only: how often a standby asks for the leadership.
    #[serde(default, with = "humantime_serde")]
    standby_retry: Option<Duration>,
    /// PostgreSQL only: how often the leader checks it still leads.
    #[serde(default, with = "humantime_serde")]
    heartbeat: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "default_cron")]
    cron: String,
    #[serde(default = "default_window", with = "humantime_serde")]
    window: Duration,
    #[serde(default = "default_lookback", with = "humantime_serde")]
    lookback: Duration,
    #[serde(default = "default_jitter", with = "humantime_serde")]
    jitter: Duration,
    /// Run a cycle right after start-up, not only on the schedule. Default true.
    #[serde(default = "default_true")]
    run_at_start: bool,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            cron: default_cron(),
            window: default_window(),
            lookback: default_lookback(),
            jitter: default_jitter(),
            run_at_start: true,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRenewal {
    #[serde(default = "default_max_per_cycle")]
    max_per_cycle: u32,
    #[serde(default = "default_concurrency")]
    concurrency: u32,
    #[serde(default = "default_settle", with = "humantime_serde")]
    settle: Duration,
    /// How far below zero the balance may go, in the account's currency. Default 0.
    #[serde(default)]
    credit_limit: f64,
    /// At most this much spent on renewals in any 24 hours, in the account's currency
    /// (counted from the journal, unknown outcomes included). Default: no cap.
    max_spend_per_day: Option<f64>,
}

impl Default for RawRenewal {
    fn default() -> Self {
        RawRenewal {
            max_per_cycle: default_max_per_cycle(),
            concurrency: default_concurrency(),
            settle: default_settle(),
            credit_limit: 0.0,
            max_spend_per_day: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicies {
    #[serde(default = "default_policies_dir")]
    dir: PathBuf,
}

impl Default for RawPolicies {
    fn default() -> Self {
        RawPolicies {
            dir: default_policies_dir(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "default_log_format")]
    format: String,
    #[serde(default = "default_log_level")]
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_api() -> String {
    "auto".into()
}
fn default_auth() -> String {
    "authinfo".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_attempts() -> u32 {
    3
}
fn default_max_body_mib() -> u64 {
    256
}
fn default_max_answer_kib() -> u64 {
    1024
}
fn default_cron() -> String {
    "0 17 */6 * * *".into()
}
fn default_window() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_lookback() -> Duration {
    Duration::from_secs(31 * 86400)
}
fn default_jitter() -> Duration {
    Duration::from_secs(30)
}
fn default_max_per_cycle() -> u32 {
    20
}
fn default_concurrency() -> u32 {
    2
}
fn default_settle() -> Duration {
    Duration::from_secs(300)
}
fn default_policies_dir() -> PathBuf {
    "policies.d".into()
}
fn default_log_format() -> String {
    "auto".into()
}
fn default_log_level() -> String {
    "info".into()
}

/// A password from the file. Only strings are accepted, and a value of another type is refused
/// without echoing it (serde's default message would print it).
struct Password(String);

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const REFUSAL: &str = "must be a quoted string";
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Password;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Password, E> {
                Ok(Password(v.to_owned()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Password, E> {
                Err(E::custom(REFUSAL))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Password, E> {
                Err(E::custom(REFUSAL))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Password, E> {
                Err(E::custom(REFUSAL))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Password, E> {
                Err(E::custom(REFUSAL))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Password, A::Error> {
                Err(serde::de::Error::custom(REFUSAL))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Password, A::Error> {
                Err(serde::de::Error::custom(REFUSAL))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validated settings.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// BILLmanager 4: `software.*` functions, `price`/period ids.
    Billmgr4,
    /// BILLmanager 5/6: `soft.*`, `service.prolong`, `pricelist`/months.
    Billmgr5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// `authinfo=USER:PASSWORD` in every request body.
    Authinfo,
    /// `func=auth` once, then `auth=SESSION`.
    Session,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Pretty text when stderr is a terminal, JSON otherwise (a pipe, a file, the journal).
    Auto,
    Json,
    Pretty,
}

/// Everything the BILLmanager client needs. Debug never shows the password.
#[derive(Clone, Debug)]
pub struct BillmgrSettings {
    pub url: url::Url,
    /// The pinned API generation; `None` (`api = "auto"`) detects it on the first call.
    pub api: Option<Api>,
    pub username: String,
    /// `None` when neither `password`, `password_file` nor a systemd credential is set; commands
    /// that talk to the API refuse to start then.
    pub password: Option<SecretString>,
    pub auth: AuthMode,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub read_attempts: u32,
    /// `http://` to another host was allowed explicitly (warned at start and by `check`).
    pub allow_insecure_http: bool,
    /// Largest list answer, in bytes.
    pub max_body: u64,
    /// Largest answer to anything but a list, in bytes.
    pub max_answer: u64,
}

#[derive(Clone, Debug)]
pub struct ScheduleSettings {
    /// Six or seven fields, seconds first, UTC.
    pub cron: String,
    /// A cycle right after start-up.
    pub run_at_start: bool,
    pub window: Duration,
    pub lookback: Duration,
    pub jitter: Duration,
}

#[derive(Clone, Debug)]
pub struct RenewalSettings {
    pub max_per_cycle: u32,
    pub concurrency: u32,
    pub settle: Duration,
    /// In hundredths of the account's currency.
    pub credit_limit_cents: i64,
    /// In hundredths of the account's currency; `None` = no cap.
    pub max_spend_per_day_cents: Option<i64>,
}

/// Where alerts go and which. Any of webhook, command and email may be set; with none,
/// alerts are only logged.
#[derive(Clone, Debug)]
pub struct AlertSettings {
    pub webhook: Option<url::Url>,
    /// Extra webhook headers (values are secrets: an `Authorization` token).
    pub webhook_headers: Vec<(String, SecretString)>,
    /// Program and its arguments.
    pub command: Option<Vec<String>>,
    pub email: Option<EmailSettings>,
    pub alert_before: Duration,
    pub timeout: Duration,
    pub retry: Duration,
    pub digest: bool,
    pub notify: NotifyLevel,
    pub host: String,
}

impl NotifyLevel {
    /// As written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            NotifyLevel::Error => "error",
            NotifyLevel::Renewed => "renewed",
            NotifyLevel::All => "all",
        }
    }
}

impl AlertSettings {
    /// The configured destinations (`webhook`, `command`, `email`).
    pub fn sinks(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.webhook.is_some() {
            out.push("webhook");
        }
        if self.command.is_some() {
            out.push("command");
        }
        if self.email.is_some() {
            out.push("email");
        }
        out
    }
}

/// Which alerts are delivered (`[alerts] notify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotifyLevel {
    /// Problems (critical, warning) and their resolution.
    Error,
    /// Also each successful renewal.
    Renewed,
    /// Also a summary of every cycle.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    StartTls,
    Tls,
    None,
}

#[derive(Clone, Debug)]
pub struct EmailSettings {
    pub server: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub file: PathBuf,
    pub billmgr: BillmgrSettings,
    /// The catalog entries of the API generation in use (pinned or detected).
    pub catalog: Catalog,
    /// Every entry, both generations (for `licrenew catalog`).
    pub catalog_all: Catalog,
    /// `billmgr.api` was `auto` and the generation was detected.
    pub api_detected: bool,
    /// Environment variables that look like overrides but are not spelled `LICRENEW__…`
    /// (ignored; named in a warning).
    pub ignored_env: Vec<String>,
    /// The database: a SQLite file (default) or a PostgreSQL URL.
    pub database: DatabaseSpec,
    /// PostgreSQL: how often a standby asks for the leadership, and how often the leader
    /// checks it still holds it.
    pub standby_retry: Duration,
    pub heartbeat: Duration,
    pub schedule: ScheduleSettings,
    pub renewal: RenewalSettings,
    pub policies_dir: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `/metrics` and `/healthz` listen address; `None` = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub alerts: AlertSettings,
    /// Files read for secrets (the password, the SMTP password, webhook headers): `check`
    /// warns when group or others may read one.
    pub secret_files: Vec<PathBuf>,
    /// The config itself holds `billmgr.password`.
    pub inline_password: bool,
}

impl Settings {
    /// The advisory-lock key of `scope` (`leader`, `renew`) for this billing account: every
    /// instance configured for the same account and database competes for the same locks.
    pub fn lock_key(&self, scope: &str) -> i64 {
        crate::leader::key(scope, self.billmgr.url.as_str(), &self.billmgr.username)
    }
}

impl Settings {
    /// Switches to the generation the server speaks (detected under `api = "auto"`): its
    /// catalog, and a client built from these settings needs no second detection.
    pub fn use_generation(&mut self, api: Api) {
        self.catalog = self.catalog_all.for_api(api);
        if self.billmgr.api.is_none() {
            self.api_detected = true;
        }
        self.billmgr.api = Some(api);
    }

    /// `billmgr5 (detected)`, `billmgr4 (pinned)`, or `auto (not detected yet)`.
    pub fn api_label(&self) -> String {
        match (self.billmgr.api, self.api_detected) {
            (Some(api), true) => format!("{} (detected)", api.name()),
            (Some(api), false) => format!("{} (pinned)", api.name()),
            (None, _) => "auto (not detected yet)".into(),
        }
    }
}

impl Api {
    pub fn name(&self) -> &'static str {
        match self {
            Api::Billmgr4 => "billmgr4",
            Api::Billmgr5 => "billmgr5",
        }
    }
}

/// Parses a cron expression the way the scheduler does: six fields (seven with a year),
/// seconds first, day-of-month AND day-of-week, evaluated in UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// The next time the schedule `cron` fires after `now` (UTC); `None` for an expression that
/// never fires again or does not parse.
pub fn next_cycle(
    cron: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    parse_cron(cron)
        .ok()?
        .find_next_occurrence(&now, false)
        .ok()
}

/// Where the config file is: `--config`, else `LICRENEW_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("LICRENEW_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Loads and validates the config file with overrides from the process environment.
pub fn load(file: &Path) -> Result<Settings, ConfigError> {
    load_with_env(file, None)
}

/// Like [`load`], with an explicit environment map instead of the process environment (tests).
pub fn load_with_env(
    file: &Path,
    env: Option<std::collections::HashMap<String, String>>,
) -> Result<Settings, ConfigError> {
    if !file.exists() {
        return Err(ConfigError::new(
            file,
            None,
            "config file not found (set --config or LICRENEW_CONFIG)",
        ));
    }
    let bytes = crate::files::read_regular_file(file, MAX_CONFIG_BYTES)
        .map_err(|e| ConfigError::new(file, None, e))?;
    let text =
        String::from_utf8(bytes).map_err(|_| ConfigError::new(file, None, "not UTF-8 text"))?;
    // Overrides are matched case-sensitively: only `LICRENEW__…` counts. The `config` crate
    // would also take `licrenew__billmgr__password`; such spellings are ignored, and named.
    let map = env.unwrap_or_else(|| {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    });
    let mut ignored_env = Vec::new();
    let map: std::collections::HashMap<String, String> = map
        .into_iter()
        .filter(|(k, _)| {
            let ours = k.starts_with("LICRENEW__");
            if !ours && k.to_ascii_uppercase().starts_with("LICRENEW__") {
                ignored_env.push(k.clone());
            }
            ours
        })
        .collect();
    let envsrc = config::Environment::with_prefix("LICRENEW")
        .separator("__")
        .prefix_separator("__")
        .source(Some(map.clone().into_iter().collect()));
    let overridden: Vec<String> = map.keys().cloned().collect();
    // An error about a key an override set names the variable, not the file.
    let name_var = |mut e: ConfigError| {
        if let Some(k) = &e.key {
            let var = format!("LICRENEW__{}", k.replace('.', "__").to_ascii_uppercase());
            if overridden.contains(&var) {
                e.env_var = Some(var);
            }
        }
        e
    };
    let raw: Raw = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(envsrc)
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| with_lines(name_var(from_config_error(file, e)), &text))?;
    let mut settings = validate(file, raw).map_err(|e| {
        let mut e = with_lines(name_var(e), &text);
        e.also = std::mem::take(&mut e.also)
            .into_iter()
            .map(|x| with_lines(name_var(x), &text))
            .collect();
        e
    })?;
    ignored_env.sort();
    settings.ignored_env = ignored_env;
    Ok(settings)
}

/// The policy folder a config file names (or the default beside it), read without validating
/// the rest: lets `check` name policy mistakes next to the config's own.
pub fn policies_dir_hint(file: &Path) -> PathBuf {
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let named = crate::files::read_regular_file(file, MAX_CONFIG_BYTES)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("policies")?.get("dir")?.as_str().map(PathBuf::from));
    base.join(named.unwrap_or_else(|| PathBuf::from("policies.d")))
}

/// Sets the line of the error's key in `text`, when the key is there (not for a value that
/// came from an environment override).
fn with_lines(mut e: ConfigError, text: &str) -> ConfigError {
    if e.env_var.is_none() && e.line.is_none() {
        e.line = e
            .key
            .as_deref()
            .and_then(|k| line_of_key(text, k))
            .and_then(|l| u32::try_from(l).ok());
    }
    e
}

/// The 1-based line of `section.key` in a TOML text: the key's line inside its `[section]`,
/// else the section's header line. A plain scan, enough for the flat files licrenew reads.
pub(crate) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let (table, leaf) = match key.rsplit_once('.') {
        Some((t, l)) => (t, l),
        None => ("", key),
    };
    let mut current = String::new();
    let mut header = None;
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            current = l
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            if current == key || (current == table && header.is_none()) {
                header = Some(n + 1);
            }
            continue;
        }
        if current == table
            && let Some(rest) = l.strip_prefix(leaf)
            && rest.trim_start().starts_with('=')
        {
            return Some(n + 1);
        }
    }
    header
}

fn from_config_error(file: &Path, e: config::ConfigError) -> ConfigError {
    match e {
        config::ConfigError::FileParse { cause, .. } => {
            ConfigError::new(file, None, without_excerpt(&cause.to_string()))
        }
        config::ConfigError::At { error, key, .. } => {
            // The inner error may repeat the key; keep its own words.
            let inner = match *error {
                config::ConfigError::Message(m) => m,
                other => other.to_string(),
            };
            ConfigError::new(file, key.as_deref(), inner)
        }
        config::ConfigError::Type { key, expected, .. } => ConfigError::new(
            file,
            key.as_deref(),
            format!("wrong type, expected {expected}"),
        ),
        other => ConfigError::new(file, None, other.to_string()),
    }
}

/// A TOML syntax error without the source lines it quotes (`4 | password = "…`): the line
/// at fault may hold the password. The position (`at line 4, column 31`) and the reason stay.
fn without_excerpt(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| {
            let gutter = l.split_once('|').map(|(n, _)| n.trim());
            !l.is_empty() && !gutter.is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join(": ")
}

fn validate(file: &Path, raw: Raw) -> Result<Settings, ConfigError> {
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    let err = |key: &str, msg: String| ConfigError::new(file, Some(key), msg);

    let inline_password = raw.billmgr.as_ref().is_some_and(|b| b.password.is_some());
    let mut secret_files: Vec<PathBuf> = Vec::new();
    if let Some(b) = &raw.billmgr {
        match (&b.password, &b.password_file) {
            (None, Some(p)) => secret_files.push(resolve(&expand_credentials(p))),
            (None, None) if base.join("password").is_file() => {
                secret_files.push(base.join("password"))
            }
            _ => {}
        }
    }
    if let Some(p) = &raw.alerts.webhook_headers_file {
        secret_files.push(resolve(&expand_credentials(p)));
    }
    if let Some(p) = raw
        .alerts
        .email
        .as_ref()
        .and_then(|e| e.password_file.as_ref())
    {
        secret_files.push(resolve(&expand_credentials(p)));
    }
    let billmgr = (|| -> Result<BillmgrSettings, ConfigError> {
        let b = raw.billmgr.ok_or_else(|| {
            ConfigError::new(file, Some("billmgr"), "section [billmgr] is missing")
        })?;
        let url =
            url::Url::parse(&b.url).map_err(|e| err("billmgr.url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(
                "billmgr.url",
                "must start with https:// (or http://)".into(),
            ));
        }
        if url.scheme() == "http" && !is_loopback(&url) && !b.allow_insecure_http {
            return Err(err(
                "billmgr.url",
                "http:// to another host would send the password in clear: use https://, or set billmgr.allow_insecure_http = true".into(),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "billmgr.url",
                "must not carry credentials; use billmgr.username and billmgr.password".into(),
            ));
        }
        if url.query().is_some() {
            return Err(err(
                "billmgr.url",
                "must not carry a query string; credentials and parameters go in the POST body"
                    .into(),
            ));
        }
        let api = match b.api.as_str() {
            "auto" => None,
            "billmgr4" => Some(Api::Billmgr4),
            "billmgr5" => Some(Api::Billmgr5),
            other => {
                return Err(err(
                    "billmgr.api",
                    format!("{other:?} is not one of \"auto\", \"billmgr4\", \"billmgr5\""),
                ));
            }
        };
        let auth = match b.auth.as_str() {
            "authinfo" => AuthMode::Authinfo,
            "session" => AuthMode::Session,
            other => {
                return Err(err(
                    "billmgr.auth",
                    format!("{other:?} is not one of \"authinfo\", \"session\""),
                ));
            }
        };
        if b.username.trim().is_empty() {
            return Err(err("billmgr.username", "is empty".into()));
        }
        let password = match (b.password, b.password_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "billmgr.password_file",
                    "set either password or password_file, not both".into(),
                ));
            }
            (Some(Password(p)), None) => Some(SecretString::from(p)),
            (None, Some(path)) => Some(read_password_file(
                file,
                &resolve(&expand_credentials(&path)),
            )?),
            (None, None) => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                // systemd's LoadCredential=password:… without any key in the file.
                Some(dir) if Path::new(&dir).join("password").is_file() => {
                    Some(read_password_file(file, &Path::new(&dir).join("password"))?)
                }
                // A root shell with the packaged layout: the file the unit loads its credential
                // from (/etc/licrenew/password) sits beside the config.
                _ if base.join("password").is_file() => {
                    Some(read_password_file(file, &base.join("password"))?)
                }
                _ => None,
            },
        };
        if b.timeout.is_zero() {
            return Err(err("billmgr.timeout", "must be more than 0s".into()));
        }
        if b.read_attempts == 0 {
            return Err(err("billmgr.read_attempts", "must be at least 1".into()));
        }
        Ok(BillmgrSettings {
            url,
            api,
            username: b.username,
            password,
            auth,
            timeout: b.timeout,
            connect_timeout: b.connect_timeout,
            read_attempts: b.read_attempts,
            allow_insecure_http: b.allow_insecure_http,
            max_body: b.max_body_mib.saturating_mul(1024 * 1024),
            max_answer: b.max_answer_kib.saturating_mul(1024),
        })
    })();
    let catalog = (|| -> Result<Catalog, ConfigError> {
        let catalog = match raw.catalog.path {
            None => Catalog::builtin(),
            Some(p) => Catalog::load(&resolve(&p))
                .map_err(|e| ConfigError::new(file, Some("catalog.path"), e.to_string()))?,
        };
        Ok(catalog)
    })();
    let standby_retry = raw.database.standby_retry;
    let heartbeat = raw.database.heartbeat;
    let database = (|| -> Result<DatabaseSpec, ConfigError> {
        let database = match raw.database.url {
            Some(u) => DatabaseSpec::parse(&u, &resolve).map_err(|e| err("database.url", e))?,
            // One database wherever licrenew is started: the service, a root shell and a cron job
            // with the same config use the same file (never one beside the config, never one
            // that depends on `$STATE_DIRECTORY`).
            None => DatabaseSpec::Sqlite(PathBuf::from(DEFAULT_DATABASE)),
        };
        for (key, d) in [
            ("database.standby_retry", standby_retry),
            ("database.heartbeat", heartbeat),
        ] {
            if let Some(d) = d
                && (d < Duration::from_millis(100) || d > Duration::from_secs(60))
            {
                return Err(err(
                    key,
                    format!("{} is outside 100ms..60s", humantime::format_duration(d)),
                ));
            }
        }
        Ok(database)
    })();
    let schedule = (|| -> Result<ScheduleSettings, ConfigError> {
        let s = raw.schedule;
        if let Err(e) = parse_cron(&s.cron) {
            return Err(err(
                "schedule.cron",
                format!(
                    "{:?}: {e} (six fields, seconds first, in UTC, e.g. \"0 17 */6 * * *\")",
                    s.cron
                ),
            ));
        }
        if s.window.is_zero() {
            return Err(err("schedule.window", "must be more than 0s".into()));
        }
        Ok(ScheduleSettings {
            cron: s.cron,
            run_at_start: s.run_at_start,
            window: s.window,
            lookback: s.lookback,
            jitter: s.jitter,
        })
    })();
    let renewal = (|| -> Result<RenewalSettings, ConfigError> {
        let r = raw.renewal;
        if r.concurrency == 0 {
            return Err(err("renewal.concurrency", "must be at least 1".into()));
        }
        let cents = |key: &str, v: f64| {
            if v.is_finite() && (0.0..1e13).contains(&v) {
                Ok((v * 100.0).round() as i64)
            } else {
                Err(err(key, format!("{v} is not an amount of 0 or more")))
            }
        };
        let credit_limit_cents = cents("renewal.credit_limit", r.credit_limit)?;
        let max_spend_per_day_cents = match r.max_spend_per_day {
            None => None,
            Some(v) => Some(cents("renewal.max_spend_per_day", v)?),
        };
        Ok(RenewalSettings {
            credit_limit_cents,
            max_spend_per_day_cents,
            max_per_cycle: r.max_per_cycle,
            concurrency: r.concurrency,
            settle: r.settle,
        })
    })();
    let log = (|| -> Result<(LogFormat, String), ConfigError> {
        let log_format = match raw.log.format.as_str() {
            "auto" => LogFormat::Auto,
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(err(
                    "log.format",
                    format!("{other:?} is not one of \"auto\", \"json\", \"pretty\""),
                ));
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            return Err(err("log.level", format!("{:?}: {e}", raw.log.level)));
        }
        Ok((log_format, raw.log.level))
    })();
    let metrics_listen = (|| -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let metrics_listen = match raw.metrics.listen {
            None => None,
            Some(a) => Some(a.parse::<std::net::SocketAddr>().map_err(|e| {
                err(
                    "metrics.listen",
                    format!("{a:?} is not an address:port ({e})"),
                )
            })?),
        };
        Ok(metrics_listen)
    })();
    let alerts = (|| -> Result<AlertSettings, ConfigError> {
        let a = raw.alerts;
        if a.timeout.is_zero() {
            return Err(err("alerts.timeout", "must be more than 0s".into()));
        }
        let webhook = match a.webhook {
            None => None,
            Some(u) => {
                let url = url::Url::parse(&u)
                    .map_err(|e| err("alerts.webhook", format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(err(
                        "alerts.webhook",
                        "must be an http:// or https:// URL".into(),
                    ));
                }
                Some(url)
            }
        };
        let webhook_headers = match &a.webhook_headers_file {
            None => Vec::new(),
            Some(p) => read_headers_file(file, &resolve(&expand_credentials(p)))?,
        };
        let command = match a.command.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(err("alerts.command", "is empty".into())),
            Some(c) => {
                let mut words = shlex::split(c).ok_or_else(|| {
                    err(
                        "alerts.command",
                        "unbalanced quotes (it is split like a shell command line)".into(),
                    )
                })?;
                if words.is_empty() {
                    return Err(err("alerts.command", "is empty".into()));
                }
                words[0] = resolve_program(&base, &words[0]);
                Some(words)
            }
        };
        let notify = match a.notify.as_str() {
            "error" => NotifyLevel::Error,
            "renewed" => NotifyLevel::Renewed,
            "all" => NotifyLevel::All,
            other => {
                return Err(err(
                    "alerts.notify",
                    format!("{other:?} is not one of \"error\", \"renewed\", \"all\""),
                ));
            }
        };
        let email = match a.email {
            None => None,
            Some(e) => Some(validate_email(file, &resolve, e)?),
        };
        let host = a
            .host
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(hostname);
        Ok(AlertSettings {
            webhook,
            webhook_headers,
            command,
            email,
            alert_before: a.alert_before,
            timeout: a.timeout,
            retry: a.retry.max(Duration::from_millis(10)),
            digest: a.digest,
            notify,
            host,
        })
    })();
    // Every section is checked, so one run names every mistake (each section stops at its
    // first).
    fn keep<T>(errors: &mut Vec<ConfigError>, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| errors.push(e)).ok()
    }
    let mut errors = Vec::new();
    let parts = (
        keep(&mut errors, billmgr),
        keep(&mut errors, catalog),
        keep(&mut errors, database),
        keep(&mut errors, schedule),
        keep(&mut errors, renewal),
        keep(&mut errors, log),
        keep(&mut errors, metrics_listen),
        keep(&mut errors, alerts),
    );
    let (
        Some(billmgr),
        Some(catalog),
        Some(database),
        Some(schedule),
        Some(renewal),
        Some((log_format, log_level)),
        Some(metrics_listen),
        Some(alerts),
    ) = parts
    else {
        return Err(ConfigError::all(errors));
    };
    let api = billmgr.api;
    Ok(Settings {
        file: file.to_owned(),
        billmgr,
        // Under `auto` the catalog of 5/6 until the generation is known (see
        // `Settings::use_generation`); every product name exists in both.
        catalog: catalog.for_api(api.unwrap_or(Api::Billmgr5)),
        catalog_all: catalog,
        api_detected: false,
        ignored_env: Vec::new(),
        database,
        standby_retry: standby_retry.unwrap_or(Duration::from_secs(5)),
        heartbeat: heartbeat.unwrap_or(Duration::from_secs(5)),
        schedule,
        renewal,
        policies_dir: resolve(&raw.policies.dir),
        log_format,
        log_level,
        metrics_listen,
        alerts,
        secret_files,
        inline_password,
    })
}

/// `password_file = "$CREDENTIALS_DIRECTORY/password"` works as written in a unit file.
fn expand_credentials(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    for var in ["$CREDENTIALS_DIRECTORY", "${CREDENTIALS_DIRECTORY}"] {
        if let Some(rest) = s.strip_prefix(var)
            && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
        {
            return PathBuf::from(format!("{}{rest}", Path::new(&dir).display()));
        }
    }
    p.to_owned()
}

/// Whether the URL's host is this machine (127.0.0.0/8, ::1, localhost).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl BillmgrSettings {
    /// Plain HTTP to another machine, allowed by `allow_insecure_http`.
    pub fn insecure(&self) -> bool {
        self.url.scheme() == "http" && !is_loopback(&self.url)
    }
}

/// The largest password file accepted, in bytes.
pub const MAX_PASSWORD_BYTES: u64 = 4096;
/// The largest config or catalog file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

fn read_password_file(file: &Path, path: &Path) -> Result<SecretString, ConfigError> {
    read_secret_file(file, "billmgr.password_file", path)
}

fn read_secret_file(file: &Path, key: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let bytes = crate::files::read_regular_file(path, MAX_PASSWORD_BYTES)
        .map_err(|e| ConfigError::new(file, Some(key), format!("{}: {e}", path.display())))?;
    // Never echo the bytes: the message says what is wrong, not what is there.
    let text = String::from_utf8(bytes).map_err(|_| {
        ConfigError::new(
            file,
            Some(key),
            format!("{}: not UTF-8 text", path.display()),
        )
    })?;
    let pw = text.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        return Err(ConfigError::new(
            file,
            Some(key),
            format!("{} is empty", path.display()),
        ));
    }
    Ok(SecretString::from(pw.to_owned()))
}

/// `Name: value` lines (blank lines and `#` comments skipped); the values are never echoed.
fn read_headers_file(file: &Path, path: &Path) -> Result<Vec<(String, SecretString)>, ConfigError> {
    let key = "alerts.webhook_headers_file";
    let text = read_secret_file(file, key, path)?;
    let mut out = Vec::new();
    for (n, line) in secrecy::ExposeSecret::expose_secret(&text)
        .lines()
        .enumerate()
    {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            ConfigError::new(
                file,
                Some(key),
                format!("{} line {}: {why}", path.display(), n + 1),
            )
        };
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("not a `Name: value` header"))?;
        let name = name.trim();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad("not a valid header name"));
        }
        if reqwest::header::HeaderValue::from_str(value.trim()).is_err() {
            return Err(bad("the value has characters a header cannot carry"));
        }
        out.push((name.to_owned(), SecretString::from(value.trim().to_owned())));
    }
    Ok(out)
}

/// The alert command's program: a relative name found beside the config is taken from there,
/// one with a slash is relative to the config's directory, a bare name is searched in `PATH`
/// (left bare when not found, for `check` to report).
fn resolve_program(base: &Path, word: &str) -> String {
    let p = Path::new(word);
    if p.is_absolute() {
        return word.to_owned();
    }
    // Absolute, so `check` and the service find it whatever their working directory.
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
    let beside = base.join(p);
    if word.contains('/') || beside.is_file() {
        return beside.to_string_lossy().into_owned();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| word.to_owned())
}

/// This machine's host name (`/proc/sys/kernel/hostname`), else `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn validate_email(
    file: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    e: RawEmail,
) -> Result<EmailSettings, ConfigError> {
    let err = |key: &str, msg: String| ConfigError::new(file, Some(key), msg);
    if e.server.trim().is_empty() {
        return Err(err("alerts.email.server", "is empty".into()));
    }
    let tls = match e.tls.as_str() {
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        other => {
            return Err(err(
                "alerts.email.tls",
                format!("{other:?} is not one of \"starttls\", \"tls\", \"none\""),
            ));
        }
    };
    let loopback = e.server == "localhost"
        || e.server
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if tls == SmtpTls::None && !loopback {
        return Err(err(
            "alerts.email.tls",
            "\"none\" sends mail (and any SMTP password) in clear: only for a server on loopback"
                .into(),
        ));
    }
    let mailbox = |key: &str, v: &str| {
        v.parse::<lettre::message::Mailbox>()
            .map(|_| v.to_owned())
            .map_err(|x| err(key, format!("{v:?} is not a mail address: {x}")))
    };
    let from = mailbox("alerts.email.from", &e.from)?;
    if e.to.is_empty() {
        return Err(err("alerts.email.to", "names no recipient".into()));
    }
    let to =
        e.to.iter()
            .map(|t| mailbox("alerts.email.to", t))
            .collect::<Result<Vec<_>, _>>()?;
    let password = match &e.password_file {
        None => None,
        Some(p) => Some(read_secret_file(
            file,
            "alerts.email.password_file",
            &resolve(&expand_credentials(p)),
        )?),
    };
    if password.is_some() != e.username.is_some() {
        return Err(err(
            "alerts.email.username",
            "set both username and password_file, or neither".into(),
        ));
    }
    Ok(EmailSettings {
        server: e.server,
        port: e.port.unwrap_or(match tls {
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }),
        tls,
        from,
        to,
        username: e.username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    const MINIMAL: &str = r#"
[billmgr]
url = "https://billing.example.com/manager/billmgr"
username = "reseller"
password = "canary-Zq8#pw"
"#;

    #[test]
    fn a_minimal_file_gets_documented_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(dir.path(), "licrenew.toml", MINIMAL);
        let s = load_with_env(&f, Some(HashMap::new())).expect("valid");
        assert_eq!(s.billmgr.api, None, "auto-detected by default");
        assert_eq!(s.billmgr.auth, AuthMode::Authinfo);
        assert_eq!(s.billmgr.timeout, Duration::from_secs(30));
        assert_eq!(
            s.database,
            DatabaseSpec::Sqlite(PathBuf::from(DEFAULT_DATABASE))
        );
        assert_eq!(s.policies_dir, dir.path().join("policies.d"));
        assert_eq!(s.renewal.max_per_cycle, 20);
        assert_eq!(s.renewal.settle, Duration::from_secs(300));
        assert_eq!(
            s.catalog.products.len(),
            6,
            "the 5/6 catalog until detection"
        );
        assert_eq!(
            s.billmgr
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            Some("canary-Zq8#pw".into())
        );
        assert!(
            !format!("{s:?}").contains("canary-Zq8"),
            "Debug hides the password"
        );
    }

    #[test]
    fn without_a_password_key_the_file_beside_the_config_is_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "licrenew.toml",
            &MINIMAL.replace("password = \"canary-Zq8#pw\"\n", ""),
        );
        let none = load_with_env(&f, Some(HashMap::new())).expect("valid");
        write(dir.path(), "password", "canary-beside\n");
        let s = load_with_env(&f, Some(HashMap::new())).expect("valid");

        assert!(
            none.billmgr.password.is_none() || std::env::var_os("CREDENTIALS_DIRECTORY").is_some()
        );
        assert_eq!(
            s.billmgr
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            Some("canary-beside".into())
        );
    }

    #[test]
    fn alert_settings_split_the_command_read_headers_and_check_mail() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "hook.sh", "#!/bin/sh\n");
        write(
            dir.path(),
            "headers",
            "# token\nAuthorization: Bearer canary-hdr\n\nX-Team: ops\n",
        );
        let f = write(
            dir.path(),
            "c.toml",
            &format!(
                "{MINIMAL}[alerts]\ncommand = \"hook.sh --team 'on call'\"\nwebhook = \"https://h.example/x\"\nwebhook_headers_file = \"headers\"\nnotify = \"renewed\"\nhost = \"b1\"\n[alerts.email]\nserver = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"Ops <ops@example.com>\"]\n"
            ),
        );
        let s = load_with_env(&f, Some(HashMap::new())).expect("valid");
        let a = &s.alerts;
        assert_eq!(
            a.command.as_deref(),
            Some(
                &[
                    dir.path().join("hook.sh").to_string_lossy().into_owned(),
                    "--team".into(),
                    "on call".into()
                ][..]
            )
        );
        assert_eq!(a.webhook_headers.len(), 2);
        assert_eq!(a.webhook_headers[0].0, "Authorization");
        assert_eq!(a.webhook_headers[0].1.expose_secret(), "Bearer canary-hdr");
        assert!(
            !format!("{s:?}").contains("canary-hdr"),
            "Debug hides header values"
        );
        assert_eq!(a.notify, NotifyLevel::Renewed);
        assert!(a.digest);
        assert_eq!(a.host, "b1");
        let email = a.email.as_ref().expect("email");
        assert_eq!((email.port, email.tls), (587, SmtpTls::StartTls));
        assert_eq!(a.sinks(), ["webhook", "command", "email"]);

        for (bad, key) in [
            ("[alerts]\nnotify = \"loud\"\n", "alerts.notify"),
            ("[alerts]\ncommand = \"x 'unbalanced\"\n", "alerts.command"),
            (
                "[alerts]\nwebhook_headers_file = \"nope\"\n",
                "alerts.webhook_headers_file",
            ),
            (
                "[alerts.email]\nserver = \"s\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]\n",
                "alerts.email.from",
            ),
            (
                "[alerts.email]\nserver = \"s\"\nfrom = \"a@b.c\"\nto = []\n",
                "alerts.email.to",
            ),
        ] {
            let f = write(dir.path(), "bad.toml", &format!("{MINIMAL}{bad}"));
            let e = load_with_env(&f, Some(HashMap::new())).expect_err(bad);
            assert_eq!(e.key.as_deref(), Some(key), "{bad}: {e}");
        }
        write(dir.path(), "headers", "Authorization Bearer canary-hdr\n");
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("bad header line");
        assert!(e.msg.contains("line 1"), "{e}");
        assert!(!e.to_string().contains("canary-hdr"), "{e}");
    }

    #[test]
    fn a_postgres_url_selects_postgresql_and_is_never_shown_with_its_password() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            &format!(
                "{MINIMAL}[database]\nurl = \"postgres://licrenew:canary-pg@db.example/licrenew\"\nheartbeat = \"2s\"\n"
            ),
        );

        let s = load_with_env(&f, Some(HashMap::new())).expect("valid");

        assert_eq!(s.database.backend(), "postgres");
        assert_eq!(
            s.database.postgres_url(),
            Some("postgres://licrenew:canary-pg@db.example/licrenew")
        );
        assert_eq!(s.heartbeat, Duration::from_secs(2));
        assert_eq!(s.standby_retry, Duration::from_secs(5));
        for shown in [
            s.database.to_string(),
            format!("{:?}", s.database),
            format!("{s:?}"),
        ] {
            assert!(!shown.contains("canary-pg"), "{shown}");
        }
        assert_eq!(
            s.database.to_string(),
            "postgres://licrenew:***@db.example/licrenew"
        );
        for (url, shown) in [
            (
                "postgres://u@db.example/x?sslmode=prefer&password=canary-pg",
                "postgres://u@db.example/x?sslmode=prefer&password=***",
            ),
            (
                "postgres://u@db.example/x?sslpassword=canary-pg",
                "postgres://u@db.example/x?sslpassword=***",
            ),
            (
                "postgres://u:canary-pg@[bad/x?password=y",
                "postgres://…@[bad/…",
            ),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn a_bad_postgres_url_or_timing_is_named_without_the_password() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            &format!(
                "{MINIMAL}[database]\nurl = \"postgres://u:canary-pg@db.example:notaport/x\"\nstandby_retry = \"10m\"\n"
            ),
        );

        let e = load_with_env(&f, Some(HashMap::new())).expect_err("refused");

        assert_eq!(e.key.as_deref(), Some("database.url"), "{e}");
        assert!(!e.to_string().contains("canary-pg"), "{e}");
        let f = write(
            dir.path(),
            "d.toml",
            &format!(
                "{MINIMAL}[database]\nurl = \"postgres://db.example/x\"\nstandby_retry = \"10m\"\n"
            ),
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("refused");
        assert_eq!(e.key.as_deref(), Some("database.standby_retry"), "{e}");
    }

    #[test]
    fn env_overrides_use_double_underscores() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(dir.path(), "c.toml", MINIMAL);
        let env = HashMap::from([
            ("LICRENEW__BILLMGR__TIMEOUT".to_owned(), "5s".to_owned()),
            (
                "LICRENEW__RENEWAL__MAX_PER_CYCLE".to_owned(),
                "3".to_owned(),
            ),
            (
                "LICRENEW__DATABASE__URL".to_owned(),
                "sqlite://state/x.db".to_owned(),
            ),
        ]);
        let s = load_with_env(&f, Some(env)).expect("valid");
        assert_eq!(s.billmgr.timeout, Duration::from_secs(5));
        assert_eq!(s.renewal.max_per_cycle, 3);
        assert_eq!(
            s.database,
            DatabaseSpec::Sqlite(dir.path().join("state/x.db"))
        );
    }

    #[test]
    fn an_unknown_key_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            &format!("{MINIMAL}\n[renewal]\nmax_per_cylce = 3\n"),
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("unknown key");
        let text = e.to_string();
        assert!(text.starts_with(&f.display().to_string()), "{text}");
        assert!(text.contains("max_per_cylce"), "{text}");
    }

    #[test]
    fn wrong_types_and_bad_durations_are_refused_with_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            &MINIMAL.replace("[billmgr]", "[billmgr]\ntimeout = \"soon\""),
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("bad duration");
        assert!(e.to_string().contains("timeout"), "{e}");
        let f = write(
            dir.path(),
            "d.toml",
            &format!("{MINIMAL}\n[renewal]\nconcurrency = \"many\"\n"),
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("bad type");
        assert!(e.to_string().contains("concurrency"), "{e}");
    }

    #[test]
    fn a_non_string_password_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            "[billmgr]\nurl = \"https://x/billmgr\"\nusername = \"u\"\npassword = 987654321\n",
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("number");
        assert!(!e.to_string().contains("987654321"), "{e}");
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn password_file_resolves_against_the_config_folder_and_must_exist() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "pw", "from-file\n");
        let f = write(
            dir.path(),
            "c.toml",
            "[billmgr]\nurl = \"https://x/billmgr\"\nusername = \"u\"\npassword_file = \"pw\"\n",
        );
        let s = load_with_env(&f, Some(HashMap::new())).expect("valid");
        assert_eq!(
            s.billmgr
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            Some("from-file".into())
        );
        let f = write(
            dir.path(),
            "d.toml",
            "[billmgr]\nurl = \"https://x/billmgr\"\nusername = \"u\"\npassword_file = \"missing\"\n",
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("missing");
        assert!(e.to_string().contains("billmgr.password_file"), "{e}");
    }

    #[test]
    fn credentials_or_a_query_in_the_url_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = write(
            dir.path(),
            "c.toml",
            "[billmgr]\nurl = \"https://x/billmgr?authinfo=u:p\"\nusername = \"u\"\npassword = \"p\"\n",
        );
        let e = load_with_env(&f, Some(HashMap::new())).expect_err("query");
        assert!(e.to_string().contains("billmgr.url"), "{e}");
    }

    #[test]
    fn a_missing_file_is_a_config_error() {
        let e = load_with_env(Path::new("/nonexistent/licrenew.toml"), None).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/licrenew.toml"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_shipped_example_config_is_valid() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/licrenew.example.toml"
        ))
        .expect("example");
        let f = dir.path().join("licrenew.toml");
        std::fs::write(&f, text).expect("write");
        std::fs::write(dir.path().join("password"), "x\n").expect("write");
        let s = super::load_with_env(&f, Some(Default::default())).expect("the example loads");
        assert_eq!(s.schedule.cron, "0 17 */6 * * *");
    }
}
