//! Pipelines: card list, card get in both answer shapes, and the module switched off.

use keycrm_api::Error;
use keycrm_api::types::{self, PipelineCardGetResponse};
use serde_json::json;
use wiremock::matchers::query_param;

use crate::support::*;

#[tokio::test]
async fn pipeline_card_list_filters_and_embeds_contact_products_status() {
    let (server, client) = setup().await;
    api("GET", "/pipelines/cards")
        .and(query_param("filter[pipeline_id]", "2"))
        .and(query_param("filter[status_id]", "11,12"))
        .and(query_param(
            "filter[updated_between]",
            "2024-05-14 00:00:00, 2024-05-21 23:59:59",
        ))
        .and(query_param(
            "include",
            "contact.client,products,status,manager",
        ))
        .and(query_param("limit", "15"))
        .and(query_param("page", "1"))
        .respond_with(json(200, fixture("pipeline_cards_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .pipeline_card_list()
        .filter_pipeline_id(2)
        .filter_status_id("11,12")
        .filter_updated_between("2024-05-14 00:00:00, 2024-05-21 23:59:59")
        .include("contact.client,products,status,manager")
        .limit(15u64)
        .page(1u64)
        .send()
        .await
        .expect("cards")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/pipelines/cards");
    assert_eq!(
        query_pairs(&request),
        pairs(&[
            ("filter[pipeline_id]", "2"),
            ("filter[status_id]", "11,12"),
            (
                "filter[updated_between]",
                "2024-05-14 00:00:00, 2024-05-21 23:59:59"
            ),
            ("include", "contact.client,products,status,manager"),
            ("limit", "15"),
            ("page", "1"),
        ])
    );

    assert_eq!(page.total, Some(1));
    let card = &page.data[0];
    assert_eq!(card.id, Some(731));
    assert_eq!(card.title.as_deref(), Some("Оснащення офісу: 6 ноутбуків"));
    assert_eq!((card.pipeline_id, card.status_id), (Some(2), Some(11)));
    assert_eq!(card.utm_term.as_deref(), Some("ноутбуки для офісу"));
    assert_eq!(card.is_finished, Some(json!(false)));
    assert_eq!(card.communicate_at, Some(ts("2024-05-21 09:00:00")));
    assert_eq!(card.created_at, Some(ts("2024-05-14 10:22:31")));
    let contact = card.contact.as_ref().expect("include=contact.client");
    assert_eq!(contact.full_name.as_deref(), Some("Сергій Ткаченко"));
    assert_eq!(contact.social_id.as_deref(), Some("@s_tkachenko"));
    let buyer = contact.client.as_ref().expect("contact.client");
    assert_eq!(buyer.id, Some(2250));
    assert_eq!(buyer.orders_sum, Some(dec("90247.69")));
    assert_eq!(
        buyer.orders_count,
        Some(dec("28")),
        "a count sent as a string"
    );
    assert_eq!(
        buyer.formatted_phone.as_deref(),
        Some("+38 (067) 765-43-21")
    );
    let line = &card.products.as_ref().expect("include=products")[0];
    assert_eq!(line.sku.as_deref(), Some("LEN-IPS5-16-512"));
    assert_eq!(line.price, Some(dec("52999")));
    assert_eq!(line.quantity, Some(dec("6")));
    let stage = card.status.as_ref().expect("include=status");
    assert_eq!(stage.title.as_deref(), Some("Комерційна пропозиція"));
    assert_eq!(stage.is_final, Some(false));
    assert_eq!(stage.leads_count, Some(16));
}

fn check_closed_card(card: &types::PipelineCard) {
    assert_eq!(card.id, Some(731));
    assert_eq!(card.status_id, Some(12));
    assert_eq!(card.target_type.as_deref(), Some("order"));
    assert_eq!(card.target_id, Some(10470));
    assert_eq!(card.is_finished, Some(json!(true)));
    assert_eq!(card.communicate_at, None);
    assert_eq!(card.updated_at, Some(ts("2024-05-21T09:40:00Z")));
    let payment = &card.payments.as_ref().expect("payments")[0];
    assert_eq!(payment.amount, Some(dec("317994.00")));
    assert_eq!(payment.status.as_deref(), Some("paid"));
    assert_eq!(
        card.custom_fields.as_ref().unwrap()[0].value,
        Some(json!("320000"))
    );
}

#[tokio::test]
async fn pipeline_card_get_reads_a_plain_card() {
    let (server, client) = setup().await;
    api("GET", "/pipelines/cards/731")
        .and(query_param("include", "payments,custom_fields"))
        .respond_with(json(200, fixture("pipeline_card.json")))
        .expect(1)
        .mount(&server)
        .await;

    let answer = client
        .pipeline_card_get()
        .card_id(731)
        .include("payments,custom_fields")
        .send()
        .await
        .expect("a plain card")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some("include=payments%2Ccustom_fields")
    );
    match &answer {
        PipelineCardGetResponse::Variant1(card) => check_closed_card(card),
        other => panic!("a plain card must be Variant1, got {other:?}"),
    }
}

#[tokio::test]
async fn pipeline_card_get_reads_the_paginated_wrapper() {
    let (server, client) = setup().await;
    api("GET", "/pipelines/cards/731")
        .respond_with(json(200, fixture("pipeline_card_wrapped.json")))
        .expect(1)
        .mount(&server)
        .await;

    let answer = client
        .pipeline_card_get()
        .card_id(731)
        .send()
        .await
        .expect("a one-item page")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), None);
    match &answer {
        PipelineCardGetResponse::Variant0(envelope) => {
            assert_eq!(envelope.total, Some(1));
            assert_eq!(envelope.current_page, Some(1));
            assert_eq!(envelope.next_page_url, None);
            let cards = envelope.data.as_ref().expect("data");
            assert_eq!(cards.len(), 1);
            check_closed_card(&cards[0]);
        }
        other => panic!("a page must be Variant0, got {other:?}"),
    }
}

#[tokio::test]
async fn pipelines_switched_off_is_an_api_error_with_the_message() {
    let (server, client) = setup().await;
    api("GET", "/pipelines/cards")
        .respond_with(json(400, json!({"message": "Leads are not enabled"})))
        .expect(1)
        .mount(&server)
        .await;

    let err = client.pipeline_card_list().send().await.expect_err("400");

    match &err {
        Error::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message.as_deref(), Some("Leads are not enabled"));
        }
        other => panic!("expected Error::Api, got {other:?}"),
    }
    assert_eq!(err.status(), Some(400));
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "KeyCRM refused the request (HTTP 400): Leads are not enabled"
    );
    assert_eq!(requests(&server).await.len(), 1);
}
