//! The records the simulator keeps. Derived values (order totals, payment status, stock
//! reserves) are computed when they are read, so they can never disagree with their inputs.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::wire::Time;

/// An order.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    pub id: i64,
    pub source_id: i64,
    pub source_uuid: Option<String>,
    pub status_on_source: Option<String>,
    /// The buyer (`client_id` in KeyCRM's records).
    pub client_id: i64,
    pub manager_id: Option<i64>,
    pub status_id: i64,
    pub status_changed_at: Time,
    pub buyer_comment: Option<String>,
    pub manager_comment: Option<String>,
    pub promocode: Option<String>,
    pub discount_percent: Option<Decimal>,
    pub discount_amount: Option<Decimal>,
    pub shipping_price: Decimal,
    pub wrap_price: Decimal,
    pub taxes: Decimal,
    pub is_gift: bool,
    pub gift_wrap: bool,
    pub gift_message: Option<String>,
    pub ordered_at: Time,
    pub created_at: Time,
    pub updated_at: Time,
    pub closed_at: Option<Time>,
    pub last_synced_at: Option<Time>,
    pub source_updated_at: Option<Time>,
    pub lines: Vec<Line>,
    pub expenses: Vec<Expense>,
    pub tags: Vec<i64>,
    pub attachments: Vec<i64>,
    /// Delivery data as sent (string and id fields of `shipping`).
    pub shipping: Map<String, Value>,
    pub marketing: Option<Marketing>,
    pub custom_fields: Vec<(String, Value)>,
    /// Whether the goods of the order have left the warehouse (stock written off).
    pub written_off: bool,
}

/// A line item of an order.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub id: i64,
    pub offer_id: Option<i64>,
    pub sku: Option<String>,
    pub name: String,
    pub price: Decimal,
    pub purchased_price: Option<Decimal>,
    /// Per-unit discount in percent.
    pub discount_percent: Option<Decimal>,
    /// Per-unit discount as an amount.
    pub discount_amount: Option<Decimal>,
    pub quantity: Decimal,
    pub unit_type: Option<String>,
    pub comment: Option<String>,
    pub product_status_id: Option<i64>,
    pub picture: Option<String>,
    pub properties: Vec<(String, Value)>,
    pub upsale: bool,
    /// The warehouse the line ships from (catalogue lines only).
    pub warehouse_id: Option<i64>,
}

impl Line {
    /// The per-unit discount.
    pub fn unit_discount(&self) -> Decimal {
        let by_percent = self
            .discount_percent
            .map(|p| self.price * p / Decimal::ONE_HUNDRED)
            .unwrap_or_default();
        (by_percent + self.discount_amount.unwrap_or_default()).round_dp(2)
    }

    /// The unit price after discounts.
    pub fn price_sold(&self) -> Decimal {
        self.price - self.unit_discount()
    }
}

/// What a payment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    Order(i64),
    Card(i64),
}

impl Destination {
    pub fn id(self) -> i64 {
        match self {
            Self::Order(id) | Self::Card(id) => id,
        }
    }
}

/// A payment of an order or of a pipeline card.
#[derive(Clone, Debug)]
pub(crate) struct Payment {
    pub id: i64,
    pub destination: Destination,
    pub payment_method_id: i64,
    pub amount: Decimal,
    /// `paid`, `not_paid` or `canceled`.
    pub status: String,
    pub description: Option<String>,
    pub payment_date: Time,
    pub transaction_uuid: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// An expense of an order.
#[derive(Clone, Debug)]
pub(crate) struct Expense {
    pub id: i64,
    pub order_id: i64,
    pub expense_type_id: i64,
    pub amount: Decimal,
    /// `paid` or `canceled`.
    pub status: String,
    pub description: Option<String>,
    pub payment_date: Time,
    pub created_at: Time,
    pub updated_at: Time,
}

/// UTM marks of an order.
#[derive(Clone, Debug)]
pub(crate) struct Marketing {
    pub utm: Map<String, Value>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// A buyer (client).
#[derive(Clone, Debug)]
pub(crate) struct Buyer {
    pub id: i64,
    pub full_name: String,
    pub birthday: Option<NaiveDate>,
    pub email: Vec<String>,
    pub phone: Vec<String>,
    pub note: Option<String>,
    pub discount: Option<Decimal>,
    pub company_id: Option<i64>,
    pub manager_id: Option<i64>,
    pub shipping: Vec<Map<String, Value>>,
    pub custom_fields: Vec<(String, Value)>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// A company.
#[derive(Clone, Debug)]
pub(crate) struct Company {
    pub id: i64,
    pub name: String,
    pub title: Option<String>,
    pub notes: Option<String>,
    pub bank_account: Option<String>,
    pub manager_id: Option<i64>,
    pub custom_fields: Vec<(String, Value)>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// A catalogue product.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub pictures: Vec<String>,
    pub currency_code: String,
    pub sku: Option<String>,
    pub barcode: Option<String>,
    pub price: Decimal,
    pub purchased_price: Option<Decimal>,
    pub unit_type: Option<String>,
    pub weight: Option<Decimal>,
    pub length: Option<Decimal>,
    pub width: Option<Decimal>,
    pub height: Option<Decimal>,
    pub category_id: Option<i64>,
    pub is_archived: bool,
    /// Whether variants were created for the product.
    pub has_offers: bool,
    pub custom_fields: Vec<(String, Value)>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// An offer (variant); every product has at least its default offer.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    pub id: i64,
    pub product_id: i64,
    pub sku: Option<String>,
    pub barcode: Option<String>,
    pub price: Decimal,
    pub purchased_price: Option<Decimal>,
    pub weight: Option<Decimal>,
    pub length: Option<Decimal>,
    pub width: Option<Decimal>,
    pub height: Option<Decimal>,
    pub image_url: Option<String>,
    pub properties: Vec<(String, String)>,
    pub is_archived: bool,
    pub updated_at: Time,
}

/// A product category.
#[derive(Clone, Debug)]
pub(crate) struct Category {
    pub id: i64,
    pub name: String,
    pub parent_id: Option<i64>,
}

/// An uploaded file.
#[derive(Clone, Debug)]
pub(crate) struct File {
    pub id: i64,
    pub file_name: String,
    pub original_file_name: String,
    pub extension: String,
    pub mime_type: String,
    pub size: usize,
    pub hash: String,
    /// Where the simulator serves the file.
    pub url: String,
    pub content: Vec<u8>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// A pipeline card (lead).
#[derive(Clone, Debug)]
pub(crate) struct Card {
    pub id: i64,
    pub title: String,
    pub pipeline_id: i64,
    pub status_id: i64,
    pub contact_id: i64,
    pub source_id: Option<i64>,
    pub manager_id: Option<i64>,
    pub manager_comment: Option<String>,
    pub note: Option<String>,
    pub utm: Map<String, Value>,
    pub status_changed_at: Time,
    pub communicate_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
    pub lines: Vec<CardLine>,
    pub custom_fields: Vec<(String, Value)>,
    pub attachments: Vec<i64>,
}

/// A line item of a card.
#[derive(Clone, Debug)]
pub(crate) struct CardLine {
    pub id: i64,
    pub offer_id: Option<i64>,
    pub product_id: Option<i64>,
    pub sku: Option<String>,
    pub name: String,
    pub price: Decimal,
    pub quantity: Decimal,
    pub unit_type: Option<String>,
    pub picture: Option<String>,
}

/// The contact person of a card.
#[derive(Clone, Debug)]
pub(crate) struct Contact {
    pub id: i64,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub client_id: Option<i64>,
    pub created_at: Time,
    pub updated_at: Time,
}

/// A transaction reported by a bank or payment gateway.
#[derive(Clone, Debug)]
pub(crate) struct Transaction {
    pub id: i64,
    pub uuid: String,
    pub gateway_id: i64,
    pub amount: Decimal,
    pub description: Option<String>,
    pub currency: String,
    pub transaction_date: Time,
    pub created_at: Time,
    pub updated_at: Time,
    /// The payment it is linked to.
    pub payment_id: Option<i64>,
}
