//! District shapes from the operator's GeoJSON file (`[map] boundaries`):
//! each feature a Polygon or MultiPolygon named as the catalogue names the
//! district. Only the outlines are kept; served back as a FeatureCollection
//! with just `name`, so a county file full of properties costs nothing.

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct District {
    pub name: String,
    /// Polygons, each a list of rings, each ring a list of [lon, lat].
    pub polygons: Vec<Vec<Vec<[f64; 2]>>>,
}

#[derive(Debug, Clone, Default)]
pub struct Boundaries {
    pub districts: Vec<District>,
}

impl Boundaries {
    /// Parses a FeatureCollection; the error names the feature and what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Boundaries, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if v["type"] != "FeatureCollection" {
            return Err("must be a GeoJSON FeatureCollection (\"type\": \"FeatureCollection\")".into());
        }
        let features = v["features"].as_array().ok_or("has no \"features\" array")?;
        let mut districts = Vec::new();
        for (i, f) in features.iter().enumerate() {
            let at = |what: &str| format!("features[{i}]: {what}");
            let props = &f["properties"];
            let name = props["name"].as_str().or_else(|| props["district"].as_str()).ok_or_else(|| at("needs properties.name (the district as the catalogue names it)"))?;
            let g = &f["geometry"];
            let polys = match g["type"].as_str() {
                Some("Polygon") => vec![&g["coordinates"]],
                Some("MultiPolygon") => g["coordinates"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
                other => return Err(at(&format!("geometry must be a Polygon or MultiPolygon, not {}", other.unwrap_or("missing")))),
            };
            let mut polygons = Vec::new();
            for p in polys {
                let rings = p.as_array().ok_or_else(|| at("polygon coordinates must be a list of rings"))?;
                let mut out = Vec::new();
                for r in rings {
                    let pts = r.as_array().ok_or_else(|| at("a ring must be a list of [lon, lat]"))?;
                    let ring: Option<Vec<[f64; 2]>> = pts
                        .iter()
                        .map(|q| Some([q.get(0)?.as_f64()?, q.get(1)?.as_f64()?]))
                        .map(|q| q.filter(|[lon, lat]| (-180.0..=180.0).contains(lon) && (-90.0..=90.0).contains(lat)))
                        .collect();
                    let ring = ring.ok_or_else(|| at("a position is not [lon, lat] in degrees"))?;
                    if ring.len() < 3 {
                        return Err(at("a ring needs at least 3 positions"));
                    }
                    out.push(ring);
                }
                polygons.push(out);
            }
            districts.push(District { name: name.to_string(), polygons });
        }
        Ok(Boundaries { districts })
    }

    pub fn to_geojson(&self) -> Value {
        let features: Vec<Value> = self
            .districts
            .iter()
            .map(|d| json!({ "type": "Feature", "properties": { "name": d.name }, "geometry": { "type": "MultiPolygon", "coordinates": d.polygons } }))
            .collect();
        json!({ "type": "FeatureCollection", "features": features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygons_and_multipolygons_are_read_with_their_names() {
        let text = r#"{"type":"FeatureCollection","features":[
            {"type":"Feature","properties":{"name":"Xihu","pop":1},"geometry":{"type":"Polygon","coordinates":[[[120.1,30.2],[120.2,30.2],[120.2,30.3],[120.1,30.2]]]}},
            {"type":"Feature","properties":{"district":"Binjiang"},"geometry":{"type":"MultiPolygon","coordinates":[[[[120.2,30.1],[120.3,30.1],[120.3,30.2]]],[[[121,30],[121.1,30],[121.1,30.1]]]]}}]}"#;
        let b = Boundaries::parse(text.as_bytes()).unwrap();
        assert_eq!(b.districts.iter().map(|d| (d.name.as_str(), d.polygons.len())).collect::<Vec<_>>(), [("Xihu", 1), ("Binjiang", 2)]);
        assert_eq!(b.to_geojson()["features"][0]["properties"], json!({ "name": "Xihu" }));
    }

    #[test]
    fn a_feature_without_a_name_or_with_a_point_is_refused_with_its_index() {
        let unnamed = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[]}}]}"#;
        assert!(Boundaries::parse(unnamed.as_bytes()).unwrap_err().starts_with("features[0]: needs properties.name"));
        let swapped =
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"A"},"geometry":{"type":"Polygon","coordinates":[[[30,120],[30,121],[31,121]]]}}]}"#;
        assert!(Boundaries::parse(swapped.as_bytes()).unwrap_err().contains("not [lon, lat]"));
        assert!(Boundaries::parse(b"{}").unwrap_err().contains("FeatureCollection"));
    }
}
