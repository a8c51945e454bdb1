//! Two-way sync between a host system (a warehouse, a shop) and KeyCRM.
//!
//! This crate is being built up: today it holds the engine's vocabulary ([`model`]), the pure
//! conflict planner ([`plan`]) and the durable store ([`store`]).

pub mod canonical;
pub mod config;
pub mod engine;
pub mod host;
pub mod model;
pub mod plan;
pub mod store;

pub use engine::{RunReport, SyncEngine, SyncEngineBuilder, SyncError, SyncEvent, SyncStatus};
