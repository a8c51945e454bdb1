//! The facade re-exports the client so that `keycrm::api` and the top-level names agree.

use keycrm::api::{self, ClientInfo};

#[test]
fn facade_reexports_the_client() {
    let client: keycrm::Client = api::Client::builder().api_key("k").build().expect("valid");
    assert_eq!(client.baseurl(), api::DEFAULT_BASE_URL);
    let err = keycrm::Client::builder().build().expect_err("no key");
    assert!(matches!(err, keycrm::Error::Config { .. }));
}
