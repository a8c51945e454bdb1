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
pub use limiter::{ClientStats, PacingMode, RateLimitBudget, WaitPhase};
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
