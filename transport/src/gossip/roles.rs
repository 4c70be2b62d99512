//! What a member is, as the wire carries it: its role and its serving mode.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The role a member claims, as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRole {
    /// Origin.
    Origin,
    /// Edge.
    Edge,
    /// Mesh.
    Mesh,
    /// Satellite uplink.
    SatelliteUplink,
}

impl WireRole {
    /// The role's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            WireRole::Origin => "origin",
            WireRole::Edge => "edge",
            WireRole::Mesh => "mesh",
            WireRole::SatelliteUplink => "satellite-uplink",
        }
    }
}

/// Serving mode, set by signed operator commands and carried in heartbeats (the variant order
/// is part of the wire format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// All roles serve.
    Normal,
    /// Emergency broadcast mode: the hierarchy steps aside, the mesh and the sky serve.
    Emergency,
}

impl Mode {
    /// The mode's name: `"normal"` or `"emergency"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Emergency => "emergency",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
