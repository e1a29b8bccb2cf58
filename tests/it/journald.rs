//! Syslog priorities for the journal (src/telemetry.rs): when `JOURNAL_STREAM` names the
//! `device:inode` of stderr, as systemd sets it for a unit whose stderr is the journal, every
//! log line starts with `<N>` (3 error, 4 warning, 6 info, 7 debug/trace); otherwise no line
//! does. The real binary runs `renew` against the simulator with stderr redirected to a file:
//! one license renews (INFO) and one renewal is refused by the billing (WARN).

use crate::ledger::LITE;
use crate::support::{Env, assert_no_canary, days};
use licrenew::sim::{Fault, FaultKind};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

/// How stderr and `JOURNAL_STREAM` relate in a run.
enum Journal {
    /// `JOURNAL_STREAM` unset.
    Unset,
    /// `JOURNAL_STREAM` names stderr (the log file).
    Stderr,
    /// `JOURNAL_STREAM` names another file: a child of a journald unit whose stderr was
    /// redirected elsewhere.
    Elsewhere,
}

fn dev_ino(path: &Path) -> String {
    let meta = std::fs::metadata(path).expect("metadata");
    format!("{}:{}", meta.dev(), meta.ino())
}

/// An account with two due licenses, 3002 renewable and 3004 whose renewal the billing
/// refuses; `licrenew renew` with stderr in a file. Returns the log lines.
async fn renew_logs(journal: Journal, pretty: bool) -> Vec<String> {
    let env = Env::new().await;
    env.write_policy("lite.toml", LITE);
    if pretty {
        let text = std::fs::read_to_string(&env.config).expect("config");
        let text = text.replace("[log]\n", "[log]\nformat = \"pretty\"\n");
        std::fs::write(&env.config, text).expect("config");
    }
    let t = env.today();
    env.place(3002, env.p.lite, env.p.lite_month, t + days(3), 2);
    env.place(3004, env.p.lite, env.p.lite_month, t + days(3), 2);
    env.sim.add_fault(Fault {
        func: Some(env.func("software.period")),
        elid: Some(3004),
        kind: FaultKind::ErrorDoc {
            r#type: "value".into(),
            object: Some("period".into()),
            msg: "refused".into(),
        },
        times: None,
    });

    let log = env.path("stderr.log");
    let file = std::fs::File::create(&log).expect("log file");
    let decoy = env.path("journal.sock");
    std::fs::write(&decoy, "").expect("decoy");
    let stream = match journal {
        Journal::Unset => None,
        Journal::Stderr => Some(dev_ino(&log)),
        Journal::Elsewhere => Some(dev_ino(&decoy)),
    };
    let mut cmd = env.command(&["renew"], &[]);
    cmd.env_remove("JOURNAL_STREAM");
    if let Some(s) = &stream {
        cmd.env("JOURNAL_STREAM", s);
    }
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .status()
        .await
        .expect("licrenew runs");
    let text = std::fs::read_to_string(&log).expect("log");
    assert_no_canary("stderr", &text);
    assert_ne!(status.code(), Some(101), "panic:\n{text}");
    assert!(!text.contains("panicked"), "panic:\n{text}");
    assert_eq!(
        env.sim.paid_calls(3002),
        1,
        "license 3002 renewed once:\n{text}"
    );
    assert!(!text.trim().is_empty(), "nothing logged");
    text.lines().map(str::to_owned).collect()
}

/// `<N>` at the start of `line` and the rest, or `None`.
fn split_priority(line: &str) -> Option<(u8, &str)> {
    let rest = line.strip_prefix('<')?;
    let (n, rest) = rest.split_once('>')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, rest))
}

/// The syslog priority of a tracing level name (`INFO`, `WARN`, …).
fn expected_priority(level: &str) -> u8 {
    match level {
        "ERROR" => 3,
        "WARN" => 4,
        "INFO" => 6,
        "DEBUG" | "TRACE" => 7,
        other => panic!("unknown level {other:?}"),
    }
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

/// Checks each line's prefix against its level; returns (priority, level, line after prefix).
fn prioritized(lines: &[String], level_of: impl Fn(&str) -> String) -> Vec<(u8, String, &str)> {
    lines
        .iter()
        .map(|line| {
            let (n, rest) = split_priority(line)
                .unwrap_or_else(|| panic!("a line without its <N> priority: {line:?}"));
            let level = level_of(rest);
            assert_eq!(
                n,
                expected_priority(&level),
                "priority of a {level} line: {line}"
            );
            (n, level, rest)
        })
        .collect()
}

/// The refused renewal is a warning `<4>`, the one bought is info `<6>`.
fn assert_renewal_priorities(lines: &[(u8, String, &str)], renewal: impl Fn(&str) -> bool) {
    assert!(
        lines.iter().any(|(n, _, _)| *n == 6),
        "no info <6> line: {lines:#?}"
    );
    assert!(
        lines.iter().any(|(n, _, _)| *n == 3 || *n == 4),
        "no warning or error line: {lines:#?}"
    );
    let refused = lines
        .iter()
        .find(|(_, _, l)| renewal(l) && l.contains("3004") && l.contains("refused"))
        .unwrap_or_else(|| panic!("no renewal line for 3004: {lines:#?}"));
    assert_eq!(refused.0, 4, "the refused renewal: {}", refused.2);
    let bought = lines
        .iter()
        // `"outcome":"ok"` in JSON, `outcome="ok"` in text.
        .find(|(_, _, l)| renewal(l) && l.contains("3002") && l.contains("\"ok\""))
        .unwrap_or_else(|| panic!("no renewal line for 3002: {lines:#?}"));
    assert_eq!(bought.0, 6, "the renewal bought: {}", bought.2);
}

#[tokio::test]
async fn journald_json_lines_start_with_their_syslog_priority() {
    let lines = renew_logs(Journal::Stderr, false).await;
    let parsed = prioritized(&lines, |rest| {
        json(rest)["level"]
            .as_str()
            .unwrap_or_else(|| panic!("no level: {rest}"))
            .to_owned()
    });
    assert_renewal_priorities(&parsed, |l| json(l)["event"] == "renewal");
    // The priority is the only addition: the rest is the usual JSON line.
    let refused = parsed
        .iter()
        .map(|(_, _, l)| json(l))
        .find(|v| v["event"] == "renewal" && v["elid"] == 3004)
        .expect("renewal of 3004");
    assert_eq!(refused["level"], "WARN", "{refused}");
    assert_eq!(refused["outcome"], "error", "{refused}");
}

#[tokio::test]
async fn journald_pretty_lines_start_with_their_syslog_priority() {
    let lines = renew_logs(Journal::Stderr, true).await;
    let parsed = prioritized(&lines, |rest| {
        // `2026-03-02T17:00:00.000000Z  WARN licrenew::renew: renewal event="renewal" …`
        rest.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no level: {rest}"))
            .to_owned()
    });
    for (_, _, rest) in &parsed {
        assert!(
            !rest.contains('\x1b'),
            "ANSI colours in the journal: {rest:?}"
        );
    }
    assert_renewal_priorities(&parsed, |l| l.contains("event=\"renewal\""));
}

#[tokio::test]
async fn without_journal_stream_lines_have_no_priority() {
    let lines = renew_logs(Journal::Unset, false).await;
    let levels: Vec<String> = lines
        .iter()
        .map(|l| {
            assert!(
                l.starts_with('{'),
                "a line that is not bare JSON (no priority prefix expected): {l}"
            );
            json(l)["level"].as_str().expect("level").to_owned()
        })
        .collect();
    assert!(levels.iter().any(|l| l == "WARN"), "{lines:#?}");
    assert!(levels.iter().any(|l| l == "INFO"), "{lines:#?}");
}

#[tokio::test]
async fn journal_stream_of_another_file_adds_no_priority() {
    let lines = renew_logs(Journal::Elsewhere, false).await;
    for l in &lines {
        assert!(
            split_priority(l).is_none() && l.starts_with('{'),
            "stderr is not the journal's stream, yet: {l}"
        );
        json(l);
    }
}
