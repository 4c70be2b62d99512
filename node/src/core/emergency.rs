//! Emergency broadcast mode: the persisted mode that signed operator commands
//! ([`mhc_transport::gossip::command`]) put the node in.
//!
//! A node obeys a command only if the signer is in `trust.operators`, the signature holds, its
//! sequence number is above the last one applied (persisted, so a replay does nothing even
//! after a restart), it was issued within
//! ±[`MAX_CLOCK_SKEW`](mhc_transport::gossip::command::MAX_CLOCK_SKEW) of the node's clock, and it is at
//! most [`MAX_COMMAND_BYTES`] long. The signature is the authority, not the sender: the same
//! bytes arrive by gossip, by `POST /v1/emergency`, by the admin socket or from the satellite,
//! and are judged the same.

use anyhow::Context;
use mhc_clock::Clock;
pub use mhc_transport::gossip::command::{
    Action, Command, Rejected, SignedCommand, MAX_COMMAND_BYTES,
};
use parking_lot::{Mutex, RwLock};

/// sled tree of the emergency state.
const TREE: &str = "emergency";
/// Key of the last applied signed command.
const LAST_KEY: &[u8] = b"last";
/// Key of when it was applied (ms since the epoch, big-endian).
const SINCE_KEY: &[u8] = b"since_ms";

/// The node's emergency state as the last applied command left it.
#[derive(Debug, Clone, Default)]
pub struct EmergencyState {
    /// The last applied command, if any.
    pub last: Option<SignedCommand>,
    /// When it was applied here, ms since the epoch (0: never).
    pub since_ms: u64,
}

impl EmergencyState {
    /// Whether the node is in emergency mode.
    pub fn is_emergency(&self) -> bool {
        self.last.as_ref().is_some_and(SignedCommand::is_emergency)
    }

    /// The last applied sequence number (0: none).
    pub fn seq(&self) -> u64 {
        self.last.as_ref().map_or(0, |c| c.command.seq)
    }

    /// Essential content ids while in emergency mode.
    pub fn essential(&self) -> Vec<String> {
        match self.last.as_ref().map(|c| &c.command.action) {
            Some(Action::Activate { essential, .. }) => essential.clone(),
            _ => Vec::new(),
        }
    }

    /// The reason of the active emergency.
    pub fn reason(&self) -> Option<&str> {
        match self.last.as_ref().map(|c| &c.command.action) {
            Some(Action::Activate { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    /// The state as `/v1/cluster` and `mhc-node status` show it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "active": self.is_emergency(),
            "seq": self.seq(),
            "since_ms": self.since_ms,
            "reason": self.reason(),
            "essential": self.essential(),
            "command_hex": self.last.as_ref().map(|c| hex::encode(c.encode())),
        })
    }
}

/// The persisted emergency state of a node.
#[derive(Debug)]
pub struct Emergency {
    tree: sled::Tree,
    operators: Vec<[u8; 32]>,
    clock: Clock,
    state: RwLock<EmergencyState>,
    /// Held by [`Emergency::apply`] from its sequence check to its update.
    applying: Mutex<()>,
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The mode changed (or a newer command of the same mode was recorded).
    Applied {
        /// Emergency now.
        emergency: bool,
    },
}

impl Emergency {
    /// Loads the state from `db`. A stored command is re-checked for its signature (not its
    /// age: a restart hours later keeps the mode).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn open(db: &sled::Db, operators: Vec<[u8; 32]>, clock: Clock) -> anyhow::Result<Self> {
        let tree = db.open_tree(TREE).context("opening the emergency tree")?;
        let mut mode = EmergencyState::default();
        if let Some(bytes) = tree.get(LAST_KEY)? {
            match SignedCommand::decode(&bytes) {
                Ok(cmd) => {
                    mode.since_ms = tree
                        .get(SINCE_KEY)?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                        .map_or(0, u64::from_be_bytes);
                    mode.last = Some(cmd);
                }
                Err(err) => tracing::error!(error = %err, "stored emergency command unreadable"),
            }
        }
        Ok(Self {
            tree,
            operators,
            clock,
            state: RwLock::new(mode),
            applying: Mutex::new(()),
        })
    }

    /// The current state: the last applied command and when.
    pub fn state(&self) -> EmergencyState {
        self.state.read().clone()
    }

    /// Whether the node is in emergency mode now.
    pub fn is_emergency(&self) -> bool {
        self.state.read().is_emergency()
    }

    /// The sequence number of the last applied command (0: none).
    pub fn last_seq(&self) -> u64 {
        self.state.read().seq()
    }

    /// Verifies and applies an encoded command; durable before it returns.
    ///
    /// # Errors
    /// [`Rejected`] with the reason; nothing changes.
    pub fn apply(&self, bytes: &[u8]) -> Result<(Applied, SignedCommand), Rejected> {
        let cmd = SignedCommand::decode(bytes)?;
        cmd.verify(&self.operators, self.clock.now_ms())?;
        // One command at a time from the check to the update; readers of the mode (every
        // viewer request) wait for none of it but the update itself, not for the flush.
        let _applying = self.applying.lock();
        let last = self.last_seq();
        if cmd.command.seq <= last {
            return Err(Rejected::Stale {
                seq: cmd.command.seq,
                last,
            });
        }
        let since = self.clock.now_ms();
        let persisted = (|| {
            self.tree.insert(LAST_KEY, cmd.encode())?;
            self.tree.insert(SINCE_KEY, &since.to_be_bytes())?;
            super::flush(&self.tree)
        })();
        if let Err(err) = persisted {
            tracing::error!(error = %err, "persisting an emergency command failed; not applied");
            return Err(Rejected::Malformed(format!("could not persist: {err}")));
        }
        let mut mode = self.state.write();
        mode.last = Some(cmd.clone());
        mode.since_ms = since;
        drop(mode);
        Ok((
            Applied::Applied {
                emergency: cmd.is_emergency(),
            },
            cmd,
        ))
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    fn now_ms() -> u64 {
        Clock::system().now_ms()
    }

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn activate(seq: u64, k: &SigningKey) -> Vec<u8> {
        SignedCommand::sign(
            Action::Activate {
                reason: "storm".into(),
                essential: vec!["news".into()],
            },
            seq,
            now_ms(),
            k,
        )
        .encode()
    }

    fn open(dir: &std::path::Path) -> Emergency {
        let db = crate::core::test_db(dir);
        Emergency::open(
            &db,
            vec![key(1).verifying_key().to_bytes()],
            Clock::system(),
        )
        .unwrap()
    }

    #[test]
    fn applies_persists_and_refuses_replays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = open(dir.path());
            assert!(!e.is_emergency());
            e.apply(&activate(5, &key(1))).unwrap();
            assert!(e.is_emergency());
            assert_eq!(e.state().essential(), vec!["news".to_owned()]);
            assert!(matches!(
                e.apply(&activate(5, &key(1))),
                Err(Rejected::Stale { seq: 5, last: 5 })
            ));
        }
        let e = open(dir.path());
        assert!(e.is_emergency(), "the mode survives a restart");
        assert!(matches!(
            e.apply(&activate(4, &key(1))),
            Err(Rejected::Stale { .. })
        ));
        let off = SignedCommand::sign(Action::Deactivate, 6, now_ms(), &key(1)).encode();
        e.apply(&off).unwrap();
        assert!(!e.is_emergency());
    }

    #[test]
    fn a_sequence_far_ahead_of_the_clock_cannot_block_later_commands() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        for seq in [u64::MAX, now_ms() + 11 * 60 * 1000] {
            assert!(matches!(
                e.apply(&activate(seq, &key(1))),
                Err(Rejected::SeqAhead { .. })
            ));
        }
        assert_eq!(e.last_seq(), 0, "nothing applied");
        e.apply(&activate(now_ms() + 9 * 60 * 1000, &key(1)))
            .unwrap();
        assert!(e.is_emergency());
    }

    #[test]
    fn refuses_unknown_tampered_old_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(dir.path());
        assert!(matches!(
            e.apply(&activate(1, &key(2))),
            Err(Rejected::UnknownOperator(_))
        ));
        let mut tampered = activate(1, &key(1));
        let n = tampered.len();
        tampered[n - 70] ^= 1; // inside the command, before the signature
        assert!(e.apply(&tampered).is_err());
        let old = SignedCommand::sign(Action::Deactivate, 1, now_ms() - 600_000, &key(1));
        assert!(matches!(
            e.apply(&old.encode()),
            Err(Rejected::Clock { .. })
        ));
        assert!(matches!(
            e.apply(&vec![1u8; MAX_COMMAND_BYTES + 1]),
            Err(Rejected::TooLarge(_))
        ));
        let good = activate(1, &key(1));
        for i in 0..good.len() {
            let _ = SignedCommand::decode(&good[..i]);
            let mut flipped = good.clone();
            flipped[i] ^= 0xff;
            if let Ok(cmd) = SignedCommand::decode(&flipped) {
                // A flip that still decodes must fail verification.
                assert!(cmd
                    .verify(&[key(1).verifying_key().to_bytes()], now_ms())
                    .is_err());
            }
        }
        assert!(!e.is_emergency());
    }
}
