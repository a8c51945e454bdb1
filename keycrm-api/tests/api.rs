//! Integration tests of the `keycrm-api` client against a wiremock KeyCRM (one test binary).
//!
//! Every test starts its own mock server with a catch-all that answers 500 and expects no
//! call, so any request the test did not plan for fails it. Fixtures in `tests/fixtures/` are
//! invented but shaped like live KeyCRM answers.

#[path = "api/support.rs"]
mod support;

#[path = "api/buyers.rs"]
mod buyers;
#[path = "api/calls.rs"]
mod calls;
#[path = "api/companies.rs"]
mod companies;
#[path = "api/custom_fields.rs"]
mod custom_fields;
#[path = "api/decoding.rs"]
mod decoding;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/offers.rs"]
mod offers;
#[path = "api/order_parts.rs"]
mod order_parts;
#[path = "api/orders.rs"]
mod orders;
#[path = "api/payments.rs"]
mod payments;
#[path = "api/pipelines.rs"]
mod pipelines;
#[path = "api/products.rs"]
mod products;
#[path = "api/redaction.rs"]
mod redaction;
#[path = "api/storage.rs"]
mod storage;
#[path = "api/tolerance.rs"]
mod tolerance;
#[path = "api/users.rs"]
mod users;
