//! KeyCRM webhooks: typed events and a framework-agnostic receiver.
//!
//! KeyCRM sends two kinds of deliveries (it signs none of them, and only the URL is ours):
//!
//! - automation triggers, `{"event": "<name>", "context": {...}}`, for order status and
//!   payment status changes and pipeline card (lead) status changes; the context is the
//!   record's flat database row;
//! - stock balances, a bare JSON array of `{offer_id, sku, in_stock, in_reserve}` rows.
//!
//! [`WebhookEvent`] types both, tolerantly (numbers as strings, both timestamp formats,
//! unknown fields kept) and strictly where it matters (a trigger needs an object context with
//! an integer `id`; a stock row an offer id or a non-empty SKU and numeric quantities); it is
//! parsed from raw bytes under a size and a nesting limit, with errors that name the JSON path
//! and never quote a value. A host may use these types without the engine.
//!
//! [`WebhookReceiver`] is the intake: the query string, `Content-Type`, an optional signature
//! header and the raw body in; [`Accepted`] (200) or a [`Rejection`] with its HTTP status out:
//!
//! | answer | when |
//! |---|---|
//! | 401 | missing or wrong `?token=` (compared in constant time); no token configured and no explicit opt-in; a configured HMAC-SHA256 header missing or wrong |
//! | 413 | above the size limit (check `Content-Length` first with [`WebhookReceiver::check_length`]) |
//! | 415 | a `Content-Type` that is not JSON |
//! | 400 | empty, not JSON, truncated, too deep, or not a body KeyCRM sends |
//! | 503 | the store could not commit (KeyCRM retries) |
//! | 200 | committed to the durable inbox, or a duplicate of a stored delivery |
//!
//! A rejected delivery stores nothing. An accepted one is durable before the answer: the
//! receiver commits deliveries in groups (one `fsync` for all that arrived meanwhile) and never
//! waits for a sync pass, the engine's run lock or a KeyCRM request. The engine's inbox worker
//! applies stored deliveries apart from the request.

mod event;
mod receiver;

pub use event::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, DedupeKey, LEAD_STATUS_EVENT, LeadContext,
    ORDER_PAYMENT_STATUS_EVENT, ORDER_STATUS_EVENT, OrderContext, ParseLimits, STOCK_EVENT,
    StockRow, WebhookError, WebhookEvent,
};
pub(crate) use receiver::inbox_item;
pub use receiver::{
    Accepted, CommitFuture, DEFAULT_REDELIVERY_WINDOW, MAX_GROUP, ReceiverSettings, ReceiverStats,
    Rejection, SignatureCheck, WebhookReceiver, WebhookRequest, sign,
};
