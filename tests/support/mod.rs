//! Setup shared by the facade's test binaries.

use keycrm::api::Client;
use keycrm::api::mock::KeyCrmMock;

/// A client that neither paces nor retries: the simulator's answers come through as they are.
pub fn direct_client(mock: &KeyCrmMock) -> Client {
    mock.client_builder()
        .requests_per_minute(0)
        .max_retries(0)
        .build()
        .expect("a valid client")
}
