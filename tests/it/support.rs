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
        api: Some(Api::Billmgr4),
        username: "reseller".into(),
        password: Some(SecretString::from(CANARY.to_owned())),
        auth,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        read_attempts: 1,
        allow_insecure_http: false,
        max_body: 1024 * 1024,
        max_answer: 1024 * 1024,
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

use licrenew::sim::{SimApi, SimConfig, SimHandle, SimLicense};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A simulator on loopback (with the canary as the account's password), a temporary folder
/// with a config file pointing at it, and a way to run the real binary against both.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
    pub config: PathBuf,
    pub api: Api,
    /// Product and period ids of this generation.
    pub p: Ids,
    /// The state is in this PostgreSQL database rather than `licrenew.db` (see
    /// [`all_backends`]).
    pub pg: Option<licrenew::pgtest::PgTestDatabase>,
}

thread_local! {
    /// The PostgreSQL database the next [`Env`] made on this thread uses (set by
    /// [`all_backends`]; each `#[tokio::test]` runs on a thread of its own).
    pub static NEXT_PG: std::cell::RefCell<Option<licrenew::pgtest::PgTestDatabase>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs a test body once per API generation on SQLite, and once more (BILLmanager 5/6, the
/// pessimistic shapes) with the state in a fresh PostgreSQL database: three tests named
/// after it. The PostgreSQL one is skipped, saying why, without a server (and fails instead
/// under `LICRENEW_REQUIRE_POSTGRES=1`).
#[macro_export]
macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn billmgr4() {
                super::$name(licrenew::config::Api::Billmgr4).await
            }
            #[tokio::test]
            async fn billmgr5() {
                super::$name(licrenew::config::Api::Billmgr5).await
            }
            #[tokio::test]
            async fn postgres() {
                let Some(db) = licrenew::pgtest::PgTestDatabase::create().await else {
                    return;
                };
                $crate::support::NEXT_PG.with(|c| *c.borrow_mut() = Some(db));
                super::$name(licrenew::config::Api::Billmgr5).await
            }
        }
    };
}

/// The wire ids of the products the tests use, per API generation: the same policies (by
/// name) must behave the same in both.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    pub lite: i64,
    pub lite_month: i64,
    pub lite_trial: i64,
    pub pro: i64,
    pub pro_month: i64,
    /// The paid renewal function.
    pub renew_func: &'static str,
    pub list_func: &'static str,
}

pub fn ids(api: Api) -> Ids {
    match api {
        Api::Billmgr4 => Ids {
            lite: 7,
            lite_month: 8,
            lite_trial: 7,
            pro: 11,
            pro_month: 16,
            renew_func: "software.period",
            list_func: "software",
        },
        Api::Billmgr5 => Ids {
            lite: 55227,
            lite_month: 1,
            lite_trial: -100,
            pro: 55229,
            pro_month: 1,
            renew_func: "service.prolong",
            list_func: "soft",
        },
    }
}

/// Runs a test body once per API generation, as two tests named after it.
#[macro_export]
macro_rules! both_apis {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn billmgr4() {
                super::$name(licrenew::config::Api::Billmgr4).await
            }
            #[tokio::test]
            async fn billmgr5() {
                super::$name(licrenew::config::Api::Billmgr5).await
            }
        }
    };
}

impl Env {
    /// This generation's name for a BILLmanager 4 function (tests are written with the v4
    /// names of the ordering guide).
    pub fn func(&self, v4: &str) -> String {
        match (self.api, v4) {
            (Api::Billmgr4, f) => f.to_owned(),
            (Api::Billmgr5, "software") => "soft".into(),
            (Api::Billmgr5, "software.edit") => "soft.edit".into(),
            (Api::Billmgr5, "software.period") => "service.prolong".into(),
            (Api::Billmgr5, "software.licinfo") => "soft.checkip".into(),
            (Api::Billmgr5, f) => f.to_owned(),
        }
    }

    /// An empty BILLmanager 4 account (tests place exact licenses with [`Env::place`]).
    pub async fn new() -> Env {
        Env::with_licenses(0).await
    }

    pub async fn with_licenses(n: usize) -> Env {
        Env::for_api_with(Api::Billmgr4, n).await
    }

    /// An empty account speaking `api`.
    pub async fn for_api(api: Api) -> Env {
        Env::for_api_with(api, 0).await
    }

    pub async fn for_api_with(api: Api, n: usize) -> Env {
        let sim = licrenew::sim::start(
            "127.0.0.1:0".parse().expect("addr"),
            SimConfig {
                licenses: n,
                username: "reseller".into(),
                password: CANARY.into(),
                api: match api {
                    Api::Billmgr4 => SimApi::Billmgr4,
                    Api::Billmgr5 => SimApi::Billmgr5,
                },
                ..SimConfig::default()
            },
        )
        .await
        .expect("simulator starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("licrenew.toml");
        std::fs::create_dir(dir.path().join("policies.d")).expect("policies dir");
        let env = Env {
            dir,
            sim,
            config,
            api,
            p: ids(api),
            pg: NEXT_PG.with(|c| c.borrow_mut().take()),
        };
        env.write_config("");
        env
    }

    /// Writes the config file; `extra` is appended (more sections).
    pub fn write_config(&self, extra: &str) {
        // The database beside the config (or the test's PostgreSQL database), unless the
        // test names one.
        let database = if extra.contains("[database]") {
            String::new()
        } else if let Some(pg) = &self.pg {
            format!(
                "[database]\nurl = \"{}\"\nstandby_retry = \"300ms\"\nheartbeat = \"1s\"\n",
                pg.url
            )
        } else {
            "[database]\nurl = \"licrenew.db\"\n".to_owned()
        };
        let text = format!(
            r#"[billmgr]
url = "{url}"
api = "{api}"
username = "reseller"
password_file = "secret"
timeout = "3s"
connect_timeout = "1s"
read_attempts = 2

[log]
level = "trace"
{database}{extra}"#,
            url = self.sim.url(),
            api = match self.api {
                Api::Billmgr4 => "billmgr4",
                Api::Billmgr5 => "billmgr5",
            }
        );
        std::fs::write(&self.config, text).expect("config");
        std::fs::write(self.dir.path().join("secret"), format!("{CANARY}\n"))
            .expect("password file");
    }

    /// Removes `api = …` from the config: the generation is then detected (`auto`).
    pub fn unpin_api(&self) {
        let text = std::fs::read_to_string(&self.config).expect("config");
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("api = "))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&self.config, text).expect("config");
    }

    /// The state database as the config names it.
    pub fn database(&self) -> licrenew::config::DatabaseSpec {
        match &self.pg {
            Some(pg) => licrenew::config::DatabaseSpec::Postgres(pg.url.clone()),
            None => licrenew::config::DatabaseSpec::Sqlite(self.path("licrenew.db")),
        }
    }

    /// Whether licrenew created its database (the SQLite file, or the schema in PostgreSQL).
    pub async fn database_exists(&self) -> bool {
        match &self.pg {
            None => self.path("licrenew.db").exists(),
            Some(pg) => {
                use sqlx::Connection;
                let Ok(mut c) = sqlx::PgConnection::connect(&pg.url).await else {
                    return false;
                };
                let made: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(&mut c)
                        .await
                        .unwrap_or(false);
                let _ = c.close().await;
                made
            }
        }
    }

    /// Waits (up to 15 s) until licrenew has created its database.
    pub async fn wait_for_database(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !self.database_exists().await {
            assert!(
                std::time::Instant::now() < deadline,
                "no database after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_policy(&self, name: &str, text: &str) {
        std::fs::write(self.path("policies.d").join(name), text).expect("policy");
    }

    /// Places a license in the simulated account.
    pub fn place(
        &self,
        id: i64,
        price: i64,
        period: i64,
        expiry: chrono::NaiveDate,
        status: u8,
    ) -> SimLicense {
        let l = SimLicense {
            id,
            licname: format!("srv{id}.example.net"),
            ip: format!("203.0.113.{}", id % 250 + 1),
            price,
            period,
            expiredate: expiry,
            status,
            last_ip_change: None,
            autoprolong: None,
        };
        self.sim.upsert_license(l.clone());
        l
    }

    pub fn today(&self) -> chrono::NaiveDate {
        self.sim.today()
    }

    /// Runs `licrenew --config CONFIG ARGS…` to completion and checks that nothing it printed
    /// shows the password.
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[]).await
    }

    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command(args, env)
            .output()
            .await
            .expect("licrenew runs");
        assert_no_canary("stdout", &String::from_utf8_lossy(&out.stdout));
        assert_no_canary("stderr", &String::from_utf8_lossy(&out.stderr));
        out
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_licrenew"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("LICRENEW_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Every request the simulator saw carried its credentials in the body only.
    pub fn assert_no_credentials_in_urls(&self) {
        for r in self.sim.requests() {
            assert!(
                !r.query.contains("authinfo") && !r.query.contains("password"),
                "{r:?}"
            );
            assert_no_canary("a request URL", &format!("{} {}", r.path, r.query));
            assert_eq!(r.method, "POST", "{r:?}");
        }
    }

    /// Every file the run left in the temporary folder is free of the password (the config's
    /// password file aside).
    pub fn assert_no_canary_in_files(&self) {
        assert_no_canary_below(self.dir.path(), &self.path("secret"));
    }
}

fn assert_no_canary_below(dir: &Path, except: &Path) {
    for entry in std::fs::read_dir(dir).expect("readdir").flatten() {
        let p = entry.path();
        if p == except {
            continue;
        }
        if p.is_dir() {
            assert_no_canary_below(&p, except);
        } else if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
                "{} holds the password",
                p.display()
            );
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn days(d: i64) -> chrono::Duration {
    chrono::Duration::days(d)
}

/// Sends a signal (`HUP`, `TERM`, …) to a process with kill(1).
pub fn signal(pid: impl std::fmt::Display, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}
