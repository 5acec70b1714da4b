//! Timestamps in MQTT payloads: epoch ms, epoch seconds, or RFC 3339 with any
//! offset (`…Z`, `…+08:00`, `…-05:30`). A time written without a zone is
//! ambiguous: the sensor's local time or UTC? The `[[mqtt]] timestamp_zone`
//! rule decides (`"reject"` by default, so such a message is counted as an
//! error instead of being stored hours off).

use std::fmt;

use serde::Deserialize;

/// What a zone-less RFC 3339 time means: `timestamp_zone` in `[[mqtt]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Zoneless {
    /// Refused: the message is counted as an error naming `timestamp_zone`.
    #[default]
    Reject,
    /// Taken at this offset from UTC, in minutes (`"UTC"` is 0, `"+08:00"` 480).
    Offset(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: write \"reject\", \"UTC\" or an offset such as \"+08:00\"")]
pub struct BadZone(String);

impl TryFrom<String> for Zoneless {
    type Error = BadZone;
    fn try_from(s: String) -> Result<Zoneless, BadZone> {
        match s.as_str() {
            "reject" => Ok(Zoneless::Reject),
            "UTC" | "utc" | "Z" => Ok(Zoneless::Offset(0)),
            _ => offset_minutes(&s).map(Zoneless::Offset).ok_or(BadZone(s)),
        }
    }
}

impl fmt::Display for Zoneless {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zoneless::Reject => f.write_str("reject"),
            Zoneless::Offset(0) => f.write_str("UTC"),
            Zoneless::Offset(m) => write!(f, "{}{:02}:{:02}", if *m < 0 { '-' } else { '+' }, m.abs() / 60, m.abs() % 60),
        }
    }
}

/// `+HH:MM` / `-HH:MM` in minutes.
fn offset_minutes(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then_some(sign * (h * 60 + m))
}

/// Why a timestamp string was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not an RFC 3339 time (2024-05-01T08:30:00+08:00)")]
    Syntax(String),
    #[error("`{0}` has no zone (Z or +08:00); set `timestamp_zone` (\"UTC\" or \"+08:00\") to say what it means")]
    NoZone(String),
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch milliseconds of `YYYY-MM-DD(T| )HH:MM:SS[.fff][Z|±HH:MM]`.
pub fn parse_rfc3339(s: &str, zoneless: Zoneless) -> Result<i64, TimeError> {
    let bad = || TimeError::Syntax(s.to_string());
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).filter(|t| t.bytes().all(|c| c.is_ascii_digit())).and_then(|t| t.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = first3.parse::<i64>().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        "" => match zoneless {
            Zoneless::Reject => return Err(TimeError::NoZone(s.to_string())),
            Zoneless::Offset(m) => m,
        },
        o => offset_minutes(o).ok_or_else(bad)?,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset as i64 * 60;
    Ok(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_offset_gives_the_same_instant() {
        let utc = 1_700_000_000_000;
        for s in ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20+00:00", "2023-11-15T06:13:20+08:00", "2023-11-14T16:43:20-05:30", "2023-11-14 22:13:20z"] {
            assert_eq!(parse_rfc3339(s, Zoneless::Reject), Ok(utc), "{s}");
        }
        assert_eq!(parse_rfc3339("2023-11-15T06:13:20.123456+08:00", Zoneless::Reject), Ok(utc + 123));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.5Z", Zoneless::Reject), Ok(utc + 500));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z", Zoneless::Reject), Ok(-1000));
    }

    #[test]
    fn a_zoneless_time_follows_the_configured_rule() {
        assert!(matches!(parse_rfc3339("2023-11-15T06:13:20", Zoneless::Reject), Err(TimeError::NoZone(_))));
        assert_eq!(parse_rfc3339("2023-11-15T06:13:20", Zoneless::try_from("+08:00".to_string()).unwrap()), Ok(1_700_000_000_000));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20", Zoneless::try_from("UTC".to_string()).unwrap()), Ok(1_700_000_000_000));
        assert!(Zoneless::try_from("Asia/Shanghai".to_string()).is_err());
        for bad in ["2023-13-01T00:00:00Z", "2023-11-14T22:13Z", "yesterday", "2023-11-14T22:13:20+8", "2023-11-14T22:13:20."] {
            assert!(matches!(parse_rfc3339(bad, Zoneless::Offset(0)), Err(TimeError::Syntax(_))), "{bad}");
        }
    }
}
