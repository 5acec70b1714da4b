//! Geometry for `geo.distance`, `geo.length`, `geo.intersects` and the
//! `st_*` functions: points, line strings and polygons (one outer ring, holes
//! ignored), in the planar lon/lat degrees FROST-Server also measures in.
//! Literals are WKT (`geography'POINT(120.13 30.26)'`); locations are GeoJSON.

#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    Point(f64, f64),
    Line(Vec<(f64, f64)>),
    /// The outer ring, closed (first point repeated last).
    Polygon(Vec<(f64, f64)>),
}

fn coords(text: &str) -> Result<Vec<(f64, f64)>, String> {
    text.split(',')
        .map(|pair| {
            let nums: Vec<f64> = pair.split_whitespace().map(|n| n.parse::<f64>().map_err(|_| format!("`{n}` is not a number"))).collect::<Result<_, _>>()?;
            match nums[..] {
                [x, y] | [x, y, _] if x.is_finite() && y.is_finite() => Ok((x, y)),
                _ => Err(format!("`{}` is not a coordinate pair `x y`", pair.trim())),
            }
        })
        .collect()
}

impl Geometry {
    /// `POINT(x y)`, `LINESTRING(x y, …)`, `POLYGON((x y, …))`.
    pub fn parse_wkt(s: &str) -> Result<Geometry, String> {
        let s = s.trim();
        let open = s.find('(').ok_or("expected POINT(x y), LINESTRING(x y, …) or POLYGON((x y, …))")?;
        let (kind, body) = (s[..open].trim().to_ascii_uppercase(), &s[open..]);
        let inner = body.strip_prefix('(').and_then(|b| b.strip_suffix(')')).ok_or("parentheses do not balance")?;
        match kind.as_str() {
            "POINT" => match coords(inner)?[..] {
                [(x, y)] => Ok(Geometry::Point(x, y)),
                _ => Err("POINT takes one coordinate pair".into()),
            },
            "LINESTRING" => {
                let pts = coords(inner)?;
                if pts.len() < 2 {
                    return Err("LINESTRING needs at least two points".into());
                }
                Ok(Geometry::Line(pts))
            }
            "POLYGON" => {
                // The outer ring only: `((…), (hole), …)`.
                let ring = inner.trim().strip_prefix('(').and_then(|r| r.split(')').next()).ok_or("POLYGON takes ((x y, …))")?;
                let mut pts = coords(ring)?;
                if pts.len() < 3 {
                    return Err("POLYGON needs at least three points".into());
                }
                if pts.first() != pts.last() {
                    pts.push(pts[0]);
                }
                Ok(Geometry::Polygon(pts))
            }
            other => Err(format!("`{other}` is not POINT, LINESTRING or POLYGON")),
        }
    }

    /// From a GeoJSON geometry (`{"type":"Point","coordinates":[lon,lat]}`).
    pub fn from_geojson(v: &serde_json::Value) -> Option<Geometry> {
        let pair = |c: &serde_json::Value| Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?));
        let c = v.get("coordinates")?;
        match v.get("type")?.as_str()? {
            "Point" => pair(c).map(|(x, y)| Geometry::Point(x, y)),
            "LineString" => c.as_array()?.iter().map(pair).collect::<Option<Vec<_>>>().map(Geometry::Line),
            "Polygon" => c.get(0)?.as_array()?.iter().map(pair).collect::<Option<Vec<_>>>().map(Geometry::Polygon),
            _ => None,
        }
    }

    fn points(&self) -> std::borrow::Cow<'_, [(f64, f64)]> {
        match self {
            Geometry::Point(x, y) => std::borrow::Cow::Owned(vec![(*x, *y)]),
            Geometry::Line(p) | Geometry::Polygon(p) => std::borrow::Cow::Borrowed(p),
        }
    }

    fn segments(&self) -> Vec<((f64, f64), (f64, f64))> {
        let p = self.points();
        p.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Whether the point lies inside (or on the edge of) this polygon.
    fn covers_point(&self, pt: (f64, f64)) -> bool {
        let Geometry::Polygon(ring) = self else { return false };
        if self.segments().iter().any(|(a, b)| seg_dist(pt, *a, *b) < 1e-12) {
            return true;
        }
        let mut inside = false;
        for w in ring.windows(2) {
            let ((x1, y1), (x2, y2)) = (w[0], w[1]);
            if (y1 > pt.1) != (y2 > pt.1) && pt.0 < (x2 - x1) * (pt.1 - y1) / (y2 - y1) + x1 {
                inside = !inside;
            }
        }
        inside
    }

    pub fn distance(&self, other: &Geometry) -> f64 {
        if self.intersects(other) {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for a in self.points().iter() {
            for s in other.segments_or_point() {
                best = best.min(seg_dist(*a, s.0, s.1));
            }
        }
        for b in other.points().iter() {
            for s in self.segments_or_point() {
                best = best.min(seg_dist(*b, s.0, s.1));
            }
        }
        best
    }

    fn segments_or_point(&self) -> Vec<((f64, f64), (f64, f64))> {
        match self {
            Geometry::Point(x, y) => vec![((*x, *y), (*x, *y))],
            _ => self.segments(),
        }
    }

    pub fn length(&self) -> f64 {
        self.segments().iter().map(|(a, b)| ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt()).sum()
    }

    pub fn intersects(&self, other: &Geometry) -> bool {
        if self.points().iter().any(|p| other.covers_point(*p)) || other.points().iter().any(|p| self.covers_point(*p)) {
            return true;
        }
        let (a, b) = (self.segments_or_point(), other.segments_or_point());
        a.iter().any(|s| b.iter().any(|t| segments_cross(*s, *t)))
    }

    /// Every point of self inside `other` (exact for points, vertex-wise otherwise).
    pub fn within(&self, other: &Geometry) -> bool {
        match other {
            Geometry::Polygon(_) => self.points().iter().all(|p| other.covers_point(*p)),
            _ => self == other,
        }
    }
}

/// Distance from point `p` to the segment `a`–`b`.
fn seg_dist(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 { 0.0 } else { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) };
    let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
    ((p.0 - cx).powi(2) + (p.1 - cy).powi(2)).sqrt()
}

fn segments_cross((p1, p2): ((f64, f64), (f64, f64)), (q1, q2): ((f64, f64), (f64, f64))) -> bool {
    let orient = |a: (f64, f64), b: (f64, f64), c: (f64, f64)| (b.0 - a.0) * (c.1 - a.1) - (b.1 - a.1) * (c.0 - a.0);
    let (d1, d2, d3, d4) = (orient(q1, q2, p1), orient(q1, q2, p2), orient(p1, p2, q1), orient(p1, p2, q2));
    ((d1 > 0.0) != (d2 > 0.0)) && ((d3 > 0.0) != (d4 > 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_polygons_and_distances() {
        let square = Geometry::parse_wkt("POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))").unwrap();
        let inside = Geometry::parse_wkt("POINT(5 5)").unwrap();
        let outside = Geometry::parse_wkt("POINT (13 14)").unwrap();
        assert!(inside.within(&square) && !outside.within(&square));
        assert!(square.intersects(&inside) && !square.intersects(&outside));
        assert_eq!(outside.distance(&Geometry::Point(10.0, 10.0)), 5.0);
        assert_eq!(outside.distance(&square), 5.0);
        assert_eq!(inside.distance(&square), 0.0);
        assert_eq!(Geometry::parse_wkt("LINESTRING(0 0, 3 4)").unwrap().length(), 5.0);
        assert_eq!(Geometry::from_geojson(&serde_json::json!({"type":"Point","coordinates":[120.1,30.2]})), Some(Geometry::Point(120.1, 30.2)));
        for bad in ["POINT(1)", "POINT(a b)", "CIRCLE(1 2)", "POLYGON((0 0, 1 1))", "POINT 1 2"] {
            assert!(Geometry::parse_wkt(bad).is_err(), "{bad}");
        }
    }
}
