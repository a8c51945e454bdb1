//! Two-way sync between a host system (a warehouse, a shop) and KeyCRM.
//!
//! - [`engine`]: the [`SyncEngine`] and its flows (collect, reconcile, apply, push);
//! - [`host`]: the seam a host implements, and [`host::MemoryHost`];
//! - [`canonical`]: a plain host model and its mapping to and from KeyCRM;
//! - [`plan`]: the pure three-way conflict planner;
//! - [`store`]: the durable state (SQLite or memory);
//! - [`config`]: what an operator configures;
//! - [`model`]: the shared vocabulary;
//! - [`phone`]: phone numbers in E.164, as buyers are matched and stored;
//! - [`webhook`]: typed KeyCRM webhook events and the framework-agnostic receiver;
//! - `http`, `alert`, `metrics` (feature `service`; the axum router with feature `axum`):
//!   the service layer a host mounts.

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
