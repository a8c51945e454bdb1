//! Order updates without a read first.
//!
//! `PUT /order/{id}` carries status, comments, shipping and tracking in one request, and
//! the planner sends only the fields that changed against the base. The order is read first
//! (`GET /order/{id}`) only when nothing proves that KeyCRM's copy still equals that base:
//! the proof is the mapping's bookkeeping — the base carries the KeyCRM `updated_at` it was
//! taken at, and the last reconciliation saw no later one (every run reconciles before it
//! pushes, and a remote change applied there moves both). A payment status change needs
//! the payment's KeyCRM id, which only a read gives, so it is always read first; a new
//! payment is one `POST /order/{id}/payment` each (KeyCRM has no batch for them and no
//! payments in `PUT /order`).
//!
//! Before an update is sent, the mapping notes what KeyCRM will hold ([`Mapping::in_flight`]);
//! the bookkeeping after the write clears the note. A mapping that still has one is always
//! read first.
//!
//! [`Mapping::in_flight`]: crate::store::Mapping::in_flight

use keycrm_api::{Timestamp, types};

use super::{SyncEngine, SyncError, Work};
use crate::RunReport;
use crate::canonical;
use crate::host::Host;
use crate::model::{EntityKind, Fields};
use crate::plan::{PlanInput, plan};
use crate::store::Store;

impl<S: Store, H: Host> SyncEngine<S, H> {
    /// Updates a mapped order without reading it first when its base is proven current;
    /// `None` when a read is needed (no proof, or a payment status to change).
    pub(crate) async fn update_order_unread(
        &self,
        w: &Work,
        report: &mut RunReport,
    ) -> Option<Result<(), SyncError>> {
        let remote_id = w.remote_id()?;
        let mapping = w.mapping.as_ref()?;
        if mapping.in_flight.is_some() {
            // An earlier update may have landed without its bookkeeping: only a read tells.
            return None;
        }
        let base = mapping.base.as_ref()?;
        let taken_at = base.updated_at?;
        if mapping.remote_updated_at.is_none_or(|seen| seen > taken_at) {
            return None;
        }
        let policy = self.policy(EntityKind::Order);
        let planned = plan(&PlanInput {
            kind: EntityKind::Order,
            base: Some(base),
            local: Some(&w.local),
            remote: Some(base),
            policy: &policy,
        });
        let changes = canonical::split_order_changes(&planned.to_remote, &base.fields);
        if !changes.update_payments.is_empty() {
            return None;
        }
        // KeyCRM's order as the base says it is: what the update path needs of it.
        let order = types::Order {
            id: Some(remote_id),
            updated_at: Some(Timestamp::from(taken_at)),
            ..types::Order::default()
        };
        Some(
            self.update_order_with(w, &order, base.fields.clone(), report)
                .await,
        )
    }

    /// Notes, durably and before an update is sent, what the update will make KeyCRM hold
    /// (`fields`, the base its bookkeeping will write). If the engine stops between the write
    /// and that bookkeeping, the next plan finds KeyCRM's copy equal to the note and takes it
    /// as its own echo ([`Mapping::effective_base`](crate::store::Mapping::effective_base)),
    /// so a host edit made since wins as a local change instead of tying with that echo.
    pub(crate) async fn note_in_flight(&self, w: &Work, fields: &Fields) -> Result<(), SyncError> {
        let store = &self.inner.store;
        let stored = store.get_mapping(w.item.kind, &w.item.local_id).await?;
        let Some(mut mapping) = stored.or_else(|| w.mapping.clone()) else {
            return Ok(());
        };
        mapping.in_flight = Some(fields.clone());
        store.put_mapping(&mapping).await?;
        Ok(())
    }
}
