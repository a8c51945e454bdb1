//! Host names <-> KeyCRM ids ([`Mappings`]) and why a record could not be mapped
//! ([`MappingError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde_json::Value;

use crate::config::SyncConfig;
use crate::model::EntityKind;
use crate::phone::PhoneRegion;

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
pub(crate) fn shape(value: &Value) -> &'static str {
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
    phone_region: Option<PhoneRegion>,
}

/// The region of mappings that set none: Ukraine.
static HOME_REGION: LazyLock<PhoneRegion> = LazyLock::new(PhoneRegion::default);

impl Mappings {
    /// No mappings at all (add them with the `with_*` methods).
    pub fn new() -> Self {
        Self::default()
    }

    /// The mappings an operator configured: `source_id`, `status_ids`, `payment_method_ids`,
    /// `warehouse_ids` and `phone_region`.
    pub fn from_config(config: &SyncConfig) -> Self {
        let mut m = Self::new().with_phone_region(config.phone_region.clone());
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

    /// Sets the home country national phone numbers are read in: the canonical model's phones
    /// (buyers', an order's buyer and recipient) are E.164 numbers read with it. Without it,
    /// Ukraine; an engine built with mappings that set no region uses its config's
    /// [`phone_region`](SyncConfig::phone_region).
    ///
    /// ```
    /// use keycrm_sync::canonical::Mappings;
    /// use keycrm_sync::phone::PhoneRegion;
    /// let poland = PhoneRegion {
    ///     country_code: "48".into(),
    ///     trunk_prefix: String::new(),
    ///     national_digits: 9,
    /// };
    /// let m = Mappings::new().with_phone_region(poland.clone());
    /// assert_eq!(m.phone_region(), &poland);
    /// assert_eq!(Mappings::new().phone_region(), &PhoneRegion::default());
    /// ```
    pub fn with_phone_region(mut self, region: PhoneRegion) -> Self {
        self.phone_region = Some(region);
        self
    }

    /// The home country national phone numbers are read in (Ukraine unless set).
    pub fn phone_region(&self) -> &PhoneRegion {
        self.phone_region.as_ref().unwrap_or(&HOME_REGION)
    }

    /// Whether a phone region was set (by [`Mappings::with_phone_region`] or
    /// [`Mappings::from_config`]).
    pub(crate) fn has_phone_region(&self) -> bool {
        self.phone_region.is_some()
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
