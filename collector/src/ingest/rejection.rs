//! Why a batch was refused: one label per reason, the same in the log, in
//! `citysense_batches_rejected_total{reason=…}` and in the docs.

use shared::BatchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// Not a postcard `Batch` at all (or empty).
    Undecodable,
    UnknownVersion,
    TooLarge,
    /// Decoded, but breaks the batch rules (order, duplicates inside it).
    Invalid,
    /// The batch names another gateway than its topic.
    GatewayMismatch,
    /// Its HMAC is not that of the topic's gateway's key.
    Unauthenticated,
    /// Batch keys are in use and this gateway has none.
    UnknownGateway,
    /// Over `mqtt.gateway_rate`; not acknowledged, so the agent resends it.
    RateLimited,
    /// A sensor or metric id that a config would refuse (`shared::topics::valid_id`):
    /// markup, control characters, `/+#` or over 128 bytes never reach the store.
    InvalidId,
    /// It would move its gateway's sequence further than the gateway can
    /// have produced readings since it was last heard (`dedup::JumpLimit`).
    SeqJump,
    /// A new outbox epoch for a gateway that already has `MAX_EPOCHS`.
    EpochLimit,
}

impl Rejection {
    pub const ALL: [Rejection; 11] = [
        Rejection::Undecodable,
        Rejection::UnknownVersion,
        Rejection::TooLarge,
        Rejection::Invalid,
        Rejection::GatewayMismatch,
        Rejection::Unauthenticated,
        Rejection::UnknownGateway,
        Rejection::RateLimited,
        Rejection::InvalidId,
        Rejection::SeqJump,
        Rejection::EpochLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::Undecodable => "undecodable",
            Rejection::UnknownVersion => "unknown_version",
            Rejection::TooLarge => "too_large",
            Rejection::Invalid => "invalid",
            Rejection::GatewayMismatch => "gateway_mismatch",
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::UnknownGateway => "unknown_gateway",
            Rejection::RateLimited => "rate_limited",
            Rejection::SeqJump => "seq_jump",
            Rejection::EpochLimit => "epoch_limit",
            Rejection::InvalidId => "invalid_id",
        }
    }
}

impl From<&BatchError> for Rejection {
    fn from(e: &BatchError) -> Rejection {
        match e {
            BatchError::Empty | BatchError::Undecodable(_) => Rejection::Undecodable,
            BatchError::UnknownVersion(_) => Rejection::UnknownVersion,
            BatchError::TooLarge(_) => Rejection::TooLarge,
            _ => Rejection::Invalid,
        }
    }
}
