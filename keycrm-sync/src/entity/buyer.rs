//! Buyers: the host's customer, its KeyCRM mapping both ways and bodies, and the engine's
//! buyer push and pull.

use keycrm_api::Timestamp;
use keycrm_api::types;
use serde::{Deserialize, Serialize};

use super::mapping::{MappingError, Mappings};
use super::order::all_contacts;
use super::remote_snapshot;
use super::values::{Out, Reader, body_error, normalize_email};
use crate::engine::pull::PassState;
use crate::engine::quarantine::{self};
use crate::engine::{RunReport, SyncEngine, SyncError};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::phone::PhoneRegion;
use crate::store::Store;

/// A customer as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalBuyer {
    /// The host's id of the customer.
    pub local_id: String,
    /// Full name.
    pub name: String,
    /// Phones, in any format (normalised; duplicates dropped).
    pub phones: Vec<String>,
    /// E-mail addresses (trimmed, lower case; duplicates dropped).
    pub emails: Vec<String>,
    /// Free-text note.
    pub note: Option<String>,
    /// When the host last changed the customer (UTC).
    pub updated_at: Option<Timestamp>,
}

fn flatten_buyer(
    name: Option<&str>,
    phones: &[&str],
    emails: &[&str],
    note: Option<&str>,
    region: &PhoneRegion,
) -> Fields {
    let mut out = Out::default();
    out.text(FULL_NAME, name);
    // E.164, national numbers read in the configured home country.
    out.list(PHONE, phones.iter().filter_map(|p| region.normalize(p)));
    out.list(EMAIL, emails.iter().filter_map(|e| normalize_email(e)));
    out.text(NOTE, note);
    out.0
}

/// The host's customer as fields (`full_name`, `phone.<n>`, `email.<n>`, `note`), with
/// Ukraine as the home country of national phone numbers ([`buyer_fields_from_local_in`]
/// takes the region).
pub fn buyer_fields_from_local(buyer: &CanonicalBuyer) -> Fields {
    buyer_fields_from_local_in(buyer, &PhoneRegion::default())
}

/// The host's customer as fields, national phone numbers read in `region`.
pub fn buyer_fields_from_local_in(buyer: &CanonicalBuyer, region: &PhoneRegion) -> Fields {
    let phones: Vec<&str> = buyer.phones.iter().map(String::as_str).collect();
    let emails: Vec<&str> = buyer.emails.iter().map(String::as_str).collect();
    flatten_buyer(
        Some(&buyer.name),
        &phones,
        &emails,
        buyer.note.as_deref(),
        region,
    )
}

/// KeyCRM's buyer as fields, with Ukraine as the home country of national phone numbers
/// ([`buyer_fields_from_remote_in`] takes the region).
pub fn buyer_fields_from_remote(buyer: &types::Buyer) -> Fields {
    buyer_fields_from_remote_in(buyer, &PhoneRegion::default())
}

/// KeyCRM's buyer as fields, national phone numbers read in `region`.
pub fn buyer_fields_from_remote_in(buyer: &types::Buyer, region: &PhoneRegion) -> Fields {
    flatten_buyer(
        buyer.full_name.as_deref(),
        &all_contacts(buyer.phone.as_ref()),
        &all_contacts(buyer.email.as_ref()),
        buyer.note.as_deref(),
        region,
    )
}

/// A buyer's fields as a KeyCRM `BuyerCreate` (`full_name` required).
pub fn buyer_create_body(fields: &Fields) -> Result<types::BuyerCreate, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    types::BuyerCreate::builder()
        .full_name(r.required_text(&FULL_NAME)?)
        .phone(r.list(PHONE)?)
        .email(r.list(EMAIL)?)
        .note(r.text(&NOTE)?)
        .try_into()
        .map_err(body_error("BuyerCreate"))
}

/// A buyer's whole merged fields as a KeyCRM `BuyerUpdate`. KeyCRM needs `full_name` on every
/// update and replaces the phone and e-mail lists with those sent, so pass the complete record
/// (the planner's `merged`), not only the changes. A removed note is sent as `""`.
pub fn buyer_update_body(fields: &Fields) -> Result<types::BuyerUpdate, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    types::BuyerUpdate::builder()
        .full_name(r.required_text(&FULL_NAME)?)
        .phone(r.list(PHONE)?)
        .email(r.list(EMAIL)?)
        .note(Some(r.text(&NOTE)?.unwrap_or_default()))
        .try_into()
        .map_err(body_error("BuyerUpdate"))
}

/// Fields back to the host's customer (`updated_at` left `None`).
pub fn buyer_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalBuyer, MappingError> {
    let r = Reader::new(EntityKind::Buyer, fields);
    Ok(CanonicalBuyer {
        local_id: local_id.into(),
        name: r.text(&FULL_NAME)?.unwrap_or_default(),
        phones: r.list(PHONE)?,
        emails: r.list(EMAIL)?,
        note: r.text(&NOTE)?,
        updated_at: None,
    })
}

/// Buyers as an [`Entity`](super::Entity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buyer;

/// A buyer's full name.
pub const FULL_NAME: FieldPath = FieldPath::plain("full_name");
/// A buyer's phones (`phone.<n>`).
pub const PHONE: &str = "phone";
/// A buyer's e-mails (`email.<n>`).
pub const EMAIL: &str = "email";
/// A buyer's note.
pub const NOTE: FieldPath = FieldPath::plain("note");

plain_entity! {
    Buyer: Buyer,
    local: CanonicalBuyer = |b, m: &Mappings| buyer_fields_from_local_in(b, m.phone_region()),
    remote: types::Buyer = |b, m: &Mappings| buyer_fields_from_remote_in(b, m.phone_region()),
    from_fields: buyer_from_fields,
    fields: [FULL_NAME, FieldPath::plain(PHONE), FieldPath::plain(EMAIL), NOTE],
    natural_keys: buyer_natural_keys,
    bodies: types::BuyerCreate = buyer_create_body, types::BuyerUpdate = buyer_update_body,
}

/// A buyer's first phone, then first e-mail, normalised.
fn buyer_natural_keys(fields: &Fields) -> Vec<(FieldPath, String)> {
    let phone = FieldPath::item(PHONE, 0);
    let email = FieldPath::item(EMAIL, 0);
    // The fields' phones are E.164 already (`+` and digits), which every region keeps.
    let phone_value = super::text_of(fields, &phone).and_then(|p| crate::phone::normalize(&p));
    let email_value = super::text_of(fields, &email).and_then(|e| normalize_email(&e));
    [(phone, phone_value), (email, email_value)]
        .into_iter()
        .filter_map(|(path, value)| Some((path, value?)))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The engine's push and pull of this kind

impl<S: Store, H: Host> SyncEngine<S, H> {
    // The push of new and changed buyers: `engine/buyer_batch.rs` (matched, imported and
    // read back in batches).

    pub(crate) async fn pull_buyers(
        &self,
        report: &mut RunReport,
        everything: bool,
    ) -> Result<(), SyncError> {
        let kind = EntityKind::Buyer;
        let (window, start) = self.window(kind, everything).await?;
        let mut list = quarantine::buyer_list();
        let mut pass = "all";
        if let Some(w) = &window {
            list = list.param("filter[updated_between]", w.clone());
            pass = "updated";
        }
        let mut state = PassState::default();
        self.apply_all(kind, pass, list, &mut state, report, |b: &types::Buyer| {
            Some((
                b.id?,
                remote_snapshot::<Buyer>(b, b.updated_at, &self.inner.mappings),
            ))
        })
        .await?;
        self.finish_pass(kind, state, everything, Some(start), report)
            .await
    }

    /// Reads one buyer by KeyCRM id.
    pub(crate) async fn fetch_buyer(&self, remote_id: i64) -> Result<Option<Snapshot>, SyncError> {
        let client = &self.inner.client;
        let b = self
            .call(client.buyer_get().buyer_id(remote_id).send())
            .await?;
        Ok(Some(remote_snapshot::<Buyer>(
            &b,
            b.updated_at,
            &self.inner.mappings,
        )?))
    }
}
