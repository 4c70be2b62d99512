//! This node's certificate (`mhc-node enroll`): loaded at start and checked against the node's
//! key, `trust.operators`, the clock and the node's own configuration, so a node never runs in a
//! role, a region or a place its certificate does not grant (its peers would refuse it anyway).
//!
//! A node without a certificate file runs unenrolled: alone, or as nothing but a client of its
//! configured parents; no member admits it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mhc_config::Config;
use mhc_transport::gossip::cert::{CertificateError, SignedCertificate};

use super::identity::Identity;
use crate::role::{role_of, wire_role};

/// File name of the certificate inside `data_dir` (unless `trust.certificate` says otherwise).
pub const NODE_CERT_FILE: &str = "node.cert";
/// How long before expiry the node starts warning (and a dashboard sees the metric approach).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// This node's certificate, checked.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The certificate.
    pub signed: SignedCertificate,
    /// Its wire form, as heartbeats and handshakes carry it.
    pub encoded: Vec<u8>,
    /// Where it was read from.
    pub path: PathBuf,
}

impl Enrollment {
    /// Loads the certificate of the node of `config` and `identity`: `trust.certificate`, or
    /// `data_dir/node.cert` when that exists (`None`: not enrolled).
    ///
    /// # Errors
    /// The file is not a certificate; it is for another key, signed by no key of
    /// `trust.operators`, not valid at `now_ms`; or it grants another role, another region, or
    /// an area that does not hold `location`. Each error names the file and what to change.
    pub fn load(config: &Config, identity: &Identity, now_ms: u64) -> anyhow::Result<Option<Self>> {
        let path = match &config.trust.certificate {
            Some(path) => path.clone(),
            None => {
                let default = config.data_dir.join(NODE_CERT_FILE);
                if !default.exists() {
                    return Ok(None);
                }
                default
            }
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading the node certificate {}", path.display()))?;
        let signed = SignedCertificate::decode(&bytes)
            .with_context(|| format!("{}: not a node certificate", path.display()))?;
        signed
            .verify_for(&identity.public_key(), &config.trust.operators, now_ms)
            .map_err(|e| explain(&path, &e))?;
        let c = &signed.certificate;
        if role_of(c.role) != config.role {
            bail!(
                "{}: the certificate grants role {}, not {} (enroll the node again for this role)",
                path.display(),
                c.role.as_str(),
                config.role
            );
        }
        if c.region != config.region {
            bail!(
                "{}: the certificate is for region {:?}; the configuration says {:?}",
                path.display(),
                c.region,
                config.region
            );
        }
        match (c.area, &config.location) {
            (Some(area), Some(l)) if !area.contains((l.lat, l.lon)) => bail!(
                "{}: location {}, {} is outside the certificate's {} km around {}, {}",
                path.display(),
                l.lat,
                l.lon,
                area.radius_km,
                area.lat,
                area.lon
            ),
            (None, Some(_)) => bail!(
                "{}: the certificate allows no location; remove `location` from the configuration \
                 or enroll the node with --location",
                path.display()
            ),
            _ => {}
        }
        debug_assert_eq!(wire_role(config.role), c.role);
        Ok(Some(Self {
            encoded: bytes,
            signed,
            path,
        }))
    }

    /// When the certificate expires, ms since the epoch.
    pub fn not_after_ms(&self) -> u64 {
        self.signed.certificate.not_after_ms
    }

    /// Logs a warning when the certificate expires within [`EXPIRY_WARNING`] of `now_ms`.
    pub fn warn_if_expiring(&self, now_ms: u64) {
        let left_ms = self.not_after_ms().saturating_sub(now_ms);
        if u128::from(left_ms) < EXPIRY_WARNING.as_millis() {
            tracing::warn!(
                certificate = %self.path.display(),
                expires = %utc(self.not_after_ms()),
                days_left = left_ms / 86_400_000,
                "node certificate expires soon: enroll the node again (mhc-node enroll)"
            );
        }
    }
}

/// An error about the certificate at `path`, in words (dates as UTC).
fn explain(path: &Path, e: &CertificateError) -> anyhow::Error {
    let why = match e {
        CertificateError::Expired(ms) => format!("expired on {}", utc(*ms)),
        CertificateError::NotYetValid(ms) => format!("not valid before {}", utc(*ms)),
        CertificateError::WrongNode => {
            "certifies another node key (this node's is `mhc-node id`)".to_owned()
        }
        CertificateError::UnknownOperator(key) => {
            format!("signed by operator {key}, which is not in trust.operators")
        }
        other => other.to_string(),
    };
    anyhow::anyhow!("node certificate {}: {why}", path.display())
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use mhc_transport::gossip::cert::{Area, NodeCertificate};
    use mhc_transport::gossip::messages::WireRole;

    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_793_534_400_000), "2026-11-01 12:00:00 UTC");
    }

    fn config(dir: &Path, operator: &Identity, extra: &str) -> Config {
        let text = format!(
            "role = \"edge\"\ndata_dir = {:?}\nregion = \"eu\"\n{extra}[trust]\noperators = [\"{}\"]\n",
            dir,
            operator.public_key_hex()
        );
        mhc_config::from_toml_str(&text, &dir.join("edge.toml")).unwrap()
    }

    fn write_cert(dir: &Path, node: &Identity, operator: &Identity, area: Option<Area>) {
        let cert = NodeCertificate {
            node: node.public_key(),
            role: WireRole::Edge,
            region: "eu".into(),
            area,
            http: vec!["127.0.0.1".into()],
            not_before_ms: 1_000,
            not_after_ms: 2_000,
            serial: 1,
            operator: [0; 32],
        };
        let signed = SignedCertificate::sign(cert, operator.signing_key());
        std::fs::write(dir.join(NODE_CERT_FILE), signed.encode()).unwrap();
    }

    #[test]
    fn a_node_runs_only_as_its_certificate_allows() {
        let dir = tempfile::tempdir().unwrap();
        let (node, operator) = (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]));
        let plain = config(dir.path(), &operator, "");
        assert!(
            Enrollment::load(&plain, &node, 1_500).unwrap().is_none(),
            "no file: unenrolled"
        );
        write_cert(dir.path(), &node, &operator, None);
        assert!(Enrollment::load(&plain, &node, 1_500).unwrap().is_some());
        let err = Enrollment::load(&plain, &node, 2_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired on 1970-01-01 00:00:02 UTC"), "{err}");
        let other = Identity::from_seed([3; 32]);
        let err = Enrollment::load(&plain, &other, 1_500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another node key"), "{err}");
        let placed = config(
            dir.path(),
            &operator,
            "location = { lat = 52.0, lon = 4.0 }\n",
        );
        let err = Enrollment::load(&placed, &node, 1_500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allows no location"), "{err}");
        let area = Area {
            lat: 52.0,
            lon: 4.0,
            radius_km: 10.0,
        };
        write_cert(dir.path(), &node, &operator, Some(area));
        assert!(Enrollment::load(&placed, &node, 1_500).unwrap().is_some());
        let far = config(
            dir.path(),
            &operator,
            "location = { lat = 48.0, lon = 2.0 }\n",
        );
        let err = Enrollment::load(&far, &node, 1_500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the certificate"), "{err}");
        let mesh = {
            let text = format!(
                "role = \"mesh\"\ndata_dir = {:?}\nregion = \"eu\"\n[trust]\noperators = [\"{}\"]\n",
                dir.path(),
                operator.public_key_hex()
            );
            mhc_config::from_toml_str(&text, &dir.path().join("m.toml")).unwrap()
        };
        let err = Enrollment::load(&mesh, &node, 1_500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("grants role edge, not mesh"), "{err}");
    }
}
