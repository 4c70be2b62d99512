//! SWIM membership for mhc: who is in the cluster and who has failed, with a per-node cost that
//! does not grow with the cluster (issue 22). Built on [`foca`], which is sans-I/O: it is handed
//! bytes and timer events and answers with bytes to send and timers to set, so the same code
//! runs over a socket in the node and over [`sim`], a deterministic simulated network.
//!
//! - [`MemberId`]: what a member is known by: its node key, the address its probes go to, and
//!   a generation that a restarted (or wrongly declared down) member raises to rejoin.
//! - [`Agent`]: one member, sans-I/O: foca with Lifeguard's suspicion ([`suspicion`]) on top.
//! - [`swim_config`]: the protocol's timing for a cluster of a given size.
//! - [`sim`]: many members in one process on a simulated clock and network (loss, delay,
//!   partitions), for tests and `swim-sim` figures.

mod agent;
mod config;
mod identity;
pub mod sim;
pub mod suspicion;

pub use agent::{addressed, Agent, AgentTimer, BadBroadcast, Error};
pub use config::{swim_config, Timing, PROBE_PERIOD, PROBE_RTT};
pub use foca::OwnedNotification;
pub use identity::MemberId;
