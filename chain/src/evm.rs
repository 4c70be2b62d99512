//! An EVM chain as the origin uses it: [`Rpc`] reads over JSON-RPC on HTTP (any EVM chain:
//! Ethereum, Polygon, Besu, anvil), and [`Account`] signs EIP-1559 transactions locally.
//!
//! Transactions are signed *before* they are sent and their raw bytes kept by the caller: the
//! hash is known before anything leaves the node, so a job recorded with its hash and raw bytes
//! can be re-broadcast after a crash (the same bytes, the same hash, the same nonce) and never
//! turns into a second transaction.
//!
//! Every call is bounded by [`RPC_TIMEOUT`]: a chain that stops answering (a stopped node keeps
//! its TCP backlog open) is an error, not a hang.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockNumberOrTag;
use alloy::network::{ReceiptResponse, TransactionResponse, TxSignerSync};
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::TransportError;
use thiserror::Error;

/// Longest wait for one JSON-RPC answer.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

alloy::sol! {
    /// The two ERC-20 functions a payout needs.
    interface Erc20 {
        event Transfer(address indexed from, address indexed to, uint256 value);
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address owner) external view returns (uint256);
    }
}

/// What went wrong talking to a chain, or with its key.
#[derive(Debug, Error)]
pub enum ChainError {
    /// The key file could not be used.
    #[error("key file {path}: {problem}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// The RPC URL is not a URL.
    #[error("rpc_url {0:?} is not an http(s) URL")]
    Url(String),
    /// The chain did not answer in time.
    #[error("{method}: no answer from the chain within {}s", RPC_TIMEOUT.as_secs())]
    Timeout {
        /// The JSON-RPC method.
        method: &'static str,
    },
    /// The chain answered with an error, or the connection failed.
    #[error("{method}: {message}")]
    Rpc {
        /// The JSON-RPC method.
        method: &'static str,
        /// What the transport or the node said.
        message: String,
        /// `true` when the node answered with a JSON-RPC error (it received the request and
        /// refused it); `false` when the request may not have reached it.
        refused: bool,
    },
    /// The node serves another chain than the configuration names.
    #[error(
        "the RPC endpoint serves chain {actual}, the configuration says chain_id = {expected}"
    )]
    WrongChain {
        /// `chain_id` from the configuration.
        expected: u64,
        /// What `eth_chainId` answered.
        actual: u64,
    },
    /// Signing failed (a key that cannot sign; should not happen with a valid key).
    #[error("signing: {0}")]
    Sign(String),
}

impl ChainError {
    /// `true` when the node refused a raw transaction because it already has it (a re-broadcast
    /// after a crash or of a stuck transaction), which is not a failure.
    pub fn is_already_known(&self) -> bool {
        match self {
            ChainError::Rpc { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("already known")
                    || m.contains("already imported")
                    || m.contains("known transaction")
            }
            _ => false,
        }
    }

    /// `true` when the node received the request and answered it with an error (as opposed to
    /// a timeout or a connection that failed, after which it may or may not have it).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ChainError::Rpc { refused: true, .. })
    }

    /// `true` when the node refused a raw transaction because its nonce is already used
    /// (mined, possibly by an earlier broadcast of the same transaction).
    pub fn is_nonce_too_low(&self) -> bool {
        match self {
            ChainError::Rpc { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("nonce too low") || m.contains("nonce is too low")
            }
            _ => false,
        }
    }
}

/// Runs one RPC call with [`RPC_TIMEOUT`].
async fn bounded<T>(
    method: &'static str,
    call: impl std::future::IntoFuture<Output = Result<T, TransportError>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(RPC_TIMEOUT, call.into_future()).await {
        Err(_) => Err(ChainError::Timeout { method }),
        Ok(Err(e)) => Err(ChainError::Rpc {
            method,
            refused: e.as_error_resp().is_some(),
            message: e.to_string(),
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

/// A mined transaction's receipt, as far as the origin cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The block it is in.
    pub block: u64,
    /// That block's hash.
    pub block_hash: B256,
    /// `true` if it executed successfully (a reverted ERC-20 transfer is mined but failed).
    pub success: bool,
    /// Gas it used.
    pub gas_used: u64,
    /// The ERC-20 `Transfer` events it logged: `(token, from, to, amount)`.
    pub token_transfers: Vec<(Address, Address, Address, U256)>,
}

/// A transaction as the chain reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTx {
    /// Who signed it (recovered from the signature by the node).
    pub from: Address,
    /// The recipient (`None` for a contract creation).
    pub to: Option<Address>,
    /// Its input data.
    pub input: Bytes,
    /// Its nonce.
    pub nonce: u64,
    /// The block it is in, with that block's hash, or `None` while pending.
    pub block: Option<(u64, B256)>,
}

/// A JSON-RPC endpoint of one chain.
#[derive(Clone)]
pub struct Rpc {
    provider: RootProvider,
    url: String,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc").field("url", &self.url).finish()
    }
}

impl Rpc {
    /// An endpoint at `url` (`http://` or `https://`). Nothing is sent yet.
    ///
    /// # Errors
    /// [`ChainError::Url`].
    pub fn new(url: &str) -> Result<Self, ChainError> {
        let parsed: alloy::transports::http::reqwest::Url =
            url.parse().map_err(|_| ChainError::Url(url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ChainError::Url(url.into()));
        }
        // reqwest is built without a TLS provider of its own: it takes the process default,
        // which is ring's (as for every TLS of this node). Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            provider: RootProvider::new_http(parsed),
            url: url.into(),
        })
    }

    /// The URL it was made with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64, ChainError> {
        bounded("eth_chainId", self.provider.get_chain_id()).await
    }

    /// Checks that the endpoint serves chain `expected`.
    ///
    /// # Errors
    /// [`ChainError::WrongChain`], or the call's error.
    pub async fn check_chain_id(&self, expected: u64) -> Result<(), ChainError> {
        let actual = self.chain_id().await?;
        if actual != expected {
            return Err(ChainError::WrongChain { expected, actual });
        }
        Ok(())
    }

    /// `eth_blockNumber`: the latest block.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        bounded("eth_blockNumber", self.provider.get_block_number()).await
    }

    /// The hash of the canonical block at `number`, if the chain has it.
    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = bounded(
            "eth_getBlockByNumber",
            self.provider
                .get_block_by_number(BlockNumberOrTag::Number(number)),
        )
        .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The account's nonce counting transactions still in the node's pool.
    pub async fn pending_nonce(&self, address: Address) -> Result<u64, ChainError> {
        bounded(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(address).pending(),
        )
        .await
    }

    /// The account's nonce counting mined transactions only.
    pub async fn mined_nonce(&self, address: Address) -> Result<u64, ChainError> {
        bounded(
            "eth_getTransactionCount",
            self.provider.get_transaction_count(address).latest(),
        )
        .await
    }

    /// The node's EIP-1559 fee suggestion `(max_fee_per_gas, max_priority_fee_per_gas)`.
    pub async fn fees(&self) -> Result<(u128, u128), ChainError> {
        let f = bounded("eth_feeHistory", self.provider.estimate_eip1559_fees()).await?;
        Ok((f.max_fee_per_gas, f.max_priority_fee_per_gas))
    }

    /// `eth_estimateGas` for a call from `from`.
    pub async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        value: U256,
        input: Bytes,
    ) -> Result<u64, ChainError> {
        let request = TransactionRequest::default()
            .from(from)
            .to(to)
            .value(value)
            .input(input.into());
        bounded("eth_estimateGas", self.provider.estimate_gas(request)).await
    }

    /// `eth_sendRawTransaction`. A node that already has the transaction answers an error
    /// that [`ChainError::is_already_known`] recognises.
    pub async fn send_raw(&self, raw: &[u8]) -> Result<B256, ChainError> {
        let pending = bounded(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await?;
        Ok(*pending.tx_hash())
    }

    /// The receipt of `hash`, once mined.
    pub async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, ChainError> {
        let receipt = bounded(
            "eth_getTransactionReceipt",
            self.provider.get_transaction_receipt(hash),
        )
        .await?;
        Ok(receipt.and_then(|r| {
            use alloy::sol_types::SolEvent;
            let token_transfers = r
                .logs()
                .iter()
                .filter_map(|log| {
                    let topics = log.topics();
                    let data = &log.data().data;
                    (topics.len() == 3
                        && topics[0] == Erc20::Transfer::SIGNATURE_HASH
                        && data.len() == 32)
                        .then(|| {
                            (
                                log.address(),
                                Address::from_word(topics[1]),
                                Address::from_word(topics[2]),
                                U256::from_be_slice(data),
                            )
                        })
                })
                .collect();
            Some(Receipt {
                block: r.block_number()?,
                block_hash: r.block_hash()?,
                success: r.status(),
                gas_used: r.gas_used(),
                token_transfers,
            })
        }))
    }

    /// The transaction `hash`, if the node knows it.
    pub async fn transaction(&self, hash: B256) -> Result<Option<ChainTx>, ChainError> {
        use alloy::consensus::Transaction as _;
        let tx = bounded(
            "eth_getTransactionByHash",
            self.provider.get_transaction_by_hash(hash),
        )
        .await?;
        Ok(tx.map(|t| ChainTx {
            from: t.from(),
            to: t.to(),
            input: t.input().clone(),
            nonce: t.nonce(),
            block: t.block_number.zip(t.block_hash),
        }))
    }

    /// The native balance of `address` at the latest block, in wei.
    pub async fn balance(&self, address: Address) -> Result<U256, ChainError> {
        bounded("eth_getBalance", self.provider.get_balance(address)).await
    }

    /// `token.balanceOf(owner)` at the latest block.
    pub async fn erc20_balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        let input = Erc20::balanceOfCall { owner }.abi_encode();
        let request = TransactionRequest::default()
            .to(token)
            .input(Bytes::from(input).into());
        let out = bounded("eth_call", self.provider.call(request)).await?;
        Erc20::balanceOfCall::abi_decode_returns(&out).map_err(|e| ChainError::Rpc {
            method: "eth_call",
            message: format!("balanceOf answer: {e}"),
            refused: false,
        })
    }
}

/// The input of an ERC-20 `transfer(to, amount)` call.
pub fn erc20_transfer_input(to: Address, amount: U256) -> Bytes {
    Erc20::transferCall { to, amount }.abi_encode().into()
}

/// A transaction to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsigned {
    /// The recipient.
    pub to: Address,
    /// Wei sent along.
    pub value: U256,
    /// Input data.
    pub input: Bytes,
    /// The account's nonce it uses.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// EIP-1559 fee cap per gas.
    pub max_fee_per_gas: u128,
    /// EIP-1559 tip per gas.
    pub max_priority_fee_per_gas: u128,
}

/// A signed transaction, ready to (re-)broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// Its hash: what the chain will call it.
    pub hash: B256,
    /// Its EIP-2718 encoding, for `eth_sendRawTransaction`.
    pub raw: Vec<u8>,
}

/// A secp256k1 account on one chain, whose key signs locally.
#[derive(Clone)]
pub struct Account {
    signer: PrivateKeySigner,
    chain_id: u64,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("address", &self.address())
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// The account whose private key is in `path`: 32 bytes as hex (`0x` optional, surrounding
    /// whitespace ignored), in a file no one but its owner may read (mode `0600` or stricter).
    ///
    /// # Errors
    /// [`ChainError::Key`] naming the file: unreadable, readable by group or others, not 32
    /// bytes of hex, or not a valid secp256k1 scalar.
    pub fn load(path: &Path, chain_id: u64) -> Result<Self, ChainError> {
        let fail = |problem: String| ChainError::Key {
            path: path.display().to_string(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "mode {mode:04o}: a private key must not be readable by group or others (chmod 600)"
                )));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let hex_text = text.trim();
        let hex_text = hex_text.strip_prefix("0x").unwrap_or(hex_text);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_text, &mut bytes)
            .map_err(|e| fail(format!("not 32 bytes of hex: {e}")))?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(bytes))
            .map_err(|e| fail(format!("not a secp256k1 private key: {e}")))?;
        Ok(Self { signer, chain_id })
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The chain it signs for (EIP-155 replay protection).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Signs `tx` as an EIP-1559 transaction.
    ///
    /// # Errors
    /// [`ChainError::Sign`].
    pub fn sign(&self, tx: &Unsigned) -> Result<SignedTx, ChainError> {
        let mut unsigned = TxEip1559 {
            chain_id: self.chain_id,
            nonce: tx.nonce,
            gas_limit: tx.gas_limit,
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
            to: TxKind::Call(tx.to),
            value: tx.value,
            access_list: Default::default(),
            input: tx.input.clone(),
        };
        let signature = self
            .signer
            .sign_transaction_sync(&mut unsigned)
            .map_err(|e| ChainError::Sign(e.to_string()))?;
        let envelope = TxEnvelope::from(unsigned.into_signed(signature));
        Ok(SignedTx {
            hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718(),
        })
    }
}

/// Parses an address written with its EIP-55 checksum (mixed case), or all lowercase.
///
/// All-lowercase is accepted because it carries no checksum to get wrong; mixed case must
/// match the checksum exactly, so a mistyped letter is caught; all-uppercase is refused.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_address(text: &str) -> Result<Address, String> {
    let Some(hex_part) = text.strip_prefix("0x") else {
        return Err(format!("{text:?} does not start with 0x"));
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not 0x and 40 hex digits"));
    }
    let address: Address = text
        .parse()
        .map_err(|e| format!("{text:?} is not an address: {e}"))?;
    if hex_part.bytes().any(|b| b.is_ascii_lowercase())
        && hex_part.bytes().all(|b| !b.is_ascii_uppercase())
    {
        return Ok(address);
    }
    let checksummed = address.to_checksum(None);
    if checksummed != text {
        return Err(format!(
            "{text:?} fails its EIP-55 checksum (the checksummed form is {checksummed})"
        ));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anvil's first development account.
    const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const DEV_ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

    fn key_file(text: &str, mode: u32) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn loads_a_hex_key_and_refuses_loose_modes_and_junk() {
        let dir = key_file(&format!("0x{DEV_KEY}\n"), 0o600);
        let account = Account::load(&dir.path().join("k"), 31337).unwrap();
        assert_eq!(account.address().to_checksum(None), DEV_ADDRESS);
        let loose = key_file(DEV_KEY, 0o644);
        let e = Account::load(&loose.path().join("k"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let junk = key_file("zz", 0o600);
        let e = Account::load(&junk.path().join("k"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hex"), "{e}");
        let zero = key_file(&"0".repeat(64), 0o600);
        assert!(Account::load(&zero.path().join("k"), 1).is_err());
    }

    #[test]
    fn signing_is_deterministic_and_names_the_hash() {
        let dir = key_file(DEV_KEY, 0o600);
        let account = Account::load(&dir.path().join("k"), 31337).unwrap();
        let tx = Unsigned {
            to: account.address(),
            value: U256::ZERO,
            input: Bytes::from_static(b"MHC1"),
            nonce: 7,
            gas_limit: 30_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        };
        let a = account.sign(&tx).unwrap();
        assert_eq!(a, account.sign(&tx).unwrap(), "RFC 6979 signatures");
        assert_eq!(a.raw[0], 2, "an EIP-1559 (type 2) envelope");
        assert_eq!(a.hash, alloy::primitives::keccak256(&a.raw));
        let b = account.sign(&Unsigned { nonce: 8, ..tx }).unwrap();
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn addresses_are_checked_against_eip55() {
        assert!(parse_address(DEV_ADDRESS).is_ok());
        assert!(parse_address(&DEV_ADDRESS.to_lowercase()).is_ok());
        // One letter's case flipped: the checksum catches it.
        let flipped = DEV_ADDRESS.replacen('F', "f", 1);
        let e = parse_address(&flipped).unwrap_err();
        assert!(e.contains("EIP-55") && e.contains(DEV_ADDRESS), "{e}");
        assert!(parse_address(&DEV_ADDRESS.to_uppercase().replacen("0X", "0x", 1)).is_err());
        assert!(parse_address("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266").is_err());
        assert!(parse_address("0x1234").is_err());
    }
}
