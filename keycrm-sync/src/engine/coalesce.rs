//! Webhook bursts cost pages, not one read each.
//!
//! KeyCRM's order webhooks carry the flat order record (`context`): its status and payment
//! status, never its lines, buyer or payments. One event is completed by `GET /order/{id}`;
//! several pending ones (a manager moving 200 orders to "shipped") are completed together by
//! `GET /order?filter[updated_between]=<oldest pending change>,<now>&filter[status_id]=<their
//! statuses>` in pages of 50: KeyCRM's order list has no id filter (only `source_uuid`, buyer
//! contacts, status, dates), so the window and statuses of the pending changes are the
//! narrowest list that holds them all.
//!
//! Before any read, the context's status is applied to the host at once (it is the order's
//! state as of the event): the host sees the status within the time the store takes, and the
//! read that follows completes the rest of the record. A context older than what the engine
//! last saw of the order is not applied (deliveries may arrive out of order).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use keycrm_api::{Paginate, Timestamp, types};

use super::{RunReport, SyncEngine, SyncError};
use crate::canonical;
use crate::engine::pull::Key;
use crate::entity::order::ORDER_INCLUDE;
use crate::host::Host;
use crate::model::{EntityKind, Snapshot};
use crate::store::{InboxId, InboxItem, Store};
use crate::webhook::{OrderContext, WebhookEvent};

/// How far before the oldest pending change the coalesced read starts (clock skew between
/// KeyCRM and this host).
const SKEW: Duration = Duration::seconds(60);

/// The pending order events of a group of deliveries.
struct Pending {
    /// Inbox id -> the order it is about.
    items: BTreeMap<InboxId, i64>,
    /// The oldest change among them (KeyCRM's `updated_at`, else the receipt time).
    oldest: DateTime<Utc>,
    contexts: Vec<OrderContext>,
}

/// The order events among `items`, when they concern more than one order; `now` is the
/// engine's time.
fn pending_orders(items: &[InboxItem], now: DateTime<Utc>) -> Option<Pending> {
    let mut out = Pending {
        items: BTreeMap::new(),
        oldest: now,
        contexts: Vec::new(),
    };
    for item in items {
        let Ok(WebhookEvent::OrderStatusChanged(c) | WebhookEvent::OrderPaymentStatusChanged(c)) =
            WebhookEvent::from_value(item.payload.clone())
        else {
            continue;
        };
        let changed = c
            .updated_at
            .map(Timestamp::into_datetime)
            .map_or(item.received_at, |at| at.min(item.received_at));
        out.oldest = out.oldest.min(changed);
        out.items.insert(item.id, c.id);
        out.contexts.push(c);
    }
    let orders: BTreeSet<i64> = out.items.values().copied().collect();
    // One order is one `GET /order/{id}`: no list read can be cheaper.
    (orders.len() > 1).then_some(out)
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Applies the order events among `items` together: contexts at once, then one list
    /// read of their window. Returns the deliveries it settled (with the error of their
    /// order, if applying it failed); the others (stock, leads, orders the read did not
    /// meet) are left to the one-by-one path.
    pub(super) async fn coalesce_orders(
        &self,
        items: &[InboxItem],
        report: &mut RunReport,
    ) -> Result<BTreeMap<InboxId, Option<String>>, SyncError> {
        let Some(pending) = pending_orders(items, self.now()) else {
            return Ok(BTreeMap::new());
        };
        for c in &pending.contexts {
            self.apply_context(c, report).await?;
        }
        let window = keycrm_api::filter::between(
            Timestamp::from(pending.oldest - SKEW),
            Timestamp::from(self.now() + Duration::minutes(1)),
        );
        let mut request = self
            .inner
            .client
            .order_list()
            .include(ORDER_INCLUDE)
            .filter_updated_between(window);
        // Narrowed to the statuses the events report: other orders changed in the window
        // are not read. An order whose status moved on again without an event yet is not
        // met, and is read alone below.
        let statuses: Option<BTreeSet<i64>> =
            pending.contexts.iter().map(|c| c.status_id).collect();
        if let Some(statuses) = statuses {
            let list: Vec<String> = statuses.iter().map(i64::to_string).collect();
            request = request.filter_status_id(list.join(","));
        }
        let read = self.call(request.collect_all()).await;
        let orders: Vec<types::Order> = match read {
            Ok(orders) => orders,
            Err(error) => {
                // Left to the one-by-one path (which also quarantines broken records).
                tracing::debug!(target: "keycrm_sync", %error, "coalesced order read failed");
                return Ok(BTreeMap::new());
            }
        };
        let wanted: BTreeSet<i64> = pending.items.values().copied().collect();
        let mut outcome: BTreeMap<i64, Option<String>> = BTreeMap::new();
        for order in &orders {
            let Some(id) = order.id else { continue };
            let remote = canonical::snapshot(
                canonical::order_fields_from_remote_in(order, self.inner.mappings.phone_region()),
                order.updated_at,
            );
            let result = self
                .apply_remote(EntityKind::Order, Key::Remote(id), id, true, remote, report)
                .await;
            let error = match result {
                Ok(()) => None,
                Err(SyncError::Store(e)) => return Err(SyncError::Store(e)),
                Err(e) => Some(e.to_string()),
            };
            if wanted.contains(&id) {
                outcome.insert(id, error);
            }
        }
        Ok(pending
            .items
            .into_iter()
            .filter_map(|(item, order)| outcome.get(&order).map(|e| (item, e.clone())))
            .collect())
    }

    /// Applies a context's status to a linked order at once, unless the engine has seen a
    /// later state of the order. The rest of the record stays as last seen until the read.
    async fn apply_context(
        &self,
        c: &OrderContext,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let Some(status) = c.status_id else {
            return Ok(());
        };
        let Some(mapping) = self.mapping_by_remote(EntityKind::Order, c.id).await? else {
            return Ok(());
        };
        let Some(base) = mapping.base.as_ref() else {
            return Ok(());
        };
        let at = c.updated_at.map(Timestamp::into_datetime);
        let stale = match (at, mapping.remote_updated_at) {
            (Some(at), Some(seen)) => at < seen,
            (None, _) => true,
            (Some(_), None) => false,
        };
        let field = canonical::ORDER_STATUS_FIELD;
        if stale || base.fields.get(field) == Some(&serde_json::Value::from(status)) {
            return Ok(());
        }
        let mut fields = base.fields.clone();
        fields.insert(field.to_string(), serde_json::Value::from(status));
        self.apply_remote(
            EntityKind::Order,
            Key::Remote(c.id),
            c.id,
            true,
            Snapshot::new(fields, at),
            report,
        )
        .await
    }
}
