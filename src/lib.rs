//! # keycrm
//!
//! The Rust SDK for [KeyCRM](https://keycrm.app): a typed client for the whole Open API v1
//! (all 59 operations), with KeyCRM's own formats read tolerantly and errors that never leak
//! the API key or customer data; and an embeddable two-way sync engine that keeps a host
//! system (a warehouse, a shop) and KeyCRM in agreement.
//!
//! This facade re-exports the client crate as [`api`] and the sync engine crate as [`sync`]
//! (the engine, its store, webhooks and, with the `axum` feature, the HTTP layer). Each has
//! its own guide: [`api`] (client, pagination, errors, quota and retries) and [`sync`] (the
//! engine and a host, configuration, webhooks, the HTTP layer).
//!
//! | feature | what it adds |
//! |---|---|
//! | `rustls` (default), `native-tls` | the TLS stack |
//! | `mock` | `api::mock`: the KeyCRM simulator, for tests and demos |
//! | `service` | the sync service layer without a web framework (`sync::http::Service`, alerts, metrics) |
//! | `axum` | the axum router over it (`sync::http::router`) |
//!
//! The sync store is SQLite (embedded, always built) or memory; there is no store feature yet.
//!
//! # The client
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
//!
//! # Testing with the simulator
//!
//! `api::mock::KeyCrmMock` (feature `mock`) is a stateful KeyCRM on loopback: seeded data,
//! the same validation and quota, webhooks, faults on demand. Point a client at it and assert
//! on what it holds:
//!
//! ```
//! use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig};
//! use keycrm::api::Paginate;
//! use futures::TryStreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), keycrm::Error> {
//! let mock = KeyCrmMock::builder()
//!     .quota(Quota::unlimited())
//!     .seed(SeedConfig { orders: 30, ..SeedConfig::default() })
//!     .start()
//!     .await;
//! let client = mock.client();
//! let orders: Vec<_> = client.order_list().limit(10).items().try_collect().await?;
//! assert_eq!(orders.len(), 30);
//! mock.faults().fail_next(2, 503); // retried by the client
//! let first = client.order_get().order_id(orders[0].id.unwrap()).send().await?;
//! assert_eq!(first.into_inner().id, orders[0].id);
//! # Ok(()) }
//! ```
//!
//! The README's main command, `cargo run --example warehouse`, runs a whole warehouse system
//! against the simulator: seeding, first sync, activity on both sides, a checksum report.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use keycrm_api as api;
pub use keycrm_api::{Client, ClientBuilder, Error, Page, Result};
pub use keycrm_sync as sync;

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
