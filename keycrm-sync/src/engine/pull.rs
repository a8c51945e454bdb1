//! Inbound: local change collection, reconciliation passes, webhooks, and applying a remote
//! record to the host.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use keycrm_api::{Paginate, Timestamp, types};

use super::{RunReport, SyncEngine, SyncError, SyncEvent, now};
use crate::canonical;
use crate::host::{Applied, Host, RemoteChange};
use crate::model::{EntityKind, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::{Mapping, Store, SyncState};

/// Relations an order is read with: enough for its canonical fields.
pub(crate) const ORDER_INCLUDE: &str = "buyer,products.offer,payments,shipping";

/// Cursor of a kind's local changes (the host's opaque cursor).
const LOCAL_CURSOR: &str = "local";
/// Cursor of a kind's remote changes (the start of the last complete pass).
const REMOTE_CURSOR: &str = "remote";

/// How a remote record finds its mapping.
pub(crate) enum Key<'a> {
    /// By KeyCRM id (orders, buyers, products, offers).
    Remote(i64),
    /// By local id (stock: `<warehouse>/<sku>`).
    Local(&'a str),
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Writes every local change since the host cursor to the outbox, then advances it.
    pub(crate) async fn collect(
        &self,
        report: &mut RunReport,
        everything: bool,
    ) -> Result<(), SyncError> {
        let store = &self.inner.store;
        for kind in EntityKind::ALL {
            let cursor = if everything {
                None
            } else {
                store.get_cursor(kind, LOCAL_CURSOR).await?
            };
            let changes = self.inner.host.changes_since(kind, cursor).await?;
            for id in &changes.ids {
                store
                    .enqueue(kind, id, serde_json::json!({}), now())
                    .await?;
                report.collected += 1;
            }
            if let Some(next) = changes.cursor {
                store.set_cursor(kind, LOCAL_CURSOR, &next, now()).await?;
            }
        }
        Ok(())
    }

    /// Reconciliation: orders and buyers incrementally, catalogue and stock in full passes.
    pub(crate) async fn pull(
        &self,
        report: &mut RunReport,
        full: bool,
        everything: bool,
    ) -> Result<(), SyncError> {
        self.pull_orders(report, everything).await?;
        self.pull_buyers(report, everything).await?;
        if full {
            self.pull_products(report).await?;
            self.pull_offers(report).await?;
            self.pull_stock(report).await?;
        }
        Ok(())
    }

    /// The `*_between` window of an incremental pass: from the cursor minus the overlap (or
    /// the beginning) to a minute from now; and the pass start, the next cursor.
    async fn window(
        &self,
        kind: EntityKind,
        everything: bool,
    ) -> Result<(Option<String>, DateTime<Utc>), SyncError> {
        let start = now();
        if everything {
            return Ok((None, start));
        }
        let cursor = self.inner.store.get_cursor(kind, REMOTE_CURSOR).await?;
        let from = cursor
            .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
            .map(|c| {
                c.with_timezone(&Utc)
                    - chrono::Duration::from_std(self.inner.config.overlap()).unwrap_or_default()
            });
        let Some(from) = from else {
            return Ok((None, start));
        };
        let to = start + chrono::Duration::minutes(1);
        Ok((
            Some(keycrm_api::filter::between(
                Timestamp::from(from),
                Timestamp::from(to),
            )),
            start,
        ))
    }

    async fn pull_orders(&self, report: &mut RunReport, everything: bool) -> Result<(), SyncError> {
        let kind = EntityKind::Order;
        let (window, start) = self.window(kind, everything).await?;
        let mut seen = BTreeSet::new();
        let mut complete = true;
        // New orders are reported missing from `updated_between` scans: a second pass by
        // `created_between` (which KeyCRM matches against `ordered_at`).
        let passes: Vec<Option<(bool, String)>> = match &window {
            None => vec![None],
            Some(w) => vec![Some((true, w.clone())), Some((false, w.clone()))],
        };
        for pass in passes {
            let mut request = self
                .inner
                .client
                .order_list()
                .include(ORDER_INCLUDE)
                .sort("id");
            match &pass {
                Some((true, w)) => request = request.filter_updated_between(w.as_str()),
                Some((false, w)) => request = request.filter_created_between(w.as_str()),
                None => {}
            }
            complete &= self
                .apply_all(
                    kind,
                    request.items(),
                    &mut seen,
                    report,
                    |o: &types::Order| {
                        Some((
                            o.id?,
                            canonical::snapshot(
                                canonical::order_fields_from_remote(o),
                                o.updated_at,
                            ),
                        ))
                    },
                )
                .await?;
        }
        self.finish_pass(kind, &seen, complete, everything, Some(start), report)
            .await
    }

    async fn pull_buyers(&self, report: &mut RunReport, everything: bool) -> Result<(), SyncError> {
        let kind = EntityKind::Buyer;
        let (window, start) = self.window(kind, everything).await?;
        let mut request = self.inner.client.buyer_list();
        if let Some(w) = &window {
            request = request.filter_updated_between(w.as_str());
        }
        let mut seen = BTreeSet::new();
        let complete = self
            .apply_all(
                kind,
                request.items(),
                &mut seen,
                report,
                |b: &types::Buyer| {
                    Some((
                        b.id?,
                        canonical::snapshot(canonical::buyer_fields_from_remote(b), b.updated_at),
                    ))
                },
            )
            .await?;
        self.finish_pass(kind, &seen, complete, everything, Some(start), report)
            .await
    }

    async fn pull_products(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Product;
        let mut seen = BTreeSet::new();
        let complete = self
            .apply_all(
                kind,
                self.inner.client.product_list().items(),
                &mut seen,
                report,
                |p: &types::Product| {
                    Some((
                        p.id?,
                        canonical::snapshot(canonical::product_fields_from_remote(p), p.updated_at),
                    ))
                },
            )
            .await?;
        self.finish_pass(kind, &seen, complete, true, None, report)
            .await
    }

    async fn pull_offers(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Offer;
        let mut seen = BTreeSet::new();
        let complete = self
            .apply_all(
                kind,
                self.inner.client.offer_list().items(),
                &mut seen,
                report,
                |o: &types::Offer| {
                    Some((
                        o.id?,
                        canonical::snapshot(canonical::offer_fields_from_remote(o), None),
                    ))
                },
            )
            .await?;
        self.finish_pass(kind, &seen, complete, true, None, report)
            .await
    }

    /// Applies every record of a list stream (each one isolated, see [`Self::isolated`]),
    /// noting the ids seen; returns whether every record was applied.
    async fn apply_all<T>(
        &self,
        kind: EntityKind,
        items: impl futures_util::Stream<Item = keycrm_api::Result<T>>,
        seen: &mut BTreeSet<i64>,
        report: &mut RunReport,
        remote_of: impl Fn(&T) -> Option<(i64, Snapshot)>,
    ) -> Result<bool, SyncError> {
        let mut complete = true;
        let mut items = std::pin::pin!(items);
        while let Some(item) = items.try_next().await? {
            let Some((id, remote)) = remote_of(&item) else {
                continue;
            };
            if !seen.insert(id) {
                continue;
            }
            let result = self
                .apply_remote(kind, Key::Remote(id), id, true, remote, report)
                .await;
            self.isolated(kind, id, result, &mut complete).await?;
        }
        Ok(complete)
    }

    /// After a pass: a complete full pass turns absence into tombstones, and a complete pass
    /// advances the kind's cursor to the pass start.
    async fn finish_pass(
        &self,
        kind: EntityKind,
        seen: &BTreeSet<i64>,
        complete: bool,
        full: bool,
        cursor: Option<DateTime<Utc>>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        if !complete {
            return Ok(());
        }
        if full {
            self.tombstones(kind, seen, report).await?;
        }
        if let Some(start) = cursor {
            self.inner
                .store
                .set_cursor(kind, REMOTE_CURSOR, &start.to_rfc3339(), now())
                .await?;
        }
        Ok(())
    }

    async fn pull_stock(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Stock;
        let mut complete = true;
        let mut levels = Vec::new();
        let mut stocks = std::pin::pin!(
            self.inner
                .client
                .offer_stock_list()
                .filter_details(true)
                .items()
        );
        while let Some(stock) = stocks.try_next().await? {
            let (Some(offer_id), Some(sku)) = (stock.id, stock.sku.clone()) else {
                continue;
            };
            for row in stock.warehouse.iter().flatten() {
                let Some(warehouse_id) = row.id else { continue };
                let Some(code) = self.inner.mappings.warehouse_code(warehouse_id) else {
                    continue;
                };
                let Some(fields) = canonical::stock_fields_from_remote(&stock, warehouse_id) else {
                    continue;
                };
                levels.push(super::inbox::StockLevel {
                    key: format!("{code}/{sku}"),
                    warehouse: code.to_string(),
                    offer_id,
                    fields,
                });
            }
        }
        // Inbound changes pass the mass-zeroing guard too: nothing of the pass is applied.
        if let Some(reason) = self.zeroing_guard(&levels).await? {
            return self.hold("stock pass", &reason).await;
        }
        for level in levels {
            let result = self
                .apply_remote(
                    kind,
                    Key::Local(&level.key),
                    level.offer_id,
                    false,
                    Snapshot::new(level.fields, None),
                    report,
                )
                .await;
            self.isolated(kind, level.offer_id, result, &mut complete)
                .await?;
        }
        Ok(())
    }

    /// Keeps one record's failure (an unmapped status, a host refusal) from stopping a pass:
    /// the record is reported and the pass is marked incomplete, so its cursor stays and the
    /// record is pulled again next run. Store failures still stop the run.
    async fn isolated(
        &self,
        kind: EntityKind,
        remote_id: i64,
        result: Result<(), SyncError>,
        complete: &mut bool,
    ) -> Result<(), SyncError> {
        match result {
            Ok(()) => Ok(()),
            Err(SyncError::Store(e)) => Err(SyncError::Store(e)),
            Err(e) => {
                *complete = false;
                let local_id = format!("remote:{remote_id}");
                self.audit(kind, &local_id, "pull-failed", e.to_string())
                    .await?;
                self.publish(SyncEvent::Failed {
                    kind,
                    local_id,
                    error: e.to_string(),
                    dead: false,
                });
                Ok(())
            }
        }
    }

    /// Mapped records of `kind` that a complete pass did not see are gone from KeyCRM.
    async fn tombstones(
        &self,
        kind: EntityKind,
        seen: &BTreeSet<i64>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        for mapping in self.inner.store.list_mappings(kind, None).await? {
            let Some(remote_id) = mapping.remote_id else {
                continue;
            };
            if seen.contains(&remote_id) {
                continue;
            }
            let change = RemoteChange {
                local_id: Some(mapping.local_id.clone()),
                remote_id,
                fields: Default::default(),
                tombstone: true,
            };
            self.inner.host.apply(kind, change).await?;
            self.inner
                .store
                .delete_mapping(kind, &mapping.local_id)
                .await?;
            self.audit(
                kind,
                &mapping.local_id,
                "tombstone",
                format!("{kind} {remote_id} is gone from KeyCRM"),
            )
            .await?;
            report.applied += 1;
            self.publish(SyncEvent::Applied {
                kind,
                local_id: mapping.local_id,
                remote_id: Some(remote_id),
            });
        }
        Ok(())
    }

    /// Pulls one record by id (on-demand sync).
    pub(crate) async fn pull_one(
        &self,
        kind: EntityKind,
        remote_id: i64,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let remote = match kind {
            EntityKind::Order => {
                let o = self
                    .call(
                        client
                            .order_get()
                            .order_id(remote_id)
                            .include(ORDER_INCLUDE)
                            .send(),
                    )
                    .await?;
                canonical::snapshot(canonical::order_fields_from_remote(&o), o.updated_at)
            }
            EntityKind::Buyer => {
                let b = self
                    .call(client.buyer_get().buyer_id(remote_id).send())
                    .await?;
                canonical::snapshot(canonical::buyer_fields_from_remote(&b), b.updated_at)
            }
            EntityKind::Product => {
                let p = self
                    .call(client.product_get().product_id(remote_id).send())
                    .await?;
                canonical::snapshot(canonical::product_fields_from_remote(&p), p.updated_at)
            }
            EntityKind::Offer => {
                let page = self
                    .call(client.offer_list().filter_id(remote_id.to_string()).send())
                    .await?;
                let Some(o) = page.into_inner().data.into_iter().next() else {
                    return Ok(());
                };
                canonical::snapshot(canonical::offer_fields_from_remote(&o), None)
            }
            EntityKind::Stock => return Ok(()),
        };
        self.apply_remote(
            kind,
            Key::Remote(remote_id),
            remote_id,
            true,
            remote,
            report,
        )
        .await
    }

    /// Plans a remote record against its base and the host's record, applies the result to
    /// the host, logs conflicts, and queues what KeyCRM must still receive.
    pub(crate) async fn apply_remote(
        &self,
        kind: EntityKind,
        key: Key<'_>,
        remote_id: i64,
        map_remote_id: bool,
        remote: Snapshot,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let store = &self.inner.store;
        report.pulled += 1;
        let mut mapping = match key {
            Key::Remote(id) => store.get_mapping_by_remote(kind, id).await?,
            Key::Local(id) => store.get_mapping(kind, id).await?,
        };
        if mapping.is_none() && kind == EntityKind::Order {
            // An order the host created: the engine noted its number (the source_uuid)
            // before sending the create, so a create whose answer was lost is found again
            // even when the host's ids differ from its numbers.
            if let Some(uuid) = remote.fields.get("source_uuid").and_then(|v| v.as_str()) {
                let noted = store.get_cursor(kind, &source_uuid_key(uuid)).await?;
                let local_id = noted.unwrap_or_else(|| uuid.to_string());
                mapping = store.get_mapping(kind, &local_id).await?;
            }
        }
        if mapping.is_none() && matches!(key, Key::Remote(_)) {
            // Not mapped yet: maybe the host has it already (first sync, or a create whose
            // mapping was never written).
            if let Some(local_id) = self
                .inner
                .host
                .find_local(kind, remote.fields.clone())
                .await?
            {
                mapping = Some(
                    store
                        .get_mapping(kind, &local_id)
                        .await?
                        .unwrap_or_else(|| Mapping::new(kind, &local_id)),
                );
            }
        }
        if let Key::Local(id) = key
            && mapping.is_none()
        {
            mapping = Some(Mapping::new(kind, id));
        }
        if let Some(base) = mapping.as_ref().and_then(|m| m.base.as_ref())
            && base.fields == remote.fields
        {
            return Ok(()); // our own write coming back, or nothing new
        }
        let local = match &mapping {
            Some(m) => self.inner.host.load(kind, m.local_id.clone()).await?,
            None => None,
        };
        let policy = self.policy(kind);
        let base = mapping.as_ref().and_then(|m| m.base.clone());
        let planned = plan(&PlanInput {
            kind,
            base: base.as_ref(),
            local: local.as_ref(),
            remote: Some(&remote),
            policy: &policy,
        });
        let mapped_local_id = mapping.as_ref().map(|m| m.local_id.clone());
        let local_id = if local.is_none() || !planned.to_local.is_empty() {
            let change = RemoteChange {
                local_id: mapped_local_id.clone(),
                remote_id,
                fields: planned.merged.clone(),
                tombstone: false,
            };
            match self.inner.host.apply(kind, change).await? {
                Applied::Stored { local_id } => {
                    report.applied += 1;
                    self.publish(SyncEvent::Applied {
                        kind,
                        local_id: local_id.clone(),
                        remote_id: Some(remote_id),
                    });
                    local_id
                }
                Applied::Skipped { reason } => {
                    self.audit(
                        kind,
                        mapped_local_id.as_deref().unwrap_or("-"),
                        "skipped",
                        reason,
                    )
                    .await?;
                    return Ok(());
                }
            }
        } else {
            mapped_local_id
                .clone()
                .expect("a local record implies a mapping")
        };
        self.log_conflicts(kind, &local_id, Some(remote_id), &planned.conflicts, report)
            .await?;
        let mut m = mapping.unwrap_or_else(|| Mapping::new(kind, &local_id));
        m.local_id = local_id.clone();
        if map_remote_id {
            m.remote_id = Some(remote_id);
        }
        // The base is what KeyCRM has now: what the host still has to send shows up as a
        // local change against it.
        m.base = Some(remote.clone());
        m.remote_updated_at = remote.updated_at;
        m.last_sync_at = Some(now());
        m.content_hash = Some(canonical::snapshot(planned.merged.clone(), None).hash());
        m.error = None;
        if planned.to_remote.is_empty() {
            m.state = SyncState::Synced;
        } else {
            m.state = SyncState::Pending;
            store
                .enqueue(kind, &local_id, serde_json::json!({}), now())
                .await?;
        }
        store.put_mapping(&m).await?;
        Ok(())
    }
}

/// The cursor-table key under which the engine notes which local order carries a number
/// (`source_uuid`), written before the create is sent.
pub(crate) fn source_uuid_key(uuid: &str) -> String {
    format!("source_uuid:{uuid}")
}
