//! `[plugins.label]`: who the label is (ISRC registrant, GS1 prefix, DDEX party) and the DSPs
//! it delivers to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::{Gs1Prefix, IsrcRegistrant, PartyId};
use crate::release::{check_dsp_name, Deal};

/// Codes skipped past the restored counters after a restore from backup: ISRCs and UPCs
/// issued after the backup was taken cannot be known from it, and a code must never be issued
/// twice. Default for [`LabelConfig::restore_skip`].
pub const DEFAULT_RESTORE_SKIP: u32 = 1000;

/// `[plugins.label]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelConfig {
    /// ISRC country + registrant code, e.g. `USMHC`.
    pub isrc_registrant: IsrcRegistrant,
    /// GS1 company prefix for UPC-A codes, e.g. `0614141`.
    pub gs1_prefix: Gs1Prefix,
    /// The label's DDEX Party ID (message sender).
    pub sender_party_id: PartyId,
    /// The label's name in messages.
    pub sender_name: String,
    /// Codes skipped after a restore from backup (see [`DEFAULT_RESTORE_SKIP`]).
    #[serde(default = "default_restore_skip")]
    pub restore_skip: u32,
    /// First retry of a failed delivery after this many seconds, doubling per attempt.
    #[serde(default = "default_retry_base_s")]
    pub retry_base_s: u64,
    /// Longest wait between retries, seconds.
    #[serde(default = "default_retry_max_s")]
    pub retry_max_s: u64,
    /// How often a delivered batch's folder is checked for the DSP's ACK file, seconds.
    #[serde(default = "default_ack_poll_s")]
    pub ack_poll_s: u64,
    /// Deals offered when a release names none: subscription and ad-supported streaming.
    #[serde(default = "Deal::default_streaming")]
    pub default_deals: Vec<Deal>,
    /// `[plugins.label.dsps.<name>]`: where releases go.
    #[serde(default)]
    pub dsps: BTreeMap<String, DspConfig>,
}

fn default_restore_skip() -> u32 {
    DEFAULT_RESTORE_SKIP
}

fn default_retry_base_s() -> u64 {
    30
}

fn default_retry_max_s() -> u64 {
    3600
}

fn default_ack_poll_s() -> u64 {
    300
}

/// One DSP: its party and its SFTP drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DspConfig {
    /// The DSP's DDEX Party ID (message recipient).
    pub party_id: PartyId,
    /// The DSP's name in messages. Default: the table's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `sftp://user@host:port/path`: the folder batches are dropped into.
    pub sftp: String,
    /// The client's private key file (OpenSSH format, ed25519 or RSA).
    pub key: PathBuf,
    /// The server's host key, as in `known_hosts` after the host name
    /// (`ssh-ed25519 AAAA...`). Never trusted on first use.
    pub known_host: String,
}

/// A configuration that does not hold, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugins.label.{field}: {problem}")]
pub struct ConfigError {
    /// The field, dotted (`dsps.spotify.sftp`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// An `sftp://user@host:port/path` address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpUrl {
    /// The SSH user.
    pub user: String,
    /// Host name or address.
    pub host: String,
    /// Port (default 22).
    pub port: u16,
    /// The drop folder, absolute or relative to the user's home (`/incoming` → `incoming`
    /// under a chroot is the server's business: it is sent as written).
    pub path: String,
}

impl SftpUrl {
    /// Parses `sftp://user@host[:port][/path]`.
    ///
    /// # Errors
    /// A message naming what is missing or malformed.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("sftp://")
            .ok_or("must start with sftp://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "."),
        };
        let (user, hostport) = authority
            .split_once('@')
            .ok_or("must name the user: sftp://user@host:port/path")?;
        if user.is_empty() {
            return Err("the user is empty".into());
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is not a number 1..=65535"))?,
            ),
            _ => (hostport, 22),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the host is empty".into());
        }
        if port == 0 {
            return Err("port 0 is not a port".into());
        }
        Ok(Self {
            user: user.to_string(),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl LabelConfig {
    /// Checks what serde cannot: names, the SFTP addresses, the host keys' form, the deals.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field that does not hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: String, problem: String| ConfigError { field, problem };
        if self.sender_name.trim().is_empty() || self.sender_name.len() > 200 {
            return Err(err(
                "sender_name".into(),
                "must be 1..=200 bytes of text".into(),
            ));
        }
        if self.retry_base_s == 0 || self.retry_max_s < self.retry_base_s {
            return Err(err(
                "retry_base_s".into(),
                "must be at least 1 and at most retry_max_s".into(),
            ));
        }
        if self.ack_poll_s == 0 {
            return Err(err("ack_poll_s".into(), "must be at least 1".into()));
        }
        for (i, deal) in self.default_deals.iter().enumerate() {
            deal.validate()
                .map_err(|p| err(format!("default_deals[{i}]"), p))?;
        }
        for (name, dsp) in &self.dsps {
            check_dsp_name(name).map_err(|p| err(format!("dsps.{name}"), p))?;
            SftpUrl::parse(&dsp.sftp).map_err(|p| err(format!("dsps.{name}.sftp"), p))?;
            let mut words = dsp.known_host.split_whitespace();
            match (words.next(), words.next()) {
                (Some(kind), Some(_key))
                    if kind.starts_with("ssh-") || kind.starts_with("ecdsa-") => {}
                _ => {
                    return Err(err(
                        format!("dsps.{name}.known_host"),
                        "must be a host key as in known_hosts: \"ssh-ed25519 AAAA...\"".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The DSP's name in messages.
    pub fn dsp_name<'a>(&'a self, dsp: &'a str) -> &'a str {
        self.dsps
            .get(dsp)
            .and_then(|d| d.name.as_deref())
            .unwrap_or(dsp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_urls() {
        let u = SftpUrl::parse("sftp://mhc@127.0.0.1:2222/incoming").unwrap();
        assert_eq!(
            (u.user.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("mhc", "127.0.0.1", 2222, "/incoming")
        );
        let u = SftpUrl::parse("sftp://mhc@dsp.example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (22, "."));
        let u = SftpUrl::parse("sftp://mhc@[::1]:22/in").unwrap();
        assert_eq!(u.host, "::1");
        for bad in [
            "ftp://a@b/c",
            "sftp://host/c",
            "sftp://@host/c",
            "sftp://a@host:x/c",
            "sftp://a@:22/c",
        ] {
            assert!(SftpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
