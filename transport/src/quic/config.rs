//! quinn endpoint configurations: a node's TLS identity (from [`crate::identity`]) with the
//! transport limits of [`QuicLimits`].

use std::sync::Arc;

use libp2p_identity::PeerId;

use super::QuicLimits;
use crate::identity::{IdentityError, NodeIdentity};

/// The quinn server configuration of `identity` with `limits` applied.
pub(crate) fn node_server_config(
    identity: &NodeIdentity,
    limits: &QuicLimits,
) -> Result<quinn::ServerConfig, IdentityError> {
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(identity.server_crypto()?));
    config.transport_config(Arc::new(limits.server_transport()));
    Ok(config)
}

/// The quinn client configuration of `identity`, pinned to `expected` if given, with `limits`
/// applied.
pub(crate) fn node_client_config(
    identity: &NodeIdentity,
    expected: Option<PeerId>,
    limits: &QuicLimits,
) -> Result<quinn::ClientConfig, IdentityError> {
    let mut config = quinn::ClientConfig::new(Arc::new(identity.client_crypto(expected)?));
    config.transport_config(Arc::new(limits.client_transport()));
    Ok(config)
}

/// The quinn server configuration of the node whose ed25519 seed is `seed`.
///
/// TLS 1.3 only, ALPN [`ALPN`](crate::ALPN), a client certificate is required and must be a
/// node certificate (any node: check [`peer_id_of`](crate::peer_id_of) against your membership
/// table). Transport limits come from `limits` (streams per connection, idle timeout,
/// keep-alive).
///
/// # Errors
///
/// [`IdentityError`] if rcgen or rustls reject the key; not expected for any 32-byte seed.
pub fn server_config(
    seed: &[u8; 32],
    limits: &QuicLimits,
) -> Result<quinn::ServerConfig, IdentityError> {
    node_server_config(&NodeIdentity::from_seed(seed)?, limits)
}

/// The quinn client configuration of the node whose ed25519 seed is `seed`.
///
/// With `expected = Some(id)` the handshake fails unless the server proves the key of `id`;
/// with `None` any node is accepted and [`peer_id_of`](crate::peer_id_of) tells which one
/// answered. Transport settings are [`QuicLimits::default`].
///
/// # Errors
///
/// [`IdentityError`] if rcgen or rustls reject the key; not expected for any 32-byte seed.
pub fn client_config(
    seed: &[u8; 32],
    expected: Option<PeerId>,
) -> Result<quinn::ClientConfig, IdentityError> {
    node_client_config(
        &NodeIdentity::from_seed(seed)?,
        expected,
        &QuicLimits::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libp2p_peer_id(seed: [u8; 32]) -> PeerId {
        let mut seed = seed;
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed)
            .expect("any 32 bytes are an ed25519 seed")
            .public()
            .to_peer_id()
    }

    #[test]
    fn configs_build_without_a_process_provider() -> Result<(), IdentityError> {
        // The point is that nothing here calls `builder()`; this would panic in this tree.
        server_config(&[9; 32], &QuicLimits::default())?;
        client_config(&[9; 32], None)?;
        client_config(&[9; 32], Some(libp2p_peer_id([8; 32])))?;
        Ok(())
    }
}
