//! Crash-safe creates, proven by killing the engine.
//!
//! The test binary re-executes itself: the child role (selected by an environment variable
//! and `--exact` test name) runs the engine on a file-backed SQLite store and a host kept in
//! a JSON file, against the simulator that the parent process runs (so KeyCRM's state
//! outlives every child). The parent kills the child with SIGKILL at seeded random points,
//! edits some host orders between kills, then lets a last child finish. Afterwards every
//! order exists exactly once in KeyCRM, with the host's latest content, and no host edit was
//! lost to an older KeyCRM copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use keycrm_api::mock::{KeyCrmMock, Quota};
use keycrm_api::types;
use keycrm_sync::SyncEngine;
use keycrm_sync::canonical::{self, CanonicalOrder, Mappings};
use keycrm_sync::config::{Secret, SyncConfig};
use keycrm_sync::host::{Applied, Host, HostError, LocalChanges, RemoteChange};
use keycrm_sync::model::{EntityKind, Fields, Snapshot};
use keycrm_sync::store::SqliteStore;
use serde::{Deserialize, Serialize};

mod support;
use support::{config_with, contact, line};

const CHILD: &str = "KEYCRM_SYNC_CRASH_CHILD";
const DIR: &str = "KEYCRM_SYNC_CRASH_DIR";
const URL: &str = "KEYCRM_SYNC_CRASH_URL";
const KEY: &str = "KEYCRM_SYNC_CRASH_KEY";

const ORDERS: u32 = 300;
const KILLS: usize = 18;

fn config(api_key: &str) -> SyncConfig {
    SyncConfig {
        api_key: Secret::new(api_key),
        // Small imports: more creates in flight to be killed.
        batch_size: 25,
        retry_attempts: 1000,
        ..config_with(&["new", "approved", "packing"], &[], &["main"])
    }
}

fn order(n: u32) -> CanonicalOrder {
    CanonicalOrder {
        local_id: format!("ord-{n}"),
        buyer: contact("Buyer", n),
        lines: vec![line(
            format!("SKU-{}", n % 7),
            "Tea",
            1 + i64::from(n % 3),
            "149.90",
        )],
        comment: Some(format!("original {n}")),
        ..support::order(n)
    }
}

// -------------------------------------------------------------------------------------------
// A host whose orders live in a JSON file (replaced atomically on every write), so that they
// survive a SIGKILL like the store does.

#[derive(Debug, Default, Serialize, Deserialize)]
struct HostFile {
    orders: BTreeMap<String, CanonicalOrder>,
    /// Local id -> sequence number of its last change.
    changed: BTreeMap<String, u64>,
    sequence: u64,
}

impl HostFile {
    fn load(path: &Path) -> Self {
        serde_json::from_slice(&std::fs::read(path).expect("host file")).expect("host JSON")
    }

    fn save(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn touch(&mut self, local_id: &str) {
        self.sequence += 1;
        self.changed.insert(local_id.to_string(), self.sequence);
    }
}

#[derive(Clone)]
struct FileHost {
    path: PathBuf,
    state: Arc<std::sync::Mutex<HostFile>>,
    mappings: Arc<Mappings>,
}

impl FileHost {
    fn open(path: PathBuf, mappings: Mappings) -> Self {
        let state = HostFile::load(&path);
        Self {
            path,
            state: Arc::new(std::sync::Mutex::new(state)),
            mappings: Arc::new(mappings),
        }
    }
}

impl Host for FileHost {
    async fn changes_since(
        &self,
        kind: EntityKind,
        cursor: Option<String>,
    ) -> Result<LocalChanges, HostError> {
        if kind != EntityKind::Order {
            return Ok(LocalChanges::default());
        }
        let after: u64 = cursor.map_or(0, |c| c.parse().unwrap());
        let s = self.state.lock().unwrap();
        let mut changed: Vec<(u64, String)> = s
            .changed
            .iter()
            .filter(|(_, seq)| **seq > after)
            .map(|(id, seq)| (*seq, id.clone()))
            .collect();
        changed.sort();
        Ok(LocalChanges {
            cursor: changed.last().map(|(seq, _)| seq.to_string()),
            ids: changed.into_iter().map(|(_, id)| id).collect(),
        })
    }

    async fn load(
        &self,
        kind: EntityKind,
        local_id: String,
    ) -> Result<Option<Snapshot>, HostError> {
        if kind != EntityKind::Order {
            return Ok(None);
        }
        let s = self.state.lock().unwrap();
        match s.orders.get(&local_id) {
            Some(o) => Ok(Some(canonical::snapshot(
                canonical::order_fields_from_local(o, &self.mappings)
                    .map_err(|e| HostError(e.to_string()))?,
                o.updated_at,
            ))),
            None => Ok(None),
        }
    }

    async fn apply(&self, kind: EntityKind, change: RemoteChange) -> Result<Applied, HostError> {
        if kind != EntityKind::Order {
            return Ok(Applied::Skipped {
                reason: "this host keeps orders only".into(),
            });
        }
        let local_id = change
            .local_id
            .clone()
            .unwrap_or_else(|| format!("crm-{}", change.remote_id));
        let mut s = self.state.lock().unwrap();
        if change.tombstone {
            s.orders.remove(&local_id);
        } else {
            let mut order = canonical::order_from_fields(&local_id, &change.fields, &self.mappings)
                .map_err(|e| HostError(e.to_string()))?;
            if let Some(old) = s.orders.get(&local_id) {
                order.updated_at = old.updated_at;
            }
            s.orders.insert(local_id.clone(), order);
        }
        s.touch(&local_id);
        s.save(&self.path);
        Ok(Applied::Stored { local_id })
    }

    async fn find_local(
        &self,
        kind: EntityKind,
        fields: Fields,
    ) -> Result<Option<String>, HostError> {
        let Some(uuid) = fields.get("source_uuid").and_then(|v| v.as_str()) else {
            return Ok(None);
        };
        if kind != EntityKind::Order {
            return Ok(None);
        }
        let s = self.state.lock().unwrap();
        Ok(s.orders
            .values()
            .find(|o| o.number.as_deref() == Some(uuid))
            .map(|o| o.local_id.clone()))
    }
}

/// A seeded generator (SplitMix64), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// -------------------------------------------------------------------------------------------
// The child: syncs until nothing is left to do.

/// The child role of [`orders_survive_sigkill_at_random_points`]: does nothing unless that
/// test started this process with the role's environment.
#[test]
fn crash_child_role() {
    let Ok(dir) = std::env::var(DIR) else {
        return;
    };
    assert_eq!(std::env::var(CHILD).as_deref(), Ok("1"));
    let url = std::env::var(URL).unwrap();
    let key = std::env::var(KEY).unwrap();
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let config = config(&key);
        let host = FileHost::open(dir.join("host.json"), Mappings::from_config(&config));
        let client = keycrm_api::Client::builder()
            .api_key(key.as_str())
            .base_url(url)
            .requests_per_minute(0)
            .build()
            .unwrap();
        // Each run moves the outbox clock past every backoff, so a failed item is retried
        // by the next run instead of an hour later.
        let skew = Arc::new(AtomicI64::new(0));
        let clock = skew.clone();
        let engine = SyncEngine::builder()
            .client(client)
            .store(SqliteStore::open(dir.join("store.db")).unwrap())
            .host(host)
            .config(config)
            .outbox_clock(move || {
                Utc::now() + chrono::Duration::seconds(clock.load(Ordering::Relaxed))
            })
            .build()
            .unwrap();
        for _ in 0..50 {
            let report = engine.run_once().await.unwrap();
            skew.fetch_add(2 * 3600, Ordering::Relaxed);
            if report.collected == 0
                && report.applied == 0
                && report.pushed == 0
                && report.failed == 0
            {
                return;
            }
        }
        panic!("the child did not settle within 50 runs");
    });
}

// -------------------------------------------------------------------------------------------
// The parent

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "keycrm-sync-crash-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn child(dir: &Path, mock: &KeyCrmMock) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "crash_child_role",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, "1")
    .env(DIR, dir)
    .env(URL, mock.uri())
    .env(KEY, mock.api_key())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_sigkill_at_random_points() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let seed: u64 = std::env::var("KEYCRM_SYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_C4A5);
    let mut rng = Rng(seed);
    let mock = KeyCrmMock::builder()
        .quota(Quota::unlimited())
        .start()
        .await;
    let dir = TempDir::new();
    let host_path = dir.0.join("host.json");
    let mut file = HostFile::default();
    for n in 1..=ORDERS {
        let o = order(n);
        let id = o.local_id.clone();
        file.orders.insert(id.clone(), o);
        file.touch(&id);
    }
    file.save(&host_path);
    // The host's latest comment per order, as the parent wrote it.
    let mut expected: BTreeMap<String, String> = file
        .orders
        .values()
        .map(|o| (o.local_id.clone(), o.comment.clone().unwrap()))
        .collect();

    let mut kills = 0;
    let mut finished_early = 0;
    let mut edits = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        assert!(round < 200, "could not land {KILLS} kills");
        // A random point: a few milliseconds after a random one of the child's next KeyCRM
        // requests (so that kills land in its network work, between a create and its
        // bookkeeping among others, not only while it starts), or at a random time.
        let after_requests = mock.request_count() + 1 + rng.below(40) as usize;
        let extra = Duration::from_millis(rng.below(25));
        let mut process = child(&dir.0, &mock)
            .spawn()
            .expect("re-executing the test binary");
        let started = std::time::Instant::now();
        let deadline = Duration::from_millis(200 + rng.below(4000));
        let killed = loop {
            if process.try_wait().unwrap().is_some() {
                break false;
            }
            if mock.request_count() >= after_requests || started.elapsed() >= deadline {
                tokio::time::sleep(extra).await;
                let running = process.try_wait().unwrap().is_none();
                // `Child::kill` sends SIGKILL on Unix: no destructor, no flush, no goodbye.
                process.kill().unwrap();
                process.wait().unwrap();
                break running;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if killed {
            kills += 1;
        } else {
            finished_early += 1;
        }
        // Right after the kill, in the same second as a write the child may have made without
        // its bookkeeping (KeyCRM and the host's file stamp whole seconds, and newest-wins
        // gives ties to KeyCRM): the engine's note of the write in flight tells its own echo
        // from a KeyCRM change, so the host's edit still wins.
        // Between kills the host edits some orders (a few that may be in flight).
        let mut file = HostFile::load(&host_path);
        for _ in 0..12 {
            let n = 1 + rng.below(u64::from(ORDERS)) as u32;
            let id = format!("ord-{n}");
            edits += 1;
            let comment = format!("edit {edits} of {id}");
            let edited = file.orders.get_mut(&id).unwrap();
            edited.comment = Some(comment.clone());
            // A host stamps its own edits, as any real one does: newest-wins needs it to tell
            // this edit from an older copy the engine had written to KeyCRM before a kill.
            edited.updated_at = Some(keycrm_api::Timestamp::now());
            file.touch(&id);
            expected.insert(id, comment);
        }
        file.save(&host_path);
    }

    // A last child runs to the end.
    let mut cmd = child(&dir.0, &mock);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the last run failed (seed {seed}): {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every order exists once in KeyCRM and holds the host's latest content.
    let file = HostFile::load(&host_path);
    let mappings = Mappings::from_config(&config("x"));
    let mut by_uuid: BTreeMap<String, Vec<Fields>> = BTreeMap::new();
    for id in mock.crm().order_ids() {
        let json = mock.crm().order(id).unwrap();
        let order: types::Order = serde_json::from_value(json).unwrap();
        let fields = canonical::order_fields_from_remote(&order);
        let uuid = order
            .source_uuid
            .clone()
            .expect("every order has its number");
        by_uuid.entry(uuid).or_default().push(fields);
    }
    assert_eq!(
        by_uuid.len(),
        ORDERS as usize,
        "one KeyCRM order per host order (seed {seed})"
    );
    assert_eq!(
        file.orders.len(),
        ORDERS as usize,
        "no order was duplicated on the host"
    );
    let mut lost = Vec::new();
    for o in file.orders.values() {
        let number = o.number.clone().unwrap();
        let remote = &by_uuid[&number];
        assert_eq!(
            remote.len(),
            1,
            "{number} exists once in KeyCRM (seed {seed})"
        );
        assert_eq!(
            canonical::order_fields_from_local(o, &mappings).unwrap(),
            remote[0],
            "{number}: KeyCRM holds the host's content (seed {seed})"
        );
        if o.comment.as_deref() != Some(expected[&o.local_id].as_str()) {
            lost.push(o.local_id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "host edits lost to older KeyCRM values (seed {seed}; {kills} kills, {edits} edits): {lost:?}"
    );
    eprintln!(
        "{kills} kills, {finished_early} runs finished before their kill, {edits} edits, seed {seed}"
    );
}
