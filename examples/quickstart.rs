//! Quickstart: the client at work.
//!
//! ```sh
//! cargo run --example quickstart                      # against the built-in KeyCRM simulator
//! KEYCRM_API_KEY=... cargo run --example quickstart   # against your account, read-only
//! ```
//!
//! Without `KEYCRM_API_KEY` it starts the simulator (`keycrm::api::mock`), seeds it with
//! orders, buyers and stock, and shows pages streamed, an order created idempotently, a stock
//! batch pushed and the quota counters. With the key it only reads your account.

use std::time::Duration;

use futures::TryStreamExt;
use keycrm::api::mock::{KeyCrmMock, Quota, SeedConfig};
use keycrm::api::{Paginate, types};
use keycrm::{Client, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Client::from_env() {
        Ok(client) => read_only(&client).await,
        Err(Error::Config { .. }) => simulated().await,
        Err(other) => Err(other.into()),
    }
}

/// The real account: the newest orders and some stock levels, nothing written.
async fn read_only(client: &Client) -> Result<(), Box<dyn std::error::Error>> {
    println!("KEYCRM_API_KEY is set: reading your account (nothing is changed).");
    let orders = client
        .order_list()
        .include("buyer,products.offer")
        .sort("-id")
        .limit(10)
        .send()
        .await?
        .into_inner();
    println!(
        "{} orders; the newest {}:",
        orders.total.unwrap_or_default(),
        orders.data.len()
    );
    for order in &orders.data {
        print_order(order);
    }
    let stocks = client
        .offer_stock_list()
        .limit(10)
        .send()
        .await?
        .into_inner();
    for stock in &stocks.data {
        println!(
            "  {:<20} quantity {:>8} reserved {:>8}",
            stock.sku.clone().unwrap_or_default(),
            stock.quantity.map(|q| q.to_string()).unwrap_or_default(),
            stock.reserve.map(|q| q.to_string()).unwrap_or_default(),
        );
    }
    println!("requests: {:?}", client.stats());
    Ok(())
}

/// The simulator: the same client code against a seeded, local KeyCRM.
async fn simulated() -> Result<(), Box<dyn std::error::Error>> {
    let mock = KeyCrmMock::builder()
        .quota(Quota::per_minute(600))
        .seed(SeedConfig {
            orders: 120,
            ..SeedConfig::default()
        })
        .lost_response_delay(Duration::from_secs(5))
        .start()
        .await;
    println!(
        "No KEYCRM_API_KEY: started the KeyCRM simulator at {}",
        mock.uri()
    );
    println!("(set KEYCRM_API_KEY to read your own account instead)\n");
    let client = mock
        .client_builder()
        .requests_per_minute(600)
        .timeout(Duration::from_secs(1))
        .build()?;

    // Pages streamed: every order, 50 per request.
    let mut pages = std::pin::pin!(client.order_list().include("buyer").limit(50).pages());
    let mut total = 0;
    while let Some(page) = pages.try_next().await? {
        total += page.data.len();
        println!(
            "page {} of {}: {} orders",
            page.current_page.unwrap_or_default(),
            page.last_page.unwrap_or_default(),
            page.data.len()
        );
    }
    println!("streamed {total} orders\n");

    // An order created idempotently: the simulator applies the create but loses the answer
    // (the client times out); the client finds the order by its source uuid instead of
    // creating it twice.
    mock.faults().lose_next_creates(1);
    let body: types::OrderCreate = serde_json::from_value(serde_json::json!({
        "source_id": 1,
        "source_uuid": "QUICKSTART-1",
        "buyer": { "full_name": "Олена Коваленко", "phone": "+380671234567" },
        "products": [{ "sku": "COF-ETH-102", "quantity": 1.5 }],
    }))?;
    let order = client.order_create_idempotent(body).await?;
    let copies = client
        .order_list()
        .filter_source_uuid("QUICKSTART-1")
        .send()
        .await?
        .into_inner();
    println!(
        "the answer to the create was lost; the client found order #{} by its source uuid ({} order with it, {} create request)",
        order.id.unwrap_or_default(),
        copies.total.unwrap_or_default(),
        mock.count("order_create"),
    );
    print_order(&order);

    // A stock batch: absolute balances in warehouse 1, one request for many offers.
    let offers = client.offer_list().limit(5).send().await?.into_inner();
    let rows: Vec<serde_json::Value> = offers
        .data
        .iter()
        .map(|o| serde_json::json!({ "id": o.id, "quantity": 25 }))
        .collect();
    let batch: types::OfferStockUpdate =
        serde_json::from_value(serde_json::json!({ "warehouse_id": 1, "stocks": rows }))?;
    client.offer_stock_update().body(batch).send().await?;
    println!(
        "\npushed stock for {} offers in one request",
        offers.data.len()
    );

    println!(
        "\nquota: the client sent {} requests ({} waits for pacing); the simulator saw {} and refused {} with 429",
        client.stats().requests,
        client.stats().waits,
        mock.request_count(),
        mock.rate_limited()
    );
    Ok(())
}

fn print_order(order: &types::Order) {
    let buyer = order
        .buyer
        .as_ref()
        .and_then(|b| b.full_name.clone())
        .unwrap_or_default();
    println!(
        "  #{:<8} {:<10} total {:>10} {}",
        order.id.unwrap_or_default(),
        order.payment_status.clone().unwrap_or_default(),
        order.grand_total.map(|t| t.to_string()).unwrap_or_default(),
        buyer,
    );
}
