//! The engine's push of orders.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use keycrm_api::{Paginate, types};

use super::{ORDER_INCLUDE, SOURCE_UUID, source_uuid_key};
use crate::canonical;
use crate::engine::push::{Work, lookup, text};
use crate::engine::{RunReport, SyncEngine, SyncError, SyncEvent, batch};
use crate::host::{Applied, Host, RemoteChange};
use crate::model::{EntityKind, Fields, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::{Mapping, Store};

impl<S: Store, H: Host> SyncEngine<S, H> {
    pub(crate) async fn push_orders(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
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
            match text(&w.local.fields, &SOURCE_UUID) {
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
                    self.now(),
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
        let remote =
            canonical::order_fields_from_remote_in(order, self.inner.mappings.phone_region());
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
        // requests: no read first when the base is proven current (engine/writes.rs).
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
        let remote =
            canonical::order_fields_from_remote_in(&order, self.inner.mappings.phone_region());
        self.update_order_with(w, &order, remote, report).await
    }

    /// Three-way plan against KeyCRM's current order, then one `PUT /order/{id}` and the
    /// payment calls; changes KeyCRM cannot make are logged, not dropped silently.
    pub(crate) async fn update_order_with(
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
        // An update whose bookkeeping was lost counts as landed where KeyCRM holds it.
        let base = w.mapping.as_ref().and_then(|m| m.effective_base(&remote));
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
        let sends = !changes.update.is_empty()
            || !changes.create_payments.is_empty()
            || !changes.update_payments.is_empty();
        if sends {
            self.note_in_flight(w, &base_after).await?;
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
            // The bookkeeping clears the note of the write in flight (and any earlier one).
            mapping: w.mapping.clone().map(|mut m| {
                m.in_flight = None;
                m
            }),
        };
        if planned.to_local.is_empty() {
            done.local = w.local.clone();
        }
        // The base's KeyCRM time goes with it, so the next update needs no read
        // (engine/writes.rs).
        let seen_at = order.updated_at.map(keycrm_api::Timestamp::into_datetime);
        self.done_at(
            &done,
            Some(remote_id),
            Snapshot::new(base_after, seen_at),
            report,
        )
        .await
    }
}
