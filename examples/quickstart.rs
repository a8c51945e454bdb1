//! Quickstart: list the account's newest orders and some stock levels.
//!
//! ```sh
//! KEYCRM_API_KEY=... cargo run --example quickstart
//! ```
//!
//! It only reads. Without `KEYCRM_API_KEY` it explains what it needs and exits.

use keycrm::{Client, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = match Client::from_env() {
        Ok(client) => client,
        Err(Error::Config { message }) => {
            println!("keycrm-rs quickstart: {message}.");
            println!(
                "This example reads your KeyCRM account (orders and stock) and changes nothing:"
            );
            println!("    KEYCRM_API_KEY=<your key> cargo run --example quickstart");
            println!(
                "The key is in KeyCRM under Settings -> API. KEYCRM_BASE_URL overrides the API address."
            );
            return Ok(());
        }
        Err(other) => return Err(other.into()),
    };

    let orders = client
        .order_list()
        .include("buyer,products.offer")
        .sort("-id")
        .limit(10)
        .send()
        .await?
        .into_inner();
    println!(
        "{} orders in the account; the newest {}:",
        orders.total.unwrap_or_default(),
        orders.data.len()
    );
    for order in &orders.data {
        let buyer = order
            .buyer
            .as_ref()
            .and_then(|b| b.full_name.clone())
            .unwrap_or_default();
        let lines = order.products.as_ref().map_or(0, Vec::len);
        println!(
            "  #{:<8} {:<10} total {:>10} {} ({} lines, created {})",
            order.id.unwrap_or_default(),
            order.payment_status.clone().unwrap_or_default(),
            order.grand_total.map(|t| t.to_string()).unwrap_or_default(),
            buyer,
            lines,
            order.created_at.map(|t| t.to_string()).unwrap_or_default(),
        );
    }

    let stocks = client
        .offer_stock_list()
        .limit(10)
        .send()
        .await?
        .into_inner();
    println!("stock of the first {} offers:", stocks.data.len());
    for stock in &stocks.data {
        println!(
            "  {:<20} quantity {:>8} reserved {:>8}",
            stock.sku.clone().unwrap_or_default(),
            stock.quantity.map(|q| q.to_string()).unwrap_or_default(),
            stock.reserve.map(|q| q.to_string()).unwrap_or_default(),
        );
    }
    Ok(())
}
