//! Signed operator commands (emergency mode on and off), their wire form and their checks.
//!
//! A command is signed by an operator key (`mhc-node operator-keygen`) over the domain tag
//! `mhc-emergency-v1` and the postcard encoding of the command. A node obeys it only if the
//! signer is in `trust.operators`, the signature holds, its sequence number is above the last
//! one applied (persisted, so a replay does nothing even after a restart) and at most
//! [`MAX_SEQ_AHEAD`] ahead of the node's clock in milliseconds (the CLI's default sequence is
//! the time of signing; a command numbered `u64::MAX` would block every later one, deactivation
//! included), it was issued within
//! ±[`MAX_CLOCK_SKEW`] of the node's clock, and it is at most [`MAX_COMMAND_BYTES`] long. The
//! signature is the authority, not the sender: the same bytes arrive by gossip, by
//! `POST /v1/emergency`, by the admin socket or from the satellite, and are judged the same.

use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain tag of command signatures.
const SIGNATURE_TAG: &[u8] = b"mhc-emergency-v1";
/// Format byte of encoded commands.
const FORMAT: u8 = 1;
/// Largest encoded command accepted. A reason of [`MAX_REASON_BYTES`] and
/// [`MAX_ESSENTIAL`] ids of 64 bytes fit in about 6 KiB.
pub const MAX_COMMAND_BYTES: usize = 8 * 1024;
/// Longest reason text.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most essential content ids in one command.
pub const MAX_ESSENTIAL: usize = 64;
/// How far a command's issue time may be from the node's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);
/// How far above the node's clock, read as milliseconds since the epoch, a sequence number
/// may be.
pub const MAX_SEQ_AHEAD: Duration = Duration::from_secs(600);

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Enter emergency mode.
    Activate {
        /// Why, for operators and viewers.
        reason: String,
        /// Content ids mesh nodes replicate and the uplink broadcasts.
        essential: Vec<String>,
    },
    /// Back to normal mode.
    Deactivate,
}

/// An operator command (what is signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// What to do.
    pub action: Action,
    /// Must exceed the last sequence number a node applied.
    pub seq: u64,
    /// When the operator issued it, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// The operator's public key.
    pub operator: [u8; 32],
}

/// A command with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand {
    /// The command.
    pub command: Command,
    /// ed25519 signature over the tag and the command's postcard encoding.
    pub signature: Vec<u8>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Larger than [`MAX_COMMAND_BYTES`] or with oversized fields.
    #[error("command too large ({0})")]
    TooLarge(String),
    /// Not a command of this format.
    #[error("malformed command: {0}")]
    Malformed(String),
    /// The signer is not in `trust.operators`.
    #[error("signer {0} is not a trusted operator")]
    UnknownOperator(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Sequence number not above the last applied one.
    #[error("sequence {seq} is not above the last applied {last} (replay or stale)")]
    Stale {
        /// The command's.
        seq: u64,
        /// The node's.
        last: u64,
    },
    /// Issued too far from the node's clock.
    #[error("issued {skew_s} s away from this node's clock (limit 300 s)")]
    Clock {
        /// Signed difference, seconds.
        skew_s: i64,
    },
    /// A sequence number beyond the node's clock (in milliseconds) plus [`MAX_SEQ_AHEAD`]:
    /// it would block every later command.
    #[error("sequence {seq} is above this node's clock + 10 minutes ({limit} ms since the epoch)")]
    SeqAhead {
        /// The command's.
        seq: u64,
        /// The highest the node accepts now.
        limit: u64,
    },
}

impl Rejected {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::TooLarge(_) => "too_large",
            Rejected::Malformed(_) => "malformed",
            Rejected::UnknownOperator(_) => "unknown_operator",
            Rejected::BadSignature => "bad_signature",
            Rejected::Stale { .. } => "stale",
            Rejected::Clock { .. } => "clock",
            Rejected::SeqAhead { .. } => "seq_ahead",
        }
    }
}

fn signed_bytes(command: &Command) -> Vec<u8> {
    let mut msg = SIGNATURE_TAG.to_vec();
    msg.extend(postcard::to_allocvec(command).expect("commands serialise"));
    msg
}

impl SignedCommand {
    /// Signs `action` with the operator key.
    pub fn sign(action: Action, seq: u64, issued_at_ms: u64, key: &SigningKey) -> Self {
        let command = Command {
            action,
            seq,
            issued_at_ms,
            operator: key.verifying_key().to_bytes(),
        };
        let signature = key.sign(&signed_bytes(&command)).to_bytes().to_vec();
        Self { command, signature }
    }

    /// The wire form: a format byte and the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        out.extend(postcard::to_allocvec(self).expect("commands serialise"));
        out
    }

    /// Decodes the wire form, bounded and canonical.
    ///
    /// # Errors
    /// [`Rejected::TooLarge`] or [`Rejected::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Rejected> {
        if bytes.len() > MAX_COMMAND_BYTES {
            return Err(Rejected::TooLarge(format!("{} bytes", bytes.len())));
        }
        let Some((&format, body)) = bytes.split_first() else {
            return Err(Rejected::Malformed("empty".into()));
        };
        if format != FORMAT {
            return Err(Rejected::Malformed(format!("unknown format {format}")));
        }
        let (signed, rest): (SignedCommand, _) =
            postcard::take_from_bytes(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Rejected::Malformed("trailing bytes".into()));
        }
        if let Action::Activate { reason, essential } = &signed.command.action {
            if reason.len() > MAX_REASON_BYTES {
                return Err(Rejected::TooLarge("reason".into()));
            }
            if essential.len() > MAX_ESSENTIAL || essential.iter().any(|e| e.len() > 64) {
                return Err(Rejected::TooLarge("essential".into()));
            }
        }
        Ok(signed)
    }

    /// Checks signer, signature and clock (not the sequence, which needs the node's state).
    ///
    /// # Errors
    /// [`Rejected`].
    pub fn verify(&self, operators: &[[u8; 32]], now_ms: u64) -> Result<(), Rejected> {
        let c = &self.command;
        if !operators.contains(&c.operator) {
            return Err(Rejected::UnknownOperator(hex::encode(c.operator)));
        }
        let key = VerifyingKey::from_bytes(&c.operator).map_err(|_| Rejected::BadSignature)?;
        let sig = Signature::from_slice(&self.signature).map_err(|_| Rejected::BadSignature)?;
        key.verify(&signed_bytes(c), &sig)
            .map_err(|_| Rejected::BadSignature)?;
        let limit = now_ms.saturating_add(MAX_SEQ_AHEAD.as_millis() as u64);
        if c.seq > limit {
            return Err(Rejected::SeqAhead { seq: c.seq, limit });
        }
        let skew_ms = c.issued_at_ms as i128 - now_ms as i128;
        if skew_ms.unsigned_abs() > MAX_CLOCK_SKEW.as_millis() {
            return Err(Rejected::Clock {
                skew_s: (skew_ms / 1000) as i64,
            });
        }
        Ok(())
    }

    /// Whether this command puts nodes in emergency mode.
    pub fn is_emergency(&self) -> bool {
        matches!(self.command.action, Action::Activate { .. })
    }
}
