//! The resource path after `/sta/v1.1/`: `Things('aq-001')/Datastreams`,
//! `Datastreams('aq-001~pm25')/Observations/$ref`, `Things('x')/name/$value`.
//! Parsed into segments here; which are relations and which properties is
//! decided against the model (`resolve`), which knows the sets.

use super::error::StaError;

/// Longest path accepted, in bytes.
const MAX_PATH: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    /// `(id)`: the entity of that id in the collection.
    pub id: Option<String>,
}

/// The segments of a decoded path (without the service root).
pub fn parse(path: &str) -> Result<Vec<Segment>, StaError> {
    let bad = |reason: String| StaError::Path { path: path.to_string(), reason };
    if path.len() > MAX_PATH {
        return Err(bad(format!("longer than {MAX_PATH} bytes")));
    }
    let mut out = Vec::new();
    for raw in split(path).map_err(&bad)? {
        if raw.is_empty() {
            continue;
        }
        let (name, id) = match raw.find('(') {
            Some(i) => {
                let inner = raw[i + 1..].strip_suffix(')').ok_or_else(|| bad(format!("`{raw}`: the id is not closed with `)`")))?;
                (&raw[..i], Some(id(inner).ok_or_else(|| bad(format!("`{raw}`: an id is a quoted string ('aq-001') or a number")))?))
            }
            None => (raw, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '$' || c == '_') {
            return Err(bad(format!("`{raw}` is not an entity set, relation or property")));
        }
        out.push(Segment { name: name.to_string(), id });
    }
    Ok(out)
}

/// `'text'` (with `''` for a quote) or a bare number.
fn id(inner: &str) -> Option<String> {
    if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        let unescaped = q.replace("''", "'");
        return (!unescaped.is_empty()).then_some(unescaped);
    }
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit())).then(|| inner.to_string())
}

/// Splits at `/` outside quotes.
fn split(path: &str) -> Result<Vec<&str>, String> {
    let (mut quoted, mut start) = (false, 0);
    let mut out = Vec::new();
    for (i, c) in path.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '/' if !quoted => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    out.push(&path[start..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, id: Option<&str>) -> Segment {
        Segment { name: name.into(), id: id.map(str::to_string) }
    }

    #[test]
    fn segments_with_ids_refs_and_values() {
        assert_eq!(
            parse("Things('aq-001')/Datastreams('aq-001~pm25')/Observations/$ref").unwrap(),
            vec![seg("Things", Some("aq-001")), seg("Datastreams", Some("aq-001~pm25")), seg("Observations", None), seg("$ref", None)]
        );
        assert_eq!(parse("Things(7)/name/$value").unwrap(), vec![seg("Things", Some("7")), seg("name", None), seg("$value", None)]);
        assert_eq!(parse("Things('it''s/odd')").unwrap(), vec![seg("Things", Some("it's/odd"))]);
        for bad in ["Things('x'", "Things(x)", "Things('')", "Thi%ngs", "Things('a)"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
