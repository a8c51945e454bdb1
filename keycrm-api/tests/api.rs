//! Integration tests of the KeyCRM client against a mock server (one test binary).

#[path = "api/support.rs"]
mod support;
#[path = "api/probe.rs"]
mod probe;
