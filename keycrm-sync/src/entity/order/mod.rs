//! Orders: the host's record, its KeyCRM mapping both ways, the create and update bodies,
//! what KeyCRM cannot change on an existing order, and the engine's order push and pull.

use keycrm_api::{Decimal, Timestamp, types};
use serde::{Deserialize, Serialize};

use super::mapping::{MappingError, Mappings};
use crate::field::{FieldPath, Group};
use crate::model::{EntityKind, Fields};

mod changes;
mod mapping;
mod pull;
mod push;

pub use changes::{
    OrderChanges, UnsupportedChange, payment_create_bodies, payment_update_bodies,
    split_order_changes,
};
pub(crate) use mapping::all_contacts;
#[cfg(test)]
pub(crate) use mapping::payment_keys;
pub use mapping::{
    order_create_body, order_fields_from_local, order_fields_from_remote,
    order_fields_from_remote_in, order_from_fields, order_update_body,
    try_order_fields_from_remote, try_order_fields_from_remote_in,
};
pub(crate) use pull::{ORDER_INCLUDE, source_uuid_key};

/// The order field that holds the KeyCRM status id (for [`crate::plan::Policy`]'s status rule).
pub const ORDER_STATUS_FIELD: &str = "status_id";

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
    /// When the host last changed the order (UTC); not a field, it feeds [`Snapshot::updated_at`](crate::model::Snapshot::updated_at).
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

/// Orders as an [`Entity`](super::Entity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Order;

/// The order's external number (its natural key, the idempotency key of creation).
pub const SOURCE_UUID: FieldPath = FieldPath::plain("source_uuid");
/// The order's KeyCRM status id.
pub const STATUS_ID: FieldPath = FieldPath::plain(ORDER_STATUS_FIELD);
/// The prefix of the buyer's fields on an order (`buyer.*`).
pub const BUYER: &str = "buyer";
/// The buyer's full name.
pub const BUYER_FULL_NAME: FieldPath = FieldPath::plain("buyer.full_name");
/// The buyer's phone.
pub const BUYER_PHONE: FieldPath = FieldPath::plain("buyer.phone");
/// The buyer's e-mail.
pub const BUYER_EMAIL: FieldPath = FieldPath::plain("buyer.email");
/// The shipment's tracking code.
pub const SHIPPING_TRACKING_CODE: FieldPath = FieldPath::plain("shipping.tracking_code");
/// The shipment's KeyCRM delivery service id.
pub const SHIPPING_DELIVERY_SERVICE_ID: FieldPath =
    FieldPath::plain("shipping.delivery_service_id");
/// The shipment's city.
pub const SHIPPING_CITY: FieldPath = FieldPath::plain("shipping.city");
/// The shipment's address (KeyCRM's receive point).
pub const SHIPPING_ADDRESS: FieldPath = FieldPath::plain("shipping.address");
/// The recipient's full name.
pub const SHIPPING_RECIPIENT_FULL_NAME: FieldPath =
    FieldPath::plain("shipping.recipient_full_name");
/// The recipient's phone.
pub const SHIPPING_RECIPIENT_PHONE: FieldPath = FieldPath::plain("shipping.recipient_phone");
/// The internal comment.
pub const MANAGER_COMMENT: FieldPath = FieldPath::plain("manager_comment");
/// When the order was placed.
pub const ORDERED_AT: FieldPath = FieldPath::plain("ordered_at");
/// A payment's amount (`payments.<key>.amount`, see [`FieldPath::payment`]).
pub const PAYMENT_AMOUNT: &str = "amount";
/// A payment's status.
pub const PAYMENT_STATUS: &str = "status";
/// A payment's KeyCRM payment method id.
pub const PAYMENT_METHOD_ID: &str = "payment_method_id";
/// A payment's reference (KeyCRM's payment description).
pub const PAYMENT_DESCRIPTION: &str = "description";

impl super::Entity for Order {
    const KIND: EntityKind = EntityKind::Order;
    const FIELDS: &'static [FieldPath] = &[
        SOURCE_UUID,
        STATUS_ID,
        BUYER_FULL_NAME,
        BUYER_PHONE,
        BUYER_EMAIL,
        FieldPath::plain(Group::Lines.as_str()),
        FieldPath::plain(Group::Payments.as_str()),
        SHIPPING_TRACKING_CODE,
        SHIPPING_DELIVERY_SERVICE_ID,
        SHIPPING_CITY,
        SHIPPING_ADDRESS,
        SHIPPING_RECIPIENT_FULL_NAME,
        SHIPPING_RECIPIENT_PHONE,
        MANAGER_COMMENT,
        ORDERED_AT,
    ];
    type Local = CanonicalOrder;

    fn local_id(local: &CanonicalOrder) -> String {
        local.local_id.clone()
    }

    fn updated_at(local: &CanonicalOrder) -> Option<Timestamp> {
        local.updated_at
    }

    fn fields_from_local(
        local: &CanonicalOrder,
        mappings: &Mappings,
    ) -> Result<Fields, MappingError> {
        order_fields_from_local(local, mappings)
    }

    fn from_fields(
        local_id: &str,
        fields: &Fields,
        mappings: &Mappings,
    ) -> Result<CanonicalOrder, MappingError> {
        order_from_fields(local_id, fields, mappings)
    }

    fn natural_keys(fields: &Fields) -> Vec<(FieldPath, String)> {
        super::key_of(fields, SOURCE_UUID)
    }
}

impl super::RemoteRecord for Order {
    type Remote = types::Order;

    /// Fails when the quantities of lines with one SKU add up beyond a decimal's range.
    fn fields_from_remote(
        remote: &types::Order,
        mappings: &Mappings,
    ) -> Result<Fields, MappingError> {
        try_order_fields_from_remote_in(remote, mappings.phone_region())
    }
}

impl super::Bodies for Order {
    type Create = types::OrderCreate;
    type Update = types::OrderUpdate;

    fn create_body(
        fields: &Fields,
        mappings: &Mappings,
    ) -> Result<types::OrderCreate, MappingError> {
        order_create_body(fields, mappings)
    }

    /// Pass the `update` part of [`split_order_changes`].
    fn update_body(changed: &Fields) -> Result<types::OrderUpdate, MappingError> {
        order_update_body(changed)
    }
}
