//! Order sub-resources: payments, tags, and the dictionaries (statuses).

use keycrm_api::types;
use serde_json::json;
use wiremock::ResponseTemplate;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn order_payment_create_posts_the_payment() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "payment_method_id": 2,
        "amount": 1250.5,
        "status": "not_paid",
        "description": "Доплата при отриманні",
        "payment_date": "2024-05-18 12:30:00"
    });
    api("POST", "/order/10452/payment")
        .and(body_json(&expected_body))
        .respond_with(json(201, fixture("payment_created.json")))
        .expect(1)
        .mount(&server)
        .await;

    let response = client
        .order_payment_create()
        .order_id(10452)
        .body(
            types::PaymentCreate::builder()
                .payment_method_id(2)
                .amount(dec("1250.50"))
                .status(types::PaymentCreateStatus::NotPaid)
                .description("Доплата при отриманні".to_string())
                .payment_date(ts("2024-05-18 12:30:00")),
        )
        .send()
        .await
        .expect("201");
    assert_eq!(response.status().as_u16(), 201);
    let payment = response.into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/order/10452/payment");
    assert_eq!(sent_json(&request), expected_body);

    assert_eq!(payment.id, Some(5503));
    assert_eq!(payment.destination_id, Some(10452));
    assert_eq!(payment.amount, Some(dec("1250.5")));
    assert_eq!(payment.amount.unwrap().to_string(), "1250.50");
    assert_eq!(payment.status.as_deref(), Some("not_paid"));
    assert_eq!(payment.payment_date, Some(ts("2024-05-18 12:30:00")));
    assert_eq!(payment.created_at, Some(ts("2024-05-18 12:30:04")));
    assert_eq!(
        payment.payment_method.and_then(|m| m.name),
        Some("Післяплата".to_string())
    );
}

#[tokio::test]
async fn order_tag_attach_answers_202_and_detach_answers_204() {
    let (server, client) = setup().await;
    api("POST", "/order/10452/tag/7")
        .respond_with(json(202, json!({"status": true})))
        .expect(1)
        .mount(&server)
        .await;
    api("DELETE", "/order/10452/tag/7")
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let attached = client
        .order_tag_attach()
        .order_id(10452)
        .tag_id(7)
        .send()
        .await
        .expect("attach");
    assert_eq!(attached.status().as_u16(), 202);
    assert_eq!(attached.into_inner().status, Some(true));

    let detached = client
        .order_tag_detach()
        .order_id(10452)
        .tag_id(7)
        .send()
        .await
        .expect("an empty 204 is a success");
    assert_eq!(detached.status().as_u16(), 204);
    let () = detached.into_inner();

    let sent = requests(&server).await;
    let lines: Vec<(String, String)> = sent
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_string()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("POST".to_string(), "/order/10452/tag/7".to_string()),
            ("DELETE".to_string(), "/order/10452/tag/7".to_string()),
        ]
    );
    for request in &sent {
        assert!(request.body.is_empty(), "tag calls carry no body");
        assert_eq!(request.url.query(), None);
    }
}

#[tokio::test]
async fn order_status_list_is_a_page_of_statuses() {
    let (server, client) = setup().await;
    api("GET", "/order/status")
        .and(query_param("limit", "50"))
        .and(query_param("sort", "id"))
        .respond_with(json(200, fixture("order_statuses_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .order_status_list()
        .limit(50u64)
        .sort("id")
        .send()
        .await
        .expect("statuses")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("limit=50&sort=id"));
    assert_eq!(page.total, Some(4));
    assert_eq!(page.next_page_url, None);
    assert!(!page.has_next());
    assert_eq!(page.next_page(), None);
    let names: Vec<(i64, &str, i64)> = page
        .data
        .iter()
        .map(|s| {
            (
                s.id.unwrap(),
                s.name.as_deref().unwrap(),
                s.group_id.unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (1, "Новий", 1),
            (2, "Погоджено", 2),
            (4, "Відправлено", 4),
            (12, "Виконано", 5)
        ]
    );
    assert_eq!(page.data[1].expiration_period, Some(1440));
    assert_eq!(page.data[1].updated_at, Some(ts("2023-01-15 10:02:33")));
    assert_eq!(page.data[3].is_closing_order, Some(true));
}

#[tokio::test]
async fn order_attachment_attach_links_an_uploaded_file() {
    let (server, client) = setup().await;
    api("POST", "/order/10452/attachment/8820")
        .respond_with(json(202, json!({"status": true})))
        .expect(1)
        .mount(&server)
        .await;

    let result = client
        .order_attachment_attach()
        .order_id(10452)
        .file_id(8820)
        .send()
        .await
        .expect("202")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/order/10452/attachment/8820");
    assert_eq!(result.status, Some(true));
}
