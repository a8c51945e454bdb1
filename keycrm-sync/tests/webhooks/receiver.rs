//! The receiver's answers for every class of request: token, signature, size, media type,
//! and a store that cannot commit.

use super::*;

#[tokio::test]
async fn every_bad_request_gets_its_status_and_stores_nothing() {
    let (receiver, store) = standalone(settings());
    let valid = status_body(1, 4, "2026-01-29 18:53:35");
    let deep = "[".repeat(100_000);
    let two_mib = {
        let mut b = br#"[{"sku":"TEA-1","in_stock":1,"pad":""#.to_vec();
        b.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
        b.extend_from_slice(br#""}]"#);
        b
    };
    let q = query();
    let cases: Vec<(&str, WebhookRequest<'_>, u16)> = vec![
        ("missing token", json_request(&valid), 401),
        (
            "wrong token",
            json_request(&valid).query("token=guess"),
            401,
        ),
        (
            "token of another name",
            json_request(&valid).query("t0ken=t0k3n-9f8e7d"),
            401,
        ),
        (
            "token prefix",
            json_request(&valid).query("token=t0k3n"),
            401,
        ),
        ("empty", json_request(b"").query(&q), 400),
        ("whitespace", json_request(b" \n").query(&q), 400),
        (
            "truncated",
            json_request(&valid[..valid.len() - 7]).query(&q),
            400,
        ),
        ("not JSON", json_request(b"event=order").query(&q), 400),
        (
            "not a JSON media type",
            WebhookRequest::new(b"event=order")
                .query(&q)
                .content_type("application/x-www-form-urlencoded"),
            415,
        ),
        ("a JSON scalar", json_request(b"42").query(&q), 400),
        ("a JSON string", json_request(br#""order""#).query(&q), 400),
        (
            "an object without event",
            json_request(br#"{"context":{"id":1}}"#).query(&q),
            400,
        ),
        (
            "a context of the wrong type",
            json_request(br#"{"event":"order.change_order_status","context":[1]}"#).query(&q),
            400,
        ),
        (
            "a context without an integer id",
            json_request(br#"{"event":"order.change_order_status","context":{"id":1.5}}"#)
                .query(&q),
            400,
        ),
        (
            "a stock row without id and SKU",
            json_request(br#"[{"in_stock":0}]"#).query(&q),
            400,
        ),
        (
            "a stock row with an empty SKU and no id",
            json_request(br#"[{"sku":"","in_stock":0}]"#).query(&q),
            400,
        ),
        (
            "an empty stock delivery",
            json_request(b"[]").query(&q),
            400,
        ),
        ("2 MiB", json_request(&two_mib).query(&q), 413),
        (
            "100,000-deep nesting",
            json_request(deep.as_bytes()).query(&q),
            400,
        ),
    ];
    for (name, request, status) in cases {
        let rejection = receiver.receive(request).await.unwrap_err();
        assert_eq!(rejection.status(), status, "{name}: {rejection}");
        assert!(
            !rejection.to_string().contains(TOKEN),
            "{name}: {rejection}"
        );
    }
    assert_eq!(stored(&store).await, 0, "nothing stored");
    // The size is refused from Content-Length before the body is read.
    assert_eq!(
        receiver.check_length(2 * 1024 * 1024).unwrap_err().status(),
        413
    );
    assert!(receiver.check_length(1024).is_ok());
    // And a valid delivery is accepted, once.
    let ok = receiver
        .receive(json_request(&valid).query(&q))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(!ok.duplicate());
    let again = receiver
        .receive(json_request(&valid).query(&format!("a=1&token={TOKEN}")))
        .await
        .unwrap();
    assert!(again.duplicate(), "a redelivery is a duplicate");
    assert_eq!(stored(&store).await, 1);
    let stats = receiver.stats();
    assert_eq!((stats.stored, stats.duplicates, stats.groups), (1, 1, 2));
}

#[tokio::test]
async fn an_empty_token_refuses_everything_unless_the_host_opts_in() {
    let valid = status_body(1, 4, "2026-01-29 18:53:35");
    let (closed, store) = standalone(ReceiverSettings::default());
    for query in ["", "token=", "token=anything"] {
        let rejection = closed
            .receive(json_request(&valid).query(query))
            .await
            .unwrap_err();
        assert_eq!(rejection, Rejection::Unauthorized);
    }
    assert_eq!(stored(&store).await, 0);
    let (open, store) = standalone(ReceiverSettings {
        allow_unauthenticated: true,
        ..ReceiverSettings::default()
    });
    assert!(open.receive(json_request(&valid)).await.is_ok());
    assert_eq!(stored(&store).await, 1);
}

#[tokio::test]
async fn a_gateway_signature_is_checked_when_configured() {
    let secret = Secret::new("gateway-shared-secret");
    let settings = ReceiverSettings {
        signature: Some(SignatureCheck {
            header: "X-Signature".into(),
            secret: secret.clone(),
        }),
        ..settings()
    };
    let (receiver, store) = standalone(settings.clone());
    let body = status_body(1, 4, "2026-01-29 18:53:35");
    let good = sign(&secret, &body);
    let bad = sign(&Secret::new("other"), &body);
    let q = query();
    let missing = receiver.receive(json_request(&body).query(&q)).await;
    assert_eq!(missing.unwrap_err(), Rejection::BadSignature);
    let wrong = receiver
        .receive(
            json_request(&body)
                .query(&q)
                .header(&settings, "x-signature", bad.as_bytes()),
        )
        .await;
    assert_eq!(wrong.unwrap_err().status(), 401);
    let tampered = {
        let mut b = body.clone();
        b[20] ^= 1;
        b
    };
    let wrong_body = receiver
        .receive(json_request(&tampered).query(&q).header(
            &settings,
            "X-Signature",
            good.as_bytes(),
        ))
        .await;
    assert_eq!(wrong_body.unwrap_err().status(), 401);
    assert_eq!(stored(&store).await, 0);
    let ok = receiver
        .receive(
            json_request(&body)
                .query(&q)
                .header(&settings, "X-Signature", good.as_bytes())
                .header(
                    &settings,
                    "Content-Type",
                    b"application/json; charset=utf-8",
                ),
        )
        .await
        .unwrap();
    assert!(!ok.duplicate());
    assert_eq!(stored(&store).await, 1);
}

#[tokio::test]
async fn a_store_that_cannot_commit_answers_503_so_keycrm_retries() {
    let receiver = WebhookReceiver::new(settings(), |_items| {
        Box::pin(async { Err(keycrm_sync::store::StoreError::Backend("disk full".into())) })
    });
    let body = status_body(1, 4, "2026-01-29 18:53:35");
    let rejection = receiver
        .receive(json_request(&body).query(&query()))
        .await
        .unwrap_err();
    assert_eq!(rejection.status(), 503);
}
