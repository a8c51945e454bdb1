//! The catalogue, stock and buyer mappings, the normalisers and the configured mappings.

use super::tests::{dec, fields, local_order, mappings, ts};
use super::*;
use crate::config::SyncConfig;
use crate::entity::{
    self, Bodies, Entity, buyer::Buyer, offer::Offer, order::Order, product::Product, stock::Stock,
};
use crate::field::FieldPath;
use crate::model::Fields;
use keycrm_api::Decimal;
use keycrm_api::types;
use serde_json::{Value, json};

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
        serde_json::to_value(offer_update_row(&changed, OfferRef::Sku("TEA-1".into())).unwrap())
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

/// Every key a kind's mapping writes lies under a field path the kind says it owns.
fn owns_its_keys<K: Entity>(fields: &Fields) {
    assert!(!fields.is_empty());
    for key in fields.keys() {
        let path = FieldPath::parse(key);
        assert!(
            K::FIELDS.iter().any(|owned| path.is_under(&owned.key())),
            "{} does not own `{key}`",
            K::KIND
        );
    }
}

/// The kind maps its record to fields and back to the same fields.
fn round_trips<K: Entity>(local: &K::Local, m: &Mappings) -> Fields {
    let fields = K::fields_from_local(local, m).unwrap();
    owns_its_keys::<K>(&fields);
    let back = K::from_fields(&K::local_id(local), &fields, m).unwrap();
    assert_eq!(K::fields_from_local(&back, m).unwrap(), fields);
    assert_eq!(K::snapshot(local, m).unwrap().fields, fields);
    fields
}

fn json_of(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn each_kind_owns_its_keys_and_maps_both_ways_through_the_trait() {
    let m = mappings();

    let order = local_order();
    let fields = round_trips::<Order>(&order, &m);
    assert_eq!(fields, order_fields_from_local(&order, &m).unwrap());
    assert_eq!(
        Order::natural_keys(&fields),
        vec![(entity::order::SOURCE_UUID, "WEB-1001".to_string())]
    );
    assert_eq!(
        json_of(Order::create_body(&fields, &m).unwrap()),
        json_of(order_create_body(&fields, &m).unwrap())
    );

    let buyer = CanonicalBuyer {
        local_id: "b1".into(),
        name: "Olena Petrenko".into(),
        phones: vec!["+38 (067) 123-45-67".into()],
        emails: vec![" Olena@Example.com ".into()],
        note: Some("regular".into()),
        updated_at: Some(ts("2024-05-01 10:00:00")),
    };
    let fields = round_trips::<Buyer>(&buyer, &m);
    assert_eq!(
        Buyer::natural_keys(&fields),
        vec![
            (FieldPath::item("phone", 0), "+380671234567".to_string()),
            (FieldPath::item("email", 0), "olena@example.com".to_string()),
        ]
    );
    assert_eq!(
        json_of(Buyer::update_body(&fields).unwrap()),
        json_of(buyer_update_body(&fields).unwrap())
    );

    let product = CanonicalProduct {
        local_id: "p1".into(),
        sku: Some("TEA-1".into()),
        name: "Green tea".into(),
        description: None,
        price: Some(dec("120.50")),
        category_id: Some(3),
        updated_at: None,
    };
    let fields = round_trips::<Product>(&product, &m);
    assert_eq!(
        Product::natural_keys(&fields),
        vec![(entity::product::SKU, "TEA-1".to_string())]
    );

    let offer = CanonicalOffer {
        local_id: "o1".into(),
        sku: "TEA-1".into(),
        product_sku: None,
        price: Some(dec("120.5")),
        purchased_price: Some(dec("80")),
        updated_at: None,
    };
    let fields = round_trips::<Offer>(&offer, &m);
    assert_eq!(
        Offer::natural_keys(&fields),
        vec![(entity::offer::SKU, "TEA-1".to_string())]
    );

    let stock = CanonicalStock {
        sku: "TEA-1".into(),
        warehouse: "main".into(),
        quantity: dec("4.50"),
    };
    assert_eq!(Stock::local_id(&stock), "main/TEA-1");
    let fields = round_trips::<Stock>(&stock, &m);
    assert!(Stock::natural_keys(&fields).is_empty());
    assert!(matches!(
        Stock::from_fields("TEA-1", &fields, &m),
        Err(MappingError::InvalidField { .. })
    ));
}

fn poland() -> crate::phone::PhoneRegion {
    crate::phone::PhoneRegion {
        country_code: "48".into(),
        trunk_prefix: String::new(),
        national_digits: 9,
    }
}

#[test]
fn the_configured_phone_region_reaches_the_canonical_model() {
    let config = SyncConfig {
        phone_region: poland(),
        ..SyncConfig::default()
    };
    let polish = Mappings::from_config(&config);
    assert_eq!(polish.phone_region(), &poland());
    assert_eq!(
        mappings().with_phone_region(poland()).phone_region(),
        &poland()
    );
    assert_eq!(
        Mappings::new().phone_region(),
        &crate::phone::PhoneRegion::default()
    );

    // A buyer: local national number, KeyCRM's number without `+`: the same fields.
    let local = CanonicalBuyer {
        local_id: "c-1".into(),
        name: "Anna Nowak".into(),
        phones: vec!["501 234 567".into()],
        ..CanonicalBuyer::default()
    };
    let remote: types::Buyer = serde_json::from_value(json!({
        "id": 5, "full_name": "Anna Nowak", "phone": ["501234567"]
    }))
    .unwrap();
    let expected = fields(json!({"full_name": "Anna Nowak", "phone.0": "+48501234567"}));
    assert_eq!(Buyer::fields_from_local(&local, &polish).unwrap(), expected);
    assert_eq!(
        <Buyer as entity::RemoteRecord>::fields_from_remote(&remote, &polish).unwrap(),
        expected
    );
    assert_eq!(buyer_fields_from_local_in(&local, &poland()), expected);
    assert_eq!(buyer_fields_from_remote_in(&remote, &poland()), expected);
    assert_eq!(
        Buyer::natural_keys(&expected),
        vec![(FieldPath::item("phone", 0), "+48501234567".to_string())]
    );

    // With default mappings (and the region-free functions), Ukraine as before.
    let ukrainian = fields(json!({"full_name": "Anna Nowak", "phone.0": "+380501234567"}));
    assert_eq!(
        Buyer::fields_from_local(&local, &Mappings::new()).unwrap(),
        ukrainian
    );
    assert_eq!(buyer_fields_from_local(&local), ukrainian);
    assert_eq!(buyer_fields_from_remote(&remote), ukrainian);

    // An order: the buyer's and the recipient's phones.
    let mut order = local_order();
    order.buyer.phone = Some("501 234 567".into());
    order.shipping.recipient_phone = Some("(501) 234-567".into());
    let m = mappings().with_phone_region(poland());
    let local_fields = Order::fields_from_local(&order, &m).unwrap();
    assert_eq!(local_fields["buyer.phone"], json!("+48501234567"));
    assert_eq!(
        local_fields["shipping.recipient_phone"],
        json!("+48501234567")
    );
    let default_fields = order_fields_from_local(&order, &mappings()).unwrap();
    assert_eq!(default_fields["buyer.phone"], json!("+380501234567"));
    assert_eq!(
        default_fields["shipping.recipient_phone"],
        json!("+380501234567")
    );

    // KeyCRM's copy of the order, its phones without `+`, maps to the same fields (no diff).
    let mut remote_order =
        serde_json::to_value(order_create_body(&local_fields, &m).unwrap()).unwrap();
    remote_order["id"] = json!(1501);
    remote_order["status_id"] = json!(1);
    remote_order["buyer"]["phone"] = json!("501234567");
    remote_order["shipping"]["recipient_phone"] = json!("501234567");
    let remote_order: types::Order = serde_json::from_value(remote_order).unwrap();
    let remote_fields =
        <Order as entity::RemoteRecord>::fields_from_remote(&remote_order, &m).unwrap();
    assert_eq!(remote_fields["buyer.phone"], json!("+48501234567"));
    assert_eq!(
        remote_fields["shipping.recipient_phone"],
        json!("+48501234567")
    );
    assert_eq!(
        order_fields_from_remote_in(&remote_order, &poland()),
        remote_fields
    );
    assert_eq!(
        order_fields_from_remote(&remote_order)["buyer.phone"],
        json!("+380501234567")
    );
}
