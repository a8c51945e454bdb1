//! Telephony call log.

use serde_json::json;
use wiremock::matchers::query_param;

use crate::support::*;

#[tokio::test]
async fn call_list_filters_and_embeds_manager_service_client() {
    let (server, client) = setup().await;
    api("GET", "/calls")
        .and(query_param("filter[type]", "incoming"))
        .and(query_param("filter[client_phone]", "+380677654321"))
        .and(query_param(
            "filter[created_between]",
            "2024-05-15, 2024-05-16",
        ))
        .and(query_param("include", "manager,service,client"))
        .and(query_param("limit", "15"))
        .respond_with(json(200, fixture("calls_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .call_list()
        .filter_type("incoming")
        .filter_client_phone("+380677654321")
        .filter_created_between("2024-05-15, 2024-05-16")
        .include("manager,service,client")
        .limit(15u64)
        .send()
        .await
        .expect("calls")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        query_pairs(&request),
        pairs(&[
            ("filter[client_phone]", "+380677654321"),
            ("filter[created_between]", "2024-05-15, 2024-05-16"),
            ("filter[type]", "incoming"),
            ("include", "manager,service,client"),
            ("limit", "15"),
        ])
    );
    let call = &page.data[0];
    assert_eq!(call.id, Some(15520));
    assert_eq!(call.type_.as_deref(), Some("incoming"));
    assert_eq!(call.state.as_deref(), Some("answered"));
    assert_eq!(call.duration, Some(184));
    assert_eq!(call.external_number.as_deref(), Some("+380677654321"));
    assert_eq!(call.lead_id, Some(731));
    assert_eq!(call.updated_at, Some(ts("2024-05-15 11:03:04")));
    assert_eq!(
        call.manager.as_ref().and_then(|m| m.full_name.as_deref()),
        Some("Андрій Шевчук")
    );
    let service = call.service.as_ref().expect("include=service");
    assert_eq!(service.name.as_deref(), Some("Binotel"));
    assert_eq!(service.configuraion, Some(json!({"key": "[hidden]"})));
    assert_eq!(service.deleted_at, None);
    let buyer = call.client.as_ref().expect("include=client");
    assert_eq!(buyer.phone.as_deref(), Some("+380677654321"));
    assert_eq!(buyer.orders_count, Some(dec("28")));
}
