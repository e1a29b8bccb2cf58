//! Test support, like [`crate::sim`]: a fresh PostgreSQL database on the test server
//! (`LICRENEW_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//! when the value is dropped. Used by the store's unit tests and the integration tests; not
//! by the service.

use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A fresh database, dropped (with `FORCE`) when this is dropped.
pub struct PgTestDatabase {
    admin: String,
    pub name: String,
    pub url: String,
}

impl PgTestDatabase {
    /// A new database on the test server, or `None` (saying why on stderr) when none answers
    /// within 3 s; with `LICRENEW_REQUIRE_POSTGRES=1` (CI) a missing server panics instead.
    pub async fn create() -> Option<PgTestDatabase> {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var("LICRENEW_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let connected =
            tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&admin)).await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return skipped(&admin, &e.to_string()),
            Err(_) => return skipped(&admin, "no answer within 3 s"),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "licrenew_t_{}_{nanos}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let _ = conn.close().await;
        let mut url = url::Url::parse(&admin).expect("LICRENEW_TEST_POSTGRES is a URL");
        url.set_path(&format!("/{name}"));
        Some(PgTestDatabase {
            admin,
            name,
            url: url.to_string(),
        })
    }
}

fn skipped(admin: &str, why: &str) -> Option<PgTestDatabase> {
    if std::env::var("LICRENEW_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("LICRENEW_REQUIRE_POSTGRES=1 but no PostgreSQL at {admin}: {why}");
    }
    eprintln!("skipped: no PostgreSQL at {admin} ({why}); set LICRENEW_TEST_POSTGRES");
    None
}

impl Drop for PgTestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await: a thread with its own runtime drops the database.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}
