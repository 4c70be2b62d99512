//! A real EVM chain for one test: anvil (Foundry's development node, from the `@foundry-rs/anvil`
//! npm package that `.ci/run` installs under `tests/chain/`), on a free loopback port, with
//! ten funded development accounts; killed on drop. Read it over plain JSON-RPC
//! ([`Anvil::rpc`]), freeze it (SIGSTOP) to make the chain unreachable.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{http_post_typed, wait_until};

/// The anvil binary the npm package ships.
pub fn anvil_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("chain/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        bin.is_file(),
        "{} not found: `.ci/run` installs it (scripts/install-test-deps: npm ci in tests/chain)",
        bin.display()
    );
    bin
}

/// One running anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// Its JSON-RPC URL.
    pub url: String,
    /// The development accounts' private keys (hex, no `0x`), as anvil printed them.
    pub keys: Vec<String>,
    /// Their addresses (EIP-55), in the same order.
    pub addresses: Vec<String>,
}

impl Anvil {
    /// Starts anvil (chain id 31337), mining a block every `block_time_s` seconds (and so
    /// confirming anchors), or with `None` only when told ([`Anvil::mine`]), and waits until it
    /// answers.
    pub fn start(block_time_s: Option<u64>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mhc-anvil-")
            .tempdir()
            .expect("anvil folder");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(dir.path().join("anvil.log")).expect("anvil log");
        let mining = match block_time_s {
            Some(s) => vec!["--block-time".to_string(), s.to_string()],
            None => vec!["--no-mining".to_string()],
        };
        let child = Command::new(anvil_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(&mining)
            .args(["--chain-id", "31337"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting anvil");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut anvil = Anvil {
            child: Some(child),
            dir,
            addr,
            url: format!("http://127.0.0.1:{port}"),
            keys: Vec::new(),
            addresses: Vec::new(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || anvil
                .try_rpc("eth_chainId", serde_json::json!([]))
                .is_some()),
            "anvil did not answer; log:\n{}",
            anvil.log()
        );
        let log = anvil.log();
        let section = |title: &str| -> Vec<String> {
            log.split(title)
                .nth(1)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    l.starts_with('(')
                        .then(|| l.split_whitespace().nth(1))
                        .flatten()
                        .map(|w| w.trim_start_matches("0x").to_string())
                })
                .take(10)
                .collect()
        };
        anvil.keys = section("Private Keys");
        anvil.addresses = section("Available Accounts")
            .into_iter()
            .map(|a| format!("0x{a}"))
            .collect();
        assert_eq!(anvil.keys.len(), 10, "anvil's keys; log:\n{log}");
        anvil
    }

    /// Writes development key `i` to `path`, mode 0600, as an operator would store it.
    pub fn write_key(&self, i: usize, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, format!("0x{}\n", self.keys[i])).expect("key file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    fn try_rpc(&self, method: &str, params: serde_json::Value) -> Option<serde_json::Value> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let r = http_post_typed(
            self.addr,
            "/",
            "application/json",
            body.to_string().as_bytes(),
        )
        .ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// One JSON-RPC call; its `result` (panics on a transport error or an RPC error).
    pub fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let answer = self
            .try_rpc(method, params)
            .unwrap_or_else(|| panic!("{method}: anvil did not answer"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// A quantity result (`"0x…"`) as a number.
    pub fn quantity(value: &serde_json::Value) -> u128 {
        let text = value.as_str().expect("a hex quantity");
        u128::from_str_radix(text.trim_start_matches("0x"), 16).expect("a hex quantity")
    }

    /// The native balance of `address`, in wei.
    pub fn balance(&self, address: &str) -> u128 {
        Self::quantity(&self.rpc("eth_getBalance", serde_json::json!([address, "latest"])))
    }

    /// The latest block number.
    pub fn block_number(&self) -> u64 {
        Self::quantity(&self.rpc("eth_blockNumber", serde_json::json!([]))) as u64
    }

    /// Mines one block now.
    pub fn mine(&self) {
        self.rpc("evm_mine", serde_json::json!([]));
    }

    /// Transactions waiting in anvil's pool.
    pub fn pending_transactions(&self) -> u64 {
        Self::quantity(&self.rpc("txpool_status", serde_json::json!([]))["pending"]) as u64
    }

    /// Deploys a contract from development account `from` (unlocked in anvil): `code` is its
    /// creation bytecode with the constructor's arguments; answers its address.
    pub fn deploy(&self, from: usize, code: &[u8]) -> String {
        let hash = self.rpc(
            "eth_sendTransaction",
            serde_json::json!([{
                "from": self.addresses[from],
                "data": format!("0x{}", hex::encode(code)),
                "gas": "0x4c4b40",
            }]),
        );
        let mut receipt = serde_json::Value::Null;
        assert!(
            wait_until(Duration::from_secs(20), || {
                receipt = self.rpc("eth_getTransactionReceipt", serde_json::json!([hash]));
                !receipt.is_null()
            }),
            "the deployment was not mined"
        );
        assert_eq!(receipt["status"], "0x1", "deployment failed: {receipt}");
        receipt["contractAddress"].as_str().unwrap().to_string()
    }

    /// Freezes anvil (SIGSTOP): it keeps its socket, answers nothing.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen anvil run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        crate::signal_process(self.child.as_ref().expect("anvil runs").id(), sig);
    }

    /// anvil's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("anvil.log")).unwrap_or_default()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
