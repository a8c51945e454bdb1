//! Decoding that survives real data (issue 8): the shapes below are what live accounts and the
//! vendor's own examples send, and each one failed a whole response before.

use keycrm_api::{Paginate, types};
use serde_json::json;
use wiremock::ResponseTemplate;
use wiremock::matchers::query_param;

use crate::support::{api, json, only_request, query_pairs, setup};

/// An order as a live account sends it with `include=payments`: the first payment's method is
/// a plain name, the second the vendor's object.
fn order_with_payments(id: i64) -> serde_json::Value {
    json!({
        "id": id,
        "source_id": 2,
        "source_uuid": 123456,
        "status_id": 1,
        "grand_total": "880.00",
        "is_gift": 0,
        "has_reserves": "false",
        "payments": [
            {
                "id": 501,
                "destination_id": id,
                "payment_method_id": 4,
                "payment_method": "Apple Pay",
                "amount": "440.00",
                "status": "paid"
            },
            {
                "id": 502,
                "destination_id": id,
                "payment_method_id": 2,
                "payment_method": {"id": 2, "name": "Card", "alias": "card", "is_active": true},
                "amount": 440,
                "status": "not_paid"
            }
        ],
        "loyalty_tier": "gold"
    })
}

fn page_of(items: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "current_page": 1, "last_page": 1, "per_page": 50, "total": items.len(),
        "next_page_url": null, "data": items
    })
}

#[tokio::test]
async fn payment_method_as_a_name_or_an_object_reads_in_list_and_get() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .and(query_param("include", "payments"))
        .respond_with(json(200, page_of(vec![order_with_payments(7001)])))
        .expect(1)
        .mount(&server)
        .await;
    api("GET", "/order/7001")
        .and(query_param("include", "payments"))
        .respond_with(json(200, order_with_payments(7001)))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .order_list()
        .include("payments")
        .send()
        .await
        .expect("a page whose payment method is a plain name decodes")
        .into_inner();
    let single = client
        .order_get()
        .order_id(7001)
        .include("payments")
        .send()
        .await
        .expect("an order whose payment method is a plain name decodes")
        .into_inner();
    for order in [&page.data[0], &single] {
        let payments = order.payments.as_ref().expect("payments");
        let by_name = payments[0].payment_method.as_ref().expect("method");
        assert_eq!(by_name.name.as_deref(), Some("Apple Pay"));
        assert_eq!((by_name.id, by_name.alias.as_deref()), (None, None));
        assert_eq!(payments[0].payment_method_id, Some(4));
        let by_object = payments[1].payment_method.as_ref().expect("method");
        assert_eq!(
            (
                by_object.id,
                by_object.name.as_deref(),
                by_object.alias.as_deref()
            ),
            (Some(2), Some("Card"), Some("card"))
        );
    }
}

#[tokio::test]
async fn identifiers_read_numbers_and_booleans_read_strings_and_digits() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .respond_with(json(200, page_of(vec![order_with_payments(7002)])))
        .mount(&server)
        .await;
    api("GET", "/pipelines/3/statuses")
        .respond_with(json(
            200,
            page_of(vec![
                json!({"id": 11, "pipeline_id": 3, "title": "Won", "is_final": "false"}),
                json!({"id": 12, "pipeline_id": 3, "title": "Lost", "is_final": 1}),
                json!({"id": 13, "pipeline_id": 3, "title": "New", "is_final": "true"}),
            ]),
        ))
        .mount(&server)
        .await;

    let order = client
        .order_list()
        .send()
        .await
        .expect("source_uuid 123456 (a number) decodes")
        .into_inner()
        .data
        .remove(0);
    assert_eq!(order.source_uuid.as_deref(), Some("123456"));
    assert_eq!(order.is_gift, Some(false));
    assert_eq!(order.has_reserves, Some(false));

    let statuses = client
        .pipeline_status_list()
        .pipeline_id(3)
        .send()
        .await
        .expect("is_final \"false\" decodes")
        .into_inner()
        .data;
    let finals: Vec<_> = statuses.iter().map(|s| s.is_final).collect();
    assert_eq!(finals, vec![Some(false), Some(true), Some(true)]);
    assert_eq!(statuses[1].pipeline_id, Some(3));
}

#[tokio::test]
async fn batch_imports_answering_201_empty_or_status_true_succeed() {
    for answer in [
        ResponseTemplate::new(201),
        ResponseTemplate::new(201).set_body_string("  \n"),
        json(201, json!({"status": true})),
    ] {
        let (server, client) = setup().await;
        for route in ["/order/import", "/buyer/import", "/products/import"] {
            api("POST", route)
                .respond_with(answer.clone())
                .expect(1)
                .mount(&server)
                .await;
        }
        let orders: types::OrderImport = serde_json::from_value(json!({"orders": [
            {"source_id": 2, "source_uuid": "RZ-1", "buyer": {"full_name": "Олена Мороз"}}
        ]}))
        .unwrap();
        let buyers: types::BuyerImport =
            serde_json::from_value(json!({"buyers": [{"full_name": "Ірина Левченко"}]})).unwrap();
        let products: types::ProductImport =
            serde_json::from_value(json!({"products": [{"name": "Термос 1 л"}]})).unwrap();

        let order = client
            .order_import()
            .body(orders)
            .send()
            .await
            .expect("order import: 201 is success");
        let buyer = client
            .buyer_import()
            .body(buyers)
            .send()
            .await
            .expect("buyer import: 201 is success");
        let product = client
            .product_import()
            .body(products)
            .send()
            .await
            .expect("product import: 201 is success");
        assert_eq!(order.status(), 201);
        let said = buyer.status() == 201 && product.status() == 201;
        assert!(said);
        let status = (
            order.into_inner().status,
            buyer.into_inner().status,
            product.into_inner().status,
        );
        assert!(
            status == (None, None, None) || status == (Some(true), Some(true), Some(true)),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn offers_carry_their_times_and_flags_and_keep_unknown_fields() {
    let (server, client) = setup().await;
    api("GET", "/offers")
        .respond_with(json(
            200,
            page_of(vec![json!({
                "id": 9101,
                "product_id": 3390,
                "sku": "TSH-OVR-BLK-M",
                "price": "649.00",
                "quantity": 23,
                "is_archived": false,
                "is_default": 1,
                "created_at": "2024-02-01 09:15:00",
                "updated_at": "2024-05-20T11:02:03.000000Z",
                "warehouse_code": "KYIV-2",
                "dimensions_unit": {"length": "cm"}
            })]),
        ))
        .mount(&server)
        .await;
    api("GET", "/order/7003")
        .respond_with(json(200, order_with_payments(7003)))
        .mount(&server)
        .await;

    let offer = client
        .offer_list()
        .send()
        .await
        .unwrap()
        .into_inner()
        .data
        .remove(0);
    assert_eq!(offer.is_archived, Some(false));
    assert_eq!(offer.is_default, Some(true));
    assert_eq!(
        offer.created_at,
        Some("2024-02-01 09:15:00".parse().unwrap())
    );
    assert_eq!(
        offer.updated_at,
        Some("2024-05-20 11:02:03".parse().unwrap())
    );
    assert_eq!(offer.extra.get("warehouse_code"), Some(&json!("KYIV-2")));
    assert_eq!(
        offer.extra.get("dimensions_unit"),
        Some(&json!({"length": "cm"}))
    );
    assert!(
        !offer.extra.contains_key("sku"),
        "named fields are not extras"
    );

    // Every record type keeps what it does not name, nested ones too.
    let order = client
        .order_get()
        .order_id(7003)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.extra.get("loyalty_tier"), Some(&json!("gold")));
    // ...and writes it back out unchanged.
    let back = serde_json::to_value(&offer).unwrap();
    assert_eq!(back["warehouse_code"], "KYIV-2");
}

#[tokio::test]
async fn a_stream_keeps_the_callers_limit_whatever_the_filters_contain() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .and(query_param("limit", "20"))
        .respond_with(json(200, page_of(vec![order_with_payments(7004)])))
        .expect(1)
        .mount(&server)
        .await;

    let orders = client
        .order_list()
        .filter_buyer_email("limit: Ok(None)")
        .limit(std::num::NonZeroU64::new(20).unwrap())
        .collect_all()
        .await
        .expect("one page");
    assert_eq!(orders.len(), 1);
    let request = only_request(&server).await;
    assert!(
        query_pairs(&request).contains(&("limit".to_string(), "20".to_string())),
        "{:?}",
        query_pairs(&request)
    );
}
