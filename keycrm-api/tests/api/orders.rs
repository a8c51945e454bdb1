//! Orders: list with filters and nested includes, get, create, update.

use keycrm_api::types;
use serde_json::json;
use wiremock::matchers::{body_json, query_param};

use crate::support::*;

const ORDER_INCLUDES: &str =
    "buyer,products.offer,payments,shipping.deliveryService,tags,status,manager,custom_fields";

#[tokio::test]
async fn order_list_sends_every_filter_and_reads_the_full_envelope() {
    let (server, client) = setup().await;
    api("GET", "/order")
        .and(query_param("filter[status_id]", "1,2"))
        .and(query_param(
            "filter[created_between]",
            "2024-05-01 00:00:00, 2024-05-31 23:59:59",
        ))
        .and(query_param("include", ORDER_INCLUDES))
        .and(query_param("limit", "2"))
        .and(query_param("page", "1"))
        .and(query_param("sort", "-id"))
        .respond_with(json(200, fixture("orders_page.json")))
        .expect(1)
        .mount(&server)
        .await;

    let response = client
        .order_list()
        .filter_status_id("1,2")
        .filter_created_between("2024-05-01 00:00:00, 2024-05-31 23:59:59")
        .include(ORDER_INCLUDES)
        .limit(2u64)
        .page(1u64)
        .sort("-id")
        .send()
        .await
        .expect("the order list parses");
    assert_eq!(response.status().as_u16(), 200);
    let page = response.into_inner();

    // The wire form: exactly these parameters, in this order, form-encoded.
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.path(), "/order");
    assert_eq!(
        query_pairs(&request),
        pairs(&[
            (
                "filter[created_between]",
                "2024-05-01 00:00:00, 2024-05-31 23:59:59"
            ),
            ("filter[status_id]", "1,2"),
            ("include", ORDER_INCLUDES),
            ("limit", "2"),
            ("page", "1"),
            ("sort", "-id"),
        ])
    );
    assert_eq!(
        request.url.query(),
        Some(
            "filter%5Bcreated_between%5D=2024-05-01+00%3A00%3A00%2C+2024-05-31+23%3A59%3A59\
             &filter%5Bstatus_id%5D=1%2C2\
             &include=buyer%2Cproducts.offer%2Cpayments%2Cshipping.deliveryService%2Ctags%2Cstatus%2Cmanager%2Ccustom_fields\
             &limit=2&page=1&sort=-id"
        )
    );
    assert!(request.body.is_empty(), "a GET carries no body");

    // Every envelope field; the unknown `links` is ignored.
    assert_eq!(page.current_page, Some(1));
    assert_eq!(page.from, Some(1));
    assert_eq!(page.to, Some(2));
    assert_eq!(page.per_page, Some(2));
    assert_eq!(page.last_page, Some(11));
    assert_eq!(page.total, Some(21));
    assert_eq!(
        page.path.as_deref(),
        Some("https://openapi.keycrm.app/v1/order")
    );
    assert_eq!(
        page.first_page_url.as_deref(),
        Some("https://openapi.keycrm.app/v1/order?filter%5Bstatus_id%5D=1%2C2&limit=2&page=1")
    );
    assert_eq!(
        page.last_page_url.as_deref(),
        Some("https://openapi.keycrm.app/v1/order?filter%5Bstatus_id%5D=1%2C2&limit=2&page=11")
    );
    assert_eq!(
        page.next_page_url.as_deref(),
        Some("https://openapi.keycrm.app/v1/order?filter%5Bstatus_id%5D=1%2C2&limit=2&page=2")
    );
    assert_eq!(page.prev_page_url, None);
    assert!(page.has_next());
    assert_eq!(page.next_page(), Some(2));
    assert_eq!(page.data.len(), 2);
    assert_eq!(page.items().len(), 2);

    check_fully_included_order(&page.data[0]);
    check_sparse_order(&page.data[1]);
}

/// The first order: every relation present, decimals as strings, ISO timestamps.
fn check_fully_included_order(order: &types::Order) {
    assert_eq!(order.id, Some(10452));
    assert_eq!(order.source_id, Some(3));
    assert_eq!(order.source_uuid.as_deref(), Some("RZ-318842207"));
    assert_eq!(order.global_source_uuid.as_deref(), Some("RZ-318842207"));
    assert_eq!(order.status_on_source.as_deref(), Some("Новий"));
    assert_eq!(order.client_id, Some(2217));
    assert_eq!((order.status_id, order.status_group_id), (Some(2), Some(2)));
    assert_eq!(order.manager_id, Some(14));

    // Decimals sent as strings keep their value and scale; numbers read as well.
    let grand_total = order.grand_total.expect("grand_total");
    assert_eq!(grand_total, dec("90247.69"));
    assert_eq!(grand_total.to_string(), "90247.69");
    assert_eq!(order.wrap_price, Some(dec("2.00")));
    assert_eq!(order.wrap_price.unwrap().to_string(), "2.00");
    assert_eq!(order.shipping_price, Some(dec("72")));
    assert_eq!(order.total_discount, Some(dec("2649.95")));
    assert_eq!(order.margin_sum, Some(dec("14895.64")));
    assert_eq!(order.expenses_sum, Some(dec("150")));
    assert_eq!(order.taxes, Some(keycrm_api::Decimal::ZERO));
    assert_eq!(order.payments_total, Some(dec("45000")));
    assert_eq!(order.products_total, Some(dec("90173.69")));
    assert_eq!(order.discount_amount, None);
    assert_eq!(order.promocode.as_deref(), Some("VESNA5"));
    assert_eq!(order.payment_status.as_deref(), Some("part_paid"));
    assert_eq!(order.is_gift, Some(false));
    assert_eq!(order.gift_wrap, Some(true));
    assert_eq!(order.has_reserves, Some(true));
    assert_eq!(order.fiscal_result, Some(json!([])));
    assert_eq!(
        order.buyer_comment.as_deref(),
        Some("Передзвоніть, будь ласка, перед відправкою")
    );

    // Both timestamp formats, all read as UTC.
    assert_eq!(order.created_at, Some(ts("2024-05-16 16:58:41")));
    assert_eq!(order.ordered_at, Some(ts("2024-05-16 16:55:10")));
    assert_eq!(order.updated_at, Some(ts("2024-05-17 08:12:03")));
    assert_eq!(order.source_updated_at, Some(ts("2024-05-16 16:55:12")));
    assert_eq!(
        order.last_synced_at.map(|t| t.to_string()).as_deref(),
        Some("2024-05-16 17:00:07")
    );
    assert_eq!(order.closed_at, None);
    assert_eq!(order.deleted_at, None);

    // buyer: the order-embedded buyer carries single strings.
    let buyer = order.buyer.as_ref().expect("include=buyer");
    assert_eq!(buyer.id, Some(2217));
    assert_eq!(buyer.full_name.as_deref(), Some("Олена Коваленко"));
    assert_eq!(
        buyer.email,
        Some(types::BuyerContactValues::String(
            "olena.kovalenko@ukr.net".into()
        ))
    );
    assert_eq!(
        buyer.phone,
        Some(types::BuyerContactValues::String("+380671234567".into()))
    );
    assert_eq!(buyer.manager_id, Some(14));
    assert_eq!(buyer.company_id, None);

    // products with offer
    let products = order.products.as_ref().expect("include=products.offer");
    assert_eq!(products.len(), 3);
    let laptop = &products[0];
    assert_eq!(laptop.id, Some(61873));
    assert_eq!(
        laptop.name.as_deref(),
        Some("Ноутбук Lenovo IdeaPad Slim 5 16\" 16/512 ГБ")
    );
    assert_eq!(laptop.sku.as_deref(), Some("LEN-IPS5-16-512"));
    assert_eq!(laptop.price, Some(dec("52999.00")));
    assert_eq!(laptop.price_sold, Some(dec("50349.05")));
    assert_eq!(laptop.discount_amount, Some(dec("2649.95")));
    assert_eq!(laptop.quantity, Some(dec("1")));
    assert_eq!(laptop.unit_type.as_deref(), Some("шт"));
    assert_eq!(laptop.upsale, Some(false));
    assert_eq!(laptop.shipment_type.as_deref(), Some("warehouse"));
    assert_eq!(
        laptop.picture,
        Some(json!(
            "https://cdn.keycrm.app/tekhnomarket/products/len-ips5-16.jpg"
        ))
    );
    let properties = laptop.properties.as_ref().expect("properties");
    assert_eq!(properties[1].name.as_deref(), Some("Пам'ять"));
    assert_eq!(properties[1].value, Some(json!("512 ГБ")));
    let warehouse = laptop.warehouse.as_ref().expect("warehouse");
    assert_eq!(
        (warehouse.id, warehouse.name.as_deref(), warehouse.is_active),
        (Some(1), Some("Основний склад (Київ)"), Some(true))
    );
    let offer = laptop.offer.as_ref().expect("products.offer");
    assert_eq!(offer.id, Some(8841));
    assert_eq!(offer.product_id, Some(3120));
    assert_eq!(offer.barcode.as_deref(), Some("0196803456789"));
    assert_eq!(offer.purchased_price, Some(dec("44100")));
    assert_eq!(offer.quantity, Some(dec("7")));
    assert_eq!(offer.in_reserve, Some(dec("1")));
    assert_eq!(offer.weight, Some(dec("1.9")));
    assert_eq!(offer.length, Some(dec("36")));
    assert_eq!(
        offer.properties.as_ref().unwrap()[0].value.as_deref(),
        Some("Сірий")
    );
    let monitors = &products[1];
    assert_eq!(
        monitors.price,
        Some(dec("13999")),
        "decimal from a JSON integer"
    );
    assert_eq!(
        monitors.purchased_price,
        Some(dec("11250.5")),
        "decimal from a JSON float"
    );
    assert_eq!(monitors.quantity, Some(dec("2")));
    assert_eq!(monitors.upsale, Some(true));
    assert_eq!(monitors.picture, None);
    assert_eq!(
        monitors.offer.as_ref().and_then(|o| o.barcode.clone()),
        None
    );
    let dock = &products[2];
    assert_eq!(dock.sku, None, "a one-off line has no SKU");
    assert_eq!(dock.quantity, Some(dec("1")), "\"1.000\" reads as one");
    assert_eq!(dock.offer, None);
    assert_eq!(dock.warehouse, None);
    assert_eq!(dock.properties, None);
    let lines_total: rust_decimal::Decimal = products
        .iter()
        .map(|p| p.price_sold.unwrap().value() * p.quantity.unwrap().value())
        .sum();
    assert_eq!(lines_total, order.products_total.unwrap().value());

    // payments
    let payments = order.payments.as_ref().expect("include=payments");
    assert_eq!(payments.len(), 2);
    let prepaid = &payments[0];
    assert_eq!(prepaid.id, Some(5501));
    assert_eq!(prepaid.destination_id, Some(10452));
    assert_eq!(prepaid.amount, Some(dec("45000.00")));
    assert_eq!(prepaid.actual_amount, Some(dec("45000.00")));
    assert_eq!(prepaid.actual_currency.as_deref(), Some("UAH"));
    assert_eq!(prepaid.source_currency.as_deref(), Some("UAH"));
    assert_eq!(prepaid.is_expense, Some(json!(false)));
    assert_eq!(prepaid.status.as_deref(), Some("paid"));
    assert_eq!(
        prepaid.transaction_uuid.as_deref(),
        Some("PB-20240516-77812")
    );
    assert_eq!(prepaid.payment_date, Some(ts("2024-05-16 17:00:07")));
    assert_eq!(
        prepaid.created_at, prepaid.payment_date,
        "ISO and plain forms agree"
    );
    let method = prepaid.payment_method.as_ref().expect("payment_method");
    assert_eq!(method.name.as_deref(), Some("Оплата на рахунок ФОП"));
    assert_eq!(method.alias.as_deref(), Some("fop_invoice"));
    let rest = &payments[1];
    assert_eq!(rest.amount, Some(dec("45247.69")));
    assert_eq!(rest.status.as_deref(), Some("not_paid"));
    assert_eq!(rest.payment_date, None);
    assert_eq!(
        prepaid.amount.unwrap().value() + rest.amount.unwrap().value(),
        order.grand_total.unwrap().value()
    );

    // shipping with the delivery service
    let shipping = order.shipping.as_ref().expect("include=shipping");
    assert_eq!(shipping.delivery_service_id, Some(1));
    assert_eq!(shipping.tracking_code.as_deref(), Some("20450912345678"));
    assert_eq!(shipping.shipping_status.as_deref(), Some("invoice"));
    assert_eq!(shipping.shipping_address_city.as_deref(), Some("Київ"));
    assert_eq!(
        shipping.shipping_address_country_code.as_deref(),
        Some("UA")
    );
    assert_eq!(
        shipping.shipping_receive_point.as_deref(),
        Some("Відділення №52: вул. Здолбунівська, 7д")
    );
    assert_eq!(shipping.recipient_phone.as_deref(), Some("+380671234567"));
    assert_eq!(
        shipping.shipping_date,
        keycrm_api::Date::from_ymd(2024, 5, 18)
    );
    assert_eq!(
        shipping.shipping_date_actual,
        Some(ts("2024-05-18 00:00:00"))
    );
    assert_eq!(
        shipping
            .address_payload
            .as_ref()
            .and_then(|p| p.get("city_ref"))
            .and_then(|v| v.as_str()),
        Some("8d5a980d-391c-11dd-90d9-001a92567626")
    );
    let service = shipping.delivery_service.as_ref().expect("deliveryService");
    assert_eq!(service.name.as_deref(), Some("Нова Пошта"));
    assert_eq!(service.alias.as_deref(), Some("novaposhta"));

    // tags, status, manager, custom fields
    let tags = order.tags.as_ref().expect("include=tags");
    assert_eq!(
        tags.iter()
            .map(|t| (t.id.unwrap(), t.name.clone().unwrap()))
            .collect::<Vec<_>>(),
        vec![(7, "VIP".to_string()), (12, "Крупногабарит".to_string())]
    );
    assert_eq!(tags[0].color.as_deref(), Some("#F59F00"));
    assert_eq!(tags[0].created_at, Some(ts("2023-02-01 10:00:00")));
    assert_eq!(tags[1].created_at, Some(ts("2023-06-12 08:30:00")));
    let status = order.status.as_ref().expect("include=status");
    assert_eq!(status.id, Some(2));
    assert_eq!(status.name.as_deref(), Some("Погоджено"));
    assert_eq!(status.alias.as_deref(), Some("approved"));
    assert_eq!(status.group_id, Some(2));
    assert_eq!(status.is_closing_order, Some(false));
    let manager = order.manager.as_ref().expect("include=manager");
    assert_eq!(manager.full_name.as_deref(), Some("Андрій Шевчук"));
    assert_eq!(manager.phone.as_deref(), Some("+380501112233"));
    assert_eq!(manager.last_logged_at, Some(ts("2024-05-17 07:58:12")));
    let fields = order.custom_fields.as_ref().expect("include=custom_fields");
    assert_eq!(fields.len(), 4);
    assert_eq!(fields[0].uuid.as_deref(), Some("OR_1037"));
    assert_eq!(fields[0].type_.as_deref(), Some("select"));
    assert_eq!(fields[0].value, Some(json!(["Viber", "Telegram"])));
    assert_eq!(fields[1].value, Some(json!("38291746")));
    assert_eq!(fields[2].value, Some(json!(2.5)));
    assert_eq!(fields[3].value, None, "a null custom field value");
}

/// The second order: nulls where the vendor promises values, an unknown payment status,
/// decimals as JSON numbers and `YYYY-MM-DD HH:MM:SS` timestamps.
fn check_sparse_order(order: &types::Order) {
    assert_eq!(order.id, Some(10453));
    assert_eq!(order.grand_total, None, "grand_total: null");
    assert_eq!(order.tags, None, "tags: null");
    assert_eq!(order.products, None, "products: null");
    assert_eq!(order.promocode, None, "promocode: null");
    assert_eq!(order.shipping, None);
    assert_eq!(order.manager, None);
    assert_eq!(order.source_uuid, None);
    assert_eq!(order.last_synced_at, None);
    assert_eq!(order.payments.as_deref(), Some(&[][..]));
    assert_eq!(order.custom_fields.as_deref(), Some(&[][..]));
    assert_eq!(
        order.payment_status.as_deref(),
        Some("refunded"),
        "an undocumented payment status is kept as-is"
    );
    assert_eq!(order.shipping_price, Some(dec("65.5")));
    assert_eq!(order.payments_total, Some(dec("1299.50")));
    assert_eq!(order.total_discount, Some(keycrm_api::Decimal::ZERO));
    assert_eq!(order.created_at, Some(ts("2024-05-17T09:30:00Z")));
    assert_eq!(
        order.closed_at.map(|t| t.to_string()).as_deref(),
        Some("2024-05-18 12:00:00")
    );
    let buyer = order.buyer.as_ref().expect("buyer");
    assert_eq!(buyer.full_name.as_deref(), Some("Тарас Мельник"));
    assert_eq!(buyer.email, None);
    assert_eq!(buyer.company_id, Some(77));
    let status = order.status.as_ref().expect("status");
    assert_eq!(status.name.as_deref(), Some("Новий"));
    assert_eq!(status.is_reserved, Some(true));
    assert_eq!(status.created_at, Some(ts("2022-11-03T09:41:12.000000Z")));
}

#[tokio::test]
async fn order_get_sends_the_id_and_include() {
    let (server, client) = setup().await;
    api("GET", "/order/10452")
        .and(query_param("include", "buyer,products.offer"))
        .respond_with(json(200, fixture("order_single.json")))
        .expect(1)
        .mount(&server)
        .await;

    let order = client
        .order_get()
        .order_id(10452)
        .include("buyer,products.offer")
        .send()
        .await
        .expect("the order parses")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("include=buyer%2Cproducts.offer"));
    assert_eq!(order.id, Some(10452));
    assert_eq!(order.status_id, Some(4));
    assert_eq!(order.grand_total, Some(dec("90247.69")));
    assert_eq!(order.payment_status.as_deref(), Some("paid"));
    assert_eq!(order.updated_at, Some(ts("2024-05-18 11:20:45")));
    assert_eq!(
        order.buyer.as_ref().and_then(|b| b.full_name.as_deref()),
        Some("Олена Коваленко")
    );
    let products = order.products.expect("products");
    assert_eq!(
        products[0].offer.as_ref().and_then(|o| o.quantity),
        Some(dec("6"))
    );
}

#[tokio::test]
async fn order_create_sends_the_typed_body() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "source_id": 2,
        "source_uuid": "PROM-7741203",
        "manager_id": 14,
        "manager_comment": "Замовлення з Prom.ua",
        "buyer_comment": "Доставка Новою Поштою у відділення",
        "ordered_at": "2024-05-20 10:15:00",
        "buyer": {
            "full_name": "Ірина Бондаренко",
            "email": "iryna.bondarenko@i.ua",
            "phone": "+380501234567"
        },
        "shipping": {
            "delivery_service_id": 1,
            "shipping_address_city": "Львів",
            "shipping_receive_point": "Відділення №8",
            "recipient_full_name": "Бондаренко Ірина",
            "recipient_phone": "+380501234567",
            "shipping_date": "2024-05-21"
        },
        "products": [
            {"sku": "JBL-T520BT-BLK", "price": 1899, "quantity": 1},
            {
                "name": "Чохол для навушників",
                "price": 249.5,
                "quantity": 2,
                "properties": [{"name": "Колір", "value": "Чорний"}]
            }
        ],
        "payments": [
            {"payment_method_id": 2, "amount": 2398, "status": "not_paid"}
        ],
        "custom_fields": [
            {"uuid": "OR_1037", "value": ["Viber"]}
        ]
    });
    api("POST", "/order")
        .and(body_json(&expected_body))
        .respond_with(json(201, fixture("order_created.json")))
        .expect(1)
        .mount(&server)
        .await;

    let body = types::OrderCreate::builder()
        .source_id(2)
        .source_uuid("PROM-7741203".to_string())
        .manager_id(14)
        .manager_comment("Замовлення з Prom.ua".to_string())
        .buyer_comment("Доставка Новою Поштою у відділення".to_string())
        .ordered_at(ts("2024-05-20T10:15:00.000000Z"))
        .buyer(
            types::OrderBuyerInput::builder()
                .full_name("Ірина Бондаренко".to_string())
                .email("iryna.bondarenko@i.ua".to_string())
                .phone("+380501234567".to_string()),
        )
        .shipping(built::<types::ShippingInput>(
            types::ShippingInput::builder()
                .delivery_service_id(1)
                .shipping_address_city("Львів".to_string())
                .shipping_receive_point("Відділення №8".to_string())
                .recipient_full_name("Бондаренко Ірина".to_string())
                .recipient_phone("+380501234567".to_string())
                .shipping_date(keycrm_api::Date::from_ymd(2024, 5, 21).unwrap()),
        ))
        .products(vec![
            types::OrderProductInput::builder()
                .sku("JBL-T520BT-BLK".to_string())
                .price(dec("1899.00"))
                .quantity(dec("1"))
                .try_into()
                .expect("complete line"),
            types::OrderProductInput::builder()
                .name("Чохол для навушників".to_string())
                .price(dec("249.50"))
                .quantity(dec("2"))
                .properties(vec![types::OrderProductProperty {
                    name: Some("Колір".into()),
                    value: Some(json!("Чорний")),
                    ..Default::default()
                }])
                .try_into()
                .expect("complete line"),
        ])
        .payments(vec![
            types::OrderPaymentInput::builder()
                .payment_method_id(2)
                .amount(dec("2398"))
                .status(types::OrderPaymentInputStatus::NotPaid)
                .try_into()
                .expect("complete line"),
        ])
        .custom_fields(vec![types::CustomFieldValueInput {
            uuid: "OR_1037".into(),
            value: Some(json!(["Viber"])),
        }]);

    let response = client.order_create().body(body).send().await.expect("201");
    assert_eq!(response.status().as_u16(), 201);
    let order = response.into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/order");
    assert_eq!(request.url.query(), None);
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(sent_json(&request), expected_body);

    assert_eq!(order.id, Some(10460));
    assert_eq!(order.source_uuid.as_deref(), Some("PROM-7741203"));
    assert_eq!(order.grand_total, Some(dec("1397.00")));
    assert_eq!(order.total_discount, Some(keycrm_api::Decimal::ZERO));
    assert_eq!(order.payment_status.as_deref(), Some("not_paid"));
    assert_eq!(order.ordered_at, Some(ts("2024-05-20 10:15:00")));
}

#[tokio::test]
async fn order_update_sends_only_the_changed_fields() {
    let (server, client) = setup().await;
    let expected_body = json!({
        "status_id": 4,
        "manager_comment": "Відправлено двома посилками",
        "shipping": {"tracking_code": "20450912345678"},
        "products": [{"sku": "LEN-IPS5-16-512", "quantity": 1, "product_status_id": 3}]
    });
    api("PUT", "/order/10452")
        .and(body_json(&expected_body))
        .respond_with(json(202, fixture("order_single.json")))
        .expect(1)
        .mount(&server)
        .await;

    let order = client
        .order_update()
        .order_id(10452)
        .body_map(|b| {
            b.status_id(4)
                .manager_comment("Відправлено двома посилками".to_string())
                .shipping(built::<types::ShippingInput>(
                    types::ShippingInput::builder().tracking_code("20450912345678".to_string()),
                ))
                .products(vec![
                    types::OrderProductUpdateInput::builder()
                        .sku("LEN-IPS5-16-512".to_string())
                        .quantity(dec("1"))
                        .product_status_id(3)
                        .try_into()
                        .unwrap(),
                ])
        })
        .send()
        .await
        .expect("202")
        .into_inner();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "PUT");
    assert_eq!(sent_json(&request), expected_body);
    assert_eq!(order.status_id, Some(4));
    assert_eq!(
        order.manager_comment.as_deref(),
        Some("Відправлено двома посилками")
    );
}
