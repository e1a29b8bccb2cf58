//! Manual orders and edits, journaled like renewals (issue 10.5).
//!
//! Owns the order of operations that keeps an order from being bought twice: a retry of an
//! order whose outcome is open (or that succeeded within the last hour) first looks in the
//! account for the license it may have created and reports it instead of ordering again; the
//! IP is checked before paying (a license of that product already on the IP refuses the order
//! unless `allow_duplicate`); the intent row is committed before the request leaves; and a
//! timed-out order is recorded `unknown`, with what to check. Edits get the same journal.
//! Must not retry a paid call, or print (the CLI does).

use crate::billmgr::{Certainty, Client, Error as ApiFailure};
use crate::policy::JournalState;
use crate::store::{OperationIntent, OperationRow, Settlement, Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How far back a settled, successful order of the same product, name and IP makes a new one
/// look for the license first.
pub const RECENT_ORDER: Duration = Duration::from_secs(3600);

/// What to order.
#[derive(Clone, Debug)]
pub struct OrderRequest<'a> {
    /// Product id on the wire (`price` / `pricelist`) and its name for messages.
    pub product: i64,
    pub product_name: &'a str,
    /// Period id (BILLmanager 4) or months (5/6).
    pub period: i64,
    pub licname: &'a str,
    pub ip: &'a str,
    /// Order even when a license of this product already holds the IP.
    pub allow_duplicate: bool,
}

/// How an order ended without an error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Bought now; the new license's id when the answer named it.
    Ordered { operation: i64, elid: Option<i64> },
    /// An earlier order of the same product, name and IP had already created this license:
    /// nothing was ordered now.
    AlreadyOrdered {
        operation: i64,
        elid: i64,
        ordered_at: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Api(#[from] ApiFailure),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The IP check refused: a license of this product already holds the IP, or the
    /// combination is not available for another reason the message gives.
    #[error(
        "{ip} is not available for {product}: it already holds a license of it, or the check refused ({detail}); nothing ordered (pass --allow-duplicate to order anyway)"
    )]
    IpTaken {
        ip: String,
        product: String,
        detail: String,
    },
    /// An earlier identical order is open and no license from it shows up yet.
    #[error(
        "an earlier order of {product} \"{licname}\" on {ip} (journal #{operation}, {at}) has an unknown outcome and no such license shows up yet; not ordering again before {until} (check `licrenew licenses --live`)"
    )]
    Unsettled {
        product: String,
        licname: String,
        ip: String,
        operation: i64,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// The order was sent and its outcome is unknown.
    #[error(
        "the order of {product} \"{licname}\" on {ip} (journal #{operation}) has an unknown outcome: {why}. It may have been bought: check `licrenew licenses --live` for a license named \"{licname}\" on {ip}; running the same `licrenew order` again looks for it first and never orders twice"
    )]
    Unknown {
        product: String,
        licname: String,
        ip: String,
        operation: i64,
        why: String,
    },
}

/// Orders a license through the journal. See the module docs for the order of operations.
pub async fn order(
    client: &Client,
    store: &Store,
    req: &OrderRequest<'_>,
    settle: Duration,
) -> Result<OrderOutcome, OrderError> {
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(RECENT_ORDER).unwrap_or_default();
    let earlier = store
        .earlier_orders(req.product, req.licname, req.ip, since)
        .await?;
    if !earlier.is_empty()
        && let Some(done) = settle_earlier(client, store, req, &earlier, settle).await?
    {
        return Ok(done);
    }

    if !req.allow_duplicate {
        match client.check_ip(req.product, req.period, req.ip).await {
            Ok(_) => {}
            // Any `<error>` from the check means "not available" (public clients read it so;
            // the error type of an IP already in use is not documented): refuse to pay.
            Err(e) if e.api().is_some() && !e.is_auth() && !e.is_access() => {
                return Err(OrderError::IpTaken {
                    ip: req.ip.to_owned(),
                    product: req.product_name.to_owned(),
                    detail: e.kind.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }

    let intent = OperationIntent {
        kind: "order",
        elid: None,
        product: Some(req.product),
        period: Some(req.period),
        licname: Some(req.licname),
        ip: Some(req.ip),
    };
    let Some(op) = store.insert_operation(&intent, Utc::now()).await? else {
        // Another process wrote an open order of the same license between our look and now.
        let open = store
            .earlier_orders(req.product, req.licname, req.ip, since)
            .await?;
        let first = open.first();
        return Err(OrderError::Unsettled {
            product: req.product_name.to_owned(),
            licname: req.licname.to_owned(),
            ip: req.ip.to_owned(),
            operation: first.map_or(0, |o| o.id),
            at: first.map_or(now, |o| o.created_at),
            until: first.map_or(now, |o| o.created_at) + chrono_settle(settle),
        });
    };
    crate::failpoint::hit("order-after-intent");
    let result = client
        .order(req.product, req.period, req.licname, req.ip)
        .await;
    let now = Utc::now();
    match result {
        Ok(elid) => {
            store
                .settle_operation(op, JournalState::Ok, elid, &Settlement::default(), now)
                .await?;
            Ok(OrderOutcome::Ordered {
                operation: op,
                elid,
            })
        }
        Err(e) => {
            let state = match e.certainty() {
                Certainty::Unknown => JournalState::Unknown,
                Certainty::Refused | Certainty::NotSent => JournalState::Error,
            };
            store
                .settle_operation(op, state, None, &settlement(&e), now)
                .await?;
            if state == JournalState::Unknown {
                return Err(OrderError::Unknown {
                    product: req.product_name.to_owned(),
                    licname: req.licname.to_owned(),
                    ip: req.ip.to_owned(),
                    operation: op,
                    why: e.to_string(),
                });
            }
            Err(e.into())
        }
    }
}

/// Looks in the account for the license earlier orders of this product, name and IP may have
/// created. `Some` when one exists (nothing more to do); `None` when ordering may go ahead
/// (the open earlier orders, older than `settle`, are closed as not bought).
async fn settle_earlier(
    client: &Client,
    store: &Store,
    req: &OrderRequest<'_>,
    earlier: &[OperationRow],
    settle: Duration,
) -> Result<Option<OrderOutcome>, OrderError> {
    let listing = client.list(None).await?;
    let found = listing
        .licenses
        .iter()
        .map(|l| (l.elid, l.licname.as_str(), l.ip.as_str(), Some(l.product)))
        .chain(
            listing
                .pending
                .iter()
                .map(|p| (p.elid, p.licname.as_str(), p.ip.as_str(), None)),
        )
        .find(|(_, name, ip, product)| {
            *name == req.licname && *ip == req.ip && product.is_none_or(|p| p == req.product)
        })
        .map(|(elid, ..)| elid);
    let now = Utc::now();
    if let Some(elid) = found {
        for row in earlier
            .iter()
            .filter(|r| r.state().is_some_and(|s| s.is_open()))
        {
            store
                .settle_operation(
                    row.id,
                    JournalState::ReconciledOk,
                    Some(elid),
                    &Settlement::default(),
                    now,
                )
                .await?;
        }
        let first = &earlier[0];
        tracing::info!(
            event = "order",
            elid,
            operation = first.id,
            outcome = "already_ordered",
            licname = req.licname,
            ip = req.ip,
            "an earlier order already created this license; nothing ordered"
        );
        return Ok(Some(OrderOutcome::AlreadyOrdered {
            operation: first.id,
            elid,
            ordered_at: first.created_at,
        }));
    }
    for row in earlier
        .iter()
        .filter(|r| r.state().is_some_and(|s| s.is_open()))
    {
        let until = row.created_at + chrono_settle(settle);
        if now < until {
            return Err(OrderError::Unsettled {
                product: req.product_name.to_owned(),
                licname: req.licname.to_owned(),
                ip: req.ip.to_owned(),
                operation: row.id,
                at: row.created_at,
                until,
            });
        }
        let s = Settlement {
            error_msg: Some("no such license in the account after the settle time".into()),
            ..Settlement::default()
        };
        store
            .settle_operation(row.id, JournalState::ReconciledFailed, None, &s, now)
            .await?;
    }
    Ok(None)
}

/// How an edit ended without an error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Edited {
    pub operation: i64,
}

/// Changes a license's name and/or IP through the journal.
pub async fn edit(
    client: &Client,
    store: &Store,
    elid: i64,
    licname: Option<&str>,
    ip: Option<&str>,
) -> Result<Edited, OrderError> {
    let intent = OperationIntent {
        kind: "edit",
        elid: Some(elid),
        product: None,
        period: None,
        licname,
        ip,
    };
    let op = store
        .insert_operation(&intent, Utc::now())
        .await?
        .ok_or_else(|| StoreError::Locked("edit journal refused the row".into()))?;
    let result = client.edit(elid, licname, ip).await;
    let now = Utc::now();
    match result {
        Ok(()) => {
            store
                .settle_operation(op, JournalState::Ok, None, &Settlement::default(), now)
                .await?;
            Ok(Edited { operation: op })
        }
        Err(e) => {
            let state = match e.certainty() {
                Certainty::Unknown => JournalState::Unknown,
                Certainty::Refused | Certainty::NotSent => JournalState::Error,
            };
            store
                .settle_operation(op, state, None, &settlement(&e), now)
                .await?;
            Err(e.into())
        }
    }
}

fn settlement(e: &ApiFailure) -> Settlement {
    let api = e.api_detail();
    Settlement {
        error_class: Some(e.class().to_owned()),
        error_type: api.map(|a| a.kind.clone()),
        error_object: api.and_then(|a| a.object.clone()),
        error_msg: Some(
            api.and_then(|a| a.msg.clone())
                .unwrap_or_else(|| e.kind.to_string()),
        ),
        new_expiry: None,
    }
}

fn chrono_settle(settle: Duration) -> chrono::Duration {
    chrono::Duration::from_std(settle).unwrap_or_default()
}
