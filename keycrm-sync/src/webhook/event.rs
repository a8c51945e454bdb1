//! KeyCRM's webhook bodies as types, parsed from raw bytes with limits and validation.

use std::fmt;

use keycrm_api::{Decimal, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The event name of an order status change (order automation trigger).
pub const ORDER_STATUS_EVENT: &str = "order.change_order_status";
/// The event name of an order payment status change (order automation trigger).
pub const ORDER_PAYMENT_STATUS_EVENT: &str = "order.change_payment_status";
/// The event name of a pipeline card (lead) status change (pipeline automation trigger).
pub const LEAD_STATUS_EVENT: &str = "lead.change_lead_status";
/// The name the engine files a stock-balance delivery under (KeyCRM's body has none).
pub const STOCK_EVENT: &str = "stock";

/// Default largest body accepted: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// Default deepest nesting of arrays and objects accepted. KeyCRM's bodies are at most three
/// levels deep (`{"context": {...}}`, `[{...}]`).
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Limits applied before and while a body is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest body in bytes (default [`DEFAULT_MAX_BYTES`]).
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects (default [`DEFAULT_MAX_DEPTH`]).
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a body is not a KeyCRM webhook. Messages name the JSON path and the kind of problem,
/// never a value from the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The body is empty.
    #[error("the webhook body is empty")]
    Empty,
    /// The body is larger than the limit.
    #[error("the webhook body has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The body's size (or its announced `Content-Length`).
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Arrays and objects are nested deeper than the limit.
    #[error("the webhook body nests deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The body is not JSON (or is cut short).
    #[error("the webhook body is not JSON ({problem} at line {line}, column {column})")]
    Syntax {
        /// The kind of problem (`syntax`, `truncated`).
        problem: &'static str,
        /// Line of the problem (1-based).
        line: usize,
        /// Column of the problem (1-based).
        column: usize,
    },
    /// The JSON is not a webhook KeyCRM sends, or a field has the wrong type.
    #[error("invalid webhook at `{path}`: {problem}")]
    Invalid {
        /// The JSON path (`context.id`, `[2].in_stock`, `$` for the whole body).
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl WebhookError {
    fn invalid(path: impl Into<String>, problem: &'static str) -> Self {
        Self::Invalid {
            path: path.into(),
            problem,
        }
    }
}

/// The context of an order trigger: KeyCRM's raw order record (no relations; fetch the order
/// for those). The fields the engine reads are typed; every other field is kept in
/// [`OrderContext::extra`]. `Debug` shows ids, statuses and times only (the record carries
/// comments and other customer data).
#[derive(Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OrderContext {
    /// KeyCRM order id.
    pub id: i64,
    /// The order's number in the host (`source_uuid`), numbers read as text.
    pub source_uuid: Option<String>,
    /// Order source id.
    pub source_id: Option<i64>,
    /// Status id.
    pub status_id: Option<i64>,
    /// Status group id.
    pub status_group_id: Option<i64>,
    /// Payment status (`not_paid`, `paid`, `part_paid`, `refund`, ...).
    pub payment_status: Option<String>,
    /// Order total.
    pub grand_total: Option<Decimal>,
    /// Sum of payments.
    pub payments_total: Option<Decimal>,
    /// When the status last changed.
    pub status_changed_at: Option<Timestamp>,
    /// When the order was created.
    pub created_at: Option<Timestamp>,
    /// When the order last changed.
    pub updated_at: Option<Timestamp>,
    /// Every other field, as delivered.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for OrderContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderContext")
            .field("id", &self.id)
            .field("status_id", &self.status_id)
            .field("payment_status", &self.payment_status)
            .field("status_changed_at", &self.status_changed_at)
            .field("updated_at", &self.updated_at)
            .field("extra", &format_args!("<{} more fields>", self.extra.len()))
            .finish_non_exhaustive()
    }
}

/// The context of a pipeline card trigger: KeyCRM's raw card record (no contact; fetch the
/// card for it). `Debug` shows ids, status and times only.
#[derive(Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LeadContext {
    /// KeyCRM card id.
    pub id: i64,
    /// Pipeline id.
    pub pipeline_id: Option<i64>,
    /// Status id in the pipeline.
    pub status_id: Option<i64>,
    /// Contact id.
    pub contact_id: Option<i64>,
    /// When the status last changed.
    pub status_changed_at: Option<Timestamp>,
    /// When the card last changed.
    pub updated_at: Option<Timestamp>,
    /// Every other field, as delivered.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for LeadContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeadContext")
            .field("id", &self.id)
            .field("pipeline_id", &self.pipeline_id)
            .field("status_id", &self.status_id)
            .field("status_changed_at", &self.status_changed_at)
            .field("updated_at", &self.updated_at)
            .field("extra", &format_args!("<{} more fields>", self.extra.len()))
            .finish_non_exhaustive()
    }
}

/// One row of a stock-balance webhook: an offer's totals over the warehouses the webhook was
/// set up for. Available = `in_stock - in_reserve`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StockRow {
    /// KeyCRM offer (variant) id.
    pub offer_id: Option<i64>,
    /// The offer's SKU (`None` when missing or empty).
    pub sku: Option<String>,
    /// Total in stock.
    pub in_stock: Decimal,
    /// Reserved part of it.
    pub in_reserve: Option<Decimal>,
    /// Every other field, as delivered.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A webhook KeyCRM sends.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// `order.change_order_status`.
    OrderStatusChanged(OrderContext),
    /// `order.change_payment_status`.
    OrderPaymentStatusChanged(OrderContext),
    /// `lead.change_lead_status`.
    LeadStatusChanged(LeadContext),
    /// A stock-balance delivery (a bare array of rows).
    StockChanged(Vec<StockRow>),
    /// A trigger event this crate does not know, kept whole.
    Unknown {
        /// The event name.
        event: String,
        /// The whole body.
        body: Value,
    },
}

impl fmt::Debug for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OrderStatusChanged(c) => f.debug_tuple("OrderStatusChanged").field(c).finish(),
            Self::OrderPaymentStatusChanged(c) => {
                f.debug_tuple("OrderPaymentStatusChanged").field(c).finish()
            }
            Self::LeadStatusChanged(c) => f.debug_tuple("LeadStatusChanged").field(c).finish(),
            Self::StockChanged(rows) => f.debug_tuple("StockChanged").field(rows).finish(),
            Self::Unknown { event, .. } => f
                .debug_struct("Unknown")
                .field("event", event)
                .finish_non_exhaustive(),
        }
    }
}

/// How an event is deduplicated (see [`WebhookEvent::dedupe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupeKey {
    /// The key.
    pub key: String,
    /// `Some(stream)` for absolute values that may come back (stock levels): only a redelivery
    /// of the latest delivery of the stream within the retry window is a duplicate. `None`:
    /// the key names one change; any later delivery with it is a duplicate.
    pub stream: Option<String>,
}

impl WebhookEvent {
    /// Parses a raw body with the default [`ParseLimits`].
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::parse_with(body, ParseLimits::default())
    }

    /// Parses a raw body: size limit, nesting limit, JSON, then shape and validation.
    pub fn parse_with(body: &[u8], limits: ParseLimits) -> Result<Self, WebhookError> {
        if body.len() > limits.max_bytes {
            return Err(WebhookError::TooLarge {
                size: body.len() as u64,
                limit: limits.max_bytes,
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(WebhookError::Empty);
        }
        check_depth(body, limits.max_depth)?;
        let value: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Syntax {
            problem: if e.is_eof() { "truncated" } else { "syntax" },
            line: e.line(),
            column: e.column(),
        })?;
        Self::from_value(value)
    }

    /// Reads an already parsed body (no size or depth limit: apply them to untrusted input
    /// with [`WebhookEvent::parse_with`]).
    pub fn from_value(body: Value) -> Result<Self, WebhookError> {
        match body {
            Value::Array(rows) => {
                if rows.is_empty() {
                    return Err(WebhookError::invalid("$", "a stock delivery without rows"));
                }
                rows.into_iter()
                    .enumerate()
                    .map(|(i, row)| stock_row(i, row))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Self::StockChanged)
            }
            Value::Object(mut object) => {
                let event = match object.get("event") {
                    Some(Value::String(e)) if !e.trim().is_empty() => e.clone(),
                    Some(_) => {
                        return Err(WebhookError::invalid("event", "expected an event name"));
                    }
                    None => {
                        return Err(WebhookError::invalid(
                            "$",
                            "an object without `event` (neither a trigger event nor a stock delivery)",
                        ));
                    }
                };
                match event.as_str() {
                    ORDER_STATUS_EVENT | ORDER_PAYMENT_STATUS_EVENT | LEAD_STATUS_EVENT => {}
                    _ => {
                        return Ok(Self::Unknown {
                            event,
                            body: Value::Object(object),
                        });
                    }
                }
                let context = match object.remove("context") {
                    Some(Value::Object(c)) => c,
                    Some(_) => return Err(WebhookError::invalid("context", "expected an object")),
                    None => return Err(WebhookError::invalid("context", "missing")),
                };
                let mut r = Reader::new("context", context);
                Ok(match event.as_str() {
                    LEAD_STATUS_EVENT => Self::LeadStatusChanged(LeadContext {
                        id: r.id()?,
                        pipeline_id: r.int("pipeline_id")?,
                        status_id: r.int("status_id")?,
                        contact_id: r.int("contact_id")?,
                        status_changed_at: r.timestamp("status_changed_at")?,
                        updated_at: r.timestamp("updated_at")?,
                        extra: r.rest(),
                    }),
                    _ => {
                        let context = OrderContext {
                            id: r.id()?,
                            source_uuid: r.text("source_uuid")?,
                            source_id: r.int("source_id")?,
                            status_id: r.int("status_id")?,
                            status_group_id: r.int("status_group_id")?,
                            payment_status: r.text("payment_status")?,
                            grand_total: r.decimal("grand_total")?,
                            payments_total: r.decimal("payments_total")?,
                            status_changed_at: r.timestamp("status_changed_at")?,
                            created_at: r.timestamp("created_at")?,
                            updated_at: r.timestamp("updated_at")?,
                            extra: r.rest(),
                        };
                        if event == ORDER_STATUS_EVENT {
                            Self::OrderStatusChanged(context)
                        } else {
                            Self::OrderPaymentStatusChanged(context)
                        }
                    }
                })
            }
            _ => Err(WebhookError::invalid(
                "$",
                "expected an object (trigger event) or an array (stock delivery)",
            )),
        }
    }

    /// The event name (KeyCRM's, or [`STOCK_EVENT`] for stock deliveries).
    pub fn name(&self) -> &str {
        match self {
            Self::OrderStatusChanged(_) => ORDER_STATUS_EVENT,
            Self::OrderPaymentStatusChanged(_) => ORDER_PAYMENT_STATUS_EVENT,
            Self::LeadStatusChanged(_) => LEAD_STATUS_EVENT,
            Self::StockChanged(_) => STOCK_EVENT,
            Self::Unknown { event, .. } => event,
        }
    }

    /// The body in KeyCRM's form (`{"event", "context"}` or the array of rows).
    pub fn to_json(&self) -> Value {
        let trigger =
            |context: Value| serde_json::json!({"event": self.name(), "context": context});
        match self {
            Self::OrderStatusChanged(c) | Self::OrderPaymentStatusChanged(c) => {
                trigger(serde_json::to_value(c).unwrap_or_default())
            }
            Self::LeadStatusChanged(c) => trigger(serde_json::to_value(c).unwrap_or_default()),
            Self::StockChanged(rows) => serde_json::to_value(rows).unwrap_or_default(),
            Self::Unknown { body, .. } => body.clone(),
        }
    }

    /// The deduplication key (KeyCRM sends no event id and retries deliveries):
    ///
    /// - order and lead events: event, id, status, payment status and change times; when the
    ///   context has neither change time, a hash of the context is added, so that two
    ///   different deliveries never share a key;
    /// - stock deliveries: a stream per set of offers and a hash of the normalised rows; a
    ///   level that comes back (118 → 117 → 118) is a new delivery, only a redelivery of the
    ///   stream's latest body is a duplicate;
    /// - unknown events: the name and a hash of the body.
    pub fn dedupe(&self) -> DedupeKey {
        match self {
            Self::OrderStatusChanged(c) | Self::OrderPaymentStatusChanged(c) => {
                let mut key = format!(
                    "{}:{}:{}:{}:{}:{}",
                    self.name(),
                    c.id,
                    opt(&c.status_id),
                    opt(&c.payment_status),
                    opt(&c
                        .status_changed_at
                        .map(|t| t.as_datetime().timestamp_micros())),
                    opt(&c.updated_at.map(|t| t.as_datetime().timestamp_micros())),
                );
                if c.status_changed_at.is_none() && c.updated_at.is_none() {
                    key.push(':');
                    key.push_str(&hash_json(&serde_json::to_value(c).unwrap_or_default()));
                }
                DedupeKey { key, stream: None }
            }
            Self::LeadStatusChanged(c) => {
                let mut key = format!(
                    "{}:{}:{}:{}:{}",
                    self.name(),
                    c.id,
                    opt(&c.status_id),
                    opt(&c
                        .status_changed_at
                        .map(|t| t.as_datetime().timestamp_micros())),
                    opt(&c.updated_at.map(|t| t.as_datetime().timestamp_micros())),
                );
                if c.status_changed_at.is_none() && c.updated_at.is_none() {
                    key.push(':');
                    key.push_str(&hash_json(&serde_json::to_value(c).unwrap_or_default()));
                }
                DedupeKey { key, stream: None }
            }
            Self::StockChanged(rows) => {
                let mut offers: Vec<(Option<i64>, Option<&str>)> = rows
                    .iter()
                    .map(|r| (r.offer_id, r.sku.as_deref()))
                    .collect();
                offers.sort_unstable();
                offers.dedup();
                let mut levels: Vec<(Option<i64>, Option<&str>, String, String)> = rows
                    .iter()
                    .map(|r| {
                        (
                            r.offer_id,
                            r.sku.as_deref(),
                            r.in_stock.value().normalize().to_string(),
                            r.in_reserve
                                .map(|d| d.value().normalize().to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                levels.sort_unstable();
                let stream = format!(
                    "stock:{}:",
                    hash_json(&serde_json::to_value(&offers).unwrap_or_default())
                );
                let key = format!(
                    "{stream}{}",
                    hash_json(&serde_json::to_value(&levels).unwrap_or_default())
                );
                DedupeKey {
                    key,
                    stream: Some(stream),
                }
            }
            Self::Unknown { event, body } => DedupeKey {
                key: format!("{event}:{}", hash_json(body)),
                stream: None,
            },
        }
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// A short, stable hash of a JSON value (SHA-256, hex, first 32 characters).
fn hash_json(v: &Value) -> String {
    let digest = Sha256::digest(v.to_string().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn stock_row(index: usize, row: Value) -> Result<StockRow, WebhookError> {
    let path = format!("[{index}]");
    let Value::Object(object) = row else {
        return Err(WebhookError::invalid(path, "expected an object"));
    };
    let mut r = Reader::new(&path, object);
    let offer_id = r.int("offer_id")?;
    let sku = r.text("sku")?.filter(|s| !s.trim().is_empty());
    if offer_id.is_none() && sku.is_none() {
        return Err(WebhookError::invalid(
            path,
            "a stock row needs an `offer_id` or a non-empty `sku`",
        ));
    }
    let Some(in_stock) = r.decimal("in_stock")? else {
        return Err(WebhookError::invalid(format!("{path}.in_stock"), "missing"));
    };
    let in_reserve = r.decimal("in_reserve")?;
    Ok(StockRow {
        offer_id,
        sku,
        in_stock,
        in_reserve,
        extra: r.rest(),
    })
}

/// Takes typed fields out of an object, leaving the rest; errors name the path.
struct Reader {
    prefix: String,
    object: Map<String, Value>,
}

impl Reader {
    fn new(prefix: &str, object: Map<String, Value>) -> Self {
        Self {
            prefix: prefix.to_string(),
            object,
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// The field, `None` when absent or null.
    fn take(&mut self, key: &str) -> Option<Value> {
        match self.object.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn id(&mut self) -> Result<i64, WebhookError> {
        self.int("id")?
            .ok_or_else(|| WebhookError::invalid(self.path("id"), "missing"))
    }

    /// An integer, or a string of one.
    fn int(&mut self, key: &str) -> Result<Option<i64>, WebhookError> {
        let value = self.take(key);
        let bad = || WebhookError::invalid(self.path(key), "expected an integer");
        match value {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// Text, or a number read as text.
    fn text(&mut self, key: &str) -> Result<Option<String>, WebhookError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(WebhookError::invalid(self.path(key), "expected text")),
        }
    }

    /// A number or a numeric string.
    fn decimal(&mut self, key: &str) -> Result<Option<Decimal>, WebhookError> {
        let value = self.take(key);
        let bad = || WebhookError::invalid(self.path(key), "expected a number");
        match value {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(v @ (Value::Number(_) | Value::String(_))) => {
                serde_json::from_value(v).map(Some).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
        }
    }

    /// `YYYY-MM-DD HH:MM:SS` or ISO-8601.
    fn timestamp(&mut self, key: &str) -> Result<Option<Timestamp>, WebhookError> {
        let value = self.take(key);
        let bad = || WebhookError::invalid(self.path(key), "expected a timestamp");
        match value {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    fn rest(self) -> Map<String, Value> {
        self.object
    }
}

/// Refuses nesting deeper than `limit` before the JSON parser (whose recursion would
/// otherwise decide) sees the body. Brackets inside strings do not count.
fn check_depth(body: &[u8], limit: usize) -> Result<(), WebhookError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(WebhookError::TooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
