//! Companies: list with include, update.

use keycrm_api::types;
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn company_list_filters_and_embeds_the_manager() {
    let (server, client) = setup().await;
    api("GET", "/companies")
        .and(query_param("filter[company_id]", "77,80"))
        .and(query_param("include", "manager"))
        .respond_with(json(200, fixture("companies_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .company_list()
        .filter_company_id("77,80")
        .include("manager")
        .send()
        .await
        .expect("companies")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        query_pairs(&request),
        pairs(&[("filter[company_id]", "77,80"), ("include", "manager")])
    );
    assert_eq!(page.total, Some(1));
    let company = &page.data[0];
    assert_eq!(company.id, Some(77));
    assert_eq!(company.name.as_deref(), Some("ТОВ \"Мельник і партнери\""));
    assert_eq!(
        company.bank_account.as_deref(),
        Some("UA213223130000026007233566001")
    );
    assert_eq!(
        company.notes.as_deref(),
        Some("Оплата за рахунком, відстрочка 14 днів")
    );
    assert_eq!(company.updated_at, Some(ts("2024-02-29 16:20:00")));
    assert_eq!(
        company.custom_fields.as_ref().unwrap()[0].value,
        Some(json!("41234567"))
    );
    assert_eq!(
        company.manager.as_ref().and_then(|m| m.username.as_deref()),
        Some("a.shevchuk")
    );
}

#[tokio::test]
async fn company_update_puts_the_body_and_reads_the_200() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "name": "ТОВ \"Мельник і партнери\"",
        "notes": "Оплата за рахунком, відстрочка 30 днів",
        "manager_id": 21,
        "custom_fields": [{"uuid": "CY_1108", "value": "41234567"}]
    });
    api("PUT", "/companies/77")
        .and(body_json(&expected_body))
        .respond_with(json(200, fixture("company_updated.json")))
        .expect(1)
        .mount(&server)
        .await;

    let response = client
        .company_update()
        .company_id(77)
        .body(
            types::CompanyUpdate::builder()
                .name("ТОВ \"Мельник і партнери\"")
                .notes("Оплата за рахунком, відстрочка 30 днів".to_string())
                .manager_id(21)
                .custom_fields(vec![types::CustomFieldValueInput {
                    uuid: "CY_1108".into(),
                    value: Some(json!("41234567")),
                }]),
        )
        .send()
        .await
        .expect("200");
    assert_eq!(response.status().as_u16(), 200);
    let company = response.into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(sent_json(&request), expected_body);
    assert_eq!(company.manager_id, Some(21));
    assert_eq!(company.updated_at, Some(ts("2024-05-20 09:00:00")));
}
