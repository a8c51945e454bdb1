//! # keycrm
//!
//! The Rust SDK for [KeyCRM](https://keycrm.app): a typed client for the whole Open API v1
//! (all 59 operations), with KeyCRM's own formats read tolerantly and errors that never leak
//! the API key or customer data.
//!
//! This facade re-exports the client crate as [`api`] and the two-way sync engine crate as
//! [`sync`] (the engine, its store, webhooks and, with the `axum` feature, the HTTP layer).
//!
//! ```no_run
//! # async fn demo() -> Result<(), keycrm::Error> {
//! let client = keycrm::Client::from_env()?;
//! let statuses = client.order_status_list().limit(50).send().await?.into_inner();
//! for status in statuses.data {
//!     println!("{:?} {:?}", status.id, status.name);
//! }
//! # Ok(()) }
//! ```

pub use keycrm_api as api;
pub use keycrm_api::{Client, ClientBuilder, Error, Page, Result};
pub use keycrm_sync as sync;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
