//! The state database: licenses as last seen, the renewal journal and cycles, in SQLite.
//!
//! Owns the only use of sqlx: embedded migrations applied at open, WAL with
//! `synchronous=FULL` (a committed intent row survives power loss), foreign keys, a busy
//! timeout, one connection (one writer), and the per-database process lock. The unique index
//! `renewals_one_per_expiry` is the money fence: it refuses a second renewal of one seen expiry
//! whatever the code above it decides. Must not hold a transaction across a network call.

use crate::domain::{License, Status};
use crate::policy::{JournalEntry, JournalState};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The PostgreSQL schema (migrations/postgres/): the same tables, columns and indexes as
/// [`MIGRATOR`]'s, checked by tests/it/schema.rs. The PostgreSQL backend itself is not there
/// yet (issue 15); this is its first stage.
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The cause is in the message, not a `source` (an error chain would print it twice).
    #[error("database {}: {cause}{}", path.display(), os.as_deref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Open {
        path: PathBuf,
        cause: sqlx::Error,
        /// What the system says about the file, when SQLite's message does not (a read-only
        /// filesystem, a missing folder, permissions).
        os: Option<String>,
    },
    #[error("database {}: migrations failed: {cause}", path.display())]
    Migrate {
        path: PathBuf,
        cause: sqlx::migrate::MigrateError,
    },
    // Not a `source` (an error chain would print the cause twice): the message holds it.
    #[error("database: {0}")]
    Sql(sqlx::Error),
    #[error("{0}")]
    Locked(String),
    /// Another process holds the renewal lock (a cycle or a paid command is running).
    #[error("{0}")]
    Busy(String),
    /// PostgreSQL: this instance does not hold the renewal lock (or no longer leads), so no
    /// intent is written and nothing is sent.
    #[error("{0}")]
    NotLeader(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Sql(e)
    }
}

/// A license row as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoredLicense {
    pub elid: i64,
    pub licname: String,
    pub ip: String,
    pub product: i64,
    pub period: Option<i64>,
    pub expiry: NaiveDate,
    pub status: i64,
    pub status_raw: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub gone_since: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_reason: Option<String>,
    pub last_decided: Option<DateTime<Utc>>,
    pub autoprolong: bool,
    /// Fell out of the listed window unrenewed and, re-read, still expired: lapsed.
    pub lapsed_since: Option<DateTime<Utc>>,
    pub pricelist_label: Option<String>,
    pub special: Option<String>,
    pub cost_cents: Option<i64>,
    pub cost_currency: Option<String>,
}

impl StoredLicense {
    pub fn to_license(&self) -> License {
        License {
            elid: self.elid,
            licname: self.licname.clone(),
            ip: self.ip.clone(),
            product: self.product,
            period: self.period,
            expiry: self.expiry,
            status: Status::parse(&self.status_raw),
            autoprolong: self.autoprolong,
            special: self.special.clone(),
            cost: self.cost(),
            pricelist_label: self.pricelist_label.clone(),
        }
    }

    /// The cost of one period, where the billing showed it.
    pub fn cost(&self) -> Option<crate::domain::Money> {
        Some(crate::domain::Money {
            cents: self.cost_cents?,
            currency: self.cost_currency.clone()?,
        })
    }
}

/// One journal row: one paid renewal attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JournalRow {
    pub id: i64,
    pub elid: i64,
    pub licname: String,
    pub product: i64,
    pub period: i64,
    pub expiry_before: NaiveDate,
    pub state: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_class: Option<String>,
    pub error_type: Option<String>,
    pub error_object: Option<String>,
    pub error_msg: Option<String>,
    pub new_expiry: Option<NaiveDate>,
    pub cycle_id: Option<i64>,
    pub policy_file: Option<String>,
    pub policy_hash: Option<String>,
    pub cost_cents: Option<i64>,
    pub cost_currency: Option<String>,
}

impl JournalRow {
    /// What the renewal cost (or would have), where it was known.
    pub fn cost(&self) -> Option<crate::domain::Money> {
        Some(crate::domain::Money {
            cents: self.cost_cents?,
            currency: self.cost_currency.clone()?,
        })
    }

    pub fn state(&self) -> Option<JournalState> {
        JournalState::parse(&self.state)
    }
}

/// A renewal about to be sent.
#[derive(Clone, Debug)]
pub struct Intent {
    pub elid: i64,
    pub licname: String,
    pub product: i64,
    pub period: i64,
    pub expiry_before: NaiveDate,
    pub source: &'static str,
    pub cycle_id: Option<i64>,
    pub policy_file: Option<String>,
    pub policy_hash: Option<String>,
    pub cost: Option<crate::domain::Money>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentResult {
    /// Committed; the id of the journal row.
    Written(i64),
    /// A renewal of this license and expiry already went out (or may have).
    Duplicate,
    /// The cycle already made `max_per_cycle` paid calls.
    CapReached,
}

/// How a journal row ends.
#[derive(Clone, Debug, Default)]
pub struct Settlement {
    pub error_class: Option<String>,
    pub error_type: Option<String>,
    pub error_object: Option<String>,
    pub error_msg: Option<String>,
    pub new_expiry: Option<NaiveDate>,
}

/// Counts of one cycle, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CycleCounts {
    pub listed: u32,
    pub renewed: u32,
    pub failed: u32,
    pub unknown: u32,
    pub skipped: u32,
    pub reconciled: u32,
}

/// What recording a listing did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub inserted: u32,
    pub updated: u32,
    pub unchanged: u32,
    /// Licenses known (not gone, not lapsed) whose expiry is at most the window's end that the
    /// listing did not show: they left the window, and are re-read to say why.
    pub left: Vec<i64>,
}

/// What a sync needs to know of a stored license to tell whether a listed one changed.
struct Known {
    hash: Option<i64>,
    expiry: NaiveDate,
    gone: bool,
    lapsed: bool,
    /// Listed in this sync.
    seen: bool,
    /// Counted as unchanged in this sync (until listed again, changed).
    unchanged: bool,
}

/// A listed license to write: new (a plain `INSERT`) or changed (an update).
#[derive(Debug)]
pub struct ListedRow {
    pub license: License,
    pub fresh: bool,
    hash: i64,
}

/// Compares a listing with what is stored, row by row as it streams in, and gathers what
/// must be written: new licenses, and those whose fields (by a hash) changed. Nothing is
/// written for the rest, and "seen in this sync" is not written per row: the licenses that
/// left the window come from a set difference in memory ([`ListingRecorder::finish`]).
/// The caller hands the gathered rows to [`Store::write_listed`] whenever it likes (in
/// chunks while the list still downloads, say); a license listed twice is written once per
/// chunk, the last listing winning.
pub struct ListingRecorder {
    known: std::collections::HashMap<i64, Known>,
    pending: Vec<ListedRow>,
    /// Where each elid of `pending` is.
    pending_at: std::collections::HashMap<i64, usize>,
    stats: SyncStats,
}

impl ListingRecorder {
    /// Compares one listed license; gathers (a copy of) it when it is new or changed.
    /// Returns the hash of its fields.
    pub fn add(&mut self, l: &License) -> i64 {
        self.add_cow(std::borrow::Cow::Borrowed(l))
    }

    /// [`ListingRecorder::add`], for a license the caller does not keep.
    pub fn add_owned(&mut self, l: License) -> i64 {
        self.add_cow(std::borrow::Cow::Owned(l))
    }

    fn add_cow(&mut self, l: std::borrow::Cow<'_, License>) -> i64 {
        let hash = fields_hash(&l);
        if let Some(&i) = self.pending_at.get(&l.elid) {
            // Listed again before its row was written: the last listing wins.
            if let Some(k) = self.known.get_mut(&l.elid) {
                k.hash = Some(hash);
                k.expiry = l.expiry;
            }
            let row = &mut self.pending[i];
            if row.hash != hash {
                row.license = l.into_owned();
                row.hash = hash;
            }
            return hash;
        }
        let fresh = match self.known.get_mut(&l.elid) {
            None => {
                self.stats.inserted += 1;
                self.known.insert(
                    l.elid,
                    Known {
                        hash: Some(hash),
                        expiry: l.expiry,
                        gone: false,
                        lapsed: false,
                        seen: true,
                        unchanged: false,
                    },
                );
                true
            }
            Some(k) if k.gone || k.hash != Some(hash) => {
                if !k.seen {
                    self.stats.updated += 1;
                } else if k.unchanged {
                    // Listed unchanged, then (a second listing) changed: one update.
                    self.stats.unchanged -= 1;
                    self.stats.updated += 1;
                }
                *k = Known {
                    hash: Some(hash),
                    expiry: l.expiry,
                    gone: false,
                    lapsed: k.lapsed && k.expiry == l.expiry,
                    seen: true,
                    unchanged: false,
                };
                false
            }
            Some(k) => {
                if !k.seen {
                    self.stats.unchanged += 1;
                    k.seen = true;
                    k.unchanged = true;
                }
                return hash;
            }
        };
        self.pending_at.insert(l.elid, self.pending.len());
        self.pending.push(ListedRow {
            license: l.into_owned(),
            fresh,
            hash,
        });
        hash
    }

    /// Rows gathered since the last call.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes the rows gathered so far (distinct elids), for [`Store::write_listed`].
    pub fn take_pending(&mut self) -> Vec<ListedRow> {
        self.pending_at.clear();
        std::mem::take(&mut self.pending)
    }

    /// What the listing did. `to`: the window's last day; licenses known (not gone, not
    /// lapsed) expiring by then that the listing did not show left the window.
    pub fn finish(self, to: NaiveDate) -> SyncStats {
        let mut left: Vec<(NaiveDate, i64)> = self
            .known
            .iter()
            .filter(|(_, k)| !k.seen && !k.gone && !k.lapsed && k.expiry <= to)
            .map(|(elid, k)| (k.expiry, *elid))
            .collect();
        left.sort_unstable();
        SyncStats {
            left: left.into_iter().map(|(_, e)| e).collect(),
            ..self.stats
        }
    }
}

/// A hash of every field a listing shows of `l` (not the sync's own bookkeeping).
fn fields_hash(l: &License) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    l.elid.hash(&mut h);
    l.licname.hash(&mut h);
    l.ip.hash(&mut h);
    l.product.hash(&mut h);
    l.period.hash(&mut h);
    l.expiry.hash(&mut h);
    l.status.hash(&mut h);
    l.autoprolong.hash(&mut h);
    l.special.hash(&mut h);
    l.cost.hash(&mut h);
    l.pricelist_label.hash(&mut h);
    h.finish() as i64
}

/// The helpers that run on a connection, once per backend: the same text, type-checked for
/// SQLite (`lite`) and PostgreSQL (`pg`).
macro_rules! conn_fns {
    ($m:ident, $conn:ty, $db:ty, $args:ty, $numbered:expr, $stamp:ty, $to_stamp:path, $write_listed:ident) => {
        mod $m {
            #[allow(unused_imports)]
            use super::*;

            /// Writes rows a sync found new or changed, on a connection in a transaction.
            pub(super) use super::$write_listed as write_listed_on;

            /// Whether bulk statements number their parameters (`$n`) or use `?`.
            pub(super) const NUMBERED: bool = $numbered;

            /// A timestamp as bulk statements bind it: made once per statement rather than
            /// once per row and column.
            pub(super) fn stamp(now: DateTime<Utc>) -> $stamp {
                $to_stamp(now)
            }

pub(super) async fn intent_on(
                conn: &mut $conn,
                i: &Intent,
                cap: Option<u32>,
                fence: &[(i32, i64)],
                now: DateTime<Utc>,
            ) -> Result<IntentResult, StoreError> {
                // In a savepoint of its own: a refused insert (the unique index) undoes only itself, on
                // SQLite as on PostgreSQL (where an error would otherwise abort the whole transaction and
                // its COMMIT silently roll back the license row written before it).
                let cap = cap.map(i64::from);
                let mut sp = sqlx::Connection::begin(&mut *conn).await?;
                let sql = format!(
                    "INSERT INTO renewals (elid, licname, product, period, expiry_before, state, source, created_at, cycle_id, policy_file, policy_hash, cost_cents, cost_currency)
                     SELECT $1, $2, $3, $4, $5, 'sending', $6, $7, $8, $9, $10, $11, $12
                     WHERE (CAST($13 AS BIGINT) IS NULL
                        OR (SELECT COUNT(*) FROM renewals WHERE cycle_id IS NOT DISTINCT FROM $14) < $15){}
                     RETURNING id",
                    fence_sql(fence.len(), 16)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(i.elid)
                .bind(&i.licname)
                .bind(i.product)
                .bind(i.period)
                .bind(i.expiry_before)
                .bind(i.source)
                .bind(now)
                .bind(i.cycle_id)
                .bind(&i.policy_file)
                .bind(&i.policy_hash)
                .bind(i.cost.as_ref().map(|c| c.cents))
                .bind(i.cost.as_ref().map(|c| c.currency.as_str()))
                .bind(cap)
                .bind(i.cycle_id)
                .bind(cap);
                for (pid, key) in fence {
                    q = q.bind(*pid).bind(*key);
                }
                let res = q.fetch_optional(&mut *sp).await;
                match res {
                    Ok(None) => {
                        sp.commit().await?;
                        if !fence.is_empty() {
                            let sql = format!("SELECT TRUE WHERE TRUE{}", fence_sql(fence.len(), 1));
                            let mut q = sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql));
                            for (pid, key) in fence {
                                q = q.bind(*pid).bind(*key);
                            }
                            if q.fetch_optional(&mut *conn).await?.is_none() {
                                return Err(Store::not_leader());
                            }
                        }
                        Ok(IntentResult::CapReached)
                    }
                    Ok(Some(r)) => {
                        let id: i64 = r.try_get("id")?;
                        sp.commit().await?;
                        Ok(IntentResult::Written(id))
                    }
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        sp.rollback().await?;
                        Ok(IntentResult::Duplicate)
                    }
                    Err(e) => Err(e.into()),
                }
            }

            pub(super) async fn settle_on(
                conn: &mut $conn,
                id: i64,
                state: JournalState,
                s: &Settlement,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE renewals SET state = $1, finished_at = $2, error_class = COALESCE($3, error_class), error_type = COALESCE($4, error_type),
                     error_object = COALESCE($5, error_object), error_msg = COALESCE($6, error_msg), new_expiry = COALESCE($7, new_expiry) WHERE id = $8",
                )
                .bind(state.as_str())
                .bind(now)
                .bind(&s.error_class)
                .bind(&s.error_type)
                .bind(&s.error_object)
                .bind(&s.error_msg)
                .bind(s.new_expiry)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            pub(super) async fn upsert_one(
                tx: &mut $conn,
                l: &License,
                now: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let now = stamp(now);
                bind_license(sqlx::query(sqlx::AssertSqlSafe(upsert_sql(1, NUMBERED))), l, &now, fields_hash(l))
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }

            pub(super) fn bind_license<'q>(
                q: sqlx::query::Query<'q, $db, $args>,
                l: &'q License,
                now: &'q $stamp,
                hash: i64,
            ) -> sqlx::query::Query<'q, $db, $args> {
                q.bind(l.elid)
                    .bind(&l.licname)
                    .bind(&l.ip)
                    .bind(l.product)
                    .bind(l.period)
                    .bind(l.expiry)
                    .bind(l.status.code() as i64)
                    .bind(status_raw(&l.status))
                    .bind(now)
                    .bind(now)
                    .bind(l.autoprolong)
                    .bind(&l.pricelist_label)
                    .bind(&l.special)
                    .bind(l.cost.as_ref().map(|c| c.cents))
                    .bind(l.cost.as_ref().map(|c| c.currency.as_str()))
                    .bind(hash)
            }

        }
    };
}

conn_fns!(
    lite,
    sqlx::SqliteConnection,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteArguments,
    false,
    String,
    sqlite_stamp,
    write_listed_sqlite
);

/// Appends `more` to `rows`, keeping the elids distinct: a license in both keeps its last
/// listing, written as new when its first row was (it is not stored yet). `at`: where each
/// elid of `rows` is, filled on first use.
fn merge_listed(
    rows: &mut Vec<ListedRow>,
    at: &mut std::collections::HashMap<i64, usize>,
    more: Vec<ListedRow>,
) {
    if at.is_empty() {
        at.extend(rows.iter().enumerate().map(|(i, r)| (r.license.elid, i)));
    }
    for row in more {
        match at.get(&row.license.elid) {
            Some(&i) => {
                let fresh = rows[i].fresh;
                rows[i] = ListedRow { fresh, ..row };
            }
            None => {
                at.insert(row.license.elid, rows.len());
                rows.push(row);
            }
        }
    }
}

/// How a status is stored beside its code: the server's text when the code is unknown.
fn status_raw(s: &Status) -> String {
    match s {
        Status::Unknown(raw) => raw.clone(),
        s => s.code().to_string(),
    }
}

/// SQLite: new rows with plain multi-row `INSERT`s, changed ones with upserts.
async fn write_listed_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rows: &[ListedRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = lite::stamp(now);
    for fresh in [true, false] {
        let part: Vec<&ListedRow> = rows.iter().filter(|r| r.fresh == fresh).collect();
        for chunk in part.chunks(ROWS_PER_STATEMENT) {
            let sql = if fresh {
                insert_sql(chunk.len(), false)
            } else {
                upsert_sql(chunk.len(), false)
            };
            // Only the full-size statement is kept prepared: one for every remainder size
            // would each keep a large program in memory for the connection's life.
            let mut q =
                sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == ROWS_PER_STATEMENT);
            for r in chunk {
                q = lite::bind_license(q, &r.license, &now, r.hash);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// PostgreSQL: one array per column (`UNNEST`), so a statement has 15 parameters whatever
/// its row count: the server plans it in no time, where 16,000 placeholders took it longer
/// to plan than to insert.
async fn write_listed_pg(
    conn: &mut sqlx::PgConnection,
    rows: &[ListedRow],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for fresh in [true, false] {
        let part: Vec<&License> = rows
            .iter()
            .filter(|r| r.fresh == fresh)
            .map(|r| &r.license)
            .collect();
        if part.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO licenses (elid, licname, ip, product, period, expiry, status, status_raw, first_seen, last_seen, gone_since, autoprolong, pricelist_label, special, cost_cents, cost_currency, fields_hash)
             SELECT elid, licname, ip, product, period, expiry, status, status_raw, $15, $15, NULL, autoprolong, pricelist_label, special, cost_cents, cost_currency, fields_hash
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::date[], $7::bigint[], $8::text[], $9::boolean[], $10::text[], $11::text[], $12::bigint[], $13::text[], $14::bigint[])
               AS t(elid, licname, ip, product, period, expiry, status, status_raw, autoprolong, pricelist_label, special, cost_cents, cost_currency, fields_hash){}",
            if fresh { "" } else { UPSERT_TAIL }
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(part.iter().map(|l| l.elid).collect::<Vec<i64>>())
            .bind(
                part.iter()
                    .map(|l| l.licname.as_str())
                    .collect::<Vec<&str>>(),
            )
            .bind(part.iter().map(|l| l.ip.as_str()).collect::<Vec<&str>>())
            .bind(part.iter().map(|l| l.product).collect::<Vec<i64>>())
            .bind(part.iter().map(|l| l.period).collect::<Vec<Option<i64>>>())
            .bind(part.iter().map(|l| l.expiry).collect::<Vec<NaiveDate>>())
            .bind(
                part.iter()
                    .map(|l| l.status.code() as i64)
                    .collect::<Vec<i64>>(),
            )
            .bind(
                part.iter()
                    .map(|l| status_raw(&l.status))
                    .collect::<Vec<String>>(),
            )
            .bind(part.iter().map(|l| l.autoprolong).collect::<Vec<bool>>())
            .bind(
                part.iter()
                    .map(|l| l.pricelist_label.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            )
            .bind(
                part.iter()
                    .map(|l| l.special.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            )
            .bind(
                part.iter()
                    .map(|l| l.cost.as_ref().map(|c| c.cents))
                    .collect::<Vec<Option<i64>>>(),
            )
            .bind(
                part.iter()
                    .map(|l| l.cost.as_ref().map(|c| c.currency.as_str()))
                    .collect::<Vec<Option<&str>>>(),
            )
            .bind(
                rows.iter()
                    .filter(|r| r.fresh == fresh)
                    .map(|r| r.hash)
                    .collect::<Vec<i64>>(),
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The text sqlx-sqlite stores for a `DateTime<Utc>` (its `Encode`), made once.
fn sqlite_stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}
conn_fns!(
    pg,
    sqlx::PgConnection,
    sqlx::Postgres,
    sqlx::postgres::PgArguments,
    true,
    DateTime<Utc>,
    std::convert::identity,
    write_listed_pg
);

/// Runs `$body` with `$p` the pool and `$m` the helper module of the store's backend.
macro_rules! on {
    ($store:expr, $p:ident, $m:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p) => {
                #[allow(unused_imports)]
                use self::lite as $m;
                $body
            }
            Pool::Pg($p) => {
                #[allow(unused_imports)]
                use self::pg as $m;
                $body
            }
        }
    };
}

/// The backend a store runs on.
#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Pg(sqlx::PgPool),
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    origin: Arc<Origin>,
    /// PostgreSQL: the advisory locks this instance holds, each as (backend pid, key); every
    /// intent is written only while the server still lists them as held by those sessions.
    fence: Arc<Mutex<Fence>>,
}

/// Where a store's database is, for the sessions that hold locks.
enum Origin {
    Sqlite(PathBuf),
    Pg {
        opts: Box<sqlx::postgres::PgConnectOptions>,
        shown: String,
    },
}

/// Shown without the connection options (they hold the password).
impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Origin::Pg { shown, .. } => write!(f, "Pg({shown})"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Fence {
    leader: Option<(i32, i64)>,
    /// The leadership was lost: no intent at all until it is held again (fails closed).
    leader_lost: bool,
    renew: Option<(i32, i64)>,
}

/// The tables `db copy` moves, parents first (renewals refer to cycles).
const COPIED_TABLES: [&str; 7] = [
    "licenses",
    "cycles",
    "renewals",
    "operations",
    "meta",
    "alert_log",
    "alerts",
];

/// One value on its way from SQLite to PostgreSQL, typed by the target column.
enum CopyValue {
    Int(Option<i64>),
    Bool(Option<bool>),
    Date(Option<NaiveDate>),
    Time(Option<DateTime<Utc>>),
    Text(Option<String>),
}

/// `AND EXISTS (…)` per held lock: the session `$p` holds the advisory lock `$k` (parameters
/// numbered from `first`, pid then key per lock). PostgreSQL only.
fn fence_sql(locks: usize, first: usize) -> String {
    (0..locks)
        .map(|i| {
            let (p, k) = (first + 2 * i, first + 2 * i + 1);
            format!(
                " AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND pid = ${p} AND classid = ((${k} >> 32) & 4294967295)::oid AND objid = (${k} & 4294967295)::oid)"
            )
        })
        .collect()
}

const LICENSE_COLS: &str = "elid, licname, ip, product, period, expiry, status, status_raw, first_seen, last_seen, gone_since, last_outcome, last_reason, last_decided, autoprolong, lapsed_since, pricelist_label, special, cost_cents, cost_currency";
const JOURNAL_COLS: &str = "id, elid, licname, product, period, expiry_before, state, source, created_at, finished_at, error_class, error_type, error_object, error_msg, new_expiry, cycle_id, policy_file, policy_hash, cost_cents, cost_currency";

impl Store {
    /// Opens (creating if missing) the database and applies the embedded migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                cause: sqlx::Error::Io(e),
                os: None,
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .pragma("cache_spill", "off")
            .busy_timeout(Duration::from_secs(10));
        // One connection kept for the store's life: no idle or lifetime reaper task, which,
        // for a store dropped unclosed while its runtime shut down, spun a core (soak).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(|cause| StoreError::Open {
                path: path.to_owned(),
                cause,
                os: std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .err()
                    .map(|e| e.to_string()),
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|cause| StoreError::Migrate {
                path: path.to_owned(),
                cause,
            })?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            origin: Arc::new(Origin::Sqlite(path.to_owned())),
            fence: Arc::default(),
        })
    }

    /// Opens the database `spec` names: a SQLite file or a PostgreSQL database.
    pub async fn connect(spec: &crate::config::DatabaseSpec) -> Result<Store, StoreError> {
        match spec {
            crate::config::DatabaseSpec::Sqlite(p) => Store::open(p).await,
            crate::config::DatabaseSpec::Postgres(u) => Store::open_postgres(u).await,
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match &self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Pg(_) => "postgres",
        }
    }

    /// PostgreSQL: how to open a session of one's own (to hold an advisory lock).
    pub fn pg_options(&self) -> Option<&sqlx::postgres::PgConnectOptions> {
        match &*self.origin {
            Origin::Pg { opts, .. } => Some(opts),
            Origin::Sqlite(_) => None,
        }
    }

    /// PostgreSQL: from now on every intent also requires the leader lock `key` to be held
    /// by the session `pid` (`None`: no longer leading).
    pub fn set_leader_fence(&self, held: Option<(i32, i64)>) {
        let mut f = self.fence.lock().unwrap_or_else(|e| e.into_inner());
        f.leader = held;
        f.leader_lost = held.is_none();
    }

    /// The locks an intent requires on PostgreSQL: the renewal lock, and the leadership
    /// when this process leads. `Err(NotLeader)` without the renewal lock; `Ok(empty)` on
    /// SQLite (the file lock and a single writer do the same there).
    fn fence_locks(&self) -> Result<Vec<(i32, i64)>, StoreError> {
        if let Pool::Sqlite(_) = self.pool {
            return Ok(Vec::new());
        }
        let f = *self.fence.lock().unwrap_or_else(|e| e.into_inner());
        if f.leader_lost {
            return Err(Self::not_leader());
        }
        let Some(renew) = f.renew else {
            return Err(StoreError::NotLeader(
                "the renewal lock is not held: nothing is written or sent".into(),
            ));
        };
        Ok(std::iter::once(renew).chain(f.leader).collect())
    }

    /// Copies every table of this SQLite store into `target`, an empty PostgreSQL store
    /// (`licrenew db copy`), in one transaction on the target: all or nothing. Identity
    /// sequences continue after the copied ids. Returns (table, rows) as counted again in
    /// the target, each equal to the source's count (else an error, and nothing is kept).
    /// The `service` record of the old process is not copied.
    pub async fn copy_into(&self, target: &Store) -> Result<Vec<(String, i64)>, StoreError> {
        let (Pool::Sqlite(src), Pool::Pg(dst)) = (&self.pool, &target.pool) else {
            return Err(StoreError::Locked(
                "db copy goes from a SQLite file to a PostgreSQL database".into(),
            ));
        };
        // One snapshot of the source for every table.
        let mut read = src.begin().await?;
        let mut tx = dst.begin().await?;
        for table in COPIED_TABLES {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *tx)
                    .await?;
            if n > 0 {
                return Err(StoreError::Locked(format!(
                    "the target database is not empty ({table} has {n} rows): nothing copied"
                )));
            }
        }
        let mut counts = Vec::new();
        for table in COPIED_TABLES {
            let cols: Vec<(String, String)> = sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
            let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
            let filter = if table == "meta" {
                " WHERE key NOT IN ('service', 'moved_to')"
            } else {
                ""
            };
            let select = format!("SELECT {} FROM {table}{filter}", names.join(", "));
            let rows = sqlx::query(sqlx::AssertSqlSafe(select))
                .fetch_all(&mut *read)
                .await?;
            let source_count = rows.len() as i64;
            // Batches well under PostgreSQL's 65,535 parameters.
            let per_batch = (60_000 / cols.len().max(1)).max(1);
            for chunk in rows.chunks(per_batch) {
                let mut values = Vec::with_capacity(chunk.len() * cols.len());
                for row in chunk {
                    for (i, (name, ty)) in cols.iter().enumerate() {
                        let bad = |e: sqlx::Error| {
                            StoreError::Locked(format!("{table}.{name}: cannot read: {e}"))
                        };
                        values.push(match ty.as_str() {
                            "bigint" | "integer" => CopyValue::Int(row.try_get(i).map_err(bad)?),
                            "boolean" => CopyValue::Bool(
                                row.try_get::<Option<i64>, _>(i)
                                    .map_err(bad)?
                                    .map(|v| v != 0),
                            ),
                            "date" => CopyValue::Date(row.try_get(i).map_err(bad)?),
                            t if t.starts_with("timestamp") => {
                                CopyValue::Time(row.try_get(i).map_err(bad)?)
                            }
                            _ => CopyValue::Text(row.try_get(i).map_err(bad)?),
                        });
                    }
                }
                let tuples: Vec<String> = (0..chunk.len())
                    .map(|r| {
                        let ps: Vec<String> = (1..=cols.len())
                            .map(|c| format!("${}", r * cols.len() + c))
                            .collect();
                        format!("({})", ps.join(", "))
                    })
                    .collect();
                let insert = format!(
                    "INSERT INTO {table} ({}) VALUES {}",
                    names.join(", "),
                    tuples.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(insert));
                for v in values {
                    q = match v {
                        CopyValue::Int(v) => q.bind(v),
                        CopyValue::Bool(v) => q.bind(v),
                        CopyValue::Date(v) => q.bind(v),
                        CopyValue::Time(v) => q.bind(v),
                        CopyValue::Text(v) => q.bind(v),
                    };
                }
                q.execute(&mut *tx).await?;
            }
            if names.contains(&"id") && table != "alert_log" {
                // The next id continues after the copied ones.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )))
                .execute(&mut *tx)
                .await?;
            }
            let copied: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *tx)
                    .await?;
            if copied != source_count {
                return Err(StoreError::Locked(format!(
                    "{table}: {source_count} rows read but {copied} in the target: nothing copied"
                )));
            }
            counts.push((table.to_owned(), copied));
        }
        tx.commit().await?;
        read.rollback().await?;
        Ok(counts)
    }

    fn not_leader() -> StoreError {
        StoreError::NotLeader(
            "this instance no longer holds its lock on the database: nothing is sent".into(),
        )
    }

    /// Takes the renewal lock, held while a cycle or a paid command runs (never by read-only
    /// commands): waits, saying so once, for another process's cycle or command to end; with
    /// `wait` false fails at once naming who holds it. SQLite: a file lock beside the
    /// database. PostgreSQL: the session-level advisory lock `key` (one per billing account)
    /// on a session of its own, which also fences every intent written while it is held.
    pub async fn renewal_lock(&self, key: i64, wait: bool) -> Result<RenewalLock, StoreError> {
        // A file whose state was copied to PostgreSQL pays nothing any more: two journals
        // would not exclude each other.
        if let (Origin::Sqlite(path), Some((to, at))) =
            (&*self.origin, self.meta("moved_to").await?)
        {
            return Err(StoreError::Locked(format!(
                "{} was copied to {to} on {} (licrenew db copy): its journal lives there now, so nothing renews with this file; set [database] url to the PostgreSQL URL",
                path.display(),
                at.format("%Y-%m-%d %H:%M UTC")
            )));
        }
        let mut said = false;
        loop {
            let attempt = match &*self.origin {
                Origin::Sqlite(path) => lock(path).map(|l| RenewalLock {
                    _file: Some(l),
                    _session: None,
                    fence: None,
                    held: None,
                }),
                Origin::Pg { opts, shown } => self.try_pg_lock(opts, shown, key).await,
            };
            match attempt {
                Err(StoreError::Busy(why)) if wait => {
                    if !said {
                        eprintln!("licrenew: waiting: {why}");
                        tracing::info!(event = "lock_wait", reason = %why, "waiting for the running cycle or paid command to end");
                        said = true;
                    }
                    // (PostgreSQL: each try is a new session; once a second is enough.)
                    tokio::time::sleep(match &*self.origin {
                        Origin::Sqlite(_) => Duration::from_millis(200),
                        Origin::Pg { .. } => Duration::from_secs(1),
                    })
                    .await;
                }
                other => return other,
            }
        }
    }

    async fn try_pg_lock(
        &self,
        opts: &sqlx::postgres::PgConnectOptions,
        shown: &str,
        key: i64,
    ) -> Result<RenewalLock, StoreError> {
        use sqlx::Connection;
        let (mut conn, got) = crate::leader::try_lock(opts, key).await?;
        if let Some(pid) = got {
            self.fence.lock().unwrap_or_else(|e| e.into_inner()).renew = Some((pid, key));
            return Ok(RenewalLock {
                _file: None,
                _session: Some(conn),
                fence: Some(self.fence.clone()),
                held: Some((pid, key)),
            });
        }
        let who = crate::leader::holder(&mut conn, key)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "another session".into());
        let _ = conn.close().await;
        Err(StoreError::Busy(format!(
            "another licrenew process ({who}) is renewing with {shown}; only one may at a time"
        )))
    }

    /// Opens a PostgreSQL database (`postgres://…`) and applies [`PG_MIGRATOR`]. The same
    /// store API as SQLite's, the same SQL text; the backend is not offered by the config yet
    /// (leadership, issue 15, comes first).
    pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
        use std::str::FromStr;
        let shown = crate::config::redact_url(url);
        let opened = |cause| StoreError::Open {
            path: PathBuf::from(&shown),
            cause,
            os: None,
        };
        // Every session of this process names it (`licrenew <host> <pid>`) and is dropped by
        // the server within ~20 s of this host going silent (keepalives).
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(opened)?
            .application_name(&crate::leader::application_name())
            .options([
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "5"),
                ("tcp_keepalives_count", "3"),
            ]);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .map_err(opened)?;
        PG_MIGRATOR
            .run(&pool)
            .await
            .map_err(|cause| StoreError::Migrate {
                path: PathBuf::from(&shown),
                cause,
            })?;
        Ok(Store {
            pool: Pool::Pg(pool),
            origin: Arc::new(Origin::Pg {
                opts: Box::new(opts),
                shown,
            }),
            fence: Arc::default(),
        })
    }

    pub async fn close(&self) {
        on!(self, pool, db => {
            pool.close().await;
        })
    }

    /// `PRAGMA integrity_check` → "ok" on a healthy SQLite file; PostgreSQL checks its own
    /// pages (a query that answers is "ok").
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let sql = match &self.pool {
            Pool::Sqlite(_) => "PRAGMA integrity_check",
            Pool::Pg(_) => "SELECT 'ok'",
        };
        on!(self, pool, db => {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            Ok(row.try_get::<String, _>(0)?)
        })
    }

    // --- cycles ---------------------------------------------------------------------------

    pub async fn begin_cycle(&self, kind: &str, now: DateTime<Utc>) -> Result<i64, StoreError> {
        on!(self, pool, db => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO cycles (kind, started_at) VALUES ($1, $2) RETURNING id",
            )
            .bind(kind)
            .bind(now)
            .fetch_one(pool)
            .await?;
            Ok(id)
        })
    }

    pub async fn end_cycle(
        &self,
        id: i64,
        counts: &CycleCounts,
        outcome: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query(
                "UPDATE cycles SET ended_at = $1, outcome = $2, error = $3, listed = $4, renewed = $5, failed = $6, unknown = $7, skipped = $8, reconciled = $9 WHERE id = $10",
            )
            .bind(now)
            .bind(outcome)
            .bind(error)
            .bind(i64::from(counts.listed))
            .bind(i64::from(counts.renewed))
            .bind(i64::from(counts.failed))
            .bind(i64::from(counts.unknown))
            .bind(i64::from(counts.skipped))
            .bind(i64::from(counts.reconciled))
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    // --- licenses -------------------------------------------------------------------------

    /// Records a whole listing at once, in one transaction (a sync streams it in through
    /// [`ListingRecorder`] instead).
    #[cfg(test)]
    pub(crate) async fn record_listing(
        &self,
        listed: &[License],
        to: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<SyncStats, StoreError> {
        let mut recorder = self.listing_recorder().await?;
        for l in listed {
            recorder.add(l);
        }
        self.write_listed(&recorder.take_pending(), now).await?;
        Ok(recorder.finish(to))
    }

    /// Starts recording a listing: reads what is stored (elid, hash of the fields, expiry,
    /// gone/lapsed) once, to compare each listed row with as it arrives.
    pub async fn listing_recorder(&self) -> Result<ListingRecorder, StoreError> {
        Ok(ListingRecorder {
            known: self.known_licenses().await?,
            pending: Vec::new(),
            pending_at: std::collections::HashMap::new(),
            stats: SyncStats::default(),
        })
    }

    /// Writes rows a [`ListingRecorder`] found new or changed, in one short transaction (no
    /// network call inside). The elids of `rows` are distinct.
    pub async fn write_listed(
        &self,
        rows: &[ListedRow],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        on!(self, pool, db => {
            let mut tx = pool.begin().await?;
            db::write_listed_on(&mut tx, rows, now).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Writes the chunks of rows a sync hands over while its list still downloads (each
    /// chunk's elids distinct), until the sender is dropped. A transaction takes up to
    /// `rows_per_tx` rows and stays open at most `open_for`: one commit (one fsync) for many
    /// chunks, and the connection free again soon for the status page and alert delivery.
    /// Chunks that are already waiting are written together (one statement on PostgreSQL).
    /// The transaction waits for the list's next rows, never for a paid call.
    pub async fn write_listed_stream(
        &self,
        chunks: &mut tokio::sync::mpsc::Receiver<Vec<ListedRow>>,
        now: DateTime<Utc>,
        rows_per_tx: usize,
        open_for: Duration,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            let mut next = chunks.recv().await;
            while let Some(mut rows) = next.take() {
                let mut tx = pool.begin().await?;
                let until = tokio::time::Instant::now() + open_for;
                let mut written = 0;
                loop {
                    let mut at = std::collections::HashMap::new();
                    while written + rows.len() < rows_per_tx {
                        let Ok(more) = chunks.try_recv() else { break };
                        merge_listed(&mut rows, &mut at, more);
                    }
                    db::write_listed_on(&mut tx, &rows, now).await?;
                    written += rows.len();
                    // A chunk already waiting would still come out of `timeout_at` after the
                    // deadline (it polls before it checks): look at the clock first.
                    if written >= rows_per_tx || tokio::time::Instant::now() >= until {
                        break;
                    }
                    // `recv` is cancel-safe: a chunk that arrives as time runs out waits for
                    // the next transaction.
                    match tokio::time::timeout_at(until, chunks.recv()).await {
                        Ok(Some(more)) => rows = more,
                        Ok(None) | Err(_) => break,
                    }
                }
                tx.commit().await?;
                next = chunks.recv().await;
            }
            Ok(())
        })
    }

    /// What a sync compares a listing with, for every stored license. Read as a few large
    /// strings SQLite builds itself: a row at a time through the driver costs more than the
    /// whole comparison.
    async fn known_licenses(&self) -> Result<std::collections::HashMap<i64, Known>, StoreError> {
        on!(self, pool, db => {
            const PER_QUERY: i64 = 50_000;
            let mut known = std::collections::HashMap::new();
            let mut after = i64::MIN;
            loop {
                let text: Option<String> = sqlx::query_scalar(
                    "SELECT string_agg(CAST(elid AS TEXT) || ',' || COALESCE(CAST(fields_hash AS TEXT), '')
                    || ',' || CAST(expiry AS TEXT) || ',' || CAST(
                        CASE WHEN gone_since IS NOT NULL THEN 1 ELSE 0 END
                      + CASE WHEN lapsed_since IS NOT NULL THEN 2 ELSE 0 END AS TEXT), ';')
                 FROM (SELECT * FROM licenses WHERE elid > $1 ORDER BY elid LIMIT $2) AS s",
                )
                .bind(after)
                .bind(PER_QUERY)
                .fetch_one(pool)
                .await?;
                let Some(text) = text.filter(|t| !t.is_empty()) else {
                    break;
                };
                let mut n = 0;
                for rec in text.split(';') {
                    let mut f = rec.split(',');
                    let (Some(elid), Some(hash), Some(expiry), Some(flags)) =
                        (f.next(), f.next(), f.next(), f.next())
                    else {
                        continue;
                    };
                    let (Ok(elid), Some(expiry)) =
                        (elid.parse::<i64>(), crate::domain::parse_date(expiry))
                    else {
                        continue;
                    };
                    let flags: u8 = flags.parse().unwrap_or(0);
                    known.insert(
                        elid,
                        Known {
                            hash: hash.parse().ok(),
                            expiry,
                            gone: flags & 1 != 0,
                            lapsed: flags & 2 != 0,
                            seen: false,
                            unchanged: false,
                        },
                    );
                    after = after.max(elid);
                    n += 1;
                }
                if n < PER_QUERY {
                    break;
                }
            }
            Ok(known)
        })
    }

    /// Remembers a small fact (`meta` table), replacing the last value.
    pub async fn set_meta(
        &self,
        key: &str,
        value: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query(
                "INSERT INTO meta (key, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn delete_meta(&self, key: &str) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query("DELETE FROM meta WHERE key = $1")
                .bind(key)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// A fact remembered by [`Store::set_meta`], with when.
    pub async fn meta(&self, key: &str) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        on!(self, pool, db => {
            let row = sqlx::query("SELECT value, updated_at FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => Some((r.try_get("value")?, r.try_get("updated_at")?)),
                None => None,
            })
        })
    }

    /// Records one license just read (after a view).
    pub async fn update_license(&self, l: &License, now: DateTime<Utc>) -> Result<(), StoreError> {
        on!(self, pool, db => {
            let mut tx = pool.begin().await?;
            db::upsert_one(&mut tx, l, now).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn mark_gone(&self, elid: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query("UPDATE licenses SET gone_since = COALESCE(gone_since, $1) WHERE elid = $2")
                .bind(now)
                .bind(elid)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Marks a license lapsed (once). Returns whether it was newly marked.
    pub async fn mark_lapsed(&self, elid: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        on!(self, pool, db => {
            let r = sqlx::query(
                "UPDATE licenses SET lapsed_since = $1 WHERE elid = $2 AND lapsed_since IS NULL",
            )
            .bind(now)
            .bind(elid)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Remembers the last decision about many licenses, in one transaction (one commit).
    pub async fn set_decisions(
        &self,
        decisions: &[(i64, &str, Option<&str>)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            if decisions.is_empty() {
                return Ok(());
            }
            let mut tx = pool.begin().await?;
            for (elid, outcome, reason) in decisions {
                sqlx::query("UPDATE licenses SET last_outcome = $1, last_reason = $2, last_decided = $3 WHERE elid = $4")
                    .bind(*outcome)
                    .bind(*reason)
                    .bind(now)
                    .bind(*elid)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn licenses(&self) -> Result<Vec<StoredLicense>, StoreError> {
        on!(self, pool, db => {
            let sql = format!("SELECT {LICENSE_COLS} FROM licenses ORDER BY expiry, elid");
            Ok(sqlx::query_as::<_, StoredLicense>(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn license(&self, elid: i64) -> Result<Option<StoredLicense>, StoreError> {
        on!(self, pool, db => {
            let sql = format!("SELECT {LICENSE_COLS} FROM licenses WHERE elid = $1");
            Ok(sqlx::query_as::<_, StoredLicense>(sqlx::AssertSqlSafe(sql))
                .bind(elid)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Remembers the last decision about a license (shown by `licrenew licenses`).
    pub async fn set_decision(
        &self,
        elid: i64,
        outcome: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query("UPDATE licenses SET last_outcome = $1, last_reason = $2, last_decided = $3 WHERE elid = $4")
                .bind(outcome)
                .bind(reason)
                .bind(now)
                .bind(elid)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    // --- journal --------------------------------------------------------------------------

    /// Writes the intent row and commits it before anything is sent. With `cap`, the row is
    /// only written while the cycle has made fewer than `max` paid calls (counted from the
    /// journal, in the same statement).
    pub async fn insert_intent(
        &self,
        i: &Intent,
        cap: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<IntentResult, StoreError> {
        let fence = self.fence_locks()?;
        on!(self, pool, db => {
            let mut conn = pool.acquire().await?;
            db::intent_on(&mut conn, i, cap, &fence, now).await
        })
    }

    /// [`Store::insert_intent`] and [`Store::update_license`] for the license just re-read,
    /// in one transaction: one commit (one fsync) before the paid call instead of two. The
    /// intent row is committed, or the call is not made, exactly as with `insert_intent`.
    pub async fn record_view_and_intent(
        &self,
        fresh: &License,
        i: &Intent,
        cap: Option<u32>,
        now: DateTime<Utc>,
    ) -> Result<IntentResult, StoreError> {
        let fence = self.fence_locks()?;
        on!(self, pool, db => {
            let mut tx = pool.begin().await?;
            db::upsert_one(&mut tx, fresh, now).await?;
            // A refused intent (duplicate, cap) aborts only its own statement; the license row is
            // still worth keeping.
            let r = db::intent_on(&mut tx, i, cap, &fence, now).await?;
            tx.commit().await?;
            Ok(r)
        })
    }

    /// Settles a journal row.
    pub async fn settle(
        &self,
        id: i64,
        state: JournalState,
        s: &Settlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            let mut conn = pool.acquire().await?;
            db::settle_on(&mut conn, id, state, s, now).await
        })
    }

    /// [`Store::settle`], then the license as re-read after the call, in one transaction
    /// (one commit). The settlement is what matters: a failure to write the license row is
    /// logged and the settlement committed all the same.
    pub async fn settle_with_license(
        &self,
        id: i64,
        state: JournalState,
        s: &Settlement,
        after: Option<&License>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            let mut tx = pool.begin().await?;
            db::settle_on(&mut tx, id, state, s, now).await?;
            if let Some(l) = after
                && let Err(e) = db::upsert_one(&mut tx, l, now).await
            {
                tracing::warn!(event = "store", elid = l.elid, error = %e, "could not record the license re-read after a renewal");
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Rows whose outcome is not known yet (`sending`, `unknown`).
    pub async fn open_renewals(&self) -> Result<Vec<JournalRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {JOURNAL_COLS} FROM renewals WHERE state IN ('sending', 'unknown') ORDER BY id"
            );
            Ok(sqlx::query_as::<_, JournalRow>(sqlx::AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?)
        })
    }

    /// What the planner needs of the journal: open and successful rows.
    pub async fn journal_for_planning(&self) -> Result<Vec<JournalEntry>, StoreError> {
        on!(self, pool, db => {
            let rows = sqlx::query(
                "SELECT elid, expiry_before, state, error_class FROM renewals
             WHERE state IN ('sending', 'unknown', 'ok', 'reconciled_ok')
                OR (state = 'reconciled_failed' AND error_class = 'gone')",
            )
            .fetch_all(pool)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let state: String = r.try_get("state")?;
                if let Some(state) = JournalState::parse(&state) {
                    let class: Option<String> = r.try_get("error_class")?;
                    out.push(JournalEntry {
                        gone: state == JournalState::ReconciledFailed
                            && class.as_deref() == Some(crate::policy::GONE_CLASS),
                        elid: r.try_get("elid")?,
                        expiry_before: r.try_get("expiry_before")?,
                        state,
                    });
                }
            }
            Ok(out)
        })
    }

    pub async fn history(
        &self,
        elid: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JournalRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {JOURNAL_COLS} FROM renewals WHERE CAST($1 AS BIGINT) IS NULL OR elid = $2 ORDER BY id DESC LIMIT $3"
            );
            Ok(sqlx::query_as::<_, JournalRow>(sqlx::AssertSqlSafe(sql))
                .bind(elid)
                .bind(elid)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?)
        })
    }

    /// What renewals that may have been paid (sending, ok, unknown, reconciled_ok) cost since
    /// `since`, per currency, in hundredths. Renewals of unknown cost are not in it.
    pub async fn spent_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on!(self, pool, db => {
            let rows = sqlx::query(
                "SELECT cost_currency, CAST(SUM(cost_cents) AS BIGINT) AS cents FROM renewals
             WHERE created_at >= $1 AND cost_cents IS NOT NULL
               AND state IN ('sending', 'ok', 'unknown', 'reconciled_ok')
             GROUP BY cost_currency",
            )
            .bind(since)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::new();
            for r in rows {
                out.push((r.try_get("cost_currency")?, r.try_get("cents")?));
            }
            Ok(out)
        })
    }

    /// The last finished cycle of `kind` (`renew` for the service and `licrenew renew`):
    /// (started, ended, outcome, error).
    pub async fn last_cycle(
        &self,
        kind: &str,
    ) -> Result<Option<(DateTime<Utc>, DateTime<Utc>, String, Option<String>)>, StoreError> {
        on!(self, pool, db => {
            let row = sqlx::query(
                "SELECT started_at, ended_at, outcome, error FROM cycles
                 WHERE kind = $1 AND ended_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            )
            .bind(kind)
            .fetch_optional(pool)
            .await?;
            Ok(match row {
                Some(r) => Some((
                    r.try_get("started_at")?,
                    r.try_get("ended_at")?,
                    r.try_get::<Option<String>, _>("outcome")?
                        .unwrap_or_default(),
                    r.try_get("error")?,
                )),
                None => None,
            })
        })
    }

    /// (undelivered, undelivered with a failed attempt) alerts in the outbox.
    pub async fn alert_counts(&self) -> Result<(i64, i64), StoreError> {
        on!(self, pool, db => {
            let r = sqlx::query(
                "SELECT COUNT(*) AS pending, COUNT(CASE WHEN attempts > 0 THEN 1 END) AS failing
                 FROM alerts WHERE delivered_at IS NULL",
            )
            .fetch_one(pool)
            .await?;
            Ok((r.try_get("pending")?, r.try_get("failing")?))
        })
    }

    /// Renewals since `since` that failed or whose outcome is unknown, and that no later
    /// renewal of the same license made good: the problems an operator must see.
    pub async fn unresolved_failures(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<JournalRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {JOURNAL_COLS} FROM renewals r WHERE created_at >= $1
               AND state IN ('error', 'unknown', 'sending', 'reconciled_failed')
               AND NOT EXISTS (SELECT 1 FROM renewals o WHERE o.elid = r.elid AND o.id > r.id
                               AND o.state IN ('ok', 'reconciled_ok'))
             ORDER BY id DESC"
            );
            Ok(sqlx::query_as::<_, JournalRow>(sqlx::AssertSqlSafe(sql))
                .bind(since)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Paid calls recorded for a cycle.
    pub async fn paid_calls_in_cycle(&self, cycle: i64) -> Result<u32, StoreError> {
        on!(self, pool, db => {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM renewals WHERE cycle_id = $1")
                .bind(cycle)
                .fetch_one(pool)
                .await?
                .try_get(0)?;
            Ok(n as u32)
        })
    }
}

/// One journaled order or edit (issue 10.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OperationRow {
    pub id: i64,
    /// `order` or `edit`.
    pub kind: String,
    pub elid: Option<i64>,
    pub product: Option<i64>,
    pub period: Option<i64>,
    pub licname: Option<String>,
    pub ip: Option<String>,
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error_class: Option<String>,
    pub error_type: Option<String>,
    pub error_object: Option<String>,
    pub error_msg: Option<String>,
}

impl OperationRow {
    pub fn state(&self) -> Option<JournalState> {
        JournalState::parse(&self.state)
    }
}

/// An order or edit about to be sent.
#[derive(Clone, Debug)]
pub struct OperationIntent<'a> {
    pub kind: &'static str,
    pub elid: Option<i64>,
    pub product: Option<i64>,
    pub period: Option<i64>,
    pub licname: Option<&'a str>,
    pub ip: Option<&'a str>,
}

const OPERATION_COLS: &str = "id, kind, elid, product, period, licname, ip, state, created_at, finished_at, error_class, error_type, error_object, error_msg";

impl Store {
    /// Writes an order/edit intent and commits it before the request leaves. `None` when an
    /// order of the same product, name and IP is still open (the unique index refuses it).
    pub async fn insert_operation(
        &self,
        op: &OperationIntent<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let fence = self.fence_locks()?;
        let sql = format!(
            "INSERT INTO operations (kind, elid, product, period, licname, ip, state, created_at)
             SELECT $1, $2, $3, $4, $5, $6, 'sending', $7 WHERE TRUE{} RETURNING id",
            fence_sql(fence.len(), 8)
        );
        on!(self, pool, db => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(op.kind)
                .bind(op.elid)
                .bind(op.product)
                .bind(op.period)
                .bind(op.licname)
                .bind(op.ip)
                .bind(now);
            for (pid, key) in &fence {
                q = q.bind(*pid).bind(*key);
            }
            let res = q.fetch_optional(pool).await;
            match res {
                Ok(Some(r)) => Ok(Some(r.try_get::<i64, _>("id")?)),
                // Only the fence can make the insert write nothing.
                Ok(None) => Err(Store::not_leader()),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Settles an order/edit; `elid` records the license an order created, once known.
    pub async fn settle_operation(
        &self,
        id: i64,
        state: JournalState,
        elid: Option<i64>,
        s: &Settlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query(
                "UPDATE operations SET state = $1, finished_at = $2, elid = COALESCE($3, elid),
             error_class = COALESCE($4, error_class), error_type = COALESCE($5, error_type),
             error_object = COALESCE($6, error_object), error_msg = COALESCE($7, error_msg) WHERE id = $8",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(elid)
            .bind(&s.error_class)
            .bind(&s.error_type)
            .bind(&s.error_object)
            .bind(&s.error_msg)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Orders of this product, name and IP that are open, or were made since `since` and may
    /// have bought a license: what a retry must look for before ordering again.
    pub async fn earlier_orders(
        &self,
        product: i64,
        licname: &str,
        ip: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<OperationRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {OPERATION_COLS} FROM operations WHERE kind = 'order' AND product = $1 AND licname = $2 AND ip = $3
                 AND (state IN ('sending', 'unknown') OR (created_at >= $4 AND state IN ('ok', 'reconciled_ok'))) ORDER BY id"
            );
            Ok(sqlx::query_as::<_, OperationRow>(sqlx::AssertSqlSafe(sql))
                .bind(product)
                .bind(licname)
                .bind(ip)
                .bind(since)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Orders and edits, newest first.
    pub async fn operations(
        &self,
        elid: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OperationRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {OPERATION_COLS} FROM operations WHERE CAST($1 AS BIGINT) IS NULL OR elid = $2 ORDER BY id DESC LIMIT $3"
            );
            Ok(sqlx::query_as::<_, OperationRow>(sqlx::AssertSqlSafe(sql))
                .bind(elid)
                .bind(elid)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?)
        })
    }
}

/// A problem alerted and not resolved yet: the ids raised for its subject, the latest kind and
/// document.
#[derive(Clone, Debug, Default)]
pub struct OpenProblem {
    pub ids: Vec<String>,
    pub kind: String,
    pub alert: Option<crate::alerts::Alert>,
}

/// One delivery waiting in (or delivered from) the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub key: String,
    pub sink: String,
    /// The kind delivered: `digest` or an alert kind.
    pub event: String,
    pub severity: String,
    /// The id of the digest or alert delivered.
    pub alert_id: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

const ALERT_COLS: &str = "id, key, sink, event, severity, alert_id, payload, created_at, attempts, next_attempt_at, delivered_at, last_error";

impl Store {
    /// A transaction for one call of `alerts::queue`: what it records, resolves and queues
    /// is committed together (a crash between recording an alert and queueing its delivery
    /// would otherwise mark it seen and never send it).
    pub async fn alert_batch(&self) -> Result<AlertBatch, StoreError> {
        Ok(AlertBatch {
            tx: match &self.pool {
                Pool::Sqlite(p) => BatchTx::Sqlite(p.begin().await?),
                Pool::Pg(p) => BatchTx::Pg(p.begin().await?),
            },
        })
    }

    /// [`AlertBatch::record_alert`] in a transaction of its own.
    pub async fn record_alert(
        &self,
        id: &str,
        kind: &str,
        subject: Option<&str>,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut b = self.alert_batch().await?;
        let new = b.record_alert(id, kind, subject, payload, now).await?;
        b.commit().await?;
        Ok(new)
    }

    /// The problems alerted and not resolved, by subject.
    pub async fn open_problems(
        &self,
    ) -> Result<std::collections::HashMap<String, OpenProblem>, StoreError> {
        on!(self, pool, db => {
            let rows = sqlx::query(
                "SELECT id, kind, subject, payload FROM alert_log
                 WHERE subject IS NOT NULL AND resolved_at IS NULL ORDER BY raised_at, id",
            )
            .fetch_all(pool)
            .await?;
            let mut out: std::collections::HashMap<String, OpenProblem> =
                std::collections::HashMap::new();
            for r in rows {
                let subject: String = r.try_get("subject")?;
                let p = out.entry(subject).or_default();
                p.ids.push(r.try_get("id")?);
                p.kind = r.try_get("kind")?;
                let payload: String = r.try_get("payload")?;
                p.alert = serde_json::from_str(&payload).ok();
            }
            Ok(out)
        })
    }

    /// Undelivered alerts whose next attempt is due, oldest first.
    pub async fn due_alerts(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<AlertRow>, StoreError> {
        on!(self, pool, db => {
            let sql = format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE delivered_at IS NULL AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
            );
            Ok(sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?)
        })
    }

    pub async fn alert_delivered(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query("UPDATE alerts SET delivered_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub async fn alert_failed(
        &self,
        id: i64,
        error: &str,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on!(self, pool, db => {
            sqlx::query("UPDATE alerts SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3")
                .bind(error)
                .bind(next)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }
}

/// See [`Store::alert_batch`].
pub struct AlertBatch {
    tx: BatchTx,
}

enum BatchTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Runs `$body` with `$t` the batch's transaction, whatever its backend.
macro_rules! on_tx {
    ($batch:expr, $t:ident => $body:expr) => {
        match &mut $batch.tx {
            BatchTx::Sqlite($t) => $body,
            BatchTx::Pg($t) => $body,
        }
    };
}

impl AlertBatch {
    /// Puts a delivery in the outbox unless one with the same key is there already.
    /// Returns whether it was new.
    #[allow(clippy::too_many_arguments)]
    pub async fn enqueue_alert(
        &mut self,
        key: &str,
        sink: &str,
        kind: &str,
        severity: &str,
        alert_id: &str,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_tx!(self, t => {
            let r = sqlx::query(
                "INSERT INTO alerts (key, sink, event, severity, alert_id, payload, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT(key) DO NOTHING",
            )
            .bind(key)
            .bind(sink)
            .bind(kind)
            .bind(severity)
            .bind(alert_id)
            .bind(payload)
            .bind(now)
            .bind(now)
            .execute(&mut **t)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Remembers an alert by its id; with a subject it is an open problem until resolved.
    /// Returns whether the id was new (or raised again after its problem was resolved).
    pub async fn record_alert(
        &mut self,
        id: &str,
        kind: &str,
        subject: Option<&str>,
        payload: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_tx!(self, t => {
            let r = sqlx::query(
                // An id raised again after its problem was resolved opens it again (new).
                "INSERT INTO alert_log (id, kind, subject, payload, raised_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(id) DO UPDATE SET resolved_at = NULL, raised_at = excluded.raised_at,
                 payload = excluded.payload, subject = excluded.subject
             WHERE alert_log.resolved_at IS NOT NULL",
            )
            .bind(id)
            .bind(kind)
            .bind(subject)
            .bind(payload)
            .bind(now)
            .execute(&mut **t)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Closes the open problems of `subject` (only the alerts `ids` when given); the ids of
    /// the alerts it closed.
    pub async fn resolve_problem(
        &mut self,
        subject: &str,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        on_tx!(self, t => {
            let mut rows = Vec::new();
            if ids.is_empty() {
                rows = sqlx::query(
                    "UPDATE alert_log SET resolved_at = $1 WHERE subject = $2 AND resolved_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(subject)
                .fetch_all(&mut **t)
                .await?;
            }
            for id in ids {
                rows.extend(
                    sqlx::query(
                        "UPDATE alert_log SET resolved_at = $1 WHERE id = $2 AND subject = $3 AND resolved_at IS NULL RETURNING id",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(subject)
                    .fetch_all(&mut **t)
                    .await?,
                );
            }
            let mut closed = rows
                .iter()
                .map(|r| r.try_get::<String, _>("id"))
                .collect::<Result<Vec<_>, _>>()?;
            closed.sort();
            Ok(closed)
        })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx {
            BatchTx::Sqlite(t) => t.commit().await?,
            BatchTx::Pg(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// Rows per multi-row statement: 16 parameters each, well under SQLite's 32,766.
const ROWS_PER_STATEMENT: usize = 1000;

/// `INSERT … VALUES (…), …` for `rows` new licenses.
fn insert_sql(rows: usize, numbered: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO licenses (elid, licname, ip, product, period, expiry, status, status_raw, first_seen, last_seen, gone_since, autoprolong, pricelist_label, special, cost_cents, cost_currency, fields_hash) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        if numbered {
            // PostgreSQL: `$n`, 16 a row.
            let p: Vec<String> = (1..=16).map(|k| format!("${}", i * 16 + k)).collect();
            sql.push_str(&format!(
                "({}, NULL, {})",
                p[..10].join(", "),
                p[10..].join(", ")
            ));
        } else {
            // SQLite: plain `?`. sqlx-sqlite resolves each numbered parameter by its name,
            // which over 16,000 parameters made the first sync of 100,000 licenses take 32 s
            // instead of 1.3 s (measured).
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)");
        }
    }
    sql
}

/// `INSERT … VALUES (…), … ON CONFLICT(elid) DO UPDATE …` for `rows` licenses.
fn upsert_sql(rows: usize, numbered: bool) -> String {
    let mut sql = insert_sql(rows, numbered);
    sql.push_str(UPSERT_TAIL);
    sql
}

/// The update of an upsert: every listed field, `last_seen`, back from gone; lapsed only while
/// the expiry stays; what a view does not show kept.
const UPSERT_TAIL: &str = " ON CONFLICT(elid) DO UPDATE SET licname = excluded.licname, ip = excluded.ip, product = excluded.product,
           period = excluded.period, expiry = excluded.expiry, status = excluded.status, status_raw = excluded.status_raw,
           last_seen = excluded.last_seen, gone_since = NULL, autoprolong = excluded.autoprolong,
           lapsed_since = CASE WHEN excluded.expiry = licenses.expiry THEN licenses.lapsed_since END,
           pricelist_label = COALESCE(excluded.pricelist_label, licenses.pricelist_label),
           special = excluded.special,
           cost_cents = COALESCE(excluded.cost_cents, licenses.cost_cents),
           cost_currency = COALESCE(excluded.cost_currency, licenses.cost_currency),
           fields_hash = excluded.fields_hash";

/// The renewal lock, held for as long as it lives (see [`Store::renewal_lock`]).
pub struct RenewalLock {
    _file: Option<ProcessLock>,
    /// PostgreSQL: the session holding the advisory lock (closing it frees the lock).
    _session: Option<sqlx::PgConnection>,
    fence: Option<Arc<Mutex<Fence>>>,
    held: Option<(i32, i64)>,
}

impl Drop for RenewalLock {
    fn drop(&mut self) {
        if let (Some(f), Some(held)) = (&self.fence, self.held) {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            // Only its own (a lock taken after it is not undone).
            if f.renew == Some(held) {
                f.renew = None;
            }
        }
    }
}

/// A `meta` value of the SQLite file at `path`, read without creating, migrating or
/// changing anything (no WAL switch): `None` when the file, the table or the key is missing.
pub async fn peek_sqlite_meta(path: &Path, key: &str) -> Option<String> {
    use sqlx::Connection;
    if !path.is_file() {
        return None;
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.ok()?;
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
    let _ = conn.close().await;
    value
}

/// Holds the per-database process lock for as long as it lives.
#[derive(Debug)]
pub struct ProcessLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Takes the renewal lock beside the database (`DB.lock`): held while a cycle or a paid
/// command runs, never by read-only commands. Says who holds it when it cannot.
pub fn lock(db: &Path) -> Result<ProcessLock, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            StoreError::Locked(format!("cannot open lock file {}: {e}", path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Write;
            let _ = file.set_len(0);
            let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(ProcessLock { _file: file, path })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(StoreError::Busy(format!(
                "another licrenew process (pid {}) is renewing with {}; only one may at a time (lock: {})",
                holder.trim(),
                db.display(),
                path.display()
            )))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Locked(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh SQLite file; the folder lives as long as the first value.
    async fn sqlite_store() -> (tempfile::TempDir, PathBuf, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.db");
        let store = Store::open(&path).await.expect("open");
        (dir, path, store)
    }

    fn lic(elid: i64, expiry: NaiveDate) -> License {
        License {
            elid,
            licname: format!("l{elid}"),
            ip: "203.0.113.1".into(),
            product: 7,
            period: Some(8),
            expiry,
            status: Status::Active,
            autoprolong: false,
            special: None,
            cost: None,
            pricelist_label: None,
        }
    }

    fn intent(elid: i64, expiry: NaiveDate, cycle: Option<i64>) -> Intent {
        Intent {
            elid,
            licname: "x".into(),
            product: 7,
            period: 8,
            expiry_before: expiry,
            source: "policy",
            cycle_id: cycle,
            policy_file: None,
            policy_hash: None,
            cost: None,
        }
    }

    /// A test database on each backend: SQLite in a temporary folder, and PostgreSQL (a fresh
    /// database, [`crate::pgtest`]) when the test server answers.
    struct TestDb {
        /// The renewal lock, as every paid path holds it (dropped first).
        _lock: RenewalLock,
        store: Store,
        name: &'static str,
        _dir: Option<tempfile::TempDir>,
        _pg: Option<crate::pgtest::PgTestDatabase>,
    }

    const TEST_KEY: i64 = 0x6c69_6372_656e_6577;

    #[tokio::test]
    async fn on_postgres_no_intent_is_written_without_the_renewal_lock_or_after_losing_it() {
        let Some(pg) = crate::pgtest::PgTestDatabase::create().await else {
            return;
        };
        let store = Store::open_postgres(&pg.url).await.expect("open");
        let other = Store::open_postgres(&pg.url).await.expect("open");
        let now = Utc::now();

        let unlocked = store
            .insert_intent(&intent(1, d("2030-01-01"), None), None, now)
            .await;
        let lock = store.renewal_lock(TEST_KEY, false).await.expect("lock");
        let busy = other.renewal_lock(TEST_KEY, false).await;
        let locked = store
            .insert_intent(&intent(2, d("2030-01-01"), None), None, now)
            .await;
        // The lock's session cut from outside (a partition): the store still believes it
        // holds the lock, the server does not.
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&pg.url).await.expect("admin");
        let pid = store.fence.lock().expect("fence").renew.expect("held").0;
        // With a timeout, it returns once the backend has exited (its locks released), not
        // as soon as it was signalled: the fence reads what the server lists.
        sqlx::query("SELECT pg_terminate_backend($1, 5000)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .expect("terminate");
        let cut = store
            .insert_intent(&intent(3, d("2030-01-01"), None), None, now)
            .await;
        let op = store
            .insert_operation(
                &OperationIntent {
                    kind: "order",
                    elid: None,
                    product: Some(7),
                    period: Some(8),
                    licname: Some("x"),
                    ip: Some("203.0.113.9"),
                },
                now,
            )
            .await;
        drop(lock);
        let after = store
            .insert_intent(&intent(4, d("2030-01-01"), None), None, now)
            .await;

        assert!(
            matches!(unlocked, Err(StoreError::NotLeader(_))),
            "{unlocked:?}"
        );
        assert!(matches!(busy, Err(StoreError::Busy(_))), "{:?}", busy.err());
        assert!(matches!(locked, Ok(IntentResult::Written(_))), "{locked:?}");
        assert!(matches!(cut, Err(StoreError::NotLeader(_))), "{cut:?}");
        assert!(matches!(op, Err(StoreError::NotLeader(_))), "{op:?}");
        assert!(matches!(after, Err(StoreError::NotLeader(_))), "{after:?}");
        let rows = store.history(None, 10).await.expect("history");
        assert_eq!(rows.iter().map(|r| r.elid).collect::<Vec<_>>(), [2]);
        let _ = admin.close().await;
        store.close().await;
        other.close().await;
    }

    async fn backends() -> Vec<TestDb> {
        let dir = tempfile::tempdir().expect("tmp");
        let lite = Store::open(&dir.path().join("s.db")).await.expect("open");
        let mut out = vec![TestDb {
            _lock: lite.renewal_lock(TEST_KEY, false).await.expect("lock"),
            store: lite,
            name: "sqlite",
            _dir: Some(dir),
            _pg: None,
        }];
        if let Some(pg) = crate::pgtest::PgTestDatabase::create().await {
            let store = Store::open_postgres(&pg.url).await.expect("open postgres");
            out.push(TestDb {
                _lock: store.renewal_lock(TEST_KEY, false).await.expect("lock"),
                store,
                name: "postgres",
                _dir: None,
                _pg: Some(pg),
            });
        }
        out
    }

    fn d(s: &str) -> NaiveDate {
        crate::domain::parse_date(s).expect("date")
    }

    #[tokio::test]
    async fn the_unique_index_refuses_a_second_renewal_of_one_expiry_until_it_is_proven_failed() {
        for db in backends().await {
            let store = &db.store;
            eprintln!("backend: {}", db.name);
            let now = Utc::now();

            let first = store
                .insert_intent(&intent(1, d("2030-01-01"), None), None, now)
                .await
                .expect("insert");
            let second = store
                .insert_intent(&intent(1, d("2030-01-01"), None), None, now)
                .await
                .expect("insert");
            let IntentResult::Written(id) = first else {
                panic!("{first:?}")
            };
            store
                .settle(
                    id,
                    JournalState::ReconciledFailed,
                    &Settlement::default(),
                    now,
                )
                .await
                .expect("settle");
            let third = store
                .insert_intent(&intent(1, d("2030-01-01"), None), None, now)
                .await
                .expect("insert");
            let other_expiry = store
                .insert_intent(&intent(1, d("2030-02-01"), None), None, now)
                .await
                .expect("insert");

            assert_eq!(second, IntentResult::Duplicate);
            assert!(matches!(third, IntentResult::Written(_)));
            assert!(matches!(other_expiry, IntentResult::Written(_)));
            assert_eq!(store.integrity_check().await.expect("check"), "ok");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn the_cycle_cap_is_counted_from_the_journal() {
        for db in backends().await {
            let store = &db.store;
            eprintln!("backend: {}", db.name);
            let now = Utc::now();
            let cycle = store.begin_cycle("renew", now).await.expect("cycle");

            let mut results = Vec::new();
            for elid in 1..=4 {
                results.push(
                    store
                        .insert_intent(&intent(elid, d("2030-01-01"), Some(cycle)), Some(2), now)
                        .await
                        .expect("insert"),
                );
            }

            assert!(matches!(results[0], IntentResult::Written(_)));
            assert!(matches!(results[1], IntentResult::Written(_)));
            assert_eq!(
                &results[2..],
                &[IntentResult::CapReached, IntentResult::CapReached]
            );
            assert_eq!(store.paid_calls_in_cycle(cycle).await.expect("count"), 2);
            store.close().await;
        }
    }

    fn stats(s: &SyncStats) -> (u32, u32, u32) {
        (s.inserted, s.updated, s.unchanged)
    }

    #[tokio::test]
    async fn chunks_written_together_keep_one_row_per_license_the_last_listing_winning() {
        for db in backends().await {
            let store = &db.store;
            eprintln!("backend: {}", db.name);
            let now = Utc::now();
            let end = d("2030-12-31");
            store
                .record_listing(&[lic(5, d("2030-01-01"))], end, now)
                .await
                .expect("record");
            // A sync that lists 5 changed, then (a retried read, a server listing it twice)
            // changed again, with new licenses around it: its chunks wait for the writer
            // together, and go out as one transaction (one statement on PostgreSQL).
            let mut recorder = store.listing_recorder().await.expect("recorder");
            let mut renamed = lic(5, d("2030-01-01"));
            renamed.licname = "first".into();
            recorder.add(&renamed);
            recorder.add(&lic(6, d("2030-01-02")));
            let first = recorder.take_pending();
            renamed.licname = "second".into();
            recorder.add(&renamed);
            let mut seven = lic(7, d("2030-01-03"));
            recorder.add(&seven);
            let second = recorder.take_pending();
            seven.licname = "seven again".into();
            recorder.add(&seven);
            let third = recorder.take_pending();
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            for chunk in [first, second, third] {
                tx.send(chunk).await.expect("queued");
            }
            drop(tx);
            store
                .write_listed_stream(&mut rx, now, 1000, Duration::from_secs(1))
                .await
                .expect("one transaction for the three chunks");
            let stats = recorder.finish(end);

            assert_eq!(stats.inserted, 2);
            assert_eq!(stats.updated, 1, "5 counted once");
            let name = |elid| async move {
                store
                    .license(elid)
                    .await
                    .expect("read")
                    .expect("row")
                    .licname
            };
            assert_eq!(name(5).await, "second");
            assert_eq!(name(6).await, "l6");
            assert_eq!(name(7).await, "seven again");
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_sync_writer_waiting_for_the_list_commits_what_it_has_after_open_for() {
        let (_dir, path, store) = sqlite_store().await;
        let mut recorder = store.listing_recorder().await.expect("recorder");
        recorder.add(&lic(1, d("2030-01-01")));
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tx.send(recorder.take_pending()).await.expect("queued");
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_listed_stream(&mut rx, Utc::now(), 1000, Duration::from_millis(100))
                    .await
            })
        };
        // The list is slow: its next rows do not come. What was written is committed anyway,
        // and another reader sees it while the sync still runs.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut reader = sqlx::ConnectOptions::connect(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true),
        )
        .await
        .expect("reader");
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM licenses")
            .fetch_one(&mut reader)
            .await
            .expect("count");
        recorder.add(&lic(2, d("2030-01-02")));
        tx.send(recorder.take_pending()).await.expect("queued");
        drop(tx);
        writer.await.expect("task").expect("written");
        drop(reader);

        assert_eq!(seen, 1, "committed while the writer waited");
        assert_eq!(store.licenses().await.expect("all").len(), 2);
        store.close().await;
    }

    #[tokio::test]
    async fn a_license_listed_unchanged_then_changed_counts_as_one_update() {
        let (_dir, _, store) = sqlite_store().await;
        let now = Utc::now();
        let end = d("2030-12-31");
        store
            .record_listing(&[lic(1, d("2030-01-01"))], end, now)
            .await
            .expect("record");
        let mut changed = lic(1, d("2030-01-01"));
        changed.licname = "renamed".into();

        let again = store
            .record_listing(&[lic(1, d("2030-01-01")), changed], end, now)
            .await
            .expect("record");

        assert_eq!(stats(&again), (0, 1, 0));
        let back = store.license(1).await.expect("read").expect("row");
        assert_eq!(back.licname, "renamed", "the last listing wins");
        store.close().await;
    }

    #[tokio::test]
    async fn a_sync_stores_its_timestamp_as_sqlx_stores_a_bound_one() {
        let (_dir, _, store) = sqlite_store().await;
        // Sub-second digits, and none: each is written as sqlx's own `Encode` writes it.
        let stamps = [
            Utc::now(),
            DateTime::from_timestamp(1_900_000_000, 0).expect("time"),
            DateTime::from_timestamp(1_900_000_000, 120_000_000).expect("time"),
        ];
        let Pool::Sqlite(pool) = &store.pool else {
            unreachable!()
        };
        for (i, now) in stamps.into_iter().enumerate() {
            store
                .record_listing(&[lic(i as i64 + 1, d("2030-01-01"))], d("2030-12-31"), now)
                .await
                .expect("record");
            let bound: String = sqlx::query_scalar("SELECT CAST($1 AS TEXT)")
                .bind(now)
                .fetch_one(pool)
                .await
                .expect("bound");
            let stored: String =
                sqlx::query_scalar("SELECT first_seen FROM licenses WHERE elid = $1")
                    .bind(i as i64 + 1)
                    .fetch_one(pool)
                    .await
                    .expect("stored");
            assert_eq!(stored, bound);
            let back = store
                .license(i as i64 + 1)
                .await
                .expect("read")
                .expect("row");
            assert_eq!(back.first_seen, now);
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_listing_inserts_then_writes_only_changes_and_gone_licenses_come_back() {
        let (_dir, path, store) = sqlite_store().await;
        let now = Utc::now();
        let end = d("2030-12-31");

        let a = store
            .record_listing(
                &[lic(1, d("2030-01-01")), lic(2, d("2030-01-02"))],
                end,
                now,
            )
            .await
            .expect("record");
        let same = store
            .record_listing(
                &[lic(1, d("2030-01-01")), lic(2, d("2030-01-02"))],
                end,
                now,
            )
            .await
            .expect("record");
        store.mark_gone(2, now).await.expect("gone");
        let b = store
            .record_listing(
                &[lic(1, d("2030-01-01")), lic(2, d("2030-03-01"))],
                end,
                now,
            )
            .await
            .expect("record");
        store.close().await;
        let reopened = Store::open(&path)
            .await
            .expect("reopen runs migrations idempotently");
        let back = reopened.license(2).await.expect("read").expect("row");

        assert_eq!(stats(&a), (2, 0, 0));
        assert_eq!(
            stats(&same),
            (0, 0, 2),
            "nothing written when nothing changed"
        );
        assert_eq!(stats(&b), (0, 1, 1));
        assert_eq!(back.gone_since, None);
        assert_eq!(back.expiry, d("2030-03-01"));
    }

    #[tokio::test]
    async fn a_listing_larger_than_one_chunk_is_counted_and_the_unlisted_left_the_window() {
        for db in backends().await {
            let store = &db.store;
            eprintln!("backend: {}", db.name);
            let t0 = Utc::now();
            let end = d("2030-02-01");
            let all: Vec<License> = (1..=1203).map(|i| lic(i, d("2030-01-01"))).collect();
            let first = store.record_listing(&all, end, t0).await.expect("record");
            // Listed again later: all but 5 and 700, one renamed, plus two new ones, one of them
            // twice.
            let t1 = t0 + chrono::TimeDelta::seconds(60);
            let mut again: Vec<License> = all
                .iter()
                .filter(|l| l.elid != 5 && l.elid != 700)
                .cloned()
                .collect();
            again[0].licname = "renamed".into();
            again.extend([lic(2000, d("2030-01-02")), lic(2001, d("2030-01-02"))]);
            again.push(lic(2001, d("2030-01-03")));
            let second = store.record_listing(&again, end, t1).await.expect("record");

            assert_eq!(stats(&first), (1203, 0, 0));
            assert!(first.left.is_empty());
            assert_eq!(stats(&second), (2, 1, 1200));
            assert_eq!(second.left, vec![5, 700]);
            let dup = store.license(2001).await.expect("read").expect("row");
            assert_eq!(dup.expiry, d("2030-01-03"), "the last duplicate wins");
            assert_eq!(store.licenses().await.expect("all").len(), 1205);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn the_view_and_intent_commit_together_and_a_refused_intent_keeps_the_view() {
        for db in backends().await {
            let store = &db.store;
            eprintln!("backend: {}", db.name);
            let now = Utc::now();
            let mut fresh = lic(1, d("2030-01-01"));
            let first = store
                .record_view_and_intent(&fresh, &intent(1, d("2030-01-01"), None), None, now)
                .await
                .expect("intent");
            fresh.licname = "renamed".into();
            let second = store
                .record_view_and_intent(&fresh, &intent(1, d("2030-01-01"), None), None, now)
                .await
                .expect("intent");
            let row = store.license(1).await.expect("read").expect("row");
            let open = store.open_renewals().await.expect("open rows");

            assert!(matches!(first, IntentResult::Written(_)));
            assert_eq!(
                second,
                IntentResult::Duplicate,
                "the unique index still refuses"
            );
            assert_eq!(row.licname, "renamed");
            assert_eq!(open.len(), 1);

            let IntentResult::Written(id) = first else {
                unreachable!()
            };
            let mut after = fresh.clone();
            after.expiry = d("2030-02-01");
            let s = Settlement {
                new_expiry: Some(after.expiry),
                ..Settlement::default()
            };
            store
                .settle_with_license(id, JournalState::Ok, &s, Some(&after), now)
                .await
                .expect("settle");
            assert!(store.open_renewals().await.expect("open rows").is_empty());
            let row = store.license(1).await.expect("read").expect("row");
            assert_eq!(row.expiry, d("2030-02-01"));

            store
                .set_decisions(&[(1, "ok", None), (99, "skipped", Some("no policy"))], now)
                .await
                .expect("decisions");
            let row = store.license(1).await.expect("read").expect("row");
            assert_eq!(row.last_outcome.as_deref(), Some("ok"));
            store.close().await;
        }
    }

    #[test]
    fn a_runtime_ends_promptly_even_with_a_store_dropped_unclosed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("s.db");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = Store::open(&path).await.expect("open");
                store.integrity_check().await.expect("check");
                drop(store);
            });
            drop(rt);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the runtime shut down with the unclosed store");
    }

    #[test]
    fn a_second_process_lock_on_one_database_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("s.db");
        let _held = lock(&db).expect("first lock");
        // A second open file description conflicts with flock even within one process.
        let err = lock(&db).expect_err("second lock");
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
        assert!(
            err.to_string().contains("another licrenew process"),
            "{err}"
        );
    }
}
