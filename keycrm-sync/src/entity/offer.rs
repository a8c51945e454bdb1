//! Offers: the host's sellable variant, its KeyCRM mapping both ways and `PUT /offers` rows,
//! and the engine's offer push and pull.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use keycrm_api::{Decimal, Timestamp};
use keycrm_api::{Paginate, types};
use serde::{Deserialize, Serialize};

use super::mapping::MappingError;
use super::remote_snapshot;
use super::values::{Out, Reader, chunks};
use crate::canonical;
use crate::engine::pull::PassState;
use crate::engine::push::{Work, lookup, text};
use crate::engine::quarantine::{self};
use crate::engine::{RunReport, SyncEngine, SyncError, batch};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::Store;

/// The most offer rows KeyCRM takes in one `PUT /offers`.
pub const MAX_OFFER_ROWS: usize = 10_000;

/// An offer (sellable variant) as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalOffer {
    /// The host's id of the offer.
    pub local_id: String,
    /// The offer's SKU.
    pub sku: String,
    /// SKU of the product the offer belongs to. Informational: it is not a synced field
    /// (KeyCRM cannot move an offer to another product), so [`offer_from_fields`] leaves it
    /// `None` and the host keeps its own.
    pub product_sku: Option<String>,
    /// Selling price.
    pub price: Option<Decimal>,
    /// Purchase (cost) price.
    pub purchased_price: Option<Decimal>,
    /// When the host last changed the offer (UTC).
    pub updated_at: Option<Timestamp>,
}

fn flatten_offer(sku: Option<&str>, price: Option<Decimal>, purchased: Option<Decimal>) -> Fields {
    let mut out = Out::default();
    out.text(SKU, sku);
    out.dec(PRICE, price);
    out.dec(PURCHASED_PRICE, purchased);
    out.0
}

/// The host's offer as fields (`sku`, `price`, `purchased_price`).
pub fn offer_fields_from_local(offer: &CanonicalOffer) -> Fields {
    flatten_offer(Some(&offer.sku), offer.price, offer.purchased_price)
}

/// KeyCRM's offer as fields.
pub fn offer_fields_from_remote(offer: &types::Offer) -> Fields {
    flatten_offer(offer.sku.as_deref(), offer.price, offer.purchased_price)
}

/// How a row of `PUT /offers` names its offer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OfferRef {
    /// By KeyCRM offer id (preferred once known).
    Id(i64),
    /// By SKU.
    Sku(String),
}

/// An offer's fields (changed or whole) as one row of `PUT /offers`, naming the offer by
/// `target`. Only prices are sent; the SKU names the offer and is never changed this way.
pub fn offer_update_row(
    fields: &Fields,
    target: OfferRef,
) -> Result<types::OfferUpdateRow, MappingError> {
    let r = Reader::new(EntityKind::Offer, fields);
    let (id, sku) = match target {
        OfferRef::Id(id) => (Some(id), None),
        OfferRef::Sku(sku) => (None, Some(sku)),
    };
    Ok(types::OfferUpdateRow {
        id,
        sku,
        price: r.dec(&PRICE)?,
        purchased_price: r.dec(&PURCHASED_PRICE)?,
        ..Default::default()
    })
}

/// `PUT /offers` bodies of at most [`MAX_OFFER_ROWS`] rows each.
pub fn offer_update_batches(rows: Vec<types::OfferUpdateRow>) -> Vec<types::OfferUpdateBatch> {
    chunks(rows, MAX_OFFER_ROWS)
        .into_iter()
        .map(|offers| types::OfferUpdateBatch { offers })
        .collect()
}

/// Fields back to the host's offer (`sku` required; `product_sku` and `updated_at` left
/// `None`).
pub fn offer_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalOffer, MappingError> {
    let r = Reader::new(EntityKind::Offer, fields);
    Ok(CanonicalOffer {
        local_id: local_id.into(),
        sku: r.required_text(&SKU)?,
        product_sku: None,
        price: r.dec(&PRICE)?,
        purchased_price: r.dec(&PURCHASED_PRICE)?,
        updated_at: None,
    })
}

/// Offers as an [`Entity`](super::Entity). KeyCRM creates offers with their product and
/// updates them in bulk rows ([`offer_update_row`]), so offers have no [`Bodies`](super::Bodies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer;

/// An offer's SKU (its natural key).
pub const SKU: FieldPath = FieldPath::plain("sku");
/// An offer's price.
pub const PRICE: FieldPath = FieldPath::plain("price");
/// An offer's purchase price.
pub const PURCHASED_PRICE: FieldPath = FieldPath::plain("purchased_price");

plain_entity! {
    Offer: Offer,
    local: CanonicalOffer = |x, _| offer_fields_from_local(x),
    remote: types::Offer = |x, _| offer_fields_from_remote(x),
    from_fields: offer_from_fields,
    fields: [SKU, PRICE, PURCHASED_PRICE],
    natural_keys: |fields| super::key_of(fields, SKU),
}

// ------------------------------------------------------------------------------------------
// The engine's push and pull of this kind

/// What one run has read of KeyCRM's catalogue by SKU, kept for the rest of that run only
/// (emptied as each run starts): a product's create needs no look-up for a SKU a complete read
/// of this run showed absent, and an offer created with its product needs no look-up after
/// the import's read-back returned it.
#[derive(Debug, Default)]
pub(crate) struct CatalogueRead {
    /// The SKUs of every offer a complete full read of KeyCRM's offers saw in this run, plus
    /// those the engine has sent a create for since; `None` when this run made no complete
    /// full read. A SKU outside the set was absent from KeyCRM when the run read it.
    pub(crate) listed: Option<BTreeSet<String>>,
    /// Offers read by SKU in this run (a look-up or a product import's read-back), each as
    /// KeyCRM answered it.
    pub(crate) offers: BTreeMap<String, types::Offer>,
}

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// The current run's [`CatalogueRead`].
    pub(crate) fn catalogue(&self) -> MutexGuard<'_, CatalogueRead> {
        self.inner
            .catalogue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what an earlier run read of the catalogue (called as a run starts): KeyCRM may
    /// have changed since, so only this run's reads count.
    pub(crate) fn forget_catalogue(&self) {
        *self.catalogue() = CatalogueRead::default();
    }

    /// Prices go out in one bulk `PUT /offers` (up to 10,000 rows); offers are found by SKU.
    pub(crate) async fn push_offers(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let unmapped: Vec<String> = work
            .iter()
            .filter(|w| w.remote_id().is_none())
            .filter_map(|w| text(&w.local.fields, &SKU))
            .collect();
        // Offers this run has read already (created with their products and read back) are
        // not read again.
        let mut by_sku: BTreeMap<String, types::Offer> = {
            let catalogue = self.catalogue();
            unmapped
                .iter()
                .filter_map(|sku| Some((sku.clone(), catalogue.offers.get(sku)?.clone())))
                .collect()
        };
        let unread: Vec<String> = unmapped
            .iter()
            .filter(|sku| !by_sku.contains_key(*sku))
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        by_sku.extend(
            lookup(
                &unread,
                |filter| client.offer_list().filter_sku(filter).collect_all(),
                |offer: &types::Offer| offer.sku.clone(),
            )
            .await?,
        );
        let mut rows = Vec::new();
        let mut sent: Vec<(Work, i64, Fields)> = Vec::new();
        for w in work {
            let (remote_id, base) = match w.remote_id() {
                Some(id) => (
                    id,
                    w.mapping
                        .as_ref()
                        .and_then(|m| m.base.clone())
                        .unwrap_or_default(),
                ),
                None => {
                    let sku = text(&w.local.fields, &SKU).unwrap_or_default();
                    match by_sku.get(&sku).and_then(|o| o.id.map(|id| (id, o))) {
                        Some((id, o)) => (
                            id,
                            Snapshot::new(canonical::offer_fields_from_remote(o), None),
                        ),
                        None => {
                            self.fail(&w.item, "KeyCRM has no offer with this SKU yet (its product is synced first)", report).await?;
                            continue;
                        }
                    }
                }
            };
            let policy = self.policy(EntityKind::Offer);
            let planned = plan(&PlanInput {
                kind: EntityKind::Offer,
                base: Some(&base),
                local: Some(&w.local),
                remote: Some(&base),
                policy: &policy,
            });
            if planned.to_remote.is_empty() {
                self.done(&w, Some(remote_id), planned.merged, report)
                    .await?;
                continue;
            }
            match canonical::offer_update_row(&planned.merged, OfferRef::Id(remote_id)) {
                Ok(row) => {
                    rows.push(row);
                    sent.push((w, remote_id, planned.merged));
                }
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        if self.dry_run() {
            for (w, id, _) in &sent {
                self.would(w, format!("update offer {id}")).await?;
            }
            return Ok(());
        }
        // One `PUT /offers` per 10,000 rows; rows KeyCRM refuses (a 422 naming
        // `offers.N.…`) are dead-lettered with its message, the others sent again at once.
        let mut outcome: Vec<Option<Result<(), (bool, String)>>> = vec![None; sent.len()];
        let mut start = 0;
        for chunk in rows.chunks(canonical::MAX_OFFER_ROWS) {
            let result = batch::send_splitting(EntityKind::Offer, "offers", chunk, |offers| {
                self.call(
                    client
                        .offer_update_batch()
                        .body(types::OfferUpdateBatch { offers })
                        .send(),
                )
            })
            .await;
            for i in result.delivered {
                outcome[start + i] = Some(Ok(()));
            }
            for (i, message) in result.rejected {
                outcome[start + i] = Some(Err((true, message)));
            }
            if let Some(e) = result.error {
                for i in result.failed {
                    outcome[start + i] = Some(Err((false, e.to_string())));
                }
            }
            start += chunk.len();
        }
        for ((w, id, merged), outcome) in sent.into_iter().zip(outcome) {
            match outcome {
                Some(Ok(())) => self.done(&w, Some(id), merged, report).await?,
                Some(Err((true, e))) => self.reject(&w.item, &e, report).await?,
                Some(Err((false, e))) => self.fail(&w.item, &e, report).await?,
                None => self.fail(&w.item, "not sent", report).await?,
            }
        }
        Ok(())
    }

    pub(crate) async fn pull_offers(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Offer;
        let mut state = PassState::default();
        let skus = Mutex::new(BTreeSet::new());
        self.apply_all(
            kind,
            "full",
            quarantine::offer_list(),
            &mut state,
            report,
            |o: &types::Offer| {
                if let Some(sku) = &o.sku {
                    skus.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(sku.clone());
                }
                Some((
                    o.id?,
                    remote_snapshot::<Offer>(o, None, &self.inner.mappings),
                ))
            },
        )
        .await?;
        if state.complete {
            // Every offer KeyCRM has was read: the products' push needs no look-up for a SKU
            // not among them.
            self.catalogue().listed =
                Some(skus.into_inner().unwrap_or_else(PoisonError::into_inner));
        }
        self.finish_pass(kind, state, true, None, report).await
    }

    /// Reads one offer by KeyCRM id; `None` when KeyCRM lists none.
    pub(crate) async fn fetch_offer(&self, remote_id: i64) -> Result<Option<Snapshot>, SyncError> {
        let client = &self.inner.client;
        let page = self
            .call(client.offer_list().filter_id(remote_id.to_string()).send())
            .await?;
        let Some(o) = page.into_inner().data.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(remote_snapshot::<Offer>(
            &o,
            None,
            &self.inner.mappings,
        )?))
    }
}
