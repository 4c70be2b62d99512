//! The protocol's timing.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use crate::suspicion::SuspicionTiming;

/// How often each member probes one other member.
pub const PROBE_PERIOD: Duration = Duration::from_millis(300);

/// How long a direct probe waits for its answer before asking others to try.
pub const PROBE_RTT: Duration = Duration::from_millis(120);

/// The protocol's timing: foca's settings and the suspicion's (which foca lacks).
#[derive(Debug, Clone)]
pub struct Timing {
    /// foca's settings.
    pub swim: foca::Config,
    /// How long a suspicion lasts before the member is declared down.
    pub suspicion: SuspicionTiming,
}

/// SWIM's timing for a cluster of about `cluster_size` members, after memberlist's LAN profile
/// (what Serf and Consul run) with a shorter probe period, so a failed member is found in
/// seconds: one probe per member per [`PROBE_PERIOD`] (a member's traffic does not depend on
/// the cluster's size), 3 indirect probes, Lifeguard's suspicion (see [`crate::suspicion`]):
/// `1.5 × log10(n)` probe periods (at least 0.5 s) once 2 other members confirmed, up to 6 times
/// that with no confirmation, so the suspect has time to hear of it and refute; updates
/// piggybacked on probes and gossiped to 3 members every 200 ms while there are any, each sent
/// `8 × log10(n + 1)` times by every member that holds it (a member that misses a "down" learns
/// it only when it probes the dead member itself, seconds later); every 10 s a member asks one
/// other for its view (anti-entropy, so one that was away catches up), and members held down
/// are asked every 10 s whether they are back (so the sides of a healed partition merge); one
/// declared down is told so and rejoins with a raised generation.
pub fn swim_config(cluster_size: usize) -> Timing {
    let n = cluster_size.max(2) as f64;
    let min = PROBE_PERIOD
        .mul_f64(1.5 * n.log10())
        .max(Duration::from_millis(500));
    let suspicion = SuspicionTiming {
        min,
        max: min * 6,
        confirmations: 2,
    };
    let transmissions = (8.0 * (n + 1.0).log10()).ceil().clamp(3.0, 30.0) as u8;
    let mut config = foca::Config::simple();
    config.probe_period = PROBE_PERIOD;
    config.probe_rtt = PROBE_RTT;
    config.num_indirect_probes = NonZeroUsize::new(3).expect("non-zero");
    config.max_transmissions = NonZeroU8::new(transmissions).expect("at least 3");
    // The longest a suspicion can last; [`crate::Agent`] fires foca's timer earlier.
    config.suspect_to_down_after = suspicion.max;
    config.notify_down_members = true;
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::new(3).expect("non-zero"),
    });
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(1).expect("non-zero"),
    });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(10),
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    Timing {
        swim: config,
        suspicion,
    }
}
