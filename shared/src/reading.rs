use serde::{Deserialize, Serialize};

use crate::id::{Metric, SensorId, Seq};

/// How far a value can be trusted. A device that answers with an exception or
/// not at all yields `Bad`; a value outside a point's plausible range, `Uncertain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    #[default]
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }

    pub fn from_u8(v: u8) -> Quality {
        match v {
            0 => Quality::Good,
            1 => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A value at an instant and how far to trust it: what a series holds, what
/// the live view keeps as "latest", what `live/{sensor}/{metric}` carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}

/// One measured value of one metric of one sensor at one instant.
///
/// `seq` is assigned by the agent when the reading first enters its outbox and
/// only ever grows per gateway; the collector deduplicates on (gateway, seq).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub seq: Seq,
    pub sensor: SensorId,
    pub metric: Metric,
    pub ts_ms: i64,
    pub value: f64,
    pub quality: Quality,
}

impl Reading {
    /// Its time, value and quality, without the names.
    pub fn sample(&self) -> Sample {
        Sample { ts_ms: self.ts_ms, value: self.value, quality: self.quality }
    }
}
