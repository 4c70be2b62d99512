//! The error for a carousel, assembler, pacer or socket setting that cannot work.

/// A setting of [`crate::carousel::CarouselConfig`], [`crate::carousel::AssemblerConfig`] or
/// [`crate::carousel::SenderOptions`] is out of range; `field` names it as written in Rust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid carousel setting `{field}`: {reason}")]
pub struct ConfigError {
    /// The field, e.g. `"symbol_size"`.
    pub field: &'static str,
    /// What is wrong with its value, and what is accepted.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_field() {
        let err = ConfigError::new("symbol_size", "must be a multiple of 8");
        assert_eq!(
            err.to_string(),
            "invalid carousel setting `symbol_size`: must be a multiple of 8"
        );
    }
}
