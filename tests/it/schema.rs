//! The migrations of both backends define the same schema: tables, columns (nullability and a
//! type class), indexes (unique, columns, partial predicate) and unique constraints — the money
//! fence `renewals_one_per_expiry` included. PostgreSQL comes from `LICRENEW_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), one fresh database per test.

use sqlx::{Connection, Row};
use std::collections::BTreeSet;

/// A fresh database on the test server (see [`licrenew::pgtest`]).
pub async fn pg_db() -> Option<licrenew::pgtest::PgTestDatabase> {
    licrenew::pgtest::PgTestDatabase::create().await
}

/// (table, index, unique, columns, predicate words, predicate literals)
type IndexShape = (String, String, bool, Vec<String>, Vec<String>, Vec<String>);

/// One backend's schema, normalised so both can be compared.
#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    /// (table, column, not null, type class)
    columns: BTreeSet<(String, String, bool, &'static str)>,
    indexes: BTreeSet<IndexShape>,
    /// (table, columns) of UNIQUE constraints.
    unique: BTreeSet<(String, Vec<String>)>,
}

/// A partial index's predicate as its column words (with NOT) and its quoted literals: PostgreSQL
/// rewrites `state IN ('a', 'b')` as `state = ANY (ARRAY['a'::text, 'b'::text])`.
fn predicate(p: &str) -> (Vec<String>, Vec<String>) {
    let mut literals = Vec::new();
    let mut rest = String::new();
    let mut parts = p.split('\'');
    if let Some(first) = parts.next() {
        rest.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            literals.push(part.to_owned());
        } else {
            rest.push(' ');
            rest.push_str(part);
        }
    }
    let noise = [
        "is", "null", "and", "in", "any", "array", "text", "where", "or",
    ];
    let mut words: Vec<String> = rest
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .filter(|w| !noise.contains(&w.as_str()))
        .collect();
    words.sort();
    literals.sort();
    (words, literals)
}

fn sqlite_class(t: &str) -> &'static str {
    match t.to_ascii_uppercase().as_str() {
        "INTEGER" => "integer",
        "TEXT" => "text",
        _ => "other",
    }
}

fn pg_class(t: &str) -> &'static str {
    match t {
        // SQLite stores flags and all integers as INTEGER; licrenew reads them as i64 or bool.
        "bigint" | "boolean" => "integer",
        "text" | "date" | "timestamp with time zone" => "text",
        // INT4 would fail to decode into i64: a mistake, never equal to SQLite's class.
        _ => "other",
    }
}

async fn sqlite_schema(path: &std::path::Path) -> Schema {
    let store = licrenew::store::Store::open(path).await.expect("migrate");
    store.close().await;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite");
    let mut s = Schema::default();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(&mut c)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get(0))
    .collect();
    for t in &tables {
        for r in sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({t})")))
            .fetch_all(&mut c)
            .await
            .expect("columns")
        {
            let not_null = r.get::<i64, _>("notnull") == 1 || r.get::<i64, _>("pk") > 0;
            s.columns.insert((
                t.clone(),
                r.get("name"),
                not_null,
                sqlite_class(&r.get::<String, _>("type")),
            ));
        }
        for r in sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA index_list({t})")))
            .fetch_all(&mut c)
            .await
            .expect("indexes")
        {
            let name: String = r.get("name");
            let origin: String = r.get("origin");
            let cols: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA index_info({name})")))
                    .fetch_all(&mut c)
                    .await
                    .expect("index columns")
                    .iter()
                    .map(|r| r.get("name"))
                    .collect();
            match origin.as_str() {
                "u" => {
                    s.unique.insert((t.clone(), cols));
                }
                "c" => {
                    let sql: String = sqlx::query("SELECT sql FROM sqlite_master WHERE name = ?")
                        .bind(&name)
                        .fetch_one(&mut c)
                        .await
                        .expect("index sql")
                        .get(0);
                    let (words, literals) = sql
                        .split_once(" WHERE ")
                        .map(|(_, p)| predicate(p))
                        .unwrap_or_default();
                    s.indexes.insert((
                        t.clone(),
                        name,
                        r.get::<i64, _>("unique") == 1,
                        cols,
                        words,
                        literals,
                    ));
                }
                _ => {}
            }
        }
    }
    let _ = c.close().await;
    s
}

async fn pg_schema(url: &str) -> Schema {
    let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
    licrenew::store::PG_MIGRATOR
        .run(&mut c)
        .await
        .expect("the PostgreSQL migrations apply");
    let mut s = Schema::default();
    for r in sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, is_nullable::text AS n, data_type::text AS d
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut c)
    .await
    .expect("columns")
    {
        s.columns.insert((
            r.get("t"),
            r.get("c"),
            r.get::<String, _>("n") == "NO",
            pg_class(&r.get::<String, _>("d")),
        ));
    }
    for r in sqlx::query(
        "SELECT t.relname::text AS t, i.relname::text AS i, ix.indisunique AS u,
                pg_get_expr(ix.indpred, ix.indrelid) AS p,
                ARRAY(SELECT a.attname::text FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                      ORDER BY k.ord) AS cols,
                EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid AND c.contype = 'u') AS is_unique_constraint
         FROM pg_index ix
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND NOT ix.indisprimary AND t.relname NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&mut c)
    .await
    .expect("indexes")
    {
        let table: String = r.get("t");
        let cols: Vec<String> = r.get("cols");
        if r.get::<bool, _>("is_unique_constraint") {
            s.unique.insert((table, cols));
            continue;
        }
        let (words, literals) = r
            .get::<Option<String>, _>("p")
            .map(|p| predicate(&p))
            .unwrap_or_default();
        s.indexes
            .insert((table, r.get("i"), r.get("u"), cols, words, literals));
    }
    let _ = c.close().await;
    s
}

#[test]
fn predicates_compare_as_words_and_literals() {
    assert_eq!(
        predicate("state IN ('sending', 'unknown')"),
        predicate("(state = ANY (ARRAY['sending'::text, 'unknown'::text]))")
    );
    assert_ne!(
        predicate("subject IS NOT NULL AND resolved_at IS NULL"),
        predicate("subject IS NULL AND resolved_at IS NULL")
    );
}

#[tokio::test]
async fn both_backends_define_the_same_tables_columns_and_indexes() {
    let Some(pg) = pg_db().await else { return };
    let dir = tempfile::tempdir().expect("tmp");

    let lite = sqlite_schema(&dir.path().join("s.db")).await;
    let post = pg_schema(&pg.url).await;

    assert!(lite.columns.len() > 50, "{:?}", lite.columns);
    assert!(
        lite.indexes
            .iter()
            .any(|i| i.1 == "renewals_one_per_expiry" && i.2),
        "the money fence is in the SQLite schema"
    );
    fn only<T: Ord + std::fmt::Debug>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> Vec<String> {
        a.difference(b).map(|x| format!("{x:?}")).collect()
    }
    assert_eq!(
        (
            only(&lite.columns, &post.columns),
            only(&post.columns, &lite.columns)
        ),
        (vec![], vec![]),
        "columns only in SQLite / only in PostgreSQL"
    );
    assert_eq!(
        (
            only(&lite.indexes, &post.indexes),
            only(&post.indexes, &lite.indexes)
        ),
        (vec![], vec![]),
        "indexes only in SQLite / only in PostgreSQL"
    );
    assert_eq!(lite.unique, post.unique, "unique constraints");
}

#[tokio::test]
async fn the_money_fence_refuses_a_second_open_intent_on_postgresql() {
    let Some(pg) = pg_db().await else { return };
    let mut c = sqlx::PgConnection::connect(&pg.url)
        .await
        .expect("postgres");
    licrenew::store::PG_MIGRATOR
        .run(&mut c)
        .await
        .expect("migrate");
    let intent = "INSERT INTO renewals (elid, licname, product, period, expiry_before, state, source, created_at)
                  VALUES (1009, 'srv1009', 7, 8, DATE '2026-12-04', $1, 'cycle', now())";

    let first = sqlx::query(intent).bind("sending").execute(&mut c).await;
    let second = sqlx::query(intent).bind("unknown").execute(&mut c).await;
    let refused_then_retried = sqlx::query(intent).bind("error").execute(&mut c).await;

    assert!(first.is_ok(), "{first:?}");
    let err = second.expect_err("a second open intent for the same expiry is refused");
    assert!(
        err.as_database_error()
            .is_some_and(|e| e.is_unique_violation()),
        "{err}"
    );
    assert!(
        refused_then_retried.is_ok(),
        "a refused (error) row is not part of the fence"
    );
    let _ = c.close().await;
}
