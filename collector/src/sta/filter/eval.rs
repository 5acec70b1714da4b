//! Evaluating an `Expr` against one entity. Entities answer property paths
//! through `Resolve`; values reached through a collection relation come back
//! as `Value::Many`, and a comparison on them holds when it holds for any
//! (the implicit `any` FROST-Server applies).

use std::cmp::Ordering;

use super::geo::Geometry;
use super::{Arith, Cmp, EvalError, Expr, Func};
use crate::sta::time;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// Epoch ms and the offset (minutes) it was written with.
    Time(i64, i32),
    /// A time interval, epoch ms start and end.
    Interval(i64, i64),
    /// ms.
    Duration(i64),
    Geo(Geometry),
    Many(Vec<Value>),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Num(_) => "a number",
            Value::Str(_) => "a string",
            Value::Time(..) => "a date-time",
            Value::Interval(..) => "a time interval",
            Value::Duration(_) => "a duration",
            Value::Geo(_) => "a geometry",
            Value::Many(_) => "a collection",
        }
    }

    /// A JSON property value (from `properties`, `unitOfMeasurement`, …).
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => n.as_f64().map_or(Value::Null, Value::Num),
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::Many(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(_) => Geometry::from_geojson(v).map_or(Value::Null, Value::Geo),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Many(vs) => vs.iter().any(Value::truthy),
            _ => false,
        }
    }
}

/// An entity as the evaluator sees it.
pub trait Resolve {
    /// The value at `path`, following single-valued relations (and
    /// collection ones, giving `Value::Many`).
    fn resolve(&self, path: &[String]) -> Result<Value, EvalError>;
}

/// For expressions without properties (what pushdown evaluates).
pub struct NoEntity;

impl Resolve for NoEntity {
    fn resolve(&self, path: &[String]) -> Result<Value, EvalError> {
        Err(EvalError::UnknownProperty { path: path.join("/"), set: "a constant" })
    }
}

/// The oldest and newest instants `mindatetime()` and `maxdatetime()` give.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Whether `e` holds for the entity.
pub fn matches(e: &Expr, r: &dyn Resolve, now_ms: i64) -> Result<bool, EvalError> {
    Ok(eval(e, r, now_ms)?.truthy())
}

pub fn eval(e: &Expr, r: &dyn Resolve, now_ms: i64) -> Result<Value, EvalError> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => r.resolve(p)?,
        Expr::Not(x) => match eval(x, r, now_ms)? {
            Value::Null => Value::Null,
            v => Value::Bool(!v.truthy()),
        },
        Expr::And(a, b) => Value::Bool(matches(a, r, now_ms)? && matches(b, r, now_ms)?),
        Expr::Or(a, b) => Value::Bool(matches(a, r, now_ms)? || matches(b, r, now_ms)?),
        Expr::Cmp(op, a, b) => Value::Bool(compare(*op, &eval(a, r, now_ms)?, &eval(b, r, now_ms)?)),
        Expr::Arith(op, a, b) => arith(*op, eval(a, r, now_ms)?, eval(b, r, now_ms)?)?,
        Expr::Neg(x) => arith(Arith::Sub, Value::Num(0.0), eval(x, r, now_ms)?)?,
        Expr::Call(f, args) => {
            let vals = args.iter().map(|a| eval(a, r, now_ms)).collect::<Result<Vec<_>, _>>()?;
            call(*f, vals, now_ms)?
        }
    })
}

/// A comparison; on `Many`, whether it holds for any element. Values of
/// different types are unequal and unordered (false), as are nulls except
/// `null eq null`.
pub fn compare(op: Cmp, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Many(xs), _) => return xs.iter().any(|x| compare(op, x, b)),
        (_, Value::Many(ys)) => return ys.iter().any(|y| compare(op, a, y)),
        _ => {}
    }
    // An interval against an instant: before it ends, after it starts.
    if let (Value::Interval(s, e), Some(t)) = (a, instant(b)) {
        return match op {
            Cmp::Eq => *s == t && *e == t,
            Cmp::Ne => !(*s == t && *e == t),
            Cmp::Gt => *s > t,
            Cmp::Ge => *s >= t,
            Cmp::Lt => *e < t,
            Cmp::Le => *e <= t,
        };
    }
    if let (Some(_), Value::Interval(..)) = (instant(a), b) {
        let flipped = match op {
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            same => same,
        };
        return compare(flipped, b, a);
    }
    let ord = match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Interval(s1, e1), Value::Interval(s2, e2)) => Some((s1, e1).cmp(&(s2, e2))),
        (Value::Geo(x), Value::Geo(y)) => (x == y).then_some(Ordering::Equal),
        _ => match (instant(a), instant(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
    };
    match (op, ord) {
        (Cmp::Ne, None) => true,
        (_, None) => false,
        (Cmp::Eq, Some(o)) => o == Ordering::Equal,
        (Cmp::Ne, Some(o)) => o != Ordering::Equal,
        (Cmp::Gt, Some(o)) => o == Ordering::Greater,
        (Cmp::Ge, Some(o)) => o != Ordering::Less,
        (Cmp::Lt, Some(o)) => o == Ordering::Less,
        (Cmp::Le, Some(o)) => o != Ordering::Greater,
    }
}

/// A value as an instant: a date-time, or a string that reads as one.
fn instant(v: &Value) -> Option<i64> {
    match v {
        Value::Time(ms, _) => Some(*ms),
        Value::Str(s) => time::parse(s).map(|(ms, _)| ms),
        _ => None,
    }
}

/// A total order for `$orderby`: nulls first, then by value; values of
/// different kinds by kind.
pub fn order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Num(_) => 2,
            Value::Str(_) => 3,
            Value::Time(..) | Value::Interval(..) => 4,
            Value::Duration(_) => 5,
            Value::Geo(_) => 6,
            Value::Many(_) => 7,
        }
    }
    let start = |v: &Value| match v {
        Value::Time(t, _) | Value::Interval(t, _) => *t,
        _ => 0,
    };
    match (a, b) {
        (Value::Many(x), _) if !x.is_empty() => order(&x[0], b),
        (_, Value::Many(y)) if !y.is_empty() => order(a, &y[0]),
        (Value::Num(x), Value::Num(y)) => x.total_cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Duration(x), Value::Duration(y)) => x.cmp(y),
        (x, y) if rank(x) == 4 && rank(y) == 4 => start(x).cmp(&start(y)),
        (x, y) => rank(x).cmp(&rank(y)),
    }
}

fn arith(op: Arith, a: Value, b: Value) -> Result<Value, EvalError> {
    let name = match op {
        Arith::Add => "add",
        Arith::Sub => "sub",
        Arith::Mul => "mul",
        Arith::Div => "div",
        Arith::Mod => "mod",
    };
    Ok(match (op, a, b) {
        (_, Value::Null, _) | (_, _, Value::Null) => Value::Null,
        (_, Value::Many(xs), b) => Value::Many(xs.into_iter().map(|x| arith(op, x, b.clone())).collect::<Result<_, _>>()?),
        (_, a, Value::Many(ys)) => Value::Many(ys.into_iter().map(|y| arith(op, a.clone(), y)).collect::<Result<_, _>>()?),
        (Arith::Add, Value::Num(x), Value::Num(y)) => Value::Num(x + y),
        (Arith::Sub, Value::Num(x), Value::Num(y)) => Value::Num(x - y),
        (Arith::Mul, Value::Num(x), Value::Num(y)) => Value::Num(x * y),
        (Arith::Div, Value::Num(x), Value::Num(y)) => Value::Num(x / y),
        (Arith::Mod, Value::Num(x), Value::Num(y)) => Value::Num(x % y),
        (Arith::Add, Value::Time(t, o), Value::Duration(d)) | (Arith::Add, Value::Duration(d), Value::Time(t, o)) => Value::Time(t.saturating_add(d), o),
        (Arith::Sub, Value::Time(t, o), Value::Duration(d)) => Value::Time(t.saturating_sub(d), o),
        (Arith::Sub, Value::Time(t, _), Value::Time(u, _)) => Value::Duration(t.saturating_sub(u)),
        (Arith::Add, Value::Duration(x), Value::Duration(y)) => Value::Duration(x.saturating_add(y)),
        (Arith::Sub, Value::Duration(x), Value::Duration(y)) => Value::Duration(x.saturating_sub(y)),
        (_, a, b) => return Err(EvalError::Operands { op: name, left: a.kind(), right: b.kind() }),
    })
}

fn call(f: Func, mut args: Vec<Value>, now_ms: i64) -> Result<Value, EvalError> {
    // A function of a collection's values is each value's.
    if let Some(i) = args.iter().position(|a| matches!(a, Value::Many(_))) {
        let Value::Many(items) = std::mem::replace(&mut args[i], Value::Null) else { unreachable!() };
        let out = items
            .into_iter()
            .map(|item| {
                let mut one = args.clone();
                one[i] = item;
                call(f, one, now_ms)
            })
            .collect::<Result<_, _>>()?;
        return Ok(Value::Many(out));
    }
    if args.contains(&Value::Null) {
        return Ok(Value::Null);
    }
    let wrong = |expected: &'static str, got: &Value| EvalError::Type { func: f.name(), expected, got: got.kind() };
    let text = |v: &Value| -> Result<String, EvalError> {
        match v {
            Value::Str(s) => Ok(s.clone()),
            Value::Num(n) => Ok(n.to_string()),
            other => Err(wrong("strings", other)),
        }
    };
    let when = |v: &Value| -> Result<(i64, i32), EvalError> {
        match v {
            Value::Time(t, o) => Ok((*t, *o)),
            Value::Interval(s, _) => Ok((*s, 0)),
            Value::Str(s) => time::parse(s).ok_or_else(|| wrong("a date-time", v)),
            other => Err(wrong("a date-time", other)),
        }
    };
    let num = |v: &Value| match v {
        Value::Num(n) => Ok(*n),
        other => Err(wrong("a number", other)),
    };
    let geo = |v: &Value| match v {
        Value::Geo(g) => Ok(g.clone()),
        other => Err(wrong("geometries", other)),
    };
    let civil = |v: &Value| when(v).map(|(t, o)| time::civil(t + o as i64 * 60_000));
    use Func::*;
    Ok(match f {
        SubstringOf => Value::Bool(text(&args[1])?.contains(&text(&args[0])?)),
        Contains => Value::Bool(text(&args[0])?.contains(&text(&args[1])?)),
        EndsWith => Value::Bool(text(&args[0])?.ends_with(&text(&args[1])?)),
        StartsWith => Value::Bool(text(&args[0])?.starts_with(&text(&args[1])?)),
        Length => Value::Num(text(&args[0])?.chars().count() as f64),
        IndexOf => {
            let (s, sub) = (text(&args[0])?, text(&args[1])?);
            Value::Num(s.find(&sub).map_or(-1.0, |b| s[..b].chars().count() as f64))
        }
        Substring => {
            let s: Vec<char> = text(&args[0])?.chars().collect();
            let from = (num(&args[1])?.max(0.0) as usize).min(s.len());
            let len = match args.get(2) {
                Some(n) => num(n)?.max(0.0) as usize,
                None => s.len(),
            };
            Value::Str(s[from..(from.saturating_add(len)).min(s.len())].iter().collect())
        }
        ToLower => Value::Str(text(&args[0])?.to_lowercase()),
        ToUpper => Value::Str(text(&args[0])?.to_uppercase()),
        Trim => Value::Str(text(&args[0])?.trim().to_string()),
        Concat => Value::Str(text(&args[0])? + &text(&args[1])?),
        Year => Value::Num(civil(&args[0])?.year as f64),
        Month => Value::Num(civil(&args[0])?.month as f64),
        Day => Value::Num(civil(&args[0])?.day as f64),
        Hour => Value::Num(civil(&args[0])?.hour as f64),
        Minute => Value::Num(civil(&args[0])?.minute as f64),
        Second => Value::Num(civil(&args[0])?.second as f64),
        FractionalSeconds => Value::Num(civil(&args[0])?.ms as f64 / 1000.0),
        Date => {
            let c = civil(&args[0])?;
            Value::Time(time::days_from_civil(c.year, c.month, c.day) * 86_400_000, 0)
        }
        Time => {
            let c = civil(&args[0])?;
            Value::Str(format!("{:02}:{:02}:{:02}.{:03}", c.hour, c.minute, c.second, c.ms))
        }
        TotalOffsetMinutes => Value::Num(when(&args[0])?.1 as f64),
        Now => Value::Time(now_ms, 0),
        MinDateTime => Value::Time(MIN_TIME_MS, 0),
        MaxDateTime => Value::Time(MAX_TIME_MS, 0),
        Round => Value::Num(num(&args[0])?.round()),
        Floor => Value::Num(num(&args[0])?.floor()),
        Ceiling => Value::Num(num(&args[0])?.ceil()),
        GeoDistance => Value::Num(geo(&args[0])?.distance(&geo(&args[1])?)),
        GeoLength => Value::Num(geo(&args[0])?.length()),
        GeoIntersects | StIntersects => Value::Bool(geo(&args[0])?.intersects(&geo(&args[1])?)),
        StDisjoint => Value::Bool(!geo(&args[0])?.intersects(&geo(&args[1])?)),
        StEquals => Value::Bool(geo(&args[0])? == geo(&args[1])?),
        StWithin => Value::Bool(geo(&args[0])?.within(&geo(&args[1])?)),
        StContains => Value::Bool(geo(&args[1])?.within(&geo(&args[0])?)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    /// An Observation-like entity for the tests.
    struct Obs {
        t: i64,
        result: f64,
        name: &'static str,
        districts: Vec<&'static str>,
    }

    impl Resolve for Obs {
        fn resolve(&self, path: &[String]) -> Result<Value, EvalError> {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            Ok(match p[..] {
                ["phenomenonTime"] => Value::Time(self.t, 0),
                ["result"] => Value::Num(self.result),
                ["name"] => Value::Str(self.name.into()),
                ["missing"] => Value::Null,
                ["location"] => Value::Geo(Geometry::Point(120.13, 30.26)),
                ["Things", "district"] => Value::Many(self.districts.iter().map(|d| Value::Str(d.to_string())).collect()),
                _ => return Err(EvalError::UnknownProperty { path: path.join("/"), set: "Observations" }),
            })
        }
    }

    fn holds(src: &str, o: &Obs) -> bool {
        matches(&parse(src).unwrap_or_else(|e| panic!("{src}: {e}")), o, 1_700_000_000_000).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    #[test]
    fn each_operator_and_function_family() {
        let o = Obs { t: 1_700_000_000_123, result: 35.0, name: "Xihu PM2.5", districts: vec!["Xihu", "Binjiang"] };
        for yes in [
            "result eq 35",
            "result ne 36 and result ge 35 and result le 35 and result gt 34.9 and result lt 35.1",
            "not (result gt 40) or result eq 0",
            "result add 5 eq 40 and result sub 5 eq 30 and result mul 2 eq 70 and result div 7 eq 5 and result mod 10 eq 5",
            "-result eq -35",
            "startswith(name, 'Xihu') and endswith(name, '2.5') and contains(name, 'PM') and substringof('PM', name)",
            "length(name) eq 10 and indexof(name, 'PM') eq 5 and substring(name, 5) eq 'PM2.5' and substring(name, 0, 4) eq 'Xihu'",
            "tolower(name) eq 'xihu pm2.5' and toupper(name) eq 'XIHU PM2.5' and trim(' a ') eq 'a' and concat(name, '!') eq 'Xihu PM2.5!'",
            "year(phenomenonTime) eq 2023 and month(phenomenonTime) eq 11 and day(phenomenonTime) eq 14",
            "hour(phenomenonTime) eq 22 and minute(phenomenonTime) eq 13 and second(phenomenonTime) eq 20 and fractionalseconds(phenomenonTime) eq 0.123",
            "date(phenomenonTime) eq 2023-11-14 and time(phenomenonTime) eq '22:13:20.123' and totaloffsetminutes(phenomenonTime) eq 0",
            "phenomenonTime gt 2023-11-14T22:13:20Z and phenomenonTime lt 2023-11-15T06:13:21+08:00",
            "phenomenonTime gt now() sub duration'PT1S' and phenomenonTime lt maxdatetime() and phenomenonTime gt mindatetime()",
            "round(result div 10) eq 4 and floor(result div 10) eq 3 and ceiling(result div 10) eq 4",
            "geo.distance(location, geography'POINT(120.13 30.27)') lt 0.011",
            "st_within(location, geography'POLYGON((120 30, 121 30, 121 31, 120 31, 120 30))')",
            "geo.intersects(location, geography'POLYGON((120 30, 121 30, 121 31, 120 31, 120 30))')",
            "st_disjoint(location, geography'POINT(0 0)') and st_equals(location, geography'POINT(120.13 30.26)')",
            "Things/district eq 'Binjiang'",
            "missing eq null and missing ne 1",
        ] {
            assert!(holds(yes, &o), "{yes}");
        }
        for no in ["result gt 35", "name eq 35", "missing eq 1", "Things/district eq 'Gongshu'", "phenomenonTime lt 2023-11-14T22:13:20Z", "not (result eq 35)"] {
            assert!(!holds(no, &o), "{no}");
        }
    }

    #[test]
    fn type_errors_and_unknown_properties_are_refused() {
        let o = Obs { t: 0, result: 1.0, name: "x", districts: vec![] };
        let err = |src: &str| matches(&parse(src).unwrap(), &o, 0).unwrap_err().to_string();
        assert!(err("nosuch eq 1").contains("unknown property `nosuch`"));
        assert!(err("year(result) eq 1").contains("year() takes a date-time"));
        assert!(err("name add 1 eq 2").contains("`add` cannot combine a string and a number"));
        assert!(err("geo.distance(name, location) lt 1").contains("geometries"));
    }

    #[test]
    fn intervals_compare_by_their_ends() {
        let iv = Value::Interval(100, 200);
        assert!(compare(Cmp::Gt, &iv, &Value::Time(50, 0)) && !compare(Cmp::Gt, &iv, &Value::Time(150, 0)));
        assert!(compare(Cmp::Lt, &iv, &Value::Time(250, 0)) && !compare(Cmp::Lt, &iv, &Value::Time(150, 0)));
        assert!(compare(Cmp::Lt, &Value::Time(50, 0), &iv));
        assert_eq!(order(&Value::Null, &Value::Num(1.0)), Ordering::Less);
    }
}
