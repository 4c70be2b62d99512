//! Wallet addresses of crypto payout methods: which networks are EVM chains, and EIP-55.

/// Networks whose addresses are Ethereum addresses (EIP-55 checked at account creation, and
/// paid on chain by `[plugins.royalty.crypto]`).
pub const EVM_NETWORKS: &[&str] = &[
    "ethereum", "evm", "polygon", "besu", "arbitrum", "optimism", "base", "gnosis", "anvil",
];

/// Checks an Ethereum address: `0x` and 40 hex digits, and when written in mixed case its EIP-55
/// checksum (all-lowercase carries no checksum; all-uppercase is refused as a likely mangling).
///
/// # Errors
/// A sentence saying what is wrong, with the correctly checksummed form when only that is.
pub fn check_evm_address(address: &str) -> Result<(), String> {
    use sha3::{Digest, Keccak256};
    let Some(hex_part) = address.strip_prefix("0x") else {
        return Err(format!(
            "{address:?} is not an Ethereum address (0x and 40 hex digits)"
        ));
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{address:?} is not an Ethereum address (0x and 40 hex digits)"
        ));
    }
    let lower = hex_part.to_ascii_lowercase();
    if hex_part == lower {
        return Ok(());
    }
    let hash = Keccak256::digest(lower.as_bytes());
    let checksummed: String = lower
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    if checksummed != hex_part {
        return Err(format!(
            "{address:?} fails its EIP-55 checksum (a mistyped character?); the checksummed form of these digits is 0x{checksummed}"
        ));
    }
    Ok(())
}
