//! A [`Host`] over per-kind repositories of canonical records.
//!
//! The host-specific part of a host is storage: read one record, write one, delete one, find
//! one by its natural key, list what changed. [`CanonicalHost`] does everything else once: the
//! canonical mapping both ways (with [`Mappings`]), change cursors, tombstones, stock keys,
//! natural keys taken from KeyCRM's fields, and the host-only values a KeyCRM record does not
//! carry (an order's `updated_at`, an offer's product SKU) kept across an apply.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::canonical::{
    self, CanonicalBuyer, CanonicalOffer, CanonicalOrder, CanonicalProduct, CanonicalStock,
    MappingError, Mappings,
};
use crate::model::{EntityKind, Fields, Snapshot};
use crate::phone::PhoneRegion;

use super::{Applied, Host, HostError, LocalChanges, RemoteChange};

/// What identifies a record on both sides before they are linked, so a first sync links
/// existing records instead of duplicating them. Values are already normalised
/// ([`crate::phone::normalize`], [`canonical::normalize_email`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NaturalKey {
    /// An order's number (KeyCRM's `source_uuid`).
    Number(String),
    /// A product's or offer's SKU.
    Sku(String),
    /// A buyer's first phone and first e-mail: a buyer matches on either.
    Contact {
        /// Normalised phone (`+` and digits).
        phone: Option<String>,
        /// Normalised e-mail (trimmed, lower case).
        email: Option<String>,
    },
}

/// One kind of canonical record ([`CanonicalOrder`], [`CanonicalBuyer`], [`CanonicalProduct`],
/// [`CanonicalOffer`], [`CanonicalStock`]): its kind, id, mapping and natural key.
pub trait Record: Clone + Send + Sync + 'static {
    /// The kind of record.
    const KIND: EntityKind;

    /// The host's id of the record (for stock, [`CanonicalStock::key`]).
    fn local_id(&self) -> String;

    /// The record as a snapshot of canonical fields.
    fn snapshot(&self, mappings: &Mappings) -> Result<Snapshot, MappingError>;

    /// The record KeyCRM's `fields` describe, stored under `local_id`; `old` is the stored
    /// record, whose host-only values are kept. `Ok(None)`: the record cannot be stored (a
    /// stock key without a warehouse).
    fn from_remote(
        local_id: &str,
        fields: &Fields,
        old: Option<&Self>,
        mappings: &Mappings,
    ) -> Result<Option<Self>, MappingError>;

    /// Whether this record is the one `key` names (the in-memory way to look one up), with
    /// Ukraine as the home country of national phone numbers.
    fn matches(&self, key: &NaturalKey) -> bool;

    /// [`Record::matches`] with national phone numbers read in `region` (only buyers hold
    /// phones; the default ignores the region).
    fn matches_in(&self, key: &NaturalKey, region: &PhoneRegion) -> bool {
        let _ = region;
        self.matches(key)
    }
}

/// Storage of one kind of canonical record. A host implements it once per kind it keeps
/// (`Repository<CanonicalOrder>`, `Repository<CanonicalBuyer>`, ...), usually on one type that
/// holds its database handle.
pub trait Repository<R: Record>: Send + Sync + 'static {
    /// The record with this local id, if any.
    fn get(&self, local_id: &str) -> impl Future<Output = Result<Option<R>, HostError>> + Send;

    /// Inserts or replaces a record (by [`Record::local_id`]) and notes it in the change log.
    fn store(&self, record: R) -> impl Future<Output = Result<(), HostError>> + Send;

    /// Deletes a record; `false` when there was none.
    fn remove(&self, local_id: &str) -> impl Future<Output = Result<bool, HostError>> + Send;

    /// The local id of the record `key` names. The default finds nothing (every unmapped KeyCRM
    /// record then becomes a new local record).
    fn find(
        &self,
        key: &NaturalKey,
    ) -> impl Future<Output = Result<Option<String>, HostError>> + Send {
        let _ = key;
        async { Ok(None) }
    }
}

/// The host's change log: a sequence number that grows with every local write.
pub trait ChangeLog: Send + Sync + 'static {
    /// `(sequence, local id)` of the `kind` records changed after `after`, the last change of
    /// each id (in any order).
    fn changed_after(
        &self,
        kind: EntityKind,
        after: u64,
    ) -> impl Future<Output = Result<Vec<(u64, String)>, HostError>> + Send;
}

/// Everything a [`CanonicalHost`] needs: a repository for every kind and a change log.
pub trait Repositories:
    Repository<CanonicalOrder>
    + Repository<CanonicalBuyer>
    + Repository<CanonicalProduct>
    + Repository<CanonicalOffer>
    + Repository<CanonicalStock>
    + ChangeLog
{
}

impl<T> Repositories for T where
    T: Repository<CanonicalOrder>
        + Repository<CanonicalBuyer>
        + Repository<CanonicalProduct>
        + Repository<CanonicalOffer>
        + Repository<CanonicalStock>
        + ChangeLog
{
}

/// A [`Host`] over repositories of canonical records. Clones share the repositories.
#[derive(Debug)]
pub struct CanonicalHost<R> {
    repos: Arc<R>,
    mappings: Arc<Mappings>,
    applied: Arc<AtomicU64>,
}

impl<R> Clone for CanonicalHost<R> {
    fn clone(&self) -> Self {
        Self {
            repos: self.repos.clone(),
            mappings: self.mappings.clone(),
            applied: self.applied.clone(),
        }
    }
}

fn mapping_error(e: MappingError) -> HostError {
    HostError(e.to_string())
}

impl<R: Repositories> CanonicalHost<R> {
    /// A host over `repos`, naming statuses, payment methods and warehouses with `mappings`.
    pub fn new(repos: R, mappings: Mappings) -> Self {
        Self {
            repos: Arc::new(repos),
            mappings: Arc::new(mappings),
            applied: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The repositories.
    pub fn repositories(&self) -> &R {
        &self.repos
    }

    /// The mappings.
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// How many remote changes the engine applied to this host.
    pub fn applied_count(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    async fn load_one<T: Record>(&self, local_id: &str) -> Result<Option<Snapshot>, HostError>
    where
        R: Repository<T>,
    {
        match Repository::<T>::get(&*self.repos, local_id).await? {
            Some(record) => Ok(Some(
                record.snapshot(&self.mappings).map_err(mapping_error)?,
            )),
            None => Ok(None),
        }
    }

    async fn apply_one<T: Record>(
        &self,
        local_id: String,
        change: &RemoteChange,
    ) -> Result<Applied, HostError>
    where
        R: Repository<T>,
    {
        if change.tombstone {
            let removed = Repository::<T>::remove(&*self.repos, &local_id).await?;
            self.applied.fetch_add(1, Ordering::Relaxed);
            return Ok(if removed {
                Applied::Stored { local_id }
            } else {
                Applied::Skipped {
                    reason: "already absent".into(),
                }
            });
        }
        let old = Repository::<T>::get(&*self.repos, &local_id).await?;
        let Some(record) = T::from_remote(&local_id, &change.fields, old.as_ref(), &self.mappings)
            .map_err(mapping_error)?
        else {
            return Ok(Applied::Skipped {
                reason: "stock of an unmapped warehouse".into(),
            });
        };
        Repository::<T>::store(&*self.repos, record).await?;
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(Applied::Stored { local_id })
    }

    async fn find_one<T: Record>(
        &self,
        key: Option<NaturalKey>,
    ) -> Result<Option<String>, HostError>
    where
        R: Repository<T>,
    {
        match key {
            Some(key) => Repository::<T>::find(&*self.repos, &key).await,
            None => Ok(None),
        }
    }
}

/// The natural key KeyCRM's `fields` of a `kind` record carry, if any.
/// National phone numbers are read in `region`.
pub(crate) fn natural_key(
    kind: EntityKind,
    fields: &Fields,
    region: &PhoneRegion,
) -> Option<NaturalKey> {
    let text = |key: &str| fields.get(key).and_then(|v| v.as_str()).map(str::to_string);
    match kind {
        EntityKind::Order => text("source_uuid").map(NaturalKey::Number),
        EntityKind::Buyer => {
            let phone = text("phone.0").and_then(|p| region.normalize(&p));
            let email = text("email.0").and_then(|e| canonical::normalize_email(&e));
            (phone.is_some() || email.is_some()).then_some(NaturalKey::Contact { phone, email })
        }
        EntityKind::Product | EntityKind::Offer => text("sku").map(NaturalKey::Sku),
        EntityKind::Stock => None,
    }
}

impl<R: Repositories> Host for CanonicalHost<R> {
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
        let mut changed = self.repos.changed_after(kind, after).await?;
        changed.retain(|(seq, _)| *seq > after);
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
        match kind {
            EntityKind::Order => self.load_one::<CanonicalOrder>(&local_id).await,
            EntityKind::Buyer => self.load_one::<CanonicalBuyer>(&local_id).await,
            EntityKind::Product => self.load_one::<CanonicalProduct>(&local_id).await,
            EntityKind::Offer => self.load_one::<CanonicalOffer>(&local_id).await,
            EntityKind::Stock => self.load_one::<CanonicalStock>(&local_id).await,
        }
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        let local_id = change.local_id.clone().unwrap_or_else(|| match kind {
            EntityKind::Stock => String::new(),
            _ => format!("crm-{}", change.remote_id),
        });
        match kind {
            EntityKind::Order => self.apply_one::<CanonicalOrder>(local_id, &change).await,
            EntityKind::Buyer => self.apply_one::<CanonicalBuyer>(local_id, &change).await,
            EntityKind::Product => self.apply_one::<CanonicalProduct>(local_id, &change).await,
            EntityKind::Offer => self.apply_one::<CanonicalOffer>(local_id, &change).await,
            EntityKind::Stock => self.apply_one::<CanonicalStock>(local_id, &change).await,
        }
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        let key = natural_key(kind, &fields, self.mappings.phone_region());
        match kind {
            EntityKind::Order => self.find_one::<CanonicalOrder>(key).await,
            EntityKind::Buyer => self.find_one::<CanonicalBuyer>(key).await,
            EntityKind::Product => self.find_one::<CanonicalProduct>(key).await,
            EntityKind::Offer => self.find_one::<CanonicalOffer>(key).await,
            EntityKind::Stock => Ok(None),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The five canonical records

fn same(value: Option<&str>, key: &str) -> bool {
    value == Some(key)
}

impl Record for CanonicalOrder {
    const KIND: EntityKind = EntityKind::Order;

    fn local_id(&self) -> String {
        self.local_id.clone()
    }

    fn snapshot(&self, mappings: &Mappings) -> Result<Snapshot, MappingError> {
        let fields = canonical::order_fields_from_local(self, mappings)?;
        Ok(canonical::snapshot(fields, self.updated_at))
    }

    fn from_remote(
        local_id: &str,
        fields: &Fields,
        old: Option<&Self>,
        mappings: &Mappings,
    ) -> Result<Option<Self>, MappingError> {
        let mut order = canonical::order_from_fields(local_id, fields, mappings)?;
        if let Some(old) = old {
            order.updated_at = old.updated_at;
        }
        Ok(Some(order))
    }

    fn matches(&self, key: &NaturalKey) -> bool {
        matches!(key, NaturalKey::Number(n) if same(self.number.as_deref(), n))
    }
}

impl Record for CanonicalBuyer {
    const KIND: EntityKind = EntityKind::Buyer;

    fn local_id(&self) -> String {
        self.local_id.clone()
    }

    fn snapshot(&self, mappings: &Mappings) -> Result<Snapshot, MappingError> {
        Ok(canonical::snapshot(
            canonical::buyer_fields_from_local_in(self, mappings.phone_region()),
            self.updated_at,
        ))
    }

    fn from_remote(
        local_id: &str,
        fields: &Fields,
        _: Option<&Self>,
        _: &Mappings,
    ) -> Result<Option<Self>, MappingError> {
        canonical::buyer_from_fields(local_id, fields).map(Some)
    }

    fn matches(&self, key: &NaturalKey) -> bool {
        self.matches_in(key, &PhoneRegion::default())
    }

    fn matches_in(&self, key: &NaturalKey, region: &PhoneRegion) -> bool {
        let NaturalKey::Contact { phone, email } = key else {
            return false;
        };
        phone.as_ref().is_some_and(|p| {
            self.phones
                .iter()
                .any(|x| region.normalize(x).as_ref() == Some(p))
        }) || email.as_ref().is_some_and(|e| {
            self.emails
                .iter()
                .any(|x| canonical::normalize_email(x).as_ref() == Some(e))
        })
    }
}

impl Record for CanonicalProduct {
    const KIND: EntityKind = EntityKind::Product;

    fn local_id(&self) -> String {
        self.local_id.clone()
    }

    fn snapshot(&self, _: &Mappings) -> Result<Snapshot, MappingError> {
        Ok(canonical::snapshot(
            canonical::product_fields_from_local(self),
            self.updated_at,
        ))
    }

    fn from_remote(
        local_id: &str,
        fields: &Fields,
        _: Option<&Self>,
        _: &Mappings,
    ) -> Result<Option<Self>, MappingError> {
        canonical::product_from_fields(local_id, fields).map(Some)
    }

    fn matches(&self, key: &NaturalKey) -> bool {
        matches!(key, NaturalKey::Sku(sku) if same(self.sku.as_deref(), sku))
    }
}

impl Record for CanonicalOffer {
    const KIND: EntityKind = EntityKind::Offer;

    fn local_id(&self) -> String {
        self.local_id.clone()
    }

    fn snapshot(&self, _: &Mappings) -> Result<Snapshot, MappingError> {
        Ok(canonical::snapshot(
            canonical::offer_fields_from_local(self),
            self.updated_at,
        ))
    }

    fn from_remote(
        local_id: &str,
        fields: &Fields,
        old: Option<&Self>,
        _: &Mappings,
    ) -> Result<Option<Self>, MappingError> {
        let mut offer = canonical::offer_from_fields(local_id, fields)?;
        if let Some(old) = old {
            offer.product_sku = old.product_sku.clone();
        }
        Ok(Some(offer))
    }

    fn matches(&self, key: &NaturalKey) -> bool {
        matches!(key, NaturalKey::Sku(sku) if self.sku == *sku)
    }
}

impl Record for CanonicalStock {
    const KIND: EntityKind = EntityKind::Stock;

    fn local_id(&self) -> String {
        self.key()
    }

    fn snapshot(&self, _: &Mappings) -> Result<Snapshot, MappingError> {
        Ok(canonical::snapshot(
            canonical::stock_fields_from_local(self),
            None,
        ))
    }

    /// The stock key is `<warehouse>/<sku>`; a key without a warehouse is not stored.
    fn from_remote(
        local_id: &str,
        fields: &Fields,
        _: Option<&Self>,
        _: &Mappings,
    ) -> Result<Option<Self>, MappingError> {
        let Some((warehouse, sku)) = local_id.split_once('/') else {
            return Ok(None);
        };
        let quantity = fields
            .get("quantity")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| Some(v.to_string()))
            })
            .and_then(|q| q.parse().ok())
            .unwrap_or_default();
        Ok(Some(CanonicalStock {
            sku: sku.to_string(),
            warehouse: warehouse.to_string(),
            quantity,
        }))
    }

    fn matches(&self, _: &NaturalKey) -> bool {
        false
    }
}
