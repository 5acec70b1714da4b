//! InfluxDB line protocol for readings, shared by the InfluxDB sink and the
//! export endpoint so both speak exactly one schema:
//!
//! `MEASUREMENT,sensor=…,gateway=…,district=…,kind=…,owner=… value=F,quality=Qi TS_MS`
//!
//! The measurement is the metric (`pm25`), or with `Scheme::Kind` the sensor's
//! kind (`air_quality`) with the metric as a tag. `quality` is 0 good,
//! 1 uncertain, 2 bad. Tags without a value (uncatalogued sensors) are left out.

use std::fmt::Write as _;

use serde::Deserialize;
use shared::Reading;

use crate::catalogue::SensorEntry;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Metric,
    Kind,
}

fn escape(out: &mut String, s: &str, also_equals: bool) {
    let escaped = |c: char| c == ',' || c == ' ' || (also_equals && c == '=') || c == '\\';
    // A newline would end the line: no tag or name may carry one; it
    // becomes a space, escaped as any space is.
    let newline = |c: char| c == '\n' || c == '\r';
    // Names and tags almost never need either: copied whole, not char by char.
    if !s.chars().any(|c| escaped(c) || newline(c)) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        if escaped(c) || newline(c) {
            out.push('\\');
        }
        out.push(if newline(c) { ' ' } else { c });
    }
}

/// Appends one line (with its newline); `None` for values line protocol
/// cannot carry (NaN, infinities).
pub fn line(out: &mut String, scheme: Scheme, r: &Reading, gateway: Option<&str>, entry: Option<&SensorEntry>) -> Option<()> {
    if !r.value.is_finite() {
        return None;
    }
    match scheme {
        Scheme::Metric => escape(out, &r.metric, false),
        Scheme::Kind => escape(out, entry.map(|e| e.kind.as_str()).unwrap_or("uncatalogued"), false),
    }
    let metric_tag = (scheme == Scheme::Kind).then_some(r.metric.as_str());
    // Tag keys in lexical order, as InfluxDB stores them.
    let tags = [
        ("district", entry.and_then(|e| e.district.as_deref())),
        ("gateway", gateway),
        ("kind", entry.map(|e| e.kind.as_str())),
        ("metric", metric_tag),
        ("owner", entry.and_then(|e| e.owner.as_deref())),
        ("sensor", Some(r.sensor.as_str())),
    ];
    for (k, v) in tags {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push(',');
            out.push_str(k);
            out.push('=');
            escape(out, v, true);
        }
    }
    let _ = write!(out, " value={:?}", r.value);
    out.push_str(",quality=");
    out.push(char::from(b'0' + r.quality.as_u8()));
    out.push_str("i ");
    out.push_str(itoa::Buffer::new().format(r.ts_ms));
    out.push('\n');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Quality;

    fn entry() -> SensorEntry {
        toml::from_str("id = \"aq-001\"\nkind = \"air_quality\"\ndistrict = \"West Lake\"\nowner = \"Environment, Bureau\"").unwrap()
    }

    fn reading(v: f64) -> Reading {
        Reading { seq: shared::Seq(1), sensor: "aq-001".into(), metric: "pm25".into(), ts_ms: 1_700_000_000_123, value: v, quality: Quality::Uncertain }
    }

    #[test]
    fn lines_escape_tags_and_keep_millisecond_timestamps() {
        let mut out = String::new();
        line(&mut out, Scheme::Metric, &reading(35.0), Some("gw-1"), Some(&entry())).unwrap();
        assert_eq!(out, "pm25,district=West\\ Lake,gateway=gw-1,kind=air_quality,owner=Environment\\,\\ Bureau,sensor=aq-001 value=35.0,quality=1i 1700000000123\n");
        out.clear();
        line(&mut out, Scheme::Kind, &reading(0.1), None, None).unwrap();
        assert_eq!(out, "uncatalogued,metric=pm25,sensor=aq-001 value=0.1,quality=1i 1700000000123\n");
        assert!(line(&mut out, Scheme::Metric, &reading(f64::NAN), None, None).is_none());
        // `=` is escaped in tags, not in the measurement; a newline becomes an escaped space.
        out.clear();
        let odd = Reading { sensor: "a=b\nc".into(), metric: "x=y".into(), ts_ms: -5, quality: Quality::Bad, ..reading(-1e21) };
        line(&mut out, Scheme::Metric, &odd, Some("g w"), None).unwrap();
        assert_eq!(out, "x=y,gateway=g\\ w,sensor=a\\=b\\ c value=-1e21,quality=2i -5\n");
        // A newline alone does not take the fast path past its escaping.
        out.clear();
        line(&mut out, Scheme::Metric, &Reading { sensor: "n\nl".into(), ..reading(1.0) }, None, None).unwrap();
        assert_eq!(out, "pm25,sensor=n\\ l value=1.0,quality=1i 1700000000123\n");
    }
}
