//! The ready-made canonical model: plain host records for orders, buyers, products, offers and
//! stock, their mapping to and from KeyCRM, and the flat [`Fields`] the planner compares.
//!
//! A host whose records fit these structs writes almost no mapping code: it converts its own
//! rows into [`CanonicalOrder`], [`CanonicalBuyer`], ... and lets this module do the rest. A host
//! with richer records can still use the pieces (normalisers, body builders) or write its own.
//!
//! # One vocabulary for both sides
//!
//! Both sides are flattened into the same [`Fields`], named in KeyCRM's terms, so the pure
//! planner ([`crate::plan`]) can compare them key by key and an unchanged record hashes equal
//! on both sides ([`crate::model::content_hash`]):
//!
//! | kind | keys |
//! |---|---|
//! | order | `source_uuid`, `status_id`, `buyer.full_name`, `buyer.phone`, `buyer.email`, `lines.<sku>.quantity`, `lines.<sku>.price`, `lines.<sku>.name`, `payments.<key>.amount`, `payments.<key>.status`, `payments.<key>.payment_method_id`, `payments.<key>.description`, `shipping.tracking_code`, `shipping.delivery_service_id`, `shipping.city`, `shipping.address`, `shipping.recipient_full_name`, `shipping.recipient_phone`, `manager_comment`, `ordered_at` |
//! | buyer | `full_name`, `phone.<n>`, `email.<n>`, `note` |
//! | product | `sku`, `name`, `description`, `price`, `category_id` |
//! | offer | `sku`, `price`, `purchased_price` |
//! | stock | `quantity` |
//!
//! Values are normalised so that equal data compares equal whatever its wire form:
//!
//! * decimals are JSON strings of the normalised number ([`decimal_text`]): `"2.50"`, `2.5` and
//!   `"2.5"` all become `"2.5"`, `100.00` becomes `"100"`;
//! * phones are digits with a leading `+` ([`normalize_phone`]); e-mails are trimmed and lower
//!   case; text is trimmed;
//! * ids are JSON numbers; times are `"YYYY-MM-DD HH:MM:SS"` (UTC, whole seconds);
//! * an empty or missing value is no key at all (the planner treats absent and `null` alike).
//!
//! Order lines are keyed by SKU (a line without one by its name); two lines with the same SKU
//! are one line whose quantity is their sum. Payments are keyed by their reference (KeyCRM's
//! payment `description`) when it is present, unique and not all digits, otherwise by their
//! 0-based position in the order's payment list; the reference itself is also kept as
//! `payments.<key>.description`. A key may contain dots: the field name is always the part
//! after the last dot.
//!
//! # Configuration
//!
//! Host names that KeyCRM knows by id (order statuses, payment methods, warehouses, the order
//! source) are translated by [`Mappings`], built from [`SyncConfig`]. An unmapped value is a
//! [`MappingError`] that names it and the setting to add it to.
//!
//! # What KeyCRM cannot change
//!
//! An order update (`PUT /order/{id}`) changes the status, the comments, shipping and existing
//! lines, nothing else: it cannot add or remove lines, change the buyer, the external number
//! or the order date, replace a tracking code or alter a recorded payment's amount or method.
//! [`split_order_changes`] sorts a planned change into what [`order_update_body`],
//! [`payment_create_bodies`] and [`payment_update_bodies`] can carry and what must be reported.
//! Order creation takes no status either: create, then send `status_id` in an update.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

use keycrm_api::types;
use keycrm_api::{Decimal, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SyncConfig;
use crate::model::{EntityKind, Fields, Snapshot};

/// The most stock rows KeyCRM takes in one `PUT /offers/stocks`.
pub const MAX_STOCK_ROWS: usize = 10_000;
/// The most offer rows KeyCRM takes in one `PUT /offers`.
pub const MAX_OFFER_ROWS: usize = 10_000;
/// The most products KeyCRM takes in one `POST /products/import`.
pub const MAX_PRODUCT_IMPORT: usize = 100;
/// The order field that holds the KeyCRM status id (for [`crate::plan::Policy`]'s status rule).
pub const ORDER_STATUS_FIELD: &str = "status_id";

// ------------------------------------------------------------------------------------------
// Canonical host records

/// An order as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalOrder {
    /// The host's id of the order.
    pub local_id: String,
    /// The host's order number, sent to KeyCRM as `source_uuid` (the idempotency key of
    /// order creation). `None` for an order that started in KeyCRM without one.
    pub number: Option<String>,
    /// The host's status name, mapped to a KeyCRM status id by [`Mappings`]. `None` leaves
    /// the status to KeyCRM (a new order gets the account's first status).
    pub status: Option<String>,
    /// Who ordered.
    pub buyer: CanonicalContact,
    /// The goods ordered.
    pub lines: Vec<CanonicalLine>,
    /// Payments recorded on the order.
    pub payments: Vec<CanonicalPayment>,
    /// Delivery data and tracking.
    pub shipping: CanonicalShipping,
    /// Internal comment (KeyCRM's `manager_comment`).
    pub comment: Option<String>,
    /// When the order was placed (UTC).
    pub ordered_at: Option<Timestamp>,
    /// When the host last changed the order (UTC); not a field, it feeds [`Snapshot::updated_at`].
    pub updated_at: Option<Timestamp>,
}

/// The buyer of an order: KeyCRM matches or creates a buyer from these details.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalContact {
    /// Full name.
    pub name: Option<String>,
    /// Phone, in any format (normalised to `+` and digits).
    pub phone: Option<String>,
    /// E-mail address (compared trimmed and in lower case).
    pub email: Option<String>,
}

/// One line of an order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalLine {
    /// The offer's SKU: the line's key, and what links the line to KeyCRM's catalogue.
    pub sku: String,
    /// Item name.
    pub name: String,
    /// How many.
    pub quantity: Decimal,
    /// Unit price.
    pub price: Decimal,
}

/// The state of a payment, as KeyCRM knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Money received (KeyCRM's default for a new payment).
    #[default]
    Paid,
    /// Expected, not received yet.
    NotPaid,
    /// Called off.
    Canceled,
}

impl PaymentStatus {
    /// KeyCRM's name of the status: `paid`, `not_paid` or `canceled`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "paid",
            PaymentStatus::NotPaid => "not_paid",
            PaymentStatus::Canceled => "canceled",
        }
    }

    /// Parses [`PaymentStatus::as_str`] back.
    pub fn parse(s: &str) -> Result<Self, MappingError> {
        match s.trim() {
            "paid" => Ok(PaymentStatus::Paid),
            "not_paid" => Ok(PaymentStatus::NotPaid),
            "canceled" => Ok(PaymentStatus::Canceled),
            other => Err(MappingError::UnknownPaymentStatus(other.to_string())),
        }
    }
}

/// One payment of an order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalPayment {
    /// The host's payment method name, mapped to a KeyCRM payment method id by [`Mappings`].
    pub method: String,
    /// Amount paid.
    pub amount: Decimal,
    /// Whether the money came.
    pub status: PaymentStatus,
    /// The host's reference (transaction or invoice number), sent as the payment's
    /// `description`; it keys the payment so that payments keep their identity when others
    /// are added before them.
    pub reference: Option<String>,
}

/// Delivery data of an order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalShipping {
    /// Carrier tracking number (waybill). KeyCRM refuses to replace one once set.
    pub tracking_code: Option<String>,
    /// KeyCRM delivery service id (see `GET /order/delivery-service`).
    pub carrier_service_id: Option<i64>,
    /// City.
    pub city: Option<String>,
    /// Delivery address or carrier branch (KeyCRM's `shipping_receive_point`).
    pub address: Option<String>,
    /// Recipient's name when it differs from the buyer.
    pub recipient_name: Option<String>,
    /// Recipient's phone when it differs from the buyer.
    pub recipient_phone: Option<String>,
}

/// A customer as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalBuyer {
    /// The host's id of the customer.
    pub local_id: String,
    /// Full name.
    pub name: String,
    /// Phones, in any format (normalised; duplicates dropped).
    pub phones: Vec<String>,
    /// E-mail addresses (trimmed, lower case; duplicates dropped).
    pub emails: Vec<String>,
    /// Free-text note.
    pub note: Option<String>,
    /// When the host last changed the customer (UTC).
    pub updated_at: Option<Timestamp>,
}

/// A catalogue product (without variants) as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalProduct {
    /// The host's id of the product.
    pub local_id: String,
    /// Article number; KeyCRM fills it only for a product without variants.
    pub sku: Option<String>,
    /// Product name (required by KeyCRM).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Price (for a product with variants KeyCRM reports an aggregate here).
    pub price: Option<Decimal>,
    /// KeyCRM category id.
    pub category_id: Option<i64>,
    /// When the host last changed the product (UTC).
    pub updated_at: Option<Timestamp>,
}

/// An offer (sellable variant) as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalOffer {
    /// The host's id of the offer.
    pub local_id: String,
    /// The offer's SKU.
    pub sku: String,
    /// SKU of the product the offer belongs to. Informational: it is not a synced field
    /// (KeyCRM cannot move an offer to another product), so [`offer_from_fields`] leaves it
    /// `None` and the host keeps its own.
    pub product_sku: Option<String>,
    /// Selling price.
    pub price: Option<Decimal>,
    /// Purchase (cost) price.
    pub purchased_price: Option<Decimal>,
    /// When the host last changed the offer (UTC).
    pub updated_at: Option<Timestamp>,
}

/// The stock level of one offer in one warehouse.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalStock {
    /// The offer's SKU.
    pub sku: String,
    /// The host's warehouse code, mapped to a KeyCRM warehouse id by [`Mappings`].
    pub warehouse: String,
    /// The absolute quantity on hand.
    pub quantity: Decimal,
}

impl CanonicalStock {
    /// A stable id for the pair: `<warehouse>/<sku>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.warehouse, self.sku)
    }
}

/// A snapshot of `fields` changed at `updated_at` (a [`Timestamp`] of either side).
pub fn snapshot(fields: Fields, updated_at: Option<Timestamp>) -> Snapshot {
    Snapshot::new(fields, updated_at.map(Timestamp::into_datetime))
}

// ------------------------------------------------------------------------------------------
// Mappings and errors

/// Why a record could not be mapped between the host and KeyCRM.
///
/// `Display` and `Debug` name the field and the kind of problem, never the offending value
/// (a host status, a payment method, a field's content): errors travel into logs, events and
/// the audit log. The value is kept in the variant for a host that wants to show it to an
/// operator on purpose.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// A host status name with no KeyCRM status id.
    #[error("order field `status`: the host status has no KeyCRM status id; add it to status_ids")]
    UnknownStatus(String),
    /// A KeyCRM status id that no host status name maps to.
    #[error("KeyCRM status id {0} has no host status: map a host status to it in status_ids")]
    UnknownStatusId(i64),
    /// A host payment method name with no KeyCRM payment method id.
    #[error(
        "order field `payments.method`: the host payment method has no KeyCRM id; add it to payment_method_ids"
    )]
    UnknownPaymentMethod(String),
    /// A KeyCRM payment method id that no host name maps to.
    #[error(
        "KeyCRM payment method id {0} has no host name: map a host payment method to it in payment_method_ids"
    )]
    UnknownPaymentMethodId(i64),
    /// A host warehouse code with no KeyCRM warehouse id.
    #[error(
        "stock field `warehouse`: the host warehouse has no KeyCRM id; add it to warehouse_ids"
    )]
    UnknownWarehouse(String),
    /// Orders cannot be created without a KeyCRM source.
    #[error("no KeyCRM order source to create orders with: set source_id")]
    MissingSourceId,
    /// A payment status other than `paid`, `not_paid`, `canceled`.
    #[error(
        "order field `payments.status`: unknown payment status; expected paid, not_paid or canceled"
    )]
    UnknownPaymentStatus(String),
    /// An order needs at least one buyer detail.
    #[error("an order needs a buyer: set buyer.full_name, buyer.phone or buyer.email")]
    MissingBuyer,
    /// A field required by the record or the KeyCRM body is absent.
    #[error("{kind} field `{field}` is required")]
    MissingField {
        /// The record's kind.
        kind: EntityKind,
        /// The field's dotted name.
        field: String,
    },
    /// A field holds a value of the wrong shape.
    #[error("{kind} field `{field}` holds {value}: expected {expected}")]
    InvalidField {
        /// The record's kind.
        kind: EntityKind,
        /// The field's dotted name.
        field: String,
        /// What the field holds, by shape only (`a string`, `an object`, `a number out of
        /// range`): never the value itself.
        value: String,
        /// What the field should hold.
        expected: &'static str,
    },
    /// The generated KeyCRM body refused a value.
    #[error("cannot build the KeyCRM {body} body: {reason}")]
    Body {
        /// The body's type name.
        body: &'static str,
        /// The builder's message, with quoted values removed and bounded in length.
        reason: String,
    },
}

impl fmt::Debug for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = "[redacted]";
        match self {
            MappingError::UnknownStatus(_) => {
                f.debug_tuple("UnknownStatus").field(&redacted).finish()
            }
            MappingError::UnknownStatusId(id) => {
                f.debug_tuple("UnknownStatusId").field(id).finish()
            }
            MappingError::UnknownPaymentMethod(_) => f
                .debug_tuple("UnknownPaymentMethod")
                .field(&redacted)
                .finish(),
            MappingError::UnknownPaymentMethodId(id) => {
                f.debug_tuple("UnknownPaymentMethodId").field(id).finish()
            }
            MappingError::UnknownWarehouse(_) => {
                f.debug_tuple("UnknownWarehouse").field(&redacted).finish()
            }
            MappingError::MissingSourceId => f.write_str("MissingSourceId"),
            MappingError::UnknownPaymentStatus(_) => f
                .debug_tuple("UnknownPaymentStatus")
                .field(&redacted)
                .finish(),
            MappingError::MissingBuyer => f.write_str("MissingBuyer"),
            MappingError::MissingField { kind, field } => f
                .debug_struct("MissingField")
                .field("kind", kind)
                .field("field", field)
                .finish(),
            MappingError::InvalidField {
                kind,
                field,
                value,
                expected,
            } => f
                .debug_struct("InvalidField")
                .field("kind", kind)
                .field("field", field)
                .field("value", value)
                .field("expected", expected)
                .finish(),
            MappingError::Body { body, reason } => f
                .debug_struct("Body")
                .field("body", body)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// The shape of a JSON value, for errors that must not show the value itself.
fn shape(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Host names <-> KeyCRM ids, from the operator's configuration.
///
/// When several host names map to the same KeyCRM id, the way back (id -> name) uses the
/// first one registered; [`Mappings::from_config`] registers names in alphabetical order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mappings {
    source_id: Option<i64>,
    status_ids: BTreeMap<String, i64>,
    status_names: BTreeMap<i64, String>,
    payment_method_ids: BTreeMap<String, i64>,
    payment_method_names: BTreeMap<i64, String>,
    warehouse_ids: BTreeMap<String, i64>,
    warehouse_codes: BTreeMap<i64, String>,
}

impl Mappings {
    /// No mappings at all (add them with the `with_*` methods).
    pub fn new() -> Self {
        Self::default()
    }

    /// The mappings an operator configured: `source_id`, `status_ids`, `payment_method_ids`
    /// and `warehouse_ids`.
    pub fn from_config(config: &SyncConfig) -> Self {
        let mut m = Self::new();
        m.source_id = config.source_id;
        for (name, id) in &config.status_ids {
            m = m.with_status(name.clone(), *id);
        }
        for (name, id) in &config.payment_method_ids {
            m = m.with_payment_method(name.clone(), *id);
        }
        for (code, id) in &config.warehouse_ids {
            m = m.with_warehouse(code.clone(), *id);
        }
        m
    }

    /// Sets the KeyCRM order source of orders created by the host.
    pub fn with_source_id(mut self, id: i64) -> Self {
        self.source_id = Some(id);
        self
    }

    /// Maps a host status name to a KeyCRM status id.
    pub fn with_status(mut self, name: impl Into<String>, id: i64) -> Self {
        let name = name.into();
        self.status_names.entry(id).or_insert_with(|| name.clone());
        self.status_ids.insert(name, id);
        self
    }

    /// Maps a host payment method name to a KeyCRM payment method id.
    pub fn with_payment_method(mut self, name: impl Into<String>, id: i64) -> Self {
        let name = name.into();
        self.payment_method_names
            .entry(id)
            .or_insert_with(|| name.clone());
        self.payment_method_ids.insert(name, id);
        self
    }

    /// Maps a host warehouse code to a KeyCRM warehouse id.
    pub fn with_warehouse(mut self, code: impl Into<String>, id: i64) -> Self {
        let code = code.into();
        self.warehouse_codes
            .entry(id)
            .or_insert_with(|| code.clone());
        self.warehouse_ids.insert(code, id);
        self
    }

    /// The KeyCRM order source for new orders.
    pub fn source_id(&self) -> Result<i64, MappingError> {
        self.source_id.ok_or(MappingError::MissingSourceId)
    }

    /// The KeyCRM status id of a host status.
    pub fn status_id(&self, name: &str) -> Result<i64, MappingError> {
        self.status_ids
            .get(name)
            .copied()
            .ok_or_else(|| MappingError::UnknownStatus(name.to_string()))
    }

    /// The host status of a KeyCRM status id.
    pub fn status_name(&self, id: i64) -> Result<&str, MappingError> {
        self.status_names
            .get(&id)
            .map(String::as_str)
            .ok_or(MappingError::UnknownStatusId(id))
    }

    /// The KeyCRM payment method id of a host payment method.
    pub fn payment_method_id(&self, name: &str) -> Result<i64, MappingError> {
        self.payment_method_ids
            .get(name)
            .copied()
            .ok_or_else(|| MappingError::UnknownPaymentMethod(name.to_string()))
    }

    /// The host payment method of a KeyCRM payment method id.
    pub fn payment_method_name(&self, id: i64) -> Result<&str, MappingError> {
        self.payment_method_names
            .get(&id)
            .map(String::as_str)
            .ok_or(MappingError::UnknownPaymentMethodId(id))
    }

    /// The KeyCRM warehouse id of a host warehouse.
    pub fn warehouse_id(&self, code: &str) -> Result<i64, MappingError> {
        self.warehouse_ids
            .get(code)
            .copied()
            .ok_or_else(|| MappingError::UnknownWarehouse(code.to_string()))
    }

    /// The host warehouse code of a KeyCRM warehouse id, if one maps to it.
    pub fn warehouse_code(&self, id: i64) -> Option<&str> {
        self.warehouse_codes.get(&id).map(String::as_str)
    }
}

impl From<&SyncConfig> for Mappings {
    fn from(config: &SyncConfig) -> Self {
        Self::from_config(config)
    }
}

// ------------------------------------------------------------------------------------------
// Normalisation

/// The canonical text of a decimal: normalised, no trailing zeros (`2.50` -> `2.5`,
/// `100.00` -> `100`, `-0` -> `0`).
pub fn decimal_text(value: Decimal) -> String {
    let d = value.value().normalize();
    if d.is_zero() {
        "0".to_string()
    } else {
        d.to_string()
    }
}

/// The canonical field value of a decimal: a JSON string of [`decimal_text`].
pub fn decimal_value(value: Decimal) -> Value {
    Value::String(decimal_text(value))
}

/// A phone as digits with a leading `+` (`+38 (067) 123-45-67` -> `+380671234567`). A
/// leading international `00` is read as `+`; no country code is guessed. `None` when the
/// text holds no digit.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let t = raw.trim();
    let mut digits: String = t.chars().filter(char::is_ascii_digit).collect();
    if !t.starts_with('+') && digits.starts_with("00") {
        digits.drain(..2);
    }
    if digits.is_empty() {
        None
    } else {
        Some(format!("+{digits}"))
    }
}

/// An e-mail address trimmed and in lower case; `None` when blank.
pub fn normalize_email(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_lowercase())
}

fn clean(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|s| !s.is_empty())
}

/// Builds normalised fields.
#[derive(Default)]
struct Out(Fields);

impl Out {
    fn text(&mut self, key: impl Into<String>, value: Option<&str>) {
        if let Some(v) = clean(value) {
            self.0.insert(key.into(), Value::String(v.to_string()));
        }
    }

    fn phone(&mut self, key: impl Into<String>, value: Option<&str>) {
        // requests: E.164 with the home country (Ukraine) for national numbers.
        if let Some(v) = value.and_then(crate::phone::normalize) {
            self.0.insert(key.into(), Value::String(v));
        }
    }

    fn email(&mut self, key: impl Into<String>, value: Option<&str>) {
        if let Some(v) = value.and_then(normalize_email) {
            self.0.insert(key.into(), Value::String(v));
        }
    }

    fn id(&mut self, key: impl Into<String>, value: Option<i64>) {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::from(v));
        }
    }

    fn dec(&mut self, key: impl Into<String>, value: Option<Decimal>) {
        if let Some(v) = value {
            self.0.insert(key.into(), decimal_value(v));
        }
    }

    fn time(&mut self, key: impl Into<String>, value: Option<Timestamp>) {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::String(v.to_string()));
        }
    }

    /// `list.0`, `list.1`, ... for the distinct normalised values.
    fn list(&mut self, key: &str, values: impl IntoIterator<Item = String>) {
        let mut seen = BTreeSet::new();
        for v in values {
            if seen.insert(v.clone()) {
                let n = seen.len() - 1;
                self.0.insert(format!("{key}.{n}"), Value::String(v));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Reading fields

fn invalid(kind: EntityKind, field: &str, value: &Value, expected: &'static str) -> MappingError {
    MappingError::InvalidField {
        kind,
        field: field.to_string(),
        value: shape(value).to_string(),
        expected,
    }
}

fn missing(kind: EntityKind, field: &str) -> MappingError {
    MappingError::MissingField {
        kind,
        field: field.to_string(),
    }
}

fn body_error(body: &'static str) -> impl Fn(types::error::ConversionError) -> MappingError {
    move |e| MappingError::Body {
        body,
        reason: crate::model::redact::message(&e.to_string()),
    }
}

fn as_text(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<String>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(clean(Some(s)).map(str::to_string)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(kind, field, other, "text")),
    }
}

fn as_i64(kind: EntityKind, field: &str, v: Option<&Value>) -> Result<Option<i64>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| invalid(kind, field, &Value::Number(n.clone()), "a whole number")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a whole number")),
        Some(other) => Err(invalid(kind, field, other, "a whole number")),
    }
}

fn as_dec(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<Decimal>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Decimal>()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a decimal")),
        Some(n @ Value::Number(_)) => serde_json::from_value::<Decimal>(n.clone())
            .map(Some)
            .map_err(|_| invalid(kind, field, n, "a decimal")),
        Some(other) => Err(invalid(kind, field, other, "a decimal")),
    }
}

fn as_time(
    kind: EntityKind,
    field: &str,
    v: Option<&Value>,
) -> Result<Option<Timestamp>, MappingError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Timestamp>()
            .map(Some)
            .map_err(|_| invalid(kind, field, &Value::String(s.clone()), "a UTC time")),
        Some(other) => Err(invalid(kind, field, other, "a UTC time")),
    }
}

/// Typed reads of one record's fields, with errors that name the field.
struct Reader<'a> {
    kind: EntityKind,
    fields: &'a Fields,
}

impl<'a> Reader<'a> {
    fn new(kind: EntityKind, fields: &'a Fields) -> Self {
        Self { kind, fields }
    }

    fn text(&self, key: &str) -> Result<Option<String>, MappingError> {
        as_text(self.kind, key, self.fields.get(key))
    }

    fn id(&self, key: &str) -> Result<Option<i64>, MappingError> {
        as_i64(self.kind, key, self.fields.get(key))
    }

    fn dec(&self, key: &str) -> Result<Option<Decimal>, MappingError> {
        as_dec(self.kind, key, self.fields.get(key))
    }

    fn time(&self, key: &str) -> Result<Option<Timestamp>, MappingError> {
        as_time(self.kind, key, self.fields.get(key))
    }

    /// Whether the key is present (even as `null`, which means "removed").
    fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// The values of `key.0`, `key.1`, ... in index order.
    fn list(&self, key: &str) -> Result<Vec<String>, MappingError> {
        let prefix = format!("{key}.");
        let mut items: Vec<(u64, String)> = Vec::new();
        let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
        for (k, v) in self.fields.range::<str, _>(from) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let Ok(n) = rest.parse::<u64>() else { continue };
            if let Some(s) = as_text(self.kind, k, Some(v))? {
                items.push((n, s));
            }
        }
        items.sort();
        Ok(items.into_iter().map(|(_, s)| s).collect())
    }

    /// The groups under `prefix` (`lines`, `payments`): group key -> field -> value, `null`
    /// values left out.
    fn groups(&self, prefix: &str) -> Groups<'a> {
        groups(self.fields, prefix)
    }
}

type Groups<'a> = BTreeMap<&'a str, BTreeMap<&'a str, &'a Value>>;

fn groups<'a>(fields: &'a Fields, prefix: &str) -> Groups<'a> {
    let prefix = format!("{prefix}.");
    let mut out: Groups<'a> = BTreeMap::new();
    let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
    for (k, v) in fields.range::<str, _>(from) {
        let Some(rest) = k.strip_prefix(&prefix) else {
            break;
        };
        let Some((group, field)) = rest.rsplit_once('.') else {
            continue;
        };
        if !v.is_null() {
            out.entry(group).or_default().insert(field, v);
        }
    }
    out
}

/// A group's field, read with the full dotted name in errors.
struct Group<'a> {
    kind: EntityKind,
    prefix: &'a str,
    key: &'a str,
    fields: &'a BTreeMap<&'a str, &'a Value>,
}

impl Group<'_> {
    fn name(&self, field: &str) -> String {
        format!("{}.{}.{field}", self.prefix, self.key)
    }

    fn text(&self, field: &str) -> Result<Option<String>, MappingError> {
        as_text(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    fn id(&self, field: &str) -> Result<Option<i64>, MappingError> {
        as_i64(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    fn dec(&self, field: &str) -> Result<Option<Decimal>, MappingError> {
        as_dec(
            self.kind,
            &self.name(field),
            self.fields.get(field).copied(),
        )
    }

    fn required<T>(&self, field: &str, value: Option<T>) -> Result<T, MappingError> {
        value.ok_or_else(|| missing(self.kind, &self.name(field)))
    }
}

// ------------------------------------------------------------------------------------------
// Orders: flattening

/// An order's synced parts, from either side, before flattening: one code path for both.
#[derive(Default)]
struct FlatOrder<'a> {
    source_uuid: Option<&'a str>,
    status_id: Option<i64>,
    buyer_name: Option<&'a str>,
    buyer_phone: Option<&'a str>,
    buyer_email: Option<&'a str>,
    lines: Vec<FlatLine<'a>>,
    payments: Vec<FlatPayment<'a>>,
    tracking_code: Option<&'a str>,
    delivery_service_id: Option<i64>,
    city: Option<&'a str>,
    address: Option<&'a str>,
    recipient_name: Option<&'a str>,
    recipient_phone: Option<&'a str>,
    manager_comment: Option<&'a str>,
    ordered_at: Option<Timestamp>,
}

struct FlatLine<'a> {
    sku: Option<&'a str>,
    name: Option<&'a str>,
    quantity: Option<Decimal>,
    price: Option<Decimal>,
}

struct FlatPayment<'a> {
    reference: Option<&'a str>,
    amount: Option<Decimal>,
    status: Option<&'a str>,
    method_id: Option<i64>,
}

/// The key of each line: its SKU, else its name, else `#<position>`.
fn line_key(position: usize, sku: Option<&str>, name: Option<&str>) -> String {
    clean(sku)
        .or(clean(name))
        .map_or_else(|| format!("#{position}"), str::to_string)
}

/// The key of each payment: its reference when present, unique and not all digits, else its
/// 0-based position.
fn payment_keys<'a>(references: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut used = BTreeSet::new();
    references
        .into_iter()
        .enumerate()
        .map(|(n, reference)| {
            let key = match clean(reference) {
                Some(r) if !r.bytes().all(|b| b.is_ascii_digit()) && !used.contains(r) => {
                    r.to_string()
                }
                _ => n.to_string(),
            };
            used.insert(key.clone());
            key
        })
        .collect()
}

/// What [`flatten_order`] does when the quantities of lines with one key do not fit a decimal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// Fail with [`MappingError::InvalidField`].
    Fail,
    /// Keep the largest decimal.
    Saturate,
}

fn flatten_order(o: &FlatOrder<'_>, overflow: Overflow) -> Result<Fields, MappingError> {
    let mut out = Out::default();
    out.text("source_uuid", o.source_uuid);
    out.id("status_id", o.status_id);
    out.text("buyer.full_name", o.buyer_name);
    out.phone("buyer.phone", o.buyer_phone);
    out.email("buyer.email", o.buyer_email);

    // Lines with the same key are one line: quantities add up, the first name and price stay.
    let mut lines: BTreeMap<String, FlatLine<'_>> = BTreeMap::new();
    for (n, line) in o.lines.iter().enumerate() {
        let entry = lines
            .entry(line_key(n, line.sku, line.name))
            .or_insert(FlatLine {
                sku: None,
                name: None,
                quantity: None,
                price: None,
            });
        entry.name = entry.name.or(clean(line.name));
        entry.quantity = match (entry.quantity, line.quantity) {
            (Some(a), Some(b)) => Some(match a.value().checked_add(b.value()) {
                Some(sum) => Decimal::new(sum),
                None if overflow == Overflow::Saturate => Decimal::new(rust_decimal::Decimal::MAX),
                None => {
                    return Err(MappingError::InvalidField {
                        kind: EntityKind::Order,
                        field: format!("lines.{}.quantity", line_key(n, line.sku, line.name)),
                        value: "quantities whose sum is out of range".to_string(),
                        expected: "a decimal",
                    });
                }
            }),
            (a, b) => a.or(b),
        };
        entry.price = entry.price.or(line.price);
    }
    for (key, line) in lines {
        out.text(format!("lines.{key}.name"), line.name);
        out.dec(format!("lines.{key}.quantity"), line.quantity);
        out.dec(format!("lines.{key}.price"), line.price);
    }

    let keys = payment_keys(o.payments.iter().map(|p| p.reference));
    for (key, p) in keys.iter().zip(&o.payments) {
        out.dec(format!("payments.{key}.amount"), p.amount);
        out.text(format!("payments.{key}.status"), p.status);
        out.id(format!("payments.{key}.payment_method_id"), p.method_id);
        out.text(format!("payments.{key}.description"), p.reference);
    }

    out.text("shipping.tracking_code", o.tracking_code);
    out.id("shipping.delivery_service_id", o.delivery_service_id);
    out.text("shipping.city", o.city);
    out.text("shipping.address", o.address);
    out.text("shipping.recipient_full_name", o.recipient_name);
    out.phone("shipping.recipient_phone", o.recipient_phone);
    out.text("manager_comment", o.manager_comment);
    out.time("ordered_at", o.ordered_at);
    Ok(out.0)
}

/// The host's order as fields in KeyCRM terms (status and payment methods mapped to ids).
pub fn order_fields_from_local(
    order: &CanonicalOrder,
    mappings: &Mappings,
) -> Result<Fields, MappingError> {
    let status_id = match clean(order.status.as_deref()) {
        Some(name) => Some(mappings.status_id(name)?),
        None => None,
    };
    let payments = order
        .payments
        .iter()
        .map(|p| {
            Ok(FlatPayment {
                reference: p.reference.as_deref(),
                amount: Some(p.amount),
                status: Some(p.status.as_str()),
                method_id: Some(mappings.payment_method_id(&p.method)?),
            })
        })
        .collect::<Result<Vec<_>, MappingError>>()?;
    let flat = FlatOrder {
        source_uuid: order.number.as_deref(),
        status_id,
        buyer_name: order.buyer.name.as_deref(),
        buyer_phone: order.buyer.phone.as_deref(),
        buyer_email: order.buyer.email.as_deref(),
        lines: order
            .lines
            .iter()
            .map(|l| FlatLine {
                sku: Some(&l.sku),
                name: Some(&l.name),
                quantity: Some(l.quantity),
                price: Some(l.price),
            })
            .collect(),
        payments,
        tracking_code: order.shipping.tracking_code.as_deref(),
        delivery_service_id: order.shipping.carrier_service_id,
        city: order.shipping.city.as_deref(),
        address: order.shipping.address.as_deref(),
        recipient_name: order.shipping.recipient_name.as_deref(),
        recipient_phone: order.shipping.recipient_phone.as_deref(),
        manager_comment: order.comment.as_deref(),
        ordered_at: order.ordered_at,
    };
    flatten_order(&flat, Overflow::Fail)
}

fn first_contact(values: Option<&types::BuyerContactValues>) -> Option<&str> {
    match values? {
        types::BuyerContactValues::String(s) => Some(s),
        types::BuyerContactValues::Array(list) => list.iter().find_map(|s| clean(Some(s))),
    }
}

fn all_contacts(values: Option<&types::BuyerContactValues>) -> Vec<&str> {
    match values {
        None => Vec::new(),
        Some(types::BuyerContactValues::String(s)) => vec![s.as_str()],
        Some(types::BuyerContactValues::Array(list)) => list.iter().map(String::as_str).collect(),
    }
}

/// KeyCRM's order as fields. Read it with `include=buyer,products.offer,payments,shipping`:
/// a relation that was not included counts as empty.
pub fn order_fields_from_remote(order: &types::Order) -> Fields {
    // Saturating flattening has no error case.
    remote_order_fields(order, Overflow::Saturate).unwrap_or_default()
}

/// [`order_fields_from_remote`], failing with a [`MappingError`] that names the line when the
/// quantities of lines with one SKU add up beyond a decimal's range (KeyCRM data is not
/// trusted; [`order_fields_from_remote`] keeps the largest decimal instead).
pub fn try_order_fields_from_remote(order: &types::Order) -> Result<Fields, MappingError> {
    remote_order_fields(order, Overflow::Fail)
}

fn remote_order_fields(order: &types::Order, overflow: Overflow) -> Result<Fields, MappingError> {
    let buyer = order.buyer.as_ref();
    let shipping = order.shipping.as_ref();
    let lines = order
        .products
        .iter()
        .flatten()
        .map(|l| FlatLine {
            sku: clean(l.sku.as_deref())
                .or_else(|| l.offer.as_ref().and_then(|o| clean(o.sku.as_deref()))),
            name: l.name.as_deref(),
            quantity: l.quantity,
            price: l.price,
        })
        .collect();
    let payments = order
        .payments
        .iter()
        .flatten()
        .map(|p| FlatPayment {
            reference: p.description.as_deref(),
            amount: p.amount,
            status: p.status.as_deref(),
            method_id: p
                .payment_method_id
                .or_else(|| p.payment_method.as_ref().and_then(|m| m.id)),
        })
        .collect();
    let flat = FlatOrder {
        source_uuid: order.source_uuid.as_deref(),
        status_id: order.status_id,
        buyer_name: buyer.and_then(|b| b.full_name.as_deref()),
        buyer_phone: buyer.and_then(|b| first_contact(b.phone.as_ref())),
        buyer_email: buyer.and_then(|b| first_contact(b.email.as_ref())),
        lines,
        payments,
        tracking_code: shipping.and_then(|s| s.tracking_code.as_deref()),
        delivery_service_id: shipping.and_then(|s| s.delivery_service_id),
        city: shipping.and_then(|s| s.shipping_address_city.as_deref()),
        address: shipping.and_then(|s| s.shipping_receive_point.as_deref()),
        recipient_name: shipping.and_then(|s| s.recipient_full_name.as_deref()),
        recipient_phone: shipping.and_then(|s| s.recipient_phone.as_deref()),
        manager_comment: order.manager_comment.as_deref(),
        ordered_at: order.ordered_at,
    };
    flatten_order(&flat, overflow)
}

// ------------------------------------------------------------------------------------------
// Orders: back to the host and to KeyCRM bodies

/// Payment groups in their original order: position-keyed ones at their position, the
/// reference-keyed ones (in key order) filling the other places.
fn ordered_payments<'a>(
    groups: &'a Groups<'a>,
) -> Vec<(&'a str, &'a BTreeMap<&'a str, &'a Value>)> {
    let mut by_position: BTreeMap<usize, (&str, &BTreeMap<&str, &Value>)> = BTreeMap::new();
    let mut by_reference = Vec::new();
    for (key, group) in groups {
        match key.parse::<usize>() {
            Ok(n) => {
                by_position.insert(n, (*key, group));
            }
            Err(_) => by_reference.push((*key, group)),
        }
    }
    let total = by_position.len() + by_reference.len();
    let mut references = by_reference.into_iter();
    let mut out = Vec::with_capacity(total);
    for n in 0..total {
        if let Some(entry) = by_position.remove(&n) {
            out.push(entry);
        } else if let Some(entry) = references.next() {
            out.push(entry);
        }
    }
    out.extend(by_position.into_values());
    out.extend(references);
    out
}

struct PaymentParts {
    amount: Decimal,
    status: Option<PaymentStatus>,
    method_id: i64,
    description: Option<String>,
}

fn payment_parts(key: &str, group: &BTreeMap<&str, &Value>) -> Result<PaymentParts, MappingError> {
    let g = Group {
        kind: EntityKind::Order,
        prefix: "payments",
        key,
        fields: group,
    };
    Ok(PaymentParts {
        amount: g.required("amount", g.dec("amount")?)?,
        status: g
            .text("status")?
            .as_deref()
            .map(PaymentStatus::parse)
            .transpose()?,
        method_id: g.required("payment_method_id", g.id("payment_method_id")?)?,
        description: g.text("description")?,
    })
}

struct LineParts {
    name: Option<String>,
    quantity: Option<Decimal>,
    price: Option<Decimal>,
}

fn line_parts(key: &str, group: &BTreeMap<&str, &Value>) -> Result<LineParts, MappingError> {
    let g = Group {
        kind: EntityKind::Order,
        prefix: "lines",
        key,
        fields: group,
    };
    Ok(LineParts {
        name: g.text("name")?,
        quantity: g.dec("quantity")?,
        price: g.dec("price")?,
    })
}

/// Fields (from either side, typically the planner's merged record) back to the host's order:
/// status id -> host status, payment method id -> host method. Lines come in SKU order;
/// `updated_at` is left `None` (it is the snapshot's, not a field).
pub fn order_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
    mappings: &Mappings,
) -> Result<CanonicalOrder, MappingError> {
    let r = Reader::new(EntityKind::Order, fields);
    let status = match r.id("status_id")? {
        Some(id) => Some(mappings.status_name(id)?.to_string()),
        None => None,
    };
    let mut lines = Vec::new();
    for (key, group) in &r.groups("lines") {
        let parts = line_parts(key, group)?;
        let g = |field: &str| missing(EntityKind::Order, &format!("lines.{key}.{field}"));
        lines.push(CanonicalLine {
            sku: key.to_string(),
            name: parts.name.unwrap_or_default(),
            quantity: parts.quantity.ok_or_else(|| g("quantity"))?,
            price: parts.price.ok_or_else(|| g("price"))?,
        });
    }
    let payment_groups = r.groups("payments");
    let mut payments = Vec::new();
    for (key, group) in ordered_payments(&payment_groups) {
        let parts = payment_parts(key, group)?;
        payments.push(CanonicalPayment {
            method: mappings.payment_method_name(parts.method_id)?.to_string(),
            amount: parts.amount,
            status: parts.status.unwrap_or_default(),
            reference: parts.description,
        });
    }
    Ok(CanonicalOrder {
        local_id: local_id.into(),
        number: r.text("source_uuid")?,
        status,
        buyer: CanonicalContact {
            name: r.text("buyer.full_name")?,
            phone: r.text("buyer.phone")?,
            email: r.text("buyer.email")?,
        },
        lines,
        payments,
        shipping: CanonicalShipping {
            tracking_code: r.text("shipping.tracking_code")?,
            carrier_service_id: r.id("shipping.delivery_service_id")?,
            city: r.text("shipping.city")?,
            address: r.text("shipping.address")?,
            recipient_name: r.text("shipping.recipient_full_name")?,
            recipient_phone: r.text("shipping.recipient_phone")?,
        },
        comment: r.text("manager_comment")?,
        ordered_at: r.time("ordered_at")?,
        updated_at: None,
    })
}

const SHIPPING_TEXT: [&str; 5] = [
    "shipping.tracking_code",
    "shipping.city",
    "shipping.address",
    "shipping.recipient_full_name",
    "shipping.recipient_phone",
];

/// The shipping part of an order body; `clear` sends `""` for removed text fields.
fn shipping_input(
    r: &Reader<'_>,
    clear: bool,
) -> Result<Option<types::ShippingInput>, MappingError> {
    let text = |key: &str| -> Result<Option<String>, MappingError> {
        match r.text(key)? {
            Some(v) => Ok(Some(v)),
            None if clear && r.has(key) => Ok(Some(String::new())),
            None => Ok(None),
        }
    };
    let input = types::ShippingInput {
        tracking_code: text("shipping.tracking_code")?,
        delivery_service_id: r.id("shipping.delivery_service_id")?,
        shipping_address_city: text("shipping.city")?,
        shipping_receive_point: text("shipping.address")?,
        recipient_full_name: text("shipping.recipient_full_name")?,
        recipient_phone: text("shipping.recipient_phone")?,
        ..Default::default()
    };
    Ok((input != types::ShippingInput::default()).then_some(input))
}

/// A whole order's fields (the record to create) as a KeyCRM `OrderCreate` (also one item of
/// `POST /order/import`): source from the mappings, buyer, lines as products, payments,
/// shipping, `source_uuid`, comment and order date. KeyCRM takes no status on creation: when
/// the fields hold a `status_id`, send it afterwards with [`order_update_body`].
pub fn order_create_body(
    fields: &Fields,
    mappings: &Mappings,
) -> Result<types::OrderCreate, MappingError> {
    let r = Reader::new(EntityKind::Order, fields);
    let buyer = types::OrderBuyerInput {
        full_name: r.text("buyer.full_name")?,
        phone: r.text("buyer.phone")?,
        email: r.text("buyer.email")?,
    };
    if buyer == types::OrderBuyerInput::default() {
        return Err(MappingError::MissingBuyer);
    }
    let mut products = Vec::new();
    for (key, group) in &r.groups("lines") {
        let parts = line_parts(key, group)?;
        products.push(types::OrderProductInput {
            sku: Some(key.to_string()),
            name: parts.name,
            price: parts.price,
            quantity: parts.quantity,
            ..Default::default()
        });
    }
    let payment_groups = r.groups("payments");
    let mut payments: Vec<types::OrderPaymentInput> = Vec::new();
    for (key, group) in ordered_payments(&payment_groups) {
        let p = payment_parts(key, group)?;
        payments.push(
            types::OrderPaymentInput::builder()
                .amount(p.amount)
                .payment_method_id(Some(p.method_id))
                .status(p.status.map(|s| match s {
                    PaymentStatus::Paid => types::OrderPaymentInputStatus::Paid,
                    PaymentStatus::NotPaid => types::OrderPaymentInputStatus::NotPaid,
                    PaymentStatus::Canceled => types::OrderPaymentInputStatus::Canceled,
                }))
                .description(p.description)
                .try_into()
                .map_err(body_error("OrderPaymentInput"))?,
        );
    }
    types::OrderCreate::builder()
        .source_id(mappings.source_id()?)
        .source_uuid(r.text("source_uuid")?)
        .buyer(buyer)
        .products(products)
        .payments(payments)
        .shipping(shipping_input(&r, false)?)
        .manager_comment(r.text("manager_comment")?)
        .ordered_at(r.time("ordered_at")?)
        .try_into()
        .map_err(body_error("OrderCreate"))
}

/// The changed fields of an existing order (the planner's `to_remote`, or the `update` part of
/// [`split_order_changes`]) as a KeyCRM `OrderUpdate`: `status_id`, `manager_comment`,
/// shipping (tracking included) and changes of existing lines by SKU. A removed text field
/// (`null`) is sent as `""` to clear it.
///
/// Everything else in `changed` is left out, and KeyCRM cannot do it through this call: add
/// or remove lines (a line SKU missing from the order is ignored by KeyCRM), change the buyer,
/// the number or the order date, or touch payments. Run [`split_order_changes`] first to know
/// which changes those are.
pub fn order_update_body(changed: &Fields) -> Result<types::OrderUpdate, MappingError> {
    let r = Reader::new(EntityKind::Order, changed);
    let mut products = Vec::new();
    for (key, group) in &r.groups("lines") {
        let parts = line_parts(key, group)?;
        products.push(types::OrderProductUpdateInput {
            sku: Some(key.to_string()),
            name: parts.name,
            price: parts.price,
            quantity: parts.quantity,
            ..Default::default()
        });
    }
    let manager_comment = match r.text("manager_comment")? {
        None if r.has("manager_comment") => Some(String::new()),
        other => other,
    };
    Ok(types::OrderUpdate {
        status_id: r.id("status_id")?,
        manager_comment,
        shipping: shipping_input(&r, true)?,
        products,
        ..Default::default()
    })
}

/// A change of an order field that KeyCRM cannot apply to an existing order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedChange {
    /// The field's dotted name.
    pub field: String,
    /// Why KeyCRM cannot apply it.
    pub reason: String,
}

/// A planned change of an existing order, sorted by the KeyCRM call that can carry it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderChanges {
    /// What `PUT /order/{id}` carries: pass it to [`order_update_body`].
    pub update: Fields,
    /// Keys of payments the order lacks (pass the local fields to [`payment_create_bodies`]).
    pub create_payments: Vec<String>,
    /// Keys of recorded payments whose status changes (see [`payment_update_bodies`]).
    pub update_payments: Vec<String>,
    /// Changes no KeyCRM call can make; report them (conflict log) rather than drop them.
    pub unsupported: Vec<UnsupportedChange>,
}

impl OrderChanges {
    /// Whether nothing is to be sent (unsupported changes aside).
    pub fn is_empty(&self) -> bool {
        self.update.is_empty() && self.create_payments.is_empty() && self.update_payments.is_empty()
    }
}

/// Sorts `changed` (fields to write to KeyCRM; `null` = removed) against the order as KeyCRM
/// has it now (`remote`, its fields) into updatable fields, payments to create or update, and
/// changes KeyCRM cannot apply: new or removed lines, buyer, number or date changes, a
/// replaced tracking code, a cleared status or delivery service, a changed amount or method of
/// a recorded payment, a removed payment.
pub fn split_order_changes(changed: &Fields, remote: &Fields) -> OrderChanges {
    let mut out = OrderChanges::default();
    let remote_lines = groups(remote, "lines");
    let remote_payments = groups(remote, "payments");
    let mut new_payments = BTreeSet::new();
    let mut status_payments = BTreeSet::new();
    let mut unsupported = |field: &str, reason: &str| {
        out.unsupported.push(UnsupportedChange {
            field: field.to_string(),
            reason: reason.to_string(),
        });
    };
    let mut update = Fields::new();
    for (key, value) in changed {
        let removed = value.is_null();
        let group_of = |prefix: &str| {
            key.strip_prefix(prefix)
                .and_then(|rest| rest.rsplit_once('.'))
        };
        match key.as_str() {
            "status_id" if removed => unsupported(key, "KeyCRM cannot clear an order's status"),
            "status_id" | "manager_comment" => {
                update.insert(key.clone(), value.clone());
            }
            "shipping.delivery_service_id" if removed => {
                unsupported(key, "KeyCRM cannot clear an order's delivery service")
            }
            "shipping.tracking_code"
                if remote.get(key).is_some_and(|v| !v.is_null()) && !removed =>
            {
                unsupported(key, "KeyCRM refuses to replace a tracking code once set")
            }
            k if k == "shipping.delivery_service_id" || SHIPPING_TEXT.contains(&k) => {
                update.insert(key.clone(), value.clone());
            }
            "source_uuid" => unsupported(key, "KeyCRM cannot change an order's external number"),
            "ordered_at" => unsupported(key, "KeyCRM cannot change an order's date"),
            k if k.starts_with("buyer.") => unsupported(
                key,
                "KeyCRM cannot change an order's buyer; sync the buyer record instead",
            ),
            _ => {
                if let Some((sku, _)) = group_of("lines.") {
                    if !remote_lines.contains_key(sku) {
                        if !removed {
                            unsupported(key, "KeyCRM cannot add a line to an existing order");
                        }
                    } else if removed {
                        unsupported(key, "KeyCRM cannot remove an order line or its values");
                    } else {
                        update.insert(key.clone(), value.clone());
                    }
                } else if let Some((payment, field)) = group_of("payments.") {
                    if !remote_payments.contains_key(payment) {
                        if !removed {
                            new_payments.insert(payment.to_string());
                        }
                    } else if removed {
                        unsupported(key, "KeyCRM cannot delete a recorded payment or its values");
                    } else if field == "status" {
                        status_payments.insert(payment.to_string());
                    } else {
                        unsupported(
                            key,
                            "KeyCRM cannot change a recorded payment's amount, method or reference",
                        );
                    }
                } else {
                    unsupported(key, "not an order field KeyCRM knows");
                }
            }
        }
    }
    out.update = update;
    out.create_payments = new_payments.into_iter().collect();
    out.update_payments = status_payments.into_iter().collect();
    out
}

/// `POST /order/{id}/payment` bodies for the payments in `local` (an order's fields) that
/// `remote` (the order's KeyCRM fields) lacks, in payment order.
pub fn payment_create_bodies(
    local: &Fields,
    remote: &Fields,
) -> Result<Vec<types::PaymentCreate>, MappingError> {
    let local_groups = groups(local, "payments");
    let remote_groups = groups(remote, "payments");
    let mut out = Vec::new();
    for (key, group) in ordered_payments(&local_groups) {
        if remote_groups.contains_key(key) {
            continue;
        }
        let p = payment_parts(key, group)?;
        out.push(
            types::PaymentCreate::builder()
                .amount(p.amount)
                .payment_method_id(Some(p.method_id))
                .status(p.status.map(|s| match s {
                    PaymentStatus::Paid => types::PaymentCreateStatus::Paid,
                    PaymentStatus::NotPaid => types::PaymentCreateStatus::NotPaid,
                    PaymentStatus::Canceled => types::PaymentCreateStatus::Canceled,
                }))
                .description(p.description)
                .try_into()
                .map_err(body_error("PaymentCreate"))?,
        );
    }
    Ok(out)
}

/// `PUT /order/{id}/payment/{paymentId}` bodies for the payment status changes in `changed`,
/// each with the KeyCRM payment id found in `remote` (the order read with
/// `include=payments`). Payments the order lacks are skipped (they are created instead).
pub fn payment_update_bodies(
    changed: &Fields,
    remote: &types::Order,
) -> Result<Vec<(i64, types::PaymentUpdate)>, MappingError> {
    let list: Vec<&types::Payment> = remote.payments.iter().flatten().collect();
    let keys = payment_keys(list.iter().map(|p| p.description.as_deref()));
    let ids: BTreeMap<&str, i64> = keys
        .iter()
        .zip(&list)
        .filter_map(|(k, p)| Some((k.as_str(), p.id?)))
        .collect();
    let mut out = Vec::new();
    for (&key, group) in &groups(changed, "payments") {
        let Some(id) = ids.get(key) else { continue };
        let g = Group {
            kind: EntityKind::Order,
            prefix: "payments",
            key,
            fields: group,
        };
        if let Some(status) = g.text("status")? {
            let status = match PaymentStatus::parse(&status)? {
                PaymentStatus::Paid => types::PaymentUpdateStatus::Paid,
                PaymentStatus::NotPaid => types::PaymentUpdateStatus::NotPaid,
                PaymentStatus::Canceled => types::PaymentUpdateStatus::Canceled,
            };
            out.push((
                *id,
                types::PaymentUpdate {
                    status: Some(status),
                    description: None,
                },
            ));
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Buyers

fn flatten_buyer(
    name: Option<&str>,
    phones: &[&str],
    emails: &[&str],
    note: Option<&str>,
) -> Fields {
    let mut out = Out::default();
    out.text("full_name", name);
    out.list(
        "phone",
        phones.iter().filter_map(|p| crate::phone::normalize(p)),
    );
    out.list("email", emails.iter().filter_map(|e| normalize_email(e)));
    out.text("note", note);
    out.0
}

/// The host's customer as fields (`full_name`, `phone.<n>`, `email.<n>`, `note`).
pub fn buyer_fields_from_local(buyer: &CanonicalBuyer) -> Fields {
    let phones: Vec<&str> = buyer.phones.iter().map(String::as_str).collect();
    let emails: Vec<&str> = buyer.emails.iter().map(String::as_str).collect();
    flatten_buyer(Some(&buyer.name), &phones, &emails, buyer.note.as_deref())
}

/// KeyCRM's buyer as fields.
pub fn buyer_fields_from_remote(buyer: &types::Buyer) -> Fields {
    flatten_buyer(
        buyer.full_name.as_deref(),
        &all_contacts(buyer.phone.as_ref()),
        &all_contacts(buyer.email.as_ref()),
        buyer.note.as_deref(),
    )
}

/// A buyer's fields as a KeyCRM `BuyerCreate` (`full_name` required).
pub fn buyer_create_body(fields: &Fields) -> Result<types::BuyerCreate, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    types::BuyerCreate::builder()
        .full_name(
            r.text("full_name")?
                .ok_or_else(|| missing(EntityKind::Buyer, "full_name"))?,
        )
        .phone(r.list("phone")?)
        .email(r.list("email")?)
        .note(r.text("note")?)
        .try_into()
        .map_err(body_error("BuyerCreate"))
}

/// A buyer's whole merged fields as a KeyCRM `BuyerUpdate`. KeyCRM needs `full_name` on every
/// update and replaces the phone and e-mail lists with those sent, so pass the complete record
/// (the planner's `merged`), not only the changes. A removed note is sent as `""`.
pub fn buyer_update_body(fields: &Fields) -> Result<types::BuyerUpdate, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    types::BuyerUpdate::builder()
        .full_name(
            r.text("full_name")?
                .ok_or_else(|| missing(EntityKind::Buyer, "full_name"))?,
        )
        .phone(r.list("phone")?)
        .email(r.list("email")?)
        .note(Some(r.text("note")?.unwrap_or_default()))
        .try_into()
        .map_err(body_error("BuyerUpdate"))
}

/// Fields back to the host's customer (`updated_at` left `None`).
pub fn buyer_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalBuyer, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    Ok(CanonicalBuyer {
        local_id: local_id.into(),
        name: r.text("full_name")?.unwrap_or_default(),
        phones: r.list("phone")?,
        emails: r.list("email")?,
        note: r.text("note")?,
        updated_at: None,
    })
}

// ------------------------------------------------------------------------------------------
// Products

fn flatten_product(
    sku: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    price: Option<Decimal>,
    category_id: Option<i64>,
) -> Fields {
    let mut out = Out::default();
    out.text("sku", sku);
    out.text("name", name);
    out.text("description", description);
    out.dec("price", price);
    out.id("category_id", category_id);
    out.0
}

/// The host's product as fields (`sku`, `name`, `description`, `price`, `category_id`).
pub fn product_fields_from_local(product: &CanonicalProduct) -> Fields {
    flatten_product(
        product.sku.as_deref(),
        Some(&product.name),
        product.description.as_deref(),
        product.price,
        product.category_id,
    )
}

/// KeyCRM's product as fields.
pub fn product_fields_from_remote(product: &types::Product) -> Fields {
    flatten_product(
        product.sku.as_deref(),
        product.name.as_deref(),
        product.description.as_deref(),
        product.price,
        product.category_id,
    )
}

/// A product's fields as a KeyCRM `ProductCreate`, one item of `POST /products/import`
/// (`name` required).
pub fn product_create_body(fields: &Fields) -> Result<types::ProductCreate, MappingError> {
    let r = Reader::new(EntityKind::Product, fields);
    types::ProductCreate::builder()
        .name(
            r.text("name")?
                .ok_or_else(|| missing(EntityKind::Product, "name"))?,
        )
        .sku(r.text("sku")?)
        .description(r.text("description")?)
        .price(r.dec("price")?)
        .category_id(r.id("category_id")?)
        .try_into()
        .map_err(body_error("ProductCreate"))
}

/// `POST /products/import` bodies of at most [`MAX_PRODUCT_IMPORT`] products each.
pub fn product_import_batches(products: Vec<types::ProductCreate>) -> Vec<types::ProductImport> {
    chunks(products, MAX_PRODUCT_IMPORT)
        .into_iter()
        .map(|products| types::ProductImport { products })
        .collect()
}

/// A product's changed fields as a KeyCRM `ProductUpdate` (`PUT /products/{id}`). A removed
/// description is sent as `""`; a removed name, SKU, price or category is left out (KeyCRM
/// cannot clear them).
pub fn product_update_body(changed: &Fields) -> Result<types::ProductUpdate, MappingError> {
    let r = Reader::new(EntityKind::Product, changed);
    let description = match r.text("description")? {
        None if r.has("description") => Some(String::new()),
        other => other,
    };
    Ok(types::ProductUpdate {
        name: r.text("name")?,
        sku: r.text("sku")?,
        description,
        price: r.dec("price")?,
        category_id: r.id("category_id")?,
        ..Default::default()
    })
}

/// Fields back to the host's product (`updated_at` left `None`).
pub fn product_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalProduct, MappingError> {
    let r = Reader::new(EntityKind::Product, fields);
    Ok(CanonicalProduct {
        local_id: local_id.into(),
        sku: r.text("sku")?,
        name: r
            .text("name")?
            .ok_or_else(|| missing(EntityKind::Product, "name"))?,
        description: r.text("description")?,
        price: r.dec("price")?,
        category_id: r.id("category_id")?,
        updated_at: None,
    })
}

// ------------------------------------------------------------------------------------------
// Offers

fn flatten_offer(sku: Option<&str>, price: Option<Decimal>, purchased: Option<Decimal>) -> Fields {
    let mut out = Out::default();
    out.text("sku", sku);
    out.dec("price", price);
    out.dec("purchased_price", purchased);
    out.0
}

/// The host's offer as fields (`sku`, `price`, `purchased_price`).
pub fn offer_fields_from_local(offer: &CanonicalOffer) -> Fields {
    flatten_offer(Some(&offer.sku), offer.price, offer.purchased_price)
}

/// KeyCRM's offer as fields.
pub fn offer_fields_from_remote(offer: &types::Offer) -> Fields {
    flatten_offer(offer.sku.as_deref(), offer.price, offer.purchased_price)
}

/// How a row of `PUT /offers` names its offer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OfferRef {
    /// By KeyCRM offer id (preferred once known).
    Id(i64),
    /// By SKU.
    Sku(String),
}

/// An offer's fields (changed or whole) as one row of `PUT /offers`, naming the offer by
/// `target`. Only prices are sent; the SKU names the offer and is never changed this way.
pub fn offer_update_row(
    fields: &Fields,
    target: OfferRef,
) -> Result<types::OfferUpdateRow, MappingError> {
    let r = Reader::new(EntityKind::Offer, fields);
    let (id, sku) = match target {
        OfferRef::Id(id) => (Some(id), None),
        OfferRef::Sku(sku) => (None, Some(sku)),
    };
    Ok(types::OfferUpdateRow {
        id,
        sku,
        price: r.dec("price")?,
        purchased_price: r.dec("purchased_price")?,
        ..Default::default()
    })
}

/// `PUT /offers` bodies of at most [`MAX_OFFER_ROWS`] rows each.
pub fn offer_update_batches(rows: Vec<types::OfferUpdateRow>) -> Vec<types::OfferUpdateBatch> {
    chunks(rows, MAX_OFFER_ROWS)
        .into_iter()
        .map(|offers| types::OfferUpdateBatch { offers })
        .collect()
}

/// Fields back to the host's offer (`sku` required; `product_sku` and `updated_at` left
/// `None`).
pub fn offer_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalOffer, MappingError> {
    let r = Reader::new(EntityKind::Offer, fields);
    Ok(CanonicalOffer {
        local_id: local_id.into(),
        sku: r
            .text("sku")?
            .ok_or_else(|| missing(EntityKind::Offer, "sku"))?,
        product_sku: None,
        price: r.dec("price")?,
        purchased_price: r.dec("purchased_price")?,
        updated_at: None,
    })
}

// ------------------------------------------------------------------------------------------
// Stock

/// The host's stock level as fields (`quantity`).
pub fn stock_fields_from_local(stock: &CanonicalStock) -> Fields {
    let mut out = Out::default();
    out.dec("quantity", Some(stock.quantity));
    out.0
}

/// KeyCRM's stock of an offer in one warehouse as fields; read with `filter[details]=true`.
/// `None` when the answer has no row for that warehouse.
pub fn stock_fields_from_remote(stock: &types::OfferStock, warehouse_id: i64) -> Option<Fields> {
    let row = stock
        .warehouse
        .iter()
        .flatten()
        .find(|w| w.id == Some(warehouse_id))?;
    let mut out = Out::default();
    out.dec("quantity", Some(row.quantity.unwrap_or(Decimal::ZERO)));
    Some(out.0)
}

/// `PUT /offers/stocks` bodies for absolute stock levels: one per KeyCRM warehouse and
/// [`MAX_STOCK_ROWS`] rows (warehouses in id order, rows in input order, rows named by SKU).
/// A SKU given twice for one warehouse is sent once, with its last quantity.
pub fn stock_rows(
    stocks: &[CanonicalStock],
    mappings: &Mappings,
) -> Result<Vec<types::OfferStockUpdate>, MappingError> {
    let mut by_warehouse: BTreeMap<i64, (Vec<&str>, BTreeMap<&str, Decimal>)> = BTreeMap::new();
    for s in stocks {
        let id = mappings.warehouse_id(&s.warehouse)?;
        let (order, quantities) = by_warehouse.entry(id).or_default();
        if quantities.insert(s.sku.as_str(), s.quantity).is_none() {
            order.push(s.sku.as_str());
        }
    }
    let mut out = Vec::new();
    for (warehouse_id, (order, quantities)) in by_warehouse {
        let rows: Vec<types::OfferStockRow> = order
            .into_iter()
            .map(|sku| types::OfferStockRow {
                id: None,
                sku: Some(sku.to_string()),
                quantity: Decimal::new(quantities[sku].value().normalize()),
            })
            .collect();
        for stocks in chunks(rows, MAX_STOCK_ROWS) {
            out.push(types::OfferStockUpdate {
                stocks,
                warehouse_id,
            });
        }
    }
    Ok(out)
}

fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        out.push(items.by_ref().take(size).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::content_hash;
    use serde_json::json;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn fields(value: Value) -> Fields {
        serde_json::from_value(value).unwrap()
    }

    fn mappings() -> Mappings {
        let config = SyncConfig {
            source_id: Some(3),
            status_ids: [("new", 1), ("packed", 2), ("shipped", 4)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            payment_method_ids: [("card", 2), ("cod", 4)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            warehouse_ids: [("main", 1), ("kyiv", 2)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..SyncConfig::default()
        };
        Mappings::from_config(&config)
    }

    fn local_order() -> CanonicalOrder {
        CanonicalOrder {
            local_id: "42".into(),
            number: Some("WEB-1001".into()),
            status: Some("new".into()),
            buyer: CanonicalContact {
                name: Some("Olena Petrenko".into()),
                phone: Some("+38 (067) 123-45-67".into()),
                email: Some(" Olena@Example.com ".into()),
            },
            lines: vec![
                CanonicalLine {
                    sku: "TEA-1".into(),
                    name: "Green tea".into(),
                    quantity: dec("2"),
                    price: dec("120.50"),
                },
                CanonicalLine {
                    sku: "CUP-2".into(),
                    name: "Cup".into(),
                    quantity: dec("1"),
                    price: dec("80.00"),
                },
            ],
            payments: vec![
                CanonicalPayment {
                    method: "card".into(),
                    amount: dec("321.00"),
                    status: PaymentStatus::Paid,
                    reference: Some("LIQPAY-77".into()),
                },
                CanonicalPayment {
                    method: "cod".into(),
                    amount: dec("80"),
                    status: PaymentStatus::NotPaid,
                    reference: None,
                },
            ],
            shipping: CanonicalShipping {
                tracking_code: None,
                carrier_service_id: Some(1),
                city: Some("Kyiv".into()),
                address: Some("Nova Poshta branch 5".into()),
                recipient_name: Some("Olena Petrenko".into()),
                recipient_phone: Some("0038 067 123 45 67".into()),
            },
            comment: Some("Fragile".into()),
            ordered_at: Some(ts("2024-05-01 10:00:00")),
            updated_at: Some(ts("2024-05-02 08:30:00")),
        }
    }

    /// KeyCRM's view of the same order, as `GET /order/{id}?include=buyer,products.offer,
    /// payments,shipping.deliveryService` returns it: strings and numbers for decimals, both
    /// timestamp formats, plus many fields the sync ignores.
    const REMOTE_ORDER: &str = r#"{
        "id": 1501, "parent_id": null, "source_uuid": "WEB-1001", "global_source_uuid": "WEB-1001",
        "source_id": 3, "status_id": 1, "status_group_id": 1, "client_id": 77,
        "grand_total": "401.00", "products_total": "321.00", "payments_total": "321.00",
        "total_discount": "0.00", "margin_sum": "161.00", "expenses_sum": 0, "discount_amount": null,
        "shipping_price": "0.00", "wrap_price": "0.00", "taxes": 0, "fiscal_result": [],
        "manager_comment": "Fragile", "buyer_comment": null, "client_comment": null,
        "payment_status": "part_paid", "is_gift": false, "gift_wrap": false,
        "ordered_at": "2024-05-01T10:00:00.000000Z", "created_at": "2024-05-01T10:00:05.000000Z",
        "updated_at": "2024-05-02T08:30:00.000000Z", "status_changed_at": "2024-05-01T10:00:05.000000Z",
        "last_synced_at": "2024-05-01 10:00:05", "closed_at": null,
        "buyer": {"id": 77, "full_name": "Olena Petrenko", "email": "olena@example.com",
                  "phone": "380671234567", "company_id": null, "manager_id": null},
        "products": [
            {"id": 9001, "name": "Green tea", "sku": "TEA-1", "price": "120.50", "price_sold": "120.50",
             "purchased_price": "60.00", "discount_percent": null, "discount_amount": null,
             "total_discount": 0, "quantity": 2, "unit_type": null, "upsale": false, "comment": null,
             "product_status_id": 1, "picture": {"thumbnail": "https://cdn.example/tea.jpg"},
             "properties": [{"name": "Weight", "value": "100 g"}], "shipment_type": "warehouse",
             "warehouse": {"id": 1, "name": "Main", "description": null, "is_active": true},
             "offer": {"id": 55, "product_id": 12, "sku": "TEA-1", "price": 120.5,
                       "purchased_price": 60, "quantity": 14, "in_reserve": 2}},
            {"id": 9002, "name": "Cup", "sku": "CUP-2", "price": 80, "price_sold": 80,
             "quantity": "1.000", "picture": [], "properties": [], "offer": null}
        ],
        "payments": [
            {"id": 3001, "destination_id": 1501, "payment_method_id": 2,
             "payment_method": {"id": 2, "name": "Card", "alias": "card", "is_active": true},
             "amount": "321.00", "actual_amount": "321.00", "actual_currency": "UAH",
             "source_currency": "UAH", "transaction_uuid": null, "description": "LIQPAY-77",
             "status": "paid", "fiscal_result": [], "payment_date": "2024-05-01 10:01:00",
             "is_expense": false, "bill_id": null, "created_at": "2024-05-01T10:01:00.000000Z",
             "updated_at": "2024-05-01T10:01:00.000000Z"},
            {"id": 3002, "destination_id": 1501, "payment_method_id": 4, "amount": 80,
             "description": null, "status": "not_paid", "payment_date": "2024-05-01 10:02:00",
             "created_at": "2024-05-01 10:02:00", "updated_at": "2024-05-01 10:02:00"}
        ],
        "shipping": {"delivery_service_id": 1, "tracking_code": null, "shipping_status": null,
                     "shipping_address_city": "Kyiv", "shipping_address_country": "Ukraine",
                     "shipping_address_country_code": "UA", "shipping_address_region": null,
                     "shipping_address_zip": null, "shipping_secondary_line": null,
                     "shipping_receive_point": "Nova Poshta branch 5",
                     "recipient_full_name": "Olena Petrenko", "recipient_phone": "+380671234567",
                     "shipping_date": null, "shipping_date_actual": null, "address_payload": [],
                     "delivery_service": {"id": 1, "name": "Nova Poshta", "alias": "novaposhta",
                                          "source_name": "novaposhta"}}
    }"#;

    fn expected_order_fields() -> Fields {
        fields(json!({
            "source_uuid": "WEB-1001",
            "status_id": 1,
            "buyer.full_name": "Olena Petrenko",
            "buyer.phone": "+380671234567",
            "buyer.email": "olena@example.com",
            "lines.CUP-2.name": "Cup",
            "lines.CUP-2.price": "80",
            "lines.CUP-2.quantity": "1",
            "lines.TEA-1.name": "Green tea",
            "lines.TEA-1.price": "120.5",
            "lines.TEA-1.quantity": "2",
            "payments.LIQPAY-77.amount": "321",
            "payments.LIQPAY-77.status": "paid",
            "payments.LIQPAY-77.payment_method_id": 2,
            "payments.LIQPAY-77.description": "LIQPAY-77",
            "payments.1.amount": "80",
            "payments.1.status": "not_paid",
            "payments.1.payment_method_id": 4,
            "shipping.delivery_service_id": 1,
            "shipping.city": "Kyiv",
            "shipping.address": "Nova Poshta branch 5",
            "shipping.recipient_full_name": "Olena Petrenko",
            "shipping.recipient_phone": "+380671234567",
            "manager_comment": "Fragile",
            "ordered_at": "2024-05-01 10:00:00",
        }))
    }

    #[test]
    fn local_order_flattens_to_keycrm_terms() {
        let got = order_fields_from_local(&local_order(), &mappings()).unwrap();
        assert_eq!(got, expected_order_fields());
    }

    #[test]
    fn remote_order_flattens_like_the_equivalent_local_order() {
        let remote: types::Order = serde_json::from_str(REMOTE_ORDER).unwrap();
        let remote_fields = order_fields_from_remote(&remote);
        let local_fields = order_fields_from_local(&local_order(), &mappings()).unwrap();
        assert_eq!(remote_fields, local_fields);
        assert_eq!(content_hash(&remote_fields), content_hash(&local_fields));
        let a = snapshot(local_fields, local_order().updated_at);
        let b = snapshot(remote_fields, remote.updated_at);
        assert_eq!(a, b, "same fields and the same UTC time from both formats");
        assert_eq!(a.hash(), b.hash());
    }

    #[test]
    fn order_create_body_is_exact() {
        let fields = order_fields_from_local(&local_order(), &mappings()).unwrap();
        let body = order_create_body(&fields, &mappings()).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "source_id": 3,
                "source_uuid": "WEB-1001",
                "buyer": {
                    "full_name": "Olena Petrenko",
                    "phone": "+380671234567",
                    "email": "olena@example.com"
                },
                "products": [
                    {"sku": "CUP-2", "name": "Cup", "price": 80, "quantity": 1},
                    {"sku": "TEA-1", "name": "Green tea", "price": 120.5, "quantity": 2}
                ],
                "payments": [
                    {"amount": 321, "payment_method_id": 2, "status": "paid", "description": "LIQPAY-77"},
                    {"amount": 80, "payment_method_id": 4, "status": "not_paid"}
                ],
                "shipping": {
                    "delivery_service_id": 1,
                    "shipping_address_city": "Kyiv",
                    "shipping_receive_point": "Nova Poshta branch 5",
                    "recipient_full_name": "Olena Petrenko",
                    "recipient_phone": "+380671234567"
                },
                "manager_comment": "Fragile",
                "ordered_at": "2024-05-01 10:00:00"
            })
        );
    }

    #[test]
    fn order_create_needs_a_source_and_a_buyer() {
        let fields = order_fields_from_local(&local_order(), &mappings()).unwrap();
        let err = order_create_body(&fields, &Mappings::new()).unwrap_err();
        assert_eq!(err, MappingError::MissingSourceId);
        assert_eq!(
            err.to_string(),
            "no KeyCRM order source to create orders with: set source_id"
        );
        let mut order = local_order();
        order.buyer = CanonicalContact::default();
        let fields = order_fields_from_local(&order, &mappings()).unwrap();
        assert_eq!(
            order_create_body(&fields, &mappings()).unwrap_err(),
            MappingError::MissingBuyer
        );
    }

    #[test]
    fn order_update_body_is_exact() {
        let mut changed = order_fields_from_local(&local_order(), &mappings()).unwrap();
        changed.retain(|k, _| k == "lines.TEA-1.quantity");
        changed.insert("lines.TEA-1.quantity".into(), json!("3.0"));
        changed.insert("status_id".into(), json!(4));
        changed.insert("shipping.tracking_code".into(), json!("20450000000001"));
        changed.insert("shipping.recipient_full_name".into(), Value::Null);
        changed.insert("manager_comment".into(), json!("Call before delivery"));
        let body = order_update_body(&changed).unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({
                "status_id": 4,
                "manager_comment": "Call before delivery",
                "shipping": {"tracking_code": "20450000000001", "recipient_full_name": ""},
                "products": [{"sku": "TEA-1", "quantity": 3}]
            })
        );
        let cleared = order_update_body(&fields(json!({"manager_comment": null}))).unwrap();
        assert_eq!(
            serde_json::to_value(&cleared).unwrap(),
            json!({"manager_comment": ""})
        );
    }

    #[test]
    fn local_to_fields_to_local_round_trips() {
        let m = mappings();
        let original = local_order();
        let fields = order_fields_from_local(&original, &m).unwrap();
        let back = order_from_fields("42", &fields, &m).unwrap();
        let mut expected = original.clone();
        expected.updated_at = None;
        expected.lines.reverse(); // lines come back in SKU order: CUP-2, TEA-1
        expected.buyer.phone = Some("+380671234567".into());
        expected.buyer.email = Some("olena@example.com".into());
        expected.shipping.recipient_phone = Some("+380671234567".into());
        assert_eq!(back, expected);
        assert_eq!(back.lines[1].price, dec("120.5"));
        assert_eq!(order_fields_from_local(&back, &m).unwrap(), fields);
    }

    #[test]
    fn remote_change_comes_back_in_host_names() {
        let mut remote: types::Order = serde_json::from_str(REMOTE_ORDER).unwrap();
        remote.status_id = Some(4);
        remote.shipping.as_mut().unwrap().tracking_code = Some("20450000000001".into());
        let order =
            order_from_fields("42", &order_fields_from_remote(&remote), &mappings()).unwrap();
        assert_eq!(order.status.as_deref(), Some("shipped"));
        assert_eq!(
            order.shipping.tracking_code.as_deref(),
            Some("20450000000001")
        );
        assert_eq!(order.payments[0].method, "card");
        assert_eq!(order.payments[0].reference.as_deref(), Some("LIQPAY-77"));
        assert_eq!(order.payments[1].method, "cod");
        assert_eq!(order.payments[1].status, PaymentStatus::NotPaid);
        assert_eq!(order.ordered_at, Some(ts("2024-05-01 10:00:00")));

        remote.status_id = Some(9);
        let err =
            order_from_fields("42", &order_fields_from_remote(&remote), &mappings()).unwrap_err();
        assert_eq!(err, MappingError::UnknownStatusId(9));
        assert!(err.to_string().contains("status id 9"), "{err}");
    }

    #[test]
    fn unmapped_values_are_named() {
        let m = mappings();
        let mut order = local_order();
        order.status = Some("returned".into());
        let err = order_fields_from_local(&order, &m).unwrap_err();
        assert_eq!(err, MappingError::UnknownStatus("returned".into()));
        assert_eq!(
            err.to_string(),
            "order field `status`: the host status has no KeyCRM status id; add it to status_ids"
        );
        assert!(!format!("{err:?}").contains("returned"), "{err:?}");

        let mut order = local_order();
        order.payments[1].method = "crypto".into();
        let err = order_fields_from_local(&order, &m).unwrap_err();
        assert_eq!(
            err.to_string(),
            "order field `payments.method`: the host payment method has no KeyCRM id; add it to payment_method_ids"
        );
        assert!(!format!("{err:?}").contains("crypto"), "{err:?}");

        let stock = [CanonicalStock {
            sku: "TEA-1".into(),
            warehouse: "lviv".into(),
            quantity: dec("5"),
        }];
        let err = stock_rows(&stock, &m).unwrap_err();
        assert_eq!(err, MappingError::UnknownWarehouse("lviv".into()));
        assert_eq!(
            err.to_string(),
            "stock field `warehouse`: the host warehouse has no KeyCRM id; add it to warehouse_ids"
        );

        let err = order_from_fields(
            "1",
            &fields(json!({"payments.0.amount": "5", "payments.0.payment_method_id": 99})),
            &m,
        )
        .unwrap_err();
        assert_eq!(err, MappingError::UnknownPaymentMethodId(99));
    }

    #[test]
    fn bad_field_values_name_the_field() {
        let err = order_from_fields(
            "1",
            &fields(json!({"lines.A.quantity": "two", "lines.A.price": "1"})),
            &mappings(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "order field `lines.A.quantity` holds a string: expected a decimal"
        );
        let err = order_from_fields("1", &fields(json!({"lines.A.quantity": "2"})), &mappings())
            .unwrap_err();
        assert_eq!(err.to_string(), "order field `lines.A.price` is required");
        let err = order_from_fields(
            "1",
            &fields(
                json!({"payments.0.amount": "1", "payments.0.payment_method_id": 2,
                           "payments.0.status": "refunded"}),
            ),
            &mappings(),
        )
        .unwrap_err();
        assert_eq!(err, MappingError::UnknownPaymentStatus("refunded".into()));
        assert!(!err.to_string().contains("refunded"), "{err}");
        assert!(err.to_string().contains("payments.status"), "{err}");
    }

    #[test]
    fn remote_line_quantities_that_overflow_are_a_typed_error_not_a_panic() {
        let huge = "79228162514264337593543950335";
        let order: types::Order = serde_json::from_value(json!({
            "id": 5,
            "products": [
                {"sku": "TEA-1", "name": "Tea", "quantity": huge, "price": "1"},
                {"sku": "TEA-1", "name": "Tea", "quantity": huge, "price": "1"},
            ],
        }))
        .unwrap();
        let err = try_order_fields_from_remote(&order).unwrap_err();
        assert!(
            matches!(&err, MappingError::InvalidField { field, .. } if field == "lines.TEA-1.quantity"),
            "{err:?}"
        );
        assert!(!err.to_string().contains(huge), "{err}");
        // The infallible flattening keeps the largest decimal instead of panicking.
        let fields = order_fields_from_remote(&order);
        assert_eq!(fields["lines.TEA-1.quantity"], json!(huge));
    }

    #[test]
    fn mapping_errors_never_show_the_host_value() {
        let secret_ish = "Olena Petrenko +380501234567";
        let m = mappings();
        let mut order = local_order();
        order.status = Some(secret_ish.into());
        let status = order_fields_from_local(&order, &m).unwrap_err();
        let mut order = local_order();
        order.payments[0].method = secret_ish.into();
        let method = order_fields_from_local(&order, &m).unwrap_err();
        let invalid = order_from_fields(
            "1",
            &fields(json!({"lines.A.quantity": secret_ish, "lines.A.price": "1"})),
            &m,
        )
        .unwrap_err();
        let object = order_from_fields(
            "1",
            &fields(json!({"lines.A.quantity": {"x": secret_ish}, "lines.A.price": "1"})),
            &m,
        )
        .unwrap_err();
        for err in [status, method, invalid, object] {
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("Olena"), "{shown}");
                assert!(!shown.contains("380501234567"), "{shown}");
            }
            assert!(
                err.to_string().contains("field `"),
                "names the field: {err}"
            );
        }
    }

    #[test]
    fn split_sorts_changes_by_what_keycrm_can_do() {
        let remote: types::Order = serde_json::from_str(REMOTE_ORDER).unwrap();
        let mut remote_fields = order_fields_from_remote(&remote);
        remote_fields.insert("shipping.tracking_code".into(), json!("111"));
        let changed = fields(json!({
            "status_id": 2,
            "manager_comment": "Packed",
            "shipping.city": "Lviv",
            "shipping.tracking_code": "222",
            "lines.TEA-1.quantity": "3",
            "lines.CUP-2.quantity": null,
            "lines.NEW-9.quantity": "1",
            "lines.NEW-9.price": "10",
            "payments.1.status": "paid",
            "payments.1.amount": "90",
            "payments.2.amount": "5",
            "payments.2.payment_method_id": 2,
            "buyer.phone": "+380500000000",
            "source_uuid": "WEB-9",
        }));
        let split = split_order_changes(&changed, &remote_fields);
        assert_eq!(
            split.update,
            fields(json!({
                "status_id": 2,
                "manager_comment": "Packed",
                "shipping.city": "Lviv",
                "lines.TEA-1.quantity": "3",
            }))
        );
        assert_eq!(split.create_payments, vec!["2".to_string()]);
        assert_eq!(split.update_payments, vec!["1".to_string()]);
        let unsupported: Vec<(&str, &str)> = split
            .unsupported
            .iter()
            .map(|u| (u.field.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            unsupported,
            vec![
                (
                    "buyer.phone",
                    "KeyCRM cannot change an order's buyer; sync the buyer record instead"
                ),
                (
                    "lines.CUP-2.quantity",
                    "KeyCRM cannot remove an order line or its values"
                ),
                (
                    "lines.NEW-9.price",
                    "KeyCRM cannot add a line to an existing order"
                ),
                (
                    "lines.NEW-9.quantity",
                    "KeyCRM cannot add a line to an existing order"
                ),
                (
                    "payments.1.amount",
                    "KeyCRM cannot change a recorded payment's amount, method or reference"
                ),
                (
                    "shipping.tracking_code",
                    "KeyCRM refuses to replace a tracking code once set"
                ),
                (
                    "source_uuid",
                    "KeyCRM cannot change an order's external number"
                ),
            ]
        );
        assert!(!split.is_empty());
        assert!(split_order_changes(&Fields::new(), &remote_fields).is_empty());
    }

    #[test]
    fn payments_missing_remotely_are_created_and_status_changes_updated() {
        let remote: types::Order = serde_json::from_str(REMOTE_ORDER).unwrap();
        let remote_fields = order_fields_from_remote(&remote);
        let mut order = local_order();
        order.payments[1].status = PaymentStatus::Paid;
        order.payments.push(CanonicalPayment {
            method: "card".into(),
            amount: dec("12.30"),
            status: PaymentStatus::Paid,
            reference: Some("LIQPAY-78".into()),
        });
        let local_fields = order_fields_from_local(&order, &mappings()).unwrap();
        let bodies = payment_create_bodies(&local_fields, &remote_fields).unwrap();
        assert_eq!(
            serde_json::to_value(&bodies).unwrap(),
            json!([{"amount": 12.3, "payment_method_id": 2, "status": "paid",
                    "description": "LIQPAY-78"}])
        );
        let changed =
            fields(json!({"payments.1.status": "paid", "payments.LIQPAY-78.amount": "12.3"}));
        let updates = payment_update_bodies(&changed, &remote).unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].0, 3002);
        assert_eq!(
            serde_json::to_value(&updates[0].1).unwrap(),
            json!({"status": "paid"})
        );
    }

    #[test]
    fn payment_keys_stay_unambiguous() {
        let keys = payment_keys([
            Some("INV.1"),
            None,
            Some("INV.1"),
            Some("12345"),
            Some("  "),
        ]);
        assert_eq!(keys, vec!["INV.1", "1", "2", "3", "4"]);
        // Keys with dots, and references that could not be keys, still come back intact.
        let m = mappings();
        let mut order = local_order();
        order.lines[0].sku = "TEA.1".into();
        order.payments = vec![
            CanonicalPayment {
                method: "cod".into(),
                amount: dec("1"),
                status: PaymentStatus::Canceled,
                reference: Some("INV.1".into()),
            },
            CanonicalPayment {
                method: "card".into(),
                amount: dec("2"),
                status: PaymentStatus::Paid,
                reference: None,
            },
            CanonicalPayment {
                method: "card".into(),
                amount: dec("3"),
                status: PaymentStatus::Paid,
                reference: Some("INV.1".into()),
            },
        ];
        let f = order_fields_from_local(&order, &m).unwrap();
        assert_eq!(f["lines.TEA.1.quantity"], json!("2"));
        assert_eq!(f["payments.INV.1.status"], json!("canceled"));
        assert_eq!(f["payments.2.description"], json!("INV.1"));
        let back = order_from_fields("42", &f, &m).unwrap();
        assert_eq!(back.payments, order.payments, "payment order is kept");
        assert_eq!(
            back.lines
                .iter()
                .find(|l| l.sku == "TEA.1")
                .unwrap()
                .quantity,
            dec("2")
        );
    }

    #[test]
    fn duplicate_skus_add_up() {
        let mut order = local_order();
        order.lines.push(CanonicalLine {
            sku: "TEA-1".into(),
            name: "Green tea (gift)".into(),
            quantity: dec("1.5"),
            price: dec("0"),
        });
        let f = order_fields_from_local(&order, &mappings()).unwrap();
        assert_eq!(f["lines.TEA-1.quantity"], json!("3.5"));
        assert_eq!(f["lines.TEA-1.price"], json!("120.5"));
        assert_eq!(f["lines.TEA-1.name"], json!("Green tea"));
    }

    #[test]
    fn stock_rows_split_at_ten_thousand_per_warehouse() {
        let m = mappings();
        let mut stock: Vec<CanonicalStock> = (0..25_000)
            .map(|i| CanonicalStock {
                sku: format!("SKU-{i}"),
                warehouse: "main".into(),
                quantity: Decimal::from(i % 7),
            })
            .collect();
        stock.push(CanonicalStock {
            sku: "SKU-1".into(),
            warehouse: "kyiv".into(),
            quantity: dec("4.50"),
        });
        stock.push(CanonicalStock {
            sku: "SKU-0".into(),
            warehouse: "main".into(),
            quantity: dec("9"),
        });
        let bodies = stock_rows(&stock, &m).unwrap();
        let shape: Vec<(i64, usize)> = bodies
            .iter()
            .map(|b| (b.warehouse_id, b.stocks.len()))
            .collect();
        assert_eq!(shape, vec![(1, 10_000), (1, 10_000), (1, 5_000), (2, 1)]);
        assert_eq!(bodies[0].stocks[0].sku.as_deref(), Some("SKU-0"));
        assert_eq!(
            bodies[0].stocks[0].quantity,
            dec("9"),
            "the last quantity given wins"
        );
        assert_eq!(bodies[1].stocks[0].sku.as_deref(), Some("SKU-10000"));
        assert_eq!(bodies[2].stocks[4_999].sku.as_deref(), Some("SKU-24999"));
        assert_eq!(
            serde_json::to_value(&bodies[3]).unwrap(),
            json!({"warehouse_id": 2, "stocks": [{"sku": "SKU-1", "quantity": 4.5}]})
        );
        assert!(stock_rows(&[], &m).unwrap().is_empty());
    }

    #[test]
    fn stock_fields_agree_on_both_sides() {
        let local = CanonicalStock {
            sku: "TEA-1".into(),
            warehouse: "main".into(),
            quantity: dec("14.000"),
        };
        let remote: types::OfferStock = serde_json::from_value(json!({
            "id": 55, "sku": "TEA-1", "quantity": 20, "reserve": 2,
            "warehouse": [{"id": 1, "name": "Main", "quantity": "14", "reserve": 2},
                          {"id": 2, "name": "Kyiv", "quantity": 6, "reserve": 0}]
        }))
        .unwrap();
        assert_eq!(
            stock_fields_from_local(&local),
            fields(json!({"quantity": "14"}))
        );
        assert_eq!(
            stock_fields_from_remote(&remote, 1),
            Some(stock_fields_from_local(&local))
        );
        assert_eq!(stock_fields_from_remote(&remote, 3), None);
        assert_eq!(local.key(), "main/TEA-1");
    }

    #[test]
    fn phones_normalise_to_plus_and_digits() {
        for (raw, expected) in [
            ("+38 (067) 123-45-67", Some("+380671234567")),
            ("380671234567", Some("+380671234567")),
            ("00380671234567", Some("+380671234567")),
            (" +1 555 0100 ", Some("+15550100")),
            ("067-123-45-67", Some("+0671234567")),
            ("n/a", None),
            ("", None),
        ] {
            assert_eq!(normalize_phone(raw).as_deref(), expected, "{raw}");
        }
        assert_eq!(
            normalize_email("  Olena@Example.COM ").as_deref(),
            Some("olena@example.com")
        );
        assert_eq!(normalize_email("   "), None);
    }

    #[test]
    fn decimals_normalise_whatever_their_wire_form() {
        for (raw, expected) in [
            ("2.50", "2.5"),
            ("2.5", "2.5"),
            ("100.00", "100"),
            ("0.000", "0"),
            ("-0.00", "0"),
            ("1e2", "100"),
            ("-3.10", "-3.1"),
        ] {
            assert_eq!(decimal_text(dec(raw)), expected, "{raw}");
        }
        let as_number: Decimal = serde_json::from_value(json!(2.5)).unwrap();
        let as_string: Decimal = serde_json::from_value(json!("2.50")).unwrap();
        assert_eq!(decimal_value(as_number), decimal_value(as_string));
        assert_eq!(decimal_value(as_string), json!("2.5"));
        // Fields written by hand may hold numbers: they read back as the same decimal.
        let offer = offer_from_fields("o", &fields(json!({"sku": "A", "price": 2.5}))).unwrap();
        assert_eq!(offer.price, Some(dec("2.50")));
    }

    #[test]
    fn buyers_agree_and_build_bodies() {
        let local = CanonicalBuyer {
            local_id: "c-7".into(),
            name: "Olena Petrenko".into(),
            phones: vec![
                "+38 067 123 45 67".into(),
                "380671234567".into(),
                "+380501112233".into(),
            ],
            emails: vec!["Olena@Example.com".into()],
            note: Some("VIP".into()),
            updated_at: Some(ts("2024-05-02 08:30:00")),
        };
        let remote: types::Buyer = serde_json::from_value(json!({
            "id": 77, "full_name": "Olena Petrenko", "phone": ["+380671234567", "380501112233"],
            "email": ["olena@example.com"], "note": "VIP", "birthday": null,
            "created_at": "2024-01-01T00:00:00.000000Z", "updated_at": "2024-05-02 08:30:00"
        }))
        .unwrap();
        let local_fields = buyer_fields_from_local(&local);
        assert_eq!(
            local_fields,
            fields(json!({
                "full_name": "Olena Petrenko",
                "phone.0": "+380671234567",
                "phone.1": "+380501112233",
                "email.0": "olena@example.com",
                "note": "VIP"
            }))
        );
        assert_eq!(buyer_fields_from_remote(&remote), local_fields);
        assert_eq!(
            serde_json::to_value(buyer_create_body(&local_fields).unwrap()).unwrap(),
            json!({"full_name": "Olena Petrenko", "phone": ["+380671234567", "+380501112233"],
                   "email": ["olena@example.com"], "note": "VIP"})
        );
        let mut merged = local_fields.clone();
        merged.remove("note");
        assert_eq!(
            serde_json::to_value(buyer_update_body(&merged).unwrap()).unwrap(),
            json!({"full_name": "Olena Petrenko", "phone": ["+380671234567", "+380501112233"],
                   "email": ["olena@example.com"], "note": ""})
        );
        let back = buyer_from_fields("c-7", &local_fields).unwrap();
        assert_eq!(back.phones, vec!["+380671234567", "+380501112233"]);
        assert_eq!(back.emails, vec!["olena@example.com"]);
        assert_eq!(back.note.as_deref(), Some("VIP"));
        let err = buyer_create_body(&fields(json!({"phone.0": "+1"}))).unwrap_err();
        assert_eq!(err.to_string(), "buyer field `full_name` is required");
    }

    #[test]
    fn products_agree_and_build_bodies() {
        let local = CanonicalProduct {
            local_id: "p-1".into(),
            sku: Some("TEA-1".into()),
            name: "Green tea".into(),
            description: Some("<p>Loose leaf</p>".into()),
            price: Some(dec("120.50")),
            category_id: Some(5),
            updated_at: None,
        };
        let remote: types::Product = serde_json::from_value(json!({
            "id": 12, "name": "Green tea", "sku": "TEA-1", "description": "<p>Loose leaf</p>",
            "price": "120.5", "purchased_price": 60, "category_id": 5, "has_offers": false,
            "currency_code": "UAH", "is_archived": false, "quantity": 14,
            "created_at": "2024-01-01 00:00:00", "updated_at": "2024-05-02T08:30:00.000000Z"
        }))
        .unwrap();
        let f = product_fields_from_local(&local);
        assert_eq!(product_fields_from_remote(&remote), f);
        assert_eq!(
            serde_json::to_value(product_create_body(&f).unwrap()).unwrap(),
            json!({"name": "Green tea", "sku": "TEA-1", "description": "<p>Loose leaf</p>",
                   "price": 120.5, "category_id": 5})
        );
        let update =
            product_update_body(&fields(json!({"price": "99.90", "description": null}))).unwrap();
        assert_eq!(
            serde_json::to_value(update).unwrap(),
            json!({"price": 99.9, "description": ""})
        );
        assert_eq!(product_from_fields("p-1", &f).unwrap(), local);
        let many: Vec<types::ProductCreate> =
            (0..250).map(|_| product_create_body(&f).unwrap()).collect();
        let sizes: Vec<usize> = product_import_batches(many)
            .iter()
            .map(|b| b.products.len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn offers_agree_and_build_rows() {
        let local = CanonicalOffer {
            local_id: "v-1".into(),
            sku: "TEA-1".into(),
            product_sku: Some("TEA".into()),
            price: Some(dec("120.50")),
            purchased_price: Some(dec("60")),
            updated_at: None,
        };
        let remote: types::Offer = serde_json::from_value(json!({
            "id": 55, "product_id": 12, "sku": "TEA-1", "barcode": null, "price": 120.5,
            "purchased_price": "60.00", "quantity": 14, "in_reserve": 2, "properties": []
        }))
        .unwrap();
        let f = offer_fields_from_local(&local);
        assert_eq!(
            f,
            fields(json!({"sku": "TEA-1", "price": "120.5", "purchased_price": "60"}))
        );
        assert_eq!(offer_fields_from_remote(&remote), f);
        assert_eq!(
            serde_json::to_value(offer_update_row(&f, OfferRef::Id(55)).unwrap()).unwrap(),
            json!({"id": 55, "price": 120.5, "purchased_price": 60})
        );
        let changed = fields(json!({"price": "99"}));
        assert_eq!(
            serde_json::to_value(
                offer_update_row(&changed, OfferRef::Sku("TEA-1".into())).unwrap()
            )
            .unwrap(),
            json!({"sku": "TEA-1", "price": 99})
        );
        let back = offer_from_fields("v-1", &f).unwrap();
        assert_eq!(
            back,
            CanonicalOffer {
                product_sku: None,
                ..local
            }
        );
        let rows = vec![offer_update_row(&f, OfferRef::Id(1)).unwrap(); 10_001];
        let sizes: Vec<usize> = offer_update_batches(rows)
            .iter()
            .map(|b| b.offers.len())
            .collect();
        assert_eq!(sizes, vec![10_000, 1]);
    }

    #[test]
    fn mappings_go_both_ways() {
        let mut config = SyncConfig::default();
        config.status_ids.insert("packing".into(), 2);
        config.status_ids.insert("packed".into(), 2);
        config.warehouse_ids.insert("main".into(), 1);
        config.source_id = Some(3);
        let m = Mappings::from(&config);
        assert_eq!(m.status_id("packing").unwrap(), 2);
        assert_eq!(m.status_id("packed").unwrap(), 2);
        assert_eq!(
            m.status_name(2).unwrap(),
            "packed",
            "alphabetically first name"
        );
        assert_eq!(m.source_id().unwrap(), 3);
        assert_eq!(m.warehouse_code(1), Some("main"));
        assert_eq!(m.warehouse_code(2), None);
        let m = Mappings::new()
            .with_payment_method("cash", 1)
            .with_payment_method("cod", 1);
        assert_eq!(
            m.payment_method_name(1).unwrap(),
            "cash",
            "first registered name"
        );
        assert_eq!(m.payment_method_id("cod").unwrap(), 1);
    }

    #[test]
    fn canonical_records_are_plain_serde() {
        let order = local_order();
        let json = serde_json::to_value(&order).unwrap();
        assert_eq!(json["payments"][1]["status"], json!("not_paid"));
        assert_eq!(json["ordered_at"], json!("2024-05-01 10:00:00"));
        let back: CanonicalOrder = serde_json::from_value(json).unwrap();
        assert_eq!(back, order);
        let minimal: CanonicalBuyer =
            serde_json::from_value(json!({"local_id": "1", "name": "A"})).unwrap();
        assert_eq!(minimal.phones, Vec::<String>::new());
    }
}
