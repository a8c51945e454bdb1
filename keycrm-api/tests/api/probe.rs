use crate::support::*;
use wiremock::ResponseTemplate;
use serde_json::json;

#[tokio::test]
async fn probe() {
    let (server, client) = setup().await;
    api("GET", "/order").respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let e = client.order_list().limit(50).send().await.map_err(keycrm_api::Error::from).unwrap_err();
    println!("401 empty: {e:?} / {e}");
    api("GET", "/order/5").respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>")).mount(&server).await;
    let e = client.order_get().order_id(5).send().await.map_err(keycrm_api::Error::from).unwrap_err();
    println!("404 html: {e:?} / {e}");
    api("POST", "/order").respond_with(json(200, fixture("probe_order.json"))).mount(&server).await;
    let e = client.order_create().body_map(|b| b.source_id(1).buyer(keycrm_api::types::OrderBuyerInput::builder().full_name("x".to_string()))).send().await.map_err(keycrm_api::Error::from);
    println!("200 create: {e:?}");
    api("POST", "/order/5/tag/3").respond_with(json(422, json!({"message":"bad","errors":{"tag_id":["nope"]}}))).mount(&server).await;
    let e = client.order_tag_attach().order_id(5).tag_id(3).send().await.map_err(keycrm_api::Error::from);
    println!("422 undocumented: {e:?}");
    api("GET", "/products/9").respond_with(json(200, json!({"id": 9, "properties_agg": []}))).mount(&server).await;
    let e = client.product_get().product_id(9).send().await.map_err(keycrm_api::Error::from);
    println!("properties_agg []: {e:?}");
    api("GET", "/products/10").respond_with(json(200, json!({"id": 10, "properties_agg": null}))).mount(&server).await;
    let e = client.product_get().product_id(10).send().await.map_err(keycrm_api::Error::from);
    println!("properties_agg null: {e:?}");
    let reqs = server.received_requests().await.unwrap();
    for r in reqs { println!("{} {} {:?}", r.method, r.url, r.headers); }
}
