//! The status page: the operator's overview as one HTML document, rendered on the server.
//!
//! Owns the markup: no JavaScript, a refresh every minute, readable on a laptop and a phone
//! (tables scroll sideways on a narrow screen), every text escaped. Must not show a secret or
//! offer an action: it only reads the [`Overview`].

use crate::overview::{Overview, Upcoming};
use std::fmt::Write as _;

/// Text made safe for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, head: &[&str], rows: Vec<Vec<String>>, class: &str) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"{class}\"><thead><tr>"
    );
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

fn money_list(t: &[crate::domain::Money]) -> String {
    if t.is_empty() {
        return "cost unknown".into();
    }
    t.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(" + ")
}

fn upcoming(out: &mut String, title: &str, list: &[Upcoming], total: &[crate::domain::Money]) {
    let _ = write!(
        out,
        "<h2>{} <span class=\"muted\">{} renewal(s), {}</span></h2>",
        esc(title),
        list.len(),
        esc(&money_list(total))
    );
    if list.is_empty() {
        out.push_str("<p class=\"muted\">none</p>");
        return;
    }
    table(
        out,
        &["date", "license", "name", "product", "period", "cost"],
        list.iter()
            .map(|u| {
                vec![
                    u.date.to_string(),
                    u.elid.to_string(),
                    u.licname.clone(),
                    u.product.clone(),
                    u.period.clone().unwrap_or_default(),
                    u.cost.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
        "",
    );
}

/// The whole page.
pub fn render(o: &Overview) -> String {
    let s = &o.service;
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "–".into())
    };
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(concat!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta http-equiv=\"refresh\" content=\"60\">",
        "<title>licrenew status</title><style>",
        "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem;color:#222}",
        "h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}",
        ".muted{color:#777;font-weight:normal;font-size:.9rem}",
        ".cards{display:flex;flex-wrap:wrap;gap:.6rem}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem;min-width:9rem}",
        ".card b{display:block;font-size:1.05rem}.bad{background:#fde8e8;border-color:#f5b5b5}.good{background:#e9f7ec;border-color:#b5e0bf}",
        ".scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9rem}",
        "th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;white-space:nowrap}",
        "th{background:#f6f6f6}table.problems td{background:#fff4f4}",
        "</style></head><body>",
    ));
    let _ = write!(
        out,
        "<h1>licrenew <span class=\"muted\">status at {}, refreshed every minute</span></h1>",
        esc(&o.generated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    );
    let card = |out: &mut String, label: &str, value: String, class: &str| {
        let _ = write!(
            out,
            "<div class=\"card {class}\"><span class=\"muted\">{}</span><b>{}</b></div>",
            esc(label),
            esc(&value)
        );
    };
    out.push_str("<div class=\"cards\">");
    card(
        &mut out,
        "service",
        match (&s.leader, s.running) {
            // PostgreSQL: the service is the leading instance, wherever it runs.
            (Some(l), _) => format!("running, led by {l}"),
            (None, true) => format!("running (pid {})", s.pid.unwrap_or_default()),
            (None, false) => "not running".into(),
        },
        if s.running { "good" } else { "bad" },
    );
    let outcome = s
        .last_cycle_outcome
        .clone()
        .unwrap_or_else(|| "none yet".into());
    card(
        &mut out,
        "last cycle",
        format!("{} — {outcome}", at(s.last_cycle_at)),
        if outcome == "ok" { "good" } else { "bad" },
    );
    card(&mut out, "next cycle", at(s.next_cycle), "");
    card(
        &mut out,
        "login",
        s.login.to_owned(),
        if s.login == "refused" { "bad" } else { "" },
    );
    card(
        &mut out,
        "alerts",
        format!("{} pending, {} failing", s.alerts_pending, s.alerts_failing),
        if s.alerts_failing > 0 { "bad" } else { "" },
    );
    if let Some(b) = &s.balance {
        card(&mut out, "balance", b.to_string(), "");
    }
    card(
        &mut out,
        "problems",
        o.problems.len().to_string(),
        if o.problems.is_empty() { "good" } else { "bad" },
    );
    out.push_str("</div>");

    let _ = write!(
        out,
        "<h2>Problems <span class=\"muted\">{}</span></h2>",
        o.problems.len()
    );
    if o.problems.is_empty() {
        out.push_str("<p class=\"muted\">none</p>");
    } else {
        table(
            &mut out,
            &["kind", "license", "name", "detail"],
            o.problems
                .iter()
                .map(|p| {
                    vec![
                        p.kind.to_owned(),
                        p.elid.to_string(),
                        p.licname.clone(),
                        p.detail.clone(),
                    ]
                })
                .collect(),
            "problems",
        );
    }
    upcoming(
        &mut out,
        "Renewals in the next 7 days",
        &o.upcoming_7d,
        &o.total_7d,
    );
    upcoming(
        &mut out,
        "Renewals in the next 30 days",
        &o.upcoming_30d,
        &o.total_30d,
    );

    out.push_str("<h2>Products</h2>");
    table(
        &mut out,
        &[
            "product",
            "licenses",
            "renew policy",
            "not renewed",
            "no policy",
            "autoprolong",
        ],
        o.products
            .iter()
            .map(|p| {
                vec![
                    p.product.clone(),
                    p.licenses.to_string(),
                    p.covered.to_string(),
                    p.not_renewed.to_string(),
                    p.no_policy.to_string(),
                    p.autoprolong.to_string(),
                ]
            })
            .collect(),
        "",
    );

    out.push_str("<h2>Licenses expiring within 30 days</h2>");
    let soon: Vec<Vec<String>> = o
        .licenses
        .iter()
        .filter(|l| l.gone_since.is_none() && l.days_left <= 30)
        .map(|l| {
            vec![
                l.elid.to_string(),
                l.licname.clone(),
                l.product.clone(),
                l.expiry.to_string(),
                l.days_left.to_string(),
                match (l.renews_on, &l.why_not) {
                    (Some(d), _) => d.to_string(),
                    (None, Some(w)) => format!("– ({w})"),
                    (None, None) => "–".into(),
                },
                l.policy.to_owned(),
                if l.autoprolong { "on" } else { "off" }.to_owned(),
                l.ip.clone(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "license",
            "name",
            "product",
            "expires",
            "days left",
            "renews on",
            "policy",
            "autoprolong",
            "IP",
        ],
        soon,
        "",
    );

    out.push_str("<h2>Last outcomes</h2>");
    table(
        &mut out,
        &["when", "license", "name", "outcome", "new expiry", "cost"],
        o.recent
            .iter()
            .map(|r| {
                vec![
                    r.created_at.format("%Y-%m-%d %H:%M").to_string(),
                    r.elid.to_string(),
                    r.licname.clone(),
                    r.state.clone(),
                    r.new_expiry.map(|d| d.to_string()).unwrap_or_default(),
                    r.cost().map(|c| c.to_string()).unwrap_or_default(),
                ]
            })
            .collect(),
        "",
    );
    let _ = writeln!(
        out,
        "<p class=\"muted\">api {} · database {} ({}){} · read-only: this page changes nothing</p></body></html>",
        esc(&s.api),
        esc(&s.database),
        s.backend,
        match (&s.leader, s.this_leads) {
            (_, Some(true)) => " · this instance leads".to_owned(),
            (Some(l), Some(false)) => format!(" · this instance stands by; {} leads", esc(l)),
            (None, Some(false)) => " · this instance stands by; nobody leads".to_owned(),
            (Some(l), None) => format!(" · {} leads", esc(l)),
            (None, None) => String::new(),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
