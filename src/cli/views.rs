//! What the database and the account hold: licenses, history, check, catalog.

use super::print::*;
use super::{Args, Failure, connect, optional_settings, policies_offline, settings};
use crate::catalog::Catalog;
use crate::config;
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
    let store = crate::store::Store::connect(&s.database)
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
            tracing::warn!(event = "bad_row", row = %bad, "skipped a license row that does not parse");
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
    let store = crate::store::Store::connect(&s.database)
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
    // Everything that can be checked offline is, and every problem is named before the exit
    // (a config that does not load names all its own mistakes at once).
    let mut problems: Vec<String> = Vec::new();
    let s = match settings(args) {
        Ok(s) => s,
        Err(Failure::Config(e)) => {
            // The policies are still read (against the built-in catalog), so their mistakes
            // are named in the same run.
            problems.extend(e.to_string().lines().map(str::to_owned));
            let dir = config::policies_dir_hint(&config::resolve_path(args.config.as_deref()));
            let builtin = Catalog::builtin();
            let v5 =
                crate::policy::Policies::load_dir(&dir, &builtin.for_api(config::Api::Billmgr5));
            let v4 =
                crate::policy::Policies::load_dir(&dir, &builtin.for_api(config::Api::Billmgr4));
            if let (Err(e), Err(_)) = (v5, v4) {
                problems.extend(e.to_string().lines().map(str::to_owned));
            }
            if json {
                print_check_json(&[], &problems);
            }
            return Err(Failure::Checks(problems));
        }
        Err(e) => return Err(e),
    };
    let policies = match policies_offline(&s) {
        Ok(p) => p,
        Err(e) => {
            problems.extend(e.to_string().lines().map(str::to_owned));
            crate::policy::Policies::default()
        }
    };
    // Under `auto` with no generation known yet, policies that load for one generation only
    // would stop the service at its first cycle against the other: said now.
    let known_api = match s.database.sqlite_path() {
        Some(path) => crate::store::peek_sqlite_meta(path, "api").await,
        None => None,
    };
    if s.billmgr.api.is_none() && !s.api_detected && known_api.is_none() {
        let load =
            |api| crate::policy::Policies::load_dir(&s.policies_dir, &s.catalog_all.for_api(api));
        match (load(config::Api::Billmgr4), load(config::Api::Billmgr5)) {
            (Ok(_), Err(e)) => say!(
                "warning    the policies load for BILLmanager 4 only; against BILLmanager 5/6 (api = \"auto\" detects it at the first call; pin billmgr.api if yours is not) they fail: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
            (Err(e), Ok(_)) => say!(
                "warning    the policies load for BILLmanager 5/6 only; against BILLmanager 4 (api = \"auto\" detects it at the first call; pin billmgr.api if yours is not) they fail: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
            _ => {}
        }
    }
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
    say!("database   {} ({})", s.database, s.database.backend());
    if let Some(url) = s.database.postgres_url() {
        // Usable, for this account, and who leads: what an admin setting up a pair wants to
        // see first.
        match pg_leader(url, s.lock_key("leader")).await {
            Ok((who, account)) => {
                match who {
                    Some(who) => say!("leader     {who}"),
                    None => say!("leader     none yet (no licrenew run leads on this database)"),
                }
                let mine = format!("{} {}", s.billmgr.url, s.billmgr.username);
                if let Some(stored) = account.filter(|a| *a != mine) {
                    problems.push(format!(
                        "{}: billmgr.url: {}",
                        s.file.display(),
                        crate::overview::account_mismatch(&stored)
                    ));
                }
            }
            Err(e) => problems.push(format!("database {}: cannot use it: {e}", s.database)),
        }
    } else if let Some(path) = s.database.sqlite_path()
        && let Some(to) = crate::store::peek_sqlite_meta(path, "moved_to").await
    {
        // The service would refuse it: a config mistake, named now.
        problems.push(format!(
            "{}: database.url: {} was copied to {to} (licrenew db copy): nothing renews with this file; point [database] url there",
            s.file.display(),
            path.display()
        ));
    }
    for old in crate::config::old_database_locations(&s) {
        if old.exists() {
            say!(
                "warning    another licrenew database exists at {} (an old default location); licrenew uses {} — move it there if it holds your journal",
                old.display(),
                s.database
            );
        }
    }
    say!("catalog    {} products", s.catalog.products.len());
    say!(
        "schedule   {} (UTC), next cycle {}{}",
        s.schedule.cron,
        crate::config::next_cycle(&s.schedule.cron, chrono::Utc::now())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".into()),
        if s.schedule.run_at_start {
            " (and one at start)"
        } else {
            ""
        }
    );
    let (window, widened) = crate::daemon::effective_window(&s, &policies);
    match widened {
        None => say!(
            "window     {} ahead, {} back",
            humantime::format_duration(window),
            humantime::format_duration(s.schedule.lookback)
        ),
        Some(why) => say!(
            "window     {} ahead, {} back (schedule.window {} widened to cover {why})",
            humantime::format_duration(window),
            humantime::format_duration(s.schedule.lookback),
            humantime::format_duration(s.schedule.window)
        ),
    }
    if policies.is_empty() && problems.is_empty() {
        say!(
            "policies   {}: none; nothing will be renewed",
            s.policies_dir.display()
        );
        tracing::warn!(event = "config_warning", dir = %s.policies_dir.display(), "no policy files: licrenew will renew nothing");
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
    let sinks = s.alerts.sinks();
    say!(
        "alerts     {}; digest {}, notify {}, alert_before {}",
        if sinks.is_empty() {
            "logged only (no webhook, command or email)".to_owned()
        } else {
            sinks.join(", ")
        },
        if s.alerts.digest { "on" } else { "off" },
        s.alerts.notify.name(),
        humantime::format_duration(s.alerts.alert_before)
    );
    if let Some(cmd) = &s.alerts.command
        && let Some(why) = not_runnable(&cmd[0])
    {
        problems.push(format!("{}: alerts.command: {why}", s.file.display()));
    }
    for f in &s.secret_files {
        if let Some(mode) = readable_by_others(f) {
            say!(
                "warning    {} holds a secret and is readable by group or others (mode {mode:o}): chmod 600 it",
                f.display()
            );
        }
    }
    if s.inline_password
        && let Some(mode) = readable_by_others(&s.file)
    {
        say!(
            "warning    {} holds billmgr.password and is readable by group or others (mode {mode:o}): chmod 600 it, or move the password to a password_file",
            s.file.display()
        );
    }
    if s.database
        .postgres_url()
        .is_some_and(|u| crate::config::redact_url(u) != u)
        && let Some(mode) = readable_by_others(&s.file).filter(|m| m & 0o004 != 0)
    {
        say!(
            "warning    {} holds the database password (database.url) and is readable by every user (mode {mode:o}): chmod 640 it (group licrenew), or move the password to a PGPASSFILE",
            s.file.display()
        );
    }
    if s.billmgr.password.is_none() {
        problems.push(format!(
            "{}: billmgr.password: no password: set billmgr.password, billmgr.password_file or a systemd credential named \"password\"",
            s.file.display()
        ));
    }
    if !problems.is_empty() {
        if json {
            print_check_json(&lines, &problems);
        }
        return Err(Failure::Checks(problems));
    }
    if online {
        let (s, policies, client) = connect(args, true).await?;
        client.check_login().await?;
        say!("login      {} at {}: ok", s.billmgr.username, s.billmgr.url);
        say!("api        {} in use", s.api_label());
        let listing = client.list(None).await?;
        // Licenses the billing renews by itself that a policy would renew too: one of the two
        // should go, or the account pays twice (licrenew skips them unless overridden).
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
            tracing::warn!(event = "autoprolong_overlap", elid = l.elid, licname = %l.licname, policy = %p.file.display(),
                override_autoprolong = p.override_autoprolong, "license covered by both autoprolong and a renew policy");
        }
        // Products no policy covers: their licenses are never renewed (and alerted as
        // expiring_uncovered when they come close).
        let mut uncovered: std::collections::BTreeMap<String, Vec<&crate::domain::License>> =
            std::collections::BTreeMap::new();
        for l in &listing.licenses {
            if policies.for_product(l.product).is_none()
                && !matches!(l.status, crate::domain::Status::Deleted)
            {
                uncovered
                    .entry(s.catalog.product_name(l.product))
                    .or_default()
                    .push(l);
            }
        }
        for (product, ls) in &uncovered {
            let shown: Vec<String> = ls
                .iter()
                .take(10)
                .map(|l| format!("{} {} (expires {})", l.elid, l.licname, l.expiry))
                .collect();
            say!(
                "uncovered  {product}: {} license(s) no policy covers: {}{}",
                ls.len(),
                shown.join(", "),
                if ls.len() > 10 { ", …" } else { "" }
            );
        }
        say!(
            "licenses   {} listed, {} covered by no policy, {both} covered by both autoprolong and a renew policy",
            listing.licenses.len(),
            uncovered.values().map(Vec::len).sum::<usize>()
        );
    }
    if args.json {
        print_check_json(&lines, &[]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Why the alert command cannot be run, if it cannot: missing, not a file, not executable.
fn not_runnable(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    if !path.is_absolute() {
        return Some(format!(
            "{program}: not found (not beside the config, not in PATH)"
        ));
    }
    match std::fs::metadata(path) {
        Err(e) => Some(format!("{program}: {e}")),
        Ok(m) if !m.is_file() => Some(format!("{program}: not a file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{program}: not executable (chmod +x it)"))
        }
        Ok(_) => None,
    }
}

/// The file's mode when group or others may read it.
fn readable_by_others(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// `check --json`: `{"ok", "items": [{"item", "text"}], "problems": [...]}`.
fn print_check_json(lines: &[String], problems: &[String]) {
    let items: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let (item, text) = l.split_once(' ').unwrap_or((l.as_str(), ""));
            serde_json::json!({"item": item, "text": text.trim_start()})
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "ok": problems.is_empty(),
            "items": items,
            "problems": problems,
        }))
        .unwrap_or_default()
    );
}

/// Who leads on the PostgreSQL database at `url` (`<host> pid <pid>`), and the billing
/// account it serves (if an instance ran on it), asked within 5 s.
async fn pg_leader(url: &str, key: i64) -> Result<(Option<String>, Option<String>), String> {
    use sqlx::Connection;
    let ask = async {
        let opts = crate::leader::session_options(url)?;
        let mut conn = crate::leader::connect(&opts).await?;
        let who = crate::leader::holder(&mut conn, key).await;
        // (No schema yet: no account either.)
        let account: Option<String> = sqlx::query_scalar(
            "SELECT value FROM meta WHERE key = 'account' AND to_regclass('meta') IS NOT NULL",
        )
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
        let _ = conn.close().await;
        who.map(|w| (w, account))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), ask).await {
        Ok(Ok((who, account))) => Ok((who.as_deref().map(crate::leader::describe), account)),
        // sqlx's messages name host and port, never the password.
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// `licrenew db copy --from SQLITE --to POSTGRES`.
pub(super) async fn db_copy(from: &str, to: &str) -> Result<ExitCode, Failure> {
    use crate::config::DatabaseSpec;
    let here = |p: &std::path::Path| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_owned())
    };
    let from =
        DatabaseSpec::parse(from, &here).map_err(|e| Failure::Usage(format!("--from: {e}")))?;
    let to = DatabaseSpec::parse(to, &here).map_err(|e| Failure::Usage(format!("--to: {e}")))?;
    let (Some(path), Some(_)) = (from.sqlite_path(), to.postgres_url()) else {
        return Err(Failure::Usage(
            "db copy goes from a SQLite file (--from) to a PostgreSQL database (--to)".into(),
        ));
    };
    if !path.is_file() {
        return Err(Failure::Usage(format!(
            "--from: {}: no such database file",
            path.display()
        )));
    }
    // As the file's owner (a root shell leaves no root-owned WAL), and never while the
    // service or a command renews with it.
    crate::privileges::become_database_owner(path)
        .map_err(|e| anyhow::anyhow!("cannot work as the owner of {}: {e}", path.display()))?;
    let _lock = crate::store::lock(path)
        .map_err(|e| anyhow::anyhow!("{e}; stop the service first (systemctl stop licrenew)"))?;
    let source = crate::store::Store::open(path)
        .await
        .map_err(anyhow::Error::from)?;
    // The service holds the file lock only during a cycle: an idle one is found by its record.
    let service = source
        .meta("service")
        .await
        .map_err(anyhow::Error::from)?
        .and_then(|(v, _)| serde_json::from_str::<crate::overview::ServiceRecord>(&v).ok())
        .filter(|r| r.host == crate::overview::hostname() && crate::overview::alive(r.pid));
    if let Some((to, at)) = source.meta("moved_to").await.map_err(anyhow::Error::from)? {
        source.close().await;
        return Err(anyhow::anyhow!(
            "{} was already copied to {to} on {}: copying it again would make a second journal; use the database it went to",
            path.display(),
            at.format("%Y-%m-%d %H:%M UTC")
        )
        .into());
    }
    if let Some(r) = service {
        source.close().await;
        return Err(anyhow::anyhow!(
            "licrenew run (pid {}) uses {}: stop the service first (systemctl stop licrenew)",
            r.pid,
            path.display()
        )
        .into());
    }
    let target = match crate::store::Store::connect(&to).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(anyhow::Error::from(e).into());
        }
    };
    let copied = source.copy_into(&target).await;
    // From now on this file renews nothing (its journal lives in PostgreSQL); if it cannot be
    // marked, say so loudly: two journals would not exclude each other.
    let marked = match &copied {
        Ok(_) => source
            .set_meta("moved_to", &to.to_string(), chrono::Utc::now())
            .await
            .map_err(|e| e.to_string()),
        Err(_) => Ok(()),
    };
    source.close().await;
    target.close().await;
    let copied = copied.map_err(anyhow::Error::from)?;
    if let Err(e) = marked {
        return Err(anyhow::anyhow!(
            "copied to {to}, but {} could not be marked as moved ({e}): do not run licrenew with it any more; set [database] url to the PostgreSQL URL",
            path.display()
        )
        .into());
    }
    for (table, n) in &copied {
        println!("{table:<11}{n:>9} rows copied, verified");
    }
    println!(
        "copied {from} → {to}; set [database] url to the PostgreSQL URL and start the service"
    );
    Ok(ExitCode::SUCCESS)
}
