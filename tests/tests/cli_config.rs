//! The command line: config checking with errors that name file and field, identity and key
//! files, and the refusal to guess a role.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mhc_tests::{assert_success, node_binary};

fn run(args: &[&str]) -> std::process::Output {
    Command::new(node_binary()).args(args).output().unwrap()
}

#[test]
fn check_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("data_dir = \"/x\"\n", "`role`"),
        ("role = \"cdn\"\ndata_dir = \"/x\"\n", "`role`"),
        ("role = \"edge\"\ndata_dir = \"/x\"\n[cache]\nmemory_mb = \"lots\"\n", "`cache.memory_mb`"),
        ("role = \"edge\"\ndata_dir = \"/x\"\n[cache]\nmemry_mb = 1\n", "`cache.memry_mb`"),
        ("role = \"edge\"\ndata_dir = \"/x\"\n[listen]\nhttp = \"localhost:80\"\n", "`listen.http`"),
        (
            "role = \"edge\"\ndata_dir = \"/x\"\n[cluster]\nsuspect_after_missed = 5\ndead_after_missed = 2\n",
            "`cluster.dead_after_missed`",
        ),
        (
            "role = \"edge\"\ndata_dir = \"/x\"\n[trust]\npublishers = [\"abcd\"]\n",
            "`trust.publishers[0]`",
        ),
        (
            "role = \"edge\"\ndata_dir = \"/x\"\n[geo]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
            "`geo.trusted_proxies[0]`",
        ),
        ("role = \"edge\"\ndata_dir = \"/x\"\n[plugins.royalty]\n", "`plugins.royalty`"),
        // The origin's plugin tables are checked too, to the field.
        (
            "role = \"origin\"\ndata_dir = \"/x\"\n[plugins.ledger.anchor]\nrpc_url = \"localhost:8545\"\nchain_id = 1\nkey = \"/k\"\n",
            "rpc_url",
        ),
        (
            "role = \"origin\"\ndata_dir = \"/x\"\n[plugins.ledger.anchor]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 1\nkey = \"/nonexistent/anchor.key\"\n",
            "/nonexistent/anchor.key",
        ),
        (
            "role = \"origin\"\ndata_dir = \"/x\"\n[plugins.royalty.crypto]\nrpc_url = \"http://127.0.0.1:8545\"\nchain_id = 1\nkey = \"/k\"\nasset = \"0x52908400098527886E0F7030069857D2E4169eE7\"\n",
            "plugins.royalty.crypto.asset",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        fs::write(&path, text).unwrap();
        let out = run(&["check-config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("bad-{i}.toml")), "{err}");
        assert!(err.contains(field), "expected {field} in: {err}");
    }
    let syntax = dir.path().join("syntax.toml");
    fs::write(&syntax, "role = \"edge\"\ndata_dir = [\n").unwrap();
    let out = run(&["check-config", syntax.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("syntax.toml") && err.contains("line"),
        "{err}"
    );

    let missing = run(&["check-config", "/nonexistent/mhc.toml"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/mhc.toml"));
}

#[test]
fn shipped_example_configs_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/examples");
    let mut n = 0;
    for entry in fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = run(&["check-config", path.to_str().unwrap()]);
            assert_success(&out, &format!("check-config {}", path.display()));
            n += 1;
        }
    }
    assert_eq!(n, 4, "one example per role");
}

#[test]
fn no_command_means_no_guessing() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mhc-node demo") && err.contains("run --config"),
        "{err}"
    );
}

#[test]
fn identity_is_created_once_and_keys_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = run(&["id", "--data-dir", data.to_str().unwrap()]);
    assert_success(&a, "id");
    let b = run(&["id", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8_lossy(&a.stdout);
    assert!(text.contains("peer_id: 12D3KooW"), "{text}");
    let mode = fs::metadata(data.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let key = dir.path().join("publisher.key");
    let k = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert_success(&k, "keygen");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = String::from_utf8_lossy(&k.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public_key: ").map(str::to_owned))
        .unwrap();
    assert_eq!(public.len(), 64);
    let again = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!again.status.success(), "keygen must never overwrite a key");
    let id = run(&["id", "--key", key.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&id.stdout).contains(&public));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("edge.toml");
    fs::write(
        &config,
        format!(
            "role = \"edge\"\ndata_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:{port}\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = run(&["run", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.http") && err.contains(&port.to_string()),
        "{err}"
    );
}
