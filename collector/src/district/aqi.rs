//! China's air quality index (AQI, 空气质量指数) by HJ 633-2012, "Technical
//! Regulation on Ambient Air Quality Index (on trial)".
//!
//! Each pollutant's individual index (IAQI) is interpolated linearly inside
//! the breakpoint band its concentration falls in (HJ 633-2012 Table 1,
//! formula (1)) and rounded up, as the standard says; the AQI is the largest
//! IAQI, and above 50 the pollutants that reach it are the primary ones
//! (首要污染物). The dashboard works from the latest readings, so it uses the
//! bands of the hourly real-time report (实时报): the 1-hour bands for SO2,
//! NO2, CO and O3, and for PM2.5 and PM10, which have no 1-hour bands, their
//! 24-hour ones. SO2 above 800 µg/m³ (1 h) is indexed with its 24-hour bands,
//! and O3 8-hour has no band above 800, per the table's notes. The result is
//! an indicative figure for the last readings, not the official daily report.

use serde::Serialize;

/// IAQI at each breakpoint (the columns of Table 1).
const IAQI: [f64; 8] = [0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0];

/// The pollutants of HJ 633-2012, with their catalogue metric names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pollutant {
    Pm25,
    Pm10,
    So2,
    No2,
    Co,
    O3,
}

impl Pollutant {
    pub const ALL: [Pollutant; 6] = [Pollutant::Pm25, Pollutant::Pm10, Pollutant::So2, Pollutant::No2, Pollutant::Co, Pollutant::O3];

    /// The metric a sensor reports it as (µg/m³; CO in mg/m³).
    pub fn metric(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "pm25",
            Pollutant::Pm10 => "pm10",
            Pollutant::So2 => "so2",
            Pollutant::No2 => "no2",
            Pollutant::Co => "co",
            Pollutant::O3 => "o3",
        }
    }

    /// Breakpoints (concentration at each IAQI of `IAQI`), as used for the latest readings.
    fn bands(self, c: f64) -> &'static [f64] {
        match self {
            Pollutant::Pm25 => &[0.0, 35.0, 75.0, 115.0, 150.0, 250.0, 350.0, 500.0],
            Pollutant::Pm10 => &[0.0, 50.0, 150.0, 250.0, 350.0, 420.0, 500.0, 600.0],
            // 1 h; above 800 the standard indexes SO2 by its 24 h bands.
            Pollutant::So2 if c <= 800.0 => &[0.0, 150.0, 500.0, 650.0, 800.0],
            Pollutant::So2 => &[0.0, 50.0, 150.0, 475.0, 800.0, 1600.0, 2100.0, 2620.0],
            Pollutant::No2 => &[0.0, 100.0, 200.0, 700.0, 1200.0, 2340.0, 3090.0, 3840.0],
            Pollutant::Co => &[0.0, 5.0, 10.0, 35.0, 60.0, 90.0, 120.0, 150.0],
            Pollutant::O3 => &[0.0, 160.0, 200.0, 300.0, 400.0, 800.0, 1000.0, 1200.0],
        }
    }
}

/// The individual index of one pollutant at concentration `c`; above the top
/// band it is 500 (the scale's end), below zero None (not a concentration).
pub fn iaqi(p: Pollutant, c: f64) -> Option<u32> {
    if !c.is_finite() || c < 0.0 {
        return None;
    }
    let bp = p.bands(c);
    let top = bp.len() - 1;
    if c >= bp[top] {
        return Some(IAQI[top] as u32);
    }
    let i = bp.windows(2).position(|w| c >= w[0] && c < w[1]).unwrap_or(0);
    let v = (IAQI[i + 1] - IAQI[i]) / (bp[i + 1] - bp[i]) * (c - bp[i]) + IAQI[i];
    // Rounded up (向上取整); a hair over an integer from float error stays that integer.
    Some((v - 1e-9).ceil().max(0.0) as u32)
}

/// The AQI category (Table 2): level 1 优 to 6 严重污染.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Level {
    pub level: u8,
    pub name: &'static str,
    pub name_zh: &'static str,
}

pub fn level(aqi: u32) -> Level {
    let (level, name, name_zh) = match aqi {
        0..=50 => (1, "good", "优"),
        51..=100 => (2, "moderate", "良"),
        101..=150 => (3, "lightly polluted", "轻度污染"),
        151..=200 => (4, "moderately polluted", "中度污染"),
        201..=300 => (5, "heavily polluted", "重度污染"),
        _ => (6, "severely polluted", "严重污染"),
    };
    Level { level, name, name_zh }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aqi {
    pub aqi: u32,
    /// Empty when the AQI is 50 or less (the standard names none then).
    pub primary: Vec<Pollutant>,
    pub level: Level,
}

/// The AQI from whichever concentrations are known; None when none is.
pub fn aqi(concentrations: &[(Pollutant, f64)]) -> Option<Aqi> {
    let subs: Vec<(Pollutant, u32)> = concentrations.iter().filter_map(|&(p, c)| iaqi(p, c).map(|i| (p, i))).collect();
    let top = subs.iter().map(|s| s.1).max()?;
    let primary = if top > 50 { subs.iter().filter(|s| s.1 == top).map(|s| s.0).collect() } else { Vec::new() };
    Some(Aqi { aqi: top, primary, level: level(top) })
}

#[cfg(test)]
mod tests {
    use super::Pollutant::*;
    use super::*;

    // Worked by hand with formula (1) of HJ 633-2012 and its Table 1:
    // IAQI = (IAQI_hi - IAQI_lo) / (BP_hi - BP_lo) * (C - BP_lo) + IAQI_lo, rounded up.

    #[test]
    fn breakpoints_map_to_their_index_exactly() {
        assert_eq!(iaqi(Pm25, 35.0), Some(50));
        assert_eq!(iaqi(Pm25, 75.0), Some(100));
        assert_eq!(iaqi(Pm10, 150.0), Some(100));
        assert_eq!(iaqi(No2, 200.0), Some(100));
        assert_eq!(iaqi(Co, 10.0), Some(100));
        assert_eq!(iaqi(O3, 200.0), Some(100));
        assert_eq!(iaqi(So2, 500.0), Some(100));
        assert_eq!(iaqi(Pm25, 0.0), Some(0));
    }

    #[test]
    fn inside_a_band_the_index_is_interpolated_and_rounded_up() {
        // PM2.5 80: (150-100)/(115-75)*(80-75)+100 = 106.25 -> 107.
        assert_eq!(iaqi(Pm25, 80.0), Some(107));
        // PM10 160: (150-100)/(250-150)*(160-150)+100 = 105.
        assert_eq!(iaqi(Pm10, 160.0), Some(105));
        // NO2 (1 h) 150: (100-50)/(200-100)*(150-100)+50 = 75.
        assert_eq!(iaqi(No2, 150.0), Some(75));
        // PM2.5 20: 50/35*20 = 28.57 -> 29.
        assert_eq!(iaqi(Pm25, 20.0), Some(29));
        // CO (1 h) 3 mg/m3: 50/5*3 = 30.
        assert_eq!(iaqi(Co, 3.0), Some(30));
        // O3 (1 h) 250: (150-100)/(300-200)*50+100 = 125.
        assert_eq!(iaqi(O3, 250.0), Some(125));
        // PM2.5 300: (400-300)/(350-250)*(300-250)+300 = 350.
        assert_eq!(iaqi(Pm25, 300.0), Some(350));
    }

    #[test]
    fn so2_above_800_uses_its_24_hour_bands_and_the_scale_ends_at_500() {
        // 1 h bands up to 800 (IAQI 200): 650 -> 150, 700 -> 150+50/150*50 = 166.67 -> 167.
        assert_eq!(iaqi(So2, 700.0), Some(167));
        // 1000 is past the 1 h table: 24 h bands, (300-200)/(1600-800)*(200)+200 = 225.
        assert_eq!(iaqi(So2, 1000.0), Some(225));
        assert_eq!(iaqi(Pm25, 650.0), Some(500));
        assert_eq!(iaqi(Pm25, -1.0), None);
        assert_eq!(iaqi(Pm25, f64::NAN), None);
    }

    #[test]
    fn the_aqi_is_the_largest_index_and_names_the_primary_pollutant_above_50() {
        // PM2.5 80 -> 107, PM10 160 -> 105, NO2 150 -> 75: AQI 107, lightly polluted, PM2.5.
        let a = aqi(&[(Pm25, 80.0), (Pm10, 160.0), (No2, 150.0)]).unwrap();
        assert_eq!((a.aqi, a.primary.clone(), a.level.level, a.level.name_zh), (107, vec![Pm25], 3, "轻度污染"));
        // Two pollutants at the same top index are both primary.
        let tie = aqi(&[(Pm25, 75.0), (Pm10, 150.0)]).unwrap();
        assert_eq!((tie.aqi, tie.primary), (100, vec![Pm25, Pm10]));
        // At 50 or below there is no primary pollutant.
        let clean = aqi(&[(Pm25, 20.0), (No2, 40.0)]).unwrap();
        assert_eq!((clean.aqi, clean.primary.len(), clean.level.name), (29, 0, "good"));
        assert_eq!(aqi(&[]), None);
    }

    #[test]
    fn levels_follow_table_2() {
        let names: Vec<u8> = [0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500].iter().map(|&a| level(a).level).collect();
        assert_eq!(names, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]);
    }
}
