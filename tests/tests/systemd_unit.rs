//! The shipped systemd unit passes `systemd-analyze verify`, and the example configs are exactly
//! what `mhc-node example-config` prints (so they stay valid as the config grows).

use std::fs;
use std::path::Path;
use std::process::Command;

use mhc_tests::{assert_success, node_binary};

fn systemd_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd"))
}

#[test]
fn unit_verifies_and_is_hardened() {
    let unit = fs::read_to_string(systemd_dir().join("mhc-node@.service")).unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=mhc/%i",
        "CapabilityBoundingSet=\n",
        "Type=notify",
        "ExecStartPre=/usr/local/bin/mhc-node check-config /etc/mhc/%i.toml",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive:?}");
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/local/bin/mhc-node", node_binary().to_str().unwrap());
    for name in ["mhc-node@.service", "mhc-node@edge.service"] {
        fs::write(dir.path().join(name), &local).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(name))
            .output()
            .expect("systemd-analyze is installed (apt-get install systemd; scripts/install-test-deps does)");
        assert_success(&out, &format!("systemd-analyze verify {name}"));
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn example_configs_match_the_binary() {
    for role in ["origin", "edge", "mesh", "satellite-uplink"] {
        let out = Command::new(node_binary())
            .args(["example-config", role])
            .output()
            .unwrap();
        assert_success(&out, "example-config");
        let committed = fs::read(systemd_dir().join(format!("examples/{role}.toml"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&committed),
            "systemd/examples/{role}.toml is stale: regenerate with `mhc-node example-config {role}`"
        );
    }
}
