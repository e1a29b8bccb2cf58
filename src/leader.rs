//! Leadership on PostgreSQL: one
//! instance of those sharing a database holds a session-level advisory lock on a key derived
//! from the billing account, on a connection of its own (never a pooled one: the lock belongs
//! to the session). The session carries the host and pid in its `application_name` (so anyone
//! can see who leads) and TCP keepalives, so the server frees the lock soon after the holder
//! goes silent. Must not decide anything about renewals: it only says who leads, and when that
//! ended.

use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::str::FromStr;
use std::time::Duration;

/// The advisory-lock key of `scope` (`leader`, `renew`) for one billing account: the first
/// eight bytes of SHA-256 over the scope, the URL and the username. Stable across versions
/// and machines, different per account.
pub fn key(scope: &str, billmgr_url: &str, username: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"licrenew/");
    h.update(scope.as_bytes());
    h.update(b"/");
    h.update(billmgr_url.as_bytes());
    h.update(b"/");
    h.update(username.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// This instance's name in `pg_stat_activity.application_name`: `licrenew <host> <pid>`.
pub fn application_name() -> String {
    // PostgreSQL keeps 63 bytes of it: a long host name is cut, never the pid.
    let pid = std::process::id().to_string();
    let mut host = crate::config::hostname();
    let room = 63 - "licrenew ".len() - 1 - pid.len();
    if host.len() > room {
        let mut cut = room;
        while !host.is_char_boundary(cut) {
            cut -= 1;
        }
        host.truncate(cut);
    }
    format!("licrenew {host} {pid}")
}

/// Opens a session of its own with `opts`, within 10 s (a partition must not hang a
/// standby, a leader's heartbeat or a status page).
pub async fn connect(opts: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(opts)).await {
        Ok(r) => r,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the database did not answer within 10 s",
        ))),
    }
}

/// `licrenew <host> <pid>` as `<host> pid <pid>` (other names as they are).
pub fn describe(application_name: &str) -> String {
    let mut w = application_name.split(' ').skip(1);
    match (w.next(), w.next()) {
        (Some(h), Some(p)) => format!("{h} pid {p}"),
        _ => application_name.to_owned(),
    }
}

/// A new session (see [`connect`]) that tries the session-level advisory lock `key` once:
/// the session, and its backend pid when it got the lock (the pid is what the intent fence
/// names).
pub async fn try_lock(
    opts: &PgConnectOptions,
    key: i64,
) -> Result<(PgConnection, Option<i32>), sqlx::Error> {
    let mut conn = connect(opts).await?;
    let (got, pid): (bool, i32) =
        sqlx::query_as("SELECT pg_try_advisory_lock($1), pg_backend_pid()")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
    Ok((conn, got.then_some(pid)))
}

/// A held leadership: the session that holds the lock.
pub struct Leadership {
    conn: PgConnection,
    key: i64,
    pid: i32,
}

/// The session options of a leader: named after this process, with TCP keepalives so the
/// server frees the lock within ~20 s of this host going silent.
pub fn session_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name(&application_name())
        .options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]))
}

impl Leadership {
    /// One attempt: a new session, then `pg_try_advisory_lock`. `None` when another session
    /// holds the key.
    pub async fn try_acquire(
        opts: &PgConnectOptions,
        key: i64,
    ) -> Result<Option<Leadership>, sqlx::Error> {
        let (conn, got) = try_lock(opts, key).await?;
        if let Some(pid) = got {
            Ok(Some(Leadership { conn, key, pid }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Tries every `retry` until this instance leads, or `stop` is set (`None`). Connection
    /// errors are retried too: a standby outlives a database restart.
    pub async fn acquire(
        opts: &PgConnectOptions,
        key: i64,
        retry: Duration,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Option<Leadership> {
        loop {
            if *stop.borrow() {
                return None;
            }
            match Leadership::try_acquire(opts, key).await {
                Ok(Some(l)) => return Some(l),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(event = "leader", error = %e, "standby: the database is not reachable")
                }
            }
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.changed() => return None,
            }
        }
    }

    /// Whether this session still holds the lock, asked within `timeout`: the session answers
    /// and the server lists the lock as granted to it. Anything else (a cut connection, a
    /// terminated backend, a silent network) means the leadership is over.
    pub async fn still_held(&mut self, timeout: Duration) -> bool {
        let ask = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND pid = pg_backend_pid()
                 AND objsubid = 1
                 AND classid = (($1 >> 32) & 4294967295)::oid
                 AND objid = ($1 & 4294967295)::oid)",
        )
        .bind(self.key)
        .fetch_one(&mut self.conn);
        matches!(tokio::time::timeout(timeout, ask).await, Ok(Ok(true)))
    }

    /// The session and key holding the leadership, for the intent fence.
    pub fn fence(&self) -> (i32, i64) {
        (self.pid, self.key)
    }

    /// Gives the leadership up (the lock goes with the session).
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// Who holds `key` now, as `application_name` (`licrenew <host> <pid>`), if anyone.
pub async fn holder(conn: &mut PgConnection, key: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid = (($1 >> 32) & 4294967295)::oid
           AND l.objid = ($1 & 4294967295)::oid
         LIMIT 1",
    )
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Who holds `key` now, asked on a session of its own: `<host> pid <pid>`, if anyone.
pub async fn who_leads(opts: &PgConnectOptions, key: i64) -> Result<Option<String>, sqlx::Error> {
    let mut conn = connect(opts).await?;
    let who = holder(&mut conn, key).await;
    let _ = conn.close().await;
    Ok(who?.as_deref().map(describe))
}

/// The licrenew processes connected to the database (`application_name` `licrenew <host>
/// <pid>`), each with whether it holds `key` (leads).
pub async fn instances(
    conn: &mut PgConnection,
    key: i64,
) -> Result<Vec<(String, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.application_name,
                bool_or(l.pid IS NOT NULL) AS leads
         FROM pg_stat_activity a
         LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
           AND l.objsubid = 1 AND l.database = a.datid
           AND l.classid = (($1 >> 32) & 4294967295)::oid
           AND l.objid = ($1 & 4294967295)::oid
         WHERE a.datname = current_database() AND a.application_name LIKE 'licrenew %'
         GROUP BY a.application_name
         ORDER BY 2 DESC, 1",
    )
    .bind(key)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_per_account_and_scope() {
        let a = key("leader", "https://billing.example/billmgr", "reseller");
        assert_eq!(
            a,
            key("leader", "https://billing.example/billmgr", "reseller")
        );
        assert_ne!(
            a,
            key("renew", "https://billing.example/billmgr", "reseller")
        );
        assert_ne!(a, key("leader", "https://billing.example/billmgr", "other"));
        assert_ne!(
            a,
            key("leader", "https://other.example/billmgr", "reseller")
        );
    }
}
