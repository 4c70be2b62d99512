//! Versioning of republished content: same bytes give the same manifest, changed bytes the next
//! version.

use mhc_manifest::Manifest;

/// What publishing a freshly ingested manifest amounts to, given what is already published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishDecision {
    /// Nothing published under this id yet: publish as version 1.
    First,
    /// Identical to the published version (same metadata, same bytes): publish nothing.
    Unchanged {
        /// The version already published.
        version: u64,
    },
    /// Something changed: publish as the given version (previous + 1).
    Next {
        /// The version to publish.
        version: u64,
    },
}

impl PublishDecision {
    /// The version the content has after this decision.
    pub fn version(&self) -> u64 {
        match self {
            PublishDecision::First => 1,
            PublishDecision::Unchanged { version } | PublishDecision::Next { version } => *version,
        }
    }
}

/// Compares `candidate` (as ingested, any version, unsigned) with the `published` manifest of the
/// same content id, ignoring the version number and the publisher key.
pub fn publish_version(published: Option<&Manifest>, candidate: &Manifest) -> PublishDecision {
    let Some(published) = published else {
        return PublishDecision::First;
    };
    let mut same = candidate.clone();
    same.version = published.version;
    same.publisher = published.publisher;
    if &same == published {
        PublishDecision::Unchanged {
            version: published.version,
        }
    } else {
        PublishDecision::Next {
            version: published.version + 1,
        }
    }
}
