//! External (bank / gateway) transactions: list and link to a payment.

use keycrm_api::types;
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn external_transaction_list_filters_unattached_in_a_period() {
    let (server, client) = setup().await;
    api("GET", "/payments/external-transactions")
        .and(query_param("filter[is_attached]", "false"))
        .and(query_param("filter[gateway_id]", "2,4"))
        .and(query_param(
            "filter[created_between]",
            "2024-05-16 00:00:00, 2024-05-17 23:59:59",
        ))
        .and(query_param("page", "1"))
        .respond_with(json(200, fixture("external_transactions_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .external_transaction_list()
        .filter_is_attached(false)
        .filter_gateway_id("2,4")
        .filter_created_between("2024-05-16 00:00:00, 2024-05-17 23:59:59")
        .page(1u64)
        .send()
        .await
        .expect("transactions")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some(
            "filter%5Bcreated_between%5D=2024-05-16+00%3A00%3A00%2C+2024-05-17+23%3A59%3A59\
             &filter%5Bgateway_id%5D=2%2C4&filter%5Bis_attached%5D=false&page=1"
        )
    );
    assert_eq!(page.data.len(), 2);
    let bank = &page.data[0];
    assert_eq!(bank.id, Some(3310));
    assert_eq!(bank.uuid, Some(json!("PB-20240516-77812")));
    assert_eq!(bank.amount, Some(dec("45000.00")));
    assert_eq!(bank.currency.as_deref(), Some("UAH"));
    assert_eq!(bank.transaction_date, Some(ts("2024-05-16 16:58:00")));
    assert_eq!(
        bank.payments_data.as_ref().unwrap()[0]["payer"],
        json!("КОВАЛЕНКО ОЛЕНА")
    );
    let card = &page.data[1];
    assert_eq!(
        card.uuid,
        Some(json!(558812)),
        "the vendor types uuid as an integer"
    );
    assert_eq!(card.amount, Some(dec("1299.5")));
    assert_eq!(card.source_uuid, None);
    assert_eq!(card.transaction_date, Some(ts("2024-05-17 09:31:00")));
}

#[tokio::test]
async fn external_transaction_attach_links_by_uuid() {
    let (server, client) = setup().await;
    api("POST", "/payments/5501/external-transactions")
        .and(body_json(json!({"transaction_uuid": "PB-20240516-77812"})))
        .respond_with(json(
            201,
            json!({
                "id": 5501,
                "destination_id": 10452,
                "payment_method_id": 3,
                "amount": "45000.00",
                "status": "paid",
                "transaction_uuid": "PB-20240516-77812",
                "payment_date": "2024-05-16 17:00:07"
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let payment = client
        .external_transaction_attach()
        .payment_id(5501)
        .body(types::ExternalTransactionAttach {
            transaction_id: None,
            transaction_uuid: Some("PB-20240516-77812".into()),
        })
        .send()
        .await
        .expect("201")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        sent_json(&request),
        json!({"transaction_uuid": "PB-20240516-77812"})
    );
    assert_eq!(
        payment.transaction_uuid.as_deref(),
        Some("PB-20240516-77812")
    );
    assert_eq!(payment.amount, Some(dec("45000")));
}
