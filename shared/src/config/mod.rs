//! Config loading shared by agent and collector: TOML in, typed struct out, and
//! every problem reported as `FILE:LINE: field.path: what is wrong`.
//!
//! Deserialization stops at the first syntax or type error (the rest of the file
//! cannot be trusted then); validation of a well-typed config reports every
//! problem it finds, each placed on the line of the key it is about.

mod values;

pub use values::{one_or_many, ByteSize, ByteSizeError, HumanDuration};

use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One thing wrong with a config, before it is placed on a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path with array indices, e.g. `modbus[1].point[0].address`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into() }
    }
}

/// A problem placed in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(top level)" } else { &self.path };
        write!(f, "{}:{}: {}: {}", self.file, self.line, path, self.message)
    }
}

/// Every problem found in one config file; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A config type that can check itself after deserialization.
pub trait Validate {
    /// `base` is the directory of the config file, for resolving relative paths.
    fn validate(&self, base: &Path) -> Vec<Problem>;
}

/// Reads, parses and validates a config file.
/// Loads a config for a command that acts on it, and makes the file's
/// directory the working directory, so relative paths in it (store, keys,
/// certificates) mean at run time what `check` validated: relative to the
/// file. The error is what to print before exiting with status 2.
pub fn load_and_enter<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, LoadError> {
    let config = load::<T>(path)?;
    let abs = path.canonicalize().map_err(|source| LoadError::Enter { path: path.to_path_buf(), source })?;
    if let Some(dir) = abs.parent() {
        std::env::set_current_dir(dir).map_err(|source| LoadError::Enter { path: dir.to_path_buf(), source })?;
    }
    Ok(config)
}

/// Why a config could not be loaded for a command: its problems (one line
/// each, `FILE:LINE: path: message`), or its directory could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(#[from] Diagnostics),
    #[error("{path}: {source}")]
    Enter { path: std::path::PathBuf, source: std::io::Error },
}

pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, Diagnostics> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| Diagnostics(vec![Diagnostic { file: file.clone(), line: 0, path: String::new(), message: format!("cannot read: {e}") }]))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&file, &text, base)
}

/// Parses and validates config text; `file` is only used in messages.
pub fn parse<T: DeserializeOwned + Validate>(file: &str, text: &str, base: &Path) -> Result<T, Diagnostics> {
    let map = SourceMap::new(text);
    let value: T = toml::from_str(text).map_err(|e| Diagnostics(type_errors::<T>(file, text, &map, e)))?;
    let problems = value.validate(base);
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(Diagnostics(problems.into_iter().map(|p| Diagnostic { file: file.to_string(), line: map.line_of_path(&p.path), path: p.path, message: p.message }).collect()))
    }
}

/// Every type error of a file that is valid TOML, not only the first: after
/// each error the offending `key = value` line is blanked (byte offsets and
/// line numbers kept) and the text parsed again, until it parses or an error
/// cannot be stepped over (a syntax error, a table header, the same line
/// again, or a required key then missing). Messages are reworded by
/// `config_hints::rephrase`.
fn type_errors<T: DeserializeOwned>(file: &str, text: &str, map: &SourceMap, first: toml::de::Error) -> Vec<Diagnostic> {
    let diagnostic = |e: &toml::de::Error| {
        let span = e.span().unwrap_or(0..0);
        Diagnostic { file: file.to_string(), line: map.line_of_offset(span.start), path: map.path_at(&span), message: crate::config_hints::rephrase(e.message()) }
    };
    let mut out = vec![diagnostic(&first)];
    if map.root.is_none() {
        return out;
    }
    let mut work = text.to_string();
    let mut error = first;
    for _ in 0..50 {
        let Some(span) = error.span() else { break };
        let start = work[..span.start.min(work.len())].rfind('\n').map_or(0, |i| i + 1);
        let end = work[start..].find('\n').map_or(work.len(), |i| start + i);
        let line = work[start..end].trim_start();
        if !line.contains('=') || line.starts_with('[') || line.starts_with('#') {
            break;
        }
        work.replace_range(start..end, &" ".repeat(end - start));
        match toml::from_str::<T>(&work) {
            Ok(_) => break,
            Err(e) => {
                // Most likely the blanked key was that one, misspelt or mistyped.
                if e.message().starts_with("missing field `") {
                    break;
                }
                let d = diagnostic(&e);
                if out.iter().any(|o| o.line == d.line) {
                    break;
                }
                out.push(d);
                error = e;
            }
        }
    }
    out
}

/// Finds where a dotted path sits in TOML text, and which path covers an offset.
pub struct SourceMap<'a> {
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            // `get`, not indexing: a key the user wrote (an [mqtt.fields] metric)
            // can put a `]` right after another, or after a multi-byte character.
            if let Some(Ok(i)) = rest.get(1..end).map(str::parse) {
                out.push(Segment::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

impl<'a> SourceMap<'a> {
    pub fn new(text: &'a str) -> SourceMap<'a> {
        SourceMap { text, root: DeTable::parse(text).ok() }
    }

    /// 1-based line of a byte offset.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line of the deepest part of `path` that exists in the text: a missing
    /// key is reported at the table that should hold it.
    pub fn line_of_path(&self, path: &str) -> usize {
        let Some(root) = &self.root else { return 1 };
        let mut span = None;
        let mut table: Option<&DeTable> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue>]> = None;
        for seg in segments(path) {
            let next: Option<(Range<usize>, &DeValue)> = match (seg, table, array) {
                (Segment::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref().as_ref() == k).map(|(key, v)| (key.span(), v.get_ref())),
                (Segment::Index(i), _, Some(a)) => a.get(i).map(|v| (v.span(), v.get_ref())),
                _ => None,
            };
            let Some((s, v)) = next else { break };
            span = Some(s);
            table = None;
            array = None;
            match v {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a.as_ref()),
                _ => {}
            }
        }
        span.map_or(1, |s| self.line_of_offset(s.start))
    }

    /// The dotted path of the innermost key (or value) that covers `span`.
    /// Every table is searched: the span of an array of tables covers only its
    /// first header, not the tables themselves.
    pub fn path_at(&self, span: &Range<usize>) -> String {
        let Some(root) = &self.root else { return String::new() };
        find_in_table(root.get_ref(), span, "").unwrap_or_default()
    }
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

fn find_in_table(table: &DeTable, span: &Range<usize>, prefix: &str) -> Option<String> {
    for (key, value) in table.iter() {
        let k: &str = key.get_ref().as_ref();
        let path = if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        if let Some(deeper) = find_in_value(value.get_ref(), span, &path) {
            return Some(deeper);
        }
        if covers(&value.span(), span) || covers(&key.span(), span) {
            return Some(path);
        }
    }
    None
}

fn find_in_value(value: &DeValue, span: &Range<usize>, path: &str) -> Option<String> {
    match value {
        DeValue::Table(t) => find_in_table(t, span, path),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
            let p = format!("{path}[{i}]");
            find_in_value(item.get_ref(), span, &p).or_else(|| covers(&item.span(), span).then_some(p))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        #[serde(default)]
        item: Vec<Item>,
    }
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Item {
        port: u16,
        #[allow(dead_code)]
        every: HumanDuration,
        #[serde(default)]
        #[allow(dead_code)]
        level: u8,
    }
    impl Validate for Cfg {
        fn validate(&self, _: &Path) -> Vec<Problem> {
            let mut p = vec![];
            for (i, it) in self.item.iter().enumerate() {
                if it.port == 0 {
                    p.push(Problem::new(format!("item[{i}].port"), "must not be 0"));
                }
            }
            if self.name.is_empty() {
                p.push(Problem::new("name", "must not be empty"));
            }
            p
        }
    }

    const TEXT: &str = "name = \"\"\n\n[[item]]\nport = 1\nevery = \"1s\"\n\n[[item]]\nevery = \"2s\"\nport = 0\n";

    #[test]
    fn every_validation_problem_lands_on_its_line() {
        let err = parse::<Cfg>("c.toml", TEXT, Path::new(".")).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(lines, vec!["c.toml:9: item[1].port: must not be 0", "c.toml:1: name: must not be empty"]);
    }

    #[test]
    fn unknown_key_names_the_key_and_its_line() {
        let text = TEXT.replace("port = 1", "prot = 1");
        let err = parse::<Cfg>("c.toml", &text, Path::new(".")).unwrap_err();
        assert_eq!(err.0.len(), 1);
        let d = &err.0[0];
        assert_eq!(d.line, 4, "{d}");
        assert!(d.message.contains("unknown field `prot`: did you mean `port`?"), "{d}");
        assert_eq!(d.path, "item[0].prot");
    }

    #[test]
    fn bad_duration_is_explained() {
        let text = TEXT.replace("\"2s\"", "\"2 parsecs\"");
        let err = parse::<Cfg>("c.toml", &text, Path::new(".")).unwrap_err();
        assert_eq!(err.0[0].line, 8, "{}", err);
        assert_eq!(err.0[0].path, "item[1].every");
        assert!(err.0[0].message.contains("not a duration"), "{}", err);
    }

    #[test]
    fn stray_brackets_in_a_path_do_not_panic() {
        let map = SourceMap::new(TEXT);
        for path in ["mqtt[0].fields.x[0]]", "a[]]", "a[0]é]", "]", "[", "item[1]]].port"] {
            assert!(map.line_of_path(path) >= 1, "{path}");
        }
        assert_eq!(map.line_of_path("item[1].port"), 9);
    }

    #[test]
    fn every_type_error_of_a_well_formed_file_is_reported_in_one_run() {
        let text = TEXT.replace("port = 1", "level = \"high\"\nport = 1").replace("port = 0", "port = 0\nlevel = 300");
        let err = parse::<Cfg>("c.toml", &text, Path::new(".")).unwrap_err();
        let lines: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("c.toml:4: item[0].level: write a whole number without quotes"), "{lines:?}");
        assert!(lines[1].starts_with("c.toml:11: item[1].level: 300 is out of range: at most 255"), "{lines:?}");
        let text = TEXT.replace("every = \"1s\"", "every = 5");
        let err = parse::<Cfg>("c.toml", &text, Path::new(".")).unwrap_err();
        assert!(err.to_string().starts_with("c.toml:5: item[0].every: a duration needs its unit and quotes: write \"5s\""), "{err}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("2GB").unwrap().0, 2_000_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("12 furlongs").is_err());
    }
}
