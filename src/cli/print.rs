//! Tables and JSON on stdout.

use crate::catalog::Catalog;
use crate::domain::License;

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

pub(super) fn print_licenses(catalog: &Catalog, licenses: &[License], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(licenses).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "IP".into(),
        "PRODUCT".into(),
        "PERIOD".into(),
        "EXPIRES".into(),
        "STATUS".into(),
    ]];
    for l in licenses {
        let product = catalog.product_name(l.product);
        let period = l
            .period
            .map(|id| catalog.period_label(l.product, id))
            .unwrap_or_default();
        rows.push(vec![
            l.elid.to_string(),
            l.licname.clone(),
            l.ip.clone(),
            product,
            period,
            l.expiry.to_string(),
            l.status.to_string(),
        ]);
    }
    print_table(&rows);
    println!("{} license(s)", licenses.len());
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

pub(super) fn print_stored(catalog: &Catalog, rows: &[crate::store::StoredLicense], json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default());
        return;
    }
    let mut t = vec![vec![
        "ELID".to_owned(),
        "LICNAME".into(),
        "PRODUCT".into(),
        "EXPIRES".into(),
        "STATUS".into(),
        "LAST OUTCOME".into(),
        "REASON".into(),
    ]];
    for l in rows {
        let mut status = l.to_license().status.to_string();
        if l.gone_since.is_some() {
            status.push_str(" (gone)");
        }
        t.push(vec![
            l.elid.to_string(),
            l.licname.clone(),
            catalog.product_name(l.product),
            l.expiry.to_string(),
            status,
            l.last_outcome.clone().unwrap_or_default(),
            l.last_reason.clone().unwrap_or_default(),
        ]);
    }
    print_table(&t);
    println!("{} license(s)", rows.len());
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
