//! Tokens of the OData expression language.

use super::SyntaxError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: a property, a keyword (`and`, `eq`, …), a function (`geo.distance`).
    Word(String),
    Str(String),
    Num(f64),
    /// An instant or date literal (`2026-11-23T08:00:00Z`, `2026-11-23`).
    Time(i64, i32),
    /// `geography'POINT(…)'` and `duration'P1D'`: the prefix and the quoted text.
    Typed(String, String),
    LParen,
    RParen,
    Comma,
    Slash,
    Minus,
}

/// The tokens of `src`, each with its starting character index.
pub fn lex(src: &str) -> Result<Vec<(usize, Tok)>, SyntaxError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, reason: String| SyntaxError { at, reason };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '(' => out.push((start, Tok::LParen)),
            ')' => out.push((start, Tok::RParen)),
            ',' => out.push((start, Tok::Comma)),
            '/' => out.push((start, Tok::Slash)),
            '-' => out.push((start, Tok::Minus)),
            '\'' => {
                let (text, next) = quoted(&chars, i).ok_or_else(|| err(start, "string not closed with '".into()))?;
                out.push((start, Tok::Str(text)));
                i = next;
                continue;
            }
            c if c.is_ascii_digit() => {
                // A number, or a date/time literal, which starts like one.
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '.' | ':' | '-' | '+')) {
                    // A '-' or '+' only belongs to the token inside a date/time.
                    if matches!(chars[j], '-' | '+') && !(j - i == 4 || j - i == 7 || matches!(chars[j - 1], 'e' | 'E') || chars[i..j].contains(&'T') || chars[i..j].contains(&'t'))
                    {
                        break;
                    }
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                if let Ok(n) = text.parse::<f64>() {
                    out.push((start, Tok::Num(n)));
                } else if let Some((ms, off)) = crate::sta::time::parse(&text) {
                    out.push((start, Tok::Time(ms, off)));
                } else {
                    return Err(err(start, format!("`{text}` is neither a number nor a date-time like 2026-11-23T08:00:00Z")));
                }
                i = j;
                continue;
            }
            c if c.is_alphabetic() || c == '_' || c == '@' || c == '$' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_alphanumeric() || matches!(chars[j], '_' | '.' | '@' | '$')) {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                if chars.get(j) == Some(&'\'') {
                    let (text, next) = quoted(&chars, j).ok_or_else(|| err(j, format!("{word}'…' not closed with '")))?;
                    out.push((start, Tok::Typed(word.to_ascii_lowercase(), text)));
                    i = next;
                } else {
                    out.push((start, Tok::Word(word)));
                    i = j;
                }
                continue;
            }
            other => return Err(err(start, format!("unexpected `{other}`"))),
        }
        i += 1;
    }
    Ok(out)
}

/// The text of a quoted string starting at `chars[at] == '\''` ('' is a
/// quote) and the index after it.
fn quoted(chars: &[char], at: usize) -> Option<(String, usize)> {
    let mut s = String::new();
    let mut i = at + 1;
    while i < chars.len() {
        if chars[i] == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                s.push('\'');
                i += 2;
                continue;
            }
            return Some((s, i + 1));
        }
        s.push(chars[i]);
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_numbers_times_strings_and_typed_literals() {
        let t: Vec<Tok> = lex("result gt 3.5 and phenomenonTime lt 2026-11-23T08:00:00+08:00 or name eq 'O''Brien' or geo.distance(location, geography'POINT(1 2)') lt 1e-3")
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert!(t.contains(&Tok::Num(3.5)));
        assert!(t.contains(&Tok::Time(crate::sta::time::parse("2026-11-23T00:00:00Z").unwrap().0, 480)));
        assert!(t.contains(&Tok::Str("O'Brien".into())));
        assert!(t.contains(&Tok::Typed("geography".into(), "POINT(1 2)".into())));
        assert!(t.contains(&Tok::Num(1e-3)));
        assert!(t.contains(&Tok::Word("geo.distance".into())));
        assert_eq!(lex("5 sub 2").unwrap().len(), 3);
        assert_eq!(lex("name eq 'x").unwrap_err().at, 8);
        assert!(lex("a # b").is_err());
    }
}
