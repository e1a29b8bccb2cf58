//! Tables and JSON on stdout.

use crate::catalog::Catalog;

pub(super) fn print_catalog(catalog: &Catalog, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(catalog).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![vec![
        "API".to_owned(),
        "PRODUCT".into(),
        "PRICE".into(),
        "PERIOD".into(),
        "LABEL".into(),
        "KIND".into(),
    ]];
    for p in &catalog.products {
        for per in &p.periods {
            rows.push(vec![
                p.generation.as_str().to_owned(),
                p.name.clone(),
                p.price.to_string(),
                per.id.to_string(),
                per.label.clone(),
                per.kind.describe(),
            ]);
        }
    }
    print_table(&rows);
}

/// Left-aligned columns separated by two spaces.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// One line of `history`: a renewal, an order or an edit.
#[derive(serde::Serialize)]
struct HistoryItem<'a> {
    kind: &'static str,
    #[serde(flatten)]
    renewal: Option<&'a crate::store::JournalRow>,
    #[serde(flatten)]
    operation: Option<&'a crate::store::OperationRow>,
}

impl HistoryItem<'_> {
    fn created_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.renewal
            .map(|r| r.created_at)
            .or(self.operation.map(|o| o.created_at))
            .unwrap_or_default()
    }
}

pub(super) fn print_history(
    catalog: &Catalog,
    rows: &[crate::store::JournalRow],
    ops: &[crate::store::OperationRow],
    limit: usize,
    json: bool,
) {
    let mut items: Vec<HistoryItem> = rows
        .iter()
        .map(|r| HistoryItem {
            kind: "renewal",
            renewal: Some(r),
            operation: None,
        })
        .chain(ops.iter().map(|o| HistoryItem {
            kind: if o.kind == "order" { "order" } else { "edit" },
            renewal: None,
            operation: Some(o),
        }))
        .collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.created_at()));
    items.truncate(limit);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return;
    }
    let error_of = |t: &Option<String>, c: &Option<String>, m: &Option<String>| match (t, c, m) {
        (Some(t), _, m) => format!("{t}: {}", m.as_deref().unwrap_or("")),
        (None, Some(c), m) => format!("{c}: {}", m.as_deref().unwrap_or("")),
        (None, None, Some(m)) => m.clone(),
        _ => String::new(),
    };
    let mut t = vec![vec![
        "KIND".to_owned(),
        "ID".into(),
        "WHEN (UTC)".into(),
        "ELID".into(),
        "LICNAME".into(),
        "PERIOD".into(),
        "EXPIRY BEFORE".into(),
        "STATE".into(),
        "NEW EXPIRY / IP".into(),
        "COST".into(),
        "ERROR".into(),
    ]];
    for item in &items {
        if let Some(r) = item.renewal {
            t.push(vec![
                item.kind.to_owned(),
                r.id.to_string(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.elid.to_string(),
                r.licname.clone(),
                catalog.period_label(r.product, r.period),
                r.expiry_before.to_string(),
                r.state.clone(),
                r.new_expiry.map(|d| d.to_string()).unwrap_or_default(),
                r.cost().map(|c| c.to_string()).unwrap_or_default(),
                error_of(&r.error_type, &r.error_class, &r.error_msg),
            ]);
        } else if let Some(o) = item.operation {
            let period = match (o.product, o.period) {
                (Some(p), Some(per)) => catalog.period_label(p, per),
                _ => String::new(),
            };
            t.push(vec![
                item.kind.to_owned(),
                o.id.to_string(),
                o.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                o.elid.map(|e| e.to_string()).unwrap_or_default(),
                o.licname.clone().unwrap_or_default(),
                period,
                String::new(),
                o.state.clone(),
                o.ip.clone().unwrap_or_default(),
                String::new(),
                error_of(&o.error_type, &o.error_class, &o.error_msg),
            ]);
        }
    }
    print_table(&t);
}

pub(super) fn print_events(events: &[crate::renew::Event]) {
    if events.is_empty() {
        return;
    }
    let mut t = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "PRODUCT".into(),
        "EXPIRES".into(),
        "OUTCOME".into(),
        "PERIOD".into(),
        "DETAIL".into(),
    ]];
    for e in events {
        let detail = match (&e.reason, &e.error_type) {
            (_, Some(t)) => format!(
                "{t} {}: {}",
                e.error_object.as_deref().unwrap_or(""),
                e.error_msg.as_deref().unwrap_or("")
            ),
            (Some(r), None) => r.clone(),
            (None, None) => e
                .new_expiry
                .map(|d| format!("new expiry {d}"))
                .unwrap_or_default(),
        };
        t.push(vec![
            e.elid.to_string(),
            e.licname.clone(),
            e.product.clone(),
            e.expiry.to_string(),
            e.outcome.as_str().to_owned(),
            e.period.clone().unwrap_or_default(),
            detail,
        ]);
    }
    print_table(&t);
}

fn date_or(d: Option<chrono::NaiveDate>, or: &str) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| or.to_owned())
}

fn money(m: &Option<crate::domain::Money>) -> String {
    m.as_ref().map(|m| m.to_string()).unwrap_or_default()
}

fn totals(t: &[crate::domain::Money]) -> String {
    if t.is_empty() {
        return "cost unknown".into();
    }
    t.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Every license with days left, the date the plan renews it (or why not), policy,
/// autoprolong and IP. `mark_past_due`: `--expiring` marks the past-due rows.
pub(super) fn print_license_views(
    views: &[crate::overview::LicenseView],
    mark_past_due: bool,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(views).unwrap_or_default()
        );
        return;
    }
    let mut t = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "PRODUCT".into(),
        "EXPIRES".into(),
        "DAYS LEFT".into(),
        "RENEWS ON".into(),
        "POLICY".into(),
        "AUTOPROLONG".into(),
        "IP".into(),
        "STATUS".into(),
    ]];
    for v in views {
        let days = if mark_past_due && v.days_left < 0 {
            format!("{} PAST DUE", v.days_left)
        } else {
            v.days_left.to_string()
        };
        t.push(vec![
            v.elid.to_string(),
            v.licname.clone(),
            v.product.clone(),
            v.expiry.to_string(),
            days,
            match (v.renews_on, &v.why_not) {
                (Some(d), _) => d.to_string(),
                (None, Some(why)) => format!("- ({why})"),
                (None, None) => "-".into(),
            },
            v.policy.to_owned(),
            if v.autoprolong { "on" } else { "off" }.into(),
            v.ip.clone(),
            v.status.clone(),
        ]);
    }
    print_table(&t);
    println!("{} license(s)", views.len());
}

/// `licrenew status` as tables.
pub(super) fn print_status(o: &crate::overview::Overview) {
    let s = &o.service;
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "service    {}",
        match (&s.leader, s.running, s.pid) {
            (Some(l), _, _) => format!("running, led by {l} (since {})", at(s.started_at)),
            (None, true, Some(pid)) => format!("running (pid {pid}, since {})", at(s.started_at)),
            _ => "not running".into(),
        }
    );
    println!(
        "last cycle {} {}{}",
        at(s.last_cycle_at),
        s.last_cycle_outcome.as_deref().unwrap_or("(none yet)"),
        s.last_cycle_error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    );
    println!("next cycle {}", at(s.next_cycle));
    println!("login      {}", s.login);
    println!("api        {}", s.api);
    println!("database   {} ({})", s.database, s.backend);
    if let Some(to) = &s.moved_to {
        println!("moved      to {to} (licrenew db copy): nothing renews with this file");
    }
    if s.backend == "postgres" {
        println!(
            "leader     {}",
            s.leader
                .as_deref()
                .unwrap_or("none: no licrenew run leads on this database")
        );
        if !s.others.is_empty() {
            println!("connected  {} (standbys and commands)", s.others.join(", "));
        }
    }
    println!(
        "alerts     {} pending, {} failing delivery",
        s.alerts_pending, s.alerts_failing
    );
    if let Some(b) = &s.balance {
        println!("balance    {b}");
    }
    println!();
    let mut t = vec![vec![
        "PRODUCT".to_owned(),
        "LICENSES".into(),
        "RENEW POLICY".into(),
        "NOT RENEWED".into(),
        "NO POLICY".into(),
        "AUTOPROLONG".into(),
    ]];
    for p in &o.products {
        t.push(vec![
            p.product.clone(),
            p.licenses.to_string(),
            p.covered.to_string(),
            p.not_renewed.to_string(),
            p.no_policy.to_string(),
            p.autoprolong.to_string(),
        ]);
    }
    print_table(&t);
    for (title, list, total) in [
        ("next 7 days", &o.upcoming_7d, &o.total_7d),
        ("next 30 days", &o.upcoming_30d, &o.total_30d),
    ] {
        println!();
        println!(
            "renewals in the {title}: {} ({})",
            list.len(),
            totals(total)
        );
        if list.is_empty() {
            continue;
        }
        let mut t = vec![vec![
            "DATE".to_owned(),
            "ELID".into(),
            "LICNAME".into(),
            "PRODUCT".into(),
            "PERIOD".into(),
            "COST".into(),
        ]];
        for u in list.iter() {
            t.push(vec![
                u.date.to_string(),
                u.elid.to_string(),
                u.licname.clone(),
                u.product.clone(),
                u.period.clone().unwrap_or_default(),
                money(&u.cost),
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("problems: {}", o.problems.len());
    if !o.problems.is_empty() {
        let mut t = vec![vec![
            "KIND".to_owned(),
            "ELID".into(),
            "LICNAME".into(),
            "DETAIL".into(),
        ]];
        for p in &o.problems {
            t.push(vec![
                p.kind.to_owned(),
                p.elid.to_string(),
                p.licname.clone(),
                p.detail.clone(),
            ]);
        }
        print_table(&t);
    }
    println!();
    println!("last {} outcomes:", o.recent.len());
    if !o.recent.is_empty() {
        let mut t = vec![vec![
            "WHEN (UTC)".to_owned(),
            "ELID".into(),
            "LICNAME".into(),
            "STATE".into(),
            "NEW EXPIRY".into(),
            "COST".into(),
        ]];
        for r in &o.recent {
            t.push(vec![
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.elid.to_string(),
                r.licname.clone(),
                r.state.clone(),
                date_or(r.new_expiry, ""),
                money(&r.cost()),
            ]);
        }
        print_table(&t);
    }
}

/// `renew --dry-run`: the licenses it would renew first (with the new expiry and cost where
/// the billing previews them), then one line per skip reason (every skipped license with
/// `all`), then the totals per currency.
pub(super) fn print_dry_run(report: &crate::daemon::CycleReport, all: bool) {
    use crate::renew::Outcome;
    let would: Vec<&crate::renew::Event> = report
        .events
        .iter()
        .filter(|e| e.outcome == Outcome::DryRun)
        .collect();
    if !would.is_empty() {
        let mut t = vec![vec![
            "WOULD RENEW".to_owned(),
            "LICNAME".into(),
            "PRODUCT".into(),
            "PERIOD".into(),
            "EXPIRES".into(),
            "NEW EXPIRY".into(),
            "COST".into(),
        ]];
        for e in &would {
            t.push(vec![
                e.elid.to_string(),
                e.licname.clone(),
                e.product.clone(),
                e.period.clone().unwrap_or_default(),
                e.expiry.to_string(),
                date_or(e.new_expiry, ""),
                money(&e.cost),
            ]);
        }
        print_table(&t);
    }
    let skipped: Vec<&crate::renew::Event> = report
        .events
        .iter()
        .filter(|e| e.outcome != Outcome::DryRun)
        .collect();
    if all {
        if !skipped.is_empty() {
            println!();
            print_events(&skipped.into_iter().cloned().collect::<Vec<_>>());
        }
    } else {
        let mut by: std::collections::BTreeMap<String, u32> = Default::default();
        for e in &skipped {
            *by.entry(format!(
                "{} ({})",
                e.outcome.as_str(),
                e.reason.as_deref().unwrap_or("-")
            ))
            .or_default() += 1;
        }
        for (why, n) in &by {
            println!("{n:>6} {why}");
        }
        if !by.is_empty() {
            println!("(--all lists every one)");
        }
    }
    let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
    let mut unknown = 0;
    for e in &would {
        match &e.cost {
            Some(c) => *totals.entry(c.currency.clone()).or_default() += c.cents,
            None => unknown += 1,
        }
    }
    let total = totals
        .into_iter()
        .map(|(currency, cents)| crate::domain::Money { cents, currency }.to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    println!(
        "would renew {}{}{}",
        would.len(),
        if total.is_empty() {
            String::new()
        } else {
            format!(", total {total}")
        },
        if unknown > 0 {
            format!(" ({unknown} of unknown cost)")
        } else {
            String::new()
        }
    );
}
