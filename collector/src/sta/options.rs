//! The query options of a request (`$filter`, `$expand`, `$select`,
//! `$orderby`, `$top`, `$skip`, `$count`), parsed once into `Options`, the
//! same type at the top and inside `$expand=Datastreams($top=2;…)`. Each
//! refusal names the option and what is wrong with it.

use super::error::StaError;
use super::filter::{self, Expr};

/// Deepest `$expand` nesting.
pub const MAX_EXPAND_DEPTH: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub top: Option<usize>,
    pub skip: usize,
    pub count: bool,
    pub select: Option<Vec<String>>,
    /// Keys, each an expression and whether descending.
    pub orderby: Vec<(Expr, bool)>,
    pub filter: Option<Expr>,
    pub expand: Vec<Expand>,
    /// The options as written (decoded), to build `@iot.nextLink` from.
    pub raw: Vec<(String, String)>,
}

/// `$expand` of one relation, with the options that apply to it.
#[derive(Debug, Clone)]
pub struct Expand {
    pub relation: String,
    pub options: Options,
}

fn bad(option: &str, reason: impl Into<String>) -> StaError {
    StaError::Option { option: option.to_string(), reason: reason.into() }
}

/// Splits at `sep` outside parentheses and quotes.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let mut out = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Options {
    /// From a URL query string (`a=b&c=d`, percent-encoded).
    pub fn from_query(query: &str) -> Result<Options, StaError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        Options::from_pairs(pairs, 0)
    }

    fn from_pairs(pairs: Vec<(String, String)>, depth: usize) -> Result<Options, StaError> {
        let mut o = Options { raw: pairs.clone(), ..Options::default() };
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs {
            if !seen.insert(k.clone()) {
                return Err(bad(&k, "given twice"));
            }
            match k.as_str() {
                "$top" => o.top = Some(v.trim().parse().map_err(|_| bad(&k, format!("`{v}` is not a non-negative integer")))?),
                "$skip" => o.skip = v.trim().parse().map_err(|_| bad(&k, format!("`{v}` is not a non-negative integer")))?,
                "$count" => {
                    o.count = match v.trim() {
                        "true" => true,
                        "false" => false,
                        other => return Err(bad(&k, format!("`{other}` is not true or false"))),
                    }
                }
                "$select" => {
                    let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
                    if names.iter().any(String::is_empty) {
                        return Err(bad(&k, "an empty name in the list"));
                    }
                    o.select = Some(names);
                }
                "$filter" => o.filter = Some(filter::parse(&v).map_err(|e| StaError::Filter { option: k.clone(), source: e })?),
                "$orderby" => {
                    for key in split_top(&v, ',') {
                        let key = key.trim();
                        let lower = key.to_ascii_lowercase();
                        let (text, desc) = if lower.ends_with(" desc") {
                            (&key[..key.len() - 5], true)
                        } else if lower.ends_with(" asc") {
                            (&key[..key.len() - 4], false)
                        } else {
                            (key, false)
                        };
                        let e = filter::parse(text.trim()).map_err(|e| StaError::Filter { option: k.clone(), source: e })?;
                        o.orderby.push((e, desc));
                    }
                }
                "$expand" => {
                    if depth >= MAX_EXPAND_DEPTH {
                        return Err(bad(&k, format!("nested deeper than {MAX_EXPAND_DEPTH}")));
                    }
                    for item in split_top(&v, ',') {
                        let ex = Expand::parse(item.trim(), depth + 1)?;
                        o.add_expand(ex);
                    }
                }
                "$resultFormat" => return Err(bad(&k, "only the default JSON result format is served (no dataArray)")),
                other if other.starts_with('$') => {
                    return Err(bad(other, "unknown query option; known: $filter $expand $select $orderby $top $skip $count"));
                }
                other => return Err(bad(other, "not a query option of this API (they start with $: $filter $expand $select $orderby $top $skip $count)")),
            }
        }
        Ok(o)
    }

    /// Adds an expansion, merging one of a relation already expanded.
    fn add_expand(&mut self, ex: Expand) {
        match self.expand.iter_mut().find(|e| e.relation == ex.relation) {
            Some(existing) => {
                for inner in ex.options.expand {
                    existing.options.add_expand(inner);
                }
            }
            None => self.expand.push(ex),
        }
    }

    /// The query string of these options with `$skip` replaced, for a nextLink.
    pub fn query_with_skip(&self, skip: usize) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.raw {
            if k != "$skip" {
                q.append_pair(k, v);
            }
        }
        q.append_pair("$skip", &skip.to_string());
        // Readable where the query syntax allows: $top, 'x', (…), a,b, A/B.
        let mut s = q.finish().replace('+', "%20");
        for (enc, c) in [("%24", "$"), ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2C", ","), ("%2F", "/"), ("%3A", ":"), ("%3D", "="), ("%3B", ";")] {
            s = s.replace(enc, c);
        }
        s
    }
}

impl Expand {
    /// `Relation`, `Relation(opt=…;opt=…)` or `A/B/C` (each expanded in the next).
    fn parse(item: &str, depth: usize) -> Result<Expand, StaError> {
        if item.is_empty() {
            return Err(bad("$expand", "an empty item in the list"));
        }
        let (path, inner) = match item.find('(') {
            Some(i) => {
                let inner = item[i + 1..].strip_suffix(')').ok_or_else(|| bad("$expand", format!("`{item}`: options not closed with `)`")))?;
                (&item[..i], Some(inner))
            }
            None => (item, None),
        };
        let segments: Vec<&str> = path.split('/').map(str::trim).collect();
        if segments.iter().any(|s| s.is_empty()) || segments.len() + depth > MAX_EXPAND_DEPTH + 1 {
            return Err(bad("$expand", format!("`{path}` is not a relation path (Datastreams/Observations) within {MAX_EXPAND_DEPTH} levels")));
        }
        let options = match inner {
            Some(text) => {
                let mut pairs = Vec::new();
                for part in split_top(text, ';') {
                    let (k, v) = part.split_once('=').ok_or_else(|| bad("$expand", format!("`{part}` in `{item}` is not $option=value")))?;
                    pairs.push((k.trim().to_string(), v.to_string()));
                }
                Options::from_pairs(pairs, depth + segments.len() - 1)?
            }
            None => Options::default(),
        };
        // A/B(opts) is A expanded with B(opts) expanded inside it.
        let (last, outer) = segments.split_last().expect("split gives at least one segment");
        let mut current = Expand { relation: last.to_string(), options };
        for rel in outer.iter().rev() {
            current = Expand { relation: rel.to_string(), options: Options { expand: vec![current], ..Options::default() } };
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_nested_and_refuse_naming_the_option() {
        let o = Options::from_query("$top=2&$skip=4&$count=true&$select=id,name&$orderby=phenomenonTime%20desc,%20result&$filter=result%20gt%201&$expand=Datastreams($top=1;$expand=Observations($orderby=phenomenonTime desc;$top=1)),Locations,Datastreams/Sensor").unwrap();
        assert_eq!((o.top, o.skip, o.count), (Some(2), 4, true));
        assert_eq!(o.select.as_deref(), Some(&["id".to_string(), "name".to_string()][..]));
        assert_eq!(o.orderby.len(), 2);
        assert!(o.orderby[0].1 && !o.orderby[1].1);
        assert_eq!(o.expand.len(), 2, "Datastreams/Sensor merges into Datastreams");
        let ds = &o.expand[0];
        assert_eq!((ds.relation.as_str(), ds.options.top), ("Datastreams", Some(1)));
        assert_eq!(ds.options.expand.iter().map(|e| e.relation.as_str()).collect::<Vec<_>>(), ["Observations", "Sensor"]);
        assert_eq!(ds.options.expand[0].options.top, Some(1));
        assert!(o.query_with_skip(6).contains("$skip=6") && !o.query_with_skip(6).contains("skip=4"));
        assert!(o.query_with_skip(6).contains("$filter=result%20gt%201"));
        for (q, words) in [
            ("$top=-1", "$top: `-1` is not a non-negative integer"),
            ("$count=yes", "$count: `yes` is not true or false"),
            ("$filter=result%20gt", "$filter: at character 9"),
            ("$frobnicate=1", "$frobnicate: unknown query option"),
            ("$top=1&$top=2", "$top: given twice"),
            ("$expand=Datastreams($top=x)", "$top: `x`"),
            ("$expand=Datastreams($top=1", "not closed"),
            ("$select=id,,name", "empty name"),
            ("$resultFormat=dataArray", "dataArray"),
            ("sensor=aq-001", "sensor: not a query option"),
        ] {
            let e = Options::from_query(q).unwrap_err().to_string();
            assert!(e.contains(words), "{q}: {e}");
        }
    }
}
