//! Deserializer messages reworded for the person editing the file: serde
//! speaks Rust ("expected f64", "expected a string"), a technician needs the
//! fix ("a number without quotes", "write \"5s\""), and a misspelt key
//! deserves the key that was probably meant.

/// Edit distance (insertions, deletions, substitutions) between two short strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a typo of it.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    candidates.into_iter().map(|c| (distance(word, c), c)).filter(|(d, _)| *d <= limit).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

/// The backquoted words after "expected" ("one of `a`, `b`, `c`", "`a` or `b`", "`a`").
fn expected_list(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once(", expected ") else { return Vec::new() };
    list.trim_start_matches("one of ").split(['`', ',']).map(str::trim).filter(|w| !w.is_empty() && *w != "or").collect()
}

/// A deserializer message rewritten to name the fix; unknown messages pass through.
pub fn rephrase(message: &str) -> String {
    let m = message.trim();
    for kind in ["field", "variant"] {
        let prefix = format!("unknown {kind} `");
        if let Some(rest) = m.strip_prefix(&prefix) {
            let word = rest.split('`').next().unwrap_or("");
            let options = expected_list(m);
            let what = if kind == "field" { "keys here" } else { "one of" };
            return match did_you_mean(word, options.iter().copied()) {
                Some(near) => format!("unknown {kind} `{word}`: did you mean `{near}`? ({what}: {})", options.join(", ")),
                None if options.is_empty() => format!("unknown {kind} `{word}`"),
                None => format!("unknown {kind} `{word}` ({what}: {})", options.join(", ")),
            };
        }
    }
    if let Some(rest) = m.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let hint = match expected {
            "f64" | "f32" => format!("write a number without quotes (found {found}), e.g. 0.1"),
            "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => format!("write a whole number without quotes (found {found})"),
            "a boolean" => format!("write true or false without quotes (found {found})"),
            "a string" | "string" => format!("write text in quotes (found {found})"),
            "a sequence" => format!("write a list in brackets, e.g. [0, 100] (found {found})"),
            _ => return m.to_string(),
        };
        return hint;
    }
    if let Some(rest) = m.strip_prefix("invalid value: integer `") {
        let n = rest.split('`').next().unwrap_or("");
        let max = match rest.rsplit(", expected ").next().unwrap_or("") {
            "u8" => "255",
            "u16" => "65535",
            "u32" => "4294967295",
            _ => return m.to_string(),
        };
        return format!("{n} is out of range: at most {max}");
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_terms_become_the_fix() {
        assert_eq!(rephrase("invalid type: string \"0.1\", expected f64"), "write a number without quotes (found string \"0.1\"), e.g. 0.1");
        assert!(rephrase("invalid type: integer `5`, expected a string").starts_with("write text in quotes"));
        assert_eq!(rephrase("invalid value: integer `300`, expected u8"), "300 is out of range: at most 255");
        assert_eq!(rephrase("something else"), "something else");
    }

    #[test]
    fn a_misspelt_key_gets_the_likely_one() {
        let m = rephrase("unknown field `timout`, expected one of `sensor`, `address`, `unit`, `interval`, `timeout`, `retries`");
        assert!(m.starts_with("unknown field `timout`: did you mean `timeout`?"), "{m}");
        let m = rephrase("unknown field `zzz`, expected one of `sensor`, `unit`");
        assert_eq!(m, "unknown field `zzz` (keys here: sensor, unit)");
        assert_eq!(did_you_mean("adress", ["address", "unit"]), Some("address"));
    }
}
