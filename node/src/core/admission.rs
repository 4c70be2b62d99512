//! Who may be a member: a node whose heartbeat carries a certificate that a key of
//! `trust.operators` signed for the very key that signed the heartbeat, valid now, and whose
//! claims (role, region, place, viewer address) that certificate allows.
//!
//! The same certificate admits a peer on the QUIC plane, presented in its first request
//! ([`Admission::present`]); [`Admission::admitted`] then answers for every later request, and
//! for the play reports the peer signs.
//!
//! A certificate's signature is checked once: verified certificates are remembered by the
//! BLAKE3 of their bytes (bounded), so a member's every heartbeat costs a hash and a lookup,
//! not a signature check. The validity period is checked at every use (a certificate can
//! expire while its holder runs).

use std::collections::HashMap;
use std::sync::Arc;

use mhc_clock::Clock;
use mhc_transport::gossip::cert::{CertificateError, SignedCertificate};
use mhc_transport::gossip::messages::Heartbeat;
use parking_lot::Mutex;

/// Verified certificates remembered; beyond it the memory starts over (members re-verify once).
const MAX_VERIFIED: usize = 4096;
/// Admitted node keys remembered; beyond it the memory starts over (peers present again).
const MAX_ADMITTED: usize = 4096;

/// Why a heartbeat does not make its sender a member.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It carries no certificate.
    #[error("not enrolled (no certificate)")]
    NotEnrolled,
    /// Its certificate is not accepted.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// It claims what its certificate does not allow (the field named).
    #[error("claims a {0} its certificate does not allow")]
    Claim(&'static str),
}

impl Refusal {
    /// Metric label (`mhc_gossip_rejected_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotEnrolled => "not_enrolled",
            Refusal::Certificate(_) => "certificate",
            Refusal::Claim(_) => "claim",
        }
    }
}

/// The admission rules of one node: its operators, its clock, what it verified already.
#[derive(Debug)]
pub struct Admission {
    operators: Vec<[u8; 32]>,
    clock: Clock,
    verified: Mutex<HashMap<[u8; 32], Arc<SignedCertificate>>>,
    /// Node keys that presented an accepted certificate (in a heartbeat or a QUIC hello).
    admitted: Mutex<HashMap<[u8; 32], Arc<SignedCertificate>>>,
}

impl Admission {
    /// Members are certified by one of `operators`, as of `clock`.
    pub fn new(operators: Vec<[u8; 32]>, clock: Clock) -> Self {
        Self {
            operators,
            clock,
            verified: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// Admits `node` on the certificate it presents (`encoded`), for its later requests.
    ///
    /// # Errors
    /// As [`Admission::certificate`].
    pub fn present(
        &self,
        node: &[u8; 32],
        encoded: &[u8],
    ) -> Result<Arc<SignedCertificate>, Refusal> {
        let cert = self.certificate(node, encoded)?;
        self.remember(node, &cert);
        Ok(cert)
    }

    /// The certificate `node` was admitted on, while it is valid.
    pub fn admitted(&self, node: &[u8; 32]) -> Option<Arc<SignedCertificate>> {
        let cert = self.admitted.lock().get(node).cloned()?;
        let now = self.clock.now_ms();
        let c = &cert.certificate;
        (c.not_before_ms <= now && now < c.not_after_ms).then_some(cert)
    }

    fn remember(&self, node: &[u8; 32], cert: &Arc<SignedCertificate>) {
        let mut admitted = self.admitted.lock();
        if admitted
            .get(node)
            .is_some_and(|known| Arc::ptr_eq(known, cert))
        {
            return;
        }
        if admitted.len() >= MAX_ADMITTED {
            admitted.clear();
        }
        admitted.insert(*node, Arc::clone(cert));
    }

    /// The certificate `encoded`, if a trusted operator signed it for `node` and it is valid
    /// now.
    ///
    /// # Errors
    /// [`Refusal::NotEnrolled`] for none, [`Refusal::Certificate`] for one not accepted.
    pub fn certificate(
        &self,
        node: &[u8; 32],
        encoded: &[u8],
    ) -> Result<Arc<SignedCertificate>, Refusal> {
        if encoded.is_empty() {
            return Err(Refusal::NotEnrolled);
        }
        let now = self.clock.now_ms();
        let id = *blake3::hash(encoded).as_bytes();
        let known = self.verified.lock().get(&id).cloned();
        let cert = match known {
            Some(cert) => cert,
            None => {
                let cert = SignedCertificate::decode(encoded)?;
                cert.verify(&self.operators, now)?;
                let cert = Arc::new(cert);
                let mut verified = self.verified.lock();
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(id, Arc::clone(&cert));
                cert
            }
        };
        let c = &cert.certificate;
        if &c.node != node {
            return Err(CertificateError::WrongNode.into());
        }
        if now < c.not_before_ms {
            return Err(CertificateError::NotYetValid(c.not_before_ms).into());
        }
        if now >= c.not_after_ms {
            return Err(CertificateError::Expired(c.not_after_ms).into());
        }
        Ok(cert)
    }

    /// Whether the heartbeat `hb`, signed by `node`, makes its sender a member: its certificate
    /// is accepted and allows everything the heartbeat claims.
    ///
    /// # Errors
    /// [`Refusal`], naming what is wrong.
    pub fn admit(
        &self,
        node: &[u8; 32],
        hb: &Heartbeat,
    ) -> Result<Arc<SignedCertificate>, Refusal> {
        let cert = self.certificate(node, &hb.certificate)?;
        let c = &cert.certificate;
        if hb.role != c.role {
            return Err(Refusal::Claim("role"));
        }
        if hb.region != c.region {
            return Err(Refusal::Claim("region"));
        }
        match (c.area, hb.location) {
            (Some(area), Some(place)) if !area.contains(place) => {
                return Err(Refusal::Claim("location"))
            }
            (None, Some(_)) => return Err(Refusal::Claim("location")),
            _ => {}
        }
        if !hb.addrs.http.is_empty() && !c.allows_http(&hb.addrs.http) {
            return Err(Refusal::Claim("viewer address"));
        }
        self.remember(node, &cert);
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use mhc_clock::ManualClock;
    use mhc_transport::gossip::cert::{Area, NodeCertificate};
    use mhc_transport::gossip::messages::WireRole;

    use super::*;
    use crate::control::fixtures::heartbeat;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn enrolled(hb: &mut Heartbeat, node: &SigningKey, operator: &SigningKey) {
        let cert = NodeCertificate {
            node: node.verifying_key().to_bytes(),
            role: WireRole::Edge,
            region: "eu-west".into(),
            area: Some(Area {
                lat: 52.37,
                lon: 4.9,
                radius_km: 25.0,
            }),
            http: vec!["10.0.0.1".into()],
            not_before_ms: 1_000,
            not_after_ms: 10_000,
            serial: 1,
            operator: [0; 32],
        };
        hb.certificate = SignedCertificate::sign(cert, operator).encode();
    }

    #[test]
    fn members_are_believed_only_as_far_as_their_certificate_allows() {
        let clock = ManualClock::new(5_000);
        let admission = Admission::new(vec![key(9).verifying_key().to_bytes()], clock.clock());
        let node = key(1).verifying_key().to_bytes();
        let mut hb = heartbeat();
        assert_eq!(
            admission.admit(&node, &hb).unwrap_err(),
            Refusal::NotEnrolled
        );
        enrolled(&mut hb, &key(1), &key(9));
        admission.admit(&node, &hb).unwrap();

        // Another key presenting it, or a certificate from an untrusted operator.
        let other = key(2).verifying_key().to_bytes();
        assert_eq!(
            admission.admit(&other, &hb).unwrap_err(),
            Refusal::Certificate(CertificateError::WrongNode)
        );
        let mut untrusted = heartbeat();
        enrolled(&mut untrusted, &key(1), &key(8));
        assert!(matches!(
            admission.admit(&node, &untrusted),
            Err(Refusal::Certificate(CertificateError::UnknownOperator(_)))
        ));

        // Claims beyond the certificate.
        type Lie = fn(&mut Heartbeat);
        let claims: [(&str, Lie); 4] = [
            ("role", |h| h.role = WireRole::Origin),
            ("region", |h| h.region = "us-east".into()),
            ("location", |h| h.location = Some((40.7, -74.0))),
            ("viewer address", |h| h.addrs.http = "203.0.113.9:80".into()),
        ];
        for (what, lie) in claims {
            let mut h = hb.clone();
            lie(&mut h);
            assert_eq!(
                admission.admit(&node, &h).unwrap_err(),
                Refusal::Claim(what)
            );
        }

        // Validity is judged at every heartbeat, also for a certificate verified before.
        clock.set_ms(10_000);
        assert_eq!(
            admission.admit(&node, &hb).unwrap_err(),
            Refusal::Certificate(CertificateError::Expired(10_000))
        );
    }
}
