//! Buyers: list with filters and includes, create.

use keycrm_api::types::{self, BuyerContactValues};
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

#[tokio::test]
async fn buyer_list_filters_by_phone_and_reads_contact_arrays() {
    let (server, client) = setup().await;
    api("GET", "/buyer")
        .and(query_param(
            "filter[buyer_phone]",
            "+380671234567,+380931234567",
        ))
        .and(query_param(
            "filter[updated_between]",
            "2024-05-01, 2024-05-31",
        ))
        .and(query_param("include", "shipping,loyalty,custom_fields"))
        .and(query_param("limit", "2"))
        .and(query_param("page", "2"))
        .respond_with(json(200, fixture("buyers_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let page = client
        .buyer_list()
        .filter_buyer_phone("+380671234567,+380931234567")
        .filter_updated_between("2024-05-01, 2024-05-31")
        .include("shipping,loyalty,custom_fields")
        .limit(2u64)
        .page(2u64)
        .send()
        .await
        .expect("buyers")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), "/buyer");
    assert_eq!(
        request.url.query(),
        Some(
            "filter%5Bbuyer_phone%5D=%2B380671234567%2C%2B380931234567\
             &filter%5Bupdated_between%5D=2024-05-01%2C+2024-05-31\
             &include=shipping%2Cloyalty%2Ccustom_fields&limit=2&page=2"
        ),
        "`+` in phone numbers must be percent-encoded, not sent as a space"
    );

    assert_eq!(page.current_page, Some(2));
    assert_eq!(
        page.prev_page_url.as_deref(),
        Some("https://openapi.keycrm.app/v1/buyer?page=1")
    );
    assert_eq!(
        (page.from, page.to, page.total),
        (Some(3), Some(4), Some(4))
    );
    assert!(!page.has_next(), "the last page");

    let olena = &page.data[0];
    assert_eq!(olena.id, Some(2217));
    assert_eq!(olena.full_name.as_deref(), Some("Олена Коваленко"));
    assert_eq!(
        olena.phone,
        Some(BuyerContactValues::Array(vec![
            "+380671234567".into(),
            "+380441234567".into()
        ]))
    );
    assert_eq!(
        olena.email,
        Some(BuyerContactValues::Array(vec![
            "olena.kovalenko@ukr.net".into(),
            "o.kovalenko@gmail.com".into()
        ]))
    );
    assert_eq!(olena.birthday, keycrm_api::Date::from_ymd(1988, 9, 21));
    assert_eq!(olena.created_at, Some(ts("2023-04-02 11:20:31")));
    assert_eq!(olena.updated_at, Some(ts("2024-05-17T08:12:03Z")));
    let shipping = &olena.shipping.as_ref().expect("include=shipping")[0];
    assert_eq!(shipping.city.as_deref(), Some("Київ"));
    assert_eq!(shipping.additional_address.as_deref(), Some("кв. 41"));
    assert_eq!(shipping.zip_code.as_deref(), Some("02000"));
    let loyalty = &olena.loyalty.as_ref().expect("include=loyalty")[0];
    assert_eq!(
        loyalty.loyalty_program_level_name.as_deref(),
        Some("Срібний")
    );
    assert_eq!(loyalty.amount, Some(dec("90247.69")));
    assert_eq!(loyalty.discount, Some(dec("5")));
    let fields = olena.custom_fields.as_ref().expect("include=custom_fields");
    assert_eq!(fields[0].uuid.as_deref(), Some("CT_1001"));
    assert_eq!(fields[0].value, Some(json!(["Instagram"])));

    let taras = &page.data[1];
    assert_eq!(taras.email, Some(BuyerContactValues::Array(vec![])));
    assert_eq!(taras.birthday, None);
    assert_eq!(taras.company_id, Some(77));
    assert_eq!(taras.shipping.as_deref(), Some(&[][..]));
}

#[tokio::test]
async fn buyer_create_posts_arrays_of_contacts() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "full_name": "Ірина Бондаренко",
        "email": ["iryna.bondarenko@i.ua"],
        "phone": ["+380501234567"],
        "note": "Оптовий покупець",
        "birthday": "1992-03-08",
        "manager_id": 14,
        "shipping": [{"city": "Львів", "address": "вул. Городоцька, 120"}]
    });
    api("POST", "/buyer")
        .and(body_json(&expected_body))
        .respond_with(json(201, fixture("buyer_created.json")))
        .expect(1)
        .mount(&server)
        .await;

    let buyer = client
        .buyer_create()
        .body(
            types::BuyerCreate::builder()
                .full_name("Ірина Бондаренко")
                .email(vec!["iryna.bondarenko@i.ua".to_string()])
                .phone(vec!["+380501234567".to_string()])
                .note("Оптовий покупець".to_string())
                .birthday(keycrm_api::Date::from_ymd(1992, 3, 8).unwrap())
                .manager_id(14)
                .shipping(vec![types::BuyerShippingInput {
                    city: Some("Львів".into()),
                    address: Some("вул. Городоцька, 120".into()),
                    ..Default::default()
                }]),
        )
        .send()
        .await
        .expect("201")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(sent_json(&request), expected_body);
    assert_eq!(buyer.id, Some(2245));
    assert_eq!(
        buyer.phone,
        Some(BuyerContactValues::Array(vec!["+380501234567".into()]))
    );
    assert_eq!(buyer.birthday, keycrm_api::Date::from_ymd(1992, 3, 8));
}
