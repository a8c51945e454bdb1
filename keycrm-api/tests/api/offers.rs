//! Offers (variants): list with the product, stock list, bulk stock update.

use keycrm_api::types;
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn offer_list_filters_and_embeds_the_product() {
    let (server, client) = setup().await;
    api("GET", "/offers")
        .and(query_param("filter[product_id]", "3390"))
        .and(query_param("filter[sku]", "TSH-OVR-BLK-M,TSH-OVR-WHT-L"))
        .and(query_param("include", "product"))
        .and(query_param("limit", "50"))
        .and(query_param("sort", "-id"))
        .respond_with(json(200, fixture("offers_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .offer_list()
        .filter_product_id("3390")
        .filter_sku("TSH-OVR-BLK-M,TSH-OVR-WHT-L")
        .include("product")
        .limit(50u64)
        .sort("-id")
        .send()
        .await
        .expect("offers")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        query_pairs(&request),
        pairs(&[
            ("filter[product_id]", "3390"),
            ("filter[sku]", "TSH-OVR-BLK-M,TSH-OVR-WHT-L"),
            ("include", "product"),
            ("limit", "50"),
            ("sort", "-id"),
        ])
    );
    assert_eq!(page.data.len(), 2);
    let black = &page.data[0];
    assert_eq!(black.id, Some(9101));
    assert_eq!(black.sku.as_deref(), Some("TSH-OVR-BLK-M"));
    assert_eq!(black.price, Some(dec("649.00")));
    assert_eq!(black.in_reserve, Some(dec("3")));
    assert_eq!(black.weight, Some(dec("0.25")));
    let props: Vec<(&str, &str)> = black
        .properties
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.value.as_deref().unwrap()))
        .collect();
    assert_eq!(props, vec![("Колір", "Чорний"), ("Розмір", "M")]);
    let product = black.product.as_ref().expect("include=product");
    assert_eq!(product.name.as_deref(), Some("Футболка оверсайз бавовняна"));
    assert_eq!(product.min_price, Some(dec("599")));
    assert_eq!(
        product.properties_agg,
        Some(serde_json::json!({"Колір": ["Чорний", "Білий"], "Розмір": ["S", "M", "L", "XL"]}))
    );
    let white = &page.data[1];
    assert_eq!(white.quantity, Some(keycrm_api::Decimal::ZERO));
    assert_eq!(white.price, Some(dec("599")));
    assert_eq!(white.weight, None);
}

#[tokio::test]
async fn offer_stock_list_asks_for_the_warehouse_breakdown() {
    let (server, client) = setup().await;
    api("GET", "/offers/stocks")
        .and(query_param("filter[details]", "true"))
        .and(query_param("filter[offers_sku]", "TSH-OVR-BLK-M"))
        .respond_with(json(200, fixture("offer_stocks_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .offer_stock_list()
        .filter_details(true)
        .filter_offers_sku("TSH-OVR-BLK-M")
        .send()
        .await
        .expect("stocks")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some("filter%5Bdetails%5D=true&filter%5Boffers_sku%5D=TSH-OVR-BLK-M")
    );
    let row = &page.data[0];
    assert_eq!(
        (row.quantity, row.reserve),
        (Some(dec("23")), Some(dec("3")))
    );
    let per_warehouse: Vec<(i64, keycrm_api::Decimal)> = row
        .warehouse
        .as_ref()
        .expect("filter[details]=true")
        .iter()
        .map(|w| (w.id.unwrap(), w.quantity.unwrap()))
        .collect();
    assert_eq!(per_warehouse, vec![(1, dec("20")), (2, dec("3"))]);
}

#[tokio::test]
async fn offer_stock_update_sends_the_warehouse_and_rows() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "warehouse_id": 1,
        "stocks": [
            {"sku": "TSH-OVR-BLK-M", "quantity": 20},
            {"id": 9102, "quantity": 0},
            {"sku": "ROPE-JUTE-10MM", "quantity": 37.5}
        ]
    });
    api("PUT", "/offers/stocks")
        .and(body_json(&expected_body))
        .respond_with(json(202, json!({"status": true})))
        .expect(1)
        .mount(&server)
        .await;

    let row = |id: Option<i64>, sku: Option<&str>, quantity: &str| types::OfferStockRow {
        id,
        sku: sku.map(String::from),
        quantity: dec(quantity),
    };
    let response = client
        .offer_stock_update()
        .body(
            types::OfferStockUpdate::builder()
                .warehouse_id(1)
                .stocks(vec![
                    row(None, Some("TSH-OVR-BLK-M"), "20"),
                    row(Some(9102), None, "0"),
                    row(None, Some("ROPE-JUTE-10MM"), "37.500"),
                ]),
        )
        .send()
        .await
        .expect("202");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.into_inner().status, Some(true));

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(request.url.path(), "/offers/stocks");
    assert_eq!(sent_json(&request), expected_body);
}
