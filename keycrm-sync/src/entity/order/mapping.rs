//! Orders: flattening either side into [`Fields`], and the fields back to the host's record
//! and to KeyCRM's create and update bodies.

use std::collections::{BTreeMap, BTreeSet};

use keycrm_api::types;
use keycrm_api::{Decimal, Timestamp};
use serde_json::Value;

use super::{
    BUYER_EMAIL, BUYER_FULL_NAME, BUYER_PHONE, CanonicalContact, CanonicalLine, CanonicalOrder,
    CanonicalPayment, CanonicalShipping, MANAGER_COMMENT, ORDERED_AT, PAYMENT_AMOUNT,
    PAYMENT_DESCRIPTION, PAYMENT_METHOD_ID, PAYMENT_STATUS, PaymentStatus, SHIPPING_ADDRESS,
    SHIPPING_CITY, SHIPPING_DELIVERY_SERVICE_ID, SHIPPING_RECIPIENT_FULL_NAME,
    SHIPPING_RECIPIENT_PHONE, SHIPPING_TRACKING_CODE, SOURCE_UUID, STATUS_ID,
};
use crate::entity::mapping::{MappingError, Mappings};
use crate::entity::values::{Groups, Member, Out, Reader, body_error, clean, missing};
use crate::field::{FieldPath, Group as KeyedGroup, LINE_NAME, LINE_PRICE, LINE_QUANTITY};
use crate::model::{EntityKind, Fields};
use crate::phone::PhoneRegion;

// Orders: flattening

/// An order's synced parts, from either side, before flattening: one code path for both.
#[derive(Default)]
pub(crate) struct FlatOrder<'a> {
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

pub(crate) struct FlatLine<'a> {
    sku: Option<&'a str>,
    name: Option<&'a str>,
    quantity: Option<Decimal>,
    price: Option<Decimal>,
}

pub(crate) struct FlatPayment<'a> {
    reference: Option<&'a str>,
    amount: Option<Decimal>,
    status: Option<&'a str>,
    method_id: Option<i64>,
}

/// The key of each line: its SKU, else its name, else `#<position>`.
pub(crate) fn line_key(position: usize, sku: Option<&str>, name: Option<&str>) -> String {
    clean(sku)
        .or(clean(name))
        .map_or_else(|| format!("#{position}"), str::to_string)
}

/// The key of each payment: its reference when present, unique and not all digits, else its
/// 0-based position.
pub(crate) fn payment_keys<'a>(
    references: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<String> {
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
pub(crate) enum Overflow {
    /// Fail with [`MappingError::InvalidField`].
    Fail,
    /// Keep the largest decimal.
    Saturate,
}

/// The order's fields, phones in E.164 with national numbers read in `region`.
pub(crate) fn flatten_order(
    o: &FlatOrder<'_>,
    overflow: Overflow,
    region: &PhoneRegion,
) -> Result<Fields, MappingError> {
    let mut out = Out::default();
    out.text(SOURCE_UUID, o.source_uuid);
    out.id(STATUS_ID, o.status_id);
    out.text(BUYER_FULL_NAME, o.buyer_name);
    out.phone(BUYER_PHONE, o.buyer_phone, region);
    out.email(BUYER_EMAIL, o.buyer_email);

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
                        field: FieldPath::line_quantity(line_key(n, line.sku, line.name)).into(),
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
        out.text(FieldPath::line_name(&key), line.name);
        out.dec(FieldPath::line_quantity(&key), line.quantity);
        out.dec(FieldPath::line_price(key), line.price);
    }

    let keys = payment_keys(o.payments.iter().map(|p| p.reference));
    for (key, p) in keys.iter().zip(&o.payments) {
        out.dec(FieldPath::payment(key, PAYMENT_AMOUNT), p.amount);
        out.text(FieldPath::payment(key, PAYMENT_STATUS), p.status);
        out.id(FieldPath::payment(key, PAYMENT_METHOD_ID), p.method_id);
        out.text(FieldPath::payment(key, PAYMENT_DESCRIPTION), p.reference);
    }

    out.text(SHIPPING_TRACKING_CODE, o.tracking_code);
    out.id(SHIPPING_DELIVERY_SERVICE_ID, o.delivery_service_id);
    out.text(SHIPPING_CITY, o.city);
    out.text(SHIPPING_ADDRESS, o.address);
    out.text(SHIPPING_RECIPIENT_FULL_NAME, o.recipient_name);
    out.phone(SHIPPING_RECIPIENT_PHONE, o.recipient_phone, region);
    out.text(MANAGER_COMMENT, o.manager_comment);
    out.time(ORDERED_AT, o.ordered_at);
    Ok(out.0)
}

/// The host's order as fields in KeyCRM terms (status and payment methods mapped to ids,
/// national phone numbers read in the [`Mappings::phone_region`]).
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
    flatten_order(&flat, Overflow::Fail, mappings.phone_region())
}

pub(crate) fn first_contact(values: Option<&types::BuyerContactValues>) -> Option<&str> {
    match values? {
        types::BuyerContactValues::String(s) => Some(s),
        types::BuyerContactValues::Array(list) => list.iter().find_map(|s| clean(Some(s))),
    }
}

pub(crate) fn all_contacts(values: Option<&types::BuyerContactValues>) -> Vec<&str> {
    match values {
        None => Vec::new(),
        Some(types::BuyerContactValues::String(s)) => vec![s.as_str()],
        Some(types::BuyerContactValues::Array(list)) => list.iter().map(String::as_str).collect(),
    }
}

/// KeyCRM's order as fields, with Ukraine as the home country of national phone numbers
/// ([`order_fields_from_remote_in`] takes the region). Read it with
/// `include=buyer,products.offer,payments,shipping`: a relation that was not included counts
/// as empty.
pub fn order_fields_from_remote(order: &types::Order) -> Fields {
    order_fields_from_remote_in(order, &PhoneRegion::default())
}

/// KeyCRM's order as fields, national phone numbers read in `region`.
pub fn order_fields_from_remote_in(order: &types::Order, region: &PhoneRegion) -> Fields {
    // Saturating flattening has no error case.
    remote_order_fields(order, Overflow::Saturate, region).unwrap_or_default()
}

/// [`order_fields_from_remote`], failing with a [`MappingError`] that names the line when the
/// quantities of lines with one SKU add up beyond a decimal's range (KeyCRM data is not
/// trusted; [`order_fields_from_remote`] keeps the largest decimal instead). Ukraine is the
/// home country of national phone numbers ([`try_order_fields_from_remote_in`] takes the
/// region).
pub fn try_order_fields_from_remote(order: &types::Order) -> Result<Fields, MappingError> {
    try_order_fields_from_remote_in(order, &PhoneRegion::default())
}

/// [`try_order_fields_from_remote`] with national phone numbers read in `region`.
pub fn try_order_fields_from_remote_in(
    order: &types::Order,
    region: &PhoneRegion,
) -> Result<Fields, MappingError> {
    remote_order_fields(order, Overflow::Fail, region)
}

pub(crate) fn remote_order_fields(
    order: &types::Order,
    overflow: Overflow,
    region: &PhoneRegion,
) -> Result<Fields, MappingError> {
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
    flatten_order(&flat, overflow, region)
}

// ------------------------------------------------------------------------------------------
// Orders: back to the host and to KeyCRM bodies

/// Payment groups in their original order: position-keyed ones at their position, the
/// reference-keyed ones (in key order) filling the other places.
pub(crate) fn ordered_payments<'a>(
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

pub(crate) struct PaymentParts {
    pub(crate) amount: Decimal,
    pub(crate) status: Option<PaymentStatus>,
    pub(crate) method_id: i64,
    pub(crate) description: Option<String>,
}

pub(crate) fn payment_parts(
    key: &str,
    group: &BTreeMap<&str, &Value>,
) -> Result<PaymentParts, MappingError> {
    let g = Member {
        kind: EntityKind::Order,
        group: KeyedGroup::Payments,
        key,
        fields: group,
    };
    Ok(PaymentParts {
        amount: g.required(PAYMENT_AMOUNT, g.dec(PAYMENT_AMOUNT)?)?,
        status: g
            .text(PAYMENT_STATUS)?
            .as_deref()
            .map(PaymentStatus::parse)
            .transpose()?,
        method_id: g.required(PAYMENT_METHOD_ID, g.id(PAYMENT_METHOD_ID)?)?,
        description: g.text(PAYMENT_DESCRIPTION)?,
    })
}

pub(crate) struct LineParts {
    name: Option<String>,
    quantity: Option<Decimal>,
    price: Option<Decimal>,
}

pub(crate) fn line_parts(
    key: &str,
    group: &BTreeMap<&str, &Value>,
) -> Result<LineParts, MappingError> {
    let g = Member {
        kind: EntityKind::Order,
        group: KeyedGroup::Lines,
        key,
        fields: group,
    };
    Ok(LineParts {
        name: g.text(LINE_NAME)?,
        quantity: g.dec(LINE_QUANTITY)?,
        price: g.dec(LINE_PRICE)?,
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
    let status = match r.id(&STATUS_ID)? {
        Some(id) => Some(mappings.status_name(id)?.to_string()),
        None => None,
    };
    let mut lines = Vec::new();
    for (key, group) in &r.groups(KeyedGroup::Lines) {
        let parts = line_parts(key, group)?;
        let g =
            |field: &'static str| missing(EntityKind::Order, &FieldPath::line(*key, field).key());
        lines.push(CanonicalLine {
            sku: key.to_string(),
            name: parts.name.unwrap_or_default(),
            quantity: parts.quantity.ok_or_else(|| g(LINE_QUANTITY))?,
            price: parts.price.ok_or_else(|| g(LINE_PRICE))?,
        });
    }
    let payment_groups = r.groups(KeyedGroup::Payments);
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
        number: r.text(&SOURCE_UUID)?,
        status,
        buyer: CanonicalContact {
            name: r.text(&BUYER_FULL_NAME)?,
            phone: r.text(&BUYER_PHONE)?,
            email: r.text(&BUYER_EMAIL)?,
        },
        lines,
        payments,
        shipping: CanonicalShipping {
            tracking_code: r.text(&SHIPPING_TRACKING_CODE)?,
            carrier_service_id: r.id(&SHIPPING_DELIVERY_SERVICE_ID)?,
            city: r.text(&SHIPPING_CITY)?,
            address: r.text(&SHIPPING_ADDRESS)?,
            recipient_name: r.text(&SHIPPING_RECIPIENT_FULL_NAME)?,
            recipient_phone: r.text(&SHIPPING_RECIPIENT_PHONE)?,
        },
        comment: r.text(&MANAGER_COMMENT)?,
        ordered_at: r.time(&ORDERED_AT)?,
        updated_at: None,
    })
}

pub(crate) const SHIPPING_TEXT: [FieldPath; 5] = [
    SHIPPING_TRACKING_CODE,
    SHIPPING_CITY,
    SHIPPING_ADDRESS,
    SHIPPING_RECIPIENT_FULL_NAME,
    SHIPPING_RECIPIENT_PHONE,
];

/// The shipping part of an order body; `clear` sends `""` for removed text fields.
pub(crate) fn shipping_input(
    r: &Reader<'_>,
    clear: bool,
) -> Result<Option<types::ShippingInput>, MappingError> {
    let text = |key: &FieldPath| -> Result<Option<String>, MappingError> {
        match r.text(key)? {
            Some(v) => Ok(Some(v)),
            None if clear && r.has(key) => Ok(Some(String::new())),
            None => Ok(None),
        }
    };
    let input = types::ShippingInput {
        tracking_code: text(&SHIPPING_TRACKING_CODE)?,
        delivery_service_id: r.id(&SHIPPING_DELIVERY_SERVICE_ID)?,
        shipping_address_city: text(&SHIPPING_CITY)?,
        shipping_receive_point: text(&SHIPPING_ADDRESS)?,
        recipient_full_name: text(&SHIPPING_RECIPIENT_FULL_NAME)?,
        recipient_phone: text(&SHIPPING_RECIPIENT_PHONE)?,
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
        full_name: r.text(&BUYER_FULL_NAME)?,
        phone: r.text(&BUYER_PHONE)?,
        email: r.text(&BUYER_EMAIL)?,
    };
    if buyer == types::OrderBuyerInput::default() {
        return Err(MappingError::MissingBuyer);
    }
    let mut products = Vec::new();
    for (key, group) in &r.groups(KeyedGroup::Lines) {
        let parts = line_parts(key, group)?;
        products.push(types::OrderProductInput {
            sku: Some(key.to_string()),
            name: parts.name,
            price: parts.price,
            quantity: parts.quantity,
            ..Default::default()
        });
    }
    let payment_groups = r.groups(KeyedGroup::Payments);
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
        .source_uuid(r.text(&SOURCE_UUID)?)
        .buyer(buyer)
        .products(products)
        .payments(payments)
        .shipping(shipping_input(&r, false)?)
        .manager_comment(r.text(&MANAGER_COMMENT)?)
        .ordered_at(r.time(&ORDERED_AT)?)
        .try_into()
        .map_err(body_error("OrderCreate"))
}

/// The changed fields of an existing order (the planner's `to_remote`, or the `update` part of
/// [`split_order_changes`](super::split_order_changes)) as a KeyCRM `OrderUpdate`: `status_id`, `manager_comment`,
/// shipping (tracking included) and changes of existing lines by SKU. A removed text field
/// (`null`) is sent as `""` to clear it.
///
/// Everything else in `changed` is left out, and KeyCRM cannot do it through this call: add
/// or remove lines (a line SKU missing from the order is ignored by KeyCRM), change the buyer,
/// the number or the order date, or touch payments. Run [`split_order_changes`](super::split_order_changes) first to know
/// which changes those are.
pub fn order_update_body(changed: &Fields) -> Result<types::OrderUpdate, MappingError> {
    let r = Reader::new(EntityKind::Order, changed);
    let mut products = Vec::new();
    for (key, group) in &r.groups(KeyedGroup::Lines) {
        let parts = line_parts(key, group)?;
        products.push(types::OrderProductUpdateInput {
            sku: Some(key.to_string()),
            name: parts.name,
            price: parts.price,
            quantity: parts.quantity,
            ..Default::default()
        });
    }
    let manager_comment = match r.text(&MANAGER_COMMENT)? {
        None if r.has(&MANAGER_COMMENT) => Some(String::new()),
        other => other,
    };
    Ok(types::OrderUpdate {
        status_id: r.id(&STATUS_ID)?,
        manager_comment,
        shipping: shipping_input(&r, true)?,
        products,
        ..Default::default()
    })
}
