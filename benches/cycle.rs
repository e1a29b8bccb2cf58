//! Cycle benchmark: `cargo bench --bench cycle` runs every part; `-- sync`, `-- renew`,
//! `-- idle` (any combination) run some. Options: `--sizes 10000,100000` (sync and idle),
//! `--renew-n 1000`, `--delay-ms 50`, `--conc 1,4,8`.
//!
//! Every figure drives the real `licrenew` binary (built by cargo for this bench, found through
//! `CARGO_BIN_EXE_licrenew`) as a child against an in-process simulator:
//!
//! - `sync`: `licrenew sync` against N licenses, window and lookback 400 days (all of them but
//!   the lifetime ones), once on an empty database (inserts) and once again (updates): wall
//!   time and peak RSS (the child's VmHWM polled every 2 ms; `wait4`'s `ru_maxrss` is shown
//!   too but includes this process's own peak, see [`wait`]). Beside it, the floor: the same three HTTP calls
//!   (set the filter, list, clear it) made in-process with reqwest, the body parsed by
//!   `licrenew::billmgr::xml::parse_with` counting rows, no database.
//! - `renew`: one `licrenew renew` cycle of `--renew-n` due licenses, the simulator adding
//!   `--delay-ms` to every paid call, at each `--conc`. The binary talks to the simulator
//!   through a counting proxy in this process, which records every paid call's start and end:
//!   the most paid calls in flight at once, and the paid phase (first start to last end),
//!   both against the ideal `delay × N / concurrency`. Every license must be renewed exactly
//!   once.
//! - `idle`: `licrenew run` (cron far in the future) on the database the sync left with N
//!   licenses: the time from spawn to `READY=1` on a `NOTIFY_SOCKET` bound here, and the RSS
//!   3 s later (VmRSS) and its high-water mark (VmHWM).

use licrenew::sim::{Fault, FaultKind, SimConfig, SimHandle, SimLicense};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const USER: &str = "bench";
const PASSWORD: &str = "bench-Pw-0c41";
const WINDOW: &str = "400d";

struct Args {
    parts: Vec<String>,
    sizes: Vec<usize>,
    renew_n: usize,
    delay_ms: u64,
    conc: Vec<u32>,
    /// Rounds of (naive script, first sync, re-sync), interleaved; medians are compared.
    rounds: usize,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = Args {
        parts: Vec::new(),
        sizes: vec![10_000, 100_000],
        renew_n: 1000,
        delay_ms: 50,
        conc: vec![1, 4, 8],
        rounds: 3,
    };
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--sizes" => {
                a.sizes = list(&next);
                i += 1;
            }
            "--renew-n" => {
                a.renew_n = next.parse().unwrap_or(a.renew_n);
                i += 1;
            }
            "--delay-ms" => {
                a.delay_ms = next.parse().unwrap_or(a.delay_ms);
                i += 1;
            }
            "--rounds" => {
                a.rounds = next.parse().unwrap_or(a.rounds).max(1);
                i += 1;
            }
            "--conc" => {
                a.conc = list(&next).into_iter().map(|c| c as u32).collect();
                i += 1;
            }
            p @ ("sync" | "renew" | "idle") => a.parts.push(p.to_owned()),
            _ => {} // `--bench` and other flags cargo passes
        }
        i += 1;
    }
    if a.parts.is_empty() {
        a.parts = vec!["sync".into(), "renew".into(), "idle".into()];
    }
    a
}

async fn sim(n: usize) -> SimHandle {
    licrenew::sim::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimConfig {
            licenses: n,
            seed: 1,
            username: USER.into(),
            password: PASSWORD.into(),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator")
}

/// Writes `licrenew.toml` (and the password file) in `dir` for `url`.
fn write_config(dir: &Path, url: &str, extra: &str) -> PathBuf {
    write_config_db(
        dir,
        url,
        extra,
        &dir.join("licrenew.db").display().to_string(),
    )
}

/// [`write_config`] with the database `db` (a path or a `postgres://` URL).
fn write_config_db(dir: &Path, url: &str, extra: &str, db: &str) -> PathBuf {
    let config = dir.join("licrenew.toml");
    let _ = std::fs::create_dir(dir.join("policies.d"));
    std::fs::write(dir.join("secret"), format!("{PASSWORD}\n")).expect("password");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{db}\"\n\n[billmgr]\nurl = \"{url}\"\nusername = \"{USER}\"\npassword_file = \"secret\"\n\
             timeout = \"120s\"\nconnect_timeout = \"2s\"\nread_attempts = 1\n\n\
             [schedule]\nwindow = \"{WINDOW}\"\nlookback = \"{WINDOW}\"\njitter = \"0s\"\ncron = \"0 0 0 1 1 *\"\n\n\
             [log]\nlevel = \"info\"\n{extra}"
        ),
    )
    .expect("config");
    config
}

fn command(config: &Path, sub: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_licrenew"));
    cmd.arg("--config")
        .arg(config)
        .arg(sub)
        .env_remove("LICRENEW_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LICRENEW_FAILPOINT")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // `CYCLE_BENCH_LOG=debug` shows where a child spends its time.
    if let Some(level) = std::env::var_os("CYCLE_BENCH_LOG") {
        cmd.env("RUST_LOG", level);
    }
    cmd
}

/// What `wait4` says about a child that ended.
struct Exit {
    code: i32,
    wall: Duration,
    /// The child's peak RSS (VmHWM, polled).
    maxrss_kib: i64,
    /// wait4's ru_maxrss (includes this bench's own high-water mark; see [`wait`]).
    ru_maxrss_kib: i64,
    stderr: String,
}

/// Waits for `child` with `wait4` (for its peak RSS), reading its stderr meanwhile.
async fn wait(mut child: std::process::Child, started: Instant) -> Exit {
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.take().expect("stderr");
    // The child's own peak, from /proc while it runs: `ru_maxrss` from wait4 is not usable
    // here, because std spawns with posix_spawn (CLONE_VM), and exec records the spawning
    // process's high-water mark (this bench, holding a simulator of 100,000 licenses) as the
    // child's starting maxrss. VmHWM belongs to the child's own address space and only grows.
    let poller = std::thread::spawn(move || {
        let mut hwm = 0;
        while let Some(v) = proc_status(pid as u32, "VmHWM:") {
            hwm = v;
            std::thread::sleep(Duration::from_millis(2));
        }
        hwm
    });
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let (status, rusage) = tokio::task::spawn_blocking(move || {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not waited for elsewhere; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid, "wait4");
        (status, ru)
    })
    .await
    .expect("wait4 task");
    let wall = started.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Exit {
        code,
        wall,
        maxrss_kib: poller.join().unwrap_or(0),
        ru_maxrss_kib: rusage.ru_maxrss,
        stderr: reader.join().unwrap_or_default(),
    }
}

async fn run_child(config: &Path, sub: &str) -> Exit {
    let started = Instant::now();
    let child = command(config, sub).spawn().expect("spawn licrenew");
    let exit = wait(child, started).await;
    if exit.code != 0 {
        let tail: Vec<&str> = exit.stderr.lines().rev().take(5).collect();
        panic!("licrenew {sub} exited {}: {tail:?}", exit.code);
    }
    exit
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The raw download of a sync: the same three HTTP calls, the list body read to its end and
/// dropped; no parsing, no database. Returns (wall, body bytes).
async fn raw_download(url: &str, from: &str, to: &str) -> (Duration, usize) {
    let http = reqwest::Client::new();
    let authinfo = format!("{USER}:{PASSWORD}");
    let call = |func: &'static str, extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![
            ("out", "xml".into()),
            ("lang", "en".into()),
            ("func", func.into()),
            ("authinfo", authinfo.clone()),
        ];
        form.extend(extra);
        http.post(url).form(&form).send()
    };
    let started = Instant::now();
    let set = vec![
        ("expires", from.to_owned()),
        ("expiree", to.to_owned()),
        ("sok", "ok".to_owned()),
    ];
    call("software.filter", set)
        .await
        .expect("filter")
        .bytes()
        .await
        .expect("filter body");
    let mut resp = call("software", Vec::new()).await.expect("list");
    let mut bytes = 0usize;
    while let Some(chunk) = resp.chunk().await.expect("list body") {
        bytes += chunk.len();
    }
    let clear = vec![
        ("expires", String::new()),
        ("expiree", String::new()),
        ("sok", "ok".to_owned()),
    ];
    call("software.filter", clear)
        .await
        .expect("clear")
        .bytes()
        .await
        .expect("clear body");
    (started.elapsed(), bytes)
}

/// The naive script (`benches/naive_sync.py`: urllib + ElementTree + sqlite3 executemany in
/// one transaction) on an empty database in `dir`: wall time and peak RSS.
async fn naive_script(url: &str, from: &str, to: &str, dir: &Path) -> Exit {
    let db = dir.join("naive.db");
    let _ = std::fs::remove_file(&db);
    let started = Instant::now();
    let child = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/naive_sync.py"))
        .args([url, USER, PASSWORD])
        .arg(&db)
        .args([from, to])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the naive script");
    let exit = wait(child, started).await;
    assert_eq!(exit.code, 0, "naive script: {}", exit.stderr);
    exit
}

/// Reading every XML event of `body` with quick-xml, borrowed, building nothing: what any
/// sync that reads the list as XML pays at least, beside the download. The best of 3.
fn tokenize(body: &[u8]) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut events = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let mut reader = quick_xml::Reader::from_reader(body);
        events = 0;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(_) => events += 1,
                Err(e) => panic!("the list is XML: {e}"),
            }
        }
        best = best.min(started.elapsed());
    }
    (best, events)
}

/// The floor of a sync: the HTTP calls and the XML parse, no database. Returns (wall, rows,
/// body bytes, bare tokenizing time).
async fn floor(url: &str, from: &str, to: &str) -> (Duration, usize, usize, Duration) {
    let http = reqwest::Client::new();
    let authinfo = format!("{USER}:{PASSWORD}");
    let call = |func: &'static str, extra: Vec<(&'static str, String)>| {
        let mut form: Vec<(&str, String)> = vec![
            ("out", "xml".into()),
            ("lang", "en".into()),
            ("func", func.into()),
            ("authinfo", authinfo.clone()),
        ];
        form.extend(extra);
        http.post(url).form(&form).send()
    };
    let started = Instant::now();
    let set = vec![
        ("expires", from.to_owned()),
        ("expiree", to.to_owned()),
        ("sok", "ok".to_owned()),
    ];
    call("software.filter", set)
        .await
        .expect("filter")
        .bytes()
        .await
        .expect("filter body");
    let mut resp = call("software", Vec::new()).await.expect("list");
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(4096) as usize);
    while let Some(chunk) = resp.chunk().await.expect("list body") {
        body.extend_from_slice(&chunk);
    }
    let mut rows = 0usize;
    licrenew::billmgr::xml::parse_with(&body, |_| rows += 1).expect("list parses");
    let clear = vec![
        ("expires", String::new()),
        ("expiree", String::new()),
        ("sok", "ok".to_owned()),
    ];
    call("software.filter", clear)
        .await
        .expect("clear")
        .bytes()
        .await
        .expect("clear body");
    let wall = started.elapsed();
    let (tokens, _) = tokenize(&body);
    (wall, rows, body.len(), tokens)
}

fn listed(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("\"event\":\"sync\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| format!("{} listed", v["listed"]))
        .unwrap_or_default()
}

/// The sync figures for `n` licenses; leaves the database (N licenses) in `dir`.
/// The run of median wall time (`runs` sorted by it), and the walls of all, for the output.
fn median(mut runs: Vec<Exit>) -> (Exit, String, i64) {
    runs.sort_by_key(|e| e.wall);
    let walls: Vec<String> = runs
        .iter()
        .map(|e| format!("{:.3}", secs(e.wall)))
        .collect();
    let peak = runs.iter().map(|e| e.maxrss_kib).max().unwrap_or(0);
    let mid = runs.len() / 2;
    (runs.swap_remove(mid), walls.join("/"), peak)
}

async fn bench_sync(n: usize, dir: &Path, rounds: usize) {
    let sim = sim(n).await;
    let config = write_config(dir, &sim.url(), "");
    let today = sim.today();
    let from = (today - chrono::Days::new(400)).to_string();
    let to = (today + chrono::Days::new(400)).to_string();
    // Warm the simulator's path once, unmeasured (allocator, page cache).
    let _ = floor(&sim.url(), &from, &to).await;
    let (f1, rows, bytes, t1) = floor(&sim.url(), &from, &to).await;
    let (r1, _) = raw_download(&sim.url(), &from, &to).await;
    // Interleaved rounds, so a slow moment of this VM falls on all three alike; the medians
    // are compared, and every run is shown.
    let (mut naives, mut freshes, mut agains) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        naives.push(naive_script(&sim.url(), &from, &to, dir).await);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("licrenew.db{suffix}")));
        }
        freshes.push(run_child(&config, "sync").await);
        agains.push(run_child(&config, "sync").await);
    }
    let (naive, naive_runs, naive_peak) = median(naives);
    let (fresh, fresh_runs, fresh_peak) = median(freshes);
    let (again, again_runs, again_peak) = median(agains);
    let (f2, _, _, t2) = floor(&sim.url(), &from, &to).await;
    let (r2, _) = raw_download(&sim.url(), &from, &to).await;
    let fl = f1.min(f2);
    let raw = r1.min(r2);
    println!(
        "sync  n={n:>6}  floor {:>7.3}s ({rows} rows, {:.1} MB body; runs {:.3}s/{:.3}s)",
        secs(fl),
        bytes as f64 / 1e6,
        secs(f1),
        secs(f2)
    );
    if std::env::var_os("CYCLE_BENCH_LOG").is_some() {
        eprintln!("{}", again.stderr);
    }
    println!(
        "sync  n={n:>6}  raw download {:>7.3}s (runs {:.3}s/{:.3}s)   naive script {:>7.3}s (median of {naive_runs})  peak RSS {:>6.1} MiB",
        secs(raw),
        secs(r1),
        secs(r2),
        secs(naive.wall),
        mib(naive_peak)
    );
    println!(
        "sync  n={n:>6}  tokenize only {:>7.3}s (quick-xml events of the body, borrowed, nothing built) = {:.2}x raw",
        secs(t1.min(t2)),
        secs(t1.min(t2)) / secs(raw)
    );
    // The same syncs into PostgreSQL, side by side (issue 15: within 2x SQLite's).
    let pg_dir = tempfile::tempdir().expect("tempdir");
    if let Some(pg) = licrenew::pgtest::PgTestDatabase::create().await {
        let pg_config = write_config_db(pg_dir.path(), &sim.url(), "", &pg.url);
        let pg_fresh = run_child(&pg_config, "sync").await;
        let pg_again = run_child(&pg_config, "sync").await;
        for (what, e, lite) in [
            ("empty db", &pg_fresh, &fresh),
            ("again   ", &pg_again, &again),
        ] {
            println!(
                "sync  n={n:>6}  postgres {what} {:>7.3}s  peak RSS {:>6.1} MiB  postgres/sqlite {:>5.2}x  ({})",
                secs(e.wall),
                mib(e.maxrss_kib),
                secs(e.wall) / secs(lite.wall),
                listed(&e.stderr)
            );
        }
    }
    for (what, e, runs, peak) in [
        ("empty db", &fresh, &fresh_runs, fresh_peak),
        ("again   ", &again, &again_runs, again_peak),
    ] {
        println!(
            "sync  n={n:>6}  {what} {:>7.3}s (median of {runs})  peak RSS {:>6.1} MiB (ru_maxrss {:.1})  sync/floor {:>5.2}x  sync/raw {:>5.2}x  sync/naive {:>5.2}x  ({})",
            secs(e.wall),
            mib(peak),
            mib(e.ru_maxrss_kib),
            secs(e.wall) / secs(fl),
            secs(e.wall) / secs(raw),
            secs(e.wall) / secs(naive.wall),
            listed(&e.stderr)
        );
    }
    sim.shutdown().await;
}

/// Counts the paid calls passing through to the simulator.
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    spans: std::sync::Mutex<Vec<(Instant, Instant)>>,
}

async fn proxy_handler(
    axum::extract::State(p): axum::extract::State<Arc<Proxy>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let paid = body
        .windows(b"func=software.period".len())
        .any(|w| w == b"func=software.period");
    let start = Instant::now();
    if paid {
        let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        p.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
    let mut req = p.http.post(&p.upstream).body(body);
    if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
        req = req.header(axum::http::header::CONTENT_TYPE, ct.clone());
    }
    let answer = match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap_or_default();
            (status, bytes)
        }
        Err(_) => (502, Default::default()),
    };
    if paid {
        p.in_flight.fetch_sub(1, Ordering::SeqCst);
        p.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((start, Instant::now()));
    }
    axum::response::Response::builder()
        .status(answer.0)
        .header("content-type", "text/xml; charset=utf-8")
        .body(axum::body::Body::from(answer.1))
        .expect("response")
}

async fn start_proxy(upstream: String) -> (Arc<Proxy>, String) {
    let p = Arc::new(Proxy {
        upstream,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client"),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        spans: Default::default(),
    });
    let app = axum::Router::new()
        .fallback(proxy_handler)
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (p, format!("http://{addr}/manager/billmgr"))
}

async fn bench_renew(n: usize, delay_ms: u64, conc: u32) -> bool {
    let sim = sim(0).await;
    let expiry = sim.today() + chrono::Days::new(3);
    for i in 0..n as i64 {
        let id = 100_000 + i;
        sim.upsert_license(SimLicense {
            id,
            licname: format!("bench{id}.example.net"),
            ip: format!("198.18.{}.{}", (i / 250) % 250, i % 250 + 1),
            price: 7,
            period: 8,
            expiredate: expiry,
            status: 2,
            last_ip_change: None,
            autoprolong: None,
        });
    }
    sim.add_fault(Fault {
        func: Some("software.period".into()),
        elid: None,
        kind: FaultKind::Delay { ms: delay_ms },
        times: None,
    });
    let (proxy, url) = start_proxy(sim.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &url,
        &format!("\n[renewal]\nconcurrency = {conc}\nmax_per_cycle = {n}\n"),
    );
    std::fs::write(
        dir.path().join("policies.d/lite.toml"),
        "product = \"ISPmanager Lite\"\nrenew = true\nperiod = \"1 month\"\nbefore = \"7d\"\n",
    )
    .expect("policy");
    let e = run_child(&config, "renew").await;
    let spans = proxy
        .spans
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let phase = match (
        spans.iter().map(|s| s.0).min(),
        spans.iter().map(|s| s.1).max(),
    ) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    let ideal = Duration::from_millis(delay_ms) * n as u32 / conc;
    let max = proxy.max_in_flight.load(Ordering::SeqCst);
    let by_expiry = sim.renewals_by_expiry();
    let once = by_expiry.len() == n && by_expiry.iter().all(|r| r.2 == 1);
    println!(
        "renew n={n} conc={conc}  cycle {:>7.3}s  paid phase {:>7.3}s  ideal {:>7.3}s  cycle/ideal {:.3}x  phase/ideal {:.3}x  max in flight {max}  paid calls {}  each once: {once}  peak RSS {:.1} MiB (ru_maxrss {:.1})",
        secs(e.wall),
        secs(phase),
        secs(ideal),
        secs(e.wall) / secs(ideal),
        secs(phase) / secs(ideal),
        spans.len(),
        mib(e.maxrss_kib),
        mib(e.ru_maxrss_kib),
    );
    sim.shutdown().await;
    max <= conc as usize && once && spans.len() == n
}

fn proc_status(pid: u32, key: &str) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `licrenew run` on a database of `n` licenses (left in `dir` by the sync).
async fn bench_idle(n: usize, dir: &Path) {
    let sim = sim(0).await;
    let config = write_config(dir, &sim.url(), "");
    let sock_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    let mut times = Vec::new();
    let mut rss = (0, 0);
    for round in 0..3 {
        let started = Instant::now();
        let child = command(&config, "run")
            .env("NOTIFY_SOCKET", &sock_path)
            .spawn()
            .expect("spawn run");
        let pid = child.id();
        let mut buf = [0u8; 4096];
        let ready = loop {
            let got = tokio::time::timeout(Duration::from_secs(30), sock.recv(&mut buf))
                .await
                .expect("READY=1 within 30 s")
                .expect("recv");
            if String::from_utf8_lossy(&buf[..got])
                .lines()
                .any(|l| l == "READY=1")
            {
                break started.elapsed();
            }
        };
        times.push(ready);
        if round == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            rss = (
                proc_status(pid, "VmRSS:").unwrap_or(-1),
                proc_status(pid, "VmHWM:").unwrap_or(-1),
            );
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let e = wait(child, started).await;
        assert_eq!(e.code, 0, "run exits 0 on SIGTERM: {}", e.stderr);
        // Drain whatever else it sent (STOPPING=1…).
        while sock.try_recv(&mut buf).is_ok() {}
    }
    let ms: Vec<String> = times
        .iter()
        .map(|t| format!("{:.1}", t.as_secs_f64() * 1e3))
        .collect();
    println!(
        "idle  n={n:>6}  ready after {} ms (3 starts)  idle RSS {:.1} MiB  (high-water {:.1} MiB)",
        ms.join(" / "),
        mib(rss.0),
        mib(rss.1)
    );
    sim.shutdown().await;
}

fn main() -> std::process::ExitCode {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "cycle bench: parts {:?}, {cpus} CPUs, binary {}",
        a.parts,
        env!("CARGO_BIN_EXE_licrenew")
    );
    let mut ok = true;
    rt.block_on(async {
        let want = |p: &str| a.parts.iter().any(|x| x == p);
        let dirs: Vec<(usize, tempfile::TempDir)> = a
            .sizes
            .iter()
            .map(|&n| (n, tempfile::tempdir().expect("tempdir")))
            .collect();
        if want("sync") || want("idle") {
            for (n, dir) in &dirs {
                if want("sync") {
                    bench_sync(*n, dir.path(), a.rounds).await;
                } else {
                    // idle alone still needs a database of n licenses
                    let sim = sim(*n).await;
                    let config = write_config(dir.path(), &sim.url(), "");
                    run_child(&config, "sync").await;
                    sim.shutdown().await;
                }
            }
        }
        if want("renew") {
            for &c in &a.conc {
                ok &= bench_renew(a.renew_n, a.delay_ms, c).await;
            }
        }
        if want("idle") {
            for (n, dir) in &dirs {
                bench_idle(*n, dir.path()).await;
            }
        }
    });
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        println!("FAILED: a renew run exceeded its concurrency or did not renew each license once");
        std::process::ExitCode::FAILURE
    }
}
