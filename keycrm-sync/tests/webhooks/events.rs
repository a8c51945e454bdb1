//! Typed events: tolerant parsing, errors that name the path and never the value, limits,
//! dedupe keys.

use super::*;

#[test]
fn trigger_events_parse_tolerantly_and_keep_unknown_fields() {
    let body = br#"{"event":"order.change_order_status","context":{
        "id":"1357","status_id":4,"source_uuid":9001,"grand_total":"2.00","payments_total":12.5,
        "status_changed_at":"2026-01-29T18:53:35.000000Z","updated_at":"2026-01-29 18:53:36",
        "created_at":"","products_total":"2.00","is_gift":false}}"#;
    let WebhookEvent::OrderStatusChanged(c) = WebhookEvent::parse(body).unwrap() else {
        panic!("an order status event");
    };
    assert_eq!(c.id, 1357);
    assert_eq!(c.status_id, Some(4));
    assert_eq!(c.source_uuid.as_deref(), Some("9001"));
    assert_eq!(c.grand_total, Some(dec("2")));
    assert_eq!(c.payments_total, Some(dec("12.5")));
    assert_eq!(
        c.status_changed_at.unwrap().to_string(),
        "2026-01-29 18:53:35"
    );
    assert_eq!(c.updated_at.unwrap().to_string(), "2026-01-29 18:53:36");
    assert_eq!(c.created_at, None);
    assert_eq!(c.extra["products_total"], "2.00");
    assert_eq!(c.extra["is_gift"], false);

    let lead = br#"{"event":"lead.change_lead_status","context":{"id":7,"pipeline_id":2,"status_id":11,"title":"Card"}}"#;
    let WebhookEvent::LeadStatusChanged(l) = WebhookEvent::parse(lead).unwrap() else {
        panic!("a lead event");
    };
    assert_eq!((l.id, l.pipeline_id, l.status_id), (7, Some(2), Some(11)));
    assert_eq!(l.extra["title"], "Card");

    let pay =
        br#"{"event":"order.change_payment_status","context":{"id":1,"payment_status":"paid"}}"#;
    let event = WebhookEvent::parse(pay).unwrap();
    assert_eq!(event.name(), "order.change_payment_status");

    let unknown = br#"{"event":"order.products_reserved","context":{"id":1},"x":[1]}"#;
    let WebhookEvent::Unknown { event, body } = WebhookEvent::parse(unknown).unwrap() else {
        panic!("unknown events are kept");
    };
    assert_eq!(event, "order.products_reserved");
    assert_eq!(body["x"], json!([1]), "kept whole");
}

#[test]
fn stock_rows_accept_numeric_strings_and_need_an_offer_id_or_a_sku() {
    let body = br#"[{"offer_id":5,"sku":"TEA-1","in_stock":"118.000","in_reserve":2},
                    {"sku":"CUP-1","in_stock":3},{"offer_id":6,"sku":"","in_stock":0}]"#;
    let WebhookEvent::StockChanged(rows) = WebhookEvent::parse(body).unwrap() else {
        panic!("a stock delivery");
    };
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].in_stock, dec("118"));
    assert_eq!(rows[0].in_reserve, Some(dec("2")));
    assert_eq!(rows[1].offer_id, None);
    assert_eq!(rows[2].sku, None, "an empty SKU is no SKU");

    let err = WebhookEvent::parse(br#"[{"offer_id":5,"in_stock":1},{"sku":"","in_stock":1}]"#)
        .unwrap_err();
    assert_eq!(
        err,
        WebhookError::Invalid {
            path: "[1]".into(),
            problem: "a stock row needs an `offer_id` or a non-empty `sku`"
        }
    );
    let err = WebhookEvent::parse(br#"[{"offer_id":5,"in_stock":"lots"}]"#).unwrap_err();
    assert!(err.to_string().contains("`[0].in_stock`"), "{err}");
    assert!(
        !err.to_string().contains("lots"),
        "no values in errors: {err}"
    );
}

#[test]
fn errors_name_the_path_and_never_the_value() {
    let body = br#"{"event":"order.change_order_status","context":{"id":"Olena Petrenko"}}"#;
    let err = WebhookEvent::parse(body).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid webhook at `context.id`: expected an integer"
    );
    let body =
        br#"{"event":"order.change_order_status","context":{"id":1,"updated_at":"+380501234567"}}"#;
    let err = WebhookEvent::parse(body).unwrap_err();
    assert!(err.to_string().contains("context.updated_at"), "{err}");
    assert!(!err.to_string().contains("380501234567"), "{err}");
    let err = WebhookEvent::parse(br#"{"event":"order.change_order_status"}"#).unwrap_err();
    assert!(err.to_string().contains("`context`: missing"), "{err}");
}

#[test]
fn debug_shows_no_customer_data() {
    let event = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:53:35")).unwrap();
    let shown = format!("{event:?}");
    assert!(shown.contains("id: 1"), "{shown}");
    assert!(!shown.contains("Петренко"), "{shown}");
}

#[test]
fn limits_are_configurable_and_checked_before_parsing() {
    let limits = ParseLimits {
        max_bytes: 64,
        max_depth: 3,
    };
    let long = format!(r#"[{{"sku":"{}","in_stock":1}}]"#, "A".repeat(100));
    assert!(matches!(
        WebhookEvent::parse_with(long.as_bytes(), limits),
        Err(WebhookError::TooLarge { limit: 64, .. })
    ));
    assert!(matches!(
        WebhookEvent::parse_with(br#"[{"sku":"A","in_stock":1,"x":[[1]]}]"#, limits),
        Err(WebhookError::TooDeep { limit: 3 })
    ));
    // Brackets inside strings do not count.
    assert!(WebhookEvent::parse_with(br#"[{"sku":"[[[[[[","in_stock":1}]"#, limits).is_ok());
}

#[test]
fn dedupe_keys_come_from_the_typed_event() {
    let a = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:53:35")).unwrap();
    let a_iso = WebhookEvent::parse(&status_body(1, 4, "2026-01-29T18:53:35Z")).unwrap();
    let b = WebhookEvent::parse(&status_body(1, 4, "2026-01-29 18:54:00")).unwrap();
    assert_eq!(
        a.dedupe(),
        a_iso.dedupe(),
        "both timestamp forms are one change"
    );
    assert_ne!(a.dedupe(), b.dedupe());
    // Without change times, two different contexts never share a key.
    let c = WebhookEvent::parse(
        br#"{"event":"order.change_order_status","context":{"id":1,"grand_total":1}}"#,
    )
    .unwrap();
    let d = WebhookEvent::parse(
        br#"{"event":"order.change_order_status","context":{"id":1,"grand_total":2}}"#,
    )
    .unwrap();
    assert_ne!(c.dedupe().key, d.dedupe().key);
    // Stock: one stream per set of offers, the key per set of levels.
    let s118 = WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":118}]"#).unwrap();
    let s118s =
        WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":"118.000"}]"#).unwrap();
    let s117 = WebhookEvent::parse(br#"[{"offer_id":5,"sku":"TEA-1","in_stock":117}]"#).unwrap();
    assert_eq!(s118.dedupe(), s118s.dedupe());
    assert_ne!(s118.dedupe().key, s117.dedupe().key);
    assert_eq!(s118.dedupe().stream, s117.dedupe().stream);
    assert!(s118.dedupe().stream.is_some());
}
