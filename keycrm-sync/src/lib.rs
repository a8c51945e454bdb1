//! Two-way sync between a host system (a warehouse, a shop) and KeyCRM.
//!
//! A host keeps its own records; the engine keeps them and KeyCRM in agreement in both
//! directions: local changes go out through a durable outbox, KeyCRM's changes come in by
//! webhook and by periodic reconciliation, and a field changed on both sides is settled by a
//! pure three-way planner and logged as a conflict.
//!
//! - [`engine`]: the [`SyncEngine`] and its flows (collect, reconcile, apply, push);
//! - [`host`]: the seam a host implements: [`host::CanonicalHost`] over per-kind
//!   repositories, [`host::MemoryHost`], the object-safe [`host::DynHost`];
//! - [`canonical`]: a plain host model and its mapping to and from KeyCRM;
//! - [`plan`]: the pure three-way conflict planner;
//! - [`store`]: the durable state (SQLite or memory);
//! - [`config`]: what an operator configures (`keycrm-sync.toml`);
//! - [`model`]: the shared vocabulary;
//! - [`phone`]: phone numbers in E.164, as buyers are matched and stored;
//! - [`webhook`]: typed KeyCRM webhook events and the framework-agnostic receiver;
//! - `http`, `alert`, `metrics` (feature `service`; the axum router with feature `axum`):
//!   the service layer a host mounts.
//!
//! # The engine and a host
//!
//! A host stores canonical records ([`canonical::CanonicalOrder`], buyers, products, offers,
//! stock) any way it likes. The least it writes is a [`host::Repository`] per kind (get,
//! store, remove, find by natural key) and a [`host::ChangeLog`] (which ids changed after a
//! sequence number); [`host::CanonicalHost`] turns those into a [`host::Host`].
//! `examples/warehouse` does it over its own SQLite schema. [`host::MemoryHost`] is the same
//! over memory; here it syncs one order to the KeyCRM simulator:
//!
//! ```
//! use keycrm_api::mock::{KeyCrmMock, Quota};
//! use keycrm_sync::canonical::{CanonicalContact, CanonicalLine, CanonicalOrder, Mappings};
//! use keycrm_sync::config::{Secret, SyncConfig};
//! use keycrm_sync::host::MemoryHost;
//! use keycrm_sync::store::MemoryStore;
//! use keycrm_sync::SyncEngine;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keycrm = KeyCrmMock::builder().quota(Quota::unlimited()).start().await;
//! let config = SyncConfig {
//!     api_key: Secret::new(keycrm.api_key()),
//!     base_url: keycrm.uri(),
//!     source_id: Some(keycrm_api::mock::reference::SOURCE_WEBSITE),
//!     status_ids: [("new".to_string(), keycrm_api::mock::reference::STATUS_NEW)].into(),
//!     ..SyncConfig::default()
//! };
//! let host = MemoryHost::new(Mappings::from_config(&config));
//! host.put_order(CanonicalOrder {
//!     local_id: "WMS-1".into(),
//!     number: Some("WMS-1".into()),
//!     status: Some("new".into()),
//!     buyer: CanonicalContact { name: Some("Олена Коваль".into()), phone: Some("+380501234567".into()), email: None },
//!     lines: vec![CanonicalLine { sku: "TEA-1".into(), name: "Чай".into(), quantity: 2.into(), price: 95.into() }],
//!     ..CanonicalOrder::default()
//! });
//! let engine: SyncEngine<MemoryStore, MemoryHost> = SyncEngine::builder()
//!     .client(keycrm.client_builder().requests_per_minute(0).build()?)
//!     .store(MemoryStore::new())
//!     .host(host)
//!     .config(config)
//!     .build()?;
//! let report = engine.run_once().await?;
//! assert_eq!(report.pushed, 1);
//! assert_eq!(keycrm.crm().order_ids().len(), 1);
//! # Ok(()) }
//! ```
//!
//! In production the engine runs until shut down ([`SyncEngine::run`]: a run every
//! `sync_interval_secs`, webhooks applied as they arrive) on a [`store::SqliteStore`], and
//! [`SyncEngine::subscribe`] streams what it does.
//!
//! # Configuration
//!
//! [`config::SyncConfig`] is read from TOML (`keycrm-sync.toml` at the repository root is a
//! commented sample) and `KEYCRM_*` variables; names a host uses for statuses, payment
//! methods and warehouses map to KeyCRM ids there. `dry_run = true` plans and logs every write
//! without sending it.
//!
//! ```
//! let config = keycrm_sync::config::SyncConfig::from_toml_str(
//!     r#"
//!     api_key = "test"
//!     dry_run = true
//!     [status_ids]
//!     new = 1
//!     [warehouse_ids]
//!     KYIV = 1
//!     "#,
//! )?;
//! assert!(config.dry_run);
//! # Ok::<_, keycrm_sync::config::ConfigError>(())
//! ```
//!
//! # Webhooks
//!
//! KeyCRM calls a URL with a token in its query. The [`webhook::WebhookReceiver`] (from
//! [`SyncEngine::webhook_receiver`]) checks size, token (constant time) and shape, stores the
//! delivery in the durable inbox and answers at once; the inbox worker
//! ([`SyncEngine::run_inbox_worker`], part of [`SyncEngine::run`]) fetches and applies the
//! record. Any web framework can call it:
//!
//! ```no_run
//! # async fn demo<S: keycrm_sync::store::Store, H: keycrm_sync::host::Host>(
//! #     engine: keycrm_sync::SyncEngine<S, H>, query: &str, body: &[u8]) {
//! use keycrm_sync::webhook::WebhookRequest;
//!
//! let receiver = engine.webhook_receiver();
//! let request = WebhookRequest { query: Some(query), ..WebhookRequest::new(body) };
//! match receiver.receive(request).await {
//!     Ok(_) => { /* answer 200 */ }
//!     Err(rejection) => eprintln!("refused: {rejection}"),
//! }
//! # }
//! ```
//!
//! # The HTTP layer
//!
//! With feature `axum`, `http::router` mounts the webhook route, live events (SSE and
//! WebSocket), status, sync and dead-letter endpoints, Prometheus `/metrics`, health checks
//! and the dashboard; `http::Service` is the same without a framework (the `hyper_host`
//! example). Alerts (dead letters, KeyCRM unreachable, slow processing) are evaluated in the
//! background and published as events, metrics and notifications.
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # async fn demo(engine: keycrm_sync::SyncEngine<keycrm_sync::store::SqliteStore, keycrm_sync::host::MemoryHost>)
//! # -> std::io::Result<()> {
//! use keycrm_sync::http::{HttpOptions, router};
//!
//! let app = axum::Router::new().nest("/sync", router(engine.clone(), HttpOptions::new("admin-token")));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! # Testing with the simulator
//!
//! `keycrm_api::mock::KeyCrmMock` (feature `mock` of `keycrm-api`) is the KeyCRM every test
//! of this crate runs against: seed it, change records "in the CRM" (`crm()`), inject faults
//! (`faults()`), register webhook receivers, and read its request log. The first example
//! above is such a test.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "service")]
pub mod alert;
pub mod canonical;
pub mod config;
pub mod engine;
pub mod entity;
pub mod field;
pub mod host;
#[cfg(feature = "service")]
pub mod http;
#[cfg(feature = "service")]
pub mod metrics;
pub mod model;
pub mod phone;
pub mod plan;
pub mod store;
pub mod webhook;

pub use tokio_util::sync::CancellationToken;

pub use engine::{
    RunPhase, RunReport, SyncEngine, SyncEngineBuilder, SyncError, SyncEvent, SyncStatus,
};
