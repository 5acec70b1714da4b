//! `[map]`: where the dashboard's map gets district shapes and a basemap.
//! Both are optional and local: nothing is fetched from the internet unless
//! an operator points `tile_url` at it.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use shared::config::Problem;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// A GeoJSON FeatureCollection of (Multi)Polygons, one feature per
    /// district, named by `properties.name` (or `district`) as in the catalogue.
    pub boundaries: Option<PathBuf>,
    /// A tile server for the basemap, e.g. `http://tiles.ops.local/{z}/{x}/{y}.png`
    /// (web-mercator XYZ tiles); none draws the map on a plain background.
    pub tile_url: Option<String>,
    /// Credit shown in the map's corner (the tiles' licence usually asks for it).
    pub tile_attribution: Option<String>,
}

impl MapConfig {
    pub fn validate(&self, base: &Path, p: &mut Vec<Problem>) {
        if let Some(file) = &self.boundaries {
            let path = base.join(file);
            match std::fs::read(&path) {
                Err(e) => p.push(Problem::new("map.boundaries", format!("cannot read {}: {e}", path.display()))),
                Ok(bytes) => {
                    if let Err(e) = super::boundaries::Boundaries::parse(&bytes) {
                        p.push(Problem::new("map.boundaries", format!("{}: {e}", path.display())));
                    }
                }
            }
        }
        if let Some(url) = &self.tile_url {
            let scheme = url.starts_with("http://") || url.starts_with("https://");
            let holes = ["{z}", "{x}", "{y}"].iter().all(|h| url.contains(h));
            if !scheme || !holes {
                p.push(Problem::new(
                    "map.tile_url",
                    format!("`{url}` must be an http:// or https:// URL with {{z}}, {{x}} and {{y}} in it, e.g. http://tiles.ops.local/{{z}}/{{x}}/{{y}}.png"),
                ));
            }
        }
    }

    /// The origin the page loads tiles from (for its content security policy).
    pub fn tile_origin(&self) -> Option<String> {
        let url = self.tile_url.as_deref()?;
        let rest = url.split_once("://")?;
        let host = rest.1.split('/').next()?;
        Some(format!("{}://{}", rest.0, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_url_without_its_placeholders_or_scheme_is_refused_naming_the_field() {
        let mut p = Vec::new();
        MapConfig { tile_url: Some("tiles.local/{z}/{x}/{y}.png".into()), ..Default::default() }.validate(Path::new(""), &mut p);
        MapConfig { tile_url: Some("http://tiles.local/{z}/{x}.png".into()), ..Default::default() }.validate(Path::new(""), &mut p);
        assert_eq!(p.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["map.tile_url", "map.tile_url"]);
        let ok = MapConfig { tile_url: Some("http://10.0.0.5:8081/{z}/{x}/{y}.png".into()), ..Default::default() };
        let mut none = Vec::new();
        ok.validate(Path::new(""), &mut none);
        assert!(none.is_empty());
        assert_eq!(ok.tile_origin().as_deref(), Some("http://10.0.0.5:8081"));
    }

    #[test]
    fn a_missing_or_broken_boundaries_file_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.geojson"),
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"Point","coordinates":[1,2]}}]}"#,
        )
        .unwrap();
        let mut p = Vec::new();
        MapConfig { boundaries: Some("missing.geojson".into()), ..Default::default() }.validate(dir.path(), &mut p);
        MapConfig { boundaries: Some("bad.geojson".into()), ..Default::default() }.validate(dir.path(), &mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| p.path == "map.boundaries"));
        assert!(p[1].message.contains("features[0]"), "{}", p[1].message);
    }
}
