//! What a node does, by role and mode: the one place every role × mode question is answered.
//!
//! A node's behaviour depends on three facts: its configured [`Role`], the [`Mode`] the last
//! operator command left it in, and whether it receives the satellite downlink. [`RolePolicy`]
//! holds the three and answers every question the planes ask ("do I serve viewers now?", "do I
//! fill from parents?", "do I evict?"), so the rule for each lives here once. The same policy
//! judges other members for routing, from what their heartbeats say.
//!
//! The table (ARCHITECTURE.md, "Roles" and "Modes"):
//!
//! | question | origin | edge | mesh | satellite-uplink |
//! |---|---|---|---|---|
//! | serves viewers, normal mode | yes | yes | yes | no |
//! | serves viewers, emergency mode | downlink receivers only | downlink receivers only | yes | no |
//! | fills missing content from parents (QUIC) | no | yes | yes | yes |
//! | asks parents for newer manifests | no | yes | no | yes |
//! | is routed to for content it lacks | no | normal mode | no | no |
//! | evicts cached content | no | yes | yes | yes |
//! | ingests and signs content, runs the plugins | yes | no | no | no |
//! | counts and reports plays | yes | yes | yes | no |
//! | replicates over the mesh | no | no | yes | yes (what it carries) |
//! | sends the broadcast carousel | no | no | no | yes |

use std::fmt;

use mhc_config::Role;
pub use mhc_transport::gossip::messages::Mode;
use mhc_transport::gossip::messages::WireRole;

/// The configured role a heartbeat's wire role names.
pub fn role_of(wire: WireRole) -> Role {
    match wire {
        WireRole::Origin => Role::Origin,
        WireRole::Edge => Role::Edge,
        WireRole::Mesh => Role::Mesh,
        WireRole::SatelliteUplink => Role::SatelliteUplink,
    }
}

/// A configured role as heartbeats carry it.
pub fn wire_role(role: Role) -> WireRole {
    match role {
        Role::Origin => WireRole::Origin,
        Role::Edge => WireRole::Edge,
        Role::Mesh => WireRole::Mesh,
        Role::SatelliteUplink => WireRole::SatelliteUplink,
    }
}

/// A role that does not serve viewers in a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotServing {
    /// The role.
    pub role: Role,
    /// The mode.
    pub mode: Mode,
}

impl fmt::Display for NotServing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::SatelliteUplink => f.write_str("role satellite-uplink does not serve viewers"),
            role => write!(
                f,
                "role {} does not serve viewers in {} mode",
                role.as_str(),
                self.mode.as_str()
            ),
        }
    }
}

/// Role, mode and downlink of one node: the answers to every role × mode question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolePolicy {
    /// The configured role.
    pub role: Role,
    /// The current mode.
    pub mode: Mode,
    /// Whether the node receives the satellite downlink (it then holds what the sky brought,
    /// like a mesh node).
    pub receiver: bool,
}

impl RolePolicy {
    /// The policy of a node in `role` and `mode`, receiving the downlink or not.
    pub fn new(role: Role, mode: Mode, receiver: bool) -> Self {
        Self {
            role,
            mode,
            receiver,
        }
    }

    /// Whether this node serves viewers now.
    ///
    /// Normal mode: origin, edge and mesh serve, the satellite uplink never does (it feeds
    /// receivers). Emergency mode: origin and edge drop out, mesh nodes serve, and so does any
    /// node that receives the satellite downlink.
    ///
    /// # Errors
    /// [`NotServing`], which says why in words a viewer can read.
    pub fn serves_viewers(&self) -> Result<(), NotServing> {
        let serves = match (self.mode, self.role) {
            (_, Role::SatelliteUplink) => false,
            (Mode::Normal, Role::Origin | Role::Edge | Role::Mesh) => true,
            (Mode::Emergency, Role::Mesh) => true,
            (Mode::Emergency, Role::Origin | Role::Edge) => self.receiver,
        };
        if serves {
            Ok(())
        } else {
            Err(NotServing {
                role: self.role,
                mode: self.mode,
            })
        }
    }

    /// Whether content this node lacks is filled from parents over QUIC. An origin holds
    /// everything it publishes: a blob it lacks is lost, not missing.
    pub fn fills_from_parents(&self) -> bool {
        self.role != Role::Origin
    }

    /// Whether this node asks its parents if a manifest it holds has a newer version. A mesh
    /// node learns new versions by replicating them, an origin by publishing them.
    pub fn revalidates_with_parents(&self) -> bool {
        !matches!(self.role, Role::Origin | Role::Mesh)
    }

    /// Whether routing may send viewers here for content this node does not hold yet: an edge
    /// fills on demand, but not in emergency mode, when the hierarchy above it is off.
    pub fn routable_without_content(&self) -> bool {
        self.role == Role::Edge && self.mode == Mode::Normal
    }

    /// Whether cached content is evicted to stay within `cache.disk_gb`. An origin's blobs are
    /// the published content and are never evicted.
    pub fn evicts(&self) -> bool {
        self.role != Role::Origin
    }

    /// Whether this node ingests and signs content (and so also trusts its own signature).
    pub fn publishes(&self) -> bool {
        self.role == Role::Origin
    }

    /// Whether this node runs the origin plugins and keeps the play-report inbox.
    pub fn runs_plugins(&self) -> bool {
        self.role == Role::Origin
    }

    /// Whether this node counts what it serves and reports plays to an origin.
    pub fn reports_plays(&self) -> bool {
        self.role != Role::SatelliteUplink
    }

    /// Whether this node replicates whole contents over the mesh (pinned and essential ones).
    pub fn replicates(&self) -> bool {
        matches!(self.role, Role::Mesh | Role::SatelliteUplink)
    }

    /// Whether this node also replicates what its region plays most, and shares the work of
    /// replicating a content with the other mesh nodes doing so. The uplink carries what it is
    /// told to, not what is popular.
    pub fn replicates_popular(&self) -> bool {
        self.role == Role::Mesh
    }

    /// Whether this node sends the broadcast carousel.
    pub fn sends_broadcast(&self) -> bool {
        self.role == Role::SatelliteUplink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serves_viewers(role: Role, mode: Mode, receiver: bool) -> Result<(), NotServing> {
        RolePolicy::new(role, mode, receiver).serves_viewers()
    }

    #[test]
    fn the_mode_filter() {
        use Mode::{Emergency, Normal};
        use Role::{Edge, Mesh, Origin, SatelliteUplink};
        for role in [Origin, Edge, Mesh] {
            assert!(serves_viewers(role, Normal, false).is_ok());
        }
        assert!(serves_viewers(SatelliteUplink, Normal, false).is_err());
        assert!(serves_viewers(Mesh, Emergency, false).is_ok());
        for role in [Origin, Edge, SatelliteUplink] {
            assert!(serves_viewers(role, Emergency, false).is_err());
        }
        // A downlink receiver serves in emergency mode whatever its role, but an uplink never.
        assert!(serves_viewers(Edge, Emergency, true).is_ok());
        assert!(serves_viewers(SatelliteUplink, Emergency, true).is_err());
        assert_eq!(
            serves_viewers(Edge, Emergency, false)
                .unwrap_err()
                .to_string(),
            "role edge does not serve viewers in emergency mode"
        );
    }

    #[test]
    fn wire_roles_name_the_configured_roles_both_ways() {
        for role in Role::ALL {
            assert_eq!(role_of(wire_role(role)), role);
            assert_eq!(wire_role(role).as_str(), role.as_str());
        }
    }

    #[test]
    fn only_an_origin_publishes_and_never_fills_or_evicts() {
        for role in Role::ALL {
            let p = RolePolicy::new(role, Mode::Normal, false);
            let origin = role == Role::Origin;
            assert_eq!(p.publishes(), origin);
            assert_eq!(p.runs_plugins(), origin);
            assert_eq!(p.fills_from_parents(), !origin);
            assert_eq!(p.evicts(), !origin);
        }
    }

    #[test]
    fn only_edges_are_routed_to_for_content_they_lack_and_not_in_emergency_mode() {
        for role in Role::ALL {
            assert_eq!(
                RolePolicy::new(role, Mode::Normal, false).routable_without_content(),
                role == Role::Edge
            );
            assert!(!RolePolicy::new(role, Mode::Emergency, true).routable_without_content());
        }
    }
}
