//! The error `send()` returns shows no response body and no customer data (issue 9, point 5),
//! and a transport failure reads as one line, not a dumped `Response`.

use serde_json::json;

use crate::support::{api, client_for, json, setup};

const NAME: &str = "Олена Коваленко";
const PHONE: &str = "+380671234567";
const EMAIL: &str = "olena.kovalenko@ukr.net";

#[tokio::test]
async fn an_unreadable_422_body_with_a_buyer_is_not_in_the_error() {
    let (server, client) = setup().await;
    // A 422 that echoes the rejected buyer in a shape the error schema does not expect: the
    // generated code cannot read it, and the raw error would print the body.
    api("POST", "/buyer")
        .respond_with(json(
            422,
            json!({
                "message": "The given data was invalid.",
                "errors": [{"full_name": NAME, "phone": [PHONE], "email": [EMAIL]}]
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let body: keycrm_api::types::BuyerCreate = serde_json::from_value(json!({
        "full_name": NAME, "phone": [PHONE], "email": [EMAIL]
    }))
    .unwrap();
    // No conversion: whatever `send()` returns must be redacted itself.
    let err = client
        .buyer_create()
        .body(body)
        .send()
        .await
        .expect_err("422");
    let shown = format!("{err}");
    let debugged = format!("{err:?}");
    for text in [&shown, &debugged] {
        for secret in [NAME, PHONE, EMAIL, "Коваленко", "380671234567", "ukr.net"] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }
    assert!(shown.contains("errors"), "names where it failed: {shown}");
}

#[tokio::test]
async fn a_refused_connection_is_one_line_without_a_response_dump() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client_for(&format!("http://127.0.0.1:{port}"));

    let err = client
        .order_list()
        .send()
        .await
        .expect_err("nothing listens there");
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 1, "{shown}");
    for dump in ["Response {", "599", "no.url.provided"] {
        assert!(!shown.contains(dump), "{shown}");
        assert!(!format!("{err:?}").contains(dump), "{err:?}");
    }
    assert!(shown.contains("could not talk to KeyCRM"), "{shown}");
}
