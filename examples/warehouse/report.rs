//! The closing report: per kind, both sides' records as canonical fields, hashed, compared.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use keycrm::Client;
use keycrm::api::Paginate;
use keycrm::sync::canonical::{self, Mappings};
use keycrm::sync::host::Host;
use keycrm::sync::model::{EntityKind, Fields, content_hash};
use keycrm::sync::{SyncEngine, SyncEvent};
use serde_json::Value;

use crate::sql::Warehouse;

/// The order fields KeyCRM answers with (what the engine reads).
const ORDER_INCLUDE: &str = "buyer,products.offer,payments,shipping";

/// Records of one kind on both sides.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub local: u64,
    pub remote: u64,
}

#[derive(serde::Deserialize)]
struct Id {
    id: String,
}

/// The warehouse's local ids of `kind`.
fn local_ids(wh: &Warehouse, kind: EntityKind) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let query = match kind {
        EntityKind::Order => "SELECT id FROM orders",
        EntityKind::Buyer => "SELECT id FROM customers",
        EntityKind::Product => "SELECT id FROM products",
        EntityKind::Offer => "SELECT id FROM articles",
        EntityKind::Stock => "SELECT warehouse || '/' || sku AS id FROM stock",
    };
    Ok(wh
        .rows::<Id>(query, &[])?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// KeyCRM's records of every kind as canonical fields (stock: per mapped warehouse).
async fn remote_fields(
    client: &Client,
    mappings: &Mappings,
) -> keycrm::Result<BTreeMap<EntityKind, Vec<Fields>>> {
    let mut out = BTreeMap::new();
    let orders: Vec<_> = client
        .order_list()
        .include(ORDER_INCLUDE)
        .items()
        .try_collect()
        .await?;
    out.insert(
        EntityKind::Order,
        orders
            .iter()
            .map(canonical::order_fields_from_remote)
            .collect(),
    );
    let buyers: Vec<_> = client.buyer_list().items().try_collect().await?;
    out.insert(
        EntityKind::Buyer,
        buyers
            .iter()
            .map(canonical::buyer_fields_from_remote)
            .collect(),
    );
    let products: Vec<_> = client.product_list().items().try_collect().await?;
    out.insert(
        EntityKind::Product,
        products
            .iter()
            .map(canonical::product_fields_from_remote)
            .collect(),
    );
    let offers: Vec<_> = client.offer_list().items().try_collect().await?;
    out.insert(
        EntityKind::Offer,
        offers
            .iter()
            .map(canonical::offer_fields_from_remote)
            .collect(),
    );
    let stocks: Vec<_> = client
        .offer_stock_list()
        .filter_details(true)
        .items()
        .try_collect()
        .await?;
    let mut levels = Vec::new();
    for stock in &stocks {
        for row in stock.warehouse.iter().flatten() {
            let Some(id) = row.id.filter(|id| mappings.warehouse_code(*id).is_some()) else {
                continue;
            };
            levels.extend(canonical::stock_fields_from_remote(stock, id));
        }
    }
    out.insert(EntityKind::Stock, levels);
    Ok(out)
}

/// How many records each side has, per kind.
pub async fn counts(
    wh: &Warehouse,
    client: &Client,
) -> Result<BTreeMap<EntityKind, Counts>, Box<dyn std::error::Error>> {
    let mappings = Mappings::new()
        .with_warehouse("KYIV", keycrm::api::mock::reference::WAREHOUSE_KYIV)
        .with_warehouse("LVIV", keycrm::api::mock::reference::WAREHOUSE_LVIV);
    let remote = remote_fields(client, &mappings).await?;
    let mut out = BTreeMap::new();
    for kind in EntityKind::ALL {
        out.insert(
            kind,
            Counts {
                local: local_ids(wh, kind)?.len() as u64,
                remote: remote[&kind].len() as u64,
            },
        );
    }
    Ok(out)
}

/// `orders 500, buyers 200, ...` for one side.
pub fn line(counts: &BTreeMap<EntityKind, Counts>, local: bool) -> String {
    counts
        .iter()
        .map(|(k, c)| format!("{} {}", k.as_str(), if local { c.local } else { c.remote }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per kind: counts and checksums of both sides.
pub struct Verdict {
    pub agree: bool,
    rows: Vec<(EntityKind, Counts, String, String, usize)>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<8} {:>9} {:>7}  {:<14} {:<14} agree",
            "kind", "warehouse", "KeyCRM", "checksum", "checksum"
        )?;
        for (kind, c, local, remote, differ) in &self.rows {
            let verdict = if differ == &0 {
                "yes".to_string()
            } else {
                format!("NO ({differ} records differ)")
            };
            writeln!(
                f,
                "{:<8} {:>9} {:>7}  {:<14} {:<14} {verdict}",
                kind.as_str(),
                c.local,
                c.remote,
                &local[..12],
                &remote[..12]
            )?;
        }
        write!(
            f,
            "both sides agree: {}",
            if self.agree { "yes" } else { "NO" }
        )
    }
}

/// A checksum over a side's records: the hash of their sorted content hashes.
fn checksum(hashes: &[String]) -> String {
    content_hash(&Fields::from([(
        "records".to_string(),
        Value::from(hashes.to_vec()),
    )]))
}

/// How many of sorted `a` have no partner in sorted `b` (multisets).
fn unmatched(a: &[String], b: &[String]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() {
        if j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && b[j] < a[i] {
            j += 1;
        } else {
            n += 1;
            i += 1;
        }
    }
    n
}

/// Compares both sides record for record (as multisets of canonical content hashes).
pub async fn compare<S: keycrm::sync::store::Store>(
    wh: &Warehouse,
    client: &Client,
    engine: &SyncEngine<S, crate::Host>,
) -> Result<Verdict, Box<dyn std::error::Error>> {
    let remote = remote_fields(client, engine.host().mappings()).await?;
    let mut rows = Vec::new();
    let mut agree = true;
    for kind in EntityKind::ALL {
        let mut local = Vec::new();
        for id in local_ids(wh, kind)? {
            if let Some(snapshot) = engine.host().load(kind, id).await? {
                local.push(snapshot.hash());
            }
        }
        let mut theirs: Vec<String> = remote[&kind].iter().map(content_hash).collect();
        local.sort();
        theirs.sort();
        let differ = unmatched(&local, &theirs) + unmatched(&theirs, &local);
        agree &= differ == 0;
        let counts = Counts {
            local: local.len() as u64,
            remote: theirs.len() as u64,
        };
        rows.push((kind, counts, checksum(&local), checksum(&theirs), differ));
    }
    Ok(Verdict { agree, rows })
}

/// Alerts told by the engine's event stream while the scenario runs.
#[derive(Clone, Default)]
pub struct AlertLog(Arc<Mutex<Vec<(String, bool)>>>);

impl AlertLog {
    /// Starts recording the engine's alert events.
    pub fn watch<S: keycrm::sync::store::Store>(engine: &SyncEngine<S, crate::Host>) -> Self {
        let log = Self::default();
        let events = engine.subscribe();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let SyncEvent::Alert { alert, firing, .. } = event {
                    println!(
                        "  alert {alert} {}",
                        if firing { "FIRED" } else { "resolved" }
                    );
                    sink.0.lock().expect("alert log").push((alert, firing));
                }
            }
        });
        log
    }

    /// `alerts: sync_errors fired 1, resolved 1`.
    pub fn summary(&self) -> String {
        let mut per: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for (alert, firing) in self.0.lock().expect("alert log").iter() {
            let entry = per.entry(alert.clone()).or_default();
            if *firing { entry.0 += 1 } else { entry.1 += 1 }
        }
        if per.is_empty() {
            return "alerts: none fired".into();
        }
        let parts: Vec<String> = per
            .iter()
            .map(|(a, (f, r))| format!("{a} fired {f}, resolved {r}"))
            .collect();
        format!("alerts: {}", parts.join("; "))
    }
}
