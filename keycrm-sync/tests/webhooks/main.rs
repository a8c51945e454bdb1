//! Webhooks end to end: typed events, the receiver's answers for every class of request, the
//! durable inbox, the inbox worker, stock deliveries and forged data.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_api::{Decimal, types};
use keycrm_sync::canonical::{CanonicalOffer, CanonicalProduct, CanonicalStock, Mappings};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::{Applied, Host, HostError, LocalChanges, MemoryHost, RemoteChange};
use keycrm_sync::model::{EntityKind, Fields, Snapshot};
use keycrm_sync::store::{MemoryStore, NewInboxItem, SqliteStore, Store};
use keycrm_sync::webhook::{
    ParseLimits, ReceiverSettings, Rejection, SignatureCheck, WebhookError, WebhookEvent,
    WebhookReceiver, WebhookRequest, sign,
};
use keycrm_sync::{SyncEngine, SyncEvent};
use serde_json::json;

#[path = "../support/mod.rs"]
mod support;

mod events;
mod intake;
mod receiver;
mod stock;

use support::{config_with, dec, order, unpaced_client};

const TOKEN: &str = "t0k3n-9f8e7d";

fn config() -> SyncConfig {
    SyncConfig {
        webhook_secret: Secret::new(TOKEN),
        ..config_with(
            &[
                "new",
                "approved",
                "packing",
                "shipped",
                "completed",
                "canceled",
            ],
            &["cod", "card"],
            &["main"],
        )
    }
}

/// A host that blocks in `changes_since` (the first step of every run) while armed, until
/// released: a sync pass that does not end on its own.
#[derive(Clone)]
struct BlockingHost {
    inner: MemoryHost,
    armed: Arc<AtomicBool>,
    entered: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

impl BlockingHost {
    fn new(inner: MemoryHost) -> Self {
        Self {
            inner,
            armed: Arc::new(AtomicBool::new(false)),
            entered: Arc::new(tokio::sync::Notify::new()),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl Host for BlockingHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<LocalChanges, HostError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            let _permit = self.release.acquire().await.expect("semaphore open");
        }
        self.inner.changes_since(kind, cursor).await
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<Snapshot>, HostError> {
        self.inner.load(kind, local_id).await
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        self.inner.apply(kind, change).await
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        self.inner.find_local(kind, fields).await
    }
}

struct Rig<S: Store> {
    mock: KeyCrmMock,
    host: MemoryHost,
    blocking: BlockingHost,
    engine: SyncEngine<S, BlockingHost>,
}

async fn rig_on<S: Store>(store: S, config: SyncConfig) -> Rig<S> {
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .webhook_attempts(1)
        .start()
        .await;
    let client = unpaced_client(&mock);
    let host = MemoryHost::new(Mappings::from_config(&config));
    let blocking = BlockingHost::new(host.clone());
    let engine = SyncEngine::builder()
        .client(client)
        .store(store)
        .host(blocking.clone())
        .config(config)
        .build()
        .unwrap();
    Rig {
        mock,
        host,
        blocking,
        engine,
    }
}

async fn rig() -> Rig<MemoryStore> {
    rig_on(MemoryStore::new(), config()).await
}

fn query() -> String {
    format!("token={TOKEN}")
}

fn json_request(body: &[u8]) -> WebhookRequest<'_> {
    WebhookRequest::new(body).content_type("application/json")
}

/// A receiver over a bare `MemoryStore`, as a host without the engine would build it.
fn standalone(settings: ReceiverSettings) -> (WebhookReceiver, MemoryStore) {
    let store = MemoryStore::new();
    let commit_store = store.clone();
    let receiver = WebhookReceiver::new(settings, move |items: Vec<NewInboxItem>| {
        let store = commit_store.clone();
        Box::pin(async move { store.inbox_insert_batch(&items, chrono::Utc::now()).await })
    });
    (receiver, store)
}

fn settings() -> ReceiverSettings {
    ReceiverSettings::from_config(&config())
}

async fn stored<S: Store>(store: &S) -> usize {
    store.inbox_pending(1000).await.unwrap().len()
}

fn status_body(id: i64, status_id: i64, updated_at: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": "order.change_order_status",
        "context": {
            "id": id,
            "status_id": status_id,
            "payment_status": "not_paid",
            "grand_total": "240.00",
            "status_changed_at": updated_at,
            "updated_at": updated_at,
            "manager_comment": "Передзвонити Олені Петренко",
        }
    }))
    .unwrap()
}
