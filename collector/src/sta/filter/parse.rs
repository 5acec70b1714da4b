//! `$filter` text to `Expr`, by recursive descent. Precedence, loosest
//! first: `or`, `and`, `not`, comparisons, `add`/`sub`, `mul`/`div`/`mod`,
//! unary minus, then literals, paths, calls and parentheses.

use super::eval::Value;
use super::geo::Geometry;
use super::lex::{lex, Tok};
use super::{Arith, Cmp, Expr, Func, SyntaxError};

/// Longest expression accepted, in characters: bounds parse time and depth.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses and operators.
const MAX_DEPTH: usize = 64;

pub fn parse(src: &str) -> Result<Expr, SyntaxError> {
    if src.chars().count() > MAX_LEN {
        return Err(SyntaxError { at: MAX_LEN, reason: format!("longer than {MAX_LEN} characters") });
    }
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, end: src.chars().count(), depth: 0 };
    if p.toks.is_empty() {
        return Err(SyntaxError { at: 0, reason: "empty expression".into() });
    }
    let e = p.or()?;
    match p.peek() {
        None => Ok(e),
        Some(t) => Err(p.err(format!("unexpected {} after a complete expression", describe(t)))),
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Str(s) => format!("'{s}'"),
        Tok::Num(n) => format!("{n}"),
        Tok::Time(..) => "a date-time".into(),
        Tok::Typed(k, _) => format!("{k}'…'"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Slash => "`/`".into(),
        Tok::Minus => "`-`".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn err(&self, reason: String) -> SyntaxError {
        SyntaxError { at: self.at(), reason }
    }

    fn keyword(&self) -> Option<String> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn eat_keyword(&mut self, k: &str) -> bool {
        if self.keyword().as_deref() == Some(k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn deeper(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        self.deeper()?;
        let mut e = self.and()?;
        while self.eat_keyword("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.not()?;
        while self.eat_keyword("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.eat_keyword("not") {
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, SyntaxError> {
        let left = self.additive()?;
        let op = match self.keyword().as_deref() {
            Some("eq") => Cmp::Eq,
            Some("ne") => Cmp::Ne,
            Some("gt") => Cmp::Gt,
            Some("ge") => Cmp::Ge,
            Some("lt") => Cmp::Lt,
            Some("le") => Cmp::Le,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.additive()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.multiplicative()?;
        loop {
            let op = match self.keyword().as_deref() {
                Some("add") => Arith::Add,
                Some("sub") => Arith::Sub,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Arith(op, Box::new(e), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, SyntaxError> {
        let mut e = self.unary()?;
        loop {
            let op = match self.keyword().as_deref() {
                Some("mul") => Arith::Mul,
                Some("div") => Arith::Div,
                Some("mod") => Arith::Mod,
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Arith(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.peek() == Some(&Tok::Minus) {
            self.pos += 1;
            self.deeper()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Expr::Lit(Value::Num(n)) => Expr::Lit(Value::Num(-n)),
                other => Expr::Neg(Box::new(other)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(self.err("expression ends where a value was expected".into()));
        };
        self.pos += 1;
        match tok {
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(self.err("`(` not closed with `)`".into()));
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Num(n) => Ok(Expr::Lit(Value::Num(n))),
            Tok::Time(ms, off) => Ok(Expr::Lit(Value::Time(ms, off))),
            Tok::Typed(kind, text) => match kind.as_str() {
                "geography" | "geometry" => {
                    let g = Geometry::parse_wkt(&text).map_err(|reason| SyntaxError { at, reason: format!("{kind}'{text}': {reason}") })?;
                    Ok(Expr::Lit(Value::Geo(g)))
                }
                "duration" => crate::sta::time::parse_duration(&text)
                    .map(|ms| Expr::Lit(Value::Duration(ms)))
                    .ok_or_else(|| SyntaxError { at, reason: format!("duration'{text}' is not like P1DT2H30M10.5S") }),
                other => Err(SyntaxError { at, reason: format!("unknown literal type `{other}` (geography, geometry, duration)") }),
            },
            Tok::Word(w) => {
                if self.peek() == Some(&Tok::LParen) {
                    return self.call(at, &w);
                }
                match w.to_ascii_lowercase().as_str() {
                    "true" => return Ok(Expr::Lit(Value::Bool(true))),
                    "false" => return Ok(Expr::Lit(Value::Bool(false))),
                    "null" => return Ok(Expr::Lit(Value::Null)),
                    "and" | "or" | "not" | "eq" | "ne" | "gt" | "ge" | "lt" | "le" | "add" | "sub" | "mul" | "div" | "mod" => {
                        return Err(SyntaxError { at, reason: format!("`{w}` where a value was expected") });
                    }
                    _ => {}
                }
                let mut path = vec![w];
                while self.peek() == Some(&Tok::Slash) {
                    self.pos += 1;
                    match self.toks.get(self.pos).cloned() {
                        Some((_, Tok::Word(next))) => {
                            path.push(next);
                            self.pos += 1;
                        }
                        _ => return Err(self.err("a property name must follow `/`".into())),
                    }
                }
                Ok(Expr::Path(path))
            }
            other => Err(SyntaxError { at, reason: format!("unexpected {}", describe(&other)) }),
        }
    }

    fn call(&mut self, at: usize, name: &str) -> Result<Expr, SyntaxError> {
        let (func, lo, hi) = Func::lookup(name).ok_or_else(|| SyntaxError { at, reason: format!("unknown function `{name}`") })?;
        self.pos += 1; // (
        let mut args = Vec::new();
        if self.peek() == Some(&Tok::RParen) {
            self.pos += 1;
        } else {
            loop {
                args.push(self.or()?);
                match self.peek() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RParen) => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.err(format!("expected `,` or `)` in the arguments of {name}()"))),
                }
            }
        }
        if args.len() < lo || args.len() > hi {
            let want = if lo == hi { format!("{lo}") } else { format!("{lo} to {hi}") };
            return Err(SyntaxError { at, reason: format!("{name}() takes {want} argument(s), not {}", args.len()) });
        }
        Ok(Expr::Call(func, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Box<Expr> {
        Box::new(Expr::Path(p.split('/').map(str::to_string).collect()))
    }

    #[test]
    fn precedence_follows_odata() {
        let e = parse("result add 2 mul 3 gt 10 and not name eq 'x' or id eq 1").unwrap();
        let sum = Expr::Arith(Arith::Add, path("result"), Box::new(Expr::Arith(Arith::Mul, Box::new(Expr::Lit(Value::Num(2.0))), Box::new(Expr::Lit(Value::Num(3.0))))));
        let gt = Expr::Cmp(Cmp::Gt, Box::new(sum), Box::new(Expr::Lit(Value::Num(10.0))));
        let not = Expr::Not(Box::new(Expr::Cmp(Cmp::Eq, path("name"), Box::new(Expr::Lit(Value::Str("x".into()))))));
        let id = Expr::Cmp(Cmp::Eq, path("id"), Box::new(Expr::Lit(Value::Num(1.0))));
        assert_eq!(e, Expr::Or(Box::new(Expr::And(Box::new(gt), Box::new(not))), Box::new(id)));
        assert_eq!(parse("Datastream/Thing/name eq 'a'").unwrap(), Expr::Cmp(Cmp::Eq, path("Datastream/Thing/name"), Box::new(Expr::Lit(Value::Str("a".into())))));
        assert_eq!(parse("-5 lt result").unwrap(), Expr::Cmp(Cmp::Lt, Box::new(Expr::Lit(Value::Num(-5.0))), path("result")));
        assert!(matches!(parse("now() sub duration'P1D'").unwrap(), Expr::Arith(Arith::Sub, _, _)));
    }

    #[test]
    fn bad_filters_say_where_and_why() {
        for (src, at, words) in [
            ("result gt", 9, "value was expected"),
            ("result gt 1 1", 12, "after a complete expression"),
            ("frobnicate(result) eq 1", 0, "unknown function `frobnicate`"),
            ("startswith(name) eq true", 0, "takes 2 argument(s), not 1"),
            ("(result gt 1", 12, "not closed"),
            ("name eq 'x", 8, "not closed"),
            ("geo.distance(location, geography'POINT(1)') lt 1", 23, "POINT"),
            ("result gt and", 10, "`and` where a value"),
        ] {
            let e = parse(src).unwrap_err();
            assert!(e.reason.contains(words) && e.at == at, "{src}: {e}");
        }
        assert!(parse(&"(".repeat(100)).unwrap_err().reason.contains("nested"));
        assert!(parse(&"a".repeat(MAX_LEN + 1)).is_err());
    }
}
