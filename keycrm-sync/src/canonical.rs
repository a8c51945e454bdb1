//! The ready-made canonical model: plain host records for orders, buyers, products, offers and
//! stock, their mapping to and from KeyCRM, and the flat [`Fields`](crate::model::Fields) the planner compares.
//!
//! A host whose records fit these structs writes almost no mapping code: it converts its own
//! rows into [`CanonicalOrder`], [`CanonicalBuyer`], ... and lets this module do the rest. A host
//! with richer records can still use the pieces (normalisers, body builders) or write its own.
//!
//! Each kind's code lives in [`crate::entity`] (one module per kind, behind the
//! [`Entity`](crate::entity::Entity) trait); this module re-exports its public pieces under
//! their historical names.
//!
//! # One vocabulary for both sides
//!
//! Both sides are flattened into the same [`Fields`](crate::model::Fields), named in KeyCRM's terms, so the pure
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
//! * phones are E.164, `+` and digits, national numbers read in the [`Mappings`]' home country
//!   ([`Mappings::phone_region`], Ukraine by default); e-mails are trimmed and lower case; text
//!   is trimmed;
//! * ids are JSON numbers; times are `"YYYY-MM-DD HH:MM:SS"` (UTC, whole seconds);
//! * an empty or missing value is no key at all (the planner treats absent and `null` alike).
//!
//! Order lines are keyed by SKU (a line without one by its name); two lines with the same SKU
//! are one line whose quantity is their sum. Payments are keyed by their reference (KeyCRM's
//! payment `description`) when it is present, unique and not all digits, otherwise by their
//! 0-based position in the order's payment list; the reference itself is also kept as
//! `payments.<key>.description`. A key may contain dots: the field name is always the part
//! after the last dot. Code names these keys through [`FieldPath`](crate::field::FieldPath)
//! (`FieldPath::line_quantity(sku)`, `FieldPath::payment(key, "status")`), which renders and
//! parses them.
//!
//! # Configuration
//!
//! Host names that KeyCRM knows by id (order statuses, payment methods, warehouses, the order
//! source) are translated by [`Mappings`], built from [`SyncConfig`](crate::config::SyncConfig). An unmapped value is a
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

pub use crate::entity::buyer::{
    CanonicalBuyer, buyer_create_body, buyer_fields_from_local, buyer_fields_from_local_in,
    buyer_fields_from_remote, buyer_fields_from_remote_in, buyer_from_fields, buyer_update_body,
};
pub use crate::entity::mapping::{MappingError, Mappings};
pub use crate::entity::offer::{
    CanonicalOffer, MAX_OFFER_ROWS, OfferRef, offer_fields_from_local, offer_fields_from_remote,
    offer_from_fields, offer_update_batches, offer_update_row,
};
pub use crate::entity::order::{
    CanonicalContact, CanonicalLine, CanonicalOrder, CanonicalPayment, CanonicalShipping,
    ORDER_STATUS_FIELD, OrderChanges, PaymentStatus, UnsupportedChange, order_create_body,
    order_fields_from_local, order_fields_from_remote, order_fields_from_remote_in,
    order_from_fields, order_update_body, payment_create_bodies, payment_update_bodies,
    split_order_changes, try_order_fields_from_remote, try_order_fields_from_remote_in,
};
pub use crate::entity::product::{
    CanonicalProduct, MAX_PRODUCT_IMPORT, product_create_body, product_fields_from_local,
    product_fields_from_remote, product_from_fields, product_import_batches, product_update_body,
};
pub use crate::entity::snapshot;
pub use crate::entity::stock::{
    CanonicalStock, MAX_STOCK_ROWS, stock_fields_from_local, stock_fields_from_remote, stock_rows,
};
pub use crate::entity::values::{decimal_text, decimal_value, normalize_email, normalize_phone};

#[cfg(test)]
mod kind_tests;
#[cfg(test)]
mod tests;
