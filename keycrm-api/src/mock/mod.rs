//! A stateful KeyCRM simulator for tests (feature `mock`).
//!
//! [`KeyCrmMock`] runs a KeyCRM on loopback (a [wiremock](https://docs.rs/wiremock) server
//! with one stateful responder) that behaves like the real service as far as it is known:
//! all 59 operations with the success codes KeyCRM uses (201 for creates, 202 for updates
//! and bulk writes, 204 for detaching a tag, 200 or 201 for uploads...), Laravel pages
//! with every envelope field and working page URLs, Laravel's 422 bodies (`message` +
//! `errors`) for missing fields and exceeded batch limits, 400 for unknown `include`
//! naming the allowed ones, 401 `{"message":"Unauthenticated."}` for a wrong key, the
//! per-key quota (60 requests per minute unless configured; 429 with `Retry-After`), and
//! answers that look live: ISO-8601 timestamps with microseconds next to
//! `YYYY-MM-DD HH:MM:SS` ones, decimals as numbers or as strings.
//!
//! It keeps state: orders link or create their buyer and their lines link catalogue
//! offers by SKU; totals and `payment_status` follow payments; `updated_at` moves on every
//! write; stock is set per warehouse and reserved by orders in reserving statuses. Changes
//! send the webhooks KeyCRM sends (`order.change_order_status`,
//! `order.change_payment_status`, `lead.change_lead_status`, and the bare-array stock
//! webhook), whether they came through the API or were made "in the CRM" with
//! [`KeyCrmMock::crm`]. [`KeyCrmMock::faults`] injects errors, latency, dropped
//! connections and lost create responses; [`KeyCrmMock::seed`] fills the account with
//! deterministic Ukrainian test data.
//!
//! # Example
//!
//! A test of code that reads orders and reacts to a status change made in the CRM:
//!
//! ```
//! use keycrm_api::mock::{KeyCrmMock, SeedConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mock = KeyCrmMock::start().await;
//! let seeded = mock.seed(SeedConfig { orders: 20, ..SeedConfig::default() });
//! let client = mock.client();
//!
//! let page = client.order_list().limit(10u64).send().await.unwrap().into_inner();
//! assert_eq!(page.total, Some(20));
//! assert_eq!(page.data.len(), 10);
//! assert_eq!(mock.count("order_list"), 1);
//!
//! // A manager moves an order to "shipped" (status 4) in the CRM: the registered
//! // receiver gets `order.change_order_status` (here nobody listens, so nothing is sent).
//! let order = seeded.orders[0];
//! mock.crm().set_order_status(order, 4);
//! let fresh = client.order_get().order_id(order).send().await.unwrap().into_inner();
//! assert_eq!(fresh.status_id, Some(4));
//! # }
//! ```
//!
//! # What is simulated, and how
//!
//! - **Time**: stamps come from the system's clock, or from a clock given to
//!   [`KeyCrmMockBuilder::clock`] (a [`VirtualClock`](crate::clock::VirtualClock) moves the
//!   account's time without waiting, shared with the simulator's clients).
//! - **Base URL**: [`KeyCrmMock::uri`] ends in `/v1`, like the real one. Unknown paths
//!   answer 404 with Laravel's route message, known paths with another method 405.
//! - **Quota**: by default a fixed window that opens with the first request (Laravel's
//!   throttle, which KeyCRM most likely runs); every answer carries `X-RateLimit-Limit`
//!   and `X-RateLimit-Remaining`, a 429 also `Retry-After` in seconds and
//!   `X-RateLimit-Reset`. A rolling window or a token bucket, with or without those
//!   headers, can be chosen instead ([`Quota::with_model`], [`Quota::headers`]). Requests
//!   with a wrong key are not counted.
//! - **Choices where KeyCRM's behaviour is undocumented** (made strict, so that clients
//!   that rely on them notice): `limit` outside 1..=50 and `page` below 1 answer 422;
//!   batch rows that name an unknown offer (`PUT /offers`, `PUT /offers/stocks`) answer
//!   422; `POST /order/import` answers 201 `{"status": true}` without ids;
//!   `GET /pipelines/cards/{id}` answers the plain card; a `*_between` upper bound given as
//!   a date means the end of that day; `POST /buyer/import` answers 400
//!   `{"status": false}` when a buyer has neither name nor contact.
//! - **Stock**: orders in the statuses "Погоджено" (2) and "Комплектується" (3) reserve
//!   their catalogue lines; moving an order to "Відправлено" (4) or "Виконано" (5) writes
//!   the goods off. Every change of balance or reserve sends the stock webhook.
//! - **Webhooks** are posted one at a time, in order, from a task on the runtime that
//!   started the simulator; a delivery not answered with exactly 200 is retried (3
//!   attempts in all unless configured). [`KeyCrmMock::wait_for_webhooks`] waits for them.
//! - **Dropped connections** ([`Faults::drop_next`]): wiremock cannot reset a socket, so
//!   the simulator answers with a response hyper refuses to encode (it has both
//!   `Transfer-Encoding` and `Content-Length`); hyper then closes the connection without
//!   writing a byte. The client gets a transport error without any HTTP status
//!   ("connection closed before message completed"), as after a reset; strictly it is a
//!   clean close, not a TCP RST. The request is not applied. (This relies on hyper
//!   refusing such a response; `tests/mock_behaviour.rs` checks that it still does.)
//! - **Lost responses** ([`Faults::lose_next_creates`]): the create is applied, and its
//!   answer is held back for [`KeyCrmMockBuilder::lost_response_delay`] (2 minutes unless
//!   configured), longer than any sensible client timeout.
//! - **Admin API**: under `/__mock/` (outside `/v1`, no key, no quota, not recorded) the
//!   same simulator takes commands over HTTP: reset, seed, order and card status changes
//!   made "in the CRM", stock, faults, webhook receivers, the request and delivery logs.
//!   It is what tests in other languages use through the `keycrm-mock` binary (feature
//!   `mock`); the README documents every route.
//! - **Reference data** of a fresh account: six order statuses, five sources, payment
//!   methods, expense types, delivery services, tags, four users, two warehouses (ids 1
//!   and 2), custom fields (`OR_1001`...), two pipelines with four stages each.

mod admin;
mod catalog;
mod faults;
mod http;
mod misc;
mod model;
mod orders;
mod people;
mod pipelines;
mod quota;
mod quota_server;
mod routes;
mod seed;
mod server;
mod state;
mod validate;
mod webhooks;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wiremock::{Mock, MockServer};

pub use quota::{Quota, QuotaAnswer, QuotaCounter, Window};
pub use quota_server::{Arrival, QuotaServer};
pub use seed::{SeedConfig, Seeded, reference};
pub use webhooks::WebhookDelivery;

use crate::clock::Clock;
use crate::{Client, ClientBuilder};
use faults::FaultState;
use quota::Throttle;
use server::{Inner, Responder, Shared};
use state::State;
use webhooks::{Dispatcher, RetryPolicy};

/// The API key a simulator accepts unless another is configured.
pub const DEFAULT_API_KEY: &str = "keycrm-mock-key";

/// The operation ids of the 59 operations the simulator answers, as used by
/// [`KeyCrmMock::count`] and [`RecordedRequest::operation`] (they are the client's method
/// names).
pub fn operations() -> impl Iterator<Item = &'static str> {
    routes::ROUTES.iter().map(|r| r.operation)
}

/// One request the simulator received.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// The path as sent, `/v1` included (`/v1/order/10001`).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The operation it matched (`order_create`), if any.
    pub operation: Option<&'static str>,
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
}

/// Configures a [`KeyCrmMock`] before it starts.
#[derive(Clone)]
pub struct KeyCrmMockBuilder {
    api_key: String,
    quota: Quota,
    leads_enabled: bool,
    seed: Option<SeedConfig>,
    webhook_attempts: u32,
    webhook_retry_delay: Duration,
    lost_response_delay: Duration,
    webhooks: Vec<String>,
    stock_webhooks: Vec<String>,
    fail_share: Option<(f64, u16, u64)>,
    latency: Duration,
    lose_create_share: Option<(f64, u64)>,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for KeyCrmMockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and the receiver URLs (which often carry a token) stay out of logs.
        f.debug_struct("KeyCrmMockBuilder")
            .field("quota", &self.quota)
            .field("leads_enabled", &self.leads_enabled)
            .field("seed", &self.seed)
            .field("webhooks", &self.webhooks.len())
            .field("stock_webhooks", &self.stock_webhooks.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Default for KeyCrmMockBuilder {
    fn default() -> Self {
        Self {
            api_key: DEFAULT_API_KEY.to_string(),
            quota: Quota::default(),
            leads_enabled: true,
            seed: None,
            webhook_attempts: 3,
            webhook_retry_delay: Duration::from_millis(100),
            lost_response_delay: Duration::from_secs(120),
            webhooks: Vec::new(),
            stock_webhooks: Vec::new(),
            fail_share: None,
            latency: Duration::ZERO,
            lose_create_share: None,
            clock: None,
        }
    }
}

impl KeyCrmMockBuilder {
    /// The API key the simulator accepts (default [`DEFAULT_API_KEY`]).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    /// The request quota (default 60 per minute in a fixed window, with the rate-limit
    /// headers; see [`Quota`] for the other window models).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Whether the pipelines (leads) module is switched on (default on). When off, every
    /// `/pipelines` operation answers 400 `{"message": "Leads are not enabled"}`.
    pub fn leads_enabled(mut self, enabled: bool) -> Self {
        self.leads_enabled = enabled;
        self
    }

    /// Seeds the account before it starts (see [`KeyCrmMock::seed`]).
    pub fn seed(mut self, config: SeedConfig) -> Self {
        self.seed = Some(config);
        self
    }

    /// Attempts per webhook delivery, the first included (default 3).
    pub fn webhook_attempts(mut self, attempts: u32) -> Self {
        self.webhook_attempts = attempts.max(1);
        self
    }

    /// Pause between webhook attempts (default 100 ms).
    pub fn webhook_retry_delay(mut self, delay: Duration) -> Self {
        self.webhook_retry_delay = delay;
        self
    }

    /// How long a lost create response is held back (default 2 minutes).
    pub fn lost_response_delay(mut self, delay: Duration) -> Self {
        self.lost_response_delay = delay;
        self
    }

    /// A receiver of the order and lead webhooks that is registered from the start and
    /// again after every [`KeyCrmMock::reset`] (see [`KeyCrmMock::register_webhook`]).
    pub fn webhook(mut self, url: impl Into<String>) -> Self {
        self.webhooks.push(url.into());
        self
    }

    /// A receiver of the stock webhook that is registered from the start and again after
    /// every [`KeyCrmMock::reset`] (see [`KeyCrmMock::register_stock_webhook`]).
    pub fn stock_webhook(mut self, url: impl Into<String>) -> Self {
        self.stock_webhooks.push(url.into());
        self
    }

    /// Answers a seeded `share` (0.0 to 1.0) of requests with `status`, from the start and
    /// again after every [`KeyCrmMock::reset`] (see [`Faults::fail_share`]).
    pub fn fail_share(mut self, share: f64, status: u16, seed: u64) -> Self {
        self.fail_share = Some((share, status, seed));
        self
    }

    /// Delays every answer by `latency`, from the start and again after every
    /// [`KeyCrmMock::reset`] (see [`Faults::set_latency`]).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Loses the answer of a seeded `share` of successful creates, from the start and again
    /// after every [`KeyCrmMock::reset`] (see [`Faults::lose_create_share`]).
    pub fn lose_create_share(mut self, share: f64, seed: u64) -> Self {
        self.lose_create_share = Some((share, seed));
        self
    }

    /// The account's wall clock: `created_at`, `updated_at` and every other time the
    /// simulator stamps (API writes and changes made with [`KeyCrmMock::crm`]) are the
    /// clock's [`wall_time`](Clock::wall_time), so that a `*_between` filter selects by it
    /// (default: the system's time). Stamps stay strictly increasing (a write in the same
    /// microsecond as the one before is stamped a microsecond later). The quota's window
    /// and webhook retries keep the system's time.
    ///
    /// A client from [`KeyCrmMock::client_builder`] or [`KeyCrmMock::client`] gets the same
    /// clock, so that code under test and the simulated KeyCRM agree on the time. With a
    /// [`VirtualClock`](crate::clock::VirtualClock), a test moves both forward at once:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use keycrm_api::clock::{Clock, VirtualClock};
    /// use keycrm_api::mock::{KeyCrmMock, SeedConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let clock = Arc::new(VirtualClock::new());
    /// let mock = KeyCrmMock::builder().clock(clock.clone()).start().await;
    /// let seeded = mock.seed(SeedConfig { orders: 1, ..SeedConfig::default() });
    ///
    /// // An hour later (no waiting), a manager moves the order on.
    /// clock.advance(Duration::from_secs(3600));
    /// mock.crm().set_order_status(seeded.orders[0], 4);
    /// let order = mock.crm().order(seeded.orders[0]).unwrap();
    /// let updated_at: chrono::DateTime<chrono::Utc> =
    ///     order["updated_at"].as_str().unwrap().parse().unwrap();
    /// let expected: chrono::DateTime<chrono::Utc> = clock.wall_time().into();
    /// assert_eq!(updated_at.timestamp(), expected.timestamp());
    ///
    /// // The simulator's client reads the same time.
    /// assert_eq!(mock.client().wall_time(), clock.wall_time());
    /// # }
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The faults armed at start and after every reset.
    fn initial_faults(&self) -> FaultState {
        let mut faults = FaultState::new(self.lost_response_delay);
        if let Some((share, status, seed)) = self.fail_share {
            faults.fail_share(share, status, seed);
        }
        if let Some((share, seed)) = self.lose_create_share {
            faults.lose_share(share, seed);
        }
        faults.latency = self.latency;
        faults
    }

    /// Starts the simulator on a free loopback port.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (webhooks are delivered by a task on it).
    pub async fn start(self) -> KeyCrmMock {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        self.serve(server).await
    }

    /// Starts the simulator on a listener the caller bound (a fixed port, for the
    /// `keycrm-mock` binary or a test in another language). The base URL uses the
    /// listener's address.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (webhooks are delivered by a task on it).
    pub async fn start_on(self, listener: std::net::TcpListener) -> KeyCrmMock {
        let server = MockServer::builder()
            .listener(listener)
            .disable_request_recording()
            .start()
            .await;
        self.serve(server).await
    }

    async fn serve(self, server: MockServer) -> KeyCrmMock {
        let origin = server.uri();
        let hooks = Dispatcher::start(RetryPolicy {
            attempts: self.webhook_attempts,
            delay: self.webhook_retry_delay,
        });
        let mut state = State::new(self.leads_enabled, self.clock.clone());
        let seeded = self.seed.as_ref().map(|c| seed::seed(&mut state, c));
        let shared = Arc::new(Shared {
            inner: std::sync::Mutex::new(Inner {
                state,
                log: Vec::new(),
                throttle: Throttle::new(self.quota),
                faults: self.initial_faults(),
                trigger_hooks: self.webhooks.clone(),
                stock_hooks: self.stock_webhooks.clone(),
            }),
            api_key: self.api_key.clone(),
            origin,
            hooks,
            config: self,
            seeded,
        });
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder(Arc::clone(&shared)))
            .named("KeyCRM simulator")
            .mount(&server)
            .await;
        KeyCrmMock {
            _server: server,
            shared,
        }
    }
}

/// A running KeyCRM simulator. It stops when dropped.
///
/// See the [module documentation](self) for what it simulates.
pub struct KeyCrmMock {
    _server: MockServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KeyCrmMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCrmMock")
            .field("uri", &self.uri())
            .finish_non_exhaustive()
    }
}

impl KeyCrmMock {
    /// Starts a simulator with the defaults: key [`DEFAULT_API_KEY`], 60 requests per
    /// minute, leads on, an account with reference data only.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// Configures a simulator.
    pub fn builder() -> KeyCrmMockBuilder {
        KeyCrmMockBuilder::default()
    }

    /// The base URL to give the client, `http://127.0.0.1:PORT/v1`.
    pub fn uri(&self) -> String {
        format!("{}/v1", self.shared.origin)
    }

    /// The API key the simulator accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// A client builder with the simulator's key and base URL, for further settings
    /// (timeouts, retries, pacing); and the simulator's clock when one was given
    /// ([`KeyCrmMockBuilder::clock`]).
    pub fn client_builder(&self) -> ClientBuilder {
        let builder = Client::builder()
            .api_key(self.api_key())
            .base_url(self.uri());
        match &self.shared.config.clock {
            Some(clock) => builder.clock(Arc::clone(clock)),
            None => builder,
        }
    }

    /// The clock given to [`KeyCrmMockBuilder::clock`], if any.
    pub fn clock(&self) -> Option<Arc<dyn Clock>> {
        self.shared.config.clock.clone()
    }

    /// A client with the simulator's key and base URL and the client's defaults.
    ///
    /// Those defaults pace requests to KeyCRM's 60 per minute, like the simulator's default
    /// quota: realistic, but one request per second. Tests that make many requests raise
    /// both, e.g. [`KeyCrmMockBuilder::quota`] with [`Quota::unlimited`] and
    /// `client_builder().requests_per_minute(0)` (no pacing).
    ///
    /// # Panics
    ///
    /// Never in practice: the key and URL are valid.
    pub fn client(&self) -> Client {
        self.client_builder()
            .build()
            .expect("the simulator's key and URL make a valid client")
    }

    /// Adds deterministic records (see [`SeedConfig`]) and returns their ids. On a fresh
    /// simulator the same configuration always gives the same records and ids.
    pub fn seed(&self, config: SeedConfig) -> Seeded {
        seed::seed(&mut self.shared.lock().state, &config)
    }

    /// Changes made "in the CRM" (by a manager in the web UI): they change the state and
    /// send the same webhooks as the API would.
    pub fn crm(&self) -> Crm<'_> {
        Crm { mock: self }
    }

    /// Faults for the next requests.
    pub fn faults(&self) -> Faults<'_> {
        Faults { mock: self }
    }

    /// Every request received since the start (or the last [`reset`](Self::reset) or
    /// [`clear_log`](Self::clear_log)).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.clone()
    }

    /// How many requests matched the operation (`"order_create"`), whatever the answer.
    pub fn count(&self, operation: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.operation == Some(operation))
            .count()
    }

    /// How many requests were received in all.
    pub fn request_count(&self) -> usize {
        self.shared.lock().log.len()
    }

    /// How many requests the quota refused with 429 (injected 429 faults not included).
    pub fn rate_limited(&self) -> u64 {
        self.shared.lock().throttle.rejected
    }

    /// Replaces the quota and starts a new window.
    pub fn set_quota(&self, quota: Quota) {
        self.shared.lock().throttle = Throttle::new(quota);
    }

    /// Forgets the recorded requests and the 429 counter.
    pub fn clear_log(&self) {
        let mut inner = self.shared.lock();
        inner.log.clear();
        inner.throttle.rejected = 0;
    }

    /// Back to the state right after start: an account with reference data only (plus the
    /// builder's seed), no requests recorded, a fresh quota window, no faults, only the
    /// builder's webhook receivers and no delivery log.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// The ids of the records the builder's [`seed`](KeyCrmMockBuilder::seed) created
    /// (the same after every [`reset`](Self::reset)); `None` without a builder seed.
    pub fn seeded(&self) -> Option<&Seeded> {
        self.shared.seeded.as_ref()
    }

    /// The reference data of the account as JSON (`order_statuses`, `payment_methods`,
    /// `sources`, `warehouses`, `delivery_services`, `expense_types`, `tags`, `users`,
    /// `custom_fields`, `pipelines`, `pipeline_statuses`), each a list of
    /// `{"id", "name", ...}`; what `GET /__mock/reference` answers.
    pub fn reference(&self) -> Value {
        admin::reference(&self.shared.lock().state)
    }

    /// Registers a receiver of the order and lead webhooks (`order.change_order_status`,
    /// `order.change_payment_status`, `lead.change_lead_status`).
    pub fn register_webhook(&self, url: impl Into<String>) {
        self.shared.lock().trigger_hooks.push(url.into());
    }

    /// Registers a receiver of the stock webhook (a JSON array of
    /// `{offer_id, sku, in_stock, in_reserve}`).
    pub fn register_stock_webhook(&self, url: impl Into<String>) {
        self.shared.lock().stock_hooks.push(url.into());
    }

    /// Waits until every webhook queued so far was delivered or given up (retries
    /// included), then returns all deliveries so far.
    ///
    /// # Panics
    ///
    /// When deliveries are still running after 30 seconds.
    pub async fn wait_for_webhooks(&self) -> Vec<WebhookDelivery> {
        assert!(
            self.shared.hooks.wait(server::WEBHOOK_WAIT).await,
            "webhook deliveries did not finish within {:?}",
            server::WEBHOOK_WAIT
        );
        self.webhook_deliveries()
    }

    /// The webhook deliveries finished so far.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.hooks.log()
    }

    /// Runs a change on the state and sends the webhooks it produced.
    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut inner = self.shared.lock();
        let result = f(&mut inner.state);
        inner.flush_events(&self.shared.hooks);
        result
    }

    /// Reads the state.
    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.lock().state)
    }
}

/// Changes made "in the CRM" by a manager, and a look at the records; from
/// [`KeyCrmMock::crm`].
///
/// Changes update the state, move `updated_at` and send the same webhooks an API change
/// sends. They are not requests: they are not recorded and use no quota.
///
/// Every method panics when the record does not exist or the change is invalid (with the
/// message KeyCRM's validation would give), since it is meant for test set-up.
#[derive(Debug)]
pub struct Crm<'a> {
    mock: &'a KeyCrmMock,
}

fn expect_ok<T>(result: Result<T, http::ApiError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: HTTP {} {}", e.status, e.body))
}

impl Crm<'_> {
    /// Moves an order to another status (`order.change_order_status`; stock is reserved or
    /// written off as the status says).
    pub fn set_order_status(&self, order_id: i64, status_id: i64) {
        self.edit_order(order_id, serde_json::json!({ "status_id": status_id }));
    }

    /// Changes an order with the fields of an order update (`PUT /order/{id}` body).
    pub fn edit_order(&self, order_id: i64, changes: Value) {
        self.mock.change(|state| {
            expect_ok(
                orders::update_order(state, order_id, &changes),
                "edit_order",
            );
        });
    }

    /// Records a payment on an order; returns its id (`order.change_payment_status` when
    /// the order's payment status changes).
    pub fn add_order_payment(
        &self,
        order_id: i64,
        amount: impl Into<crate::Decimal>,
        status: &str,
    ) -> i64 {
        let amount = amount.into().value();
        let payment = orders::NewPayment {
            method: orders::MethodRef::Id(1),
            amount,
            status: status.to_string(),
            description: None,
            payment_date: None,
        };
        self.mock.change(|state| {
            expect_ok(
                orders::mutate(state, order_id, |state, now| {
                    Ok(orders::insert_payment(
                        state,
                        model::Destination::Order(order_id),
                        &payment,
                        now,
                    ))
                }),
                "add_order_payment",
            )
        })
    }

    /// Sets the status of an order or card payment (`paid`, `not_paid`, `canceled`); the
    /// order's payment status is recomputed.
    pub fn set_payment_status(&self, payment_id: i64, status: &str) {
        let status = status.to_string();
        self.mock.change(|state| {
            let destination = state
                .payments
                .get(&payment_id)
                .unwrap_or_else(|| panic!("set_payment_status: no payment {payment_id}"))
                .destination;
            let apply = |state: &mut State, now| {
                orders::apply_payment_update(state, payment_id, Some(status), None, now);
                Ok(())
            };
            let result = match destination {
                model::Destination::Order(id) => orders::mutate(state, id, apply),
                model::Destination::Card(id) => pipelines::mutate_card(state, id, apply),
            };
            expect_ok(result, "set_payment_status");
        });
    }

    /// Sets the balance of an offer in a warehouse (a stock document in the CRM); sends the
    /// stock webhook when it changes.
    pub fn set_stock(&self, offer_id: i64, warehouse_id: i64, quantity: impl Into<crate::Decimal>) {
        let quantity = quantity.into().value();
        self.mock.change(|state| {
            assert!(
                state.offers.contains_key(&offer_id),
                "set_stock: no offer {offer_id}"
            );
            assert!(
                state::row(&state.warehouses, warehouse_id).is_some(),
                "set_stock: no warehouse {warehouse_id}"
            );
            catalog::set_stock(state, warehouse_id, &[(offer_id, quantity)]);
        });
    }

    /// Moves a pipeline card to another stage (`lead.change_lead_status`).
    pub fn set_card_status(&self, card_id: i64, status_id: i64) {
        self.edit_card(card_id, serde_json::json!({ "status_id": status_id }));
    }

    /// Changes a card with the fields of a card update (`PUT /pipelines/cards/{id}` body).
    pub fn edit_card(&self, card_id: i64, changes: Value) {
        self.mock.change(|state| {
            expect_ok(
                pipelines::update_card(state, card_id, &changes),
                "edit_card",
            );
        });
    }

    /// Changes a buyer with the fields of a buyer update (`full_name`, `phone`, `email`,
    /// `note`...; unlike the API, `full_name` may be left out).
    pub fn edit_buyer(&self, buyer_id: i64, changes: Value) {
        self.mock.change(|state| {
            assert!(
                state.buyers.contains_key(&buyer_id),
                "edit_buyer: no buyer {buyer_id}"
            );
            let mut c = validate::Check::new();
            let input = people::read_buyer(state, &mut c, &changes, "", false);
            expect_ok(c.finish(), "edit_buyer");
            let now = state.now();
            people::apply_buyer_update(state, buyer_id, input, now);
        });
    }

    /// Switches the pipelines (leads) module on or off.
    pub fn set_leads_enabled(&self, enabled: bool) {
        self.mock.change(|state| state.leads_enabled = enabled);
    }

    /// Records a transaction from a bank or payment gateway (for
    /// `POST /payments/{id}/external-transactions`); returns its id.
    pub fn add_external_transaction(&self, uuid: &str, amount: impl Into<crate::Decimal>) -> i64 {
        let amount = amount.into().value();
        self.mock.change(|state| {
            let now = state.now();
            let id = state::take(&mut state.ids.transaction);
            state.transactions.insert(
                id,
                model::Transaction {
                    id,
                    uuid: uuid.to_string(),
                    gateway_id: 1,
                    amount,
                    description: None,
                    currency: "UAH".into(),
                    transaction_date: now,
                    created_at: now,
                    updated_at: now,
                    payment_id: None,
                },
            );
            id
        })
    }

    /// An order as `GET /order/{id}` would answer it with every relation included.
    pub fn order(&self, order_id: i64) -> Option<Value> {
        self.mock.read(|state| {
            let order = state.orders.get(&order_id)?;
            let all = http::Includes::all(orders::INCLUDES);
            Some(orders::render(state, order, &all, &state.reserves()))
        })
    }

    /// The total balance and reserve of an offer over all warehouses.
    pub fn stock(&self, offer_id: i64) -> Option<(crate::Decimal, crate::Decimal)> {
        self.mock.read(|state| {
            state.offers.get(&offer_id)?;
            let (q, r) = state.stock_totals(offer_id, &state.reserves());
            Some((q.into(), r.into()))
        })
    }

    /// The ids of all orders, oldest first.
    pub fn order_ids(&self) -> Vec<i64> {
        self.mock
            .read(|state| state.orders.keys().copied().collect())
    }
}

/// Faults for the next requests; from [`KeyCrmMock::faults`].
///
/// Error answers and dropped connections happen "in front of" the application: the
/// request is recorded but not applied and uses no quota.
#[derive(Debug)]
pub struct Faults<'a> {
    mock: &'a KeyCrmMock,
}

impl Faults<'_> {
    /// The next `n` requests get `status` (typically 429, 500, 502 or 503) with a JSON
    /// message; a 429 carries `Retry-After: 1`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.mock.shared.lock().faults.fail_next(n, status);
    }

    /// From now on a `share` (0.0 to 1.0) of requests gets `status`, chosen by a generator
    /// seeded with `seed` (the same seed fails the same requests).
    pub fn fail_share(&self, share: f64, status: u16, seed: u64) {
        self.mock
            .shared
            .lock()
            .faults
            .fail_share(share, status, seed);
    }

    /// Delays every answer by `latency` (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.mock.shared.lock().faults.latency = latency;
    }

    /// Drops the connection of the next `n` requests without answering (see the module
    /// documentation for how); the requests are not applied.
    pub fn drop_next(&self, n: u32) {
        self.mock.shared.lock().faults.drop_next(n);
    }

    /// The next `n` successful creates (`*_create`, `*_import`, upload) are applied but
    /// answered only after the lost-response delay, so the client times out not knowing
    /// the record exists.
    pub fn lose_next_creates(&self, n: u32) {
        self.mock.shared.lock().faults.lose_creates += n;
    }

    /// Loses the answer of a seeded `share` (0..=1) of successful creates, like
    /// [`Faults::lose_next_creates`]: each is applied, its answer held back.
    pub fn lose_create_share(&self, share: f64, seed: u64) {
        self.mock.shared.lock().faults.lose_share(share, seed);
    }

    /// Disarms every fault and turns latency off.
    pub fn clear(&self) {
        self.mock.shared.lock().faults.clear();
    }

    /// How many faults were served so far.
    pub fn served(&self) -> u64 {
        self.mock.shared.lock().faults.served
    }
}
