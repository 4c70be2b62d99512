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
//!
//! Revocations override certificates: a node key an operator revoked ([`Admission::revoke`],
//! persisted in the database, so also after restarts) is refused whatever it presents, and
//! forgotten as admitted at once.

use std::collections::HashMap;
use std::sync::Arc;

use mhc_clock::Clock;
use mhc_transport::gossip::cert::{CertificateError, SignedCertificate};
use mhc_transport::gossip::messages::Heartbeat;
use mhc_transport::gossip::revocation::{self, RevocationError, SignedRevocation};
use parking_lot::{Mutex, RwLock};

/// Verified certificates remembered; beyond it the memory starts over (members re-verify once).
const MAX_VERIFIED: usize = 4096;
/// Admitted node keys remembered; beyond it the memory starts over (peers present again).
const MAX_ADMITTED: usize = 4096;
/// Most revoked node keys kept. Only trusted operators add to the list; beyond it a new
/// revocation is refused loudly (an operator then runs the cluster on a new operator key).
pub const MAX_REVOCATIONS: usize = 4096;
/// sled tree of the revocations, by node key.
const REVOCATIONS_TREE: &str = "revocations";

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
    /// An operator revoked its key.
    #[error("its key was revoked by an operator")]
    Revoked,
}

impl Refusal {
    /// Metric label (`mhc_gossip_rejected_total{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotEnrolled => "not_enrolled",
            Refusal::Certificate(_) => "certificate",
            Refusal::Claim(_) => "claim",
            Refusal::Revoked => "revoked",
        }
    }
}

/// What [`Admission::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The key was not revoked before; it is now (and stored).
    New(SignedRevocation),
    /// The key was revoked already: nothing changed.
    Known,
}

/// Why a revocation was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// It does not decode or verify.
    #[error(transparent)]
    Invalid(#[from] RevocationError),
    /// The list holds [`MAX_REVOCATIONS`] keys already.
    #[error("the revocation list is full ({MAX_REVOCATIONS} keys)")]
    Full,
    /// The database failed; nothing changed.
    #[error("storing the revocation: {0}")]
    Storage(#[from] sled::Error),
}

impl RevokeError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            RevokeError::Invalid(e) => e.label(),
            RevokeError::Full => "full",
            RevokeError::Storage(_) => "storage",
        }
    }
}

/// The revoked keys and their digest, as heartbeats carry it.
#[derive(Debug, Default)]
struct RevocationList {
    by_node: HashMap<[u8; 32], SignedRevocation>,
    digest: [u8; 32],
}

/// The admission rules of one node: its operators, its clock, what it verified already, and
/// the keys its operators revoked.
#[derive(Debug)]
pub struct Admission {
    operators: Vec<[u8; 32]>,
    clock: Clock,
    verified: Mutex<HashMap<[u8; 32], Arc<SignedCertificate>>>,
    /// Node keys that presented an accepted certificate (in a heartbeat or a QUIC hello).
    admitted: Mutex<HashMap<[u8; 32], Arc<SignedCertificate>>>,
    revoked: RwLock<RevocationList>,
    /// Held by [`Admission::revoke`] from its check to its update.
    revoking: Mutex<()>,
    tree: sled::Tree,
}

impl Admission {
    /// Members are certified by one of `operators`, as of `clock`; the revocations stored in
    /// `db` apply (each verified again: one whose signer is no longer trusted is dropped).
    ///
    /// # Errors
    /// The database cannot be read.
    pub fn open(db: &sled::Db, operators: Vec<[u8; 32]>, clock: Clock) -> sled::Result<Self> {
        let tree = db.open_tree(REVOCATIONS_TREE)?;
        let mut list = RevocationList::default();
        for entry in tree.iter() {
            let (_, bytes) = entry?;
            match SignedRevocation::decode(&bytes).and_then(|r| r.verify(&operators).map(|()| r)) {
                Ok(r) => {
                    list.by_node.insert(r.revocation.node, r);
                }
                Err(e) => tracing::warn!(error = %e, "stored revocation ignored"),
            }
        }
        list.digest = revocation::digest(list.by_node.keys());
        if !list.by_node.is_empty() {
            tracing::info!(revoked = list.by_node.len(), "revocations loaded");
        }
        Ok(Self {
            operators,
            clock,
            verified: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
            revoked: RwLock::new(list),
            revoking: Mutex::new(()),
            tree,
        })
    }

    /// Applies an encoded revocation: verified against `trust.operators`, stored durably, and
    /// from then on the key is refused at every door.
    ///
    /// # Errors
    /// [`RevokeError`]; nothing changes.
    pub fn revoke(&self, encoded: &[u8]) -> Result<Revoked, RevokeError> {
        let signed = SignedRevocation::decode(encoded)?;
        let node = signed.revocation.node;
        if self.is_revoked(&node) {
            return Ok(Revoked::Known);
        }
        signed.verify(&self.operators)?;
        // One revocation at a time from the check to the update; the doors that read the list
        // (every heartbeat, hello and report) wait for none of it but the update, not the flush.
        let _revoking = self.revoking.lock();
        {
            let list = self.revoked.read();
            if list.by_node.contains_key(&node) {
                return Ok(Revoked::Known);
            }
            if list.by_node.len() >= MAX_REVOCATIONS {
                return Err(RevokeError::Full);
            }
        }
        self.tree.insert(node, encoded)?;
        super::flush(&self.tree)?;
        let mut list = self.revoked.write();
        list.by_node.insert(node, signed.clone());
        list.digest = revocation::digest(list.by_node.keys());
        drop(list);
        self.admitted.lock().remove(&node);
        Ok(Revoked::New(signed))
    }

    /// Whether an operator revoked `node`.
    pub fn is_revoked(&self, node: &[u8; 32]) -> bool {
        self.revoked.read().by_node.contains_key(node)
    }

    /// The digest of the revoked keys (all zeros for none), for heartbeats.
    pub fn revoked_digest(&self) -> [u8; 32] {
        self.revoked.read().digest
    }

    /// How many keys are revoked.
    pub fn revoked_count(&self) -> usize {
        self.revoked.read().by_node.len()
    }

    /// What operators see of the revocations (`/v1/cluster`, `/admin/status`).
    pub fn revocations_json(&self) -> serde_json::Value {
        let list = self.revoked.read();
        serde_json::json!({
            "revoked_nodes": list.by_node.len(),
            "digest": hex::encode(list.digest),
        })
    }

    /// The answer to a revocation applied by an operator's request.
    pub fn revocation_json(&self, revoked: &Revoked) -> serde_json::Value {
        let mut answer = self.revocations_json();
        answer["new"] = matches!(revoked, Revoked::New(_)).into();
        answer
    }

    /// Every revocation, encoded, for peers that know fewer.
    pub fn revocations(&self) -> Vec<Vec<u8>> {
        self.revoked
            .read()
            .by_node
            .values()
            .map(SignedRevocation::encode)
            .collect()
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
        if self.is_revoked(node) {
            return None;
        }
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
        if self.is_revoked(node) {
            return Err(Refusal::Revoked);
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

    fn admission(clock: &ManualClock) -> (Admission, sled::Db) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let operators = vec![key(9).verifying_key().to_bytes()];
        (Admission::open(&db, operators, clock.clock()).unwrap(), db)
    }

    #[test]
    fn members_are_believed_only_as_far_as_their_certificate_allows() {
        let clock = ManualClock::new(5_000);
        let (admission, _db) = admission(&clock);
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

    #[test]
    fn a_revoked_key_is_refused_whatever_it_presents_also_after_a_restart() {
        let clock = ManualClock::new(5_000);
        let (admission, db) = admission(&clock);
        let node = key(1).verifying_key().to_bytes();
        let mut hb = heartbeat();
        enrolled(&mut hb, &key(1), &key(9));
        admission.present(&node, &hb.certificate).unwrap();
        assert!(admission.admitted(&node).is_some());
        assert_eq!(admission.revoked_digest(), [0; 32]);

        // Signed by an operator this node does not trust: refused, nothing changes.
        let stranger = SignedRevocation::sign(node, "no".into(), 1, &key(8)).encode();
        assert!(matches!(
            admission.revoke(&stranger),
            Err(RevokeError::Invalid(RevocationError::UnknownOperator(_)))
        ));
        assert!(admission.admitted(&node).is_some());

        let revocation = SignedRevocation::sign(node, "key leaked".into(), 2, &key(9)).encode();
        assert!(matches!(
            admission.revoke(&revocation).unwrap(),
            Revoked::New(_)
        ));
        assert_eq!(admission.revoke(&revocation).unwrap(), Revoked::Known);
        assert!(admission.admitted(&node).is_none());
        assert_eq!(admission.admit(&node, &hb).unwrap_err(), Refusal::Revoked);
        assert_eq!(
            admission.present(&node, &hb.certificate).unwrap_err(),
            Refusal::Revoked
        );
        let digest = admission.revoked_digest();
        assert_eq!(digest, revocation::digest([&node]));
        assert_eq!(admission.revocations(), vec![revocation]);

        // A restart: the list is read back from the database.
        drop(admission);
        let operators = vec![key(9).verifying_key().to_bytes()];
        let again = Admission::open(&db, operators, clock.clock()).unwrap();
        assert!(again.is_revoked(&node));
        assert_eq!(again.revoked_digest(), digest);
        assert_eq!(again.admit(&node, &hb).unwrap_err(), Refusal::Revoked);
        // Under other operators the stored revocation no longer counts.
        let others =
            Admission::open(&db, vec![key(7).verifying_key().to_bytes()], clock.clock()).unwrap();
        assert!(!others.is_revoked(&node));
    }
}
