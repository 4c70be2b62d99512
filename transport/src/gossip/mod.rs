//! The control plane's wire formats, without I/O: what nodes gossip (heartbeats, content
//! announcements, signed operator commands, node certificates and revocations) and the
//! node-key-signed envelope every message travels in. The node's libp2p swarm carries them;
//! the decoders here face every byte a peer sends, so they are bounded, canonical and fuzzed
//! (`fuzz/fuzz_targets/gossip_*.rs`).

pub mod cert;
pub mod command;
pub mod envelope;
pub mod messages;
pub mod revocation;
mod roles;
mod wire;
