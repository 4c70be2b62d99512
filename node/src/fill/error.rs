//! Why a fill failed, kept precise enough to steer: who caused it, whether asking again may
//! help, and the label it is counted under in `mhc_fill_failures_total{reason}`.

use mhc_transport::{ErrorOrigin, QuicError};

use crate::core::admission::Refusal;

/// What went wrong with one parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The parent could not be reached, the connection was lost, or the parent missed a
    /// deadline (connect, first byte, body rate). Another parent is asked, and this one is
    /// avoided for a while like one that lied: a dead or stalling parent tried first every
    /// time would cost every fill its timeout.
    Unreachable,
    /// The parent broke the protocol (a frame, header or body that is not what the request
    /// asks for) or is not the node it should be. Penalised.
    Protocol,
    /// The parent sent bytes that do not match the signed manifest (or announced a size the
    /// manifest contradicts). Penalised.
    Verification,
    /// The parent sent a manifest that does not decode, is for another content, or is not
    /// signed by a trusted publisher. Penalised.
    BadManifest,
    /// The parent answered that it is busy or failed itself; asking again later may help.
    Busy,
    /// This node could not send the request or store the answer.
    Local,
    /// The parent presented no certificate a trusted operator signed: it is no member, and
    /// nothing it sends is taken. Penalised.
    NotEnrolled,
    /// The parent does not admit this node (its certificate expired, was revoked, or is not
    /// signed by an operator that parent trusts): this node's problem, not the parent's.
    Refused,
}

impl FailureReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Unreachable => "unreachable",
            FailureReason::Protocol => "protocol",
            FailureReason::Verification => "verification",
            FailureReason::BadManifest => "bad_manifest",
            FailureReason::Busy => "busy",
            FailureReason::Local => "local",
            FailureReason::NotEnrolled => "not_enrolled",
            FailureReason::Refused => "refused",
        }
    }

    /// Who caused it.
    pub fn origin(self) -> ErrorOrigin {
        match self {
            FailureReason::Unreachable => ErrorOrigin::Connection,
            FailureReason::Protocol
            | FailureReason::Verification
            | FailureReason::BadManifest
            | FailureReason::Busy
            | FailureReason::NotEnrolled => ErrorOrigin::Peer,
            FailureReason::Local | FailureReason::Refused => ErrorOrigin::Local,
        }
    }

    /// Whether the parent is avoided for a while: it sent something no honest, working parent
    /// sends, or could not deliver in time.
    pub fn penalises(self) -> bool {
        matches!(
            self,
            FailureReason::Unreachable
                | FailureReason::Protocol
                | FailureReason::Verification
                | FailureReason::BadManifest
                | FailureReason::NotEnrolled
        )
    }

    /// The reason of a transport error, from its origin (pingora's idea: the error says who
    /// caused it).
    pub fn of_quic(err: &QuicError) -> Self {
        match err.origin() {
            ErrorOrigin::Local => FailureReason::Local,
            ErrorOrigin::Connection => FailureReason::Unreachable,
            // A reset stream is a parent shutting down or dropping the request, not a lie.
            ErrorOrigin::Peer if matches!(err, QuicError::StreamReset { .. }) => {
                FailureReason::Busy
            }
            // Another node answers at the parent's address: the parent is not reachable there,
            // and the node that answered did nothing wrong (it proved who it is).
            ErrorOrigin::Peer if matches!(err, QuicError::WrongPeer { .. }) => {
                FailureReason::Unreachable
            }
            ErrorOrigin::Peer => FailureReason::Protocol,
        }
    }
}

/// Why a request to a parent brought no answer to look at.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The transport failed.
    #[error(transparent)]
    Quic(#[from] QuicError),
    /// The parent's hello carried no certificate a trusted operator signed for its key.
    #[error("parent is not enrolled: {0}")]
    NotEnrolled(#[from] Refusal),
    /// The parent does not admit this node (the reason is the parent's).
    #[error("parent does not admit this node: {0}")]
    Refused(String),
    /// The parent answered the hello with something else than a hello.
    #[error("unexpected answer to hello: {0}")]
    Unexpected(String),
    /// Connecting and saying hello took longer than `upstream.connect_timeout`.
    #[error("no connection within {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// The last attempt to connect to this parent, less than a connect timeout ago, failed
    /// for want of an answer; it is not tried again yet.
    #[error("unreachable moments ago; not tried again yet")]
    RecentlyUnreachable,
    /// The body stopped flowing: a silence longer than the first-byte timeout, or slower than
    /// the slowest accepted rate.
    #[error("body stalled after {received} of {of} bytes in {after:?}")]
    Stalled {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        of: u64,
        /// Time since the body started.
        after: std::time::Duration,
    },
}

/// The classification of the last parent failure of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub reason: FailureReason,
    /// Whether asking the same parent again (later, on a new connection) may succeed.
    pub retryable: bool,
}

impl Failure {
    /// A failure of the transport, classified by the transport.
    pub fn quic(err: &QuicError) -> Self {
        Self {
            reason: FailureReason::of_quic(err),
            retryable: err.is_retryable(),
        }
    }

    /// A failed request, classified.
    pub fn ask(err: &AskError) -> Self {
        match err {
            AskError::Quic(e) => Self::quic(e),
            AskError::NotEnrolled(_) => Self::content(FailureReason::NotEnrolled),
            AskError::Refused(_) => Self::content(FailureReason::Refused),
            AskError::Unexpected(_) => Self::content(FailureReason::Protocol),
            AskError::ConnectTimeout(_)
            | AskError::RecentlyUnreachable
            | AskError::Stalled { .. } => Self {
                reason: FailureReason::Unreachable,
                retryable: true,
            },
        }
    }

    /// A failure of the answer's content (checked here, not by the transport).
    pub fn content(reason: FailureReason) -> Self {
        Self {
            reason,
            retryable: matches!(reason, FailureReason::Busy),
        }
    }
}

/// Why a fill failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FillError {
    /// Every parent asked said it does not have the content (or the segment).
    #[error("not found upstream: {0}")]
    NotFound(String),
    /// Every parent failed otherwise; `last` is how the last one failed.
    #[error("every parent failed: {detail}")]
    Unavailable {
        /// What each parent did, for operators.
        detail: String,
        /// The last parent's failure.
        last: Failure,
    },
    /// This node has no parent to ask (an origin, or an edge with none configured or alive).
    #[error("no parent to fill from")]
    NoParent,
    /// This node failed (a task or the store), not its parents.
    #[error("fill failed here: {0}")]
    Local(String),
}

impl FillError {
    /// Who caused it: [`ErrorOrigin::Peer`] when a parent broke the protocol or lied,
    /// [`ErrorOrigin::Connection`] when parents could not be reached, [`ErrorOrigin::Local`]
    /// for this node's own failures and when there is no parent to ask.
    pub fn origin(&self) -> ErrorOrigin {
        match self {
            FillError::NotFound(_) => ErrorOrigin::Peer,
            FillError::Unavailable { last, .. } => last.reason.origin(),
            FillError::NoParent | FillError::Local(_) => ErrorOrigin::Local,
        }
    }

    /// Whether asking again later may succeed (an edge with no alive parent now may have one
    /// after the next heartbeat).
    pub fn is_retryable(&self) -> bool {
        match self {
            FillError::NotFound(_) => false,
            FillError::NoParent => true,
            FillError::Unavailable { last, .. } => last.retryable,
            FillError::Local(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_that_lie_break_the_protocol_or_miss_deadlines_are_penalised() {
        use FailureReason::*;
        for r in [Busy, Local, Refused] {
            assert!(!r.penalises(), "{}", r.label());
        }
        for r in [Protocol, Verification, BadManifest, NotEnrolled] {
            assert!(r.penalises(), "{}", r.label());
            assert_eq!(r.origin(), ErrorOrigin::Peer);
        }
        assert!(Unreachable.penalises());
        for e in [
            AskError::ConnectTimeout(std::time::Duration::from_secs(2)),
            AskError::RecentlyUnreachable,
            AskError::Stalled {
                received: 1,
                of: 2,
                after: std::time::Duration::from_secs(5),
            },
        ] {
            let f = Failure::ask(&e);
            assert_eq!((f.reason, f.retryable), (Unreachable, true), "{e}");
        }
        assert_eq!(
            FailureReason::of_quic(&QuicError::Timeout(std::time::Duration::from_secs(1))),
            Unreachable
        );
        assert_eq!(
            FailureReason::of_quic(&QuicError::BodyTooLarge {
                body_len: 2,
                max: 1
            }),
            Protocol
        );
        assert_eq!(
            FailureReason::of_quic(&QuicError::StreamReset { code: 0 }),
            Busy
        );
        let elsewhere = QuicError::WrongPeer {
            addr: "127.0.0.1:1".parse().unwrap(),
            expected: libp2p::PeerId::random(),
        };
        assert_eq!(FailureReason::of_quic(&elsewhere), Unreachable);
    }

    #[test]
    fn a_fill_error_keeps_the_class_of_its_last_failure() {
        let e = FillError::Unavailable {
            detail: String::new(),
            last: Failure::quic(&QuicError::Timeout(std::time::Duration::from_secs(1))),
        };
        assert_eq!(e.origin(), ErrorOrigin::Connection);
        assert!(e.is_retryable());
        let e = FillError::Unavailable {
            detail: String::new(),
            last: Failure::content(FailureReason::Verification),
        };
        assert_eq!(e.origin(), ErrorOrigin::Peer);
        assert!(!e.is_retryable());
    }
}
