//! The seam between the engine and the host system (a warehouse, a shop).
//!
//! A host implements [`Host`] over its own storage: it reports which records changed, hands
//! out a record's current state as canonical [`Fields`] in KeyCRM terms (the helpers in
//! [`crate::canonical`] do the conversion for a plain model), and applies records that changed
//! in KeyCRM.
//!
//! Most hosts need not implement [`Host`] by hand:
//!
//! - [`CanonicalHost`] implements it over small per-kind [`Repository`] traits (get, store,
//!   remove and find one canonical record) and a [`ChangeLog`] (which local ids changed after a
//!   sequence number). The stock keys (`<warehouse>/<sku>`), tombstones, change cursors,
//!   natural-key matching and the canonical mapping are handled there, once. A host over SQL
//!   writes its queries and nothing else (`examples/warehouse` is one, on SQLite).
//! - [`MemoryHost`] is [`CanonicalHost`] over an in-memory repository, for tests, demos and
//!   as a template.
//!
//! # Object safety
//!
//! [`Host`] uses `async fn`-style methods (`impl Future` in the trait), which keeps the engine's
//! futures `Send` without boxing, but makes `dyn Host` impossible. [`DynHost`] is the
//! object-safe twin (boxed futures), implemented for every [`Host`]; `Arc<dyn DynHost>` and
//! `Box<dyn DynHost>` implement [`Host`] again, so an engine can be built over a host chosen at
//! run time (one allocation per call):
//!
//! ```
//! use std::sync::Arc;
//! use keycrm_sync::canonical::Mappings;
//! use keycrm_sync::host::{DynHost, Host, MemoryHost};
//!
//! fn takes_any_host(_: impl Host) {}
//! let host: Arc<dyn DynHost> = Arc::new(MemoryHost::new(Mappings::new()));
//! takes_any_host(host);
//! ```

mod canonical;
mod memory;

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::model::{EntityKind, Fields, Snapshot};

pub use canonical::{CanonicalHost, ChangeLog, NaturalKey, Record, Repositories, Repository};
pub use memory::{MemoryHost, MemoryRepository};

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

/// The object-safe form of [`Host`]: the same calls with boxed futures. Every [`Host`] is a
/// `DynHost`, and `Arc<dyn DynHost>` / `Box<dyn DynHost>` are [`Host`]s (see the module docs).
pub trait DynHost: Send + Sync + 'static {
    /// [`Host::changes_since`].
    fn changes_since_dyn(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> BoxFuture<'_, Result<LocalChanges, HostError>>;
    /// [`Host::load`].
    fn load_dyn(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, HostError>>;
    /// [`Host::apply`].
    fn apply_dyn(
        &self,
        kind: EntityKind,
        change: RemoteChange,
    ) -> BoxFuture<'_, Result<Applied, HostError>>;
    /// [`Host::find_local`].
    fn find_local_dyn(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> BoxFuture<'_, Result<Option<String>, HostError>>;
}

impl<H: Host> DynHost for H {
    fn changes_since_dyn(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> BoxFuture<'_, Result<LocalChanges, HostError>> {
        Box::pin(self.changes_since(kind, cursor))
    }
    fn load_dyn(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> BoxFuture<'_, Result<Option<Snapshot>, HostError>> {
        Box::pin(self.load(kind, local_id))
    }
    fn apply_dyn(
        &self,
        kind: EntityKind,
        change: RemoteChange,
    ) -> BoxFuture<'_, Result<Applied, HostError>> {
        Box::pin(self.apply(kind, change))
    }
    fn find_local_dyn(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> BoxFuture<'_, Result<Option<String>, HostError>> {
        Box::pin(self.find_local(kind, fields))
    }
}

macro_rules! host_for_dyn {
    ($ptr:ty) => {
        impl Host for $ptr {
            fn changes_since(
                &self,
                kind: EntityKind,
                cursor: Option<String>,
            ) -> impl Future<Output = Result<LocalChanges, HostError>> + Send {
                (**self).changes_since_dyn(kind, cursor)
            }
            fn load(
                &self,
                kind: EntityKind,
                local_id: String,
            ) -> impl Future<Output = Result<Option<Snapshot>, HostError>> + Send {
                (**self).load_dyn(kind, local_id)
            }
            fn apply(
                &self,
                kind: EntityKind,
                change: RemoteChange,
            ) -> impl Future<Output = Result<Applied, HostError>> + Send {
                (**self).apply_dyn(kind, change)
            }
            fn find_local(
                &self,
                kind: EntityKind,
                fields: Fields,
            ) -> impl Future<Output = Result<Option<String>, HostError>> + Send {
                (**self).find_local_dyn(kind, fields)
            }
        }
    };
}

host_for_dyn!(Arc<dyn DynHost>);
host_for_dyn!(Box<dyn DynHost>);
