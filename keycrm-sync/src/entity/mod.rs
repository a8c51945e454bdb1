//! One home per kind of record: the host's canonical record, its mapping to and from KeyCRM,
//! its create and update bodies, and the engine's push and pull specifics of that kind.
//!
//! [`crate::canonical`] re-exports the public pieces under their historical names.

use keycrm_api::Timestamp;

use crate::engine::push::Work;
use crate::engine::{RunReport, SyncEngine, SyncError};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::store::{Mapping, Store};
pub use mapping::{MappingError, Mappings};

/// Implements [`Entity`], [`RemoteRecord`] and, when given, [`Bodies`] for a kind whose
/// canonical record has `local_id` and `updated_at` (buyers, products, offers). `local` and
/// `remote` are functions of the record and the [`Mappings`] (buyers read phones in their
/// region).
macro_rules! plain_entity {
    (
        $ty:ident: $kind:ident,
        local: $local:ty = $from_local:expr,
        remote: $remote:ty = $from_remote:expr,
        from_fields: $from_fields:path,
        fields: [$($field:expr),* $(,)?],
        natural_keys: $natural_keys:expr,
        $(bodies: $create:ty = $create_fn:path, $update:ty = $update_fn:path,)?
    ) => {
        impl $crate::entity::Entity for $ty {
            const KIND: $crate::model::EntityKind = $crate::model::EntityKind::$kind;
            const FIELDS: &'static [$crate::field::FieldPath] = &[$($field),*];
            type Local = $local;

            fn local_id(local: &$local) -> String {
                local.local_id.clone()
            }

            fn updated_at(local: &$local) -> Option<keycrm_api::Timestamp> {
                local.updated_at
            }

            fn fields_from_local(
                local: &$local,
                mappings: &$crate::entity::Mappings,
            ) -> Result<$crate::model::Fields, $crate::entity::MappingError> {
                Ok(($from_local)(local, mappings))
            }

            fn from_fields(
                local_id: &str,
                fields: &$crate::model::Fields,
                _: &$crate::entity::Mappings,
            ) -> Result<$local, $crate::entity::MappingError> {
                $from_fields(local_id, fields)
            }

            fn natural_keys(
                fields: &$crate::model::Fields,
            ) -> Vec<($crate::field::FieldPath, String)> {
                ($natural_keys)(fields)
            }
        }

        impl $crate::entity::RemoteRecord for $ty {
            type Remote = $remote;

            fn fields_from_remote(
                remote: &$remote,
                mappings: &$crate::entity::Mappings,
            ) -> Result<$crate::model::Fields, $crate::entity::MappingError> {
                Ok(($from_remote)(remote, mappings))
            }
        }

        $(
            impl $crate::entity::Bodies for $ty {
                type Create = $create;
                type Update = $update;

                fn create_body(
                    fields: &$crate::model::Fields,
                    _: &$crate::entity::Mappings,
                ) -> Result<$create, $crate::entity::MappingError> {
                    $create_fn(fields)
                }

                fn update_body(
                    fields: &$crate::model::Fields,
                ) -> Result<$update, $crate::entity::MappingError> {
                    $update_fn(fields)
                }
            }
        )?
    };
}

/// The natural key of a kind known by one text field (a product's or offer's SKU).
fn key_of(fields: &Fields, path: FieldPath) -> Vec<(FieldPath, String)> {
    text_of(fields, &path)
        .map(|value| (path, value))
        .into_iter()
        .collect()
}

pub mod buyer;
pub mod mapping;
pub mod offer;
pub mod order;
pub mod product;
pub mod stock;
pub(crate) mod values;

/// One kind of record: the host's canonical record, its mapping both ways through the flat
/// [`Fields`] the planner compares, its natural key and the field paths it owns.
///
/// Implemented by [`order::Order`], [`buyer::Buyer`], [`product::Product`],
/// [`offer::Offer`] and [`stock::Stock`]. The free functions of [`crate::canonical`]
/// (`order_fields_from_local`, ...) are the same mappings under their historical names.
pub trait Entity {
    /// The kind, as stored and reported.
    const KIND: EntityKind;
    /// The field paths the kind owns; a group's prefix (`lines`, `payments`, `phone`) stands
    /// for all its members.
    const FIELDS: &'static [FieldPath];
    /// The host's canonical record of this kind.
    type Local;

    /// The host's id of a record.
    fn local_id(local: &Self::Local) -> String;

    /// When the host last changed a record, if it knows.
    fn updated_at(local: &Self::Local) -> Option<Timestamp>;

    /// The host's record as fields in KeyCRM terms.
    fn fields_from_local(local: &Self::Local, mappings: &Mappings) -> Result<Fields, MappingError>;

    /// Fields (from either side, typically the planner's merged record) back to the host's
    /// record; times that are not fields are left `None`.
    fn from_fields(
        local_id: &str,
        fields: &Fields,
        mappings: &Mappings,
    ) -> Result<Self::Local, MappingError>;

    /// The natural keys a record is found by on either side before it is linked, most
    /// specific first, with their normalised values (an order's `source_uuid`, a buyer's first
    /// phone then first e-mail, a product's or offer's SKU); none for stock, whose local id
    /// (`<warehouse>/<sku>`) is its key.
    fn natural_keys(fields: &Fields) -> Vec<(FieldPath, String)>;

    /// The host's record as a snapshot (its fields and change time).
    fn snapshot(local: &Self::Local, mappings: &Mappings) -> Result<Snapshot, MappingError> {
        Ok(snapshot(
            Self::fields_from_local(local, mappings)?,
            Self::updated_at(local),
        ))
    }
}

/// A kind KeyCRM reads as one record per id: how its record becomes fields.
pub trait RemoteRecord: Entity {
    /// KeyCRM's record as read.
    type Remote;

    /// KeyCRM's record as fields, phones read in the `mappings`' region; fails when KeyCRM's
    /// data does not fit (an order's line quantities out of range).
    fn fields_from_remote(
        remote: &Self::Remote,
        mappings: &Mappings,
    ) -> Result<Fields, MappingError>;
}

/// A kind KeyCRM creates and updates one record at a time (or in bulk from the same bodies).
pub trait Bodies: Entity {
    /// The body of a create (also one item of a bulk import).
    type Create;
    /// The body of an update.
    type Update;

    /// A whole record's fields as a create body.
    fn create_body(fields: &Fields, mappings: &Mappings) -> Result<Self::Create, MappingError>;

    /// The fields to send (changed or whole, as the kind documents) as an update body.
    fn update_body(fields: &Fields) -> Result<Self::Update, MappingError>;
}

/// The text value of a field, for [`Entity::natural_keys`].
fn text_of(fields: &Fields, path: &FieldPath) -> Option<String> {
    crate::engine::push::text(fields, path)
}

/// A KeyCRM record of kind `K` as a snapshot changed at `updated_at`.
pub(crate) fn remote_snapshot<K: RemoteRecord>(
    remote: &K::Remote,
    updated_at: Option<Timestamp>,
    mappings: &Mappings,
) -> Result<Snapshot, MappingError> {
    Ok(snapshot(
        K::fields_from_remote(remote, mappings)?,
        updated_at,
    ))
}

/// A snapshot of `fields` changed at `updated_at` (a [`Timestamp`] of either side).
pub fn snapshot(fields: Fields, updated_at: Option<Timestamp>) -> Snapshot {
    Snapshot::new(fields, updated_at.map(Timestamp::into_datetime))
}

/// The order of a run's reconciliation passes: orders and buyers (incremental, every run),
/// then the catalogue and stock (full passes only).
pub(crate) const PULL_ORDER: [EntityKind; 5] = [
    EntityKind::Order,
    EntityKind::Buyer,
    EntityKind::Product,
    EntityKind::Offer,
    EntityKind::Stock,
];

/// The engine's dispatch to each kind's push and pull specifics (the one place a new kind is
/// wired into the engine's generic loops).
impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Sends a kind's due outbox work.
    pub(crate) async fn push_kind(
        &self,
        kind: EntityKind,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        match kind {
            EntityKind::Order => self.push_orders(work, report).await,
            EntityKind::Buyer => self.push_buyers(work, report).await,
            EntityKind::Product => self.push_products(work, report).await,
            EntityKind::Offer => self.push_offers(work, report).await,
            EntityKind::Stock => self.push_stock(work, report).await,
        }
    }

    /// One reconciliation pass of a kind: incremental for orders and buyers, full passes of
    /// the catalogue and stock only when `full`.
    pub(crate) async fn pull_kind(
        &self,
        kind: EntityKind,
        report: &mut RunReport,
        full: bool,
        everything: bool,
    ) -> Result<(), SyncError> {
        match kind {
            EntityKind::Order => self.pull_orders(report, everything).await,
            EntityKind::Buyer => self.pull_buyers(report, everything).await,
            EntityKind::Product if full => self.pull_products(report).await,
            EntityKind::Offer if full => self.pull_offers(report).await,
            EntityKind::Stock if full => self.pull_stock(report).await,
            EntityKind::Product | EntityKind::Offer | EntityKind::Stock => Ok(()),
        }
    }

    /// The mapping a kind finds for a remote record not mapped by its id, through what the
    /// engine noted before creating it (an order's number); `None` for the other kinds.
    pub(crate) async fn noted_mapping(
        &self,
        kind: EntityKind,
        remote: &Fields,
    ) -> Result<Option<Mapping>, SyncError> {
        match kind {
            EntityKind::Order => self.noted_order_mapping(remote).await,
            EntityKind::Buyer | EntityKind::Product | EntityKind::Offer | EntityKind::Stock => {
                Ok(None)
            }
        }
    }

    /// Reads one record of a kind by KeyCRM id (on-demand sync); `None` when there is none to
    /// read (stock is only read in passes).
    pub(crate) async fn fetch_one(
        &self,
        kind: EntityKind,
        remote_id: i64,
    ) -> Result<Option<Snapshot>, SyncError> {
        match kind {
            EntityKind::Order => self.fetch_order(remote_id).await,
            EntityKind::Buyer => self.fetch_buyer(remote_id).await,
            EntityKind::Product => self.fetch_product(remote_id).await,
            EntityKind::Offer => self.fetch_offer(remote_id).await,
            EntityKind::Stock => Ok(None),
        }
    }
}
