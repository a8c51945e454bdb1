//! [`MemoryHost`]: the [`CanonicalHost`] over an in-memory [`MemoryRepository`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::canonical::{
    CanonicalBuyer, CanonicalOffer, CanonicalOrder, CanonicalProduct, CanonicalStock, Mappings,
};
use crate::model::{EntityKind, Fields, Snapshot};
use crate::phone::PhoneRegion;

use super::canonical::{CanonicalHost, ChangeLog, NaturalKey, Record, Repository};
use super::{Applied, Host, HostError, LocalChanges, RemoteChange};

/// Canonical records kept in memory, with a per-kind change log. Clones share their state.
#[derive(Clone, Debug, Default)]
pub struct MemoryRepository {
    inner: Arc<Mutex<MemoryState>>,
    /// The home country of national phone numbers, for finding buyers by phone.
    region: PhoneRegion,
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

/// A canonical record with its table in [`MemoryState`].
trait InMemory: Record {
    fn table(state: &mut MemoryState) -> &mut BTreeMap<String, Self>;
}

macro_rules! in_memory {
    ($($record:ty => $table:ident),* $(,)?) => {$(
        impl InMemory for $record {
            fn table(state: &mut MemoryState) -> &mut BTreeMap<String, Self> {
                &mut state.$table
            }
        }
    )*};
}

in_memory!(
    CanonicalOrder => orders,
    CanonicalBuyer => buyers,
    CanonicalProduct => products,
    CanonicalOffer => offers,
    CanonicalStock => stock,
);

impl MemoryRepository {
    /// An empty repository that reads national phone numbers in `region` when it finds a
    /// buyer by phone (the default reads them as Ukrainian).
    pub fn in_region(region: PhoneRegion) -> Self {
        Self {
            region,
            ..Self::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        self.inner.lock().expect("memory host lock poisoned")
    }

    /// Stores a record and notes the change.
    fn put<T: InMemory>(&self, record: T) {
        let mut s = self.state();
        let id = record.local_id();
        T::table(&mut s).insert(id.clone(), record);
        s.touch(T::KIND, &id);
    }

    /// Edits a record in place and notes the change; `false` when there is no such record.
    fn edit<T: InMemory>(&self, local_id: &str, edit: impl FnOnce(&mut T)) -> bool {
        let mut s = self.state();
        let Some(record) = T::table(&mut s).get_mut(local_id) else {
            return false;
        };
        edit(record);
        s.touch(T::KIND, local_id);
        true
    }

    fn get_now<T: InMemory>(&self, local_id: &str) -> Option<T> {
        T::table(&mut self.state()).get(local_id).cloned()
    }

    fn all<T: InMemory>(&self) -> Vec<T> {
        T::table(&mut self.state()).values().cloned().collect()
    }
}

impl<T: InMemory> Repository<T> for MemoryRepository {
    async fn get(&self, local_id: &str) -> Result<Option<T>, HostError> {
        Ok(self.get_now(local_id))
    }

    async fn store(&self, record: T) -> Result<(), HostError> {
        self.put(record);
        Ok(())
    }

    async fn remove(&self, local_id: &str) -> Result<bool, HostError> {
        Ok(T::table(&mut self.state()).remove(local_id).is_some())
    }

    async fn find(&self, key: &NaturalKey) -> Result<Option<String>, HostError> {
        Ok(T::table(&mut self.state())
            .values()
            .find(|r| r.matches_in(key, &self.region))
            .map(Record::local_id))
    }
}

impl ChangeLog for MemoryRepository {
    async fn changed_after(
        &self,
        kind: EntityKind,
        after: u64,
    ) -> Result<Vec<(u64, String)>, HostError> {
        Ok(self
            .state()
            .changed
            .get(&kind)
            .map(|m| {
                m.iter()
                    .filter(|(_, seq)| **seq > after)
                    .map(|(id, seq)| (*seq, id.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// A complete host kept in memory on the canonical model: [`CanonicalHost`] over a
/// [`MemoryRepository`]. Clones share their state.
///
/// Every write (by the test or demo through the `put_*` methods, or by the engine through
/// [`Host::apply`]) bumps a per-kind change sequence that [`Host::changes_since`] reports.
#[derive(Clone, Debug)]
pub struct MemoryHost {
    host: CanonicalHost<MemoryRepository>,
}

impl MemoryHost {
    /// An empty host using `mappings` for status, payment method and warehouse names.
    pub fn new(mappings: Mappings) -> Self {
        Self {
            host: CanonicalHost::new(
                MemoryRepository::in_region(mappings.phone_region().clone()),
                mappings,
            ),
        }
    }

    fn repo(&self) -> &MemoryRepository {
        self.host.repositories()
    }

    /// The canonical host under this one.
    pub fn canonical(&self) -> &CanonicalHost<MemoryRepository> {
        &self.host
    }

    /// Stores an order (a local change).
    pub fn put_order(&self, order: CanonicalOrder) {
        self.repo().put(order);
    }

    /// Stores a buyer (a local change).
    pub fn put_buyer(&self, buyer: CanonicalBuyer) {
        self.repo().put(buyer);
    }

    /// Stores a product (a local change).
    pub fn put_product(&self, product: CanonicalProduct) {
        self.repo().put(product);
    }

    /// Stores an offer (a local change).
    pub fn put_offer(&self, offer: CanonicalOffer) {
        self.repo().put(offer);
    }

    /// Sets a stock level (a local change); its local id is [`CanonicalStock::key`].
    pub fn put_stock(&self, stock: CanonicalStock) {
        self.repo().put(stock);
    }

    /// Edits an order in place (a local change); `false` when there is no such order.
    pub fn edit_order(&self, local_id: &str, edit: impl FnOnce(&mut CanonicalOrder)) -> bool {
        self.repo().edit(local_id, edit)
    }

    /// Edits a buyer in place (a local change); `false` when there is no such buyer.
    pub fn edit_buyer(&self, local_id: &str, edit: impl FnOnce(&mut CanonicalBuyer)) -> bool {
        self.repo().edit(local_id, edit)
    }

    /// An order by local id.
    pub fn order(&self, local_id: &str) -> Option<CanonicalOrder> {
        self.repo().get_now(local_id)
    }

    /// Every order.
    pub fn orders(&self) -> Vec<CanonicalOrder> {
        self.repo().all()
    }

    /// A buyer by local id.
    pub fn buyer(&self, local_id: &str) -> Option<CanonicalBuyer> {
        self.repo().get_now(local_id)
    }

    /// Every buyer.
    pub fn buyers(&self) -> Vec<CanonicalBuyer> {
        self.repo().all()
    }

    /// A product by local id.
    pub fn product(&self, local_id: &str) -> Option<CanonicalProduct> {
        self.repo().get_now(local_id)
    }

    /// An offer by local id.
    pub fn offer(&self, local_id: &str) -> Option<CanonicalOffer> {
        self.repo().get_now(local_id)
    }

    /// A stock level by `<warehouse>/<sku>`.
    pub fn stock(&self, key: &str) -> Option<CanonicalStock> {
        self.repo().get_now(key)
    }

    /// How many remote changes the engine applied to this host.
    pub fn applied_count(&self) -> u64 {
        self.host.applied_count()
    }
}

impl Host for MemoryHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<LocalChanges, HostError> {
        self.host.changes_since(kind, cursor).await
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<Snapshot>, HostError> {
        self.host.load(kind, local_id).await
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        self.host.apply(kind, change).await
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        self.host.find_local(kind, fields).await
    }
}
