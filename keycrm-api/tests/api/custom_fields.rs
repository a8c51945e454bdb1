//! Custom field definitions: a plain array, not a page.

use serde_json::json;
use wiremock::matchers::query_param;

use crate::support::*;

#[tokio::test]
async fn custom_field_list_reads_a_plain_array_with_options() {
    let (server, client) = setup().await;
    api("GET", "/custom-fields")
        .and(query_param("filter[model]", "order,lead"))
        .and(query_param("include", "options"))
        .and(query_param("sort", "position"))
        .respond_with(json(200, fixture("custom_fields.json")))
        .expect(1)
        .mount(&server)
        .await;

    let fields = client
        .custom_field_list()
        .filter_model("order,lead")
        .include("options")
        .sort("position")
        .send()
        .await
        .expect("a plain array")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(
        request.url.query(),
        Some("filter%5Bmodel%5D=order%2Clead&include=options&sort=position")
    );
    assert_eq!(fields.len(), 3);
    let contact = &fields[0];
    assert_eq!(contact.uuid.as_deref(), Some("OR_1037"));
    assert_eq!(contact.model.as_deref(), Some("order"));
    assert_eq!(contact.type_.as_deref(), Some("select"));
    assert_eq!(contact.is_multiple, Some(true));
    assert_eq!(contact.required, Some(false));
    let options: Vec<&str> = contact
        .options
        .as_ref()
        .unwrap()
        .iter()
        .map(|o| o.value.as_deref().unwrap())
        .collect();
    assert_eq!(options, vec!["Viber", "Telegram", "Дзвінок"]);
    assert_eq!(contact.options.as_ref().unwrap()[0].field_id, Some(31));
    assert_eq!(fields[1].required, Some(true));
    assert_eq!(fields[2].uuid.as_deref(), Some("LD_1021"));
    assert_eq!(fields[2].model.as_deref(), Some("lead"));
    let positions: Vec<i64> = fields.iter().map(|f| f.position.unwrap()).collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(
        serde_json::to_value(&fields[1]).unwrap()["options"],
        json!([])
    );
}
