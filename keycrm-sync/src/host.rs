//! The seam between the engine and the host system (a warehouse, a shop).
//!
//! A host implements [`Host`] over its own storage: it reports which records changed, hands
//! out a record's current state as canonical [`Fields`] in KeyCRM terms (the helpers in
//! [`crate::canonical`] do the conversion for a plain model), and applies records that changed
//! in KeyCRM. [`MemoryHost`] is a complete in-memory host on the canonical model, for tests,
//! demos and as a template.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::canonical::{
    self, CanonicalBuyer, CanonicalOffer, CanonicalOrder, CanonicalProduct, CanonicalStock,
    Mappings,
};
use crate::model::{EntityKind, Fields, Snapshot};

/// An error reported by the host. Its text is stored with the record and shown in status, so
/// keep customer data out of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host error: {0}")]
pub struct HostError(pub String);

/// Local records changed since a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// Local ids of changed (or deleted) records.
    pub ids: Vec<String>,
    /// The cursor to ask from next time (opaque to the engine); `None` keeps the old one.
    pub cursor: Option<String>,
}

/// A record as KeyCRM has it, for the host to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteChange {
    /// The host's id, when the record is already mapped; `None` for a record new to the host.
    pub local_id: Option<String>,
    /// KeyCRM's id (for stock: the offer id).
    pub remote_id: i64,
    /// The whole agreed record (not just the changed fields).
    pub fields: Fields,
    /// The record is gone from KeyCRM (seen missing by a complete pass).
    pub tombstone: bool,
}

/// What the host did with a [`RemoteChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Stored under this local id (new or existing).
    Stored {
        /// The host's id of the record.
        local_id: String,
    },
    /// Not stored, with the reason (kept in the audit log).
    Skipped {
        /// Why.
        reason: String,
    },
}

/// The host side of the sync. All methods are called from the engine's tasks.
pub trait Host: Send + Sync + 'static {
    /// Local ids of `kind` records changed since `cursor` (`None`: from the beginning).
    fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> impl Future<Output = Result<LocalChanges, HostError>> + Send;

    /// The current state of a local record as canonical fields; `None` when it was deleted.
    fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> impl Future<Output = Result<Option<Snapshot>, HostError>> + Send;

    /// Applies a record that changed in KeyCRM.
    fn apply(
        &self,
        kind: EntityKind,
        change: RemoteChange,
    ) -> impl Future<Output = Result<Applied, HostError>> + Send;

    /// The local record a KeyCRM record not yet mapped stands for, found by its natural key
    /// (an order's number, a product's or offer's SKU, a buyer's phone or e-mail), so that a
    /// first sync links existing records instead of duplicating them. The default finds
    /// nothing: every unmapped KeyCRM record then becomes a new local record.
    fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> impl Future<Output = Result<Option<String>, HostError>> + Send {
        let _ = (kind, fields);
        async { Ok(None) }
    }
}

/// A complete host kept in memory on the canonical model. Clones share their state.
///
/// Every write (by the test or demo through the `put_*` methods, or by the engine through
/// [`Host::apply`]) bumps a per-kind change sequence that [`Host::changes_since`] reports.
#[derive(Clone, Debug)]
pub struct MemoryHost {
    inner: Arc<Mutex<MemoryState>>,
    mappings: Arc<Mappings>,
}

#[derive(Debug, Default)]
struct MemoryState {
    orders: BTreeMap<String, CanonicalOrder>,
    buyers: BTreeMap<String, CanonicalBuyer>,
    products: BTreeMap<String, CanonicalProduct>,
    offers: BTreeMap<String, CanonicalOffer>,
    stock: BTreeMap<String, CanonicalStock>,
    /// Per kind: local id -> sequence number of its last change.
    changed: BTreeMap<EntityKind, BTreeMap<String, u64>>,
    sequence: u64,
    applied: u64,
}

impl MemoryState {
    fn touch(&mut self, kind: EntityKind, local_id: &str) {
        self.sequence += 1;
        self.changed
            .entry(kind)
            .or_default()
            .insert(local_id.to_string(), self.sequence);
    }
}

impl MemoryHost {
    /// An empty host using `mappings` for status, payment method and warehouse names.
    pub fn new(mappings: Mappings) -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryState::default())),
            mappings: Arc::new(mappings),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().expect("memory host lock poisoned")
    }

    /// Stores an order (a local change).
    pub fn put_order(&self, order: CanonicalOrder) {
        let mut s = self.state();
        let id = order.local_id.clone();
        s.orders.insert(id.clone(), order);
        s.touch(EntityKind::Order, &id);
    }

    /// Stores a buyer (a local change).
    pub fn put_buyer(&self, buyer: CanonicalBuyer) {
        let mut s = self.state();
        let id = buyer.local_id.clone();
        s.buyers.insert(id.clone(), buyer);
        s.touch(EntityKind::Buyer, &id);
    }

    /// Stores a product (a local change).
    pub fn put_product(&self, product: CanonicalProduct) {
        let mut s = self.state();
        let id = product.local_id.clone();
        s.products.insert(id.clone(), product);
        s.touch(EntityKind::Product, &id);
    }

    /// Stores an offer (a local change).
    pub fn put_offer(&self, offer: CanonicalOffer) {
        let mut s = self.state();
        let id = offer.local_id.clone();
        s.offers.insert(id.clone(), offer);
        s.touch(EntityKind::Offer, &id);
    }

    /// Sets a stock level (a local change); its local id is [`CanonicalStock::key`].
    pub fn put_stock(&self, stock: CanonicalStock) {
        let mut s = self.state();
        let id = stock.key();
        s.stock.insert(id.clone(), stock);
        s.touch(EntityKind::Stock, &id);
    }

    /// Edits an order in place (a local change); `false` when there is no such order.
    pub fn edit_order(&self, local_id: &str, edit: impl FnOnce(&mut CanonicalOrder)) -> bool {
        let mut s = self.state();
        let Some(order) = s.orders.get_mut(local_id) else {
            return false;
        };
        edit(order);
        s.touch(EntityKind::Order, local_id);
        true
    }

    /// Edits a buyer in place (a local change); `false` when there is no such buyer.
    pub fn edit_buyer(&self, local_id: &str, edit: impl FnOnce(&mut CanonicalBuyer)) -> bool {
        let mut s = self.state();
        let Some(buyer) = s.buyers.get_mut(local_id) else {
            return false;
        };
        edit(buyer);
        s.touch(EntityKind::Buyer, local_id);
        true
    }

    /// An order by local id.
    pub fn order(&self, local_id: &str) -> Option<CanonicalOrder> {
        self.state().orders.get(local_id).cloned()
    }

    /// Every order.
    pub fn orders(&self) -> Vec<CanonicalOrder> {
        self.state().orders.values().cloned().collect()
    }

    /// A buyer by local id.
    pub fn buyer(&self, local_id: &str) -> Option<CanonicalBuyer> {
        self.state().buyers.get(local_id).cloned()
    }

    /// Every buyer.
    pub fn buyers(&self) -> Vec<CanonicalBuyer> {
        self.state().buyers.values().cloned().collect()
    }

    /// A product by local id.
    pub fn product(&self, local_id: &str) -> Option<CanonicalProduct> {
        self.state().products.get(local_id).cloned()
    }

    /// An offer by local id.
    pub fn offer(&self, local_id: &str) -> Option<CanonicalOffer> {
        self.state().offers.get(local_id).cloned()
    }

    /// A stock level by `<warehouse>/<sku>`.
    pub fn stock(&self, key: &str) -> Option<CanonicalStock> {
        self.state().stock.get(key).cloned()
    }

    /// How many remote changes the engine applied to this host.
    pub fn applied_count(&self) -> u64 {
        self.state().applied
    }

    fn snapshot_of(&self, kind: EntityKind, local_id: &str) -> Result<Option<Snapshot>, HostError> {
        let s = self.state();
        let err = |e: canonical::MappingError| HostError(e.to_string());
        let snap =
            match kind {
                EntityKind::Order => match s.orders.get(local_id) {
                    Some(o) => Some(canonical::snapshot(
                        canonical::order_fields_from_local(o, &self.mappings).map_err(err)?,
                        o.updated_at,
                    )),
                    None => None,
                },
                EntityKind::Buyer => s.buyers.get(local_id).map(|b| {
                    canonical::snapshot(canonical::buyer_fields_from_local(b), b.updated_at)
                }),
                EntityKind::Product => s.products.get(local_id).map(|p| {
                    canonical::snapshot(canonical::product_fields_from_local(p), p.updated_at)
                }),
                EntityKind::Offer => s.offers.get(local_id).map(|o| {
                    canonical::snapshot(canonical::offer_fields_from_local(o), o.updated_at)
                }),
                EntityKind::Stock => s
                    .stock
                    .get(local_id)
                    .map(|st| canonical::snapshot(canonical::stock_fields_from_local(st), None)),
            };
        Ok(snap)
    }

    fn apply_now(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        let err = |e: canonical::MappingError| HostError(e.to_string());
        let local_id = change.local_id.clone().unwrap_or_else(|| match kind {
            EntityKind::Stock => String::new(),
            _ => format!("crm-{}", change.remote_id),
        });
        let mut s = self.state();
        if change.tombstone {
            let removed = match kind {
                EntityKind::Order => s.orders.remove(&local_id).is_some(),
                EntityKind::Buyer => s.buyers.remove(&local_id).is_some(),
                EntityKind::Product => s.products.remove(&local_id).is_some(),
                EntityKind::Offer => s.offers.remove(&local_id).is_some(),
                EntityKind::Stock => s.stock.remove(&local_id).is_some(),
            };
            s.applied += 1;
            return Ok(if removed {
                Applied::Stored { local_id }
            } else {
                Applied::Skipped {
                    reason: "already absent".into(),
                }
            });
        }
        match kind {
            EntityKind::Order => {
                let mut order =
                    canonical::order_from_fields(&local_id, &change.fields, &self.mappings)
                        .map_err(err)?;
                if let Some(old) = s.orders.get(&local_id) {
                    order.updated_at = old.updated_at;
                }
                s.orders.insert(local_id.clone(), order);
            }
            EntityKind::Buyer => {
                let buyer = canonical::buyer_from_fields(&local_id, &change.fields).map_err(err)?;
                s.buyers.insert(local_id.clone(), buyer);
            }
            EntityKind::Product => {
                let product =
                    canonical::product_from_fields(&local_id, &change.fields).map_err(err)?;
                s.products.insert(local_id.clone(), product);
            }
            EntityKind::Offer => {
                let mut offer =
                    canonical::offer_from_fields(&local_id, &change.fields).map_err(err)?;
                if let Some(old) = s.offers.get(&local_id) {
                    offer.product_sku = old.product_sku.clone();
                }
                s.offers.insert(local_id.clone(), offer);
            }
            EntityKind::Stock => {
                let Some((warehouse, sku)) = local_id.split_once('/') else {
                    return Ok(Applied::Skipped {
                        reason: "stock of an unmapped warehouse".into(),
                    });
                };
                let quantity = change
                    .fields
                    .get("quantity")
                    .and_then(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .or_else(|| Some(v.to_string()))
                    })
                    .and_then(|q| q.parse().ok())
                    .unwrap_or_default();
                let stock = CanonicalStock {
                    sku: sku.to_string(),
                    warehouse: warehouse.to_string(),
                    quantity,
                };
                s.stock.insert(local_id.clone(), stock);
            }
        }
        s.applied += 1;
        s.touch(kind, &local_id);
        Ok(Applied::Stored { local_id })
    }
}

impl Host for MemoryHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<LocalChanges, HostError> {
        let after: u64 = match cursor {
            Some(c) => c
                .parse()
                .map_err(|_| HostError(format!("bad cursor for {kind}")))?,
            None => 0,
        };
        let s = self.state();
        let mut changed: Vec<(u64, String)> = s
            .changed
            .get(&kind)
            .map(|m| {
                m.iter()
                    .filter(|(_, seq)| **seq > after)
                    .map(|(id, seq)| (*seq, id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        changed.sort();
        let cursor = changed.last().map(|(seq, _)| seq.to_string());
        Ok(LocalChanges {
            ids: changed.into_iter().map(|(_, id)| id).collect(),
            cursor,
        })
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<Snapshot>, HostError> {
        self.snapshot_of(kind, &local_id)
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        self.apply_now(kind, change)
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        let text = |key: &str| fields.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let s = self.state();
        let found = match kind {
            EntityKind::Order => text("source_uuid").and_then(|uuid| {
                s.orders
                    .values()
                    .find(|o| o.number.as_deref() == Some(uuid.as_str()))
                    .map(|o| o.local_id.clone())
            }),
            EntityKind::Buyer => {
                let phone = text("phone.0").and_then(|p| crate::phone::normalize(&p));
                let email = text("email.0").and_then(|e| canonical::normalize_email(&e));
                s.buyers
                    .values()
                    .find(|b| {
                        phone.as_ref().is_some_and(|p| {
                            b.phones
                                .iter()
                                .any(|x| crate::phone::normalize(x).as_ref() == Some(p))
                        }) || email.as_ref().is_some_and(|e| {
                            b.emails
                                .iter()
                                .any(|x| canonical::normalize_email(x).as_ref() == Some(e))
                        })
                    })
                    .map(|b| b.local_id.clone())
            }
            EntityKind::Product => text("sku").and_then(|sku| {
                s.products
                    .values()
                    .find(|p| p.sku.as_deref() == Some(sku.as_str()))
                    .map(|p| p.local_id.clone())
            }),
            EntityKind::Offer => text("sku").and_then(|sku| {
                s.offers
                    .values()
                    .find(|o| o.sku == sku)
                    .map(|o| o.local_id.clone())
            }),
            EntityKind::Stock => None,
        };
        Ok(found)
    }
}
