//! Node certificates: an operator's signed statement that a node key is a member, in one role,
//! in one region, near one place, reachable by viewers at the listed hosts, for a time.
//!
//! An operator key (one of `trust.operators`) signs the postcard encoding of a
//! [`NodeCertificate`], prefixed by the domain tag `mhc-node-cert-v1`
//! (`mhc-node enroll`). A node presents its certificate in its heartbeats and on the QUIC plane;
//! its peers believe what it claims (role, region, place, viewer address) only as far as the
//! certificate allows. Decoding is bounded and canonical, like every wire format here.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::roles::WireRole;

/// Domain tag of certificate signatures.
const SIGNATURE_TAG: &[u8] = b"mhc-node-cert-v1";
/// Format byte of encoded certificates.
const FORMAT: u8 = 1;
/// Largest encoded certificate accepted: a certificate with [`MAX_HTTP_HOSTS`] hosts of
/// [`MAX_HOST_BYTES`] is about 2.2 KiB.
pub const MAX_CERTIFICATE_BYTES: usize = 3 * 1024;
/// Most viewer-plane hosts one certificate allows.
pub const MAX_HTTP_HOSTS: usize = 8;
/// Longest host entry (`host` or `host:port`; a DNS name is at most 253 bytes).
pub const MAX_HOST_BYTES: usize = 260;
/// Longest region label.
pub const MAX_REGION_BYTES: usize = 128;

/// Where a node may say it is: within `radius_km` of a point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Area {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Radius, km.
    pub radius_km: f64,
}

impl Area {
    /// Whether `(lat, lon)` lies within the area.
    pub fn contains(&self, (lat, lon): (f64, f64)) -> bool {
        haversine_km((self.lat, self.lon), (lat, lon)) <= self.radius_km
    }
}

/// Mean Earth radius (IUGG), km: the radius of the sphere the haversine formula assumes.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance between two `(lat, lon)` points in degrees, km (haversine formula).
///
/// # Examples
/// ```
/// let london = (51.5074, -0.1278);
/// let paris = (48.8566, 2.3522);
/// let km = mhc_transport::gossip::cert::haversine_km(london, paris);
/// assert!((km - 343.6).abs() < 1.0);
/// ```
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// What an operator certifies about a node (what is signed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// The node's ed25519 public key.
    pub node: [u8; 32],
    /// The role the node may run in.
    pub role: WireRole,
    /// The region label it must advertise.
    pub region: String,
    /// Where it may say it is; `None`: it may advertise no location.
    pub area: Option<Area>,
    /// Viewer-plane hosts it may advertise, `host` (any port) or `host:port`; empty: none.
    pub http: Vec<String>,
    /// Valid from, ms since the Unix epoch.
    pub not_before_ms: u64,
    /// Valid until (exclusive), ms since the Unix epoch.
    pub not_after_ms: u64,
    /// The operator's serial number of this certificate (revocations name it).
    pub serial: u64,
    /// The operator's public key.
    pub operator: [u8; 32],
}

/// A certificate with its signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedCertificate {
    /// The certificate.
    pub certificate: NodeCertificate,
    /// ed25519 signature over the tag and the certificate's postcard encoding.
    pub signature: Vec<u8>,
}

/// Why a certificate is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not a certificate of this format, oversized, or with fields out of bounds.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// The signer is not in `trust.operators`.
    #[error("signed by {0}, which is not a trusted operator")]
    UnknownOperator(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Not valid yet.
    #[error("not valid before {0} (ms since the epoch)")]
    NotYetValid(u64),
    /// Expired.
    #[error("expired at {0} (ms since the epoch)")]
    Expired(u64),
    /// It certifies another key than the one presenting it.
    #[error("certifies another node key")]
    WrongNode,
}

impl CertificateError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            CertificateError::Malformed(_) => "malformed",
            CertificateError::UnknownOperator(_) => "unknown_operator",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::NotYetValid(_) => "not_yet_valid",
            CertificateError::Expired(_) => "expired",
            CertificateError::WrongNode => "wrong_node",
        }
    }
}

fn signed_bytes(certificate: &NodeCertificate) -> Vec<u8> {
    let mut msg = SIGNATURE_TAG.to_vec();
    msg.extend(postcard::to_allocvec(certificate).expect("certificates serialise"));
    msg
}

impl NodeCertificate {
    /// Checks the bounds a decoder cannot express.
    ///
    /// # Errors
    /// [`CertificateError::Malformed`] naming the field.
    pub fn check_bounds(&self) -> Result<(), CertificateError> {
        let bad = |what: &str| Err(CertificateError::Malformed(what.to_owned()));
        if self.region.is_empty() || self.region.len() > MAX_REGION_BYTES {
            return bad("region");
        }
        if self.http.len() > MAX_HTTP_HOSTS || !self.http.iter().all(|h| is_valid_host_entry(h)) {
            return bad("http");
        }
        if let Some(a) = self.area {
            let ok = a.lat.is_finite()
                && a.lon.is_finite()
                && a.radius_km.is_finite()
                && (-90.0..=90.0).contains(&a.lat)
                && (-180.0..=180.0).contains(&a.lon)
                && a.radius_km >= 0.0;
            if !ok {
                return bad("area");
            }
        }
        if self.not_after_ms <= self.not_before_ms {
            return bad("validity");
        }
        Ok(())
    }

    /// Whether `addr` (`host:port`, as a heartbeat advertises the viewer plane) is one this
    /// certificate allows: its host equal to an entry's, and its port too when the entry names
    /// one. Hosts compare case-insensitively.
    pub fn allows_http(&self, addr: &str) -> bool {
        let Some((host, port)) = split_host_port(addr) else {
            return false;
        };
        self.http.iter().any(|entry| match split_host_port(entry) {
            Some((h, p)) => h.eq_ignore_ascii_case(host) && p == port,
            None => entry.eq_ignore_ascii_case(host) || bracketed(entry) == Some(host),
        })
    }
}

/// `[v6]` → `v6`.
fn bracketed(s: &str) -> Option<&str> {
    s.strip_prefix('[')?.strip_suffix(']')
}

/// Splits `host:port` or `[v6]:port` into host (without brackets) and port; `None` when there
/// is no port.
pub fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        return (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .then_some((host, port));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.contains(':') || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((host, port))
}

/// Whether `entry` is `host` or `host:port` with a host of DNS name characters, an IPv4
/// address, or a bracketed IPv6 address: nothing that could break out of a URL or a playlist
/// line once rendered.
pub fn is_valid_host_entry(entry: &str) -> bool {
    if entry.is_empty() || entry.len() > MAX_HOST_BYTES {
        return false;
    }
    let host = match split_host_port(entry) {
        Some((h, _)) => h,
        None => bracketed(entry).unwrap_or(entry),
    };
    let v6 = entry.starts_with('[');
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || (v6 && b == b':'))
}

impl SignedCertificate {
    /// Signs `certificate` with the operator key (its `operator` field is set to the key's).
    pub fn sign(mut certificate: NodeCertificate, operator: &SigningKey) -> Self {
        certificate.operator = operator.verifying_key().to_bytes();
        let signature = operator
            .sign(&signed_bytes(&certificate))
            .to_bytes()
            .to_vec();
        Self {
            certificate,
            signature,
        }
    }

    /// The wire form: a format byte and the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        super::wire::encode(FORMAT, self)
    }

    /// Decodes the wire form: bounded, canonical, fields within bounds.
    ///
    /// # Errors
    /// [`CertificateError::Malformed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CertificateError> {
        let signed: Self = super::wire::decode(bytes, FORMAT, MAX_CERTIFICATE_BYTES)
            .map_err(CertificateError::Malformed)?;
        signed.certificate.check_bounds()?;
        Ok(signed)
    }

    /// Checks the signer is one of `operators`, the signature, and that `now_ms` is within the
    /// validity.
    ///
    /// # Errors
    /// [`CertificateError`].
    pub fn verify(&self, operators: &[[u8; 32]], now_ms: u64) -> Result<(), CertificateError> {
        let c = &self.certificate;
        if !operators.contains(&c.operator) {
            return Err(CertificateError::UnknownOperator(hex::encode(c.operator)));
        }
        let key =
            VerifyingKey::from_bytes(&c.operator).map_err(|_| CertificateError::BadSignature)?;
        let sig =
            Signature::from_slice(&self.signature).map_err(|_| CertificateError::BadSignature)?;
        key.verify(&signed_bytes(c), &sig)
            .map_err(|_| CertificateError::BadSignature)?;
        if now_ms < c.not_before_ms {
            return Err(CertificateError::NotYetValid(c.not_before_ms));
        }
        if now_ms >= c.not_after_ms {
            return Err(CertificateError::Expired(c.not_after_ms));
        }
        Ok(())
    }

    /// [`SignedCertificate::verify`], and that it certifies `node`.
    ///
    /// # Errors
    /// [`CertificateError`].
    pub fn verify_for(
        &self,
        node: &[u8; 32],
        operators: &[[u8; 32]],
        now_ms: u64,
    ) -> Result<(), CertificateError> {
        if &self.certificate.node != node {
            return Err(CertificateError::WrongNode);
        }
        self.verify(operators, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn certificate() -> NodeCertificate {
        NodeCertificate {
            node: key(2).verifying_key().to_bytes(),
            role: WireRole::Edge,
            region: "eu-west".into(),
            area: Some(Area {
                lat: 52.37,
                lon: 4.9,
                radius_km: 50.0,
            }),
            http: vec![
                "edge1.example.net".into(),
                "192.0.2.7:8080".into(),
                "[2001:db8::7]".into(),
            ],
            not_before_ms: 1_000,
            not_after_ms: 2_000,
            serial: 7,
            operator: [0; 32],
        }
    }

    #[test]
    fn a_signed_certificate_round_trips_and_verifies_within_its_validity() {
        let signed = SignedCertificate::sign(certificate(), &key(1));
        let bytes = signed.encode();
        let back = SignedCertificate::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        let operators = [key(1).verifying_key().to_bytes()];
        let node = key(2).verifying_key().to_bytes();
        back.verify_for(&node, &operators, 1_500).unwrap();
        assert_eq!(
            back.verify(&operators, 999),
            Err(CertificateError::NotYetValid(1_000))
        );
        assert_eq!(
            back.verify(&operators, 2_000),
            Err(CertificateError::Expired(2_000))
        );
        assert!(matches!(
            back.verify(&[key(3).verifying_key().to_bytes()], 1_500),
            Err(CertificateError::UnknownOperator(_))
        ));
        assert_eq!(
            back.verify_for(&key(4).verifying_key().to_bytes(), &operators, 1_500),
            Err(CertificateError::WrongNode)
        );
    }

    #[test]
    fn any_change_after_signing_fails_and_garbage_is_malformed() {
        let signed = SignedCertificate::sign(certificate(), &key(1));
        let operators = [key(1).verifying_key().to_bytes()];
        let mut forged = signed.clone();
        forged.certificate.role = WireRole::Origin;
        assert_eq!(
            forged.verify(&operators, 1_500),
            Err(CertificateError::BadSignature)
        );
        let bytes = signed.encode();
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            if let Ok(cert) = SignedCertificate::decode(&flipped) {
                assert!(cert.verify(&operators, 1_500).is_err(), "byte {i}");
            }
        }
        assert!(SignedCertificate::decode(&[]).is_err());
        assert!(SignedCertificate::decode(&vec![1; MAX_CERTIFICATE_BYTES + 1]).is_err());
    }

    #[test]
    fn an_area_holds_what_is_within_its_radius() {
        let amsterdam = Area {
            lat: 52.37,
            lon: 4.9,
            radius_km: 50.0,
        };
        assert!(amsterdam.contains((52.09, 5.12)), "Utrecht, 35 km");
        assert!(!amsterdam.contains((48.86, 2.35)), "Paris");
        let km = haversine_km((51.5074, -0.1278), (48.8566, 2.3522));
        assert!((km - 343.6).abs() < 1.0, "London-Paris {km}");
    }

    #[test]
    fn only_the_listed_viewer_hosts_are_allowed() {
        let c = certificate();
        assert!(c.allows_http("edge1.example.net:8080"));
        assert!(c.allows_http("EDGE1.example.net:443"));
        assert!(c.allows_http("192.0.2.7:8080"));
        assert!(!c.allows_http("192.0.2.7:8081"), "the entry names its port");
        assert!(c.allows_http("[2001:db8::7]:8080"));
        assert!(!c.allows_http("evil.example.net:8080"));
        assert!(
            !c.allows_http("edge1.example.net"),
            "an advertised address has a port"
        );
        assert!(!c.allows_http("edge1.example.net.evil:80"));
        for bad in ["", "a b", "x/y", "host:port", "h\"x", "[::1", "a:1:2"] {
            assert!(!is_valid_host_entry(bad), "{bad:?}");
        }
        let mut c = certificate();
        c.http.push("javascript:alert(1)".into());
        assert!(c.check_bounds().is_err());
    }
}
