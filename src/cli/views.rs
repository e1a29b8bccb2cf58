//! What the database and the account hold: licenses, history, check, catalog.

use super::print::*;
use super::{Args, Failure, connect, optional_settings, policies_offline, settings};
use crate::catalog::Catalog;
use crate::config::{self, ConfigError};
use std::process::ExitCode;

pub(super) fn catalog(args: &Args) -> Result<ExitCode, Failure> {
    let catalog = optional_settings(args)?
        .map(|s| s.catalog_all)
        .unwrap_or_else(Catalog::builtin);
    print_catalog(&catalog, args.json);
    Ok(ExitCode::SUCCESS)
}

/// The settings, with the catalog of the generation last detected (offline, under
/// `api = "auto"`), the policies against it, and the store: what the read-only views need.
/// Takes no lock.
pub(super) async fn offline(
    args: &Args,
) -> Result<
    (
        config::Settings,
        crate::policy::Policies,
        crate::store::Store,
    ),
    Failure,
> {
    let mut s = settings(args)?;
    let store = crate::store::Store::open(&s.database)
        .await
        .map_err(anyhow::Error::from)?;
    if s.billmgr.api.is_none()
        && let Some((api, _)) = store.meta("api").await.map_err(anyhow::Error::from)?
    {
        match api.as_str() {
            "billmgr4" => s.use_generation(config::Api::Billmgr4),
            "billmgr5" => s.use_generation(config::Api::Billmgr5),
            _ => {}
        }
    }
    let policies = match policies_offline(&s) {
        Ok(p) => p,
        Err(f) => {
            store.close().await;
            return Err(f);
        }
    };
    Ok((s, policies, store))
}

pub(super) async fn licenses(
    args: &Args,
    live: bool,
    expiring: Option<std::time::Duration>,
) -> Result<ExitCode, Failure> {
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let horizon = expiring.map(|d| (d.as_secs().div_ceil(86_400)) as i64);
    let views = if live {
        let (s, policies, client) = connect(args, true).await?;
        let window = expiring.map(|d| {
            let back = chrono::Duration::from_std(s.schedule.lookback).unwrap_or_default();
            let fwd = chrono::Duration::from_std(d).unwrap_or_default();
            (today - back, today + fwd)
        });
        let mut listing = client.list(window).await?;
        let unresolved = std::mem::take(&mut listing.unresolved);
        let resolved = crate::resolve::resolve(
            None,
            &client,
            &s.catalog,
            &std::collections::HashMap::new(),
            unresolved,
        )
        .await?;
        listing.licenses.extend(resolved.licenses);
        for bad in &resolved.bad {
            tracing::warn!(row = %bad, "skipped a license row that does not parse");
        }
        crate::overview::live_views(&listing.licenses, &s, &policies, &[], today)
    } else {
        let (s, policies, store) = offline(args).await?;
        let stored = store.licenses().await.map_err(anyhow::Error::from)?;
        let journal = store
            .journal_for_planning()
            .await
            .map_err(anyhow::Error::from)?;
        store.close().await;
        crate::overview::license_views(&stored, &s, &policies, &journal, today)
    };
    let views: Vec<_> = views
        .into_iter()
        .filter(|v| horizon.is_none_or(|h| v.days_left <= h))
        .collect();
    print_license_views(&views, expiring.is_some(), args.json);
    Ok(ExitCode::SUCCESS)
}

/// `licrenew status`: the service, products, upcoming renewals and their cost, problems.
pub(super) async fn status(args: &Args) -> Result<ExitCode, Failure> {
    let (s, policies, store) = offline(args).await?;
    let overview = crate::overview::build(&store, &s, &policies, chrono::Utc::now())
        .await
        .map_err(anyhow::Error::from);
    store.close().await;
    let overview = overview?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&overview).unwrap_or_default()
        );
    } else {
        print_status(&overview);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn history(
    args: &Args,
    elid: Option<i64>,
    limit: u32,
) -> Result<ExitCode, Failure> {
    let s = settings(args)?;
    let store = crate::store::Store::open(&s.database)
        .await
        .map_err(anyhow::Error::from)?;
    let rows = store
        .history(elid, limit)
        .await
        .map_err(anyhow::Error::from)?;
    let ops = store
        .operations(elid, limit)
        .await
        .map_err(anyhow::Error::from)?;
    store.close().await;
    print_history(&s.catalog, &rows, &ops, limit as usize, args.json);
    Ok(ExitCode::SUCCESS)
}

/// Validates config, catalog and policies; with `online`, logs in once.
pub(super) async fn check(args: &Args, online: bool) -> Result<ExitCode, Failure> {
    // Printed as it goes (a failure later still shows what was checked), or collected for
    // `--json`.
    let mut lines: Vec<String> = Vec::new();
    let json = args.json;
    macro_rules! say {
        ($($t:tt)*) => {{
            let line = format!($($t)*);
            if json {
                lines.push(line);
            } else {
                println!("{line}");
            }
        }};
    }
    let (s, policies, client) = if online {
        let (s, p, c) = connect(args, true).await?;
        (s, p, Some(c))
    } else {
        let s = settings(args)?;
        let p = policies_offline(&s)?;
        (s, p, None)
    };
    say!("config     {}: ok", s.file.display());
    say!("api        {} at {}", s.api_label(), s.billmgr.url);
    say!(
        "process    {}",
        if crate::systemd::dumpable() {
            "core dumps possible (could not make the process non-dumpable)"
        } else {
            "non-dumpable: no core file, no ptrace"
        }
    );
    if s.billmgr.insecure() {
        say!(
            "warning    {} is plain http:// to another host: the password crosses the network in clear (billmgr.allow_insecure_http)",
            s.billmgr.url
        );
    }
    say!("database   {}", s.database.display());
    for old in crate::config::old_database_locations(&s) {
        if old.exists() {
            say!(
                "warning    another licrenew database exists at {} (an old default location); licrenew uses {} — move it there if it holds your journal",
                old.display(),
                s.database.display()
            );
        }
    }
    say!("catalog    {} products", s.catalog.products.len());
    say!(
        "schedule   {} (UTC), window {}, next cycle {}{}",
        s.schedule.cron,
        humantime::format_duration(s.schedule.window),
        crate::config::next_cycle(&s.schedule.cron, chrono::Utc::now())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".into()),
        if s.schedule.run_at_start {
            " (and one at start)"
        } else {
            ""
        }
    );
    if policies.is_empty() {
        say!(
            "policies   {}: none; nothing will be renewed",
            s.policies_dir.display()
        );
        tracing::warn!(dir = %s.policies_dir.display(), "no policy files: licrenew will renew nothing");
    }
    for p in policies.iter() {
        let period = p
            .period
            .map(|id| s.catalog.period_label(p.product, id))
            .unwrap_or_else(|| "-".into());
        say!(
            "policy     {}: {} renew={} period={} before={}",
            p.file.display(),
            p.product_name,
            p.renew,
            period,
            humantime::format_duration(p.before)
        );
    }
    for p in policies.ignored() {
        say!(
            "ignored    {}: not a policy (only *.toml files are read)",
            p.display()
        );
    }
    if s.billmgr.password.is_none() {
        return Err(Failure::Config(ConfigError::new(
            &s.file,
            Some("billmgr.password"),
            "no password: set billmgr.password, billmgr.password_file or a systemd credential named \"password\"",
        )));
    }
    if let Some(client) = client {
        client.check_login().await?;
        say!("login      {} at {}: ok", s.billmgr.username, s.billmgr.url);
        // Licenses the billing renews by itself that a policy would renew too: one of the two
        // should go, or the account pays twice (licrenew skips them unless overridden).
        let listing = client.list(None).await?;
        let mut both = 0;
        for l in listing.licenses.iter().filter(|l| l.autoprolong) {
            let Some(p) = policies.for_product(l.product) else {
                continue;
            };
            if !p.rule_for(l).renew {
                continue;
            }
            both += 1;
            let what = if p.override_autoprolong {
                "override_autoprolong = true: licrenew renews it too, the account may pay twice"
            } else {
                "skipped by licrenew while autoprolong is on"
            };
            say!(
                "warning    license {} ({}): server-side autoprolong is on and {} renews it: {what}",
                l.elid,
                l.licname,
                p.file.display()
            );
            tracing::warn!(elid = l.elid, licname = %l.licname, policy = %p.file.display(),
                override_autoprolong = p.override_autoprolong, "license covered by both autoprolong and a renew policy");
        }
        say!(
            "licenses   {} listed, {both} covered by both autoprolong and a renew policy",
            listing.licenses.len()
        );
    }
    if args.json {
        let items: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| {
                let (item, text) = l.split_once(' ').unwrap_or((l.as_str(), ""));
                serde_json::json!({"item": item, "text": text.trim_start()})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": true, "items": items}))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
