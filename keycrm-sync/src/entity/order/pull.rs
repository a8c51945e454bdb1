//! The engine's pull of orders.

use keycrm_api::types;

use super::{Order, SOURCE_UUID};
use crate::engine::pull::{CREATED_PASS, PassState};
use crate::engine::quarantine::{self};
use crate::engine::{RunReport, SyncEngine, SyncError};
use crate::entity::remote_snapshot;
use crate::host::Host;
use crate::model::{EntityKind, Fields, Snapshot};
use crate::store::{Mapping, Store};

impl<S: Store, H: Host> SyncEngine<S, H> {
    pub(crate) async fn pull_orders(
        &self,
        report: &mut RunReport,
        everything: bool,
    ) -> Result<(), SyncError> {
        let kind = EntityKind::Order;
        let (window, start) = self.window(kind, everything).await?;
        let mut state = PassState::default();
        // New orders are reported missing from `updated_between` scans: a second pass by
        // `created_between` (which KeyCRM matches against `ordered_at`).
        let passes: Vec<(&'static str, Option<&'static str>)> = match &window {
            None => vec![("all", None)],
            Some(_) => vec![
                ("updated", Some("filter[updated_between]")),
                (CREATED_PASS, Some("filter[created_between]")),
            ],
        };
        for (pass, filter) in passes {
            let mut list = quarantine::order_list(ORDER_INCLUDE);
            if let (Some(filter), Some(w)) = (filter, &window) {
                list = list.param(filter, w.clone());
            }
            self.apply_all(kind, pass, list, &mut state, report, |o: &types::Order| {
                Some((
                    o.id?,
                    remote_snapshot::<Order>(o, o.updated_at, &self.inner.mappings),
                ))
            })
            .await?;
        }
        self.finish_pass(kind, state, everything, Some(start), report)
            .await
    }

    /// Reads one order by KeyCRM id, with the relations its fields need.
    pub(crate) async fn fetch_order(&self, remote_id: i64) -> Result<Option<Snapshot>, SyncError> {
        let client = &self.inner.client;
        let o = self
            .call(
                client
                    .order_get()
                    .order_id(remote_id)
                    .include(ORDER_INCLUDE)
                    .send(),
            )
            .await?;
        Ok(Some(remote_snapshot::<Order>(
            &o,
            o.updated_at,
            &self.inner.mappings,
        )?))
    }

    /// The mapping of an order the host created: the engine noted its number (the
    /// source_uuid) before sending the create, so a create whose answer was lost is found
    /// again even when the host's ids differ from its numbers.
    pub(crate) async fn noted_order_mapping(
        &self,
        remote: &Fields,
    ) -> Result<Option<Mapping>, SyncError> {
        let kind = EntityKind::Order;
        let Some(uuid) = SOURCE_UUID.get(remote).and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        let noted = self
            .inner
            .store
            .get_cursor(kind, &source_uuid_key(uuid))
            .await?;
        let local_id = noted.unwrap_or_else(|| uuid.to_string());
        self.mapping(kind, &local_id).await
    }
}

/// Relations an order is read with: enough for its canonical fields.
pub(crate) const ORDER_INCLUDE: &str = "buyer,products.offer,payments,shipping";

/// The cursor-table key under which the engine notes which local order carries a number
/// (`source_uuid`), written before the create is sent.
pub(crate) fn source_uuid_key(uuid: &str) -> String {
    format!("source_uuid:{uuid}")
}
