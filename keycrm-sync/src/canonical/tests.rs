//! The canonical model's mapping, pinned field by field.

use super::*;
use crate::config::SyncConfig;
use crate::entity::order::payment_keys;
use crate::model::{Fields, content_hash};
use keycrm_api::types;
use keycrm_api::{Decimal, Timestamp};
use serde_json::{Value, json};

pub(super) fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(super) fn fields(value: Value) -> Fields {
    serde_json::from_value(value).unwrap()
}

pub(super) fn mappings() -> Mappings {
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

pub(super) fn local_order() -> CanonicalOrder {
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
    let order = order_from_fields("42", &order_fields_from_remote(&remote), &mappings()).unwrap();
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
    let err = order_from_fields("42", &order_fields_from_remote(&remote), &mappings()).unwrap_err();
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
    let err =
        order_from_fields("1", &fields(json!({"lines.A.quantity": "2"})), &mappings()).unwrap_err();
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
    let changed = fields(json!({"payments.1.status": "paid", "payments.LIQPAY-78.amount": "12.3"}));
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
