//! TLS identity of a node on the QUIC data plane: the node's ed25519 key *is* the TLS key.
//!
//! Each node presents a self-signed X.509 certificate whose SubjectPublicKeyInfo is its own
//! ed25519 public key, so the libp2p [`PeerId`] of a connection's peer follows from the
//! certificate alone and is the same id as on the gossip plane. TLS 1.3's CertificateVerify
//! proves the peer holds the private key of that certificate, which is all the verifiers need:
//! there is no CA, no name and no validity period to check.
//!
//! Both sides present a certificate (mutual TLS). The client may pin the server's [`PeerId`];
//! the server accepts any node and reports the client's id, leaving admission to the caller
//! (membership table, allow-lists).
//!
//! Every rustls builder here is given the *ring* provider explicitly: this dependency tree
//! enables both ring and aws-lc-rs, so rustls cannot pick a process default and its
//! `builder()` would panic.

use std::sync::Arc;

use libp2p_identity::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, PeerIncompatible, SignatureScheme,
};

use crate::proto::ALPN;

/// DER of a PKCS#8 v1 `PrivateKeyInfo` for an ed25519 key (RFC 8410), up to the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER of an ed25519 `SubjectPublicKeyInfo` (RFC 8410), up to the 32-byte public key.
const SPKI_ED25519_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Subject alternative name in every node certificate. Nobody checks it (the key is the
/// identity), but X.509 wants a subject and rustls a server name to connect to.
pub(crate) const CERT_NAME: &str = "mhc";

/// Why a TLS identity could not be built or a peer's identity could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// rcgen could not turn the seed into a key pair or sign the certificate.
    #[error("cannot build a certificate from the node key: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the certificate, key or protocol settings.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The crypto provider lacks the AES-128-GCM TLS 1.3 suite that QUIC's initial packets use.
    #[error("TLS provider unusable for QUIC: {0}")]
    NoInitialCipherSuite(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The connection has no peer certificate (handshake incomplete, or not a rustls session).
    #[error("the connection has no peer certificate")]
    NoPeerCertificate,
    /// The peer's certificate is not a node certificate.
    #[error("not a node certificate: {0}")]
    NotNodeCertificate(&'static str),
}

/// A node's certificate and key, built once and reused for every connection.
#[derive(Debug)]
pub(crate) struct NodeIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    peer_id: PeerId,
}

impl NodeIdentity {
    /// Builds the self-signed certificate for the ed25519 key with this 32-byte seed.
    pub(crate) fn from_seed(seed: &[u8; 32]) -> Result<Self, IdentityError> {
        let mut der = Vec::with_capacity(PKCS8_ED25519_PREFIX.len() + seed.len());
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(seed);
        let key = PrivatePkcs8KeyDer::from(der);
        let key_pair = rcgen::KeyPair::try_from(&key)?;
        let cert = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])?
            .self_signed(&key_pair)?
            .der()
            .clone();
        let peer_id = peer_id_from_cert(&cert)?;
        Ok(Self { cert, key, peer_id })
    }

    /// The [`PeerId`] this identity presents.
    pub(crate) fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// rustls server configuration: TLS 1.3 only, client certificate required, no resumption.
    fn rustls_server(&self) -> Result<rustls::ServerConfig, IdentityError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(NodeClientVerifier::new()))
            .with_single_cert(vec![self.cert.clone()], self.private_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // No tickets: clients do not resume (see `rustls_client`), so they would be wasted.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(config)
    }

    /// rustls client configuration: TLS 1.3 only, our certificate, optional server pin.
    fn rustls_client(
        &self,
        expected: Option<PeerId>,
    ) -> Result<rustls::ClientConfig, IdentityError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NodeServerVerifier::new(expected)))
            .with_client_auth_cert(vec![self.cert.clone()], self.private_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // A resumed TLS 1.3 session skips the certificate verifier. Every node is reached under
        // the same server name, so a ticket from node A could be offered to an address
        // pinned to node B, and a malicious A answering there would pass as B. Full handshakes
        // only; they cost one signature and no round trip.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The QUIC server crypto: [`Self::rustls_server`] for quinn.
    pub(crate) fn server_crypto(
        &self,
    ) -> Result<quinn::crypto::rustls::QuicServerConfig, IdentityError> {
        Ok(quinn::crypto::rustls::QuicServerConfig::try_from(
            self.rustls_server()?,
        )?)
    }

    /// The QUIC client crypto: [`Self::rustls_client`] for quinn.
    pub(crate) fn client_crypto(
        &self,
        expected: Option<PeerId>,
    ) -> Result<quinn::crypto::rustls::QuicClientConfig, IdentityError> {
        Ok(quinn::crypto::rustls::QuicClientConfig::try_from(
            self.rustls_client(expected)?,
        )?)
    }
}

/// The [`PeerId`] of the other end of an established connection, from its certificate.
///
/// # Errors
///
/// [`IdentityError::NoPeerCertificate`] before the handshake completed or for a connection not
/// made with [`server_config`](crate::server_config) / [`client_config`](crate::client_config);
/// [`IdentityError::NotNodeCertificate`] if the
/// certificate does not hold an ed25519 key (impossible once the verifiers here accepted it).
pub fn peer_id_of(conn: &quinn::Connection) -> Result<PeerId, IdentityError> {
    let identity = conn
        .peer_identity()
        .ok_or(IdentityError::NoPeerCertificate)?;
    let certs = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| IdentityError::NoPeerCertificate)?;
    match certs.as_slice() {
        [cert] => peer_id_from_cert(cert),
        [] => Err(IdentityError::NoPeerCertificate),
        _ => Err(IdentityError::NotNodeCertificate(
            "more than one certificate",
        )),
    }
}

/// The [`PeerId`] of the ed25519 key in a certificate.
fn peer_id_from_cert(cert: &CertificateDer<'_>) -> Result<PeerId, IdentityError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|_| IdentityError::NotNodeCertificate("unparsable X.509"))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(SPKI_ED25519_PREFIX.as_slice())
        .filter(|key| key.len() == 32)
        .ok_or(IdentityError::NotNodeCertificate("key is not ed25519"))?;
    let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(key)
        .map_err(|_| IdentityError::NotNodeCertificate("invalid ed25519 point"))?;
    Ok(libp2p_identity::PublicKey::from(key).to_peer_id())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks one certificate chain and returns the peer's id; shared by both verifiers.
///
/// Only the shape is checked (one certificate, an ed25519 key). Its self-signature and
/// validity dates are not: the TLS 1.3 CertificateVerify, checked in
/// [`verify_signature`], already proves the peer holds that key, and node clocks may be wrong
/// (receive-only satellite sites), which must not break the data plane.
fn verify_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<PeerId, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
    }
    peer_id_from_cert(end_entity).map_err(|err| {
        tracing::debug!(err = %err, "rejecting peer certificate");
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
    })
}

/// TLS 1.3 handshake signature check, restricted to ed25519.
fn verify_signature(
    algorithms: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

/// Client side: accepts a node certificate, optionally only that of one [`PeerId`].
#[derive(Debug)]
struct NodeServerVerifier {
    expected: Option<PeerId>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl NodeServerVerifier {
    fn new(expected: Option<PeerId>) -> Self {
        Self {
            expected,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = verify_chain(end_entity, intermediates)?;
        match self.expected {
            Some(expected) if expected != peer => {
                tracing::debug!(%peer, %expected, "server is not the pinned peer");
                // Maps to the `access_denied` alert, which the client side of `QuicClient`
                // recognises to report `QuicError::WrongPeer`.
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the config allows TLS 1.3 only (QUIC requires it anyway).
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Server side: requires a client certificate and accepts any node certificate.
#[derive(Debug)]
struct NodeClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NodeClientVerifier {
    fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Self-signed certificates have no CA to hint at.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_chain(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algorithms, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
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
    fn certificate_key_is_the_node_key() -> Result<(), IdentityError> {
        for seed in [[0u8; 32], [7u8; 32], [0xff; 32]] {
            let identity = NodeIdentity::from_seed(&seed)?;
            assert_eq!(identity.peer_id(), libp2p_peer_id(seed));
        }
        Ok(())
    }

    #[test]
    fn certificate_spki_is_the_raw_ed25519_layout() -> Result<(), Box<dyn std::error::Error>> {
        let identity = NodeIdentity::from_seed(&[3; 32])?;
        let parsed = rustls::server::ParsedCertificate::try_from(&identity.cert)?;
        let spki = parsed.subject_public_key_info();
        assert_eq!(spki.as_ref().len(), 44);
        assert!(spki.as_ref().starts_with(&SPKI_ED25519_PREFIX));
        Ok(())
    }

    #[test]
    fn verifier_pins_and_rejects_foreign_keys() -> Result<(), Box<dyn std::error::Error>> {
        let a = NodeIdentity::from_seed(&[1; 32])?;
        let b = NodeIdentity::from_seed(&[2; 32])?;
        let name = ServerName::try_from(CERT_NAME)?;
        let now = UnixTime::now();

        let pinned_b = NodeServerVerifier::new(Some(b.peer_id()));
        assert!(pinned_b
            .verify_server_cert(&b.cert, &[], &name, &[], now)
            .is_ok());
        assert_eq!(
            pinned_b
                .verify_server_cert(&a.cert, &[], &name, &[], now)
                .err(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure
            ))
        );
        let any = NodeServerVerifier::new(None);
        assert!(any
            .verify_server_cert(&a.cert, &[], &name, &[], now)
            .is_ok());
        // A chain is not a node certificate.
        assert!(any
            .verify_server_cert(&a.cert, std::slice::from_ref(&b.cert), &name, &[], now)
            .is_err());

        // A P-256 certificate (what libp2p-tls or a web server would present).
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let foreign = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])?
            .self_signed(&p256)?
            .der()
            .clone();
        assert!(any
            .verify_server_cert(&foreign, &[], &name, &[], now)
            .is_err());
        assert!(NodeClientVerifier::new()
            .verify_client_cert(&foreign, &[], now)
            .is_err());
        assert!(NodeClientVerifier::new()
            .verify_client_cert(&a.cert, &[], now)
            .is_ok());
        // Garbage bytes.
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(any.verify_server_cert(&junk, &[], &name, &[], now).is_err());
        Ok(())
    }
}
