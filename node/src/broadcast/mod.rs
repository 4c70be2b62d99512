//! The broadcast plane: the satellite uplink's carousel ([`uplink`]) and the downlink receiver
//! ([`downlink`]), over UDP and RaptorQ ([`mhc_transport::carousel`]). Its counters are
//! [`BroadcastMetrics`](crate::core::metrics::BroadcastMetrics).

mod downlink;
mod uplink;

use std::time::Duration;

pub use downlink::run_downlink;
pub use uplink::run_uplink;

/// How often the uplink looks at what it should carry.
const REFRESH: Duration = Duration::from_millis(500);
/// How often the receiver publishes the number of incomplete objects.
const PROGRESS_REPORT: Duration = Duration::from_millis(100);
/// Segments that arrived before their manifest, kept (bounded) until it does.
const MAX_ORPHAN_BYTES: usize = 256 * 1024 * 1024;
