//! Answers that bend the description: any 2xx is success, any 4xx keeps its Laravel body,
//! PHP empty maps arrive as `[]` or `null`.

use keycrm_api::{Error, types};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_422_on_a_write_without_a_declared_422_keeps_the_field_map() {
    let (server, client) = setup().await;
    api("POST", "/order/10452/tag/999")
        .respond_with(json(
            422,
            json!({"message": "The selected tag id is invalid.", "errors": {"tag_id": ["The selected tag id is invalid."]}}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let err = client
        .order_tag_attach()
        .order_id(10452)
        .tag_id(999)
        .send()
        .await
        .expect_err("422");
    match &err {
        Error::Validation {
            message, errors, ..
        } => {
            assert_eq!(message, "The selected tag id is invalid.");
            assert_eq!(
                errors.get("tag_id").map(Vec::as_slice),
                Some(&["The selected tag id is invalid.".to_string()][..])
            );
        }
        other => panic!("expected Error::Validation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_create_answered_with_200_instead_of_201_is_a_success() {
    let (server, client) = setup().await;
    api("POST", "/buyer")
        .respond_with(json(200, fixture("buyer_created.json")))
        .expect(1)
        .mount(&server)
        .await;

    let buyer = client
        .buyer_create()
        .body(types::BuyerCreate::builder().full_name("Ірина Бондаренко"))
        .send()
        .await
        .expect("any 2xx is a success (facts §4)")
        .into_inner();
    assert_eq!(buyer.id, Some(2245));
}

#[tokio::test]
async fn an_empty_properties_agg_from_php_reads_as_an_empty_map() {
    let (server, client) = setup().await;
    api("GET", "/offers")
        .respond_with(json(
            200,
            json!({
                "current_page": 1,
                "data": [
                    {"id": 9200, "sku": "CABLE-USBC-1M", "price": "199.00",
                     "product": {"id": 3500, "name": "Кабель USB-C 1 м", "has_offers": false, "properties_agg": []}},
                    {"id": 9201, "sku": "CABLE-USBC-2M", "price": "249.00",
                     "product": {"id": 3501, "name": "Кабель USB-C 2 м", "has_offers": false, "properties_agg": null}}
                ],
                "total": 2
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .offer_list()
        .include("product")
        .send()
        .await
        .expect("`[]` and null are how PHP sends an empty map")
        .into_inner();
    for offer in &page.data {
        let agg = offer.product.as_ref().unwrap().properties_agg.as_ref();
        assert!(
            agg.is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)),
            "{agg:?}"
        );
    }
}
