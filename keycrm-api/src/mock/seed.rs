//! Deterministic test data: buyers with Ukrainian names and `+380` phones, companies,
//! products with variants (some sold by the kilogram or metre, so quantities are
//! fractional), stock in two warehouses, orders over a year, pipeline cards, calls and
//! bank transactions. The same [`SeedConfig`] on a fresh simulator gives the same records
//! with the same ids.

use std::collections::BTreeMap;

use chrono::Duration;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::model::*;
use super::state::{State, take};
use super::wire::{self, Time};

/// The simulator's reference ids, the same in every simulator (seeded or not): what a
/// configuration for the simulator maps its names to (`status_ids`, `payment_method_ids`,
/// `warehouse_ids`, `source_id` in `keycrm-sync.toml`). [`KeyCrmMock::reference`] answers
/// the whole reference data (names, aliases, groups) as JSON.
///
/// | kind | id | alias | name |
/// |---|---|---|---|
/// | order status | 1 | `new` | Новий (group 1, reserves stock) |
/// | order status | 2 | `approved` | Погоджено (group 2) |
/// | order status | 3 | `packing` | Комплектується (group 2) |
/// | order status | 4 | `shipped` | Відправлено (group 4, writes stock off) |
/// | order status | 5 | `completed` | Виконано (group 5, closing) |
/// | order status | 6 | `canceled` | Скасовано (group 6, closing) |
/// | payment method | 1 | `cod` | Накладений платіж |
/// | payment method | 2 | `fop_invoice` | Оплата на рахунок ФОП |
/// | payment method | 3 | `liqpay` | Картка онлайн (LiqPay) |
/// | payment method | 4 | `apple_pay` | Apple Pay |
/// | payment method | 5 | `cash` | Готівка |
/// | source | 1 | `website` | Інтернет-магазин (opencart) |
/// | source | 2 | `rozetka` | Rozetka |
/// | source | 3 | `promua` | Prom.ua |
/// | source | 4 | `instagram` | Instagram |
/// | source | 5 | `phone` | Телефон |
/// | warehouse | 1 | | Основний склад (Київ) |
/// | warehouse | 2 | | Склад Львів |
/// | delivery service | 1..=4 | `novaposhta`, `ukrposhta`, `meest`, `pickup` | |
///
/// [`KeyCrmMock::reference`]: super::KeyCrmMock::reference
pub mod reference {
    /// Order status `new`.
    pub const STATUS_NEW: i64 = 1;
    /// Order status `approved`.
    pub const STATUS_APPROVED: i64 = 2;
    /// Order status `packing`.
    pub const STATUS_PACKING: i64 = 3;
    /// Order status `shipped`.
    pub const STATUS_SHIPPED: i64 = 4;
    /// Order status `completed` (closing).
    pub const STATUS_COMPLETED: i64 = 5;
    /// Order status `canceled` (closing).
    pub const STATUS_CANCELED: i64 = 6;
    /// Payment method `cod` (cash on delivery).
    pub const PAYMENT_COD: i64 = 1;
    /// Payment method `fop_invoice` (bank transfer to an invoice).
    pub const PAYMENT_FOP_INVOICE: i64 = 2;
    /// Payment method `liqpay` (card online).
    pub const PAYMENT_LIQPAY: i64 = 3;
    /// Payment method `apple_pay`.
    pub const PAYMENT_APPLE_PAY: i64 = 4;
    /// Payment method `cash`.
    pub const PAYMENT_CASH: i64 = 5;
    /// Order source `website` (an online shop).
    pub const SOURCE_WEBSITE: i64 = 1;
    /// Order source `rozetka`.
    pub const SOURCE_ROZETKA: i64 = 2;
    /// Order source `promua`.
    pub const SOURCE_PROMUA: i64 = 3;
    /// Order source `instagram`.
    pub const SOURCE_INSTAGRAM: i64 = 4;
    /// Order source `phone`.
    pub const SOURCE_PHONE: i64 = 5;
    /// The main warehouse (Kyiv).
    pub const WAREHOUSE_KYIV: i64 = 1;
    /// The Lviv warehouse.
    pub const WAREHOUSE_LVIV: i64 = 2;
}

/// splitmix64: a tiny, fast, deterministic generator (not for cryptography).
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1).max(1) as u64) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// What [`KeyCrmMock::seed`](super::KeyCrmMock::seed) creates.
///
/// ```
/// use keycrm_api::mock::SeedConfig;
///
/// let big = SeedConfig { orders: 1_000, seed: 7, ..SeedConfig::default() };
/// assert_eq!(big.buyers, SeedConfig::default().buyers);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedConfig {
    /// The generator's seed: the same seed gives the same data.
    pub seed: u64,
    /// Buyers (Ukrainian names, `+380` phones, e-mails).
    pub buyers: usize,
    /// Companies; buyers are spread over them.
    pub companies: usize,
    /// Products; each gets one to three offers with stock in two warehouses.
    pub products: usize,
    /// Orders of the seeded buyers, spread over `days` from `start`.
    pub orders: usize,
    /// Pipeline cards.
    pub cards: usize,
    /// Entries of the call log.
    pub calls: usize,
    /// External (bank) transactions, not yet linked to payments.
    pub transactions: usize,
    /// The first day of the seeded history.
    pub start: crate::Timestamp,
    /// How many days the history spans.
    pub days: u32,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            buyers: 25,
            companies: 3,
            products: 12,
            orders: 60,
            cards: 8,
            calls: 10,
            transactions: 5,
            start: "2024-01-01 00:00:00".parse().expect("a valid constant"),
            days: 365,
        }
    }
}

/// The ids of the records [`KeyCrmMock::seed`](super::KeyCrmMock::seed) created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Seeded {
    /// Buyers.
    pub buyers: Vec<i64>,
    /// Companies.
    pub companies: Vec<i64>,
    /// Product categories.
    pub categories: Vec<i64>,
    /// Products.
    pub products: Vec<i64>,
    /// Offers (variants) of the products.
    pub offers: Vec<i64>,
    /// Orders, oldest first.
    pub orders: Vec<i64>,
    /// Pipeline cards.
    pub cards: Vec<i64>,
    /// Calls.
    pub calls: Vec<i64>,
    /// External transactions.
    pub transactions: Vec<i64>,
}

const MALE: &[&str] = &[
    "Андрій",
    "Олександр",
    "Дмитро",
    "Сергій",
    "Іван",
    "Микола",
    "Тарас",
    "Богдан",
    "Юрій",
    "Василь",
    "Максим",
    "Володимир",
    "Остап",
    "Роман",
];
const FEMALE: &[&str] = &[
    "Олена",
    "Ірина",
    "Наталія",
    "Оксана",
    "Тетяна",
    "Марія",
    "Юлія",
    "Катерина",
    "Анна",
    "Світлана",
    "Людмила",
    "Софія",
    "Дарина",
    "Христина",
];
const SURNAMES: &[&str] = &[
    "Коваленко",
    "Шевченко",
    "Бондаренко",
    "Ткаченко",
    "Кравченко",
    "Олійник",
    "Шевчук",
    "Поліщук",
    "Мельник",
    "Бойко",
    "Ткачук",
    "Савченко",
    "Руденко",
    "Мороз",
    "Лисенко",
    "Марченко",
    "Гончаренко",
    "Кузьменко",
    "Павленко",
    "Левченко",
];
const MOBILE_CODES: &[&str] = &[
    "50", "63", "66", "67", "68", "73", "93", "95", "96", "97", "98", "99",
];
const MAIL_DOMAINS: &[&str] = &["ukr.net", "gmail.com", "i.ua", "meta.ua"];
const CITIES: &[(&str, &str, &str)] = &[
    ("Київ", "Київська область", "01001"),
    ("Львів", "Львівська область", "79000"),
    ("Одеса", "Одеська область", "65000"),
    ("Харків", "Харківська область", "61000"),
    ("Дніпро", "Дніпропетровська область", "49000"),
    ("Вінниця", "Вінницька область", "21000"),
    ("Полтава", "Полтавська область", "36000"),
    ("Чернігів", "Чернігівська область", "14000"),
];
const COMPANIES: &[&str] = &[
    "ТОВ «Технолюкс»",
    "ФОП Коваленко О. В.",
    "ТОВ «Агроторг Поділля»",
    "ТОВ «Карпатський дім»",
    "ПП «Медова пасіка»",
    "ТОВ «Смарт Офіс»",
];
const CATEGORIES: &[&str] = &["Одяг", "Продукти", "Електроніка", "Дім і сад"];

/// name, category index, unit, price, SKU stem, variant property and its values.
type Template = (
    &'static str,
    usize,
    Option<&'static str>,
    i64,
    &'static str,
    &'static str,
    &'static [&'static str],
);
const PRODUCTS: &[Template] = &[
    (
        "Футболка оверсайз",
        0,
        None,
        649,
        "TSH-OVR",
        "Розмір",
        &["S", "M", "L", "XL"],
    ),
    (
        "Кава в зернах «Ефіопія»",
        1,
        Some("кг"),
        780,
        "COF-ETH",
        "",
        &[],
    ),
    (
        "Навушники бездротові",
        2,
        None,
        1899,
        "EAR-BT",
        "Колір",
        &["Чорний", "Білий", "Синій"],
    ),
    (
        "Тканина льняна",
        3,
        Some("м"),
        410,
        "LIN-FAB",
        "Колір",
        &["Натуральний", "Оливковий"],
    ),
    (
        "Худі з капюшоном",
        0,
        None,
        1290,
        "HOD-CAP",
        "Розмір",
        &["S", "M", "L"],
    ),
    ("Мед гречаний", 1, Some("кг"), 320, "HON-BUC", "", &[]),
    ("Павербанк 20000 мАг", 2, None, 1099, "PWB-20K", "", &[]),
    (
        "Свічка соєва",
        3,
        None,
        260,
        "CND-SOY",
        "Аромат",
        &["Лаванда", "Ваніль", "Кедр"],
    ),
    ("Кабель USB-C 1 м", 2, None, 199, "CBL-USBC", "", &[]),
    ("Горіхи волоські", 1, Some("кг"), 290, "NUT-WAL", "", &[]),
    (
        "Шкарпетки (3 пари)",
        0,
        None,
        239,
        "SCK-3P",
        "Розмір",
        &["36-40", "41-45"],
    ),
    (
        "Лампа настільна LED",
        3,
        None,
        1450,
        "LMP-LED",
        "Колір",
        &["Білий", "Графіт"],
    ),
];

/// Latin letters for a Ukrainian name, for e-mail addresses.
fn translit(text: &str) -> String {
    let mut out = String::new();
    for ch in text.to_lowercase().chars() {
        let s = match ch {
            'а' => "a",
            'б' => "b",
            'в' => "v",
            'г' => "h",
            'ґ' => "g",
            'д' => "d",
            'е' => "e",
            'є' => "ie",
            'ж' => "zh",
            'з' => "z",
            'и' => "y",
            'і' => "i",
            'ї' => "i",
            'й' => "i",
            'к' => "k",
            'л' => "l",
            'м' => "m",
            'н' => "n",
            'о' => "o",
            'п' => "p",
            'р' => "r",
            'с' => "s",
            'т' => "t",
            'у' => "u",
            'ф' => "f",
            'х' => "kh",
            'ц' => "ts",
            'ч' => "ch",
            'ш' => "sh",
            'щ' => "shch",
            'ю' => "iu",
            'я' => "ia",
            'ь' | '\'' => "",
            c if c.is_ascii_alphanumeric() => {
                out.push(c);
                continue;
            }
            _ => "",
        };
        out.push_str(s);
    }
    out
}

/// A quantity: whole pieces, or quarter steps for goods sold by weight or length.
fn quantity(rng: &mut SplitMix64, unit: Option<&str>, lo: i64, hi: i64) -> Decimal {
    match unit {
        Some(_) => Decimal::new(rng.range(lo * 4, hi * 4), 0) / Decimal::from(4),
        None => Decimal::from(rng.range(lo, hi)),
    }
}

/// Creates the records of `cfg` in `state`.
pub(crate) fn seed(state: &mut State, cfg: &SeedConfig) -> Seeded {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut out = Seeded::default();
    let start: Time = cfg.start.into_datetime();
    let span = Duration::days(i64::from(cfg.days.max(1)));
    let at =
        |fraction: f64| start + Duration::seconds((span.num_seconds() as f64 * fraction) as i64);

    for (i, name) in COMPANIES.iter().cycle().take(cfg.companies).enumerate() {
        let id = take(&mut state.ids.company);
        let created = at(0.01 * i as f64);
        state.companies.insert(
            id,
            Company {
                id,
                name: (*name).to_string(),
                title: None,
                notes: None,
                bank_account: Some(format!("UA{}", rng.digits(27))),
                manager_id: Some(rng.range(1, 3)),
                custom_fields: Vec::new(),
                created_at: created,
                updated_at: created,
            },
        );
        out.companies.push(id);
    }

    for i in 0..cfg.buyers {
        let female = rng.chance(0.5);
        let first = *rng.pick(if female { FEMALE } else { MALE });
        let last = *rng.pick(SURNAMES);
        let phone = format!("+380{}{}", rng.pick(MOBILE_CODES), rng.digits(7));
        let email = format!(
            "{}.{}{}@{}",
            translit(first),
            translit(last),
            i + 1,
            rng.pick(MAIL_DOMAINS)
        );
        let (city, region, zip) = *rng.pick(CITIES);
        let created = at(0.5 * i as f64 / cfg.buyers.max(1) as f64);
        let updated = created + Duration::hours(rng.range(0, 240));
        let id = take(&mut state.ids.buyer);
        let mut shipping = Map::new();
        shipping.insert("city".into(), city.into());
        shipping.insert("region".into(), region.into());
        shipping.insert("zip_code".into(), zip.into());
        shipping.insert("country".into(), "Україна".into());
        shipping.insert(
            "address".into(),
            format!("вул. Шевченка, {}", rng.range(1, 120)).into(),
        );
        state.buyers.insert(
            id,
            Buyer {
                id,
                full_name: format!("{first} {last}"),
                birthday: None,
                email: vec![email],
                phone: vec![phone],
                note: None,
                discount: rng.chance(0.2).then(|| Decimal::from(rng.range(3, 10))),
                company_id: (!out.companies.is_empty() && rng.chance(0.2))
                    .then(|| *rng.pick(&out.companies)),
                manager_id: Some(rng.range(1, 3)),
                shipping: vec![shipping],
                custom_fields: Vec::new(),
                created_at: created,
                updated_at: updated,
            },
        );
        out.buyers.push(id);
    }

    // Categories, reused when the simulator already has them.
    let mut category_ids = Vec::new();
    if cfg.products > 0 {
        for name in CATEGORIES {
            let existing = state
                .categories
                .values()
                .find(|c| c.name == *name)
                .map(|c| c.id);
            let id = existing.unwrap_or_else(|| {
                let id = take(&mut state.ids.category);
                state.categories.insert(
                    id,
                    Category {
                        id,
                        name: (*name).to_string(),
                        parent_id: None,
                    },
                );
                out.categories.push(id);
                id
            });
            category_ids.push(id);
        }
    }

    let mut offer_units: BTreeMap<i64, Option<&str>> = BTreeMap::new();
    for i in 0..cfg.products {
        let (name, category, unit, price, stem, property, values) = PRODUCTS[i % PRODUCTS.len()];
        let round = i / PRODUCTS.len();
        let name = if round == 0 {
            name.to_string()
        } else {
            format!("{name} №{}", round + 1)
        };
        let created = at(0.02 * i as f64 / cfg.products.max(1) as f64);
        let id = take(&mut state.ids.product);
        let price = Decimal::from(price + 10 * round as i64);
        let purchased = (price * Decimal::new(55, 2)).round_dp(2);
        let sku_stem = format!("{stem}-{}", 101 + i);
        let variants: Vec<&str> = if values.is_empty() {
            Vec::new()
        } else {
            let n = 1 + rng.below(values.len().min(3));
            values[..n].to_vec()
        };
        let picture = format!(
            "https://cdn.keycrm.app/tekhnomarket/products/{}.jpg",
            sku_stem.to_lowercase()
        );
        state.products.insert(
            id,
            Product {
                id,
                name,
                description: Some("Опис товару для тестів симулятора KeyCRM.".into()),
                pictures: vec![picture.clone()],
                currency_code: "UAH".into(),
                sku: Some(sku_stem.clone()),
                barcode: Some(format!("482{}", rng.digits(10))),
                price,
                purchased_price: Some(purchased),
                unit_type: unit.map(str::to_string),
                weight: Some(Decimal::new(rng.range(1, 30), 1)),
                length: None,
                width: None,
                height: None,
                category_id: category_ids.get(category).copied(),
                is_archived: false,
                has_offers: !variants.is_empty(),
                custom_fields: Vec::new(),
                created_at: created,
                updated_at: created,
            },
        );
        out.products.push(id);
        let rows: Vec<(String, Vec<(String, String)>)> = if variants.is_empty() {
            vec![(sku_stem.clone(), Vec::new())]
        } else {
            variants
                .iter()
                .map(|v| {
                    (
                        format!("{sku_stem}-{}", translit(v).to_uppercase()),
                        vec![(property.to_string(), (*v).to_string())],
                    )
                })
                .collect()
        };
        for (sku, properties) in rows {
            let offer_id = take(&mut state.ids.offer);
            state.offers.insert(
                offer_id,
                Offer {
                    id: offer_id,
                    product_id: id,
                    sku: Some(sku),
                    barcode: None,
                    price,
                    purchased_price: Some(purchased),
                    weight: None,
                    length: None,
                    width: None,
                    height: None,
                    image_url: None,
                    properties,
                    is_archived: false,
                    updated_at: created,
                },
            );
            state
                .stock
                .insert((offer_id, 1), quantity(&mut rng, unit, 0, 60));
            if rng.chance(0.5) {
                state
                    .stock
                    .insert((offer_id, 2), quantity(&mut rng, unit, 0, 12));
            }
            offer_units.insert(offer_id, unit);
            out.offers.push(offer_id);
        }
    }

    let buyers = if out.buyers.is_empty() {
        state.buyers.keys().copied().collect::<Vec<_>>()
    } else {
        out.buyers.clone()
    };
    let offers: Vec<i64> = state.offers.keys().copied().collect();
    for i in 0..cfg.orders {
        if buyers.is_empty() {
            break;
        }
        let client_id = *rng.pick(&buyers);
        let source_id = *rng.pick(&[1i64, 1, 2, 2, 3, 4, 5]);
        let source_uuid = match source_id {
            1 => Some(format!("WEB-{}", 50_000 + i)),
            2 => Some(format!("RZ-{}", rng.digits(9))),
            3 => Some(format!("PR-{}", 700_000 + i)),
            _ => None,
        };
        let ordered_at = at((i as f64 + rng.next_f64() * 0.9) / cfg.orders as f64);
        let created_at = ordered_at + Duration::seconds(rng.range(30, 1_200));
        let updated_at = created_at + Duration::minutes(rng.range(0, 72 * 60));
        let status_id = *rng.pick(&[1i64, 1, 2, 3, 4, 4, 5, 5, 5, 5, 5, 6, 6]);
        let closing = state.status(status_id).is_some_and(|s| s.is_closing_order);
        let mut lines = Vec::new();
        for _ in 0..rng.range(1, 3) {
            let line_id = take(&mut state.ids.line);
            if offers.is_empty() || rng.chance(0.05) {
                lines.push(Line {
                    id: line_id,
                    offer_id: None,
                    sku: None,
                    name: "Подарункове пакування".into(),
                    price: Decimal::from(rng.range(30, 90)),
                    purchased_price: None,
                    discount_percent: None,
                    discount_amount: None,
                    quantity: Decimal::ONE,
                    unit_type: None,
                    comment: None,
                    product_status_id: Some(1),
                    picture: None,
                    properties: Vec::new(),
                    upsale: true,
                    warehouse_id: None,
                });
                continue;
            }
            let offer = state.offers[rng.pick(&offers)].clone();
            let product = &state.products[&offer.product_id];
            let unit = offer_units
                .get(&offer.id)
                .copied()
                .flatten()
                .or(product.unit_type.as_deref());
            lines.push(Line {
                id: line_id,
                offer_id: Some(offer.id),
                sku: offer.sku.clone(),
                name: product.name.clone(),
                price: offer.price,
                purchased_price: offer.purchased_price,
                discount_percent: None,
                discount_amount: rng.chance(0.15).then(|| Decimal::from(rng.range(10, 50))),
                quantity: quantity(&mut rng, unit, 1, 3),
                unit_type: product.unit_type.clone(),
                comment: None,
                product_status_id: Some(if status_id >= 4 { 3 } else { 1 }),
                picture: product.pictures.first().cloned(),
                properties: offer
                    .properties
                    .iter()
                    .map(|(n, v)| (n.clone(), Value::from(v.clone())))
                    .collect(),
                upsale: false,
                warehouse_id: Some(if rng.chance(0.8) { 1 } else { 2 }),
            });
        }
        let buyer = &state.buyers[&client_id];
        let (city, region, zip) = *rng.pick(CITIES);
        let mut shipping = Map::new();
        shipping.insert(
            "delivery_service_id".into(),
            Value::from(*rng.pick(&[1i64, 1, 1, 2, 3, 4])),
        );
        shipping.insert("shipping_address_city".into(), city.into());
        shipping.insert("shipping_address_region".into(), region.into());
        shipping.insert("shipping_address_zip".into(), zip.into());
        shipping.insert("shipping_address_country".into(), "Україна".into());
        shipping.insert(
            "shipping_receive_point".into(),
            format!("Відділення №{}", rng.range(1, 180)).into(),
        );
        shipping.insert("recipient_full_name".into(), buyer.full_name.clone().into());
        shipping.insert(
            "recipient_phone".into(),
            buyer
                .phone
                .first()
                .cloned()
                .map_or(Value::Null, Value::from),
        );
        if status_id == 4 || status_id == 5 {
            shipping.insert(
                "tracking_code".into(),
                format!("20450{}", rng.digits(9)).into(),
            );
            let shipped = (updated_at - Duration::days(1))
                .format("%Y-%m-%d")
                .to_string();
            shipping.insert("shipping_date".into(), shipped.into());
        }
        let id = take(&mut state.ids.order);
        let order = Order {
            id,
            source_id,
            source_uuid,
            status_on_source: (source_id == 2).then(|| "Новий".to_string()),
            client_id,
            manager_id: Some(rng.range(1, 3)),
            status_id,
            status_changed_at: updated_at,
            buyer_comment: rng
                .chance(0.2)
                .then(|| "Передзвоніть, будь ласка, перед відправкою".into()),
            manager_comment: None,
            promocode: rng.chance(0.1).then(|| "VESNA5".into()),
            discount_percent: None,
            discount_amount: None,
            shipping_price: Decimal::ZERO,
            wrap_price: Decimal::ZERO,
            taxes: Decimal::ZERO,
            is_gift: false,
            gift_wrap: false,
            gift_message: None,
            ordered_at,
            created_at,
            updated_at,
            closed_at: closing.then_some(updated_at),
            last_synced_at: (source_id <= 3).then_some(updated_at),
            source_updated_at: (source_id <= 3).then_some(ordered_at),
            lines,
            expenses: Vec::new(),
            tags: if rng.chance(0.1) {
                vec![*rng.pick(&[1i64, 2, 3, 4])]
            } else {
                Vec::new()
            },
            attachments: Vec::new(),
            shipping,
            marketing: (source_id == 1 && rng.chance(0.5)).then(|| {
                let mut utm = Map::new();
                utm.insert(
                    "utm_source".into(),
                    (*rng.pick(&["google", "facebook", "instagram"])).into(),
                );
                utm.insert("utm_medium".into(), "cpc".into());
                utm.insert("utm_campaign".into(), "spring_sale".into());
                Marketing {
                    utm,
                    created_at,
                    updated_at: created_at,
                }
            }),
            custom_fields: Vec::new(),
            written_off: status_id == 4 || status_id == 5,
        };
        let grand = super::orders::totals(state, &order).grand_total;
        state.orders.insert(id, order);
        let payment = match status_id {
            5 => Some((grand, "paid")),
            2..=4 => match rng.below(3) {
                0 => Some((grand, "paid")),
                1 => Some(((grand / Decimal::from(2)).round_dp(2), "paid")),
                _ => None,
            },
            6 => rng.chance(0.3).then_some((grand, "canceled")),
            _ => None,
        };
        if let Some((amount, status)) = payment {
            let pid = take(&mut state.ids.payment);
            state.payments.insert(
                pid,
                Payment {
                    id: pid,
                    destination: Destination::Order(id),
                    payment_method_id: *rng.pick(&[1i64, 2, 3, 3, 4]),
                    amount,
                    status: status.into(),
                    description: None,
                    payment_date: created_at + Duration::minutes(rng.range(1, 600)),
                    transaction_uuid: None,
                    created_at,
                    updated_at: created_at,
                },
            );
        }
        out.orders.push(id);
    }

    for i in 0..cfg.cards {
        if buyers.is_empty() {
            break;
        }
        let client_id = *rng.pick(&buyers);
        let pipeline_id = if rng.chance(0.7) { 1 } else { 2 };
        let stages: Vec<i64> = state
            .pipeline_statuses
            .iter()
            .filter(|s| s["pipeline_id"].as_i64() == Some(pipeline_id))
            .filter_map(|s| s["id"].as_i64())
            .collect();
        let created = at(0.5 + 0.5 * i as f64 / cfg.cards.max(1) as f64);
        let updated = created + Duration::hours(rng.range(1, 96));
        let buyer = state.buyers[&client_id].clone();
        let contact_id = take(&mut state.ids.contact);
        state.contacts.insert(
            contact_id,
            Contact {
                id: contact_id,
                full_name: Some(buyer.full_name.clone()),
                email: buyer.email.first().cloned(),
                phone: buyer.phone.first().cloned(),
                client_id: Some(client_id),
                created_at: created,
                updated_at: created,
            },
        );
        let id = take(&mut state.ids.card);
        let mut utm = Map::new();
        if rng.chance(0.5) {
            utm.insert("utm_source".into(), "instagram".into());
        }
        let mut lines = Vec::new();
        if !offers.is_empty() && rng.chance(0.6) {
            let offer = state.offers[rng.pick(&offers)].clone();
            lines.push(CardLine {
                id: take(&mut state.ids.card_line),
                offer_id: Some(offer.id),
                product_id: Some(offer.product_id),
                sku: offer.sku.clone(),
                name: state.products[&offer.product_id].name.clone(),
                price: offer.price,
                quantity: Decimal::from(rng.range(1, 5)),
                unit_type: None,
                picture: None,
            });
        }
        state.cards.insert(
            id,
            Card {
                id,
                title: format!(
                    "{} — {}",
                    if pipeline_id == 1 {
                        "Заявка з сайту"
                    } else {
                        "Оптове замовлення"
                    },
                    buyer.full_name
                ),
                pipeline_id,
                status_id: *rng.pick(&stages),
                contact_id,
                source_id: Some(*rng.pick(&[1i64, 4, 5])),
                manager_id: Some(rng.range(1, 3)),
                manager_comment: None,
                note: None,
                utm,
                status_changed_at: updated,
                communicate_at: rng.chance(0.5).then(|| updated + Duration::days(2)),
                created_at: created,
                updated_at: updated,
                lines,
                custom_fields: Vec::new(),
                attachments: Vec::new(),
            },
        );
        out.cards.push(id);
    }

    for i in 0..cfg.calls {
        if buyers.is_empty() {
            break;
        }
        let client_id = *rng.pick(&buyers);
        let incoming = rng.chance(0.6);
        let answered = rng.chance(0.8);
        let created = at(i as f64 / cfg.calls.max(1) as f64);
        let id = take(&mut state.ids.call);
        let phone = state.buyers[&client_id].phone.first().cloned();
        let lead = if out.cards.is_empty() || rng.chance(0.7) {
            None
        } else {
            Some(*rng.pick(&out.cards))
        };
        let duration = if answered { rng.range(15, 600) } else { 0 };
        state.calls.push(json!({
            "id": id,
            "internal_number": format!("10{}", rng.range(1, 3)),
            "external_number": phone,
            "source_number": "+380443334455",
            "reference_id": format!("rs-{}", rng.digits(10)),
            "type": if incoming { "incoming" } else { "outgoing" },
            "state": if answered { "completed" } else { "canceled" },
            "user_id": rng.range(1, 3),
            "call_route_service_id": 1,
            "duration": duration,
            "call_url": answered.then(|| format!("https://records.ringostat.net/{id}.mp3")),
            "comment": null,
            "client_id": client_id,
            "lead_id": lead,
            "utm_source": null, "utm_medium": null, "utm_campaign": null,
            "utm_term": null, "utm_content": null,
            "created_at": wire::iso(created),
            "updated_at": wire::iso(created + Duration::seconds(duration)),
        }));
        out.calls.push(id);
    }

    for i in 0..cfg.transactions {
        let id = take(&mut state.ids.transaction);
        let gateway = if rng.chance(0.5) { 1 } else { 2 };
        let created = at(0.9 + 0.1 * i as f64 / cfg.transactions.max(1) as f64);
        state.transactions.insert(
            id,
            Transaction {
                id,
                uuid: format!(
                    "{}-{}",
                    if gateway == 1 { "LP" } else { "MB" },
                    rng.digits(12)
                ),
                gateway_id: gateway,
                amount: Decimal::new(rng.range(10_000, 500_000), 2),
                description: Some(format!("Оплата замовлення №{}", 10_000 + rng.range(1, 999))),
                currency: "UAH".into(),
                transaction_date: created,
                created_at: created,
                updated_at: created,
                payment_id: None,
            },
        );
        out.transactions.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!((0..1000).all(|_| a.next_f64() < 1.0));
    }

    #[test]
    fn the_reference_ids_are_the_simulators() {
        let reference = crate::mock::admin::reference(&State::new(false, None));
        let id = |list: &str, key: &str, value: &str| {
            reference[list]
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r[key] == value))
                .and_then(|r| r["id"].as_i64())
                .unwrap_or_else(|| panic!("{list} has no {key} {value}"))
        };
        use super::reference::*;
        let statuses = [
            ("new", STATUS_NEW),
            ("approved", STATUS_APPROVED),
            ("packing", STATUS_PACKING),
            ("shipped", STATUS_SHIPPED),
            ("completed", STATUS_COMPLETED),
            ("canceled", STATUS_CANCELED),
        ];
        for (alias, want) in statuses {
            assert_eq!(id("order_statuses", "alias", alias), want, "status {alias}");
        }
        let methods = [
            ("cod", PAYMENT_COD),
            ("fop_invoice", PAYMENT_FOP_INVOICE),
            ("liqpay", PAYMENT_LIQPAY),
            ("apple_pay", PAYMENT_APPLE_PAY),
            ("cash", PAYMENT_CASH),
        ];
        for (alias, want) in methods {
            assert_eq!(
                id("payment_methods", "alias", alias),
                want,
                "method {alias}"
            );
        }
        let sources = [
            ("website", SOURCE_WEBSITE),
            ("rozetka", SOURCE_ROZETKA),
            ("promua", SOURCE_PROMUA),
            ("instagram", SOURCE_INSTAGRAM),
            ("phone", SOURCE_PHONE),
        ];
        for (alias, want) in sources {
            assert_eq!(id("sources", "alias", alias), want, "source {alias}");
        }
        assert_eq!(
            id("warehouses", "name", "Основний склад (Київ)"),
            WAREHOUSE_KYIV
        );
        assert_eq!(id("warehouses", "name", "Склад Львів"), WAREHOUSE_LVIV);
    }

    #[test]
    fn translit_makes_mail_friendly_names() {
        assert_eq!(translit("Олена"), "olena");
        assert_eq!(translit("Шевчук"), "shevchuk");
    }
}
