//! ISO 8601 instants as SensorThings writes and reads them: epoch ms to
//! `2026-11-23T08:00:00.123Z` and back (offsets like `+08:00` accepted),
//! and the civil calendar fields the `$filter` date functions need. By
//! hand, a few lines, instead of a date crate for one format.

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// Calendar fields of an instant in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub ms: u32,
}

pub fn civil(ms: i64) -> Civil {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let rem = rem as u32;
    Civil { year, month, day, hour: rem / 3_600_000, minute: rem / 60_000 % 60, second: rem / 1000 % 60, ms: rem % 1000 }
}

/// `2026-11-23T08:00:00.123Z` (always UTC, always milliseconds).
pub fn format(ms: i64) -> String {
    let c = civil(ms);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", c.year, c.month, c.day, c.hour, c.minute, c.second, c.ms)
}

/// `start/end`, an ISO 8601 interval.
pub fn format_interval(start: i64, end: i64) -> String {
    format!("{}/{}", format(start), format(end))
}

/// An instant written `YYYY-MM-DDThh:mm[:ss[.fff…]](Z|±hh:mm)`, as epoch ms
/// (fractions below a millisecond are cut) and its offset in minutes; or a
/// bare date `YYYY-MM-DD` (midnight UTC). None for anything else.
pub fn parse(s: &str) -> Option<(i64, i32)> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let midnight = days_from_civil(year, month as u32, day as u32) * 86_400_000;
    if b.len() == 10 {
        return Some((midnight, 0));
    }
    if !matches!(b.get(10), Some(b'T' | b't')) || b.get(13) != Some(&b':') {
        return None;
    }
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    let mut i = 16;
    let mut second = 0;
    let mut frac_ms = 0;
    if b.get(i) == Some(&b':') {
        second = num(17, 2)?;
        i = 19;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            let first3 = format!("{:0<3}", &s[i + 1..i + 1 + digits.min(3)]);
            frac_ms = first3.parse::<i64>().ok()?;
            i += 1 + digits;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset_min: i32 = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 60 + m) as i32
        }
        _ => return None,
    };
    let local = midnight + ((hour * 60 + minute) * 60 + second) * 1000 + frac_ms;
    Some((local - offset_min as i64 * 60_000, offset_min))
}

/// An ISO 8601 duration `P[nD][T[nH][nM][n[.f]S]]` (weeks, months and years
/// are not fixed lengths and are refused) in ms, negative with a leading `-`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (sign, s) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    let s = s.strip_prefix('P')?;
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut ms: f64 = 0.0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut rest = part;
        for (u, scale) in units {
            if let Some(pos) = rest.find(*u) {
                let n: f64 = rest[..pos].parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
                ms += n * scale;
                any = true;
                rest = &rest[pos + 1..];
            }
        }
        rest.is_empty().then_some(())
    };
    take(date, &[('D', 86_400_000.0)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        take(t, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1000.0)])?;
    }
    (any && ms < 1e17).then(|| sign * ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_through_iso_8601() {
        assert_eq!(format(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(parse("2023-11-14T22:13:20.123Z"), Some((1_700_000_000_123, 0)));
        assert_eq!(parse("2023-11-15T06:13:20+08:00"), Some((1_700_000_000_000, 480)));
        assert_eq!(parse("2023-11-14T22:13Z"), Some((1_699_999_980_000, 0)));
        assert_eq!(parse("2023-11-14"), Some((1_699_920_000_000, 0)));
        assert_eq!(parse("2023-11-14T22:13:20.1234567Z").map(|t| t.0), Some(1_700_000_000_123));
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(civil(951_782_400_000), Civil { year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0, ms: 0 });
        for bad in ["2023-13-01", "2023-11-14T25:00Z", "2023-11-14T22:13:20", "yesterday", "2023-11-14T22:13:20.Z", "2023-11-14T22:13:20+8"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_in_days_hours_minutes_seconds() {
        assert_eq!(parse_duration("P1D"), Some(86_400_000));
        assert_eq!(parse_duration("PT1H30M"), Some(5_400_000));
        assert_eq!(parse_duration("P1DT0.5S"), Some(86_400_500));
        assert_eq!(parse_duration("-PT1S"), Some(-1000));
        for bad in ["P", "PT", "P1Y", "1D", "P1H", "PT-1S"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
