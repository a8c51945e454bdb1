//! Contract tests of the KeyCRM simulator: every one of the 59 operations is called through
//! the generated client, answers with the success code KeyCRM uses for it, and decodes into
//! the generated types; a page walk over 1,000 seeded orders sees each order exactly once.

use std::collections::BTreeSet;

use keycrm::api::Decimal;
use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig, operations};
use keycrm::api::types::{self, PipelineCardGetResponse};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

mod support;
use support::direct_client;

/// A generated body type from JSON.
fn body<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("the test body matches the generated type")
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("a decimal literal")
}

/// The status of the last request the simulator answered.
fn last_status(mock: &KeyCrmMock) -> Option<u16> {
    mock.requests().last().and_then(|r| r.status)
}

#[tokio::test]
async fn every_operation_answers_its_documented_code_and_decodes() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .seed(SeedConfig::default())
        .start()
        .await;
    let client = direct_client(&mock);

    // --- Reference lists: 200 pages.
    let r = client.order_tag_list().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.into_inner().data[0].name.as_deref(), Some("VIP"));
    let sources = client
        .order_source_list()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sources.total, Some(5));
    let statuses = client
        .order_status_list()
        .sort("-id")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statuses.data[0].id, Some(6), "sorted by -id");
    assert_eq!(statuses.data[0].is_closing_order, Some(true));
    let methods = client
        .order_payment_method_list()
        .limit(2u64)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!((methods.data.len(), methods.last_page), (2, Some(3)));
    let expense_types = client
        .order_expense_type_list()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expense_types.data[0].alias.as_deref(), Some("delivery"));
    let delivery = client
        .order_delivery_service_list()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(delivery.data[0].name.as_deref(), Some("Нова Пошта"));
    let product_statuses = client
        .order_product_status_list()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(product_statuses.total, Some(4));
    let users = client
        .user_list()
        .filter_status("active")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(users.total, Some(3));
    let calls = client
        .call_list()
        .include("manager,service,lead,client")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(calls.total, Some(10));
    let call = &calls.data[0];
    assert_eq!(
        call.service.as_ref().and_then(|s| s.name.as_deref()),
        Some("Ringostat")
    );
    assert_eq!(call.client.as_ref().and_then(|c| c.id), call.client_id);
    let fields = client
        .custom_field_list()
        .include("options")
        .filter_model("order")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fields.len(), 3);
    assert_eq!(fields[0].uuid.as_deref(), Some("OR_1001"));
    assert_eq!(fields[0].options.as_ref().map(Vec::len), Some(3));

    // --- Catalogue.
    let categories = client.category_list().send().await.unwrap().into_inner();
    assert_eq!(categories.total, Some(4));
    let r = client
        .category_create()
        .body(body::<types::CategoryCreate>(
            json!({ "name": "Аксесуари", "parent_id": categories.data[0].id }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let category = r.into_inner();
    assert_eq!(category.parent_id, categories.data[0].id);

    let r = client
        .product_create()
        .body(body::<types::ProductCreate>(json!({
            "name": "Рюкзак міський", "sku": "BAG-URB", "price": 100.5,
            "purchased_price": 55, "category_id": category.id, "unit_type": "шт",
            "pictures": ["https://cdn.example.com/bag.jpg"],
            "custom_fields": [{ "uuid": "CT_1002", "value": "Кордура" }],
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let product = r.into_inner();
    let product_id = product.id.expect("an id");
    assert_eq!(product.price, Some(dec("100.5")));
    assert_eq!(product.has_offers, Some(false));
    let got = client
        .product_get()
        .product_id(product_id)
        .include("custom_fields")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.custom_fields.as_ref().map(|f| f[0].uuid.clone()),
        Some(Some("CT_1002".into()))
    );
    let r = client
        .product_update()
        .product_id(product_id)
        .body(body::<types::ProductUpdate>(
            json!({ "price": 120, "description": "Водонепроникний" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let updated = r.into_inner();
    assert_eq!(updated.price, Some(dec("120")));
    assert!(
        updated.updated_at > product.updated_at,
        "updated_at moves on a write"
    );
    let r = client
        .product_import()
        .body(body::<types::ProductImport>(json!({ "products": [
            { "name": "Пляшка для води", "sku": "BTL-500", "price": 250 },
            { "name": "Термос 1 л", "sku": "THR-1L", "price": 690 },
        ]})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (201, Some(true))
    );
    let products = client
        .product_list()
        .filter_category_id(category.id.unwrap().to_string())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(products.total, Some(1));
    let r = client
        .product_offers_create()
        .product_id(product_id)
        .body(body::<types::ProductOffersCreate>(json!({ "offers": [
            { "sku": "BAG-URB-BLK", "price": 130, "properties": [{ "name": "Колір", "value": "Чорний" }] },
            { "sku": "BAG-URB-GRY", "price": 125, "properties": [{ "name": "Колір", "value": "Сірий" }] },
        ]})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let offers = client
        .offer_list()
        .filter_product_id(product_id.to_string())
        .include("product")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        offers.total,
        Some(2),
        "the variants replaced the default offer"
    );
    let black = offers
        .data
        .iter()
        .find(|o| o.sku.as_deref() == Some("BAG-URB-BLK"))
        .unwrap()
        .clone();
    let grey = offers
        .data
        .iter()
        .find(|o| o.sku.as_deref() == Some("BAG-URB-GRY"))
        .unwrap()
        .clone();
    let agg = black
        .product
        .as_ref()
        .and_then(|p| p.properties_agg.clone())
        .unwrap();
    assert_eq!(agg["Колір"], json!(["Чорний", "Сірий"]));
    let r = client
        .offer_update_batch()
        .body(body::<types::OfferUpdateBatch>(json!({ "offers": [
            { "sku": "BAG-URB-BLK", "price": 135.5 },
            { "id": grey.id, "purchased_price": 60 },
        ]})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (202, Some(true))
    );
    let r = client
        .offer_stock_update()
        .body(body::<types::OfferStockUpdate>(
            json!({ "warehouse_id": 1, "stocks": [
                { "sku": "BAG-URB-BLK", "quantity": 12.5 },
                { "id": grey.id, "quantity": 3 },
            ]}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let stocks = client
        .offer_stock_list()
        .filter_offers_sku("BAG-URB-BLK,BAG-URB-GRY")
        .filter_details(true)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stocks.total, Some(2));
    let black_stock = stocks.data.iter().find(|s| s.id == black.id).unwrap();
    assert_eq!(black_stock.quantity, Some(dec("12.5")));
    assert_eq!(black_stock.price, Some(dec("135.5")));
    let rows = black_stock.warehouse.as_ref().expect("per-warehouse rows");
    assert_eq!(
        (rows.len(), rows[0].id, rows[0].quantity),
        (1, Some(1), Some(dec("12.5")))
    );

    // --- Buyers and companies.
    let r = client
        .buyer_create()
        .body(body::<types::BuyerCreate>(json!({
            "full_name": "Тарас Григоренко", "phone": ["+380671112233"],
            "email": ["taras.hryhorenko@ukr.net"], "birthday": "1990-04-12",
            "shipping": [{ "city": "Київ", "address": "вул. Хрещатик, 1" }],
            "custom_fields": [{ "uuid": "CT_1001", "value": ["Instagram"] }],
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let buyer = r.into_inner();
    let buyer_id = buyer.id.unwrap();
    let got = client
        .buyer_get()
        .buyer_id(buyer_id)
        .include("manager,shipping,company,loyalty,custom_fields")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.shipping
            .as_ref()
            .and_then(|s| s[0].city.clone())
            .as_deref(),
        Some("Київ")
    );
    assert_eq!(
        got.birthday.map(|d| d.to_string()).as_deref(),
        Some("1990-04-12")
    );
    let r = client
        .buyer_update()
        .buyer_id(buyer_id)
        .body(body::<types::BuyerUpdate>(
            json!({ "full_name": "Тарас Григоренко", "note": "Оптовий клієнт" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.into_inner().note.as_deref(), Some("Оптовий клієнт"));
    let r = client
        .buyer_import()
        .body(body::<types::BuyerImport>(json!({ "buyers": [
            { "full_name": "Ірина Левченко", "phone": ["+380931234567"] },
            { "full_name": "Максим Павленко", "email": ["m.pavlenko@gmail.com"] },
        ]})))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (201, Some(true))
    );
    let found = client
        .buyer_list()
        .filter_buyer_phone("+380 67 111 22 33")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        found.data.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![Some(buyer_id)]
    );

    let r = client
        .company_create()
        .body(body::<types::CompanyCreate>(json!({
            "name": "ТОВ «Григоренко і партнери»", "bank_account": "UA213223130000026007233566001",
            "buyer_id": [buyer_id], "custom_fields": [{ "uuid": "CY_1001", "value": "1234567890" }],
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let company_id = r.into_inner().id.unwrap();
    let company = client
        .company_get()
        .company_id(company_id)
        .include("manager,buyer,custom_fields")
        .send()
        .await
        .unwrap()
        .into_inner();
    match company.buyer {
        Some(types::CompanyBuyers::Array(list)) => assert_eq!(list[0].id, Some(buyer_id)),
        other => panic!("expected the linked buyers, got {other:?}"),
    }
    let r = client
        .company_update()
        .company_id(company_id)
        .body(body::<types::CompanyUpdate>(
            json!({ "name": "ТОВ «Григоренко і партнери»", "notes": "Постійний" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "company update answers 200, not 202");
    let companies = client
        .company_list()
        .filter_company_id(company_id.to_string())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(companies.total, Some(1));

    // --- Orders.
    let r = client
        .order_create()
        .body(body::<types::OrderCreate>(json!({
            "source_id": 1,
            "source_uuid": "CT-1",
            "buyer": { "full_name": "Тарас Г.", "phone": "+380671112233" },
            "products": [{ "sku": "BAG-URB-BLK", "quantity": 2 }, { "name": "Гравіювання", "price": 50 }],
            "payments": [{ "amount": 100, "payment_method_id": 1, "status": "paid" }],
            "shipping": { "delivery_service_id": 1, "shipping_address_city": "Київ",
                          "shipping_address_country": "Україна", "recipient_full_name": "Тарас Григоренко" },
            "marketing": { "utm_source": "google" },
            "custom_fields": [{ "uuid": "OR_1001", "value": ["Viber"] }],
            "ordered_at": "2025-03-01 10:00:00",
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let order = r.into_inner();
    let order_id = order.id.unwrap();
    assert_eq!(
        order.client_id,
        Some(buyer_id),
        "the buyer is matched by phone"
    );
    assert_eq!(order.grand_total, Some(dec("321")));
    assert_eq!(order.payment_status.as_deref(), Some("part_paid"));
    assert_eq!(order.source_uuid.as_deref(), Some("CT-1"));
    let full = client
        .order_get()
        .order_id(order_id)
        .include(concat!(
            "buyer,products.offer,manager,tags,status,marketing,payments,",
            "shipping.deliveryService,shipping.lastHistory,expenses,custom_fields,assigned"
        ))
        .send()
        .await
        .unwrap()
        .into_inner();
    let lines = full.products.as_ref().unwrap();
    assert_eq!(
        lines[0].offer.as_ref().and_then(|o| o.id),
        black.id,
        "linked by SKU"
    );
    assert_eq!(lines[1].offer, None, "a one-off line");
    assert_eq!(full.buyer.as_ref().and_then(|b| b.id), Some(buyer_id));
    assert_eq!(full.status.as_ref().and_then(|s| s.id), Some(1));
    assert_eq!(full.payments.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        full.shipping
            .as_ref()
            .and_then(|s| s.delivery_service.as_ref())
            .and_then(|d| d.name.clone())
            .as_deref(),
        Some("Нова Пошта")
    );
    assert_eq!(
        full.marketing
            .as_ref()
            .and_then(|m| m.utm_source.as_deref()),
        Some("google")
    );
    assert_eq!(
        full.custom_fields.as_ref().map(|c| c[0].value.clone()),
        Some(Some(json!(["Viber"])))
    );
    assert_eq!(
        full.ordered_at.map(|t| t.to_string()).as_deref(),
        Some("2025-03-01 10:00:00")
    );

    let r = client
        .order_update()
        .order_id(order_id)
        .body(body::<types::OrderUpdate>(json!({
            "status_id": 2, "manager_comment": "Упакувати окремо",
            "shipping": { "tracking_code": "20450000000001" },
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let after = r.into_inner();
    assert_eq!(after.status_id, Some(2));
    assert!(after.updated_at > order.updated_at);
    let r = client
        .order_payment_create()
        .order_id(order_id)
        .body(body::<types::PaymentCreate>(
            json!({ "amount": 221, "payment_method": "Картка онлайн (LiqPay)" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let payment = r.into_inner();
    assert_eq!(
        (payment.status.as_deref(), payment.payment_method_id),
        (Some("paid"), Some(3))
    );
    let paid = client
        .order_get()
        .order_id(order_id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.payment_status.as_deref(), Some("paid"), "recomputed");
    let r = client
        .order_payment_update()
        .order_id(order_id)
        .payment_id(payment.id.unwrap())
        .body(body::<types::PaymentUpdate>(
            json!({ "status": "canceled", "description": "Повернення" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.into_inner().status.as_deref(), Some("canceled"));
    let r = client
        .order_expense_create()
        .order_id(order_id)
        .body(body::<types::ExpenseCreate>(
            json!({ "amount": 70, "expense_type_id": 1 }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let expense = r.into_inner();
    let r = client
        .order_expense_update()
        .order_id(order_id)
        .expense_id(expense.id.unwrap())
        .body(body::<types::ExpenseUpdate>(
            json!({ "status": "canceled" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.into_inner().status.as_deref(), Some("canceled"));
    let r = client
        .order_tag_attach()
        .order_id(order_id)
        .tag_id(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (202, Some(true))
    );
    let r = client
        .order_tag_detach()
        .order_id(order_id)
        .tag_id(1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // --- Storage.
    let file = client
        .storage_upload("накладна.pdf", b"%PDF-1.4 test".to_vec())
        .await
        .unwrap();
    assert_eq!(last_status(&mock), Some(201), "a new file");
    assert_eq!(file.original_file_name.as_deref(), Some("накладна.pdf"));
    assert_eq!(file.size, Some(13));
    let again = client
        .storage_upload("копія.pdf", b"%PDF-1.4 test".to_vec())
        .await
        .unwrap();
    assert_eq!(last_status(&mock), Some(200), "the same content again");
    assert_eq!(again.id, file.id);
    let file_id = file.id.unwrap();
    let r = client
        .order_attachment_attach()
        .order_id(order_id)
        .file_id(file_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let attached = client
        .storage_attachment_list()
        .entity_type("order")
        .entity_id(order_id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        attached.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![Some(file_id)]
    );
    let r = client
        .order_attachment_detach()
        .order_id(order_id)
        .file_id(file_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (201, Some(true))
    );
    let files = client
        .storage_list()
        .sort("-size")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(files.total, Some(1));

    let r = client
        .order_import()
        .body(body::<types::OrderImport>(json!({ "orders": [
            { "source_id": 2, "source_uuid": "RZ-1", "buyer": { "full_name": "Олена Мороз", "phone": "+380501234567" } },
            { "source_id": 2, "source_uuid": "RZ-2", "buyer": { "email": "olena.moroz@ukr.net" },
              "products": [{ "sku": "BAG-URB-GRY", "quantity": 1 }] },
        ]})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let imported = client
        .order_list()
        .filter_source_uuid("RZ-1,RZ-2")
        .include("buyer,products.offer")
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.total, Some(2));
    assert_eq!(
        imported.data[1].products.as_ref().unwrap()[0]
            .sku
            .as_deref(),
        Some("BAG-URB-GRY")
    );

    // --- External transactions.
    let txs = client
        .external_transaction_list()
        .filter_is_attached(false)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(txs.total, Some(5));
    let tx = &txs.data[0];
    let first_payment = full.payments.as_ref().unwrap()[0].id.unwrap();
    let r = client
        .external_transaction_attach()
        .payment_id(first_payment)
        .body(body::<types::ExternalTransactionAttach>(
            json!({ "transaction_id": tx.id }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        Some(json!(r.into_inner().transaction_uuid)),
        tx.uuid.clone()
    );

    // --- Pipelines.
    let pipelines = client.pipeline_list().send().await.unwrap().into_inner();
    assert_eq!(pipelines.total, Some(2));
    let stages = client
        .pipeline_status_list()
        .pipeline_id(1)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stages.total, Some(4));
    let r = client
        .pipeline_card_create()
        .body(body::<types::PipelineCardCreate>(json!({
            "title": "Заявка на опт", "pipeline_id": 1, "source_id": 4,
            "contact": { "full_name": "Тарас Григоренко", "phone": "+380671112233" },
            "products": [{ "sku": "BAG-URB-BLK", "quantity": 10 }],
            "custom_fields": [{ "uuid": "LD_1001", "value": 15000 }],
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let card = r.into_inner();
    let card_id = card.id.unwrap();
    assert_eq!((card.pipeline_id, card.status_id), (Some(1), Some(1)));
    let got = client
        .pipeline_card_get()
        .card_id(card_id)
        .include("contact.client,products,manager,status,payments,custom_fields")
        .send()
        .await
        .unwrap()
        .into_inner();
    let PipelineCardGetResponse::Variant1(got) = got else {
        panic!("a plain card was expected")
    };
    let contact = got.contact.as_ref().unwrap();
    assert_eq!(
        contact.client.as_ref().and_then(|c| c.id),
        Some(buyer_id),
        "bound to the buyer"
    );
    assert_eq!(
        got.products.as_ref().unwrap()[0].sku.as_deref(),
        Some("BAG-URB-BLK")
    );
    let r = client
        .pipeline_card_update()
        .card_id(card_id)
        .body(body::<types::PipelineCardUpdate>(
            json!({ "status_id": 6, "products": [{ "name": "Доставка", "price": 150 }] }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status),
        (202, Some(true))
    );
    let r = client
        .pipeline_card_payment_create()
        .card_id(card_id)
        .body(body::<types::PipelineCardPaymentCreate>(
            json!({ "amount": 5000, "payment_method": "Готівка", "status": "not_paid" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let card_payment = r.into_inner();
    let r = client
        .pipeline_card_payment_update()
        .card_id(card_id)
        .payment_id(card_payment.id.unwrap())
        .body(body::<types::PipelineCardPaymentUpdate>(
            json!({ "status": "paid" }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.into_inner().status.as_deref()),
        (202, Some("paid"))
    );
    let r = client
        .pipeline_card_attachment_attach()
        .card_id(card_id)
        .file_id(file_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client
        .pipeline_card_attachment_detach()
        .card_id(card_id)
        .file_id(file_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cards = client
        .pipeline_card_list()
        .filter_pipeline_id(2)
        .include("status,contact")
        .send()
        .await
        .unwrap()
        .into_inner();
    let moved = cards
        .data
        .iter()
        .find(|c| c.id == Some(card_id))
        .expect("a stage of pipeline 2 moved the card");
    assert_eq!(
        moved.status.as_ref().and_then(|s| s.title.as_deref()),
        Some("Рахунок виставлено")
    );
    assert_eq!(moved.products, None, "relations only when included");

    // Every operation was called, and every call succeeded.
    for op in operations() {
        assert!(mock.count(op) > 0, "{op} was not called");
    }
    assert_eq!(operations().count(), 59);
    let failures: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| !r.status.is_some_and(|s| (200..300).contains(&s)))
        .collect();
    assert!(failures.is_empty(), "unexpected failures: {failures:?}");
}

#[tokio::test]
async fn a_page_walk_over_1000_orders_sees_each_exactly_once() {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let seeded = mock.seed(SeedConfig {
        orders: 1_000,
        buyers: 80,
        products: 12,
        cards: 0,
        calls: 0,
        transactions: 0,
        ..SeedConfig::default()
    });
    assert_eq!(seeded.orders.len(), 1_000);
    let client = direct_client(&mock);

    let mut seen = Vec::new();
    let mut page_no = 1u64;
    loop {
        let page = client
            .order_list()
            .limit(50u64)
            .page(page_no)
            .send()
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.current_page, Some(page_no as i64));
        assert_eq!(
            (page.per_page, page.total, page.last_page),
            (Some(50), Some(1_000), Some(20))
        );
        let from = (page_no as i64 - 1) * 50 + 1;
        assert_eq!((page.from, page.to), (Some(from), Some(from + 49)));
        let path = format!("{}/order", mock.uri());
        assert_eq!(page.path.as_deref(), Some(path.as_str()));
        assert_eq!(page.first_page_url, Some(format!("{path}?limit=50&page=1")));
        assert_eq!(page.last_page_url, Some(format!("{path}?limit=50&page=20")));
        if page_no == 1 {
            assert_eq!(page.prev_page_url, None);
        }
        seen.extend(page.data.iter().map(|o| o.id.unwrap()));
        if !page.has_next() {
            assert_eq!(page.next_page_url, None);
            break;
        }
        assert_eq!(
            page.next_page_url,
            Some(format!("{path}?limit=50&page={}", page_no + 1))
        );
        page_no += 1;
    }
    assert_eq!(page_no, 20);
    assert_eq!(seen.len(), 1_000);
    let unique: BTreeSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 1_000, "no order twice");
    assert_eq!(
        unique,
        seeded.orders.iter().copied().collect::<BTreeSet<_>>(),
        "every seeded order"
    );

    // Past the end: an empty page that says so.
    let beyond = client
        .order_list()
        .limit(50u64)
        .page(21u64)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(beyond.data.is_empty());
    assert_eq!(
        (beyond.from, beyond.to, beyond.next_page_url),
        (None, None, None)
    );
}
