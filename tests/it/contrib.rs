//! The queries shipped in contrib/ name only series licrenew exports: every `expr` (and
//! templating query) of the Grafana dashboard, every `expr:` (and annotation `| query`) of the
//! Prometheus rules, and every input series of the rules' unit tests. A renamed metric would
//! otherwise leave an empty panel or an alert that can never fire, and nothing would say so.
//!
//! The exported names are the sample names of a rendered [`Metrics`] whose every family has
//! at least one sample: a counter `x` exposes `x_total`, a histogram `x_seconds` exposes
//! `x_seconds_bucket`, `x_seconds_sum` and `x_seconds_count` (and not `x_seconds` itself),
//! a gauge its own name.

use chrono::{NaiveDate, TimeZone, Utc};
use licrenew::domain::Money;
use licrenew::metrics::Metrics;
use licrenew::overview::LicenseView;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

fn contrib(rel: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

fn view(elid: i64, renews_on: Option<NaiveDate>, expiry: NaiveDate) -> LicenseView {
    LicenseView {
        elid,
        licname: format!("srv{elid}.example.net"),
        ip: "192.0.2.1".into(),
        product_id: 7,
        product: "ISPmanager Lite".into(),
        period_id: Some(8),
        period: Some("1 month".into()),
        expiry,
        days_left: 3,
        status: "active".into(),
        policy: "renew",
        autoprolong: false,
        renews_on,
        why_not: None,
        cost: Some(Money {
            cents: 900,
            currency: "EUR".into(),
        }),
        lapsed_since: None,
        gone_since: None,
        last_outcome: None,
        last_reason: None,
    }
}

/// The OpenMetrics text of a [`Metrics`] on which every public method has been called, so
/// that every family has at least one sample.
fn rendered() -> String {
    let m = Metrics::new();
    let now = Utc
        .with_ymd_and_hms(2026, 3, 2, 17, 0, 0)
        .single()
        .expect("valid time");
    let today = now.date_naive();
    m.observe_api_call("software", "ok", Duration::from_millis(40));
    m.observe_api_call("software.period", "timeout", Duration::from_secs(30));
    m.observe_login(true);
    m.observe_renewal("ok", "ISPmanager Lite");
    m.observe_renewal("error", "ISPmanager Lite");
    m.observe_decision("not due");
    m.cycle_started(now);
    m.cycle_finished(
        now + chrono::Duration::seconds(4),
        "ok",
        Duration::from_secs(4),
    );
    m.set_licenses(
        &[
            view(
                3001,
                Some(today + chrono::Duration::days(2)),
                today + chrono::Duration::days(3),
            ),
            view(3002, None, today + chrono::Duration::days(40)),
        ],
        today,
    );
    m.set_balance("EUR", 12.5);
    m.reload_finished(true, now);
    m.set_alerts_pending(1);
    m.alert_delivery_failed();
    m.set_leader(true);
    m.render()
}

/// The exported sample names, and the families (`# TYPE name type`) they belong to. Fails if
/// a family has no sample: this test would then not know that family's names (a method to
/// call is missing above).
fn exported() -> (BTreeSet<String>, BTreeMap<String, String>) {
    let text = rendered();
    let mut families = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            families.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "not OpenMetrics:\n{text}"
    );
    for (family, kind) in &families {
        let expected: Vec<String> = match kind.as_str() {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            "info" => vec![format!("{family}_info")],
            _ => vec![family.clone()],
        };
        for name in &expected {
            assert!(
                samples.contains(name),
                "the family {family} ({kind}) has no sample {name}: call the method that fills it in rendered()\n{text}"
            );
        }
    }
    for name in &samples {
        assert!(
            name.starts_with("licrenew_"),
            "an exported series without the licrenew_ prefix: {name}"
        );
    }
    (samples, families)
}

/// Every `licrenew_[a-z0-9_]+` name in `text` (not part of a longer identifier).
fn metric_names(text: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    for (at, _) in text.match_indices("licrenew_") {
        if text[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let len = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(text.len() - at);
        let name = &text[at..at + len];
        if name.len() > "licrenew_".len() {
            names.push(name.to_owned());
        }
    }
    names
}

/// Asserts that every metric named by `queries` (where, query text) is exported, with a hint
/// when a name is a family name used without its suffix.
fn assert_exported(what: &str, queries: &[(String, String)]) {
    let (samples, families) = exported();
    let mut named = 0;
    let mut missing = Vec::new();
    for (place, query) in queries {
        for name in metric_names(query) {
            named += 1;
            if samples.contains(&name) {
                continue;
            }
            let hint = match families.get(&name) {
                Some(kind) => {
                    let like: Vec<&String> = samples
                        .iter()
                        .filter(|s| {
                            s.strip_prefix(name.as_str())
                                .is_some_and(|r| r.starts_with('_'))
                        })
                        .collect();
                    format!(" (a {kind} family: its series are {like:?})")
                }
                None => String::new(),
            };
            missing.push(format!("{place}: {name}{hint}\n    in: {query}"));
        }
    }
    assert!(named > 0, "{what}: no licrenew_ metric found in any query");
    assert!(
        missing.is_empty(),
        "{what} names metrics licrenew does not export:\n{}\nexported: {samples:#?}",
        missing.join("\n")
    );
}

/// Every string under an `expr`, `query` or `definition` key of the dashboard, with where it
/// was found (`panels[3].targets[0].expr`).
fn dashboard_queries(v: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{at}.{k}");
                match (k.as_str(), child) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push((here, s.clone()));
                    }
                    _ => dashboard_queries(child, &here, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                dashboard_queries(child, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_licrenew_exports() {
    let (path, text) = contrib("grafana/licrenew.json");
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut queries = Vec::new();
    dashboard_queries(&json, "$", &mut queries);
    let exprs = queries.iter().filter(|(p, _)| p.ends_with(".expr")).count();
    assert!(
        exprs >= 10,
        "only {exprs} panel exprs found in the dashboard"
    );
    assert!(
        queries
            .iter()
            .any(|(p, q)| p.starts_with("$.templating") && q.contains("licrenew_")),
        "the templating queries were not read"
    );
    assert_exported("contrib/grafana/licrenew.json", &queries);
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The value of every `key:` in a YAML text (no YAML parser among the dependencies): an
/// inline scalar (quotes removed) or a block scalar (`|`, `>`, with any chomping indicator),
/// i.e. the following lines indented deeper than the key. With the line number of the key.
fn yaml_values(text: &str, key: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
        let Some(rest) = body
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
        else {
            continue;
        };
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .copied()
                .collect();
            out.push((i + 1, block.join("\n")));
        } else {
            let v = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
                .unwrap_or(rest);
            out.push((i + 1, v.to_owned()));
        }
    }
    out
}

#[test]
fn the_prometheus_rules_query_only_metrics_licrenew_exports() {
    let (_, text) = contrib("prometheus/licrenew.rules.yml");
    let file = "contrib/prometheus/licrenew.rules.yml";
    let exprs = yaml_values(&text, "expr");
    let rules = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count();
    assert!(rules > 0, "no rule found in {file}");
    assert_eq!(exprs.len(), rules, "one expr per rule: {exprs:#?}");
    let mut queries: Vec<(String, String)> = exprs
        .into_iter()
        .map(|(line, q)| {
            assert!(!q.trim().is_empty(), "{file}:{line}: an empty expr");
            (format!("{file}:{line} expr"), q)
        })
        .collect();
    // Queries that annotations run when the alert fires (`{{ … | query }}`).
    for (i, line) in text.lines().enumerate() {
        if line.contains("| query") {
            queries.push((
                format!("{file}:{} annotation query", i + 1),
                line.to_owned(),
            ));
        }
    }
    assert_exported(file, &queries);
}

/// A unit test fed series licrenew never exports would pass and prove nothing.
#[test]
fn the_prometheus_rule_tests_feed_only_series_licrenew_exports() {
    let (_, text) = contrib("prometheus/licrenew.rules.test.yml");
    let file = "contrib/prometheus/licrenew.rules.test.yml";
    let series: Vec<(String, String)> = yaml_values(&text, "series")
        .into_iter()
        .map(|(line, s)| (format!("{file}:{line} series"), s))
        .collect();
    assert!(!series.is_empty(), "no input series in {file}");
    assert_exported(file, &series);
}

#[test]
fn metric_names_are_found_whole_and_only_with_the_prefix() {
    assert_eq!(
        metric_names(
            "sum(licrenew_renewals_total{job=\"licrenew\"}[5m]) / x_licrenew_y + licrenew_cycle_duration_seconds_bucket"
        ),
        [
            "licrenew_renewals_total",
            "licrenew_cycle_duration_seconds_bucket"
        ]
    );
    let yaml = "  - alert: A\n    expr: |\n      licrenew_a\n\n        > 1\n    for: 1m\n  - alert: B\n    expr: 'licrenew_b == 0'\n";
    assert_eq!(
        yaml_values(yaml, "expr"),
        [
            (2, "      licrenew_a\n\n        > 1".to_owned()),
            (8, "licrenew_b == 0".to_owned())
        ]
    );
}
