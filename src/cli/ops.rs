//! The manual operations: order, IP check, edit (journaled) and prolong (through the same
//! journal and fences as the service).

use super::print::*;
use super::{Args, Failure, connect, resolve, settings};
use std::process::ExitCode;

pub(super) async fn order(
    args: &Args,
    product: &str,
    period: &str,
    licname: &str,
    ip: &str,
    allow_duplicate: bool,
    no_wait: bool,
) -> Result<ExitCode, Failure> {
    let (s, _, client) = connect(args, true).await?;
    let (prod, per) = resolve(&s.catalog, product, period)?;
    let (prod, per) = (prod.into_owned(), per.clone());
    let settle = s.renewal.settle;
    let ctx = crate::daemon::open_with(s, crate::policy::Policies::default(), client).await?;
    let _lock = ctx.lock(!no_wait).await.map_err(anyhow::Error::from)?;
    let req = crate::orders::OrderRequest {
        product: prod.price,
        product_name: &prod.name,
        period: per.id,
        licname,
        ip,
        allow_duplicate,
    };
    let result = crate::orders::order(&ctx.client, &ctx.store, &req, settle).await;
    ctx.store.close().await;
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(event = "order", product = %prod.name, period = %per.label, licname = %licname,
                ip = %ip, outcome = "failed", error = %e, "order not completed");
            return Err(Failure::Other(anyhow::anyhow!("{e}")));
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).unwrap_or_default()
        );
    }
    match outcome {
        crate::orders::OrderOutcome::Ordered { elid, operation } => {
            tracing::info!(event = "order", product = %prod.name, period = %per.label, licname = %licname,
                ip = %ip, elid, operation, outcome = "ok", "license ordered");
            if !args.json {
                match elid {
                    Some(id) => {
                        println!("ordered {} ({}) as license {id}", prod.name, per.label)
                    }
                    None => println!(
                        "ordered {} ({}); the answer named no id: see `licrenew licenses --live`",
                        prod.name, per.label
                    ),
                }
            }
        }
        crate::orders::OrderOutcome::AlreadyOrdered {
            elid, ordered_at, ..
        } => {
            if !args.json {
                println!(
                    "an earlier order ({}) already created license {elid} ({licname} on {ip}); nothing ordered now",
                    ordered_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn ip_check(
    args: &Args,
    product: &str,
    period: &str,
    ip: &str,
) -> Result<ExitCode, Failure> {
    let (s, _, client) = connect(args, true).await?;
    let (prod, per) = resolve(&s.catalog, product, period)?;
    match client.check_ip(prod.price, per.id, ip).await {
        Ok(check) => {
            if args.json {
                let fields: serde_json::Map<_, _> = check
                    .fields
                    .into_iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "authinfo" | "auth" | "password" | "lickey" | "username"
                        )
                    })
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"ip": ip, "available": true, "fields": fields})
                );
            } else {
                println!("{ip}: available for {} ({})", prod.name, per.label);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.api().is_some() && !e.is_auth() && !e.is_access() => {
            // The server refused the combination: that is the answer, and a failure.
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ip": ip, "available": false, "error": e.api()})
                );
            } else {
                println!("{ip}: not available: {}", e.kind);
            }
            Err(Failure::Api(e))
        }
        Err(e) => Err(Failure::Api(e)),
    }
}

pub(super) async fn edit(
    args: &Args,
    elid: i64,
    licname: Option<&str>,
    ip: Option<&str>,
    no_wait: bool,
) -> Result<ExitCode, Failure> {
    if licname.is_none() && ip.is_none() {
        return Err(Failure::Usage("edit needs --licname and/or --ip".into()));
    }
    let s = settings(args)?;
    crate::billmgr::Client::new(&s.billmgr)?;
    let ctx = crate::daemon::open(s, crate::policy::Policies::default()).await?;
    let _lock = ctx.lock(!no_wait).await.map_err(anyhow::Error::from)?;
    let result = crate::orders::edit(&ctx.client, &ctx.store, elid, licname, ip).await;
    ctx.store.close().await;
    let edited = result.map_err(|e| {
        tracing::warn!(event = "edit", elid, outcome = "failed", error = %e, "license not changed");
        Failure::Other(anyhow::anyhow!("{e}"))
    })?;
    tracing::info!(
        event = "edit",
        elid,
        licname = licname,
        ip = ip,
        operation = edited.operation,
        outcome = "ok",
        "license changed"
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"elid": elid, "outcome": "ok", "licname": licname, "ip": ip})
        );
    } else {
        println!("license {elid} changed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Renews one license by hand, through the same journal and fences as the daemon.
pub(super) async fn prolong(
    args: &Args,
    elid: i64,
    period: &str,
    override_autoprolong: bool,
    no_wait: bool,
) -> Result<ExitCode, Failure> {
    let (s, policies, client) = connect(args, true).await?;
    let ctx = crate::daemon::open_with(s, policies, client).await?;
    // The license as it was when renewing it was asked for, read before waiting for the lock:
    // a renewal that lands meanwhile (a second `prolong` of the same license, a cycle) is
    // then seen as such, and this command pays nothing.
    let asked = ctx.client.view(elid).await?;
    let _lock = ctx.lock(!no_wait).await.map_err(anyhow::Error::from)?;
    let cycle = ctx
        .store
        .begin_cycle("prolong", chrono::Utc::now())
        .await
        .map_err(anyhow::Error::from)?;
    let exec = crate::renew::Executor {
        client: &ctx.client,
        store: &ctx.store,
        catalog: &ctx.settings.catalog,
        settle: ctx.settings.renewal.settle,
        max_per_cycle: 1,
        cycle: Some(cycle),
        source: "manual",
        stop: None,
    };
    let mut counts = crate::store::CycleCounts::default();
    // An earlier renewal of this license whose outcome is open (an interrupted `prolong`, a
    // timed-out cycle) is settled first; if it landed, this command has done its job and
    // pays nothing (issue 10.4). Only a later, separate `prolong` extends further.
    let end = |counts: crate::store::CycleCounts, outcome: &'static str, error: Option<String>| {
        let store = ctx.store.clone();
        async move {
            store
                .end_cycle(
                    cycle,
                    &counts,
                    outcome,
                    error.as_deref(),
                    chrono::Utc::now(),
                )
                .await
                .map_err(anyhow::Error::from)
        }
    };
    for row in ctx
        .store
        .open_renewals()
        .await
        .map_err(anyhow::Error::from)?
        .into_iter()
        .filter(|r| r.elid == elid)
    {
        let ev = match exec.reconcile(&row).await {
            Ok(ev) => ev,
            Err(e) => {
                end(counts, "failed", Some(e.to_string())).await?;
                return Err(Failure::Other(anyhow::anyhow!("{e}")));
            }
        };
        ev.emit(Some(cycle));
        counts.reconciled += 1;
        match ev.outcome {
            crate::renew::Outcome::ReconciledOk => {
                end(counts, "ok", None).await?;
                let new = ev
                    .new_expiry
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "?".into());
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&ev).unwrap_or_default());
                } else {
                    println!(
                        "the earlier renewal of {elid} landed: {} → {new}; nothing paid now",
                        row.expiry_before
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            crate::renew::Outcome::ReconciledFailed => {}
            _ => {
                end(counts, "failed", Some("earlier renewal unsettled".into())).await?;
                return Err(Failure::Other(anyhow::anyhow!(
                    "license {elid}: an earlier renewal's outcome is still unknown ({}); not paying again until it settles",
                    ev.reason.unwrap_or_default()
                )));
            }
        }
    }
    let checked = async {
        let lic = asked;
        let prod = ctx
            .settings
            .catalog
            .product_for(lic.product)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "license {elid} is of product {} which the catalog does not know",
                    lic.product
                ))
            })?;
        let (_, per) = resolve(&ctx.settings.catalog, &prod.price.to_string(), period)?;
        if per.kind.is_trial() {
            return Err(Failure::Usage(format!(
                "{} is a trial period: trials cannot be renewed",
                per.label
            )));
        }
        if lic.autoprolong && !override_autoprolong {
            return Err(Failure::Usage(format!(
                "license {elid} has the billing's own autoprolong on: renewing it here too may pay twice \
                 (turn autoprolong off, or pass --override-autoprolong)"
            )));
        }
        Ok((lic, per))
    }
    .await;
    let (lic, per) = match checked {
        Ok(x) => x,
        Err(f) => {
            end(counts, "failed", Some(f.to_string())).await?;
            return Err(f);
        }
    };
    let per_id = per.id;
    let action = crate::policy::Action {
        license: lic,
        kind: crate::policy::ActionKind::Renew,
        reason: Some("manual".into()),
        period: Some(per_id),
        policy_file: None,
        policy_hash: None,
        due: None,
        cost: None,
    };
    let result = exec.renew(&action).await;
    let (ev, outcome) = match result {
        Ok(ev) => {
            let o = if ev.outcome == crate::renew::Outcome::Ok {
                "ok"
            } else {
                "failed"
            };
            (ev, o)
        }
        Err(e) => {
            ctx.store
                .end_cycle(
                    cycle,
                    &counts,
                    "auth_failed",
                    Some(&e.to_string()),
                    chrono::Utc::now(),
                )
                .await
                .map_err(anyhow::Error::from)?;
            return Err(Failure::Other(anyhow::anyhow!("{e}")));
        }
    };
    ev.emit(Some(cycle));
    let landed_meanwhile = ev.outcome == crate::renew::Outcome::Skipped
        && ev.expiry > action.license.expiry
        && ev
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("renewed elsewhere since listing"));
    match ev.outcome {
        crate::renew::Outcome::Ok => counts.renewed += 1,
        crate::renew::Outcome::Error => counts.failed += 1,
        crate::renew::Outcome::Unknown => counts.unknown += 1,
        _ => counts.skipped += 1,
    }
    ctx.store
        .end_cycle(
            cycle,
            &counts,
            outcome,
            ev.error_msg.as_deref(),
            chrono::Utc::now(),
        )
        .await
        .map_err(anyhow::Error::from)?;
    ctx.store
        .set_decision(
            elid,
            ev.outcome.as_str(),
            ev.reason.as_deref(),
            chrono::Utc::now(),
        )
        .await
        .map_err(anyhow::Error::from)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ev).unwrap_or_default());
    } else if landed_meanwhile {
        println!(
            "license {elid} was renewed meanwhile: {} → {}; nothing paid now",
            action.license.expiry, ev.expiry
        );
    } else {
        print_events(std::slice::from_ref(&ev));
    }
    if landed_meanwhile {
        return Ok(ExitCode::SUCCESS);
    }
    match ev.outcome {
        crate::renew::Outcome::Ok => Ok(ExitCode::SUCCESS),
        crate::renew::Outcome::Error => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: renewal refused: type={} object={} {}",
            ev.error_type.as_deref().unwrap_or("-"),
            ev.error_object.as_deref().unwrap_or("-"),
            ev.error_msg.as_deref().unwrap_or("")
        ))),
        crate::renew::Outcome::Unknown => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: the renewal's outcome is unknown ({}); it will be reconciled by re-reading the license, never resent blindly",
            ev.error_msg.as_deref().unwrap_or("")
        ))),
        _ => Err(Failure::Other(anyhow::anyhow!(
            "license {elid}: not renewed: {}",
            ev.reason.as_deref().unwrap_or("")
        ))),
    }
}
