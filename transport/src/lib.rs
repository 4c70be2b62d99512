//! Wire protocols of `mhc-node`.
//!
//! - [`parse_range`], [`if_none_match_matches`], [`if_range_matches`]: the RFC 9110 logic of the
//!   viewer plane, without sockets, so it is tested on its own.
//! - [`headers`]: header names and fixed values players and CDNs see.
//!
//! The QUIC node-to-node protocol (sans-I/O messages and the quinn socket layer) lands here next,
//! following the same split as quinn-proto / quinn.

mod conditional;
pub mod headers;

pub use conditional::{
    content_range, if_none_match_matches, if_range_matches, parse_range, unsatisfied_range,
    RangeOutcome,
};
