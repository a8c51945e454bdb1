//! Behaviour of the KeyCRM simulator: authentication, validation bodies, includes, filters,
//! derived values, stock, the leads switch, the quota, webhooks, faults, seeding and the
//! request log. Raw HTTP is used where the exact wire form matters; the generated client
//! where the typed view matters.

use std::time::{Duration, Instant};

use keycrm::Error;
use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig, WebhookDelivery};
use keycrm::api::{Client, Decimal, types};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

mod support;
use support::direct_client;

/// A simulator without a quota, for tests about other things.
async fn unlimited() -> KeyCrmMock {
    KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .webhook_retry_delay(Duration::from_millis(20))
        .start()
        .await
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal literal")
}

/// A raw answer: status, headers and JSON body (`null` for an empty body).
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// Sends a raw request with the simulator's key; `path` is below `/v1`.
async fn raw(mock: &KeyCrmMock, verb: &str, path_and_query: &str, body: Option<Value>) -> Raw {
    raw_with_key(mock, verb, path_and_query, body, Some(mock.api_key())).await
}

async fn raw_with_key(
    mock: &KeyCrmMock,
    verb: &str,
    path_and_query: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Raw {
    let http = reqwest::Client::new();
    let url = format!("{}{path_and_query}", mock.uri());
    let mut request = http
        .request(verb.parse().expect("a method"), url)
        .header("accept", "application/json");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    Raw {
        status,
        headers,
        body,
    }
}

/// Creates an order through the API and returns its JSON.
async fn create_order(mock: &KeyCrmMock, body: Value) -> Value {
    let r = raw(mock, "POST", "/order", Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

fn ids(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|o| o["id"].as_i64().expect("an id"))
        .collect()
}

/// A webhook receiver that answers 200.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

// ---------------------------------------------------------------------------------------
// Authentication, routes, the log

#[tokio::test]
async fn a_missing_or_wrong_key_is_refused_with_laravels_body() {
    let mock = unlimited().await;
    for key in [None, Some("wrong-key")] {
        let r = raw_with_key(&mock, "GET", "/order", None, key).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body, json!({ "message": "Unauthenticated." }));
    }
    let client = Client::builder()
        .api_key("wrong-key")
        .base_url(mock.uri())
        .requests_per_minute(0)
        .max_retries(0)
        .build()
        .unwrap();
    let err = client.order_list().send().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(mock.count("order_list"), 3);
    assert_eq!(mock.rate_limited(), 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_like_laravel_and_the_log_records_everything() {
    let mock = unlimited().await;
    let r = raw(&mock, "GET", "/warehouses", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body["message"],
        "The route v1/warehouses could not be found."
    );
    let r = raw(&mock, "PATCH", "/order", None).await;
    assert_eq!(r.status, 405);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("Supported methods: GET, POST")
    );
    let r = raw(&mock, "GET", "/order/999999", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body["message"],
        "No query results for model [App\\Models\\Order] 999999"
    );

    let log = mock.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].operation, None);
    assert_eq!(log[2].operation, Some("order_get"));
    assert_eq!(log[2].path, "/v1/order/999999");
    assert_eq!(log[2].status, Some(404));
    assert_eq!(mock.count("order_get"), 1);

    mock.seed(SeedConfig {
        orders: 3,
        ..SeedConfig::default()
    });
    mock.reset();
    assert_eq!(mock.request_count(), 0, "reset forgets the log");
    assert!(mock.crm().order_ids().is_empty(), "and the data");
}

// ---------------------------------------------------------------------------------------
// Validation and includes

#[tokio::test]
async fn missing_required_fields_get_laravels_422_body() {
    let mock = unlimited().await;
    let r = raw(&mock, "POST", "/order", Some(json!({}))).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body,
        json!({
            "message": "The source id field is required. (and 1 more error)",
            "errors": {
                "source_id": ["The source id field is required."],
                "buyer": ["The buyer field is required."],
            },
        })
    );
    let r = raw(
        &mock,
        "POST",
        "/order",
        Some(json!({ "source_id": 99, "buyer": {} })),
    )
    .await;
    assert_eq!(
        r.body["errors"]["source_id"],
        json!(["The selected source id is invalid."])
    );
    assert_eq!(
        r.body["errors"]["buyer.full_name"],
        json!([
            "The buyer.full name field is required when none of buyer.email / buyer.phone are present."
        ])
    );
    let r = raw(
        &mock,
        "POST",
        "/buyer",
        Some(json!({ "phone": "+380501234567" })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["full_name"],
        json!(["The full name field is required."])
    );
    assert_eq!(
        r.body["errors"]["phone"],
        json!(["The phone field must be an array."])
    );
    let order = create_order(
        &mock,
        json!({ "source_id": 1, "buyer": { "full_name": "Ганна Бойко" } }),
    )
    .await;
    let r = raw(
        &mock,
        "POST",
        &format!("/order/{}/payment", order["id"]),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["amount"],
        json!(["The amount field is required."])
    );
    assert_eq!(
        r.body["errors"]["payment_method_id"],
        json!(["The payment method id field is required when payment method is not present."])
    );
    let r = raw(
        &mock,
        "PUT",
        "/offers/stocks",
        Some(json!({ "stocks": [{ "sku": "nope" }] })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["warehouse_id"],
        json!(["The warehouse id field is required."])
    );
    assert_eq!(
        r.body["errors"]["stocks.0.sku"],
        json!(["The selected stocks.0.sku is invalid."])
    );
    assert_eq!(
        r.body["errors"]["stocks.0.quantity"],
        json!(["The stocks.0.quantity field is required."])
    );
    for (verb, path, field) in [
        ("POST", "/products", "name"),
        ("POST", "/companies", "name"),
        ("POST", "/products/categories", "name"),
        ("POST", "/pipelines/cards", "contact"),
        ("POST", "/order/import", "orders"),
        ("POST", "/products/import", "products"),
        ("PUT", "/offers", "offers"),
    ] {
        let r = raw(&mock, verb, path, Some(json!({}))).await;
        assert_eq!(r.status, 422, "{verb} {path}");
        assert!(
            r.body["errors"][field].is_array(),
            "{verb} {path}: {}",
            r.body
        );
    }

    // The typed client surfaces the field map.
    let client = direct_client(&mock);
    let body: types::CompanyCreate = serde_json::from_value(json!({ "name": " " })).unwrap();
    let err = client.company_create().body(body).send().await.unwrap_err();
    match err {
        Error::Validation { errors, .. } => {
            assert_eq!(
                errors["name"],
                vec!["The name field is required.".to_string()]
            );
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn batch_limits_are_enforced_with_422() {
    let mock = unlimited().await;
    let order = json!({ "source_id": 1, "buyer": { "phone": "+380501112233" } });
    let r = raw(
        &mock,
        "POST",
        "/order/import",
        Some(json!({ "orders": vec![order.clone(); 51] })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["orders"],
        json!(["The orders field must not have more than 50 items."])
    );
    let r = raw(
        &mock,
        "POST",
        "/order/import",
        Some(json!({ "orders": vec![order; 50] })),
    )
    .await;
    assert_eq!(r.status, 201, "50 is allowed");
    assert_eq!(mock.crm().order_ids().len(), 50);

    let product = json!({ "name": "Товар" });
    let r = raw(
        &mock,
        "POST",
        "/products/import",
        Some(json!({ "products": vec![product.clone(); 101] })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["products"],
        json!(["The products field must not have more than 100 items."])
    );
    let r = raw(
        &mock,
        "POST",
        "/products/import",
        Some(json!({ "products": vec![product; 100] })),
    )
    .await;
    assert_eq!(r.status, 201);

    let r = raw(&mock, "GET", "/offers?limit=1", None).await;
    let offer = r.body["data"][0]["id"].as_i64().unwrap();
    let rows = vec![json!({ "id": offer, "quantity": 1 }); 10_001];
    let r = raw(
        &mock,
        "PUT",
        "/offers/stocks",
        Some(json!({ "warehouse_id": 1, "stocks": rows })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["stocks"],
        json!(["The stocks field must not have more than 10000 items."])
    );
    let rows = vec![json!({ "id": offer, "price": 10 }); 10_001];
    let r = raw(&mock, "PUT", "/offers", Some(json!({ "offers": rows }))).await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["offers"],
        json!(["The offers field must not have more than 10000 items."])
    );
    let rows = vec![json!({ "id": offer, "quantity": 2.5 }); 10_000];
    let r = raw(
        &mock,
        "PUT",
        "/offers/stocks",
        Some(json!({ "warehouse_id": 1, "stocks": rows })),
    )
    .await;
    assert_eq!(r.status, 202, "10,000 rows are allowed");
    let product = raw(&mock, "GET", "/products?limit=1", None).await.body["data"][0]["id"].clone();
    let r = raw(
        &mock,
        "POST",
        &format!("/products/{product}/offers"),
        Some(json!({
            "offers": vec![json!({ "sku": "X" }); 101]
        })),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["errors"]["offers"],
        json!(["The offers field must not have more than 100 items."])
    );
}

#[tokio::test]
async fn unknown_includes_and_sorts_are_refused_naming_the_allowed_ones() {
    let mock = unlimited().await;
    let r = raw(&mock, "GET", "/order?include=buyer,warehouse", None).await;
    assert_eq!(r.status, 400);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Requested include(s) `warehouse` are not allowed."),
        "{message}"
    );
    assert!(
        message.contains("Allowed include(s) are `buyer, products, products.offer, manager, tags"),
        "{message}"
    );
    let r = raw(&mock, "GET", "/buyer?include=orders", None).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("`manager, shipping, company, loyalty, custom_fields")
    );
    let r = raw(&mock, "GET", "/order?sort=-grand_total", None).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Requested sort(s) `grand_total` is not allowed.")
    );

    let client = direct_client(&mock);
    let err = client
        .order_list()
        .include("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let err = client.order_list().limit(51u64).send().await.unwrap_err();
    assert!(
        matches!(err, Error::Validation { .. }),
        "limit is 1..=50: {err:?}"
    );
}

#[tokio::test]
async fn relations_appear_only_when_included() {
    let mock = unlimited().await;
    mock.seed(SeedConfig {
        orders: 2,
        ..SeedConfig::default()
    });
    let r = raw(&mock, "GET", "/order?limit=1", None).await;
    let order = &r.body["data"][0];
    for key in [
        "buyer", "products", "payments", "shipping", "status", "tags",
    ] {
        assert!(order.get(key).is_none(), "{key} without include");
    }
    let r = raw(
        &mock,
        "GET",
        "/order?limit=1&include=products,shipping.lastHistory,customFields",
        None,
    )
    .await;
    let order = &r.body["data"][0];
    assert!(order["products"].is_array());
    assert!(
        order["products"][0].get("offer").is_none(),
        "products without .offer"
    );
    assert!(order["shipping"].get("last_history").is_some());
    assert!(order["shipping"].get("delivery_service").is_none());
    assert!(
        order["custom_fields"].is_array(),
        "the camel-case alias works"
    );
}

// ---------------------------------------------------------------------------------------
// Orders: buyers, filters, derived values, updated_at

#[tokio::test]
async fn orders_link_or_create_their_buyer_and_keep_the_source_uuid() {
    let mock = unlimited().await;
    let first = create_order(&mock, json!({
        "source_id": 2, "source_uuid": "RZ-100",
        "buyer": { "full_name": "Олена Коваленко", "phone": "+380 67 123 45 67", "email": "Olena@ukr.net" },
    }))
    .await;
    let again = create_order(
        &mock,
        json!({
            "source_id": 2, "source_uuid": "RZ-101", "buyer": { "email": "olena@UKR.net" },
        }),
    )
    .await;
    let other = create_order(
        &mock,
        json!({
            "source_id": 2, "buyer": { "full_name": "Петро Мельник", "phone": "+380931112233" },
        }),
    )
    .await;
    assert_eq!(first["client_id"], again["client_id"], "matched by e-mail");
    assert_ne!(first["client_id"], other["client_id"], "a new buyer");
    assert_eq!(first["source_uuid"], "RZ-100");
    assert_eq!(other["source_uuid"], Value::Null);
    let r = raw(
        &mock,
        "GET",
        &format!("/buyer/{}", first["client_id"]),
        None,
    )
    .await;
    assert_eq!(r.body["full_name"], "Олена Коваленко");
    assert_eq!(r.body["phone"], json!(["+380 67 123 45 67"]));
}

#[tokio::test]
async fn order_filters_select_what_they_say() {
    let mock = unlimited().await;
    let a = create_order(&mock, json!({
        "source_id": 1, "source_uuid": "A-1", "ordered_at": "2024-02-10 12:00:00",
        "buyer": { "full_name": "Ірина Бондар", "phone": "+380501000001", "email": "iryna@bondar.ua" },
    }))
    .await;
    let b = create_order(&mock, json!({
        "source_id": 3, "source_uuid": "B-2", "ordered_at": "2024-03-15 08:30:00",
        "buyer": { "full_name": "Остап Мороз", "phone": "+380501000002", "email": "ostap@moroz.ua" },
    }))
    .await;
    let c = create_order(
        &mock,
        json!({
            "source_id": 1, "buyer": { "full_name": "Ірина Бондар", "phone": "+380501000001" },
        }),
    )
    .await;
    let (a, b, c) = (
        a["id"].as_i64().unwrap(),
        b["id"].as_i64().unwrap(),
        c["id"].as_i64().unwrap(),
    );
    raw(
        &mock,
        "PUT",
        &format!("/order/{b}"),
        Some(json!({ "status_id": 2 })),
    )
    .await;

    let cases: Vec<(String, Vec<i64>)> = vec![
        (format!("filter[id]={a},{c}"), vec![a, c]),
        ("filter[source_uuid]=B-2".into(), vec![b]),
        ("filter[source_id]=1".into(), vec![a, c]),
        ("filter[status_id]=2".into(), vec![b]),
        ("filter[status_id]=1,2".into(), vec![a, b, c]),
        ("filter[buyer_phone]=+380 50 100 00 01".into(), vec![a, c]),
        (
            "filter[buyer_email]=OSTAP@moroz.ua,nobody@x.ua".into(),
            vec![b],
        ),
        // created_between is matched against ordered_at, not created_at (which is now).
        (
            "filter[created_between]=2024-02-01 00:00:00, 2024-02-29 23:59:59".into(),
            vec![a],
        ),
        (
            "filter[created_between]=2024-03-15,2024-03-15".into(),
            vec![b],
        ),
        ("filter[payment_status]=not_paid".into(), vec![a, b, c]),
        ("filter[has_tracking_code]=true".into(), vec![]),
        ("sort=-id".into(), vec![c, b, a]),
        (
            "sort=ordered_at&filter[id]=".to_string() + &format!("{a},{b}"),
            vec![a, b],
        ),
    ];
    for (query, expected) in cases {
        let r = raw(&mock, "GET", &format!("/order?{query}"), None).await;
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        assert_eq!(ids(&r.body), expected, "{query}");
    }

    // updated_between (second resolution, like the service): only b changed after the mark.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mark = keycrm::api::Timestamp::now().to_string();
    raw(
        &mock,
        "PUT",
        &format!("/order/{b}"),
        Some(json!({ "manager_comment": "Дзвонили" })),
    )
    .await;
    let r = raw(
        &mock,
        "GET",
        &format!("/order?filter[updated_between]={mark}, 2100-01-01 00:00:00"),
        None,
    )
    .await;
    assert_eq!(ids(&r.body), vec![b]);

    // Buyers have their own filters.
    let r = raw(
        &mock,
        "GET",
        "/buyer?filter[buyer_phone]=380501000001",
        None,
    )
    .await;
    assert_eq!(r.body["total"], 1);
    let buyer = r.body["data"][0]["id"].as_i64().unwrap();
    let r = raw(
        &mock,
        "GET",
        &format!("/buyer?filter[buyer_id]={buyer}&filter[buyer_email]=iryna@bondar.ua"),
        None,
    )
    .await;
    assert_eq!(ids(&r.body), vec![buyer]);
    let r = raw(
        &mock,
        "GET",
        "/buyer?filter[created_between]=2000-01-01,2000-01-02",
        None,
    )
    .await;
    assert_eq!(r.body["total"], 0);
}

#[tokio::test]
async fn updated_at_moves_on_every_write() {
    let mock = unlimited().await;
    mock.seed(SeedConfig {
        orders: 0,
        cards: 1,
        ..SeedConfig::default()
    });
    let order = create_order(
        &mock,
        json!({ "source_id": 1, "buyer": { "full_name": "Юлія Руденко" } }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    let upload = direct_client(&mock)
        .storage_upload("a.txt", b"abc".to_vec())
        .await
        .unwrap();
    let file = upload.id.unwrap();
    let mut last = order["updated_at"].as_str().unwrap().to_string();
    let writes: Vec<(&str, String, Option<Value>)> = vec![
        (
            "PUT",
            format!("/order/{id}"),
            Some(json!({ "manager_comment": "x" })),
        ),
        (
            "POST",
            format!("/order/{id}/payment"),
            Some(json!({ "amount": 1, "payment_method_id": 1 })),
        ),
        (
            "POST",
            format!("/order/{id}/expense"),
            Some(json!({ "amount": 1, "expense_type": "Доставка" })),
        ),
        ("POST", format!("/order/{id}/tag/2"), None),
        ("DELETE", format!("/order/{id}/tag/2"), None),
        ("POST", format!("/order/{id}/attachment/{file}"), None),
        ("DELETE", format!("/order/{id}/attachment/{file}"), None),
    ];
    for (verb, path, body) in writes {
        let r = raw(&mock, verb, &path, body).await;
        assert!((200..300).contains(&r.status), "{verb} {path}: {}", r.body);
        let now = raw(&mock, "GET", &format!("/order/{id}"), None).await.body["updated_at"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            now > last,
            "{verb} {path} must move updated_at ({last} -> {now})"
        );
        assert!(
            now.ends_with('Z') && now.len() == 27,
            "ISO with microseconds: {now}"
        );
        last = now;
    }
    let buyer = order["client_id"].as_i64().unwrap();
    let before = raw(&mock, "GET", &format!("/buyer/{buyer}"), None)
        .await
        .body["updated_at"]
        .clone();
    raw(
        &mock,
        "PUT",
        &format!("/buyer/{buyer}"),
        Some(json!({ "full_name": "Юлія Руденко", "note": "VIP" })),
    )
    .await;
    let after = raw(&mock, "GET", &format!("/buyer/{buyer}"), None)
        .await
        .body["updated_at"]
        .clone();
    assert!(after.as_str() > before.as_str());
    mock.crm()
        .edit_buyer(buyer, json!({ "phone": ["+380671234000"] }));
    let crm = raw(&mock, "GET", &format!("/buyer/{buyer}"), None)
        .await
        .body;
    assert!(
        crm["updated_at"].as_str() > after.as_str(),
        "a change in the CRM moves it too"
    );
    assert_eq!(crm["phone"], json!(["+380671234000"]));
}

#[tokio::test]
async fn payment_status_follows_the_payments() {
    let mock = unlimited().await;
    let order = create_order(
        &mock,
        json!({
            "source_id": 1, "buyer": { "full_name": "Віра Ткачук" },
            "products": [{ "name": "Кошик плетений", "price": 400, "quantity": 1.5 }],
            "shipping_price": 40,
        }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    assert_eq!(order["grand_total"], "640.00");
    assert_eq!(order["payment_status"], "not_paid");
    let status = |mock: &KeyCrmMock| mock.crm().order(id).unwrap()["payment_status"].clone();
    let p1 = raw(
        &mock,
        "POST",
        &format!("/order/{id}/payment"),
        Some(json!({ "amount": 200, "payment_method_id": 2 })),
    )
    .await;
    assert_eq!(
        p1.body["amount"], "200.00",
        "payment amounts are decimal strings"
    );
    assert_eq!(p1.body["status"], "paid", "status defaults to paid");
    assert_eq!(status(&mock), "part_paid");
    let p2 = raw(
        &mock,
        "POST",
        &format!("/order/{id}/payment"),
        Some(json!({ "amount": "440.00", "payment_method": "Apple Pay" })),
    )
    .await;
    assert_eq!(status(&mock), "paid");
    raw(
        &mock,
        "POST",
        &format!("/order/{id}/payment"),
        Some(json!({ "amount": 10, "payment_method_id": 1 })),
    )
    .await;
    assert_eq!(status(&mock), "overpaid");
    raw(
        &mock,
        "PUT",
        &format!("/order/{id}/payment/{}", p2.body["id"]),
        Some(json!({ "status": "canceled" })),
    )
    .await;
    assert_eq!(status(&mock), "part_paid");
    let pending = mock.crm().add_order_payment(id, 430, "not_paid");
    assert_eq!(
        status(&mock),
        "part_paid",
        "an unpaid payment does not count"
    );
    mock.crm().set_payment_status(pending, "paid");
    assert_eq!(status(&mock), "paid");
    let r = raw(
        &mock,
        "GET",
        &format!("/order?filter[payment_status]=paid&filter[id]={id}"),
        None,
    )
    .await;
    assert_eq!(ids(&r.body), vec![id]);
}

// ---------------------------------------------------------------------------------------
// Stock

#[tokio::test]
async fn stock_is_set_absolutely_per_warehouse_by_id_or_sku() {
    let mock = unlimited().await;
    let r = raw(
        &mock,
        "POST",
        "/products",
        Some(json!({ "name": "Мед акацієвий", "sku": "HON-ACA", "unit_type": "кг", "price": 350 })),
    )
    .await;
    assert_eq!(r.status, 201);
    let offers = raw(&mock, "GET", "/offers?filter[sku]=HON-ACA", None).await;
    let offer = offers.body["data"][0]["id"].as_i64().unwrap();

    let put = |rows: Value, warehouse: i64| {
        let mock = &mock;
        async move {
            raw(
                mock,
                "PUT",
                "/offers/stocks",
                Some(json!({ "warehouse_id": warehouse, "stocks": rows })),
            )
            .await
        }
    };
    assert_eq!(
        put(json!([{ "sku": "HON-ACA", "quantity": 12.5 }]), 1)
            .await
            .status,
        202
    );
    assert_eq!(
        put(json!([{ "sku": "HON-ACA", "quantity": 12.5 }]), 1)
            .await
            .status,
        202
    );
    assert_eq!(
        put(json!([{ "id": offer, "quantity": "4.250" }]), 2)
            .await
            .status,
        202
    );
    let r = raw(
        &mock,
        "GET",
        "/offers/stocks?filter[offers_sku]=HON-ACA",
        None,
    )
    .await;
    assert_eq!(
        r.body["data"][0]["quantity"], 16.75,
        "absolute per warehouse, summed"
    );
    assert!(
        r.body["data"][0].get("warehouse").is_none(),
        "totals only without details"
    );
    let r = raw(
        &mock,
        "GET",
        &format!("/offers/stocks?filter[offers_id]={offer}&filter[details]=true"),
        None,
    )
    .await;
    assert_eq!(
        r.body["data"][0]["warehouse"],
        json!([
            { "id": 1, "name": "Основний склад (Київ)", "quantity": "12.500", "reserve": "0.000" },
            { "id": 2, "name": "Склад Львів", "quantity": "4.250", "reserve": "0.000" },
        ])
    );
    assert_eq!(
        put(json!([{ "id": offer, "quantity": 0 }]), 1).await.status,
        202
    );
    assert_eq!(mock.crm().stock(offer), Some((dec("4.25"), dec("0"))));
    let r = put(json!([{ "id": offer, "quantity": -1 }]), 1).await;
    assert_eq!(
        r.body["errors"]["stocks.0.quantity"],
        json!(["The stocks.0.quantity field must be at least 0."])
    );
    let r = put(json!([{ "id": offer, "quantity": 1 }]), 9).await;
    assert_eq!(
        r.body["errors"]["warehouse_id"],
        json!(["The selected warehouse id is invalid."])
    );

    // Orders in a reserving status hold a reserve; shipping writes the goods off.
    let order = create_order(
        &mock,
        json!({
            "source_id": 1, "buyer": { "full_name": "Роман Шевчук" },
            "products": [{ "sku": "HON-ACA", "quantity": 1.5 }],
        }),
    )
    .await;
    put(json!([{ "id": offer, "quantity": 10 }]), 1).await;
    mock.crm()
        .set_order_status(order["id"].as_i64().unwrap(), 2);
    assert_eq!(mock.crm().stock(offer), Some((dec("14.25"), dec("1.5"))));
    mock.crm()
        .set_order_status(order["id"].as_i64().unwrap(), 4);
    assert_eq!(mock.crm().stock(offer), Some((dec("12.75"), dec("0"))));
}

// ---------------------------------------------------------------------------------------
// Pipelines switch

#[tokio::test]
async fn pipelines_answer_400_when_leads_are_switched_off() {
    let mock = KeyCrmMock::builder().leads_enabled(false).start().await;
    for path in [
        "/pipelines",
        "/pipelines/1/statuses",
        "/pipelines/cards",
        "/pipelines/cards/401",
    ] {
        let r = raw(&mock, "GET", path, None).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (400, json!({ "message": "Leads are not enabled" })),
            "{path}"
        );
    }
    let r = raw(
        &mock,
        "POST",
        "/pipelines/cards",
        Some(json!({ "contact": { "full_name": "X" } })),
    )
    .await;
    assert_eq!(r.status, 400);
    let client = direct_client(&mock);
    let err = client.pipeline_list().send().await.unwrap_err();
    match err {
        Error::Api {
            status: 400,
            message,
            ..
        } => assert_eq!(message.as_deref(), Some("Leads are not enabled")),
        other => panic!("{other:?}"),
    }
    mock.crm().set_leads_enabled(true);
    assert_eq!(raw(&mock, "GET", "/pipelines", None).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Quota

#[tokio::test]
async fn the_quota_answers_429_with_retry_after() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::per_minute(5))
        .start()
        .await;
    for i in 0..5 {
        let r = raw(&mock, "GET", "/order/status", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-ratelimit-limit"], "5");
        assert_eq!(
            r.headers["x-ratelimit-remaining"],
            (4 - i).to_string().as_str()
        );
    }
    let r = raw(&mock, "GET", "/order", None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body, json!({ "message": "Too Many Attempts." }));
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (59..=60).contains(&retry),
        "seconds until the window closes: {retry}"
    );
    assert_eq!(mock.rate_limited(), 1);

    let client = direct_client(&mock);
    let err = client.order_list().send().await.unwrap_err();
    match err {
        Error::RateLimited { retry_after, .. } => {
            assert!(retry_after.is_some_and(|d| d.as_secs() >= 59))
        }
        other => panic!("expected 429, got {other:?}"),
    }
    assert_eq!(mock.rate_limited(), 2);

    // A fresh window with a fast quota, as client-side tests use.
    mock.set_quota(Quota::new(3, Duration::from_secs(1)));
    for _ in 0..3 {
        assert_eq!(raw(&mock, "GET", "/users", None).await.status, 200);
    }
    assert_eq!(raw(&mock, "GET", "/users", None).await.status, 429);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(
        raw(&mock, "GET", "/users", None).await.status,
        200,
        "the next window"
    );
}

// ---------------------------------------------------------------------------------------
// Webhooks

fn events(deliveries: &[WebhookDelivery]) -> Vec<Option<&str>> {
    deliveries.iter().map(|d| d.event.as_deref()).collect()
}

#[tokio::test]
async fn order_status_changes_send_the_flat_order_record() {
    let mock = unlimited().await;
    let hooks = receiver().await;
    mock.register_webhook(format!("{}/keycrm?token=s3cr3t", hooks.uri()));
    let order = create_order(
        &mock,
        json!({
            "source_id": 1, "source_uuid": "WH-1", "buyer": { "full_name": "Софія Олійник" },
            "products": [{ "name": "Ваза", "price": 300 }],
        }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    assert!(
        mock.wait_for_webhooks().await.is_empty(),
        "creating is no status change"
    );

    raw(
        &mock,
        "PUT",
        &format!("/order/{id}"),
        Some(json!({ "status_id": 2 })),
    )
    .await;
    mock.crm().set_order_status(id, 5);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(
        events(&deliveries),
        vec![Some("order.change_order_status"); 2]
    );
    let by_api = &deliveries[0].payload;
    assert_eq!(by_api["event"], "order.change_order_status");
    let context = &by_api["context"];
    assert_eq!(
        (context["id"].as_i64(), context["status_id"].as_i64()),
        (Some(id), Some(2))
    );
    assert_eq!(context["source_uuid"], "WH-1");
    assert_eq!(
        context["grand_total"], "300.00",
        "decimals are strings in the raw record"
    );
    assert_eq!(context["expenses_sum"], "0.00");
    for key in [
        "client_id",
        "status_group_id",
        "status_changed_at",
        "payment_status",
        "ordered_at",
        "updated_at",
    ] {
        assert!(context.get(key).is_some(), "{key} in the context");
    }
    for key in ["buyer", "products", "payments", "shipping"] {
        assert!(context.get(key).is_none(), "{key} is not in a flat record");
    }
    let by_crm = &deliveries[1].payload["context"];
    assert_eq!(by_crm["status_id"], 5);
    assert!(
        by_crm["closed_at"].is_string(),
        "a closing status sets closed_at"
    );
    assert_eq!(deliveries[0].attempts, vec![Some(200)]);

    let received = hooks.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].url.query(),
        Some("token=s3cr3t"),
        "the URL is all KeyCRM sends"
    );
    assert_eq!(received[0].headers["content-type"], "application/json");
    assert!(received[0].headers.get("x-signature").is_none());
}

#[tokio::test]
async fn payment_and_lead_status_changes_send_their_events() {
    let mock = unlimited().await;
    mock.seed(SeedConfig {
        orders: 0,
        cards: 2,
        ..SeedConfig::default()
    });
    let hooks = receiver().await;
    mock.register_webhook(format!("{}/hook", hooks.uri()));
    let order = create_order(
        &mock,
        json!({
            "source_id": 1, "buyer": { "full_name": "Дмитро Кузьменко" },
            "products": [{ "name": "Стілець", "price": 900 }],
        }),
    )
    .await;
    let id = order["id"].as_i64().unwrap();
    raw(
        &mock,
        "POST",
        &format!("/order/{id}/payment"),
        Some(json!({ "amount": 900, "payment_method_id": 1 })),
    )
    .await;
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(
        events(&deliveries),
        vec![Some("order.change_payment_status")]
    );
    assert_eq!(deliveries[0].payload["context"]["payment_status"], "paid");
    assert_eq!(deliveries[0].payload["context"]["payments_total"], "900.00");

    let card = raw(
        &mock,
        "GET",
        "/pipelines/cards?filter[pipeline_id]=1&limit=1",
        None,
    )
    .await
    .body["data"][0]
        .clone();
    let card_id = card["id"].as_i64().unwrap();
    let next = if card["status_id"] == 2 { 3 } else { 2 };
    raw(
        &mock,
        "PUT",
        &format!("/pipelines/cards/{card_id}"),
        Some(json!({ "status_id": next })),
    )
    .await;
    mock.crm().set_card_status(card_id, 4);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(
        events(&deliveries[1..]),
        vec![Some("lead.change_lead_status"); 2]
    );
    let context = &deliveries[1].payload["context"];
    assert_eq!(
        (context["id"].as_i64(), context["status_id"].as_i64()),
        (Some(card_id), Some(next))
    );
    for key in [
        "title",
        "pipeline_id",
        "contact_id",
        "manager_id",
        "status_changed_at",
        "updated_at",
    ] {
        assert!(context.get(key).is_some(), "{key} in the card record");
    }
    assert!(
        context.get("contact").is_none(),
        "no contact details in the record"
    );
    assert_eq!(deliveries[2].payload["context"]["is_finished"], true);
}

#[tokio::test]
async fn stock_changes_made_through_the_api_send_the_stock_array() {
    let mock = unlimited().await;
    let hooks = receiver().await;
    let orders_hook = receiver().await;
    mock.register_stock_webhook(format!("{}/stock", hooks.uri()));
    mock.register_webhook(format!("{}/orders", orders_hook.uri()));
    raw(
        &mock,
        "POST",
        "/products",
        Some(json!({ "name": "Кава мелена", "sku": "COF-GR", "price": 420 })),
    )
    .await;
    let offer = raw(&mock, "GET", "/offers?filter[sku]=COF-GR", None)
        .await
        .body["data"][0]["id"]
        .as_i64()
        .unwrap();
    let r = raw(
        &mock,
        "PUT",
        "/offers/stocks",
        Some(json!({ "warehouse_id": 1, "stocks": [{ "sku": "COF-GR", "quantity": 7.5 }] })),
    )
    .await;
    assert_eq!(r.status, 202);
    raw(
        &mock,
        "PUT",
        "/offers/stocks",
        Some(json!({ "warehouse_id": 1, "stocks": [{ "sku": "COF-GR", "quantity": 7.5 }] })),
    )
    .await;
    mock.crm().set_stock(offer, 2, 2);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(
        deliveries.len(),
        2,
        "setting the same balance again is no change"
    );
    assert_eq!(deliveries[0].event, None);
    assert_eq!(
        deliveries[0].payload,
        json!([{ "offer_id": offer, "sku": "COF-GR", "in_stock": 7.5, "in_reserve": 0 }]),
        "a bare array, no event wrapper"
    );
    assert_eq!(
        deliveries[1].payload[0]["in_stock"], 9.5,
        "the sum over warehouses"
    );

    // An order that reserves goods changes the reserve: another stock webhook.
    let order = create_order(
        &mock,
        json!({
            "source_id": 1, "buyer": { "full_name": "Тетяна Марченко" },
            "products": [{ "sku": "COF-GR", "quantity": 2 }],
        }),
    )
    .await;
    raw(
        &mock,
        "PUT",
        &format!("/order/{}", order["id"]),
        Some(json!({ "status_id": 3 })),
    )
    .await;
    let deliveries = mock.wait_for_webhooks().await;
    let last = deliveries.last().unwrap();
    assert_eq!(
        last.payload,
        json!([{ "offer_id": offer, "sku": "COF-GR", "in_stock": 9.5, "in_reserve": 2 }])
    );
    assert_eq!(hooks.received_requests().await.unwrap().len(), 3);
    assert_eq!(
        orders_hook.received_requests().await.unwrap().len(),
        1,
        "order events go to their own receiver"
    );
}

#[tokio::test]
async fn deliveries_not_answered_with_200_are_retried_three_times_in_all() {
    let mock = unlimited().await;
    let hooks = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hooks)
        .await;
    Mock::given(method("POST"))
        .and(path("/created"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&hooks)
        .await;
    mock.register_webhook(format!("{}/flaky", hooks.uri()));
    mock.register_webhook(format!("{}/created", hooks.uri()));
    mock.register_webhook("http://127.0.0.1:9/unreachable");
    let order = create_order(
        &mock,
        json!({ "source_id": 1, "buyer": { "full_name": "Богдан Левченко" } }),
    )
    .await;
    mock.crm()
        .set_order_status(order["id"].as_i64().unwrap(), 6);
    let deliveries = mock.wait_for_webhooks().await;
    assert_eq!(deliveries.len(), 3);
    assert_eq!(
        deliveries[0].attempts,
        vec![Some(500), Some(500), Some(200)]
    );
    assert!(deliveries[0].delivered);
    assert_eq!(
        deliveries[1].attempts,
        vec![Some(201); 3],
        "only 200 counts as received"
    );
    assert!(!deliveries[1].delivered);
    assert_eq!(deliveries[2].attempts, vec![None; 3]);
    assert!(!deliveries[2].delivered);
}

// ---------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn failing_the_next_requests_applies_nothing() {
    let mock = unlimited().await;
    let client = direct_client(&mock);
    mock.faults().fail_next(2, 503);
    mock.faults().fail_next(1, 429);
    let body: types::BuyerCreate =
        serde_json::from_value(json!({ "full_name": "Марія Гончаренко" })).unwrap();
    let first = client
        .buyer_create()
        .body(body.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(first.status(), Some(503));
    let second = raw(&mock, "GET", "/buyer", None).await;
    assert_eq!(
        (second.status, second.body.clone()),
        (503, json!({ "message": "Service Unavailable" }))
    );
    let third = raw(&mock, "GET", "/buyer", None).await;
    assert_eq!(
        (third.status, third.headers["retry-after"].to_str().unwrap()),
        (429, "1")
    );
    let ok = raw(&mock, "GET", "/buyer", None).await;
    assert_eq!(
        (ok.status, ok.body["total"].clone()),
        (200, json!(0)),
        "the failed create was not applied"
    );
    assert_eq!(mock.faults().served(), 3);
    assert_eq!(
        mock.rate_limited(),
        0,
        "injected 429s are not quota rejections"
    );

    // A seeded share fails the same requests every time.
    let a = share_pattern(&mock).await;
    let b = share_pattern(&mock).await;
    assert_eq!(a, b);
    let failed = a.iter().filter(|s| **s == 502).count();
    assert!((2..=12).contains(&failed), "about 30% of 20: {failed}");
}

/// The statuses of 20 requests while 30% fail with a seeded generator.
async fn share_pattern(mock: &KeyCrmMock) -> Vec<u16> {
    mock.faults().fail_share(0.3, 502, 99);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(raw(mock, "GET", "/order/tag", None).await.status);
    }
    mock.faults().clear();
    statuses
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let mock = unlimited().await;
    mock.faults().set_latency(Duration::from_millis(250));
    let started = Instant::now();
    assert_eq!(raw(&mock, "GET", "/order/source", None).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
    mock.faults().set_latency(Duration::ZERO);
    let started = Instant::now();
    raw(&mock, "GET", "/order/source", None).await;
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn a_dropped_connection_gives_no_response_and_applies_nothing() {
    let mock = unlimited().await;
    let client = direct_client(&mock);
    mock.faults().drop_next(1);
    let body: types::OrderCreate = serde_json::from_value(
        json!({ "source_id": 1, "source_uuid": "DROP-1", "buyer": { "full_name": "Олег Бойко" } }),
    )
    .unwrap();
    let err = client.order_create().body(body).send().await.unwrap_err();
    assert_eq!(err.status(), None, "no HTTP status at all: {err:?}");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(mock.crm().order_ids().is_empty(), "not applied");
    assert_eq!(mock.requests()[0].status, None, "logged as dropped");
    assert_eq!(
        raw(&mock, "GET", "/order", None).await.status,
        200,
        "later requests work"
    );
}

#[tokio::test]
async fn a_lost_create_response_times_out_but_the_order_exists() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(Duration::from_secs(5))
        .start()
        .await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    mock.faults().lose_next_creates(1);
    let body: types::OrderCreate =
        serde_json::from_value(json!({ "source_id": 2, "source_uuid": "LOST-1", "buyer": { "full_name": "Христина Поліщук" } })).unwrap();
    let started = Instant::now();
    let err = client.order_create().body(body).send().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The safe recovery: look the order up by its source uuid before creating it again.
    let found = client
        .order_list()
        .filter_source_uuid("LOST-1")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total, Some(1), "the create was applied");
    assert_eq!(mock.faults().served(), 1);
}

#[tokio::test]
async fn a_seeded_share_of_create_answers_is_lost() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .lost_response_delay(Duration::from_secs(5))
        .start()
        .await;
    let client = mock
        .client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    mock.faults().lose_create_share(0.5, 7);
    let mut lost = 0;
    for n in 0..12 {
        let body: types::BuyerCreate =
            serde_json::from_value(json!({ "full_name": format!("Покупець {n}") })).unwrap();
        if let Err(e) = client.buyer_create().body(body).send().await {
            assert!(matches!(e, Error::Timeout { .. }));
            lost += 1;
        }
    }
    assert!((2..=10).contains(&lost), "about half: {lost}");
    assert_eq!(mock.faults().served(), lost);
    let all = client.buyer_list().send().await.unwrap().into_inner();
    assert_eq!(
        all.total,
        Some(12),
        "every create was applied, answered or not"
    );
}

// ---------------------------------------------------------------------------------------
// Seeding

#[tokio::test]
async fn seeding_is_deterministic_and_looks_ukrainian() {
    let config = SeedConfig {
        orders: 30,
        seed: 2024,
        ..SeedConfig::default()
    };
    let a = unlimited().await;
    let b = unlimited().await;
    let seeded_a = a.seed(config.clone());
    let seeded_b = b.seed(config);
    assert_eq!(seeded_a, seeded_b, "the same ids");
    for id in &seeded_a.orders {
        assert_eq!(a.crm().order(*id), b.crm().order(*id), "order {id}");
    }
    let buyers = raw(&a, "GET", "/buyer?limit=50", None).await.body;
    for buyer in buyers["data"].as_array().unwrap() {
        let name = buyer["full_name"].as_str().unwrap();
        assert!(
            name.chars().any(|c| ('\u{0400}'..='\u{04FF}').contains(&c)),
            "Cyrillic: {name}"
        );
        let phone = buyer["phone"][0].as_str().unwrap();
        assert!(phone.starts_with("+380") && phone.len() == 13, "{phone}");
    }
    let stocks = raw(&a, "GET", "/offers/stocks?limit=50", None).await.body;
    let fractional = stocks["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["quantity"].as_f64().is_some_and(|q| q.fract() != 0.0));
    assert!(
        fractional,
        "goods sold by weight or length have fractional stock"
    );
    let other = unlimited().await.seed(SeedConfig {
        seed: 7,
        ..SeedConfig::default()
    });
    assert_eq!(
        other.orders[0], seeded_a.orders[0],
        "ids come from the counters"
    );
    let lines = raw(&a, "GET", "/order?limit=50&include=products.offer", None)
        .await
        .body;
    let linked = lines["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["products"].as_array().unwrap().clone());
    assert!(
        linked.clone().any(|l| l["offer"]["id"].is_i64()),
        "orders reference seeded offers"
    );
}
