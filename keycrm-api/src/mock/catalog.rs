//! The catalogue: products, their offers (variants), categories and stock per warehouse.
//! Stock is set absolutely per warehouse (`PUT /offers/stocks`); reserves come from orders
//! in reserving statuses.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::http::{ApiError, Ctx, Handled, Includes, Reply, SortKey, page, sort_items};
use super::model::*;
use super::state::{State, row, take};
use super::validate::{Check, join};
use super::wire::{self, Time};

/// The most products `POST /products/import` and offers `POST /products/{id}/offers` take.
pub(crate) const PRODUCT_BATCH_MAX: usize = 100;
/// The most rows `PUT /offers` and `PUT /offers/stocks` take.
pub(crate) const OFFER_BATCH_MAX: usize = 10_000;

/// An offer as KeyCRM returns it; `with_product` embeds its product (`include=product`).
pub(crate) fn render_offer(
    state: &State,
    offer: &Offer,
    reserves: &HashMap<(i64, i64), Decimal>,
    with_product: bool,
) -> Value {
    let (quantity, reserve) = state.stock_totals(offer.id, reserves);
    let product = state.products.get(&offer.product_id);
    let thumbnail = offer
        .image_url
        .clone()
        .or_else(|| product.and_then(|p| p.pictures.first().cloned()));
    let properties: Vec<Value> = offer
        .properties
        .iter()
        .map(|(n, v)| json!({ "name": n, "value": v }))
        .collect();
    let mut out = json!({
        "id": offer.id,
        "product_id": offer.product_id,
        "sku": wire::s(&offer.sku),
        "barcode": wire::s(&offer.barcode),
        "thumbnail_url": wire::s(&thumbnail),
        "price": wire::num(offer.price),
        "purchased_price": wire::num_opt(offer.purchased_price),
        "quantity": wire::num(quantity),
        "in_reserve": wire::num(reserve),
        "weight": wire::num_opt(offer.weight),
        "length": wire::num_opt(offer.length),
        "width": wire::num_opt(offer.width),
        "height": wire::num_opt(offer.height),
        "properties": properties,
        "is_archived": offer.is_archived,
        "updated_at": wire::iso(offer.updated_at),
    });
    if with_product {
        out["product"] = product.map_or(Value::Null, |p| {
            let mut v = render_product(state, p, &Includes::default());
            v["properties_agg"] = properties_agg(state, p.id);
            v
        });
    }
    out
}

/// Property name -> the values its offers use, e.g. `{"Розмір": ["S", "M"]}`.
fn properties_agg(state: &State, product_id: i64) -> Value {
    let mut agg: Map<String, Value> = Map::new();
    for offer in state.offers.values().filter(|o| o.product_id == product_id) {
        for (name, value) in &offer.properties {
            let entry = agg.entry(name.clone()).or_insert_with(|| json!([]));
            if let Value::Array(list) = entry
                && !list.iter().any(|v| v == value.as_str())
            {
                list.push(Value::from(value.clone()));
            }
        }
    }
    Value::Object(agg)
}

/// A product as KeyCRM returns it.
pub(crate) fn render_product(state: &State, p: &Product, inc: &Includes) -> Value {
    let offers: Vec<&Offer> = state
        .offers
        .values()
        .filter(|o| o.product_id == p.id)
        .collect();
    let quantity: Decimal = offers
        .iter()
        .flat_map(|o| state.stock.range((o.id, i64::MIN)..=(o.id, i64::MAX)))
        .map(|(_, q)| *q)
        .sum();
    let min_price = offers.iter().map(|o| o.price).min().unwrap_or(p.price);
    let max_price = offers.iter().map(|o| o.price).max().unwrap_or(p.price);
    let mut out = json!({
        "id": p.id,
        "name": p.name,
        "description": wire::s(&p.description),
        "thumbnail_url": p.pictures.first(),
        "attachments_data": p.pictures,
        "quantity": wire::num(quantity),
        "unit_type": wire::s(&p.unit_type),
        "currency_code": p.currency_code,
        "sku": wire::s(&p.sku),
        "barcode": wire::s(&p.barcode),
        "price": wire::num(p.price),
        "purchased_price": wire::num_opt(p.purchased_price),
        "min_price": wire::num(min_price),
        "max_price": wire::num(max_price),
        "weight": wire::num_opt(p.weight),
        "length": wire::num_opt(p.length),
        "width": wire::num_opt(p.width),
        "height": wire::num_opt(p.height),
        "has_offers": p.has_offers,
        "is_archived": p.is_archived,
        "category_id": wire::id_opt(p.category_id),
        "created_at": wire::iso(p.created_at),
        "updated_at": wire::iso(p.updated_at),
    });
    if inc.has("custom_fields") {
        out["custom_fields"] = state.render_custom_fields(&p.custom_fields);
    }
    out
}

/// Product fields as sent to create, import or update.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProductInput {
    name: Option<String>,
    description: Option<Option<String>>,
    pictures: Option<Vec<String>>,
    currency_code: Option<String>,
    sku: Option<Option<String>>,
    barcode: Option<Option<String>>,
    price: Option<Decimal>,
    purchased_price: Option<Decimal>,
    unit_type: Option<Option<String>>,
    weight: Option<Decimal>,
    length: Option<Decimal>,
    width: Option<Decimal>,
    height: Option<Decimal>,
    category_id: Option<i64>,
    custom_fields: Option<Vec<(String, Value)>>,
}

pub(crate) fn read_product(
    state: &State,
    c: &mut Check,
    body: &Value,
    prefix: &str,
    creating: bool,
) -> ProductInput {
    let opt = |c: &mut Check, key: &str| body.get(key).map(|_| c.str(body, prefix, key));
    ProductInput {
        name: if creating {
            c.req_str(body, prefix, "name")
        } else {
            c.str(body, prefix, "name")
        },
        description: opt(c, "description"),
        pictures: {
            let list = c.strings(body, prefix, "pictures");
            if list.as_ref().is_some_and(|l| l.len() > 6) {
                c.too_many(&join(prefix, "pictures"), 6);
            }
            list
        },
        currency_code: c.str(body, prefix, "currency_code"),
        sku: opt(c, "sku"),
        barcode: opt(c, "barcode"),
        price: c.dec(body, prefix, "price"),
        purchased_price: c.dec(body, prefix, "purchased_price"),
        unit_type: opt(c, "unit_type"),
        weight: c.dec(body, prefix, "weight"),
        length: c.dec(body, prefix, "length"),
        width: c.dec(body, prefix, "width"),
        height: c.dec(body, prefix, "height"),
        category_id: c.int_in(body, prefix, "category_id", |id| {
            state.categories.contains_key(&id)
        }),
        custom_fields: c.custom_fields(body, prefix, |uuid| {
            state.custom_field_known("crm_product", uuid)
        }),
    }
}

/// Creates a product and its default offer; returns the product id.
pub(crate) fn insert_product(state: &mut State, input: ProductInput, now: Time) -> i64 {
    let id = take(&mut state.ids.product);
    let product = Product {
        id,
        name: input.name.unwrap_or_default(),
        description: input.description.flatten(),
        pictures: input.pictures.unwrap_or_default(),
        currency_code: input.currency_code.unwrap_or_else(|| "UAH".into()),
        sku: input.sku.flatten(),
        barcode: input.barcode.flatten(),
        price: input.price.unwrap_or_default(),
        purchased_price: input.purchased_price,
        unit_type: input.unit_type.flatten(),
        weight: input.weight,
        length: input.length,
        width: input.width,
        height: input.height,
        category_id: input.category_id,
        is_archived: false,
        has_offers: false,
        custom_fields: input.custom_fields.unwrap_or_default(),
        created_at: now,
        updated_at: now,
    };
    let offer_id = take(&mut state.ids.offer);
    state.offers.insert(
        offer_id,
        Offer {
            id: offer_id,
            product_id: id,
            sku: product.sku.clone(),
            barcode: product.barcode.clone(),
            price: product.price,
            purchased_price: product.purchased_price,
            weight: product.weight,
            length: product.length,
            width: product.width,
            height: product.height,
            image_url: None,
            properties: Vec::new(),
            is_archived: false,
            updated_at: now,
        },
    );
    state.products.insert(id, product);
    id
}

fn apply_product_update(state: &mut State, id: i64, input: ProductInput, now: Time) {
    let Some(p) = state.products.get_mut(&id) else {
        return;
    };
    if let Some(v) = input.name {
        p.name = v;
    }
    if let Some(v) = input.description {
        p.description = v;
    }
    if let Some(v) = input.pictures {
        p.pictures = v;
    }
    if let Some(v) = input.currency_code {
        p.currency_code = v;
    }
    if let Some(v) = input.sku {
        p.sku = v;
    }
    if let Some(v) = input.barcode {
        p.barcode = v;
    }
    if let Some(v) = input.price {
        p.price = v;
    }
    if let Some(v) = input.purchased_price {
        p.purchased_price = Some(v);
    }
    if let Some(v) = input.unit_type {
        p.unit_type = v;
    }
    for (target, value) in [
        (&mut p.weight, input.weight),
        (&mut p.length, input.length),
        (&mut p.width, input.width),
        (&mut p.height, input.height),
    ] {
        if value.is_some() {
            *target = value;
        }
    }
    if let Some(v) = input.category_id {
        p.category_id = Some(v);
    }
    if let Some(values) = input.custom_fields {
        State::merge_custom_fields(&mut p.custom_fields, values);
    }
    p.updated_at = now;
    // A product without variants is its default offer: keep the two in step.
    if !p.has_offers {
        let p = p.clone();
        if let Some(o) = state.offers.values_mut().find(|o| o.product_id == id) {
            o.sku = p.sku;
            o.barcode = p.barcode;
            o.price = p.price;
            o.purchased_price = p.purchased_price;
            o.weight = p.weight;
            o.length = p.length;
            o.width = p.width;
            o.height = p.height;
            o.updated_at = now;
        }
    }
}

fn product_or_404(state: &State, id: i64) -> Result<&Product, ApiError> {
    state
        .products
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Product", id))
}

pub(crate) fn product_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(&["custom_fields", "customFields"])?;
    let ids = ctx.filter_ids("product_id");
    let categories = ctx.filter_ids("category_id");
    let archived = ctx.filter_bool("is_archived");
    let items: Vec<&Product> = state
        .products
        .values()
        .filter(|p| ids.as_ref().is_none_or(|l| l.contains(&p.id)))
        .filter(|p| {
            categories
                .as_ref()
                .is_none_or(|l| p.category_id.is_some_and(|c| l.contains(&c)))
        })
        .filter(|p| archived.is_none_or(|a| p.is_archived == a))
        .collect();
    page(ctx, &items, |p| render_product(state, p, &inc))
}

pub(crate) fn product_get(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Product")?;
    let inc = ctx.includes(&["custom_fields", "customFields"])?;
    let p = product_or_404(state, id)?;
    Ok(Reply::ok(render_product(state, p, &inc)))
}

pub(crate) fn product_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_product(state, &mut c, &body, "", true);
    c.finish()?;
    let now = state.now();
    let id = insert_product(state, input, now);
    Ok(Reply::created(render_product(
        state,
        &state.products[&id],
        &Includes::default(),
    )))
}

pub(crate) fn product_import(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let mut inputs = Vec::new();
    if let Some(list) = c.req_array(&body, "", "products", Some(PRODUCT_BATCH_MAX)) {
        for (i, item) in list.iter().enumerate() {
            inputs.push(read_product(
                state,
                &mut c,
                item,
                &format!("products.{i}"),
                true,
            ));
        }
    }
    c.finish()?;
    let now = state.now();
    for input in inputs {
        insert_product(state, input, now);
    }
    Ok(Reply::status_true(201))
}

pub(crate) fn product_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Product")?;
    product_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let input = read_product(state, &mut c, &body, "", false);
    c.finish()?;
    let now = state.now();
    apply_product_update(state, id, input, now);
    Ok(Reply::accepted(render_product(
        state,
        &state.products[&id],
        &Includes::default(),
    )))
}

pub(crate) fn product_offers_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Product")?;
    product_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let mut rows = Vec::new();
    if let Some(list) = c.req_array(&body, "", "offers", Some(PRODUCT_BATCH_MAX)) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("offers.{i}");
            let properties: Vec<(String, String)> = item
                .get("properties")
                .and_then(Value::as_array)
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|pr| {
                            let value = match pr.get("value")? {
                                Value::String(s) => s.clone(),
                                Value::Number(n) => n.to_string(),
                                _ => return None,
                            };
                            Some((pr.get("name")?.as_str()?.to_string(), value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            rows.push((
                c.str(item, &p, "sku"),
                c.str(item, &p, "barcode"),
                c.dec(item, &p, "price"),
                c.dec(item, &p, "purchased_price"),
                [
                    c.dec(item, &p, "weight"),
                    c.dec(item, &p, "length"),
                    c.dec(item, &p, "width"),
                    c.dec(item, &p, "height"),
                ],
                c.str(item, &p, "image_url"),
                properties,
            ));
        }
    }
    c.finish()?;
    let now = state.now();
    // The first variants replace the default offer of a product without variants, unless
    // that offer already carries stock or order lines.
    if !state.products[&id].has_offers {
        let defaults: Vec<i64> = state
            .offers
            .values()
            .filter(|o| o.product_id == id)
            .map(|o| o.id)
            .collect();
        for offer_id in defaults {
            let stocked = state
                .stock
                .range((offer_id, i64::MIN)..=(offer_id, i64::MAX))
                .next()
                .is_some();
            let used = state
                .orders
                .values()
                .any(|o| o.lines.iter().any(|l| l.offer_id == Some(offer_id)))
                || state
                    .cards
                    .values()
                    .any(|c| c.lines.iter().any(|l| l.offer_id == Some(offer_id)));
            if !stocked && !used {
                state.offers.remove(&offer_id);
            }
        }
    }
    let product_price = state.products[&id].price;
    for (sku, barcode, price, purchased, [weight, length, width, height], image_url, properties) in
        rows
    {
        let offer_id = take(&mut state.ids.offer);
        state.offers.insert(
            offer_id,
            Offer {
                id: offer_id,
                product_id: id,
                sku,
                barcode,
                price: price.unwrap_or(product_price),
                purchased_price: purchased,
                weight,
                length,
                width,
                height,
                image_url,
                properties,
                is_archived: false,
                updated_at: now,
            },
        );
    }
    let p = state.products.get_mut(&id).expect("checked above");
    p.has_offers = true;
    p.updated_at = now;
    Ok(Reply::status_true(201))
}

pub(crate) fn category_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let ids = ctx.filter_ids("category_id");
    let parents = ctx.filter_ids("parent_id");
    let items: Vec<&Category> = state
        .categories
        .values()
        .filter(|c| ids.as_ref().is_none_or(|l| l.contains(&c.id)))
        .filter(|c| {
            parents
                .as_ref()
                .is_none_or(|l| c.parent_id.is_some_and(|p| l.contains(&p)))
        })
        .collect();
    page(ctx, &items, render_category)
}

fn render_category(c: &&Category) -> Value {
    json!({ "id": c.id, "name": c.name, "parent_id": c.parent_id })
}

pub(crate) fn category_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let name = c.req_str(&body, "", "name");
    let parent_id = c.int_in(&body, "", "parent_id", |id| {
        state.categories.contains_key(&id)
    });
    c.finish()?;
    let id = take(&mut state.ids.category);
    let category = Category {
        id,
        name: name.expect("validated"),
        parent_id,
    };
    let body = render_category(&&category);
    state.categories.insert(id, category);
    Ok(Reply::created(body))
}

pub(crate) fn offer_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(&["product"])?;
    let sorts = ctx.sorts(&["id", "price", "sku", "product_id"])?;
    let ids = ctx.filter_ids("id");
    let products = ctx.filter_ids("product_id");
    let skus = ctx.filter_list("sku");
    let archived = ctx.filter_bool("is_archived");
    let mut items: Vec<&Offer> = state
        .offers
        .values()
        .filter(|o| ids.as_ref().is_none_or(|l| l.contains(&o.id)))
        .filter(|o| products.as_ref().is_none_or(|l| l.contains(&o.product_id)))
        .filter(|o| {
            skus.as_ref()
                .is_none_or(|l| o.sku.as_ref().is_some_and(|s| l.contains(s)))
        })
        .filter(|o| archived.is_none_or(|a| o.is_archived == a))
        .collect();
    sort_items(&mut items, &sorts, |o, field| match field {
        "price" => SortKey::Dec(o.price),
        "sku" => o.sku.clone().map_or(SortKey::Null, SortKey::Text),
        "product_id" => o.product_id.into(),
        _ => o.id.into(),
    });
    let reserves = state.reserves();
    page(ctx, &items, |o| {
        render_offer(state, o, &reserves, inc.has("product"))
    })
}

/// Offer ids by SKU, built once per batch request so that a batch of 10,000 rows costs one
/// pass over the offers, not one per row.
fn sku_index(state: &State) -> std::collections::HashMap<&str, Vec<i64>> {
    let mut index: std::collections::HashMap<&str, Vec<i64>> = std::collections::HashMap::new();
    for o in state.offers.values() {
        if let Some(sku) = o.sku.as_deref() {
            index.entry(sku).or_default().push(o.id);
        }
    }
    index
}

/// The offers a batch row names by `id` or `sku`; records a 422 when it names none.
fn row_offers(
    state: &State,
    skus: &std::collections::HashMap<&str, Vec<i64>>,
    c: &mut Check,
    item: &Value,
    prefix: &str,
) -> Vec<i64> {
    let id = c.int(item, prefix, "id");
    let sku = c.str(item, prefix, "sku").filter(|s| !s.is_empty());
    match (id, sku) {
        (Some(id), _) => {
            if state.offers.contains_key(&id) {
                vec![id]
            } else {
                c.invalid(&join(prefix, "id"));
                Vec::new()
            }
        }
        (None, Some(sku)) => {
            let found: Vec<i64> = skus.get(sku.as_str()).cloned().unwrap_or_default();
            if found.is_empty() {
                c.invalid(&join(prefix, "sku"));
            }
            found
        }
        (None, None) => {
            if !Check::present(item, "id") {
                let field = join(prefix, "id");
                c.fail(
                    &field,
                    format!(
                        "The {} field is required when {} is not present.",
                        field.replace('_', " "),
                        join(prefix, "sku")
                    ),
                );
            }
            Vec::new()
        }
    }
}

pub(crate) fn offer_update_batch(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let mut changes = Vec::new();
    let skus = sku_index(state);
    if let Some(list) = c.req_array(&body, "", "offers", Some(OFFER_BATCH_MAX)) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("offers.{i}");
            let targets = row_offers(state, &skus, &mut c, item, &p);
            let values = (
                c.dec(item, &p, "price"),
                c.dec(item, &p, "purchased_price"),
                [
                    c.dec(item, &p, "weight"),
                    c.dec(item, &p, "length"),
                    c.dec(item, &p, "width"),
                    c.dec(item, &p, "height"),
                ],
                c.str(item, &p, "image_url"),
            );
            changes.push((targets, values));
        }
    }
    c.finish()?;
    let now = state.now();
    for (targets, (price, purchased, [weight, length, width, height], image_url)) in changes {
        for id in targets {
            let Some(o) = state.offers.get_mut(&id) else {
                continue;
            };
            if let Some(v) = price {
                o.price = v;
            }
            if let Some(v) = purchased {
                o.purchased_price = Some(v);
            }
            for (target, value) in [
                (&mut o.weight, weight),
                (&mut o.length, length),
                (&mut o.width, width),
                (&mut o.height, height),
            ] {
                if value.is_some() {
                    *target = value;
                }
            }
            if image_url.is_some() {
                o.image_url = image_url.clone();
            }
            o.updated_at = now;
            let product_id = o.product_id;
            if let Some(p) = state.products.get_mut(&product_id) {
                p.updated_at = now;
            }
        }
    }
    Ok(Reply::status_true(202))
}

pub(crate) fn stock_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let ids = ctx.filter_ids("offers_id");
    let skus = ctx.filter_list("offers_sku");
    let details = ctx.filter_bool("details").unwrap_or(false);
    let items: Vec<&Offer> = state
        .offers
        .values()
        .filter(|o| ids.as_ref().is_none_or(|l| l.contains(&o.id)))
        .filter(|o| {
            skus.as_ref()
                .is_none_or(|l| o.sku.as_ref().is_some_and(|s| l.contains(s)))
        })
        .collect();
    let reserves = state.reserves();
    page(ctx, &items, |o| {
        let (quantity, reserve) = state.stock_totals(o.id, &reserves);
        let mut out = json!({
            "id": o.id,
            "sku": wire::s(&o.sku),
            "price": wire::num(o.price),
            "purchased_price": wire::num_opt(o.purchased_price),
            "quantity": wire::num(quantity),
            "reserve": wire::num(reserve),
        });
        if details {
            let rows: Vec<Value> = state
                .warehouses
                .iter()
                .filter_map(|w| {
                    let wid = w["id"].as_i64()?;
                    let q = state.stock.get(&(o.id, wid)).copied();
                    let r = reserves.get(&(o.id, wid)).copied();
                    if q.is_none() && r.is_none() {
                        return None;
                    }
                    // Per-warehouse rows come straight from decimal(…,3) columns: strings.
                    Some(json!({
                        "id": wid,
                        "name": w["name"],
                        "quantity": wire::text(q.unwrap_or_default(), 3),
                        "reserve": wire::text(r.unwrap_or_default(), 3),
                    }))
                })
                .collect();
            out["warehouse"] = Value::Array(rows);
        }
        out
    })
}

pub(crate) fn stock_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let warehouse = if Check::present(&body, "warehouse_id") {
        c.int_in(&body, "", "warehouse_id", |id| {
            row(&state.warehouses, id).is_some()
        })
    } else {
        c.required("warehouse_id");
        None
    };
    let mut sets = Vec::new();
    let skus = sku_index(state);
    if let Some(list) = c.req_array(&body, "", "stocks", Some(OFFER_BATCH_MAX)) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("stocks.{i}");
            let targets = row_offers(state, &skus, &mut c, item, &p);
            let quantity = if Check::present(item, "quantity") {
                c.dec_min0(item, &p, "quantity")
            } else {
                c.required(&join(&p, "quantity"));
                None
            };
            if let Some(q) = quantity {
                sets.extend(targets.into_iter().map(|id| (id, q)));
            }
        }
    }
    c.finish()?;
    let warehouse = warehouse.expect("validated");
    set_stock(state, warehouse, &sets);
    Ok(Reply::status_true(202))
}

/// Sets balances in one warehouse (absolute values), touches the offers and queues the
/// stock webhook for those that changed.
pub(crate) fn set_stock(state: &mut State, warehouse: i64, sets: &[(i64, Decimal)]) {
    let mut ids: Vec<i64> = sets.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let before = state.stock_snapshot(&ids);
    let now = state.now();
    for (offer, quantity) in sets {
        let previous = state.stock.insert((*offer, warehouse), *quantity);
        if previous != Some(*quantity)
            && let Some(o) = state.offers.get_mut(offer)
        {
            o.updated_at = now;
            let product_id = o.product_id;
            if let Some(p) = state.products.get_mut(&product_id) {
                p.updated_at = now;
            }
        }
    }
    state.emit_stock_changes(&before);
}
