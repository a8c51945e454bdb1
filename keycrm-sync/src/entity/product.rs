//! Products: the host's catalogue item, its KeyCRM mapping both ways and bodies, and the
//! engine's product push and pull.

use std::collections::BTreeMap;

use keycrm_api::{Decimal, Timestamp};
use keycrm_api::{Paginate, types};
use serde::{Deserialize, Serialize};

use super::mapping::MappingError;
use super::remote_snapshot;
use super::values::{Out, Reader, body_error, chunks};
use crate::canonical;
use crate::engine::pull::PassState;
use crate::engine::push::{Work, lookup, text};
use crate::engine::quarantine::{self};
use crate::engine::{RunReport, SyncEngine, SyncError, batch};
use crate::field::FieldPath;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::plan::{PlanInput, plan};
use crate::store::{Mapping, Store};

/// The most products KeyCRM takes in one `POST /products/import`.
pub const MAX_PRODUCT_IMPORT: usize = 100;

/// A catalogue product (without variants) as a simple host keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CanonicalProduct {
    /// The host's id of the product.
    pub local_id: String,
    /// Article number; KeyCRM fills it only for a product without variants.
    pub sku: Option<String>,
    /// Product name (required by KeyCRM).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Price (for a product with variants KeyCRM reports an aggregate here).
    pub price: Option<Decimal>,
    /// KeyCRM category id.
    pub category_id: Option<i64>,
    /// When the host last changed the product (UTC).
    pub updated_at: Option<Timestamp>,
}

fn flatten_product(
    sku: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    price: Option<Decimal>,
    category_id: Option<i64>,
) -> Fields {
    let mut out = Out::default();
    out.text(SKU, sku);
    out.text(NAME, name);
    out.text(DESCRIPTION, description);
    out.dec(PRICE, price);
    out.id(CATEGORY_ID, category_id);
    out.0
}

/// The host's product as fields (`sku`, `name`, `description`, `price`, `category_id`).
pub fn product_fields_from_local(product: &CanonicalProduct) -> Fields {
    flatten_product(
        product.sku.as_deref(),
        Some(&product.name),
        product.description.as_deref(),
        product.price,
        product.category_id,
    )
}

/// KeyCRM's product as fields.
pub fn product_fields_from_remote(product: &types::Product) -> Fields {
    flatten_product(
        product.sku.as_deref(),
        product.name.as_deref(),
        product.description.as_deref(),
        product.price,
        product.category_id,
    )
}

/// A product's fields as a KeyCRM `ProductCreate`, one item of `POST /products/import`
/// (`name` required).
pub fn product_create_body(fields: &Fields) -> Result<types::ProductCreate, MappingError> {
    let r = Reader::new(EntityKind::Product, fields);
    types::ProductCreate::builder()
        .name(r.required_text(&NAME)?)
        .sku(r.text(&SKU)?)
        .description(r.text(&DESCRIPTION)?)
        .price(r.dec(&PRICE)?)
        .category_id(r.id(&CATEGORY_ID)?)
        .try_into()
        .map_err(body_error("ProductCreate"))
}

/// `POST /products/import` bodies of at most [`MAX_PRODUCT_IMPORT`] products each.
pub fn product_import_batches(products: Vec<types::ProductCreate>) -> Vec<types::ProductImport> {
    chunks(products, MAX_PRODUCT_IMPORT)
        .into_iter()
        .map(|products| types::ProductImport { products })
        .collect()
}

/// A product's changed fields as a KeyCRM `ProductUpdate` (`PUT /products/{id}`). A removed
/// description is sent as `""`; a removed name, SKU, price or category is left out (KeyCRM
/// cannot clear them).
pub fn product_update_body(changed: &Fields) -> Result<types::ProductUpdate, MappingError> {
    let r = Reader::new(EntityKind::Product, changed);
    let description = match r.text(&DESCRIPTION)? {
        None if r.has(&DESCRIPTION) => Some(String::new()),
        other => other,
    };
    Ok(types::ProductUpdate {
        name: r.text(&NAME)?,
        sku: r.text(&SKU)?,
        description,
        price: r.dec(&PRICE)?,
        category_id: r.id(&CATEGORY_ID)?,
        ..Default::default()
    })
}

/// Fields back to the host's product (`updated_at` left `None`).
pub fn product_from_fields(
    local_id: impl Into<String>,
    fields: &Fields,
) -> Result<CanonicalProduct, MappingError> {
    let r = Reader::new(EntityKind::Product, fields);
    Ok(CanonicalProduct {
        local_id: local_id.into(),
        sku: r.text(&SKU)?,
        name: r.required_text(&NAME)?,
        description: r.text(&DESCRIPTION)?,
        price: r.dec(&PRICE)?,
        category_id: r.id(&CATEGORY_ID)?,
        updated_at: None,
    })
}

/// Products as an [`Entity`](super::Entity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Product;

/// A product's SKU (its natural key).
pub const SKU: FieldPath = FieldPath::plain("sku");
/// A product's name.
pub const NAME: FieldPath = FieldPath::plain("name");
/// A product's description.
pub const DESCRIPTION: FieldPath = FieldPath::plain("description");
/// A product's price.
pub const PRICE: FieldPath = FieldPath::plain("price");
/// A product's KeyCRM category id.
pub const CATEGORY_ID: FieldPath = FieldPath::plain("category_id");

plain_entity! {
    Product: Product,
    local: CanonicalProduct = |x, _| product_fields_from_local(x),
    remote: types::Product = |x, _| product_fields_from_remote(x),
    from_fields: product_from_fields,
    fields: [SKU, NAME, DESCRIPTION, PRICE, CATEGORY_ID],
    natural_keys: |fields| super::key_of(fields, SKU),
    bodies: types::ProductCreate = product_create_body, types::ProductUpdate = product_update_body,
}

// ------------------------------------------------------------------------------------------
// The engine's push and pull of this kind

impl<S: Store, H: Host> SyncEngine<S, H> {
    pub(crate) async fn push_products(
        &self,
        work: Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let (mut updates, creates): (Vec<Work>, Vec<Work>) =
            work.into_iter().partition(|w| w.remote_id().is_some());
        // Creates: those with a SKU are imported 100 per request and read back through their
        // offer (`GET /offers?filter[sku]=..&include=product`); the others one by one.
        let (with_sku, without): (Vec<Work>, Vec<Work>) = creates
            .into_iter()
            .partition(|w| text(&w.local.fields, &SKU).is_some());
        if self.dry_run() {
            for w in with_sku.iter().chain(&without) {
                self.would(w, "create product".into()).await?;
            }
        } else {
            for w in without {
                let result = async {
                    let body = canonical::product_create_body(&w.local.fields)?;
                    self.note_create(&w).await?;
                    let p = self
                        .call(client.product_create().body(body).send())
                        .await?
                        .into_inner();
                    let id = p.id.ok_or(SyncError::Answer {
                        operation: "POST /products",
                        problem: "a created product without id",
                    })?;
                    Ok::<_, SyncError>((id, p))
                }
                .await;
                match result {
                    Ok((id, p)) => {
                        self.done(
                            &w,
                            Some(id),
                            canonical::product_fields_from_remote(&p),
                            report,
                        )
                        .await?
                    }
                    Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
                }
            }
            self.import_products(with_sku, &mut updates, report).await?;
        }
        for w in updates {
            let remote_id = w.remote_id().expect("mapped");
            let base = w
                .mapping
                .as_ref()
                .and_then(|m| m.base.clone())
                .unwrap_or_default();
            let policy = self.policy(EntityKind::Product);
            let planned = plan(&PlanInput {
                kind: EntityKind::Product,
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
            if self.dry_run() {
                self.would(&w, format!("update product {remote_id}"))
                    .await?;
                continue;
            }
            let result = async {
                let body = canonical::product_update_body(&planned.to_remote)?;
                self.call(
                    client
                        .product_update()
                        .product_id(remote_id)
                        .body(body)
                        .send(),
                )
                .await?;
                Ok::<_, SyncError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    self.done(&w, Some(remote_id), planned.merged, report)
                        .await?
                }
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        Ok(())
    }

    /// Creates the products that have a SKU, 100 per `POST /products/import`, and links them.
    ///
    /// A create is never sent for a SKU KeyCRM may have already: the SKUs are looked up first
    /// (`GET /offers?filter[sku]=..&include=product`, 50 per request), except those a complete
    /// full read of KeyCRM's offers in this run showed absent (a SKU a create was noted for is
    /// looked up all the same: an earlier attempt's create may have landed after that read).
    /// A product found is linked, not created: against the body an earlier attempt sent, when
    /// one was noted (it then goes out as an update, so a local edit made since reaches
    /// KeyCRM), else against KeyCRM's copy. The import answers no ids, so the products it took
    /// are read back by SKU, 50 per request, after the last import; the offers read (KeyCRM
    /// creates one with each product) serve the offers' push of this run.
    async fn import_products(
        &self,
        with_sku: Vec<Work>,
        updates: &mut Vec<Work>,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let client = &self.inner.client;
        let sku_of = |w: &Work| text(&w.local.fields, &SKU).unwrap_or_default();
        let unknown: Vec<String> = {
            let catalogue = self.catalogue();
            let unknown: std::collections::BTreeSet<String> = with_sku
                .iter()
                .filter(|w| {
                    catalogue
                        .listed
                        .as_ref()
                        .is_none_or(|listed| listed.contains(&sku_of(w)))
                        || Self::noted_create(w).is_some()
                })
                .map(sku_of)
                .collect();
            unknown.into_iter().collect()
        };
        let found = self.offers_by_sku(&unknown).await?;
        let mut claimed = std::collections::BTreeSet::new();
        let mut to_create: Vec<(Work, types::ProductCreate)> = Vec::new();
        for w in with_sku {
            let sku = sku_of(&w);
            if !claimed.insert(sku.clone()) {
                // One KeyCRM product per SKU: a second host product with it is not created.
                self.fail(
                    &w.item,
                    "another host product with this SKU is synced in the same run",
                    report,
                )
                .await?;
                continue;
            }
            if let Some(p) = found.get(&sku).and_then(|o| o.product.as_ref()) {
                let Some(id) = p.id else {
                    self.fail(&w.item, &product_without_id().to_string(), report)
                        .await?;
                    continue;
                };
                if let Some(noted) = Self::noted_create(&w) {
                    // Created by an earlier run that stopped before its bookkeeping: linked
                    // against the body it sent, then updated like any mapped product, so a
                    // local edit made since reaches KeyCRM.
                    let mut mapping = w
                        .mapping
                        .clone()
                        .unwrap_or_else(|| Mapping::new(EntityKind::Product, &w.item.local_id));
                    mapping.remote_id = Some(id);
                    mapping.base = Some(noted);
                    updates.push(Work {
                        item: w.item,
                        local: w.local,
                        mapping: Some(mapping),
                    });
                } else {
                    self.link_product(&w, id, p, report).await?;
                }
                continue;
            }
            match canonical::product_create_body(&w.local.fields) {
                Ok(body) => to_create.push((w, body)),
                Err(e) => self.fail(&w.item, &e.to_string(), report).await?,
            }
        }
        let mut imported: Vec<Work> = Vec::new();
        let mut chunks = to_create.into_iter().peekable();
        while chunks.peek().is_some() {
            let chunk: Vec<(Work, types::ProductCreate)> = chunks
                .by_ref()
                .take(canonical::MAX_PRODUCT_IMPORT)
                .collect();
            for (w, _) in &chunk {
                self.note_create(w).await?;
            }
            if let Some(listed) = self.catalogue().listed.as_mut() {
                // KeyCRM may have these SKUs from now on.
                listed.extend(chunk.iter().map(|(w, _)| sku_of(w)));
            }
            let bodies: Vec<types::ProductCreate> =
                chunk.iter().map(|(_, body)| body.clone()).collect();
            // Rows KeyCRM refuses (a 422 naming `products.N.…`) are dead-lettered with its
            // message; the others are imported in the same run.
            let outcome =
                batch::send_splitting(EntityKind::Product, "products", &bodies, |products| {
                    self.call(
                        client
                            .product_import()
                            .body(types::ProductImport { products })
                            .send(),
                    )
                })
                .await;
            for (index, message) in &outcome.rejected {
                self.reject(&chunk[*index].0.item, message, report).await?;
            }
            if let Some(e) = &outcome.error {
                for index in &outcome.failed {
                    self.fail(&chunk[*index].0.item, &e.to_string(), report)
                        .await?;
                }
            }
            let delivered: std::collections::BTreeSet<usize> =
                outcome.delivered.iter().copied().collect();
            imported.extend(
                chunk
                    .into_iter()
                    .enumerate()
                    .filter(|(index, _)| delivered.contains(index))
                    .map(|(_, (w, _))| w),
            );
        }
        if imported.is_empty() {
            return Ok(());
        }
        let skus: Vec<String> = imported.iter().map(sku_of).collect();
        let back = self.offers_by_sku(&skus).await?;
        for w in imported {
            match back.get(&sku_of(&w)).and_then(|o| o.product.as_ref()) {
                Some(p) => match p.id {
                    Some(id) => self.link_product(&w, id, p, report).await?,
                    None => {
                        self.fail(&w.item, &product_without_id().to_string(), report)
                            .await?
                    }
                },
                None => {
                    self.fail(&w.item, "imported, but not found on read-back yet", report)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Links a host product to KeyCRM's product `p` (id `id`) with KeyCRM's fields as base; a
    /// KeyCRM product another host record is linked to already fails this record only.
    async fn link_product(
        &self,
        w: &Work,
        id: i64,
        p: &types::Product,
        report: &mut RunReport,
    ) -> Result<(), SyncError> {
        let linked = self
            .done(
                w,
                Some(id),
                canonical::product_fields_from_remote(p),
                report,
            )
            .await;
        self.item_result(&w.item, linked, report).await
    }

    /// KeyCRM's offers with these SKUs, each with its product
    /// (`GET /offers?filter[sku]=..&include=product`, 50 SKUs per request); noted in this
    /// run's [`CatalogueRead`](super::offer::CatalogueRead) for the offers' push.
    async fn offers_by_sku(
        &self,
        skus: &[String],
    ) -> Result<BTreeMap<String, types::Offer>, SyncError> {
        let client = &self.inner.client;
        let offers = lookup(
            skus,
            |filter| {
                client
                    .offer_list()
                    .include("product")
                    .filter_sku(filter)
                    .collect_all()
            },
            |offer: &types::Offer| offer.sku.clone(),
        )
        .await?;
        self.catalogue().offers.extend(
            offers
                .iter()
                .filter(|(_, offer)| offer.id.is_some())
                .map(|(sku, offer)| (sku.clone(), offer.clone())),
        );
        Ok(offers)
    }

    pub(crate) async fn pull_products(&self, report: &mut RunReport) -> Result<(), SyncError> {
        let kind = EntityKind::Product;
        let mut state = PassState::default();
        self.apply_all(
            kind,
            "full",
            quarantine::product_list(),
            &mut state,
            report,
            |p: &types::Product| {
                Some((
                    p.id?,
                    remote_snapshot::<Product>(p, p.updated_at, &self.inner.mappings),
                ))
            },
        )
        .await?;
        self.finish_pass(kind, state, true, None, report).await
    }

    /// Reads one product by KeyCRM id.
    pub(crate) async fn fetch_product(
        &self,
        remote_id: i64,
    ) -> Result<Option<Snapshot>, SyncError> {
        let client = &self.inner.client;
        let p = self
            .call(client.product_get().product_id(remote_id).send())
            .await?;
        Ok(Some(remote_snapshot::<Product>(
            &p,
            p.updated_at,
            &self.inner.mappings,
        )?))
    }
}

fn product_without_id() -> SyncError {
    SyncError::Answer {
        operation: "GET /offers?include=product",
        problem: "a product without id",
    }
}
