//! Order creation that never creates twice.

use progenitor_client::ClientInfo;

use crate::WaitPhase;
use crate::error::{Error, Result};
use crate::{Client, types};

impl Client {
    /// Creates an order at most once, keyed by its `source_uuid` (required here).
    ///
    /// `POST /order` is not idempotent: when a create times out, fails mid-connection or gets
    /// a 5xx, the order may exist anyway, and sending it again would duplicate it. After such
    /// an ambiguous failure this method first looks the order up with
    /// `filter[source_uuid]` and returns it when found; only when KeyCRM has no such order
    /// does it send the create again (up to the client's `max_retries`, with backoff).
    /// Errors that prove nothing was created (422, 401, ...) are returned at once.
    ///
    /// A narrow window remains in which the service is still processing the first request
    /// when the look-up runs; the backoff before each look-up makes it unlikely.
    pub async fn order_create_idempotent(&self, body: types::OrderCreate) -> Result<types::Order> {
        let uuid = body
            .source_uuid
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| Error::InvalidRequest {
                message: "order_create_idempotent needs `source_uuid`: it is how a lost create is found again".into(),
            })?;
        let policy = self.inner().retry_policy();
        let mut attempts = 0;
        loop {
            let error = match self.order_create().body(body.clone()).send().await {
                Ok(created) => return Ok(created.into_inner()),
                Err(e) => e,
            };
            if !is_ambiguous(&error) {
                return Err(error);
            }
            self.inner()
                .clock()
                .sleep(policy.backoff_for(attempts))
                .await;
            if let Some(existing) = self.find_order_by_source_uuid(&uuid).await? {
                return Ok(existing);
            }
            attempts += 1;
            if attempts > policy.max_retries() {
                return Err(error);
            }
        }
    }

    /// Looks an order up by its id in the source system (`filter[source_uuid]`), matching
    /// the value exactly.
    pub async fn find_order_by_source_uuid(
        &self,
        source_uuid: &str,
    ) -> Result<Option<types::Order>> {
        let page = self
            .order_list()
            .filter_source_uuid(source_uuid)
            .limit(std::num::NonZeroU64::new(50).expect("non-zero"))
            .send()
            .await?
            .into_inner();
        Ok(page
            .data
            .into_iter()
            .find(|o| o.source_uuid.as_deref() == Some(source_uuid)))
    }
}

/// Whether a failed create may nevertheless have created the order: no answer came (a
/// timeout, a broken connection, the deadline cutting the request on the wire), the service
/// failed, or it answered success with a body too large to read.
fn is_ambiguous(error: &Error) -> bool {
    match error {
        Error::Timeout { .. } | Error::Transport { .. } | Error::Server { .. } => true,
        Error::DeadlineExceeded { phase, .. } => *phase == WaitPhase::Request,
        Error::ResponseTooLarge { status, .. } => (200..300).contains(status),
        _ => false,
    }
}
