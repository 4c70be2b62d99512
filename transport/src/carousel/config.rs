//! [`CarouselConfig`], the settings of the sender, and [`CarouselError`], why an object could not
//! be put on the carousel. Below both the sender and its objects, which are encoded with these
//! settings.

use super::config_error::ConfigError;
use super::packet::{
    DEFAULT_MAX_OBJECT_BYTES, DEFAULT_SYMBOL_SIZE, HEADER_LEN, MAX_SOURCE_SYMBOLS_PER_BLOCK,
    MIN_SYMBOL_SIZE, PAYLOAD_ID_LEN, SYMBOL_ALIGNMENT,
};

/// Default bound on source symbols per block.
///
/// Decoding a block solves a system of about K equations at once, so a smaller block decodes
/// with less latency and working memory, while a larger one spreads loss over more symbols.
/// With the default symbol size, 4096 symbols is a 4.5 MiB block: one block for any segment or
/// manifest, and about 15 blocks for a 64 MiB object. See the `carousel` benchmark for the
/// encode and decode rates this gives.
pub const DEFAULT_MAX_BLOCK_SYMBOLS: u32 = 4096;

/// Largest symbol size for which a datagram still fits in one UDP datagram over IPv4
/// (65 507 payload bytes) after the header and payload id, rounded down to the alignment.
const MAX_SYMBOL_SIZE: u16 = {
    let room = 65_507 - HEADER_LEN - PAYLOAD_ID_LEN;
    (room - room % SYMBOL_ALIGNMENT as usize) as u16
};

/// Largest repair overhead accepted: ten times the source symbols per cycle is already far past
/// any useful setting, and the bound keeps repair ids well inside the 24-bit ESI space.
const MAX_REPAIR_OVERHEAD_PERCENT: u32 = 1000;

/// raptorq's bound on the transfer length (40 bits, less the RFC 6330 errata 5548 margin).
const MAX_TRANSFER_LENGTH: u64 = 942_574_504_275;

/// Settings of a [`Carousel`](super::Carousel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarouselConfig {
    /// Symbol size `T` in bytes, a multiple of 8 from 256 to 65 440. Default
    /// [`DEFAULT_SYMBOL_SIZE`] (1160), which keeps datagrams within the IPv6 minimum MTU.
    pub symbol_size: u16,
    /// Repair symbols sent per cycle, as a percentage of each block's source symbols (rounded
    /// up, at least one when non-zero), 0 to 1000. Default 25.
    pub repair_overhead_percent: u32,
    /// Largest object accepted, in bytes. Default [`DEFAULT_MAX_OBJECT_BYTES`] (64 MiB).
    pub max_object_bytes: u64,
    /// Most source symbols per block, 1 to 56 403 (RaptorQ's `K'max`). Default
    /// [`DEFAULT_MAX_BLOCK_SYMBOLS`] (4096).
    pub max_block_symbols: u32,
}

impl Default for CarouselConfig {
    fn default() -> Self {
        CarouselConfig {
            symbol_size: DEFAULT_SYMBOL_SIZE,
            repair_overhead_percent: 25,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            max_block_symbols: DEFAULT_MAX_BLOCK_SYMBOLS,
        }
    }
}

impl CarouselConfig {
    /// Checks every field against the ranges documented on it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field out of range, including a `max_object_bytes`
    /// that would need more than 255 source blocks at this symbol and block size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self.symbol_size;
        if !(MIN_SYMBOL_SIZE..=MAX_SYMBOL_SIZE).contains(&t)
            || !t.is_multiple_of(u16::from(SYMBOL_ALIGNMENT))
        {
            return Err(ConfigError::new(
                "symbol_size",
                format!(
                    "{t} is not a multiple of {SYMBOL_ALIGNMENT} from {MIN_SYMBOL_SIZE} to {MAX_SYMBOL_SIZE}"
                ),
            ));
        }
        if self.repair_overhead_percent > MAX_REPAIR_OVERHEAD_PERCENT {
            return Err(ConfigError::new(
                "repair_overhead_percent",
                format!(
                    "{} is above {MAX_REPAIR_OVERHEAD_PERCENT}",
                    self.repair_overhead_percent
                ),
            ));
        }
        if !(1..=MAX_SOURCE_SYMBOLS_PER_BLOCK).contains(&self.max_block_symbols) {
            return Err(ConfigError::new(
                "max_block_symbols",
                format!(
                    "{} is outside 1..={MAX_SOURCE_SYMBOLS_PER_BLOCK}",
                    self.max_block_symbols
                ),
            ));
        }
        let max = self.max_object_bytes;
        let blocks = max
            .div_ceil(u64::from(t))
            .div_ceil(u64::from(self.max_block_symbols));
        if max == 0 || max > MAX_TRANSFER_LENGTH || blocks > 255 {
            return Err(ConfigError::new(
                "max_object_bytes",
                format!(
                    "{max} is 0, above {MAX_TRANSFER_LENGTH}, or needs more than 255 blocks of \
                     {} symbols of {t} bytes",
                    self.max_block_symbols
                ),
            ));
        }
        Ok(())
    }
}

/// Why an object could not be put on the carousel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarouselError {
    /// The [`CarouselConfig`] is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The object has no bytes; the carousel carries no empty objects.
    #[error("empty object")]
    EmptyObject,
    /// The object is longer than `max_object_bytes`.
    #[error("object of {length} bytes exceeds the {max}-byte limit")]
    ObjectTooLarge {
        /// The object's length.
        length: u64,
        /// The configured `max_object_bytes`.
        max: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let ok = CarouselConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let bad = |config: CarouselConfig, field: &str| {
            assert_eq!(config.validate().unwrap_err().field, field);
        };
        bad(
            CarouselConfig {
                symbol_size: 1161,
                ..ok.clone()
            },
            "symbol_size",
        );
        bad(
            CarouselConfig {
                symbol_size: 128,
                ..ok.clone()
            },
            "symbol_size",
        );
        bad(
            CarouselConfig {
                max_block_symbols: 0,
                ..ok.clone()
            },
            "max_block_symbols",
        );
        bad(
            CarouselConfig {
                max_block_symbols: 100,
                ..ok.clone()
            },
            "max_object_bytes",
        );
        bad(
            CarouselConfig {
                repair_overhead_percent: 5000,
                ..ok
            },
            "repair_overhead_percent",
        );
    }
}
