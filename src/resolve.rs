//! Resolving BILLmanager 5/6 list rows that name their tariff instead of giving its id, or
//! give no period (issue 11.1).
//!
//! Owns the order of evidence for a row's product: a numeric `pricelist_id` or `pricelist` (the
//! dialect already took those), what the database remembers of this license under the same
//! display name (a form read earlier), an exact match of the display name with a catalog name
//! or alias, and last the license's own form (`soft.edit`), read once and remembered through the
//! license row. The same for a missing period. A row that still cannot be resolved is an
//! unreadable row, never a silent skip. Must not pay or plan.

use crate::billmgr::{Client, Error as ApiFailure};
use crate::catalog::Catalog;
use crate::domain::{License, RowError, Unresolved};
use crate::store::StoredLicense;
use std::collections::HashMap;

/// What resolution made of the rows.
#[derive(Debug, Default)]
pub struct Resolved {
    pub licenses: Vec<License>,
    pub bad: Vec<RowError>,
    /// Forms read (`soft.edit`) to resolve them.
    pub views: u32,
}

/// Resolves `rows`. `known` is what the database has of these licenses (by elid). Only a
/// refused login is returned as an error: any other failure makes that row unreadable.
pub async fn resolve(
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
    client: &Client,
    catalog: &Catalog,
    known: &HashMap<i64, StoredLicense>,
    rows: Vec<Unresolved>,
) -> Result<Resolved, ApiFailure> {
    let mut out = Resolved::default();
    for u in rows {
        let mut l = u.license;
        let stored = known.get(&l.elid);
        let mut product = u.product_known.then_some(l.product);
        let mut period = if u.period_known { l.period } else { None };
        if product.is_none()
            && let Some(s) = stored
            && s.product != 0
            && s.pricelist_label.is_some()
            && s.pricelist_label == l.pricelist_label
        {
            product = Some(s.product);
        }
        if product.is_none()
            && let Some(label) = l.pricelist_label.as_deref()
            && let Some(p) = catalog.product_by_name(label)
        {
            product = Some(p.price);
        }
        if period.is_none()
            && let Some(s) = stored
            && product == Some(s.product)
        {
            period = s.period;
        }
        if product.is_none() || period.is_none() {
            crate::systemd::alive();
            let Some(read) = crate::stop::unless_stopped(stop, client.view(l.elid)).await else {
                // Stopping: the rest stays unresolved, and is not planned this cycle.
                break;
            };
            match read {
                Ok(form) => {
                    out.views += 1;
                    product = product.or(Some(form.product));
                    period = period.or(form.period);
                    if l.pricelist_label.is_none() {
                        l.pricelist_label = form.pricelist_label;
                    }
                }
                Err(e) if e.is_auth() => return Err(e),
                Err(e) => {
                    out.bad.push(RowError {
                        elid: l.elid.to_string(),
                        reason: format!(
                            "the list names tariff {:?} without its id, and the license's form could not be read: {}",
                            l.pricelist_label.as_deref().unwrap_or(""),
                            e.kind
                        ),
                    });
                    continue;
                }
            }
        }
        let Some(product) = product.filter(|p| *p != 0) else {
            out.bad.push(RowError {
                elid: l.elid.to_string(),
                reason: "no tariff id in the list or in the license's form".into(),
            });
            continue;
        };
        l.product = product;
        l.period = period;
        out.licenses.push(l);
    }
    Ok(out)
}
