//! The sync engine against the KeyCRM simulator: convergence both ways, request economy,
//! conflicts, interruption and faults.
//!
//! One test binary; each concern is a module of it, the shared setup is `support`.

#[path = "../support/mod.rs"]
mod support;

mod buyers;
mod catalogue;
mod conflicts;
mod events;
mod faults;
mod guards;
mod orders;
mod resume;
mod stock;
