//! Soak: `cargo bench --bench soak -- 200` kills the real `licrenew` binary (built by cargo for
//! this bench, found through `CARGO_BIN_EXE_licrenew`) 200 times at random points of a renewal,
//! against an in-process simulator and one SQLite file, and restarts it each time until the
//! cycle is clean. Options: a number of kills (default 200), `--seed S` to replay a run, and
//! `--settle D` (default 1s) to change `renewal.settle`: `--settle 0s` is the negative control,
//! judging in-flight renewals failed too early, and must report double renewals. `--postgres`
//! keeps the state in a fresh PostgreSQL database (`LICRENEW_TEST_POSTGRES`) instead.
//!
//! Kill points, drawn at random: the failpoints `before-intent`, `after-intent`, `after-call`,
//! `after-outcome` (an abort, as abrupt as `kill -9`); SIGKILL at a random moment of a cycle;
//! SIGKILL while the paid call is in flight (the simulator applies it later); SIGKILL after the
//! simulator applied the renewal but before the answer left. Each round places two new due
//! licenses, so every round renews something. On the second license of half the rounds, one
//! answer fault is armed as well (issue 10): a contradictory answer (`<ok/>` and `<error>`,
//! applied), an unconfirmed `<ok/>` (nothing applied), or an unknown paid call whose first
//! reconciling re-read answers `missed` (a license not found is only judged gone after
//! `settle`; one judged gone is never renewed and counts as settled, not as a problem).
//!
//! After every round: no license renewed twice (it is due once); every renewal the simulator applied
//! has a journal row saying it was bought, and no row claims one that did not land; each
//! license of the round extended exactly once; `PRAGMA integrity_check` = ok; the password
//! nowhere in the output. Prints `double renewals: 0, lost outcomes: 0, integrity: ok` and
//! exits 1 when any of them fails.

use licrenew::sim::{Fault, FaultKind, SimConfig, SimHandle};
use licrenew::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "soak-canary-Pw-5e1d";
/// Renewals left unknown are judged after this by default; the simulator never applies
/// anything later than `MAX_DELAY_MS` after receiving it, so a judgement never comes too early.
const SETTLE: &str = "1s";
const MAX_DELAY_MS: u64 = 600;
/// Answer faults armed on the second license of a round (or none).
const ANSWER_FAULTS: [&str; 6] = [
    "none",
    "none",
    "none",
    "contradictory",
    "unconfirmed-ok",
    "missed-reread",
];
const POINTS: [&str; 7] = [
    "before-intent",
    "after-intent",
    "after-call",
    "after-outcome",
    "random-moment",
    "in-flight",
    "applied-unanswered",
];

/// SplitMix64: small, seedable, good enough to pick kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Args {
    kills: u32,
    seed: u64,
    settle: String,
    /// The state in a fresh PostgreSQL database (`LICRENEW_TEST_POSTGRES`) instead of a
    /// SQLite file.
    postgres: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut kills = 200;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut settle = SETTLE.to_owned();
    let mut postgres = false;
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--seed" => {
                if let Some(s) = argv.get(i + 1).and_then(|v| v.parse().ok()) {
                    seed = s;
                }
                i += 1;
            }
            "--postgres" => postgres = true,
            "--settle" => {
                if let Some(s) = argv.get(i + 1) {
                    settle = s.clone();
                }
                i += 1;
            }
            n => {
                if let Ok(k) = n.parse() {
                    kills = k;
                }
            }
        }
        i += 1;
    }
    Args {
        kills,
        seed,
        settle,
        postgres,
    }
}

struct Soak {
    sim: SimHandle,
    dir: tempfile::TempDir,
    config: PathBuf,
    db: licrenew::config::DatabaseSpec,
    rng: Rng,
    next_id: i64,
    /// Every license placed: id → expiry before its round.
    placed: BTreeMap<i64, chrono::NaiveDate>,
    leaks: u32,
    panics: u32,
}

impl Soak {
    fn command(&self, failpoint: Option<&str>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_licrenew"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("renew")
            .env_remove("LICRENEW_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LICRENEW_FAILPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = failpoint {
            cmd.env("LICRENEW_FAILPOINT", p);
        }
        cmd
    }

    fn inspect(&mut self, out: &Output) {
        for text in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(text);
            if text.contains(PASSWORD) {
                self.leaks += 1;
            }
            if text.contains("panicked") {
                self.panics += 1;
            }
        }
    }

    fn place_round(&mut self) -> (i64, i64) {
        let expiry = self.sim.today() + chrono::Days::new(3);
        let first = self.next_id;
        for id in [first, first + 1] {
            self.sim.upsert_license(licrenew::sim::SimLicense {
                id,
                licname: format!("soak{id}.example.net"),
                ip: format!("198.51.100.{}", id % 250 + 1),
                price: 7,
                period: 8,
                expiredate: expiry,
                status: 2,
                last_ip_change: None,
                autoprolong: None,
            });
            self.placed.insert(id, expiry);
        }
        self.next_id += 2;
        (first, first + 1)
    }

    fn seen_since(&self, before: usize, func: &str) -> bool {
        self.sim
            .requests()
            .iter()
            .skip(before)
            .any(|r| r.func == func)
    }

    /// Runs one round with a kill at `point` and `answer` armed on its second license; returns
    /// whether a kill was delivered.
    async fn round(&mut self, point: &str, answer: &str, cycle: Duration) -> bool {
        let (first, second) = self.place_round();
        let paid_fault = |kind| Fault {
            func: Some("software.period".into()),
            elid: Some(second),
            kind,
            times: Some(1),
        };
        match answer {
            "contradictory" => self.sim.add_fault(paid_fault(FaultKind::Contradictory {
                r#type: "value".into(),
                msg: "Payment is being processed".into(),
            })),
            "unconfirmed-ok" => self.sim.add_fault(paid_fault(FaultKind::OkNotApplied)),
            "missed-reread" => self
                .sim
                .add_fault(paid_fault(FaultKind::Http { status: 502 })),
            _ => {}
        }
        let before = self.sim.requests().len();
        let failpoint = POINTS[..4].contains(&point).then_some(point);
        match point {
            "in-flight" => self.sim.add_fault(Fault {
                func: Some("software.period".into()),
                elid: Some(first),
                kind: FaultKind::Delay {
                    ms: 100 + self.rng.below(MAX_DELAY_MS - 100),
                },
                times: Some(1),
            }),
            "applied-unanswered" => self.sim.add_fault(Fault {
                func: Some("software.period".into()),
                elid: Some(first),
                kind: FaultKind::DelayAfter { ms: 5_000 },
                times: Some(1),
            }),
            _ => {}
        }
        let mut child = match self.command(failpoint).spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start licrenew: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        match point {
            "random-moment" => {
                let upto = cycle.as_micros() as u64;
                tokio::time::sleep(Duration::from_micros(self.rng.below(upto))).await;
            }
            "in-flight" => {
                while !self.seen_since(before, "software.period") && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            "applied-unanswered" => {
                while self.sim.paid_calls(first) == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            _ => {}
        }
        if failpoint.is_none() {
            let _ = child.start_kill();
        }
        let out = match child.wait_with_output().await {
            Ok(o) => o,
            Err(e) => panic!("waiting for licrenew: {e}"),
        };
        self.sim.clear_faults();
        if answer == "missed-reread" {
            // The first re-read that reconciles the unknown call finds no license.
            self.sim.add_fault(Fault {
                func: Some("software.edit".into()),
                elid: Some(second),
                kind: FaultKind::ErrorDoc {
                    r#type: "missed".into(),
                    object: Some("elid".into()),
                    msg: "The object of type 'elid' is missing".into(),
                },
                times: Some(1),
            });
        }
        self.inspect(&out);
        use std::os::unix::process::ExitStatusExt;
        let killed = out.status.signal().is_some();
        if !killed && failpoint.is_some() {
            eprintln!(
                "soak: failpoint {point} not reached: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        killed
    }

    /// Restarts until a cycle exits 0 (at most 60 runs); false when it never does.
    async fn settle(&mut self) -> bool {
        for _ in 0..60 {
            let out = match self.command(None).output().await {
                Ok(o) => o,
                Err(e) => panic!("cannot run licrenew: {e}"),
            };
            self.inspect(&out);
            if out.status.code() == Some(0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// (double renewals, lost outcomes, integrity) now.
    async fn check(&self) -> (u32, u32, String, Vec<String>) {
        let paid = self.sim.renewals_by_expiry();
        let store = match Store::connect(&self.db).await {
            Ok(s) => s,
            Err(e) => return (0, 0, format!("cannot open: {e}"), vec![]),
        };
        let rows = store.history(None, u32::MAX).await.unwrap_or_default();
        let integrity = store
            .integrity_check()
            .await
            .unwrap_or_else(|e| e.to_string());
        store.close().await;
        let bought = |s: &str| s == "ok" || s == "reconciled_ok";
        let mut problems = Vec::new();
        // Every license is due once in the soak: more than one paid call is a double renewal,
        // whether from one expiry or from a late request landing on top of a second renewal.
        let doubles = self
            .placed
            .keys()
            .filter(|id| self.sim.paid_calls(**id) > 1)
            .count() as u32;
        let mut lost = 0;
        for (elid, exp, _) in &paid {
            if !rows
                .iter()
                .any(|r| r.elid == *elid && r.expiry_before == *exp && bought(&r.state))
            {
                lost += 1;
                problems.push(format!(
                    "license {elid}: renewed from {exp}, journal does not say so"
                ));
            }
        }
        for r in &rows {
            let landed = paid
                .iter()
                .any(|(e, d, _)| *e == r.elid && *d == r.expiry_before);
            if bought(&r.state) && !landed {
                lost += 1;
                problems.push(format!("row {}: says bought, nothing landed", r.id));
            }
            if r.state == "sending" || r.state == "unknown" {
                problems.push(format!("row {} still {}", r.id, r.state));
            }
        }
        let gone = |id: i64| {
            rows.iter()
                .any(|r| r.elid == id && r.error_class.as_deref() == Some("gone"))
        };
        for (id, before) in &self.placed {
            if gone(*id) && self.sim.paid_calls(*id) == 0 {
                // Judged gone after `settle` (a `missed` re-read that came late): correctly
                // never renewed again.
                continue;
            }
            let extended = self
                .sim
                .license(*id)
                .map(|l| Some(l.expiredate) == before.checked_add_months(chrono::Months::new(1)));
            if self.sim.paid_calls(*id) != 1 || extended != Some(true) {
                problems.push(format!(
                    "license {id}: {} paid calls, extended once: {extended:?}",
                    self.sim.paid_calls(*id)
                ));
            }
        }
        (doubles, lost, integrity, problems)
    }
}

async fn soak(args: Args) -> ExitCode {
    let started = Instant::now();
    let sim = match licrenew::sim::start(
        "127.0.0.1:0".parse().expect("a socket address"),
        SimConfig {
            licenses: 0,
            username: "soak".into(),
            password: PASSWORD.into(),
            ..SimConfig::default()
        },
    )
    .await
    {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    // Kept for the whole run (dropped, with its database, at the end).
    let pg = if args.postgres {
        match licrenew::pgtest::PgTestDatabase::create().await {
            Some(pg) => Some(pg),
            None => {
                println!("soak: --postgres but no PostgreSQL answers (LICRENEW_TEST_POSTGRES)");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let db = match &pg {
        Some(pg) => pg.url.clone(),
        None => "licrenew.db".to_owned(),
    };
    let config = dir.path().join("licrenew.toml");
    std::fs::create_dir(dir.path().join("policies.d")).expect("policies.d");
    std::fs::write(
        dir.path().join("policies.d/lite.toml"),
        "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n",
    )
    .expect("policy");
    std::fs::write(dir.path().join("secret"), format!("{PASSWORD}\n")).expect("password");
    std::fs::write(
        &config,
        format!(
            "[billmgr]\nurl = \"{}\"\nusername = \"soak\"\npassword_file = \"secret\"\n\
             timeout = \"3s\"\nconnect_timeout = \"1s\"\nread_attempts = 2\n\n\
             [database]\nurl = \"{}\"\n\n[renewal]\nsettle = \"{}\"\n\n[log]\nlevel = \"debug\"\n",
            sim.url(),
            db,
            args.settle
        ),
    )
    .expect("config");
    let db = match &pg {
        Some(pg) => licrenew::config::DatabaseSpec::Postgres(pg.url.clone()),
        None => licrenew::config::DatabaseSpec::Sqlite(dir.path().join("licrenew.db")),
    };
    let mut s = Soak {
        sim,
        dir,
        config,
        db,
        rng: Rng(args.seed),
        next_id: 10_000,
        placed: BTreeMap::new(),
        leaks: 0,
        panics: 0,
    };
    println!(
        "soak: {} kills, seed {}, settle {}, database {}, binary {}",
        args.kills,
        args.seed,
        args.settle,
        s.db,
        env!("CARGO_BIN_EXE_licrenew")
    );

    // Two clean cycles first: the first creates the database, the second times a cycle for
    // kills at a random moment.
    s.place_round();
    assert!(s.settle().await, "the first cycle must succeed");
    s.place_round();
    let t = Instant::now();
    assert!(s.settle().await, "the second cycle must succeed");
    let cycle = t.elapsed();

    let mut by_point: BTreeMap<&str, u32> = BTreeMap::new();
    let mut by_answer: BTreeMap<&str, u32> = BTreeMap::new();
    let (mut kills, mut rounds, mut stuck, mut bad_rounds) = (0u32, 0u32, 0u32, 0u32);
    let (mut doubles, mut lost, mut integrity) = (0u32, 0u32, String::from("ok"));
    while kills < args.kills && rounds < args.kills.saturating_mul(3).max(10) {
        rounds += 1;
        let point = POINTS[s.rng.below(POINTS.len() as u64) as usize];
        let answer = ANSWER_FAULTS[s.rng.below(ANSWER_FAULTS.len() as u64) as usize];
        *by_answer.entry(answer).or_default() += 1;
        if s.round(point, answer, cycle).await {
            kills += 1;
            *by_point.entry(point).or_default() += 1;
        }
        if !s.settle().await {
            stuck += 1;
        }
        let (d, l, i, problems) = s.check().await;
        doubles = doubles.max(d);
        lost = lost.max(l);
        if i != "ok" {
            integrity = i;
        }
        for p in &problems {
            eprintln!("soak: round {rounds} ({point}): {p}");
        }
        bad_rounds += u32::from(!problems.is_empty());
        if rounds % 25 == 0 {
            println!(
                "soak: {rounds} rounds, {kills} kills, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let (_, _, _, problems) = s.check().await;
    let paid: u32 = s.sim.renewals_by_expiry().iter().map(|(_, _, n)| n).sum();
    let points: Vec<String> = by_point.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let answers: Vec<String> = by_answer.iter().map(|(p, n)| format!("{p} {n}")).collect();
    println!("soak: answer faults: {}", answers.join(", "));
    println!(
        "soak: {kills} kills in {rounds} rounds ({}), {} licenses, {paid} renewals applied, \
         {stuck} rounds not settled, {bad_rounds} rounds with a problem, password leaks: {}, \
         panics: {}",
        points.join(", "),
        s.placed.len(),
        s.leaks,
        s.panics
    );
    println!("double renewals: {doubles}, lost outcomes: {lost}, integrity: {integrity}");
    println!("duration: {:.1} s", started.elapsed().as_secs_f64());
    let _ = &s.dir;
    let failed = doubles > 0
        || lost > 0
        || integrity != "ok"
        || stuck > 0
        || bad_rounds > 0
        || !problems.is_empty()
        || s.leaks > 0
        || s.panics > 0
        || kills < args.kills;
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(soak(args))
}
