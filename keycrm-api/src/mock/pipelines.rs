//! Pipelines (the leads module), their stages and cards. A card status change queues
//! `lead.change_lead_status`.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::http::{ApiError, Ctx, Handled, Includes, Reply, page};
use super::model::*;
use super::orders::{self, NewPayment};
use super::people;
use super::state::{Event, State, row, take};
use super::validate::Check;
use super::wire::{self, Time};

const CARD_INCLUDES: &[&str] = &[
    "contact",
    "contact.client",
    "products",
    "products.offer",
    "manager",
    "status",
    "payments",
    "custom_fields",
    "customFields",
];

const UTM: &[&str] = &[
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];

/// Whether a card's stage is final.
fn finished(state: &State, card: &Card) -> bool {
    row(&state.pipeline_statuses, card.status_id).is_some_and(|s| s["is_final"] == true)
}

/// The raw card record: the card's own attributes (also the webhook context).
pub(crate) fn card_record(state: &State, card: &Card) -> Value {
    let mut out = json!({
        "id": card.id,
        "title": card.title,
        "pipeline_id": card.pipeline_id,
        "source_id": wire::id_opt(card.source_id),
        "status_id": card.status_id,
        "contact_id": card.contact_id,
        "manager_id": wire::id_opt(card.manager_id),
        "target_id": null,
        "target_type": null,
        "manager_comment": wire::s(&card.manager_comment),
        "is_finished": finished(state, card),
        "status_changed_at": wire::iso(card.status_changed_at),
        "communicate_at": wire::sql_opt(card.communicate_at),
        "created_at": wire::iso(card.created_at),
        "updated_at": wire::iso(card.updated_at),
    });
    for key in UTM {
        out[*key] = card.utm.get(*key).cloned().unwrap_or(Value::Null);
    }
    out
}

/// A card as the API returns it, with the requested relations.
pub(crate) fn render_card(state: &State, card: &Card, inc: &Includes) -> Value {
    let mut out = card_record(state, card);
    if inc.has_any("contact") {
        out["contact"] = state
            .contacts
            .get(&card.contact_id)
            .map_or(Value::Null, |c| {
                let mut v = json!({
                    "id": c.id, "full_name": wire::s(&c.full_name), "email": wire::s(&c.email),
                    "phone": wire::s(&c.phone), "picture": null, "additional_details": [],
                    "client_id": wire::id_opt(c.client_id), "social_name": null, "social_id": null,
                    "created_at": wire::iso(c.created_at), "updated_at": wire::iso(c.updated_at),
                });
                if inc.has("contact.client") {
                    v["client"] = c
                        .client_id
                        .and_then(|id| state.buyers.get(&id))
                        .map_or(Value::Null, |b| people::render_client(state, b));
                }
                v
            });
    }
    if inc.has_any("products") {
        let reserves = if inc.has("products.offer") {
            state.reserves()
        } else {
            Default::default()
        };
        let lines: Vec<Value> = card
            .lines
            .iter()
            .map(|l| {
                let mut v = json!({
                    "id": l.id, "product_id": wire::id_opt(l.product_id), "name": l.name,
                    "sku": wire::s(&l.sku), "price": wire::num(l.price),
                    "quantity": wire::num(l.quantity), "unit_type": wire::s(&l.unit_type),
                    "picture": wire::s(&l.picture),
                });
                if inc.has("products.offer") {
                    v["offer"] = l
                        .offer_id
                        .and_then(|id| state.offers.get(&id))
                        .map_or(Value::Null, |o| {
                            super::catalog::render_offer(state, o, &reserves, false)
                        });
                }
                v
            })
            .collect();
        out["products"] = Value::Array(lines);
    }
    if inc.has("manager") {
        out["manager"] = card
            .manager_id
            .and_then(|id| state.user(id))
            .cloned()
            .unwrap_or(Value::Null);
    }
    if inc.has("status") {
        out["status"] = row(&state.pipeline_statuses, card.status_id)
            .cloned()
            .unwrap_or(Value::Null);
    }
    if inc.has("payments") {
        let payments: Vec<Value> = state
            .payments
            .values()
            .filter(|p| p.destination == Destination::Card(card.id))
            .map(|p| orders::render_payment(state, p, false))
            .collect();
        out["payments"] = Value::Array(payments);
    }
    if inc.has("custom_fields") {
        out["custom_fields"] = state.render_custom_fields(&card.custom_fields);
    }
    out
}

/// Runs a change of card `id`: `updated_at` moves, and a new status stamps
/// `status_changed_at` and queues `lead.change_lead_status`.
pub(crate) fn mutate_card<R>(
    state: &mut State,
    id: i64,
    change: impl FnOnce(&mut State, Time) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let before = state
        .cards
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Lead", id))?
        .status_id;
    let now = state.now();
    let result = change(state, now)?;
    let card = state.cards.get_mut(&id).expect("checked above");
    card.updated_at = now;
    if card.status_id != before {
        card.status_changed_at = now;
        let context = card_record(state, &state.cards[&id]);
        state.events.push(Event::Trigger {
            event: "lead.change_lead_status",
            context,
        });
    }
    Ok(result)
}

pub(crate) fn pipeline_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let items: Vec<&Value> = state.pipelines.iter().collect();
    page(ctx, &items, |p| (*p).clone())
}

pub(crate) fn pipeline_status_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Pipeline")?;
    if row(&state.pipelines, id).is_none() {
        return Err(ApiError::not_found("Pipeline", id));
    }
    let items: Vec<&Value> = state
        .pipeline_statuses
        .iter()
        .filter(|s| s["pipeline_id"].as_i64() == Some(id))
        .collect();
    page(ctx, &items, |s| {
        let mut v = (*s).clone();
        let sid = s["id"].as_i64();
        v["leads_count"] = Value::from(
            state
                .cards
                .values()
                .filter(|c| Some(c.status_id) == sid)
                .count(),
        );
        v
    })
}

pub(crate) fn card_list(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let inc = ctx.includes(CARD_INCLUDES)?;
    let pipelines = ctx.filter_ids("pipeline_id");
    let statuses = ctx.filter_ids("status_id");
    let sources = ctx.filter_ids("source_id");
    let created = ctx.filter_range("created_between")?;
    let updated = ctx.filter_range("updated_between")?;
    let items: Vec<&Card> = state
        .cards
        .values()
        .filter(|c| {
            pipelines
                .as_ref()
                .is_none_or(|l| l.contains(&c.pipeline_id))
        })
        .filter(|c| statuses.as_ref().is_none_or(|l| l.contains(&c.status_id)))
        .filter(|c| {
            sources
                .as_ref()
                .is_none_or(|l| c.source_id.is_some_and(|s| l.contains(&s)))
        })
        .filter(|c| created.is_none_or(|r| r.contains(c.created_at)))
        .filter(|c| updated.is_none_or(|r| r.contains(c.updated_at)))
        .collect();
    page(ctx, &items, |c| render_card(state, c, &inc))
}

pub(crate) fn card_get(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    let inc = ctx.includes(CARD_INCLUDES)?;
    let card = state
        .cards
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Lead", id))?;
    Ok(Reply::ok(render_card(state, card, &inc)))
}

/// A card line as sent: sku, name, price, quantity, unit type, picture.
type CardLineInput = (
    Option<String>,
    Option<String>,
    Option<Decimal>,
    Option<Decimal>,
    Option<String>,
    Option<String>,
);

/// Reads card line items (`products`).
fn read_card_lines(c: &mut Check, body: &Value) -> Vec<CardLineInput> {
    let mut out = Vec::new();
    if let Some(list) = c.array(body, "", "products", None) {
        for (i, item) in list.iter().enumerate() {
            let p = format!("products.{i}");
            out.push((
                c.str(item, &p, "sku").filter(|s| !s.is_empty()),
                c.str(item, &p, "name"),
                c.dec(item, &p, "price"),
                c.dec(item, &p, "quantity"),
                c.str(item, &p, "unit_type"),
                c.str(item, &p, "picture"),
            ));
        }
    }
    out
}

fn insert_card_lines(state: &mut State, lines: Vec<CardLineInput>) -> Vec<CardLine> {
    lines
        .into_iter()
        .map(|(sku, name, price, quantity, unit_type, picture)| {
            let offer = sku.as_deref().and_then(|s| state.offer_by_sku(s)).cloned();
            let product_name = offer
                .as_ref()
                .and_then(|o| state.products.get(&o.product_id))
                .map(|p| p.name.clone());
            CardLine {
                id: take(&mut state.ids.card_line),
                offer_id: offer.as_ref().map(|o| o.id),
                product_id: offer.as_ref().map(|o| o.product_id),
                name: name
                    .or(product_name)
                    .or_else(|| sku.clone())
                    .unwrap_or_else(|| "Товар".into()),
                sku,
                price: price
                    .or(offer.as_ref().map(|o| o.price))
                    .unwrap_or_default(),
                quantity: quantity.unwrap_or(Decimal::ONE),
                unit_type,
                picture,
            }
        })
        .collect()
}

pub(crate) fn card_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let body = ctx.json();
    let mut c = Check::new();
    let title = c.str(&body, "", "title");
    let pipeline_id = c
        .int_in(&body, "", "pipeline_id", |id| {
            row(&state.pipelines, id).is_some()
        })
        .or_else(|| state.pipelines.first().and_then(|p| p["id"].as_i64()));
    let source_id = c.int_in(&body, "", "source_id", |id| {
        row(&state.sources, id).is_some()
    });
    let manager_id = c.int_in(&body, "", "manager_id", |id| state.user(id).is_some());
    let manager_comment = c.str(&body, "", "manager_comment");
    let communicate_at = c.time(&body, "", "communicate_at");
    let mut contact = (None, None, None, None);
    match c.object(&body, "", "contact") {
        Some(input) => {
            let name = c
                .str(input, "contact", "full_name")
                .filter(|s| !s.trim().is_empty());
            let email = c
                .str(input, "contact", "email")
                .filter(|s| !s.trim().is_empty());
            let phone = c
                .str(input, "contact", "phone")
                .filter(|s| !s.trim().is_empty());
            let client = c.int_in(input, "contact", "client_id", |id| {
                state.buyers.contains_key(&id)
            });
            if name.is_none()
                && email.is_none()
                && phone.is_none()
                && client.is_none()
                && !Check::present(input, "client_id")
            {
                c.fail(
                    "contact.full_name",
                    concat!(
                        "The contact.full name field is required when none of contact.email / ",
                        "contact.phone / contact.client_id are present."
                    ),
                );
            }
            contact = (name, email, phone, client);
        }
        None => {
            if !Check::present(&body, "contact") {
                c.required("contact");
            }
        }
    }
    let utm = c.string_map(&body, "", UTM);
    let lines = read_card_lines(&mut c, &body);
    let mut payments: Vec<NewPayment> = Vec::new();
    if let Some(list) = c.array(&body, "", "payments", None) {
        for (i, item) in list.iter().enumerate() {
            if let Some(p) = orders::read_payment(state, &mut c, item, &format!("payments.{i}")) {
                payments.push(p);
            }
        }
    }
    let custom_fields = c
        .custom_fields(&body, "", |uuid| state.custom_field_known("lead", uuid))
        .unwrap_or_default();
    c.finish()?;
    let pipeline_id = pipeline_id
        .ok_or_else(|| ApiError::message(403, "There is no pipeline to put the card in."))?;
    let status_id = state
        .pipeline_statuses
        .iter()
        .find(|s| s["pipeline_id"].as_i64() == Some(pipeline_id))
        .and_then(|s| s["id"].as_i64())
        .unwrap_or_default();
    let now = state.now();
    let (name, email, phone, client) = contact;
    let client_id = client
        .or_else(|| state.find_buyer(phone.as_deref(), email.as_deref()))
        .unwrap_or_else(|| {
            let id = take(&mut state.ids.buyer);
            state.buyers.insert(
                id,
                Buyer {
                    id,
                    full_name: name.clone().unwrap_or_default(),
                    birthday: None,
                    email: email.iter().cloned().collect(),
                    phone: phone.iter().cloned().collect(),
                    note: None,
                    discount: None,
                    company_id: None,
                    manager_id,
                    shipping: Vec::new(),
                    custom_fields: Vec::new(),
                    created_at: now,
                    updated_at: now,
                },
            );
            id
        });
    let buyer = state.buyers[&client_id].clone();
    let contact_id = take(&mut state.ids.contact);
    state.contacts.insert(
        contact_id,
        Contact {
            id: contact_id,
            full_name: if client.is_some() {
                Some(buyer.full_name.clone())
            } else {
                name.or(Some(buyer.full_name.clone()))
            },
            email: if client.is_some() {
                buyer.email.first().cloned()
            } else {
                email
            },
            phone: if client.is_some() {
                buyer.phone.first().cloned()
            } else {
                phone
            },
            client_id: Some(client_id),
            created_at: now,
            updated_at: now,
        },
    );
    let id = take(&mut state.ids.card);
    let lines = insert_card_lines(state, lines);
    state.cards.insert(
        id,
        Card {
            id,
            title: title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| id.to_string()),
            pipeline_id,
            status_id,
            contact_id,
            source_id,
            manager_id,
            manager_comment,
            note: None,
            utm,
            status_changed_at: now,
            communicate_at,
            created_at: now,
            updated_at: now,
            lines,
            custom_fields,
            attachments: Vec::new(),
        },
    );
    for p in &payments {
        orders::insert_payment(state, Destination::Card(id), p, now);
    }
    Ok(Reply::created(card_record(state, &state.cards[&id])))
}

/// Validates and applies a card update body (`PUT /pipelines/cards/{id}`, or a change made
/// in the CRM by a test).
pub(crate) fn update_card(state: &mut State, id: i64, body: &Value) -> Result<(), ApiError> {
    if !state.cards.contains_key(&id) {
        return Err(ApiError::not_found("Lead", id));
    }
    let mut c = Check::new();
    let title = c.str(body, "", "title");
    let note = body.get("note").map(|_| c.str(body, "", "note"));
    let status = c.int_in(body, "", "status_id", |s| {
        row(&state.pipeline_statuses, s).is_some()
    });
    let source_id = c.int_in(body, "", "source_id", |s| row(&state.sources, s).is_some());
    let client_id = c.int_in(body, "", "client_id", |b| state.buyers.contains_key(&b));
    let manager_id = c.int_in(body, "", "manager_id", |u| state.user(u).is_some());
    let communicate_at = c.time(body, "", "communicate_at");
    let lines = read_card_lines(&mut c, body);
    let custom_fields = c.custom_fields(body, "", |uuid| state.custom_field_known("lead", uuid));
    c.finish()?;
    mutate_card(state, id, |state, now| {
        let new_lines = insert_card_lines(state, lines);
        let pipeline_of_status =
            status.and_then(|s| row(&state.pipeline_statuses, s)?["pipeline_id"].as_i64());
        let card = state.cards.get_mut(&id).expect("checked above");
        if let Some(t) = title {
            card.title = t;
        }
        if let Some(n) = note {
            card.note = n;
        }
        if let Some(s) = status {
            card.status_id = s;
            // A stage of another pipeline moves the card there.
            if let Some(p) = pipeline_of_status {
                card.pipeline_id = p;
            }
        }
        if let Some(s) = source_id {
            card.source_id = Some(s);
        }
        if let Some(m) = manager_id {
            card.manager_id = Some(m);
        }
        if let Some(t) = communicate_at {
            card.communicate_at = Some(t);
        }
        card.lines.extend(new_lines);
        if let Some(values) = custom_fields {
            State::merge_custom_fields(&mut card.custom_fields, values);
        }
        let contact_id = card.contact_id;
        if let Some(client) = client_id
            && let Some(contact) = state.contacts.get_mut(&contact_id)
        {
            contact.client_id = Some(client);
            contact.updated_at = now;
        }
        Ok(())
    })
}

pub(crate) fn card_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    update_card(state, id, &ctx.json())?;
    Ok(Reply::status_true(202))
}

fn card_or_404(state: &State, id: i64) -> Result<&Card, ApiError> {
    state
        .cards
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Lead", id))
}

pub(crate) fn card_payment_create(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    card_or_404(state, id)?;
    let body = ctx.json();
    let mut c = Check::new();
    let new = orders::read_payment(state, &mut c, &body, "");
    c.finish()?;
    let new = new.expect("validated");
    let payment = mutate_card(state, id, |state, now| {
        Ok(orders::insert_payment(
            state,
            Destination::Card(id),
            &new,
            now,
        ))
    })?;
    Ok(Reply::created(orders::render_payment(
        state,
        &state.payments[&payment],
        false,
    )))
}

pub(crate) fn card_payment_update(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    let payment_id = ctx.id(1, "Payment")?;
    card_or_404(state, id)?;
    if state.payments.get(&payment_id).map(|p| p.destination) != Some(Destination::Card(id)) {
        return Err(ApiError::not_found("Payment", payment_id));
    }
    let body = ctx.json();
    let mut c = Check::new();
    let (status, description) = orders::read_payment_update(&mut c, &body);
    c.finish()?;
    mutate_card(state, id, |state, now| {
        orders::apply_payment_update(state, payment_id, status, description, now);
        Ok(())
    })?;
    Ok(Reply::accepted(orders::render_payment(
        state,
        &state.payments[&payment_id],
        false,
    )))
}

pub(crate) fn card_attachment_attach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    let file = ctx.id(1, "File")?;
    card_or_404(state, id)?;
    if !state.files.contains_key(&file) {
        return Err(ApiError::not_found("File", file));
    }
    mutate_card(state, id, |state, _| {
        let card = state.cards.get_mut(&id).expect("checked above");
        if !card.attachments.contains(&file) {
            card.attachments.push(file);
        }
        Ok(())
    })?;
    Ok(Reply::status_true(202))
}

pub(crate) fn card_attachment_detach(state: &mut State, ctx: &Ctx<'_>) -> Handled {
    let id = ctx.id(0, "Lead")?;
    let file = ctx.id(1, "File")?;
    card_or_404(state, id)?;
    if !state.files.contains_key(&file) {
        return Err(ApiError::not_found("File", file));
    }
    mutate_card(state, id, |state, _| {
        state
            .cards
            .get_mut(&id)
            .expect("checked above")
            .attachments
            .retain(|f| *f != file);
        Ok(())
    })?;
    Ok(Reply::status_true(201))
}
