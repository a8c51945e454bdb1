//! Products: list with filters, create.

use keycrm_api::types;
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn product_list_filters_and_reads_custom_fields() {
    let (server, client) = setup().await;
    api("GET", "/products")
        .and(query_param("filter[category_id]", "18,21"))
        .and(query_param("filter[is_archived]", "false"))
        .and(query_param("include", "custom_fields"))
        .and(query_param("limit", "2"))
        .respond_with(json(200, fixture("products_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .product_list()
        .filter_category_id("18,21")
        .filter_is_archived(false)
        .include("custom_fields")
        .limit(2u64)
        .send()
        .await
        .expect("products")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some(
            "filter%5Bcategory_id%5D=18%2C21&filter%5Bis_archived%5D=false\
             &include=custom_fields&limit=2"
        )
    );
    assert_eq!(page.next_page(), Some(2));
    let laptop = &page.data[0];
    assert_eq!(laptop.id, Some(3120));
    assert_eq!(laptop.currency_code.as_deref(), Some("UAH"));
    assert_eq!(laptop.min_price, Some(dec("49999.00")));
    assert_eq!(laptop.max_price, Some(dec("52999")));
    assert_eq!(laptop.height, Some(dec("1.8")));
    assert_eq!(laptop.has_offers, Some(true));
    assert_eq!(laptop.category_id, Some(18));
    assert_eq!(laptop.attachments_data.as_ref().map(Vec::len), Some(2));
    assert_eq!(laptop.updated_at, Some(ts("2024-05-17 08:12:03")));
    assert_eq!(
        laptop.custom_fields.as_ref().unwrap()[0].name.as_deref(),
        Some("Гарантія, міс.")
    );
    let monitor = &page.data[1];
    assert_eq!(monitor.quantity, Some(dec("14")));
    assert_eq!(monitor.purchased_price, Some(dec("11250.50")));
    assert_eq!(monitor.barcode.as_deref(), Some("5397184409869"));
    assert_eq!(monitor.description, None);
    assert_eq!(monitor.created_at, Some(ts("2023-09-14T15:40:00.000000Z")));
}

#[tokio::test]
async fn product_create_posts_the_catalogue_item() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "name": "Навушники JBL Tune 520BT",
        "description": "Бездротові накладні навушники, до 57 год роботи",
        "sku": "JBL-T520BT-BLK",
        "barcode": "6925281964571",
        "price": 1899,
        "purchased_price": 1320,
        "currency_code": "UAH",
        "weight": 0.16,
        "unit_type": "шт",
        "category_id": 24,
        "pictures": ["https://cdn.keycrm.app/tekhnomarket/products/jbl-tune520.jpg"]
    });
    api("POST", "/products")
        .and(body_json(&expected_body))
        .respond_with(json(201, fixture("product_created.json")))
        .expect(1)
        .mount(&server)
        .await;

    let product = client
        .product_create()
        .body(
            types::ProductCreate::builder()
                .name("Навушники JBL Tune 520BT")
                .description("Бездротові накладні навушники, до 57 год роботи".to_string())
                .sku("JBL-T520BT-BLK".to_string())
                .barcode("6925281964571".to_string())
                .price(dec("1899.00"))
                .purchased_price(dec("1320.00"))
                .currency_code("UAH".to_string())
                .weight(dec("0.16"))
                .unit_type("шт".to_string())
                .category_id(24)
                .pictures(vec![
                    "https://cdn.keycrm.app/tekhnomarket/products/jbl-tune520.jpg".to_string(),
                ]),
        )
        .send()
        .await
        .expect("201")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/products");
    assert_eq!(sent_json(&request), expected_body);
    assert_eq!(product.id, Some(3402));
    assert_eq!(product.price, Some(dec("1899")));
    assert_eq!(product.weight, Some(dec("0.16")));
    assert_eq!(product.has_offers, Some(false));
}
