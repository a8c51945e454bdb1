//! Orders: create and import (with buyer matching and SKU linking), get and list with
//! includes and filters, update (status, comments, lines, shipping), payments, expenses,
//! tags and attachments. Totals and the payment status are derived from the lines and
//! payments; status and payment-status changes queue the order webhooks.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::catalog;
use super::http::{ApiError, Ctx, Handled, Includes, Reply, SortKey, page, sort_items};
use super::model::*;
use super::state::{Event, State, row, row_by_name, take};
use super::validate::{Check, join};
use super::wire::{self, Time};

/// The relations `include` accepts on orders.
pub(crate) const INCLUDES: &[&str] = &[
    "buyer",
    "products",
    "products.offer",
    "manager",
    "tags",
    "status",
    "marketing",
    "payments",
    "shipping",
    "shipping.lastHistory",
    "shipping.deliveryService",
    "expenses",
    "custom_fields",
    "customFields",
    "assigned",
    "attachments",
    "attachments.file",
];

const SORTS: &[&str] = &[
    "id",
    "ordered_at",
    "created_at",
    "updated_at",
    "status_changed_at",
    "status_id",
];

/// The shipping fields an order accepts.
const SHIPPING_FIELDS: &[&str] = &[
    "tracking_code",
    "shipping_service",
    "shipping_address_city",
    "shipping_address_country",
    "shipping_address_region",
    "shipping_address_zip",
    "shipping_secondary_line",
    "shipping_receive_point",
    "recipient_full_name",
    "recipient_phone",
    "warehouse_ref",
];

/// Money figures of an order, derived from its lines, payments and expenses.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub products_total: Decimal,
    pub total_discount: Decimal,
    pub grand_total: Decimal,
    pub expenses_sum: Decimal,
    pub payments_total: Decimal,
    pub margin_sum: Decimal,
}

impl Totals {
    /// `not_paid`, `part_paid`, `paid` or `overpaid`.
    pub fn payment_status(&self) -> &'static str {
        if self.payments_total <= Decimal::ZERO {
            "not_paid"
        } else if self.payments_total < self.grand_total {
            "part_paid"
        } else if self.payments_total == self.grand_total {
            "paid"
        } else {
            "overpaid"
        }
    }
}

pub(crate) fn totals(state: &State, order: &Order) -> Totals {
    let mut products_total = Decimal::ZERO;
    let mut line_discounts = Decimal::ZERO;
    let mut cost = Decimal::ZERO;
    for line in &order.lines {
        products_total += line.price_sold() * line.quantity;
        line_discounts += line.unit_discount() * line.quantity;
        cost += line.purchased_price.unwrap_or_default() * line.quantity;
    }
    let order_discount = match (order.discount_amount, order.discount_percent) {
        (Some(a), _) if !a.is_zero() => a,
        (_, Some(p)) => products_total * p / Decimal::ONE_HUNDRED,
        _ => Decimal::ZERO,
    }
    .round_dp(2);
    let grand_total = products_total - order_discount + order.shipping_price + order.wrap_price;
    let expenses_sum = order
        .expenses
        .iter()
        .filter(|e| e.status == "paid")
        .map(|e| e.amount)
        .sum();
    let payments_total = state
        .payments
        .values()
        .filter(|p| p.destination == Destination::Order(order.id) && p.status == "paid")
        .map(|p| p.amount)
        .sum();
    Totals {
        products_total: products_total.round_dp(2),
        total_discount: (line_discounts + order_discount).round_dp(2),
        grand_total: grand_total.round_dp(2),
        expenses_sum,
        payments_total,
        margin_sum: (grand_total - cost - expenses_sum).round_dp(2),
    }
}

/// The order's own attributes, shared by API answers and webhook contexts (`webhook`: the
/// raw database row, where every decimal is a string).
fn attributes(state: &State, order: &Order, webhook: bool) -> Map<String, Value> {
    let t = totals(state, order);
    let status = state.status(order.status_id);
    let reserving =
        status.is_some_and(|s| s.reserves) && order.lines.iter().any(|l| l.offer_id.is_some());
    // Uncast decimal columns come as strings; the webhook context is the raw database row,
    // where every decimal is a string.
    let money = |d: Decimal| wire::text(d, 2);
    let cast = |d: Decimal| {
        if webhook {
            wire::text(d, 2)
        } else {
            wire::num(d)
        }
    };
    let cast_opt = |d: Option<Decimal>| match d {
        Some(d) => cast(d),
        None => Value::Null,
    };
    let fields: [(&str, Value); 45] = [
        ("id", json!(order.id)),
        ("parent_id", Value::Null),
        ("source_uuid", wire::s(&order.source_uuid)),
        ("global_source_uuid", wire::s(&order.source_uuid)),
        ("status_on_source", wire::s(&order.status_on_source)),
        ("source_id", json!(order.source_id)),
        ("client_id", json!(order.client_id)),
        ("grand_total", money(t.grand_total)),
        ("total_discount", money(t.total_discount)),
        ("margin_sum", money(t.margin_sum)),
        ("expenses_sum", cast(t.expenses_sum)),
        ("discount_amount", cast_opt(order.discount_amount)),
        ("discount_percent", cast_opt(order.discount_percent)),
        ("shipping_price", money(order.shipping_price)),
        ("taxes", cast(order.taxes)),
        ("register_id", Value::Null),
        ("fiscal_result", json!([])),
        ("fiscal_status", Value::Null),
        ("shipping_type_id", Value::Null),
        ("manager_id", wire::id_opt(order.manager_id)),
        ("status_group_id", json!(status.map(|s| s.group_id))),
        ("status_id", json!(order.status_id)),
        ("closed_from", Value::Null),
        ("status_changed_at", wire::iso(order.status_changed_at)),
        ("status_expired_at", Value::Null),
        ("manager_comment", wire::s(&order.manager_comment)),
        ("buyer_comment", wire::s(&order.buyer_comment)),
        ("client_comment", wire::s(&order.buyer_comment)),
        ("is_gift", json!(order.is_gift)),
        ("promocode", wire::s(&order.promocode)),
        ("wrap_price", money(order.wrap_price)),
        ("gift_wrap", json!(order.gift_wrap)),
        ("payment_status", json!(t.payment_status())),
        ("gift_message", wire::s(&order.gift_message)),
        ("last_synced_at", wire::sql_opt(order.last_synced_at)),
        ("created_at", wire::iso(order.created_at)),
        ("updated_at", wire::iso(order.updated_at)),
        ("closed_at", wire::sql_opt(order.closed_at)),
        ("deleted_at", Value::Null),
        ("ordered_at", wire::iso(order.ordered_at)),
        ("source_updated_at", wire::iso_opt(order.source_updated_at)),
        ("payments_total", money(t.payments_total)),
        ("products_total", money(t.products_total)),
        ("is_expired", json!(false)),
        ("has_reserves", json!(reserving)),
    ];
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The flat order record KeyCRM puts into the `context` of order webhooks.
pub(crate) fn webhook_context(state: &State, order: &Order) -> Value {
    Value::Object(attributes(state, order, true))
}

fn render_line(
    state: &State,
    line: &Line,
    with_offer: bool,
    reserves: &HashMap<(i64, i64), Decimal>,
) -> Value {
    let warehouse = line
        .warehouse_id
        .and_then(|id| row(&state.warehouses, id))
        .cloned()
        .unwrap_or(Value::Null);
    let properties: Vec<Value> = line
        .properties
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    let mut out = json!({
        "id": line.id,
        "name": line.name,
        "sku": wire::s(&line.sku),
        "price": wire::text(line.price, 2),
        "price_sold": wire::text(line.price_sold(), 2),
        "purchased_price": wire::text_opt(line.purchased_price, 2),
        "discount_percent": wire::num_opt(line.discount_percent),
        "discount_amount": wire::num_opt(line.discount_amount),
        "total_discount": wire::num(line.unit_discount() * line.quantity),
        "quantity": wire::num(line.quantity),
        "unit_type": wire::s(&line.unit_type),
        "upsale": line.upsale,
        "comment": wire::s(&line.comment),
        "product_status_id": wire::id_opt(line.product_status_id),
        "picture": wire::s(&line.picture),
        "properties": properties,
        "shipment_type": if line.warehouse_id.is_some() { "warehouse" } else { "manufacturing" },
        "warehouse": warehouse,
    });
    if with_offer {
        out["offer"] = line
            .offer_id
            .and_then(|id| state.offers.get(&id))
            .map_or(Value::Null, |o| {
                catalog::render_offer(state, o, reserves, false)
            });
    }
    out
}

/// A payment as KeyCRM returns it; `with_method` embeds the payment method.
pub(crate) fn render_payment(state: &State, p: &Payment, with_method: bool) -> Value {
    let mut out = json!({
        "id": p.id,
        "destination_id": p.destination.id(),
        "payment_method_id": p.payment_method_id,
        "amount": wire::text(p.amount, 2),
        "actual_amount": wire::text(p.amount, 2),
        "actual_currency": "UAH",
        "source_currency": "UAH",
        "transaction_uuid": wire::s(&p.transaction_uuid),
        "description": wire::s(&p.description),
        "status": p.status,
        "fiscal_result": [],
        "payment_date": wire::sql(p.payment_date),
        "is_expense": false,
        "bill_id": null,
        "created_at": wire::iso(p.created_at),
        "updated_at": wire::iso(p.updated_at),
    });
    if with_method {
        out["payment_method"] = row(&state.payment_methods, p.payment_method_id)
            .cloned()
            .unwrap_or(Value::Null);
    }
    out
}

fn render_expense(state: &State, e: &Expense, with_type: bool) -> Value {
    let mut out = json!({
        "id": e.id,
        "destination_id": e.order_id,
        "expense_type_id": e.expense_type_id,
        "amount": wire::text(e.amount, 2),
        "actual_currency": "UAH",
        "transaction_uuid": null,
        "description": wire::s(&e.description),
        "status": e.status,
        "payment_date": wire::sql(e.payment_date),
        "created_at": wire::iso(e.created_at),
        "updated_at": wire::iso(e.updated_at),
    });
    if with_type {
        out["expense_type"] = row(&state.expense_types, e.expense_type_id)
            .cloned()
            .unwrap_or(Value::Null);
    }
    out
}

fn render_shipping(state: &State, order: &Order, inc: &Includes) -> Value {
    let field = |k: &str| order.shipping.get(k).cloned().unwrap_or(Value::Null);
    let tracking = order
        .shipping
        .get("tracking_code")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let country = field("shipping_address_country");
    let country_code = match country.as_str().map(str::to_lowercase).as_deref() {
        Some("україна" | "ukraine" | "ua") => Value::from("UA"),
        _ => Value::Null,
    };
    let date = order.shipping.get("shipping_date").and_then(Value::as_str);
    let mut out = json!({
        "delivery_service_id": field("delivery_service_id"),
        "tracking_code": field("tracking_code"),
        "shipping_status": if tracking.is_some() { Value::from("invoice") } else { Value::Null },
        "shipping_address_city": field("shipping_address_city"),
        "shipping_address_country": country,
        "shipping_address_country_code": country_code,
        "shipping_address_region": field("shipping_address_region"),
        "shipping_address_zip": field("shipping_address_zip"),
        "shipping_secondary_line": field("shipping_secondary_line"),
        "shipping_receive_point": field("shipping_receive_point"),
        "recipient_full_name": field("recipient_full_name"),
        "recipient_phone": field("recipient_phone"),
        "shipping_date": date,
        "shipping_date_actual": date.and_then(wire::parse_time).map_or(Value::Null, wire::iso),
        "address_payload": match order.shipping.get("warehouse_ref").and_then(Value::as_str) {
            Some(r) => json!({ "warehouse_ref": r }),
            None => json!([]),
        },
    });
    if inc.has("shipping.deliveryService") {
        out["delivery_service"] = order
            .shipping
            .get("delivery_service_id")
            .and_then(Value::as_i64)
            .and_then(|id| row(&state.delivery_services, id))
            .cloned()
            .unwrap_or(Value::Null);
    }
    if inc.has("shipping.lastHistory") {
        out["last_history"] = match tracking {
            Some(code) => json!({
                "id": order.id * 10,
                "tracking_code": code,
                "status_code": 1,
                "shipping_status": "invoice",
                "description": "Відправник самостійно створив цю накладну, але ще не надав до відправки",
                "shipping_date": wire::iso(order.updated_at),
                "created_at": wire::iso(order.updated_at),
                "updated_at": wire::iso(order.updated_at),
            }),
            None => Value::Null,
        };
    }
    out
}

/// An order as the API returns it, with the requested relations.
pub(crate) fn render(
    state: &State,
    order: &Order,
    inc: &Includes,
    reserves: &HashMap<(i64, i64), Decimal>,
) -> Value {
    let mut out = attributes(state, order, false);
    if inc.has("buyer") {
        let buyer = state.buyers.get(&order.client_id).map_or(Value::Null, |b| {
            json!({
                "id": b.id, "full_name": b.full_name, "email": b.email.first(),
                "phone": b.phone.first(), "company_id": b.company_id, "manager_id": b.manager_id,
            })
        });
        out.insert("buyer".into(), buyer);
    }
    if inc.has_any("products") {
        let with_offer = inc.has("products.offer");
        let lines: Vec<Value> = order
            .lines
            .iter()
            .map(|l| render_line(state, l, with_offer, reserves))
            .collect();
        out.insert("products".into(), Value::Array(lines));
    }
    if inc.has("manager") {
        let manager = order.manager_id.and_then(|id| state.user(id)).cloned();
        out.insert("manager".into(), manager.unwrap_or(Value::Null));
    }
    if inc.has("assigned") {
        let assigned: Vec<Value> = order
            .manager_id
            .and_then(|id| state.user(id))
            .into_iter()
            .cloned()
            .collect();
        out.insert("assigned".into(), Value::Array(assigned));
    }
    if inc.has("tags") {
        let tags: Vec<Value> = order
            .tags
            .iter()
            .filter_map(|id| row(&state.tags, *id))
            .map(|t| {
                let mut t = t.clone();
                t["pivot"] = json!({ "order_id": order.id, "tag_id": t["id"] });
                t
            })
            .collect();
        out.insert("tags".into(), Value::Array(tags));
    }
    if inc.has("status") {
        let status = state
            .status(order.status_id)
            .map_or(Value::Null, |s| s.row.clone());
        out.insert("status".into(), status);
    }
    if inc.has("marketing") {
        let marketing = order.marketing.as_ref().map_or(Value::Null, |m| {
            let mut v = Value::Object(m.utm.clone());
            v["created_at"] = wire::iso(m.created_at);
            v["updated_at"] = wire::iso(m.updated_at);
            v
        });
        out.insert("marketing".into(), marketing);
    }
    if inc.has("payments") {
        let payments: Vec<Value> = state
            .payments
            .values()
            .filter(|p| p.destination == Destination::Order(order.id))
            .map(|p| render_payment(state, p, true))
            .collect();
        out.insert("payments".into(), Value::Array(payments));
    }
    if inc.has_any("shipping") {
        out.insert("shipping".into(), render_shipping(state, order, inc));
    }
    if inc.has("expenses") {
        let expenses: Vec<Value> = order
            .expenses
            .iter()
            .map(|e| render_expense(state, e, true))
            .collect();
        out.insert("expenses".into(), Value::Array(expenses));
    }
    if inc.has("custom_fields") {
        out.insert(
            "custom_fields".into(),
            state.render_custom_fields(&order.custom_fields),
        );
    }
    if inc.has_any("attachments") {
        let files: Vec<Value> = order
            .attachments
            .iter()
            .filter_map(|id| state.files.get(id))
            .map(|f| {
                let mut a = json!({ "id": f.id, "file_id": f.id, "order_id": order.id });
                if inc.has("attachments.file") {
                    a["file"] = super::misc::render_file(f);
                }
                a
            })
            .collect();
        out.insert("attachments".into(), Value::Array(files));
    }
    Value::Object(out)
}

// ----------------------------------------------------------------------------------------
// Reading bodies

/// A payment method named by id or by name.
#[derive(Clone, Debug)]
pub(crate) enum MethodRef {
    Id(i64),
    Name(String),
}

/// A payment as sent in a body.
#[derive(Clone, Debug)]
pub(crate) struct NewPayment {
    pub method: MethodRef,
    pub amount: Decimal,
    pub status: String,
    pub description: Option<String>,
    pub payment_date: Option<Time>,
}

/// Reads a payment body (`POST .../payment` or an element of `payments`).
pub(crate) fn read_payment(
    state: &State,
    c: &mut Check,
    body: &Value,
    prefix: &str,
) -> Option<NewPayment> {
    let amount = c.req_dec(body, prefix, "amount");
    let id = c.int_in(body, prefix, "payment_method_id", |id| {
        row(&state.payment_methods, id).is_some()
    });
    let name = c
        .str(body, prefix, "payment_method")
        .filter(|n| !n.trim().is_empty());
    let method = match (id, name) {
        (Some(id), _) => Some(MethodRef::Id(id)),
        (None, Some(name)) => Some(MethodRef::Name(name)),
        (None, None) => {
            if !Check::present(body, "payment_method_id") {
                c.fail(
                    &join(prefix, "payment_method_id"),
                    format!(
                        "The {} field is required when {} is not present.",
                        join(prefix, "payment_method_id").replace('_', " "),
                        join(prefix, "payment_method").replace('_', " ")
                    ),
                );
            }
            None
        }
    };
    let status = c
        .one_of(body, prefix, "status", &["paid", "not_paid", "canceled"])
        .unwrap_or_else(|| "paid".into());
    let description = c.str(body, prefix, "description");
    let payment_date = c.time(body, prefix, "payment_date");
    Some(NewPayment {
        method: method?,
        amount: amount?,
        status,
        description,
        payment_date,
    })
}

/// Resolves a payment method, creating one for an unknown name as KeyCRM does.
pub(crate) fn resolve_method(state: &mut State, method: &MethodRef) -> i64 {
    match method {
        MethodRef::Id(id) => *id,
        MethodRef::Name(name) => {
            if let Some(id) =
                row_by_name(&state.payment_methods, name).and_then(|r| r["id"].as_i64())
            {
                return id;
            }
            let id = take(&mut state.ids.payment_method);
            let alias = name.to_lowercase().replace(' ', "_");
            state
                .payment_methods
                .push(json!({ "id": id, "name": name, "alias": alias, "is_active": true }));
            id
        }
    }
}

/// Inserts a payment and returns its id.
pub(crate) fn insert_payment(
    state: &mut State,
    destination: Destination,
    p: &NewPayment,
    now: Time,
) -> i64 {
    let method = resolve_method(state, &p.method);
    let id = take(&mut state.ids.payment);
    state.payments.insert(
        id,
        Payment {
            id,
            destination,
            payment_method_id: method,
            amount: p.amount,
            status: p.status.clone(),
            description: p.description.clone(),
            payment_date: p.payment_date.unwrap_or(now),
            transaction_uuid: None,
            created_at: now,
            updated_at: now,
        },
    );
    id
}

/// A line of a new order as sent.
#[derive(Clone, Debug, Default)]
struct NewLine {
    sku: Option<String>,
    name: Option<String>,
    price: Option<Decimal>,
    purchased_price: Option<Decimal>,
    discount_percent: Option<Decimal>,
    discount_amount: Option<Decimal>,
    quantity: Option<Decimal>,
    unit_type: Option<String>,
    comment: Option<String>,
    picture: Option<String>,
    properties: Vec<(String, Value)>,
}

/// A new order as sent to `POST /order` or inside `POST /order/import`.
#[derive(Clone, Debug)]
pub(crate) struct NewOrder {
    source_id: i64,
    source_uuid: Option<String>,
    buyer_name: Option<String>,
    buyer_email: Option<String>,
    buyer_phone: Option<String>,
    manager_id: Option<i64>,
    buyer_comment: Option<String>,
    manager_comment: Option<String>,
    promocode: Option<String>,
    discount_percent: Option<Decimal>,
    discount_amount: Option<Decimal>,
    shipping_price: Option<Decimal>,
    wrap_price: Option<Decimal>,
    taxes: Option<Decimal>,
    is_gift: bool,
    gift_wrap: bool,
    gift_message: Option<String>,
    ordered_at: Option<Time>,
    shipping: Map<String, Value>,
    marketing: Option<Map<String, Value>>,
    lines: Vec<NewLine>,
    payments: Vec<NewPayment>,
    custom_fields: Vec<(String, Value)>,
}

/// Reads the `shipping` object of an order body.
fn read_shipping(state: &State, c: &mut Check, body: &Value, prefix: &str) -> Map<String, Value> {
    let Some(ship) = c.object(body, prefix, "shipping") else {
        return Map::new();
    };
    let p = join(prefix, "shipping");
    let mut out = c.string_map(ship, &p, SHIPPING_FIELDS);
    if let Some(id) = c.int_in(ship, &p, "delivery_service_id", |id| {
        row(&state.delivery_services, id).is_some()
    }) {
        out.insert("delivery_service_id".into(), Value::from(id));
    }
    if let Some(d) = c.date(ship, &p, "shipping_date") {
        out.insert(
            "shipping_date".into(),
            Value::from(d.format("%Y-%m-%d").to_string()),
        );
    }
    out
}

/// Reads and validates one order body; `prefix` is `""` or `orders.N`.
pub(crate) fn read_new_order(
    state: &State,
    c: &mut Check,
    body: &Value,
    prefix: &str,
) -> Option<NewOrder> {
    let source_id = if Check::present(body, "source_id") {
        c.int_in(body, prefix, "source_id", |id| {
            row(&state.sources, id).is_some()
        })
    } else {
        c.required(&join(prefix, "source_id"));
        None
    };
    let source_uuid = c.str(body, prefix, "source_uuid");
    let (mut buyer_name, mut buyer_email, mut buyer_phone) = (None, None, None);
    match c.object(body, prefix, "buyer") {
        Some(buyer) => {
            let p = join(prefix, "buyer");
            buyer_name = c
                .str(buyer, &p, "full_name")
                .filter(|s| !s.trim().is_empty());
            buyer_email = c.str(buyer, &p, "email").filter(|s| !s.trim().is_empty());
            buyer_phone = c.str(buyer, &p, "phone").filter(|s| !s.trim().is_empty());
            if buyer_name.is_none() && buyer_email.is_none() && buyer_phone.is_none() {
                let field = join(&p, "full_name");
                c.fail(
                    &field,
                    format!(
                        "The {} field is required when none of {} / {} are present.",
                        field.replace('_', " "),
                        join(&p, "email"),
                        join(&p, "phone")
                    ),
                );
            }
        }
        None => {
            if !Check::present(body, "buyer") {
                c.required(&join(prefix, "buyer"));
            }
        }
    }
    let manager_id = c.int_in(body, prefix, "manager_id", |id| state.user(id).is_some());
    let buyer_comment = c.str(body, prefix, "buyer_comment");
    let manager_comment = c.str(body, prefix, "manager_comment");
    let promocode = c.str(body, prefix, "promocode");
    let discount_percent = c.dec(body, prefix, "discount_percent");
    let discount_amount = c.dec(body, prefix, "discount_amount");
    let shipping_price = c.dec(body, prefix, "shipping_price");
    let wrap_price = c.dec(body, prefix, "wrap_price");
    let taxes = c.dec(body, prefix, "taxes");
    let is_gift = c.bool(body, prefix, "is_gift").unwrap_or(false);
    let gift_wrap = c.bool(body, prefix, "gift_wrap").unwrap_or(false);
    let gift_message = c.str(body, prefix, "gift_message");
    let ordered_at = c.time(body, prefix, "ordered_at");
    let shipping = read_shipping(state, c, body, prefix);
    let marketing = c.object(body, prefix, "marketing").map(|m| {
        c.string_map(
            m,
            &join(prefix, "marketing"),
            &[
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
            ],
        )
    });
    let mut lines = Vec::new();
    if let Some(list) = c.array(body, prefix, "products", None) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("{}.{i}", join(prefix, "products"));
            if !item.is_object() {
                c.fail(
                    &p,
                    format!("The {} field must be an array.", p.replace('_', " ")),
                );
                continue;
            }
            let properties = item
                .get("properties")
                .and_then(Value::as_array)
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|pr| {
                            Some((
                                pr.get("name")?.as_str()?.to_string(),
                                pr.get("value")?.clone(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            lines.push(NewLine {
                sku: c.str(item, &p, "sku").filter(|s| !s.is_empty()),
                name: c.str(item, &p, "name"),
                price: c.dec(item, &p, "price"),
                purchased_price: c.dec(item, &p, "purchased_price"),
                discount_percent: c.dec(item, &p, "discount_percent"),
                discount_amount: c.dec(item, &p, "discount_amount"),
                quantity: c.dec(item, &p, "quantity"),
                unit_type: c.str(item, &p, "unit_type"),
                comment: c.str(item, &p, "comment"),
                picture: c.str(item, &p, "picture"),
                properties,
            });
        }
    }
    let mut payments = Vec::new();
    if let Some(list) = c.array(body, prefix, "payments", None) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("{}.{i}", join(prefix, "payments"));
            if let Some(payment) = read_payment(state, c, item, &p) {
                payments.push(payment);
            }
        }
    }
    let custom_fields = c
        .custom_fields(body, prefix, |uuid| state.custom_field_known("order", uuid))
        .unwrap_or_default();
    Some(NewOrder {
        source_id: source_id?,
        source_uuid,
        buyer_name,
        buyer_email,
        buyer_phone,
        manager_id,
        buyer_comment,
        manager_comment,
        promocode,
        discount_percent,
        discount_amount,
        shipping_price,
        wrap_price,
        taxes,
        is_gift,
        gift_wrap,
        gift_message,
        ordered_at,
        shipping,
        marketing,
        lines,
        payments,
        custom_fields,
    })
}

/// Links the order to the buyer with the same phone or e-mail, or creates the buyer.
fn match_or_create_buyer(state: &mut State, new: &NewOrder, now: Time) -> i64 {
    if let Some(id) = state.find_buyer(new.buyer_phone.as_deref(), new.buyer_email.as_deref()) {
        return id;
    }
    let id = take(&mut state.ids.buyer);
    state.buyers.insert(
        id,
        Buyer {
            id,
            full_name: new.buyer_name.clone().unwrap_or_default(),
            birthday: None,
            email: new.buyer_email.iter().cloned().collect(),
            phone: new.buyer_phone.iter().cloned().collect(),
            note: None,
            discount: None,
            company_id: None,
            manager_id: new.manager_id,
            shipping: Vec::new(),
            custom_fields: Vec::new(),
            created_at: now,
            updated_at: now,
        },
    );
    id
}

/// Creates a validated order; returns its id.
pub(crate) fn insert_order(state: &mut State, new: NewOrder) -> i64 {
    let now = state.now();
    let client_id = match_or_create_buyer(state, &new, now);
    let id = take(&mut state.ids.order);
    let mut lines = Vec::new();
    for l in &new.lines {
        let offer = l
            .sku
            .as_deref()
            .and_then(|sku| state.offer_by_sku(sku))
            .cloned();
        let product = offer
            .as_ref()
            .and_then(|o| state.products.get(&o.product_id))
            .cloned();
        let line_id = take(&mut state.ids.line);
        lines.push(Line {
            id: line_id,
            offer_id: offer.as_ref().map(|o| o.id),
            sku: l.sku.clone(),
            name: l
                .name
                .clone()
                .or_else(|| product.as_ref().map(|p| p.name.clone()))
                .or_else(|| l.sku.clone())
                .unwrap_or_else(|| "Товар".into()),
            price: l
                .price
                .or(offer.as_ref().map(|o| o.price))
                .unwrap_or_default(),
            purchased_price: l
                .purchased_price
                .or(offer.as_ref().and_then(|o| o.purchased_price)),
            discount_percent: l.discount_percent,
            discount_amount: l.discount_amount,
            quantity: l.quantity.unwrap_or(Decimal::ONE),
            unit_type: l
                .unit_type
                .clone()
                .or(product.as_ref().and_then(|p| p.unit_type.clone())),
            comment: l.comment.clone(),
            product_status_id: Some(1),
            picture: l
                .picture
                .clone()
                .or(offer.as_ref().and_then(|o| o.image_url.clone()))
                .or(product.as_ref().and_then(|p| p.pictures.first().cloned())),
            properties: if l.properties.is_empty() {
                offer
                    .as_ref()
                    .map(|o| {
                        o.properties
                            .iter()
                            .map(|(n, v)| (n.clone(), Value::from(v.clone())))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                l.properties.clone()
            },
            upsale: false,
            warehouse_id: offer.as_ref().map(|_| 1),
        });
    }
    let order = Order {
        id,
        source_id: new.source_id,
        source_uuid: new.source_uuid.clone(),
        status_on_source: None,
        client_id,
        manager_id: new.manager_id,
        status_id: 1,
        status_changed_at: now,
        buyer_comment: new.buyer_comment.clone(),
        manager_comment: new.manager_comment.clone(),
        promocode: new.promocode.clone(),
        discount_percent: new.discount_percent,
        discount_amount: new.discount_amount,
        shipping_price: new.shipping_price.unwrap_or_default(),
        wrap_price: new.wrap_price.unwrap_or_default(),
        taxes: new.taxes.unwrap_or_default(),
        is_gift: new.is_gift,
        gift_wrap: new.gift_wrap,
        gift_message: new.gift_message.clone(),
        ordered_at: new.ordered_at.unwrap_or(now),
        created_at: now,
        updated_at: now,
        closed_at: None,
        last_synced_at: None,
        source_updated_at: None,
        lines,
        expenses: Vec::new(),
        tags: Vec::new(),
        attachments: Vec::new(),
        shipping: new.shipping.clone(),
        marketing: new.marketing.clone().map(|utm| Marketing {
            utm,
            created_at: now,
            updated_at: now,
        }),
        custom_fields: new.custom_fields.clone(),
        written_off: false,
    };
    state.orders.insert(id, order);
    for p in &new.payments {
        insert_payment(state, Destination::Order(id), p, now);
    }
    id
}

// ----------------------------------------------------------------------------------------
// Changing orders

/// Runs a change of order `id` the way KeyCRM applies it: `updated_at` moves, a new status
/// stamps `status_changed_at` (and `closed_at`, and writes goods off when the status says
/// so), and the order webhooks and stock webhook are queued for what changed.
///
/// `change` must validate before it modifies anything.
pub(crate) fn mutate<R>(
    state: &mut State,
    id: i64,
    change: impl FnOnce(&mut State, Time) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let (status_before, paid_before) = {
        let order = state
            .orders
            .get(&id)
            .ok_or_else(|| ApiError::not_found("Order", id))?;
        (order.status_id, totals(state, order).payment_status())
    };
    let offers = state.order_offer_ids(id);
    let stock_before = state.stock_snapshot(&offers);
    let now = state.now();
    let result = change(state, now)?;

    let status_after = state.orders.get(&id).map_or(status_before, |o| o.status_id);
    if status_after != status_before {
        let def = state.status(status_after).cloned();
        let mut write_off = Vec::new();
        if let Some(order) = state.orders.get_mut(&id) {
            order.status_changed_at = now;
            if let Some(def) = &def {
                order.closed_at = def.is_closing_order.then_some(now);
                if def.writes_off && !order.written_off {
                    order.written_off = true;
                    write_off = order
                        .lines
                        .iter()
                        .filter_map(|l| Some(((l.offer_id?, l.warehouse_id?), l.quantity)))
                        .collect();
                }
            }
        }
        for (key, qty) in write_off {
            *state.stock.entry(key).or_default() -= qty;
        }
    }
    if let Some(order) = state.orders.get_mut(&id) {
        order.updated_at = now;
    }
    let order = &state.orders[&id];
    let paid_after = totals(state, order).payment_status();
    let context = webhook_context(state, order);
    if status_after != status_before {
        state.events.push(Event::Trigger {
            event: "order.change_order_status",
            context: context.clone(),
        });
    }
    if paid_after != paid_before {
        state.events.push(Event::Trigger {
            event: "order.change_payment_status",
            context,
        });
    }
    state.emit_stock_changes(&stock_before);
    Ok(result)
}

/// Validates and applies an order update body (`PUT /order/{id}`, or a change made in the
/// CRM by a test).
pub(crate) fn update_order(state: &mut State, id: i64, body: &Value) -> Result<(), ApiError> {
    let order = state
        .orders
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Order", id))?
        .clone();
    let mut c = Check::new();
    let status_id = c.int_in(body, "", "status_id", |s| state.status(s).is_some());
    let buyer_comment = body
        .get("buyer_comment")
        .map(|_| c.str(body, "", "buyer_comment"));
    let manager_comment = body
        .get("manager_comment")
        .map(|_| c.str(body, "", "manager_comment"));
    let discount_percent = body
        .get("discount_percent")
        .map(|_| c.dec(body, "", "discount_percent"));
    let discount_amount = body
        .get("discount_amount")
        .map(|_| c.dec(body, "", "discount_amount"));
    let shipping = read_shipping(state, &mut c, body, "");
    if let Some(Value::String(code)) = shipping.get("tracking_code") {
        let current = order
            .shipping
            .get("tracking_code")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() && !code.is_empty() && current != code {
            c.fail(
                "shipping.tracking_code",
                "The order already has a tracking code; a second one cannot be added.",
            );
        }
    }
    // Each entry edits the existing line with the same id (or SKU); others are ignored.
    let mut edits: Vec<(usize, Value)> = Vec::new();
    if let Some(list) = c.array(body, "", "products", None) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("products.{i}");
            let line_id = c.int(item, &p, "id");
            let sku = c.str(item, &p, "sku");
            let found = order.lines.iter().position(|l| {
                line_id.is_some_and(|id| l.id == id)
                    || (line_id.is_none() && sku.is_some() && l.sku == sku)
            });
            for key in [
                "price",
                "purchased_price",
                "discount_percent",
                "discount_amount",
                "quantity",
            ] {
                c.dec(item, &p, key);
            }
            c.int_in(item, &p, "product_status_id", |s| {
                row(&state.product_statuses, s).is_some()
            });
            if let Some(index) = found {
                edits.push((index, item.clone()));
            }
        }
    }
    let custom_fields = c.custom_fields(body, "", |uuid| state.custom_field_known("order", uuid));
    c.finish()?;

    mutate(state, id, |state, _now| {
        let order = state.orders.get_mut(&id).expect("checked above");
        if let Some(s) = status_id {
            order.status_id = s;
        }
        if let Some(v) = buyer_comment {
            order.buyer_comment = v;
        }
        if let Some(v) = manager_comment {
            order.manager_comment = v;
        }
        if let Some(v) = discount_percent {
            order.discount_percent = v;
        }
        if let Some(v) = discount_amount {
            order.discount_amount = v;
        }
        for (k, v) in shipping {
            order.shipping.insert(k, v);
        }
        for (index, item) in edits {
            let line = &mut order.lines[index];
            let dec = |k: &str| item.get(k).and_then(wire::parse_decimal);
            if line.offer_id.is_none()
                && let Some(name) = item.get("name").and_then(Value::as_str)
            {
                line.name = name.to_string();
            }
            if let Some(comment) = item.get("comment") {
                line.comment = comment.as_str().map(str::to_string);
            }
            if let Some(v) = dec("price") {
                line.price = v;
            }
            if let Some(v) = dec("purchased_price") {
                line.purchased_price = Some(v);
            }
            if item.get("discount_percent").is_some() {
                line.discount_percent = dec("discount_percent");
            }
            if item.get("discount_amount").is_some() {
                line.discount_amount = dec("discount_amount");
            }
            if let Some(v) = dec("quantity") {
                line.quantity = v;
            }
            if let Some(v) = item.get("product_status_id").and_then(Value::as_i64) {
                line.product_status_id = Some(v);
            }
        }
        if let Some(values) = custom_fields {
            State::merge_custom_fields(&mut order.custom_fields, values);
        }
        Ok(())
    })
}

// ----------------------------------------------------------------------------------------
// Handlers

fn order_or_404(state: &State, id: i64) -> Result<&Order, ApiError> {
    state
        .orders
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Order", id))
}

pub(crate) fn list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(INCLUDES)?;
    let sorts = ctx.sorts(SORTS)?;
    let ids = ctx.filter_ids("id");
    let statuses = ctx.filter_ids("status_id");
    let sources = ctx.filter_ids("source_id");
    let uuids = ctx.filter_list("source_uuid");
    let phones: Option<Vec<String>> = ctx
        .filter_list("buyer_phone")
        .map(|l| l.iter().map(|p| wire::phone_digits(p)).collect());
    let emails: Option<Vec<String>> = ctx
        .filter_list("buyer_email")
        .map(|l| l.iter().map(|e| e.to_lowercase()).collect());
    let created = ctx.filter_range("created_between")?;
    let updated = ctx.filter_range("updated_between")?;
    let shipped = ctx.filter_range("shipping_between")?;
    let paid = ctx.filter_list("payment_status");
    let tracking = ctx.filter_bool("has_tracking_code");
    let mut items: Vec<&Order> = state
        .orders
        .values()
        .filter(|o| ids.as_ref().is_none_or(|l| l.contains(&o.id)))
        .filter(|o| statuses.as_ref().is_none_or(|l| l.contains(&o.status_id)))
        .filter(|o| sources.as_ref().is_none_or(|l| l.contains(&o.source_id)))
        .filter(|o| {
            uuids
                .as_ref()
                .is_none_or(|l| o.source_uuid.as_ref().is_some_and(|u| l.contains(u)))
        })
        .filter(|o| {
            let buyer = state.buyers.get(&o.client_id);
            phones.as_ref().is_none_or(|l| {
                buyer.is_some_and(|b| b.phone.iter().any(|p| l.contains(&wire::phone_digits(p))))
            }) && emails.as_ref().is_none_or(|l| {
                buyer.is_some_and(|b| b.email.iter().any(|e| l.contains(&e.to_lowercase())))
            })
        })
        .filter(|o| created.is_none_or(|r| r.contains(o.ordered_at)))
        .filter(|o| updated.is_none_or(|r| r.contains(o.updated_at)))
        .filter(|o| {
            shipped.is_none_or(|r| {
                r.contains_opt(
                    o.shipping
                        .get("shipping_date")
                        .and_then(Value::as_str)
                        .and_then(wire::parse_time),
                )
            })
        })
        .filter(|o| {
            paid.as_ref()
                .is_none_or(|l| l.iter().any(|s| s == totals(state, o).payment_status()))
        })
        .filter(|o| {
            tracking.is_none_or(|want| {
                let has = o
                    .shipping
                    .get("tracking_code")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.is_empty());
                has == want
            })
        })
        .collect();
    sort_items(&mut items, &sorts, |o, field| match field {
        "ordered_at" => o.ordered_at.into(),
        "created_at" => o.created_at.into(),
        "updated_at" => o.updated_at.into(),
        "status_changed_at" => o.status_changed_at.into(),
        "status_id" => o.status_id.into(),
        _ => SortKey::Int(o.id),
    });
    let reserves = if inc.has("products.offer") {
        state.reserves()
    } else {
        HashMap::new()
    };
    page(ctx, &items, |o| render(state, o, &inc, &reserves))
}

pub(crate) fn get(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let inc = ctx.includes(INCLUDES)?;
    let order = order_or_404(state, id)?;
    let reserves = if inc.has("products.offer") {
        state.reserves()
    } else {
        HashMap::new()
    };
    Ok(Reply::ok(render(state, order, &inc, &reserves)))
}

pub(crate) fn create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let new = read_new_order(state, &mut c, &body, "");
    c.finish()?;
    let id = insert_order(state, new.expect("validated"));
    let order = &state.orders[&id];
    Ok(Reply::created(render(
        state,
        order,
        &Includes::default(),
        &HashMap::new(),
    )))
}

/// The most orders `POST /order/import` takes.
pub(crate) const IMPORT_MAX: usize = 50;

pub(crate) fn import(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let mut news = Vec::new();
    if let Some(list) = c.req_array(&body, "", "orders", Some(IMPORT_MAX)) {
        for (i, item) in list.iter().enumerate() {
            if let Some(new) = read_new_order(state, &mut c, item, &format!("orders.{i}")) {
                news.push(new);
            }
        }
    }
    c.finish()?;
    for new in news {
        insert_order(state, new);
    }
    Ok(Reply::status_true(201))
}

pub(crate) fn update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    order_or_404(state, id)?;
    update_order(state, id, &ctx.json())?;
    let order = &state.orders[&id];
    Ok(Reply::accepted(render(
        state,
        order,
        &Includes::default(),
        &HashMap::new(),
    )))
}

pub(crate) fn payment_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    order_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let new = read_payment(state, &mut c, &body, "");
    c.finish()?;
    let new = new.expect("validated");
    let payment_id = mutate(state, id, |state, now| {
        Ok(insert_payment(state, Destination::Order(id), &new, now))
    })?;
    Ok(Reply::created(render_payment(
        state,
        &state.payments[&payment_id],
        false,
    )))
}

/// Reads `{status, description}` of a payment update.
pub(crate) fn read_payment_update(
    c: &mut Check,
    body: &Value,
) -> (Option<String>, Option<Option<String>>) {
    let status = c.one_of(body, "", "status", &["paid", "not_paid", "canceled"]);
    let description = body
        .get("description")
        .map(|_| c.str(body, "", "description"));
    (status, description)
}

/// Changes a payment's status and description; the caller runs it inside [`mutate`] for
/// order payments so the order's payment status is recomputed.
pub(crate) fn apply_payment_update(
    state: &mut State,
    payment_id: i64,
    status: Option<String>,
    description: Option<Option<String>>,
    now: Time,
) {
    if let Some(p) = state.payments.get_mut(&payment_id) {
        if let Some(s) = status {
            p.status = s;
        }
        if let Some(d) = description {
            p.description = d;
        }
        p.updated_at = now;
    }
}

pub(crate) fn payment_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let payment_id = ctx.id(1, "Payment")?;
    order_or_404(state, id)?;
    if state.payments.get(&payment_id).map(|p| p.destination) != Some(Destination::Order(id)) {
        return Err(ApiError::not_found("Payment", payment_id));
    }
    let body = ctx.json();
    let mut c = Check::new();
    let (status, description) = read_payment_update(&mut c, &body);
    c.finish()?;
    mutate(state, id, |state, now| {
        apply_payment_update(state, payment_id, status, description, now);
        Ok(())
    })?;
    Ok(Reply::accepted(render_payment(
        state,
        &state.payments[&payment_id],
        false,
    )))
}

pub(crate) fn expense_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    order_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let amount = c.req_dec(&body, "", "amount");
    let type_id = c.int_in(&body, "", "expense_type_id", |t| {
        row(&state.expense_types, t).is_some()
    });
    let type_name = c
        .str(&body, "", "expense_type")
        .filter(|s| !s.trim().is_empty());
    if type_id.is_none() && type_name.is_none() && !Check::present(&body, "expense_type_id") {
        c.fail(
            "expense_type_id",
            "The expense type id field is required when expense type is not present.",
        );
    }
    let description = c.str(&body, "", "description");
    let payment_date = c.time(&body, "", "payment_date");
    c.finish()?;
    let expense_id = mutate(state, id, |state, now| {
        let type_id = match (type_id, type_name) {
            (Some(t), _) => t,
            (None, Some(name)) => {
                match row_by_name(&state.expense_types, &name).and_then(|r| r["id"].as_i64()) {
                    Some(t) => t,
                    None => {
                        let t = take(&mut state.ids.expense_type);
                        let alias = name.to_lowercase().replace(' ', "_");
                        state.expense_types.push(json!({
                            "id": t, "name": name, "alias": alias, "is_active": true,
                            "is_reserved": false, "by_order": true,
                        }));
                        t
                    }
                }
            }
            (None, None) => unreachable!("validated above"),
        };
        let expense_id = take(&mut state.ids.expense);
        let order = state.orders.get_mut(&id).expect("checked above");
        order.expenses.push(Expense {
            id: expense_id,
            order_id: id,
            expense_type_id: type_id,
            amount: amount.expect("validated"),
            status: "paid".into(),
            description,
            payment_date: payment_date.unwrap_or(now),
            created_at: now,
            updated_at: now,
        });
        Ok(expense_id)
    })?;
    let e = state.orders[&id]
        .expenses
        .iter()
        .find(|e| e.id == expense_id)
        .expect("just added");
    Ok(Reply::created(render_expense(state, e, false)))
}

pub(crate) fn expense_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let expense_id = ctx.id(1, "Expense")?;
    let order = order_or_404(state, id)?;
    if !order.expenses.iter().any(|e| e.id == expense_id) {
        return Err(ApiError::not_found("Expense", expense_id));
    }
    let body = ctx.json();
    let mut c = Check::new();
    let status = c.one_of(&body, "", "status", &["canceled"]);
    let description = body
        .get("description")
        .map(|_| c.str(&body, "", "description"));
    c.finish()?;
    mutate(state, id, |state, now| {
        let order = state.orders.get_mut(&id).expect("checked above");
        if let Some(e) = order.expenses.iter_mut().find(|e| e.id == expense_id) {
            if let Some(s) = status {
                e.status = s;
            }
            if let Some(d) = description {
                e.description = d;
            }
            e.updated_at = now;
        }
        Ok(())
    })?;
    let e = state.orders[&id]
        .expenses
        .iter()
        .find(|e| e.id == expense_id)
        .expect("exists");
    Ok(Reply::accepted(render_expense(state, e, false)))
}

pub(crate) fn tag_attach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let tag = ctx.id(1, "Tag")?;
    order_or_404(state, id)?;
    if row(&state.tags, tag).is_none() {
        return Err(ApiError::not_found("Tag", tag));
    }
    mutate(state, id, |state, _| {
        let order = state.orders.get_mut(&id).expect("checked above");
        if !order.tags.contains(&tag) {
            order.tags.push(tag);
        }
        Ok(())
    })?;
    Ok(Reply::status_true(202))
}

pub(crate) fn tag_detach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let tag = ctx.id(1, "Tag")?;
    order_or_404(state, id)?;
    if row(&state.tags, tag).is_none() {
        return Err(ApiError::not_found("Tag", tag));
    }
    mutate(state, id, |state, _| {
        state
            .orders
            .get_mut(&id)
            .expect("checked above")
            .tags
            .retain(|t| *t != tag);
        Ok(())
    })?;
    Ok(Reply::no_content())
}

pub(crate) fn attachment_attach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let file = ctx.id(1, "File")?;
    order_or_404(state, id)?;
    if !state.files.contains_key(&file) {
        return Err(ApiError::not_found("File", file));
    }
    mutate(state, id, |state, _| {
        let order = state.orders.get_mut(&id).expect("checked above");
        if !order.attachments.contains(&file) {
            order.attachments.push(file);
        }
        Ok(())
    })?;
    Ok(Reply::status_true(202))
}

pub(crate) fn attachment_detach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Order")?;
    let file = ctx.id(1, "File")?;
    order_or_404(state, id)?;
    if !state.files.contains_key(&file) {
        return Err(ApiError::not_found("File", file));
    }
    mutate(state, id, |state, _| {
        state
            .orders
            .get_mut(&id)
            .expect("checked above")
            .attachments
            .retain(|f| *f != file);
        Ok(())
    })?;
    Ok(Reply::status_true(201))
}
