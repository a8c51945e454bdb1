//! The event hub: numbers the engine's events, keeps the last ones for resuming clients, and
//! fans them out to per-client buffers that never slow the engine.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::SyncEvent;

/// An event with its id (ids increase by one from 1, per hub).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumberedEvent {
    /// The id; a client resumes after it with `Last-Event-ID`.
    pub id: u64,
    /// The event.
    pub event: SyncEvent,
}

/// What an event stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The next event.
    Event(Arc<NumberedEvent>),
    /// The client asked to resume after an id older than the replay buffer keeps: events in
    /// between are lost to it (it should reload its state); the stream goes on.
    Gap {
        /// The id the client asked to resume after.
        after: u64,
        /// The oldest id still buffered.
        oldest: u64,
    },
    /// The client fell more than its buffer behind; the stream ends after this notice.
    Lagged {
        /// Events it missed.
        missed: u64,
    },
}

impl StreamItem {
    /// The item as JSON: the event with its `id`, or `{"type": "gap"|"lagged", ...}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            StreamItem::Event(e) => {
                let mut v = serde_json::to_value(&e.event).unwrap_or_default();
                if let Some(map) = v.as_object_mut() {
                    map.insert("id".into(), e.id.into());
                }
                v
            }
            StreamItem::Gap { after, oldest } => {
                serde_json::json!({"type": "gap", "after": after, "oldest": oldest})
            }
            StreamItem::Lagged { missed } => {
                serde_json::json!({"type": "lagged", "missed": missed})
            }
        }
    }
}

struct Ring {
    next_id: u64,
    buffer: VecDeque<Arc<NumberedEvent>>,
}

/// Numbers events, keeps the last `replay` of them and fans them out.
pub(crate) struct Hub {
    ring: Mutex<Ring>,
    replay: usize,
    live: broadcast::Sender<Arc<NumberedEvent>>,
    shutdown: CancellationToken,
}

impl Hub {
    /// A hub keeping `replay` events, with `client_buffer` events of slack per client.
    pub(crate) fn new(replay: usize, client_buffer: usize, shutdown: CancellationToken) -> Self {
        let (live, _) = broadcast::channel(client_buffer.max(1));
        Self {
            ring: Mutex::new(Ring {
                next_id: 1,
                buffer: VecDeque::with_capacity(replay.min(4096)),
            }),
            replay,
            live,
            shutdown,
        }
    }

    /// Numbers an event, buffers it and sends it to every client; never waits.
    pub(crate) fn push(&self, event: SyncEvent) -> u64 {
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = ring.next_id;
        ring.next_id += 1;
        let numbered = Arc::new(NumberedEvent { id, event });
        if self.replay > 0 {
            if ring.buffer.len() == self.replay {
                ring.buffer.pop_front();
            }
            ring.buffer.push_back(numbered.clone());
        }
        // Sent under the lock, so that a subscriber sees the replay and then the live
        // events without a gap or a duplicate.
        let _ = self.live.send(numbered);
        id
    }

    /// The last id given (0 before the first event).
    pub(crate) fn last_id(&self) -> u64 {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_id
            - 1
    }

    /// A subscription from now on, or resuming after `last_event_id`.
    pub(crate) fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rx = self.live.subscribe();
        let mut backlog = VecDeque::new();
        if let Some(after) = last_event_id {
            let oldest = ring.buffer.front().map_or(ring.next_id, |e| e.id);
            if after + 1 < oldest {
                backlog.push_back(StreamItem::Gap { after, oldest });
            }
            backlog.extend(
                ring.buffer
                    .iter()
                    .filter(|e| e.id > after)
                    .cloned()
                    .map(StreamItem::Event),
            );
        }
        Subscription {
            backlog,
            rx,
            shutdown: self.shutdown.clone(),
            done: false,
        }
    }
}

/// One client's stream of events. Owns nothing of the engine or the hub.
pub struct Subscription {
    backlog: VecDeque<StreamItem>,
    rx: broadcast::Receiver<Arc<NumberedEvent>>,
    shutdown: CancellationToken,
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("backlog", &self.backlog.len())
            .field("done", &self.done)
            .finish()
    }
}

impl Subscription {
    /// The next item; `None` when the engine shut down or after a [`StreamItem::Lagged`].
    pub async fn next(&mut self) -> Option<StreamItem> {
        if self.done {
            return None;
        }
        if let Some(item) = self.backlog.pop_front() {
            return Some(item);
        }
        let received = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                self.done = true;
                return None;
            }
            received = self.rx.recv() => received,
        };
        match received {
            Ok(event) => Some(StreamItem::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.done = true;
                Some(StreamItem::Lagged { missed })
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.done = true;
                None
            }
        }
    }

    /// The subscription as a `Stream` (for SSE bodies and other frameworks).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = StreamItem> + Send + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await?;
            Some((item, sub))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EntityKind;

    fn event(n: usize) -> SyncEvent {
        SyncEvent::Pushed {
            kind: EntityKind::Order,
            local_id: format!("o-{n}"),
            remote_id: Some(n as i64),
        }
    }

    fn ids(items: &[StreamItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Event(e) => Some(e.id),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn resumes_after_an_id_from_the_replay_buffer_without_gap_or_duplicate() {
        let hub = Hub::new(5, 64, CancellationToken::new());
        for n in 0..8 {
            hub.push(event(n));
        }
        assert_eq!(hub.last_id(), 8);
        let mut sub = hub.subscribe(Some(5));
        hub.push(event(8));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(sub.next().await.unwrap());
        }
        assert_eq!(ids(&got), vec![6, 7, 8, 9]);
        // Too old: a gap notice, then what is kept.
        let mut old = hub.subscribe(Some(1));
        let first = old.next().await.unwrap();
        assert_eq!(
            first,
            StreamItem::Gap {
                after: 1,
                oldest: 5
            }
        );
        assert_eq!(
            first.to_json(),
            serde_json::json!({"type": "gap", "after": 1, "oldest": 5})
        );
        // No id: live only.
        let mut live = hub.subscribe(None);
        hub.push(event(9));
        assert_eq!(ids(&[live.next().await.unwrap()]), vec![10]);
    }

    #[tokio::test]
    async fn a_slow_client_is_told_it_lagged_and_dropped_without_slowing_the_producer() {
        let hub = Hub::new(0, 4, CancellationToken::new());
        let mut slow = hub.subscribe(None);
        for n in 0..10 {
            hub.push(event(n)); // never waits
        }
        assert_eq!(slow.next().await, Some(StreamItem::Lagged { missed: 6 }));
        assert_eq!(slow.next().await, None);
        assert_eq!(
            StreamItem::Lagged { missed: 6 }.to_json(),
            serde_json::json!({"type": "lagged", "missed": 6})
        );
    }

    #[tokio::test]
    async fn streams_end_on_shutdown() {
        let token = CancellationToken::new();
        let hub = Hub::new(8, 8, token.clone());
        let mut sub = hub.subscribe(None);
        let waiter = tokio::spawn(async move { sub.next().await });
        token.cancel();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
