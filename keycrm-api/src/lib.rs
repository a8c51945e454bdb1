//! Typed client for the [KeyCRM](https://keycrm.app) Open API v1.
//!
//! Every one of the 59 operations of KeyCRM's API is a method on [`Client`]: 58 generated
//! by [progenitor](https://github.com/oxidecomputer/progenitor) from the project's own
//! OpenAPI description (`openapi/keycrm.yaml`), plus the hand-written multipart upload
//! [`Client::storage_upload`]. Methods use the builder style: set path and query
//! parameters and the body, then `send()`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keycrm_api::Error> {
//! let client = keycrm_api::Client::from_env()?;
//! let page = client
//!     .order_list()
//!     .include("buyer,products.offer")
//!     .filter_status_id("1,2")
//!     .limit(50)
//!     .send()
//!     .await?
//!     .into_inner();
//! for order in &page.data {
//!     println!("order {:?}: {:?}", order.id, order.grand_total);
//! }
//! # Ok(()) }
//! ```
//!
//! KeyCRM's own formats are read tolerantly: [`Timestamp`] takes both
//! `YYYY-MM-DD HH:MM:SS` and ISO-8601, [`Decimal`] takes numbers and numeric strings,
//! unknown fields and unknown enum-like values (`payment_status`) are accepted, and every
//! list answers a [`Page`]. Failures are one [`Error`] that never shows the key or bodies.
//!
//! # Building a client
//!
//! [`Client::from_env`] reads `KEYCRM_API_KEY` (and `KEYCRM_BASE_URL`); [`Client::builder`]
//! sets everything by hand. The client paces itself to the account's quota (60 requests per
//! minute per key unless told otherwise) and retries what is safe to retry (429 after its
//! `Retry-After`, 5xx and transport errors on idempotent calls) with backoff.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn demo() -> keycrm_api::Result<()> {
//! let client = keycrm_api::Client::builder()
//!     .api_key("your-key")
//!     .requests_per_minute(60)
//!     .max_retries(4)
//!     .timeout(Duration::from_secs(20))
//!     .application("my-warehouse/1.0")
//!     .build()?;
//! println!("{} requests so far", client.stats().requests);
//! # Ok(()) }
//! ```
//!
//! # Pagination
//!
//! Every list request is also a [`Paginate`] stream: `.pages()` yields whole [`Page`]s,
//! `.items()` the records one by one, fetching the next page as needed and stopping at the
//! last one (or failing with [`Error::PageNotAdvancing`] rather than looping).
//!
//! ```no_run
//! use futures_util::TryStreamExt;
//! use keycrm_api::Paginate;
//!
//! # async fn demo(client: keycrm_api::Client) -> keycrm_api::Result<()> {
//! let mut buyers = std::pin::pin!(client.buyer_list().limit(50).items());
//! while let Some(buyer) = buyers.try_next().await? {
//!     println!("{:?}", buyer.id);
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! One [`Error`] type, by what went wrong rather than by endpoint: [`Error::Validation`]
//! carries KeyCRM's per-field messages (`orders.0.source_id`), [`Error::RateLimited`] and
//! [`Error::Server`] come after the retries gave up, [`Error::is_retryable`] tells whether a
//! later attempt may succeed. Messages name the operation and status, never the API key or a
//! request or response body.
//!
//! ```no_run
//! # async fn demo(client: keycrm_api::Client) {
//! match client.order_get().order_id(42).send().await {
//!     Ok(order) => println!("{:?}", order.into_inner().status_id),
//!     Err(keycrm_api::Error::NotFound { .. }) => println!("no order 42"),
//!     Err(keycrm_api::Error::Validation { errors, .. }) => println!("refused: {errors:?}"),
//!     Err(e) if e.is_retryable() => println!("try again later: {e}"),
//!     Err(e) => println!("failed: {e}"),
//! }
//! # }
//! ```
//!
//! # Testing with the simulator
//!
//! With the `mock` feature, `mock::KeyCrmMock` is a stateful KeyCRM on loopback: the same
//! routes, validation, quota and webhooks, seeded with deterministic Ukrainian test data, with
//! fault injection (429 bursts, 5xx, lost responses, latency) and a request log.
//! `mock::reference` lists its fixed reference ids (statuses, payment methods, sources,
//! warehouses). The `keycrm` facade's docs show a test written against it; the `keycrm-mock`
//! binary serves it to tests in other languages.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[allow(
    missing_docs,
    unused_imports,
    unreachable_patterns,
    clippy::all,
    clippy::pedantic,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags
)]
#[rustfmt::skip]
mod generated;

pub mod clock;
mod embedded;
mod error;
pub mod filter;
mod idempotent;
mod limiter;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod page;
mod paginate;
pub mod quota;
mod raw;
mod respond;
mod runtime;
mod scalars;
mod upload;

pub use generated::{ByteStream, ClientInfo};
pub use generated::{Client, ResponseValue, builder, types};

pub use embedded::PaymentMethodRef;
pub use error::{Error, ErrorMeta, Result};
pub use limiter::{ClientStats, PacingMode, QuotaModel, RateLimitBudget, WaitPhase};
pub use page::Page;
pub use paginate::{DEFAULT_STREAM_LIMIT, ListRequest, Paginate};
pub use quota::{InProcessQuota, SharedQuota};
pub use respond::decode;
pub use runtime::{
    ApiKey, CORRELATION_HEADER, ClientBuilder, DEFAULT_BASE_URL, DEFAULT_MAX_ERROR_BODY_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, ENV_API_KEY, ENV_BASE_URL, RequestObserver, RequestRecord, Runtime,
};
pub use scalars::{Date, Decimal, ParseError, Timestamp};
pub use upload::MAX_UPLOAD_BYTES;
