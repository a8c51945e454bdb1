//! The inbox: webhooks committed by the [`WebhookReceiver`] (or
//! [`SyncEngine::ingest_webhook`]), applied by a worker apart from the request that brought
//! them.
//!
//! - The worker ([`SyncEngine::run_inbox_worker`], part of [`SyncEngine::run`]) wakes on each
//!   new delivery when `realtime` is on; every run applies the inbox too.
//! - Deliveries are applied one at a time in arrival order, under the run lock (never beside a
//!   pass), through the engine's client and so within its quota.
//! - Order events fetch the order (contexts are flat and may be stale): an older status never
//!   overwrites a newer one. Several pending ones are completed by one list read of their
//!   window, their contexts' statuses applied at once before it ([`coalesce`]). Lead and
//!   unknown events are kept and marked ignored.
//! - A stock row is applied only when its offer id is the offer the mapping knows under that
//!   SKU and one warehouse is mapped (KeyCRM sends totals over the webhook's warehouses);
//!   otherwise the offers are read again from KeyCRM, per warehouse.
//! - Inbound stock changes pass the mass-zeroing guard: a delivery (or a reconciliation pass)
//!   that would zero more than `max_zeroed_share` of a warehouse's levels is held for review
//!   ([`SyncEvent::Held`]); [`SyncEngine::release_webhook`] applies a held delivery anyway.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use keycrm_api::{Decimal, Paginate};
use tokio_util::sync::CancellationToken;

#[path = "coalesce.rs"]
mod coalesce;

use super::pull::Key;
use super::push::GUARD_MIN_ROWS;
use super::{RunReport, SyncEngine, SyncError, SyncEvent};
use crate::canonical;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::store::{InboxId, InboxItem, InboxStatus, NewInboxItem, Store, StoreError};
use crate::webhook::{
    DEFAULT_REDELIVERY_WINDOW, ReceiverSettings, StockRow, WebhookEvent, WebhookReceiver,
    inbox_item,
};

/// The error an inbox row carries after [`SyncEngine::release_webhook`]: apply it without the
/// mass-zeroing guard.
const RELEASED: &str = "released for review";

/// Deliveries taken from the inbox at a time: a burst of order events in one group is
/// completed by one coalesced read (see [`coalesce`]).
const INBOX_GROUP: usize = 1000;

/// Offers per re-read request (`filter[offers_id]` takes a comma list).
const REREAD_CHUNK: usize = 50;

/// What became of one stored delivery.
enum Outcome {
    Applied,
    Ignored,
    Held(String),
}

/// A stock level to apply: the host's key (`<warehouse>/<sku>`), its warehouse code, the
/// KeyCRM offer id and the fields.
pub(crate) struct StockLevel {
    pub(crate) key: String,
    pub(crate) warehouse: String,
    pub(crate) offer_id: i64,
    pub(crate) fields: Fields,
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// A webhook receiver with the token of [`SyncConfig::webhook_secret`](crate::config::SyncConfig::webhook_secret)
    /// and default limits. Each delivery it commits wakes the inbox worker.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (the receiver spawns its committer).
    pub fn webhook_receiver(&self) -> WebhookReceiver {
        self.webhook_receiver_with(ReceiverSettings::from_config(&self.inner.config))
    }

    /// A webhook receiver with explicit settings (signature check, limits, opt-in to
    /// unauthenticated intake).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn webhook_receiver_with(&self, settings: ReceiverSettings) -> WebhookReceiver {
        let engine = self.clone();
        WebhookReceiver::new(settings, move |items| {
            let engine = engine.clone();
            Box::pin(async move { engine.commit_inbox(items).await })
        })
    }

    /// Validates a webhook body and commits it to the durable inbox through the receiver's
    /// store step (no token check: use [`SyncEngine::webhook_receiver`] for HTTP intake).
    /// Returns `false` for a duplicate delivery. It applies nothing itself: the inbox worker
    /// (woken here) or the next run does; [`SyncEngine::apply_inbox`] applies now.
    pub async fn ingest_webhook(&self, body: &serde_json::Value) -> Result<bool, SyncError> {
        let event = WebhookEvent::from_value(body.clone())?;
        let ids = self
            .commit_inbox(vec![inbox_item(
                &event,
                DEFAULT_REDELIVERY_WINDOW,
                self.now(),
            )])
            .await?;
        Ok(ids.first().is_some_and(Option::is_some))
    }

    /// The store step: one durable commit for the group, then the worker is woken. (Store
    /// backends never block the runtime: SQLite works on its own connection thread.)
    pub(crate) async fn commit_inbox(
        &self,
        items: Vec<NewInboxItem>,
    ) -> Result<Vec<Option<InboxId>>, StoreError> {
        let ids = self
            .inner
            .store
            .inbox_insert_batch(&items, self.now())
            .await?;
        if ids.iter().any(Option::is_some) {
            self.inner.inbox_wake.notify_one();
        }
        Ok(ids)
    }

    /// Applies every stored delivery now (waiting for a run in progress to end).
    pub async fn apply_inbox(&self) -> Result<RunReport, SyncError> {
        let _guard = self.inner.run_lock.lock().await;
        let mut report = RunReport::default();
        Box::pin(self.process_inbox(&mut report)).await?;
        Ok(report)
    }

    /// Applies a delivery the mass-zeroing guard held, without the guard, as soon as the
    /// worker or the next run gets to it. Returns whether the delivery exists.
    pub async fn release_webhook(&self, id: InboxId) -> Result<bool, SyncError> {
        let found = self
            .inner
            .store
            .inbox_mark(id, InboxStatus::Pending, Some(RELEASED), self.now())
            .await?;
        self.inner.inbox_wake.notify_one();
        Ok(found)
    }

    /// Applies stored deliveries each time one is committed, until `shutdown` is cancelled
    /// ([`SyncEngine::run`] runs it). Does nothing when `realtime` is off: runs apply the
    /// inbox then.
    pub async fn run_inbox_worker(&self, shutdown: CancellationToken) {
        if !self.inner.config.realtime {
            shutdown.cancelled().await;
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.inbox_wake.notified() => {}
            }
            if let Err(error) = self.apply_inbox().await {
                super::logline::warn(&error, "applying webhooks failed");
            }
        }
    }

    /// Applies the pending deliveries in arrival order. A store failure stops (the rest stay
    /// pending); any other failure marks that delivery failed (kept for inspection).
    pub(crate) async fn process_inbox(&self, report: &mut RunReport) -> Result<(), SyncError> {
        loop {
            let items = self.inner.store.inbox_pending(INBOX_GROUP).await?;
            if items.is_empty() {
                return Ok(());
            }
            // Order events of the group are completed together (see `coalesce`).
            let settled = Box::pin(self.coalesce_orders(&items, report)).await?;
            for item in items {
                if let Some(error) = settled.get(&item.id) {
                    if error.is_some() {
                        report.failed += 1;
                    }
                    let status = match error {
                        None => InboxStatus::Processed,
                        Some(_) => InboxStatus::Failed,
                    };
                    self.inner
                        .store
                        .inbox_mark(item.id, status, error.as_deref(), self.now())
                        .await?;
                    continue;
                }
                let (status, error) = match Box::pin(self.apply_inbox_item(&item, report)).await {
                    Ok(Outcome::Applied) => (InboxStatus::Processed, None),
                    Ok(Outcome::Ignored) => (InboxStatus::Ignored, None),
                    Ok(Outcome::Held(reason)) => (InboxStatus::Failed, Some(reason)),
                    Err(SyncError::Store(e)) => return Err(SyncError::Store(e)),
                    Err(e) => {
                        report.failed += 1;
                        (InboxStatus::Failed, Some(e.to_string()))
                    }
                };
                self.inner
                    .store
                    .inbox_mark(item.id, status, error.as_deref(), self.now())
                    .await?;
            }
        }
    }

    async fn apply_inbox_item(
        &self,
        item: &InboxItem,
        report: &mut RunReport,
    ) -> Result<Outcome, SyncError> {
        match WebhookEvent::from_value(item.payload.clone())? {
            WebhookEvent::OrderStatusChanged(c) | WebhookEvent::OrderPaymentStatusChanged(c) => {
                self.pull_one(EntityKind::Order, c.id, report).await?;
                Ok(Outcome::Applied)
            }
            WebhookEvent::StockChanged(rows) => {
                let released = item.error.as_deref() == Some(RELEASED);
                self.apply_stock_rows(item.id, rows, released, report).await
            }
            _ => Ok(Outcome::Ignored),
        }
    }

    async fn apply_stock_rows(
        &self,
        id: InboxId,
        rows: Vec<StockRow>,
        released: bool,
        report: &mut RunReport,
    ) -> Result<Outcome, SyncError> {
        let store = &self.inner.store;
        // The delivery carries totals over the webhook's warehouses: with one mapped
        // warehouse they are its level; with several, KeyCRM is asked per warehouse.
        let single = match self.inner.config.warehouse_ids.iter().collect::<Vec<_>>()[..] {
            [(code, _)] => Some(code.clone()),
            _ => None,
        };
        let mut levels = Vec::new();
        let mut reread_ids = BTreeSet::new();
        let mut reread_skus = BTreeSet::new();
        for row in rows {
            let trusted = match (&single, row.offer_id, &row.sku) {
                (Some(_), Some(offer_id), Some(sku)) => store
                    .get_mapping_by_remote(EntityKind::Offer, offer_id)
                    .await?
                    .and_then(|m| m.base)
                    .is_some_and(|b| b.fields.get("sku").and_then(|v| v.as_str()) == Some(sku)),
                _ => false,
            };
            match (row.offer_id, row.sku) {
                (Some(offer_id), Some(sku)) if trusted => {
                    let warehouse = single.clone().unwrap_or_default();
                    let stock = canonical::CanonicalStock {
                        sku,
                        warehouse: warehouse.clone(),
                        quantity: row.in_stock,
                    };
                    levels.push(StockLevel {
                        key: stock.key(),
                        warehouse,
                        offer_id,
                        fields: canonical::stock_fields_from_local(&stock),
                    });
                }
                (Some(offer_id), _) => {
                    reread_ids.insert(offer_id.to_string());
                }
                (None, Some(sku)) => {
                    reread_skus.insert(sku);
                }
                (None, None) => {}
            }
        }
        if !reread_ids.is_empty() || !reread_skus.is_empty() {
            tracing::debug!(
                target: "keycrm_sync",
                offers = reread_ids.len() + reread_skus.len(),
                "stock webhook rows not matching a known offer: reading them from KeyCRM"
            );
        }
        let ids: Vec<String> = reread_ids.into_iter().collect();
        let skus: Vec<String> = reread_skus.into_iter().collect();
        for chunk in ids.chunks(REREAD_CHUNK) {
            self.read_stock_levels(Some(chunk.join(",")), None, &mut levels)
                .await?;
        }
        for chunk in skus.chunks(REREAD_CHUNK) {
            self.read_stock_levels(None, Some(chunk.join(",")), &mut levels)
                .await?;
        }
        if !released && let Some(reason) = self.zeroing_guard(&levels).await? {
            self.hold(&format!("webhook {id}"), &reason).await?;
            return Ok(Outcome::Held(format!("held for review: {reason}")));
        }
        for level in levels {
            self.apply_remote(
                EntityKind::Stock,
                Key::Local(&level.key),
                level.offer_id,
                false,
                Snapshot::new(level.fields, None),
                report,
            )
            .await?;
        }
        Ok(Outcome::Applied)
    }

    /// KeyCRM's per-warehouse stock of some offers (by ids or SKUs), for mapped warehouses.
    async fn read_stock_levels(
        &self,
        ids: Option<String>,
        skus: Option<String>,
        out: &mut Vec<StockLevel>,
    ) -> Result<(), SyncError> {
        let mut request = self.inner.client.offer_stock_list().filter_details(true);
        if let Some(ids) = ids {
            request = request.filter_offers_id(ids);
        }
        if let Some(skus) = skus {
            request = request.filter_offers_sku(skus);
        }
        let started = std::time::Instant::now();
        let stocks: Vec<keycrm_api::types::OfferStock> = self
            .call(async { request.items().try_collect::<Vec<_>>().await })
            .await?;
        tracing::debug!(target: "keycrm_sync", elapsed_ms = started.elapsed().as_millis() as u64, "stock re-read");
        for stock in &stocks {
            let (Some(offer_id), Some(sku)) = (stock.id, stock.sku.as_ref()) else {
                continue;
            };
            for row in stock.warehouse.iter().flatten() {
                let Some(warehouse_id) = row.id else { continue };
                let Some(code) = self.inner.mappings.warehouse_code(warehouse_id) else {
                    continue;
                };
                let Some(fields) = canonical::stock_fields_from_remote(stock, warehouse_id) else {
                    continue;
                };
                out.push(StockLevel {
                    key: format!("{code}/{sku}"),
                    warehouse: code.to_string(),
                    offer_id,
                    fields,
                });
            }
        }
        Ok(())
    }

    /// The mass-zeroing guard for inbound stock: `Some(reason)` when the levels would zero
    /// more than `max_zeroed_share` of a warehouse's known levels (and at least
    /// [`GUARD_MIN_ROWS`] of them). A level counts as zeroed when it is zero now and was not
    /// in the base.
    pub(crate) async fn zeroing_guard(
        &self,
        levels: &[StockLevel],
    ) -> Result<Option<String>, SyncError> {
        let store = &self.inner.store;
        let mut zeroed: BTreeMap<&str, usize> = BTreeMap::new();
        let mut incoming: BTreeMap<&str, usize> = BTreeMap::new();
        for level in levels {
            *incoming.entry(&level.warehouse).or_default() += 1;
            if !is_zero(level.fields.get("quantity")) {
                continue;
            }
            let was = store
                .get_mapping(EntityKind::Stock, &level.key)
                .await?
                .and_then(|m| m.base)
                .map(|b| is_zero(b.fields.get("quantity")));
            if was == Some(false) {
                *zeroed.entry(&level.warehouse).or_default() += 1;
            }
        }
        if zeroed.values().all(|&n| n < GUARD_MIN_ROWS) {
            return Ok(None);
        }
        let known = store.list_mappings(EntityKind::Stock, None).await?;
        let share = self.inner.config.max_zeroed_share;
        for (warehouse, n) in zeroed {
            if n < GUARD_MIN_ROWS {
                continue;
            }
            let prefix = format!("{warehouse}/");
            let total = known
                .iter()
                .filter(|m| m.local_id.starts_with(&prefix))
                .count()
                .max(incoming.get(warehouse).copied().unwrap_or(0));
            if n as f64 > share * total as f64 {
                return Ok(Some(format!(
                    "would zero {n} of {total} stock levels of warehouse {warehouse} (limit {:.0} %)",
                    share * 100.0
                )));
            }
        }
        Ok(None)
    }

    /// Reports inbound stock held by the guard: an audit entry and a [`SyncEvent::Held`].
    pub(crate) async fn hold(&self, source: &str, reason: &str) -> Result<(), SyncError> {
        tracing::warn!(target: "keycrm_sync", source, reason, "inbound stock change held for review");
        self.audit(EntityKind::Stock, source, "held", reason.to_string())
            .await?;
        self.publish(SyncEvent::Held {
            kind: EntityKind::Stock,
            source: source.to_string(),
            reason: reason.to_string(),
        });
        Ok(())
    }
}

fn is_zero(v: Option<&serde_json::Value>) -> bool {
    v.and_then(|v| serde_json::from_value::<Decimal>(v.clone()).ok())
        .is_some_and(|d| d == Decimal::ZERO)
}
