//! Crypto payouts executed on a real chain (anvil, started by the test): `POST payouts/crypto`
//! pays every artist's wallet exactly its pending balance, in the chain's coin or in an ERC-20
//! token the test deploys (OpenZeppelin's compiled `ERC20PresetFixedSupply`); each paid transfer
//! is in the ledger with its transaction hash; wallets with a bad EIP-55 checksum are refused at
//! account creation; and an origin SIGKILLed between signing and receipt pays nobody twice.

use std::path::Path;
use std::time::Duration;

use mhc_tests::anvil::Anvil;
use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions, NodeProcess};

/// Base units of the asset per cent (18 decimals, EUR has 2).
const SCALE: u128 = 10u128.pow(16);

fn origin(c: &mut Cluster, anvil: &Anvil, asset: &str) -> usize {
    let key = c.path().join("payer.key");
    anvil.write_key(0, &key);
    let extra = format!(
        "[plugins.royalty]\ncurrency = \"EUR\"\nminimum_payout_minor = 1\n\
         withholding = {{ default_bps = 0, eu_bps = 0 }}\n\
         [plugins.royalty.crypto]\nrpc_url = \"{}\"\nchain_id = 31337\nkey = {:?}\n\
         asset = \"{asset}\"\ndecimals = 18\n\
         [plugins.ledger]\n",
        anvil.url,
        key.to_str().unwrap()
    );
    c.start_with("origin", NodeOptions::new("origin").extra(&extra))
}

/// `mhc-node plugin royalty METHOD TARGET [--body FILE]` at `node`.
fn royalty(
    node: &NodeProcess,
    method: &str,
    target: &str,
    body: Option<&serde_json::Value>,
) -> std::process::Output {
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    let mut args = vec!["plugin", "--data-dir", &data_dir, "royalty", method, target];
    let file = node.data_dir.join("body.json");
    let file_arg = file.to_str().unwrap().to_owned();
    if let Some(body) = body {
        std::fs::write(&file, body.to_string()).unwrap();
        args.extend(["--body", &file_arg]);
    }
    node.cli(&args)
}

fn account(node: &NodeProcess, artist: &str, address: &str) -> std::process::Output {
    let body = serde_json::json!({
        "artist_id": artist,
        "name": format!("Artist {artist}"),
        "tax_country": "SE",
        "payout_method": {"crypto": {"network": "ethereum", "address": address}},
    });
    royalty(node, "POST", "accounts", Some(&body))
}

fn tip(node: &NodeProcess, reference: &str, artist: &str, cents: i64) {
    let body = serde_json::json!({
        "reference": reference,
        "artist_id": artist,
        "amount": {"minor": cents, "currency": "EUR"},
        "from": "a fan",
    });
    assert_success(&royalty(node, "POST", "tips", Some(&body)), "tip");
}

fn pending(node: &NodeProcess, artist: &str) -> i64 {
    let out = royalty(node, "GET", &format!("balance/{artist}"), None);
    assert_success(&out, "balance");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["pending_minor"].as_i64().unwrap()
}

/// `POST payouts/crypto?as_of_ms=…` at `node`; the payout it answers.
fn pay(node: &NodeProcess, as_of_ms: u64) -> serde_json::Value {
    let out = royalty(
        node,
        "POST",
        &format!("payouts/crypto?as_of_ms={as_of_ms}"),
        None,
    );
    assert_success(&out, "payouts/crypto");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The ledger's payout entries (from a JSON export).
fn ledger_payouts(node: &NodeProcess, dir: &Path) -> Vec<serde_json::Value> {
    let out = dir.join("ledger.json");
    let data_dir = node.data_dir.to_str().unwrap().to_owned();
    assert_success(
        &node.cli(&[
            "ledger",
            "export",
            "--out",
            out.to_str().unwrap(),
            "--data-dir",
            &data_dir,
        ]),
        "ledger export",
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "payout")
        .cloned()
        .collect()
}

/// Two artists tipped, their wallets anvil's accounts 5 and 6; a third refused for its checksum.
fn artists(node: &NodeProcess, anvil: &Anvil) -> [(&'static str, String, i64); 2] {
    // Flip the case of one letter of a checksummed address: EIP-55 catches it.
    let flipped: String = {
        let mut done = false;
        anvil.addresses[7]
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i > 1 && !done && c.is_ascii_alphabetic() {
                    done = true;
                    if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                } else {
                    c
                }
            })
            .collect()
    };
    let out = account(node, "carol", &flipped);
    assert!(!out.status.success(), "a mistyped wallet was accepted");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("EIP-55")
            || String::from_utf8_lossy(&out.stderr).contains("EIP-55"),
        "{out:?}"
    );
    let mut paid = Vec::new();
    for (artist, wallet, cents) in [("alice", 5, 1234), ("bob", 6, 567)] {
        assert_success(&account(node, artist, &anvil.addresses[wallet]), "account");
        tip(node, &format!("tip-{artist}"), artist, cents);
        assert_eq!(pending(node, artist), cents);
        paid.push((artist, anvil.addresses[wallet].clone(), cents));
    }
    paid.try_into().unwrap()
}

fn erc20_balance(anvil: &Anvil, token: &str, owner: &str) -> u128 {
    // balanceOf(address): 0x70a08231 ‖ the address left-padded to 32 bytes.
    let data = format!(
        "0x70a08231{:0>64}",
        owner.trim_start_matches("0x").to_lowercase()
    );
    Anvil::quantity(&anvil.rpc(
        "eth_call",
        serde_json::json!([{"to": token, "data": data}, "latest"]),
    ))
}

/// OpenZeppelin's `ERC20PresetFixedSupply(name, symbol, supply, owner)`, as npm ships it
/// compiled, with its constructor's arguments ABI-encoded.
fn token_creation_code(owner: &str) -> Vec<u8> {
    let artifact = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "chain/node_modules/@openzeppelin/contracts/build/contracts/ERC20PresetFixedSupply.json",
    );
    let artifact: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&artifact).expect("`.ci/run` installs it")).unwrap();
    let mut code = hex::decode(
        artifact["bytecode"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
    )
    .unwrap();
    let word = |v: u128| {
        let mut w = [0u8; 32];
        w[16..].copy_from_slice(&v.to_be_bytes());
        w
    };
    let text = |s: &str| {
        let mut out = word(s.len() as u128).to_vec();
        let mut data = [0u8; 32];
        data[..s.len()].copy_from_slice(s.as_bytes());
        out.extend(data);
        out
    };
    let mut owner_word = [0u8; 32];
    hex::decode_to_slice(owner.trim_start_matches("0x"), &mut owner_word[12..]).unwrap();
    // (string name, string symbol, uint256 supply, address owner): two offsets, two words, then
    // the strings.
    code.extend(word(4 * 32));
    code.extend(word(6 * 32));
    code.extend(word(1_000_000 * 10u128.pow(18)));
    code.extend(owner_word);
    code.extend(text("Euro Test"));
    code.extend(text("EURT"));
    code
}

/// Pays twice the same `as_of_ms` (the second answers the same payout) and checks wallets,
/// balances and the ledger.
fn pays_exactly(asset: &str) {
    let anvil = Anvil::start(Some(1));
    let token =
        (asset == "erc20").then(|| anvil.deploy(0, &token_creation_code(&anvil.addresses[0])));
    let mut c = Cluster::new();
    let o = origin(&mut c, &anvil, token.as_deref().unwrap_or("native"));
    let node = c.node(o);
    let artists = artists(node, &anvil);
    let balance = |wallet: &str| match &token {
        Some(t) => erc20_balance(&anvil, t, wallet),
        None => anvil.balance(wallet),
    };
    let before: Vec<u128> = artists.iter().map(|(_, w, _)| balance(w)).collect();
    let as_of = now_ms() + 1;
    let payout = pay(node, as_of);
    let transfers = payout["transfers"].as_array().unwrap();
    assert_eq!(transfers.len(), 2, "{payout}");
    assert!(transfers.iter().all(|t| t["state"] == "paid"), "{payout:#}");
    for ((artist, wallet, cents), was) in artists.iter().zip(&before) {
        assert_eq!(
            balance(wallet) - was,
            *cents as u128 * SCALE,
            "{artist}'s wallet rose by exactly the payout"
        );
        assert_eq!(pending(node, artist), 0);
    }
    // Asked again: the same payout, nobody paid twice.
    let again = pay(node, as_of);
    assert_eq!(again["transfers"], payout["transfers"]);
    for ((_, wallet, cents), was) in artists.iter().zip(&before) {
        assert_eq!(balance(wallet) - was, *cents as u128 * SCALE);
    }
    // Every paid transfer is in the ledger with its transaction hash.
    let hashes: Vec<&str> = transfers
        .iter()
        .map(|t| t["tx_hash"].as_str().unwrap())
        .collect();
    let mut entries = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        entries = ledger_payouts(node, c.path());
        entries.len() == 2
    }));
    for hash in hashes {
        assert!(
            entries
                .iter()
                .any(|e| e["reference"].as_str().unwrap().contains(hash)),
            "no ledger entry names {hash}: {entries:?}"
        );
    }
}

#[test]
fn native_payouts_pay_each_wallet_exactly_once() {
    pays_exactly("native");
}

#[test]
fn erc20_payouts_pay_each_wallet_exactly_once() {
    pays_exactly("erc20");
}

#[test]
fn an_origin_killed_between_signing_and_receipt_pays_nobody_twice() {
    // No mining until the test says: the transfers wait in the pool while the origin dies.
    let anvil = Anvil::start(None);
    let mut c = Cluster::new();
    let o = origin(&mut c, &anvil, "native");
    let artists = artists(c.node(o), &anvil);
    let before: Vec<u128> = artists.iter().map(|(_, w, _)| anvil.balance(w)).collect();
    let as_of = now_ms() + 1;
    let data_dir = c.node(o).data_dir.to_str().unwrap().to_owned();
    let bin = mhc_tests::node_binary();
    let request = std::thread::spawn(move || {
        std::process::Command::new(bin)
            .args(["plugin", "--data-dir", &data_dir, "royalty", "POST"])
            .arg(format!("payouts/crypto?as_of_ms={as_of}"))
            .output()
    });
    assert!(
        wait_until(Duration::from_secs(20), || anvil.pending_transactions()
            == 2),
        "the transfers were not broadcast\n{}",
        c.node(o).log_tail()
    );
    c.node_mut(o).kill9();
    let _ = request.join();
    anvil.mine();
    anvil.mine();
    for ((_, wallet, cents), was) in artists.iter().zip(&before) {
        assert_eq!(anvil.balance(wallet) - was, *cents as u128 * SCALE);
    }
    // Restarted, the origin follows the recorded transfers to their receipts and books them;
    // asked again, it answers the same payout: no second transaction.
    c.node_mut(o).spawn();
    let payout = pay(c.node(o), as_of);
    assert!(
        payout["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "paid"),
        "{payout:#}"
    );
    anvil.mine();
    assert_eq!(anvil.pending_transactions(), 0);
    let nonce = Anvil::quantity(&anvil.rpc(
        "eth_getTransactionCount",
        serde_json::json!([anvil.addresses[0], "latest"]),
    ));
    assert_eq!(nonce, 2, "one transaction per artist, none sent again");
    for ((artist, wallet, cents), was) in artists.iter().zip(&before) {
        assert_eq!(anvil.balance(wallet) - was, *cents as u128 * SCALE);
        assert_eq!(pending(c.node(o), artist), 0, "{artist} booked once");
    }
}
