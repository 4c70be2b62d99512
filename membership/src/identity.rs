//! What a member is known by in the membership protocol.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A member: its node key (the peer identity every plane pins), where its membership messages
/// go, and its generation. Two identities with one key are one member: the higher generation
/// is the current one (a restart, or a rejoin after being declared down, raises it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The node's ed25519 public key.
    pub key: [u8; 32],
    /// Where its membership messages are sent.
    pub addr: SocketAddr,
    /// Raised on every restart and rejoin.
    pub generation: u64,
}

impl foca::Identity for MemberId {
    /// A member is its key: a new address or generation replaces the old identity.
    type Addr = [u8; 32];

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> [u8; 32] {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn a_renewed_identity_is_the_same_member_and_wins() {
        let id = MemberId {
            key: [1; 32],
            addr: "127.0.0.1:7000".parse().unwrap(),
            generation: 5,
        };
        let renewed = id.renew().unwrap();
        assert_eq!(renewed.addr(), id.addr());
        assert_eq!(renewed.generation, 6);
        assert!(renewed.win_addr_conflict(&id));
        assert!(!id.win_addr_conflict(&renewed));
    }
}
