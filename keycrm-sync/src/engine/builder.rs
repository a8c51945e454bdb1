//! Building a [`SyncEngine`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use keycrm_api::Client;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;

use super::{Inner, OutboxClock, SyncEngine, SyncError};
use crate::canonical::Mappings;
use crate::config::SyncConfig;
use crate::host::Host;
use crate::model::EntityKind;
use crate::plan::Policy;
use crate::store::Store;
/// Builds a [`SyncEngine`].
pub struct SyncEngineBuilder<S, H> {
    client: Option<Client>,
    store: Option<S>,
    host: Option<H>,
    config: SyncConfig,
    mappings: Option<Mappings>,
    policies: BTreeMap<EntityKind, Policy>,
    outbox_clock: Option<OutboxClock>,
    shutdown: Option<CancellationToken>,
}

impl<S: Store, H: Host> SyncEngineBuilder<S, H> {
    /// The token that shuts the engine down (default: a token of its own, cancelled by
    /// [`SyncEngine::shutdown`]). Give it the token the host's server shuts down with, so that
    /// event streams ([`SyncEngine::subscribe`], SSE, WebSocket) end and a graceful shutdown
    /// does not wait for connected clients.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = Some(token);
        self
    }

    /// The KeyCRM client (required). Its quota pacing and retries apply to every call.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The store (required): `SqliteStore` in production, `MemoryStore` in tests.
    pub fn store(mut self, store: S) -> Self {
        self.store = Some(store);
        self
    }

    /// The host (required).
    pub fn host(mut self, host: H) -> Self {
        self.host = Some(host);
        self
    }

    /// The operator configuration (batch size, retries, interval, dry run, mappings...).
    pub fn config(mut self, config: SyncConfig) -> Self {
        self.config = config;
        self
    }

    /// Status, payment method and warehouse mappings and the phone region (default: built from
    /// the config; mappings without a [phone region](Mappings::with_phone_region) take the
    /// config's).
    pub fn mappings(mut self, mappings: Mappings) -> Self {
        self.mappings = Some(mappings);
        self
    }

    /// The conflict policy of a kind (default: [`default_policy`](super::default_policy); for orders the status only
    /// moves forward, ranked by KeyCRM's status groups, read once from the account).
    pub fn policy(mut self, kind: EntityKind, policy: Policy) -> Self {
        self.policies.insert(kind, policy);
        self
    }

    /// The clock the outbox is scheduled by (default: the engine's time, which is the
    /// client's [`wall_time`](Client::wall_time): the system's UTC time unless the client was
    /// given a clock): which items are due, and when a failed item is tried again (30 s after
    /// its first failure, doubling, capped at 1 h). Only the outbox uses it; pull windows,
    /// cursors and logs keep the engine's time, which KeyCRM's `updated_at` values are
    /// compared with.
    ///
    /// Tests move it forward to retry failed items without waiting; a host may do the same
    /// for an operator's "retry now".
    pub fn outbox_clock(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Self {
        self.outbox_clock = Some(Arc::new(clock));
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<SyncEngine<S, H>, SyncError> {
        let client = self
            .client
            .ok_or_else(|| SyncError::Config("a KeyCRM client is required".into()))?;
        let store = self
            .store
            .ok_or_else(|| SyncError::Config("a store is required".into()))?;
        let host = self
            .host
            .ok_or_else(|| SyncError::Config("a host is required".into()))?;
        let mut mappings = self
            .mappings
            .unwrap_or_else(|| Mappings::from_config(&self.config));
        if !mappings.has_phone_region() {
            mappings = mappings.with_phone_region(self.config.phone_region.clone());
        }
        let (events, _) = broadcast::channel(4096);
        Ok(SyncEngine {
            inner: Arc::new(Inner {
                client,
                store,
                host,
                config: self.config,
                mappings,
                policies: std::sync::Mutex::new(self.policies),
                events,
                run_lock: Mutex::new(()),
                inbox_wake: tokio::sync::Notify::new(),
                last_run: std::sync::Mutex::new(None),
                runs: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                call_errors: AtomicU64::new(0),
                latency_micros: AtomicU64::new(0),
                ranks_loaded: std::sync::atomic::AtomicBool::new(false),
                gathered: std::sync::Mutex::new(None),
                catalogue: std::sync::Mutex::default(),
                outbox_clock: self.outbox_clock,
                shutdown: self.shutdown.unwrap_or_default(),
                run_observers: std::sync::RwLock::new(Vec::new()),
            }),
        })
    }
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Starts building an engine.
    pub fn builder() -> SyncEngineBuilder<S, H> {
        SyncEngineBuilder {
            client: None,
            store: None,
            host: None,
            config: SyncConfig::default(),
            mappings: None,
            policies: BTreeMap::new(),
            outbox_clock: None,
            shutdown: None,
        }
    }
}
