//! Outbound: sending due outbox items to KeyCRM with as few requests as it allows.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use keycrm_api::{Decimal, Paginate, types};

use super::pull::{ORDER_INCLUDE, source_uuid_key};
use super::{RunReport, SyncEngine, SyncError, SyncEvent, batch, now, outbox_backoff};
use crate::canonical::{self, CanonicalStock, OfferRef};
use crate::host::{Applied, Host, RemoteChange};
use crate::model::{EntityKind, Fields, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::{Mapping, OutboxItem, Store, StoreError, SyncState};

// requests: buyers in batches and order updates without reads (own files, children of
// this module for its helpers).
#[path = "buyer_batch.rs"]
mod buyer_batch;
#[path = "writes.rs"]
mod writes;

/// Stock pushes smaller than this are never held back by the mass-zeroing guard.
pub const GUARD_MIN_ROWS: usize = 10;

/// One outbox item ready to send: the local record and its mapping.
struct Work {
    item: OutboxItem,
    local: Snapshot,
    mapping: Option<Mapping>,
}

impl Work {
    fn remote_id(&self) -> Option<i64> {
        self.mapping.as_ref().and_then(|m| m.remote_id)
    }
}

fn text(fields: &Fields, key: &str) -> Option<String> {
    fields.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    pub(crate) async fn push(&self, report: &mut RunReport) -> Result<(), SyncError> {
        self.push_only(report, None).await
    }

    /// Sends the due outbox (or one record of it).
    pub(crate) async fn push_only(
        &self,
        report: &mut RunReport,
        only: Option<(EntityKind, &str)>,
    ) -> Result<(), SyncError> {
        let due = self
            .inner
            .store
            .due_outbox(self.outbox_now(), usize::MAX >> 1)
            .await?;
        let mut by_kind: BTreeMap<EntityKind, Vec<Work>> = BTreeMap::new();
        for item in due {
            if only.is_some_and(|(k, id)| k != item.kind || id != item.local_id) {
                continue;
            }
            let kind = item.kind;
            let local = match self.inner.host.load(kind, item.local_id.clone()).await {
                Ok(local) => local,
                Err(e) => {
                    self.fail(&item, &e.to_string(), report).await?;
                    continue;
                }
            };
            let Some(local) = local else {
                // KeyCRM has no deletes for these records: keep the remote record, log it.
                self.audit(
                    kind,
                    &item.local_id,
                    "local-delete",
                    "deleted locally; KeyCRM keeps its record".into(),
                )
                .await?;
                self.inner
                    .store
                    .complete_outbox(item.id, item.revision)
                    .await?;
                continue;
            };
            let mapping = self.inner.store.get_mapping(kind, &item.local_id).await?;
            let mapped = kind == EntityKind::Stock
                || mapping.as_ref().is_some_and(|m| m.remote_id.is_some());
            let unchanged = mapping.as_ref().is_some_and(|m| {
                m.state == SyncState::Synced
                    && m.content_hash.as_deref() == Some(local.hash().as_str())
            });
            if mapped && unchanged {
                self.inner
                    .store
                    .complete_outbox(item.id, item.revision)
                    .await?;
                report.unchanged += 1;
                continue;
            }
            by_kind.entry(kind).or_default().push(Work {
                item,
                local,
                mapping,
            });
        }
        for kind in EntityKind::ALL {
            let Some(work) = by_kind.remove(&kind) else {
                continue;
            };
            match kind {
                EntityKind::Order => self.push_orders(work, report).await?,
                EntityKind::Buyer => self.push_buyers(work, report).await?,
                EntityKind::Product => self.push_products(work, report).await?,
                EntityKind::Offer => self.push_offers(work, report).await?,
                EntityKind::Stock => self.push_stock(work, report).await?,
            }
        }
        Ok(())
    }

    /// Records a failed attempt: backoff, dead letter after the configured attempts.
    async fn fail(
        &self,
        item: &OutboxItem,
        error: &str,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        self.fail_as(item, error, false, report).await
    }

    /// Dead-letters at once a record KeyCRM refused (a 422 naming its row): sending it
    /// again unchanged would be refused again.
    async fn reject(
        &self,
        item: &OutboxItem,
        error: &str,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        self.fail_as(item, error, true, report).await
    }

    async fn fail_as(
        &self,
        item: &OutboxItem,
        error: &str,
        dead_now: bool,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let dead = dead_now || item.attempts + 1 >= self.inner.config.retry_attempts;
        let next = self.outbox_now() + outbox_backoff(item.attempts);
        self.inner
            .store
            .fail_outbox(item.id, item.revision, error, next, dead)
            .await?;
        let mut mapping = self
            .inner
            .store
            .get_mapping(item.kind, &item.local_id)
            .await?
            .unwrap_or_else(|| Mapping::new(item.kind, &item.local_id));
        mapping.state = SyncState::Error;
        mapping.error = Some(error.to_string());
        self.inner.store.put_mapping(&mapping).await?;
        report.failed += 1;
        self.publish(SyncEvent::Failed {
            kind: item.kind,
            local_id: item.local_id.clone(),
            error: error.to_string(),
            dead,
        });
        Ok(())
    }

    /// Turns one record's failure into a failed outbox item; only store failures (other than
    /// a remote id already mapped to another record) stop the run.
    async fn item_result(
        &self,
        item: &OutboxItem,
        result: Result<(), SyncError>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        match result {
            Ok(()) => Ok(()),
            Err(SyncError::Store(e)) if !matches!(e, StoreError::DuplicateRemoteId { .. }) => {
                Err(SyncError::Store(e))
            }
            Err(e) => self.fail(item, &e.to_string(), report).await,
        }
    }

    /// Marks a record as written: its mapping takes the new base and hash.
    async fn done(
        &self,
        work: &Work,
        remote_id: Option<i64>,
        base: Fields,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let remote_id = self.record_synced(work, remote_id, base).await?;
        report.pushed += 1;
        self.publish(SyncEvent::Pushed {
            kind: work.item.kind,
            local_id: work.item.local_id.clone(),
            remote_id,
        });
        Ok(())
    }

    /// Writes the mapping of a record both sides now agree on (new base and hash) and removes
    /// its outbox item; returns the record's remote id.
    async fn record_synced(
        &self,
        work: &Work,
        remote_id: Option<i64>,
        base: Fields,
    ) -> Result<Option<i64>, SyncError> {
        let mut mapping = work
            .mapping
            .clone()
            .unwrap_or_else(|| Mapping::new(work.item.kind, &work.item.local_id));
        if remote_id.is_some() {
            mapping.remote_id = remote_id;
        }
        mapping.state = SyncState::Synced;
        mapping.error = None;
        mapping.content_hash = Some(work.local.hash());
        mapping.base = Some(Snapshot::new(base, None));
        mapping.last_sync_at = Some(now());
        self.inner.store.put_mapping(&mapping).await?;
        self.inner
            .store
            .complete_outbox(work.item.id, work.item.revision)
            .await?;
        Ok(mapping.remote_id)
    }

    /// Notes, before a create is sent, the body being created as the record's base (the
    /// mapping has no remote id yet). If the engine stops between the create and its
    /// bookkeeping, the pull or look-up that meets the created record links it against this
    /// base, so a local edit made in between counts as a local change and is not lost to
    /// KeyCRM's copy of the older body.
    async fn note_create(&self, work: &Work) -> Result<(), SyncError> {
        let mut mapping = self
            .inner
            .store
            .get_mapping(work.item.kind, &work.item.local_id)
            .await?
            .unwrap_or_else(|| Mapping::new(work.item.kind, &work.item.local_id));
        if mapping.remote_id.is_some() {
            return Ok(());
        }
        mapping.base = Some(Snapshot::new(work.local.fields.clone(), None));
        self.inner.store.put_mapping(&mapping).await?;
        Ok(())
    }

    /// The base noted by [`Self::note_create`] for a record not linked yet, if any.
    fn noted_create(work: &Work) -> Option<Snapshot> {
        work.mapping
            .as_ref()
            .filter(|m| m.remote_id.is_none())
            .and_then(|m| m.base.clone())
    }

    fn dry_run(&self) -> bool {
        self.inner.config.dry_run
    }

    async fn would(&self, work: &Work, what: String) -> Result<(), SyncError> {
        self.audit(work.item.kind, &work.item.local_id, "dry-run", what)
            .await
    }

    // ---------------------------------------------------------------------------------------
    // Orders

    async fn push_orders(&self, work: Vec<Work>, report: &mut RunReport) -> Result<(), SyncError> {
        let (updates, creates): (Vec<Work>, Vec<Work>) =
            work.into_iter().partition(|w| w.remote_id().is_some());
        self.create_orders(creates, report).await?;
        // Order updates have no bulk endpoint: up to `max_concurrency` run at once (the
        // client's quota pacing still spaces the requests).
        let concurrency = self.inner.config.max_concurrency.max(1) as usize;
        let results: Vec<(Work, RunReport, Result<(), SyncError>)> =
            futures_util::stream::iter(updates)
                .map(|w| async move {
                    let mut own = RunReport::default();
                    let result = self.update_order(&w, &mut own).await;
                    (w, own, result)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
        for (w, own, result) in results {
            report.absorb(&own);
            if let Err(e) = result {
                if let SyncError::Store(e) = e {
                    return Err(SyncError::Store(e));
                }
                self.fail(&w.item, &e.to_string(), report).await?;
            }
        }
        Ok(())
    }

    /// Orders KeyCRM has by these numbers (`source_uuid`).
    async fn orders_by_uuid(
        &self,
        uuids: &[String],
    ) -> Result<BTreeMap<String, types::Order>, SyncError> {
        let client = &self.inner.client;
        lookup(
            uuids,
            |filter| {
                client
                    .order_list()
                    .include(ORDER_INCLUDE)
                    .filter_source_uuid(filter)
                    .collect_all()
            },
            |order: &types::Order| order.source_uuid.clone(),
        )
        .await
    }

    /// Creates orders at most once: those KeyCRM already has (a create whose answer was lost,
    /// a crash before the mapping was written) are linked; the rest are imported 50 at a time
    /// (or created one by one when there is just one) and read back by `source_uuid`.
    async fn create_orders(
        &self,
        creates: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let mut pending = Vec::new();
        for w in creates {
            match text(&w.local.fields, "source_uuid") {
                Some(uuid) => pending.push((uuid, w)),
                None => {
                    self.fail(
                        &w.item,
                        "the order has no number (source_uuid) to create it idempotently",
                        report,
                    )
                    .await?
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if self.dry_run() {
            for (uuid, w) in &pending {
                self.would(w, format!("create order {uuid}")).await?;
            }
            return Ok(());
        }
        for (uuid, w) in &pending {
            // Noted before anything is sent: a pull that meets the order before its create
            // finished (a lost answer, a crash) links it to this record instead of a new one.
            self.inner
                .store
                .set_cursor(
                    EntityKind::Order,
                    &source_uuid_key(uuid),
                    &w.item.local_id,
                    now(),
                )
                .await?;
            if w.mapping.is_none() {
                self.inner
                    .store
                    .put_mapping(&Mapping::new(EntityKind::Order, &w.item.local_id))
                    .await?;
            }
        }
        let uuids: Vec<String> = pending.iter().map(|(u, _)| u.clone()).collect();
        let mut existing = self.orders_by_uuid(&uuids).await?;
        let mut to_create = Vec::new();
        for (uuid, w) in pending {
            match existing.remove(&uuid) {
                Some(order) => {
                    let result = self.finish_order_create(&w, &order, true, report).await;
                    self.item_result(&w.item, result, report).await?;
                }
                None => to_create.push((uuid, w)),
            }
        }
        let mut bodies = Vec::new();
        for (uuid, w) in to_create {
            match canonical::order_create_body(&w.local.fields, &self.inner.mappings) {
                Ok(body) => {
                    self.note_create(&w).await?;
                    bodies.push((uuid, w, body));
                }
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        let batch = self.inner.config.batch_size.clamp(1, 50) as usize;
        let mut chunks: Vec<Vec<(String, Work, types::OrderCreate)>> = Vec::new();
        let mut iter = bodies.into_iter().peekable();
        while iter.peek().is_some() {
            chunks.push(iter.by_ref().take(batch).collect());
        }
        for chunk in chunks {
            let (delivered, rejected, failed) = if chunk.len() == 1 {
                let (_, _, body) = &chunk[0];
                let sent = self
                    .call(self.inner.client.order_create_idempotent(body.clone()))
                    .await;
                match sent {
                    Ok(_) => (vec![0], Vec::new(), None),
                    Err(e) => (Vec::new(), Vec::new(), Some((vec![0], e.to_string()))),
                }
            } else {
                // Rows KeyCRM refuses (a 422 naming `orders.N.…`) are dead-lettered with its
                // message; the others are imported in the same run.
                let rows: Vec<types::OrderCreate> =
                    chunk.iter().map(|(_, _, b)| b.clone()).collect();
                let outcome = batch::send_splitting(EntityKind::Order, "orders", &rows, |orders| {
                    self.call(
                        self.inner
                            .client
                            .order_import()
                            .body(types::OrderImport { orders })
                            .send(),
                    )
                })
                .await;
                let failed = outcome.error.map(|e| (outcome.failed, e.to_string()));
                (outcome.delivered, outcome.rejected, failed)
            };
            for (index, message) in &rejected {
                self.reject(&chunk[*index].1.item, message, report).await?;
            }
            if let Some((indices, error)) = &failed {
                // A lost answer may still have created them: the next attempt looks them up first.
                for index in indices {
                    self.fail(&chunk[*index].1.item, error, report).await?;
                }
            }
            if delivered.is_empty() {
                continue;
            }
            let uuids: Vec<String> = delivered.iter().map(|&i| chunk[i].0.clone()).collect();
            let mut created = self.orders_by_uuid(&uuids).await?;
            for index in delivered {
                let (uuid, w, _) = &chunk[index];
                match created.remove(uuid) {
                    Some(order) => {
                        let result = self.finish_order_create(w, &order, false, report).await;
                        self.item_result(&w.item, result, report).await?;
                    }
                    None => {
                        self.fail(&w.item, "created, but not found on read-back yet", report)
                            .await?
                    }
                }
            }
        }
        Ok(())
    }

    /// After a create (or finding the order): send what creation could not carry (status).
    ///
    /// `found`: the order was there before this run sent anything (a create whose answer or
    /// bookkeeping was lost); its base is then the body that was sent, as noted before the
    /// create, so that local edits made since are pushed rather than overwritten.
    async fn finish_order_create(
        &self,
        w: &Work,
        order: &types::Order,
        found: bool,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let remote_id = order.id.ok_or(SyncError::Answer {
            operation: "GET /order",
            problem: "an order without id",
        })?;
        let remote = canonical::order_fields_from_remote(order);
        let mut work = Work {
            item: w.item.clone(),
            local: w.local.clone(),
            mapping: w.mapping.clone(),
        };
        let mut mapping = work
            .mapping
            .clone()
            .unwrap_or_else(|| Mapping::new(EntityKind::Order, &w.item.local_id));
        mapping.remote_id = Some(remote_id);
        // The base is the created order, except for fields the host never had: those KeyCRM
        // filled in (the order date, a matched buyer's e-mail) are its values to bring to the
        // host, not local removals to push (KeyCRM could not apply them anyway).
        let noted = if found { Self::noted_create(w) } else { None };
        mapping.base = Some(match noted {
            Some(noted) => noted,
            None => {
                let mut base = remote.clone();
                base.retain(|field, _| w.local.fields.contains_key(field));
                Snapshot::new(
                    base,
                    order.updated_at.map(keycrm_api::Timestamp::into_datetime),
                )
            }
        });
        work.mapping = Some(mapping);
        self.update_order_with(&work, order, remote, report).await
    }

    async fn update_order(&self, w: &Work, report: &mut RunReport) -> Result<(), SyncError> {
        // requests: no read first when the base is proven current (writes.rs).
        if let Some(result) = self.update_order_unread(w, report).await {
            return result;
        }
        let remote_id = w.remote_id().expect("updates are mapped");
        let order = self
            .call(
                self.inner
                    .client
                    .order_get()
                    .order_id(remote_id)
                    .include(ORDER_INCLUDE)
                    .send(),
            )
            .await?
            .into_inner();
        // The answer is KeyCRM's data: checked, never trusted to be the order asked for.
        match order.id {
            Some(id) if id == remote_id => {}
            Some(_) => {
                return Err(SyncError::Answer {
                    operation: "GET /order/{id}",
                    problem: "another order than the one asked for",
                });
            }
            None => {
                return Err(SyncError::Answer {
                    operation: "GET /order/{id}",
                    problem: "an order without id",
                });
            }
        }
        let remote = canonical::order_fields_from_remote(&order);
        self.update_order_with(w, &order, remote, report).await
    }

    /// Three-way plan against KeyCRM's current order, then one `PUT /order/{id}` and the
    /// payment calls; changes KeyCRM cannot make are logged, not dropped silently.
    async fn update_order_with(
        &self,
        w: &Work,
        order: &types::Order,
        remote: Fields,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let kind = EntityKind::Order;
        let remote_id = order.id.ok_or(SyncError::Answer {
            operation: "GET /order/{id}",
            problem: "an order without id",
        })?;
        let remote_snapshot = Snapshot::new(
            remote.clone(),
            order.updated_at.map(keycrm_api::Timestamp::into_datetime),
        );
        let base = w.mapping.as_ref().and_then(|m| m.base.clone());
        let policy = self.policy(kind);
        let planned = plan(&PlanInput {
            kind,
            base: base.as_ref(),
            local: Some(&w.local),
            remote: Some(&remote_snapshot),
            policy: &policy,
        });
        self.log_conflicts(
            kind,
            &w.item.local_id,
            Some(remote_id),
            &planned.conflicts,
            report,
        )
        .await?;
        if !planned.to_local.is_empty() {
            let change = RemoteChange {
                local_id: Some(w.item.local_id.clone()),
                remote_id,
                fields: planned.merged.clone(),
                tombstone: false,
            };
            if let Applied::Stored { .. } = self.inner.host.apply(kind, change).await? {
                report.applied += 1;
                self.publish(SyncEvent::Applied {
                    kind,
                    local_id: w.item.local_id.clone(),
                    remote_id: Some(remote_id),
                });
            }
        }
        let changes = canonical::split_order_changes(&planned.to_remote, &remote);
        let mut base_after = planned.merged.clone();
        for unsupported in &changes.unsupported {
            self.audit(
                kind,
                &w.item.local_id,
                "unsupported",
                format!("{}: {}", unsupported.field, unsupported.reason),
            )
            .await?;
            match remote.get(&unsupported.field) {
                Some(v) => base_after.insert(unsupported.field.clone(), v.clone()),
                None => base_after.remove(&unsupported.field),
            };
        }
        if self.dry_run() {
            if !changes.is_empty() {
                self.would(
                    w,
                    format!(
                        "update order {remote_id}: {:?}",
                        changes.update.keys().collect::<Vec<_>>()
                    ),
                )
                .await?;
            }
            return Ok(());
        }
        if !changes.update.is_empty() {
            let body = canonical::order_update_body(&changes.update)?;
            self.call(
                self.inner
                    .client
                    .order_update()
                    .order_id(remote_id)
                    .body(body)
                    .send(),
            )
            .await?;
        }
        if !changes.create_payments.is_empty() {
            for body in canonical::payment_create_bodies(&planned.merged, &remote)? {
                self.call(
                    self.inner
                        .client
                        .order_payment_create()
                        .order_id(remote_id)
                        .body(body)
                        .send(),
                )
                .await?;
            }
        }
        if !changes.update_payments.is_empty() {
            for (payment_id, body) in canonical::payment_update_bodies(&planned.to_remote, order)? {
                self.call(
                    self.inner
                        .client
                        .order_payment_update()
                        .order_id(remote_id)
                        .payment_id(payment_id)
                        .body(body)
                        .send(),
                )
                .await?;
            }
        }
        // The host's view after applying the plan is what the hash must match next time.
        let mut done = Work {
            item: w.item.clone(),
            local: Snapshot::new(planned.merged.clone(), None),
            mapping: w.mapping.clone(),
        };
        if planned.to_local.is_empty() {
            done.local = w.local.clone();
        }
        self.done(&done, Some(remote_id), base_after, report)
            .await?;
        // requests: the base's KeyCRM time, so the next update needs no read (writes.rs).
        self.note_order_seen(
            w,
            order.updated_at.map(keycrm_api::Timestamp::into_datetime),
        )
        .await
    }

    // Buyers: see `buyer_batch` (matched, imported and read back in batches).

    // ---------------------------------------------------------------------------------------
    // Products

    async fn push_products(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let (mut updates, creates): (Vec<Work>, Vec<Work>) =
            work.into_iter().partition(|w| w.remote_id().is_some());
        // Creates: those with a SKU are imported 100 per request and read back through their
        // offer (`GET /offers?filter[sku]=..&include=product`); the others one by one.
        let (with_sku, without): (Vec<Work>, Vec<Work>) = creates
            .into_iter()
            .partition(|w| text(&w.local.fields, "sku").is_some());
        if self.dry_run() {
            for w in with_sku.iter().chain(&without) {
                self.would(w, "create product".into()).await?;
            }
        } else {
            for w in without {
                let result = async {
                    let body = canonical::product_create_body(&w.local.fields)?;
                    self.note_create(&w).await?;
                    let p = self
                        .call(client.product_create().body(body).send())
                        .await?
                        .into_inner();
                    let id = p.id.ok_or(SyncError::Answer {
                        operation: "POST /products",
                        problem: "a created product without id",
                    })?;
                    Ok::<_, SyncError>((id, p))
                }
                .await;
                match result {
                    Ok((id, p)) => {
                        self.done(
                            &w,
                            Some(id),
                            canonical::product_fields_from_remote(&p),
                            report,
                        )
                        .await?
                    }
                    Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
                }
            }
            for chunk in with_sku.chunks(canonical::MAX_PRODUCT_IMPORT) {
                let skus: Vec<String> = chunk
                    .iter()
                    .filter_map(|w| text(&w.local.fields, "sku"))
                    .collect();
                let mut known = self.products_by_sku(&skus).await?;
                let mut bodies = Vec::new();
                let mut sent: Vec<&Work> = Vec::new();
                for w in chunk {
                    let sku = text(&w.local.fields, "sku").unwrap_or_default();
                    if let Some(p) = known.get(&sku)
                        && let Some(noted) = Self::noted_create(w)
                    {
                        // Created by an earlier run that stopped before its bookkeeping:
                        // linked against the body it sent, then updated like any mapped
                        // product, so a local edit made since reaches KeyCRM.
                        let Some(id) = p.id else {
                            self.fail(&w.item, &product_without_id().to_string(), report)
                                .await?;
                            continue;
                        };
                        let mut mapping = w
                            .mapping
                            .clone()
                            .unwrap_or_else(|| Mapping::new(EntityKind::Product, &w.item.local_id));
                        mapping.remote_id = Some(id);
                        mapping.base = Some(noted);
                        updates.push(Work {
                            item: w.item.clone(),
                            local: w.local.clone(),
                            mapping: Some(mapping),
                        });
                        known.remove(&sku);
                        continue;
                    }
                    if known.contains_key(&sku) {
                        continue;
                    }
                    match canonical::product_create_body(&w.local.fields) {
                        Ok(b) => {
                            self.note_create(w).await?;
                            bodies.push(b);
                            sent.push(w);
                        }
                        Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
                    }
                }
                let mut imported = Vec::new();
                if !bodies.is_empty() {
                    // Rows KeyCRM refuses (a 422 naming `products.N.…`) are dead-lettered with
                    // its message; the others are imported in the same run.
                    let outcome = batch::send_splitting(
                        EntityKind::Product,
                        "products",
                        &bodies,
                        |products| {
                            self.call(
                                client
                                    .product_import()
                                    .body(types::ProductImport { products })
                                    .send(),
                            )
                        },
                    )
                    .await;
                    for (index, message) in &outcome.rejected {
                        self.reject(&sent[*index].item, message, report).await?;
                    }
                    if let Some(e) = &outcome.error {
                        for index in &outcome.failed {
                            self.fail(&sent[*index].item, &e.to_string(), report)
                                .await?;
                        }
                    }
                    imported = outcome.delivered.iter().map(|&i| sent[i].item.id).collect();
                    if !imported.is_empty() {
                        known = self.products_by_sku(&skus).await?;
                    }
                }
                for w in chunk {
                    let sku = text(&w.local.fields, "sku").unwrap_or_default();
                    let was_sent = sent.iter().any(|s| s.item.id == w.item.id);
                    if was_sent && !imported.contains(&w.item.id) {
                        continue; // refused or failed above
                    }
                    match known.get(&sku) {
                        Some(p) => match p.id {
                            Some(id) => {
                                self.done(
                                    w,
                                    Some(id),
                                    canonical::product_fields_from_remote(p),
                                    report,
                                )
                                .await?
                            }
                            None => {
                                self.fail(&w.item, &product_without_id().to_string(), report)
                                    .await?
                            }
                        },
                        None if was_sent => {
                            self.fail(&w.item, "imported, but not found on read-back yet", report)
                                .await?
                        }
                        None => {}
                    }
                }
            }
        }
        for w in updates {
            let remote_id = w.remote_id().expect("mapped");
            let base = w
                .mapping
                .as_ref()
                .and_then(|m| m.base.clone())
                .unwrap_or_default();
            let policy = self.policy(EntityKind::Product);
            let planned = plan(&PlanInput {
                kind: EntityKind::Product,
                base: Some(&base),
                local: Some(&w.local),
                remote: Some(&base),
                policy: &policy,
            });
            if planned.to_remote.is_empty() {
                self.done(&w, Some(remote_id), planned.merged, report)
                    .await?;
                continue;
            }
            if self.dry_run() {
                self.would(&w, format!("update product {remote_id}"))
                    .await?;
                continue;
            }
            let result = async {
                let body = canonical::product_update_body(&planned.to_remote)?;
                self.call(
                    client
                        .product_update()
                        .product_id(remote_id)
                        .body(body)
                        .send(),
                )
                .await?;
                Ok::<_, SyncError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    self.done(&w, Some(remote_id), planned.merged, report)
                        .await?
                }
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        Ok(())
    }

    /// Products KeyCRM has with these SKUs, found through their offers.
    async fn products_by_sku(
        &self,
        skus: &[String],
    ) -> Result<BTreeMap<String, types::Product>, SyncError> {
        let client = &self.inner.client;
        let offers = lookup(
            skus,
            |filter| {
                client
                    .offer_list()
                    .include("product")
                    .filter_sku(filter)
                    .collect_all()
            },
            |offer: &types::Offer| offer.sku.clone(),
        )
        .await?;
        Ok(offers
            .into_iter()
            .filter_map(|(sku, offer)| offer.product.map(|p| (sku, p)))
            .collect())
    }

    // ---------------------------------------------------------------------------------------
    // Offers

    /// Prices go out in one bulk `PUT /offers` (up to 10,000 rows); offers are found by SKU.
    async fn push_offers(&self, work: Vec<Work>, report: &mut RunReport) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let unmapped: Vec<String> = work
            .iter()
            .filter(|w| w.remote_id().is_none())
            .filter_map(|w| text(&w.local.fields, "sku"))
            .collect();
        let by_sku = lookup(
            &unmapped,
            |filter| client.offer_list().filter_sku(filter).collect_all(),
            |offer: &types::Offer| offer.sku.clone(),
        )
        .await?;
        let mut rows = Vec::new();
        let mut sent: Vec<(Work, i64, Fields)> = Vec::new();
        for w in work {
            let (remote_id, base) = match w.remote_id() {
                Some(id) => (
                    id,
                    w.mapping
                        .as_ref()
                        .and_then(|m| m.base.clone())
                        .unwrap_or_default(),
                ),
                None => {
                    let sku = text(&w.local.fields, "sku").unwrap_or_default();
                    match by_sku.get(&sku).and_then(|o| o.id.map(|id| (id, o))) {
                        Some((id, o)) => (
                            id,
                            Snapshot::new(canonical::offer_fields_from_remote(o), None),
                        ),
                        None => {
                            self.fail(&w.item, "KeyCRM has no offer with this SKU yet (its product is synced first)", report).await?;
                            continue;
                        }
                    }
                }
            };
            let policy = self.policy(EntityKind::Offer);
            let planned = plan(&PlanInput {
                kind: EntityKind::Offer,
                base: Some(&base),
                local: Some(&w.local),
                remote: Some(&base),
                policy: &policy,
            });
            if planned.to_remote.is_empty() {
                self.done(&w, Some(remote_id), planned.merged, report)
                    .await?;
                continue;
            }
            match canonical::offer_update_row(&planned.merged, OfferRef::Id(remote_id)) {
                Ok(row) => {
                    rows.push(row);
                    sent.push((w, remote_id, planned.merged));
                }
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        if self.dry_run() {
            for (w, id, _) in &sent {
                self.would(w, format!("update offer {id}")).await?;
            }
            return Ok(());
        }
        // One `PUT /offers` per 10,000 rows; rows KeyCRM refuses (a 422 naming
        // `offers.N.…`) are dead-lettered with its message, the others sent again at once.
        let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; sent.len()];
        let mut start = 0;
        for chunk in rows.chunks(canonical::MAX_OFFER_ROWS) {
            let result = batch::send_splitting(EntityKind::Offer, "offers", chunk, |offers| {
                self.call(
                    client
                        .offer_update_batch()
                        .body(types::OfferUpdateBatch { offers })
                        .send(),
                )
            })
            .await;
            for i in result.delivered {
                outcome[start + i] = Some(Ok(()));
            }
            for (i, message) in result.rejected {
                outcome[start + i] = Some(Err((true, message)));
            }
            if let Some(e) = result.error {
                for i in result.failed {
                    outcome[start + i] = Some(Err((false, e.to_string())));
                }
            }
            start += chunk.len();
        }
        for ((w, id, merged), outcome) in sent.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => self.done(&w, Some(id), merged, report).await?,
                Some(Err((true, e))) => self.reject(&w.item, &e, report).await?,
                Some(Err((false, e))) => self.fail(&w.item, &e, report).await?,
                None => self.fail(&w.item, "not sent", report).await?,
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Stock

    /// Changed stock levels (against the last pushed snapshot) go out in one
    /// `PUT /offers/stocks` per warehouse and 10,000 rows, unless the push would zero more
    /// than the configured share of its SKUs.
    async fn push_stock(&self, work: Vec<Work>, report: &mut RunReport) -> Result<(), SyncError> {
        let mut changed = Vec::new();
        for w in work {
            let base_quantity = w
                .mapping
                .as_ref()
                .and_then(|m| m.base.as_ref())
                .and_then(|b| b.fields.get("quantity").cloned());
            if base_quantity.as_ref() == w.local.fields.get("quantity") {
                let fields = w.local.fields.clone();
                self.record_synced(&w, None, fields).await?;
                report.unchanged += 1;
                continue;
            }
            changed.push(w);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let stocks: Vec<CanonicalStock> = changed
            .iter()
            .filter_map(|w| {
                let (warehouse, sku) = w.item.local_id.split_once('/')?;
                let quantity: Decimal =
                    serde_json::from_value(w.local.fields.get("quantity")?.clone()).ok()?;
                Some(CanonicalStock {
                    sku: sku.to_string(),
                    warehouse: warehouse.to_string(),
                    quantity,
                })
            })
            .collect();
        let zeroed = stocks
            .iter()
            .filter(|s| s.quantity == Decimal::ZERO)
            .count();
        let share = self.inner.config.max_zeroed_share;
        if stocks.len() >= GUARD_MIN_ROWS && zeroed as f64 > share * stocks.len() as f64 {
            let error = SyncError::MassZeroing {
                zeroed,
                total: stocks.len(),
                limit: share * 100.0,
            }
            .to_string();
            for w in &changed {
                self.fail(&w.item, &error, report).await?;
            }
            return Ok(());
        }
        if self.dry_run() {
            for w in &changed {
                self.would(w, "set stock".into()).await?;
            }
            return Ok(());
        }
        let bodies = match canonical::stock_rows(&stocks, &self.inner.mappings) {
            Ok(b) => b,
            Err(e) => {
                for w in &changed {
                    self.fail(&w.item, &e.to_string(), report).await?;
                }
                return Ok(());
            }
        };
        // Which outbox records a row stands for: (warehouse id, SKU) -> positions in `changed`.
        let mut by_row: BTreeMap<(i64, String), Vec<usize>> = BTreeMap::new();
        let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; changed.len()];
        for (i, w) in changed.iter().enumerate() {
            let row = w
                .item
                .local_id
                .split_once('/')
                .and_then(|(warehouse, sku)| {
                    let id = self.inner.mappings.warehouse_id(warehouse).ok()?;
                    Some((id, sku.to_string()))
                });
            match row {
                Some(key) => by_row.entry(key).or_default().push(i),
                None => {
                    outcome[i] = Some(Err((
                        true,
                        "a stock record without warehouse and SKU, or without a quantity".into(),
                    )))
                }
            }
        }
        // One `PUT /offers/stocks` per warehouse (and 10,000 rows). A warehouse's failure
        // never skips another; rows KeyCRM refuses (a 422 naming `stocks.N.sku`, an unknown
        // SKU) are dead-lettered with its message and the others sent again at once.
        for body in bodies {
            let warehouse_id = body.warehouse_id;
            let result =
                batch::send_splitting(EntityKind::Stock, "stocks", &body.stocks, |stocks| {
                    self.call(
                        self.inner
                            .client
                            .offer_stock_update()
                            .body(types::OfferStockUpdate {
                                stocks,
                                warehouse_id,
                            })
                            .send(),
                    )
                })
                .await;
            let mut mark = |row: usize, value: Result<(), (bool, String)>| {
                let sku = body.stocks[row].sku.clone().unwrap_or_default();
                for &i in by_row.get(&(warehouse_id, sku)).into_iter().flatten() {
                    outcome[i] = Some(value.clone());
                }
            };
            for row in result.delivered {
                mark(row, Ok(()));
            }
            for (row, message) in result.rejected {
                mark(row, Err((true, message)));
            }
            if let Some(e) = result.error {
                let e = e.to_string();
                for row in result.failed {
                    mark(row, Err((false, e.clone())));
                }
            }
        }
        for (w, outcome) in changed.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => {
                    let fields = w.local.fields.clone();
                    self.done(&w, None, fields, report).await?;
                }
                Some(Err((true, e))) => self.reject(&w.item, &e, report).await?,
                Some(Err((false, e))) => self.fail(&w.item, &e, report).await?,
                None => {
                    self.reject(
                        &w.item,
                        "a stock record without warehouse and SKU, or without a quantity",
                        report,
                    )
                    .await?
                }
            }
        }
        Ok(())
    }
}

fn product_without_id() -> SyncError {
    SyncError::Answer {
        operation: "GET /offers?include=product",
        problem: "a product without id",
    }
}

/// Looks records up by a key that a list filter takes comma-separated, 50 keys per request,
/// keeping the first record found for each key asked for.
async fn lookup<T, Fut>(
    keys: &[String],
    fetch: impl Fn(String) -> Fut,
    key_of: impl Fn(&T) -> Option<String>,
) -> Result<BTreeMap<String, T>, SyncError>
where
    Fut: std::future::Future<Output = keycrm_api::Result<Vec<T>>>,
{
    let mut found = BTreeMap::new();
    for chunk in keys.chunks(50) {
        for item in fetch(chunk.join(",")).await? {
            if let Some(key) = key_of(&item)
                && chunk.contains(&key)
            {
                found.entry(key).or_insert(item);
            }
        }
    }
    Ok(found)
}
