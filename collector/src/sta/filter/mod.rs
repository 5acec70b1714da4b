//! The OData expression language of `$filter` and `$orderby`: a lexer
//! (`lex`), a recursive-descent parser into `Expr` (`parse`), an evaluator
//! over any entity that can `Resolve` a property path (`eval`), point and
//! polygon geometry (`geo`), and what a filter says about time that the store
//! can use (`pushdown`).
//!
//! Written here rather than taken from a crate: the one maintained OData
//! filter parser on crates.io (`odata-params`) has no arithmetic operators
//! and no geography literals, both of which SensorThings needs.

pub mod eval;
pub mod geo;
mod lex;
pub mod parse;
pub mod pushdown;

pub use eval::{Resolve, Value};
pub use parse::parse;

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Value),
    /// A property path, e.g. `result`, `Datastream/Thing/properties/district`.
    Path(Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Call(Func, Vec<Expr>),
}

/// The functions `$filter` knows, with their arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    // Strings.
    SubstringOf,
    Contains,
    EndsWith,
    StartsWith,
    Length,
    IndexOf,
    Substring,
    ToLower,
    ToUpper,
    Trim,
    Concat,
    // Date and time.
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    FractionalSeconds,
    Date,
    Time,
    TotalOffsetMinutes,
    Now,
    MinDateTime,
    MaxDateTime,
    // Maths.
    Round,
    Floor,
    Ceiling,
    // Geometry.
    GeoDistance,
    GeoLength,
    GeoIntersects,
    StEquals,
    StDisjoint,
    StIntersects,
    StWithin,
    StContains,
}

impl Func {
    /// Name, and the fewest and most arguments.
    pub const TABLE: [(&'static str, Func, usize, usize); 36] = [
        ("substringof", Func::SubstringOf, 2, 2),
        ("contains", Func::Contains, 2, 2),
        ("endswith", Func::EndsWith, 2, 2),
        ("startswith", Func::StartsWith, 2, 2),
        ("length", Func::Length, 1, 1),
        ("indexof", Func::IndexOf, 2, 2),
        ("substring", Func::Substring, 2, 3),
        ("tolower", Func::ToLower, 1, 1),
        ("toupper", Func::ToUpper, 1, 1),
        ("trim", Func::Trim, 1, 1),
        ("concat", Func::Concat, 2, 2),
        ("year", Func::Year, 1, 1),
        ("month", Func::Month, 1, 1),
        ("day", Func::Day, 1, 1),
        ("hour", Func::Hour, 1, 1),
        ("minute", Func::Minute, 1, 1),
        ("second", Func::Second, 1, 1),
        ("fractionalseconds", Func::FractionalSeconds, 1, 1),
        ("date", Func::Date, 1, 1),
        ("time", Func::Time, 1, 1),
        ("totaloffsetminutes", Func::TotalOffsetMinutes, 1, 1),
        ("now", Func::Now, 0, 0),
        ("mindatetime", Func::MinDateTime, 0, 0),
        ("maxdatetime", Func::MaxDateTime, 0, 0),
        ("round", Func::Round, 1, 1),
        ("floor", Func::Floor, 1, 1),
        ("ceiling", Func::Ceiling, 1, 1),
        ("geo.distance", Func::GeoDistance, 2, 2),
        ("geo.length", Func::GeoLength, 1, 1),
        ("geo.intersects", Func::GeoIntersects, 2, 2),
        ("st_equals", Func::StEquals, 2, 2),
        ("st_disjoint", Func::StDisjoint, 2, 2),
        ("st_intersects", Func::StIntersects, 2, 2),
        ("st_within", Func::StWithin, 2, 2),
        ("st_contains", Func::StContains, 2, 2),
        ("st_touches", Func::StIntersects, 2, 2),
    ];

    pub fn lookup(name: &str) -> Option<(Func, usize, usize)> {
        Func::TABLE.iter().find(|(n, ..)| n.eq_ignore_ascii_case(name)).map(|(_, f, lo, hi)| (*f, *lo, *hi))
    }

    pub fn name(self) -> &'static str {
        Func::TABLE.iter().find(|(_, f, ..)| *f == self).map_or("?", |(n, ..)| n)
    }
}

/// A `$filter` or `$orderby` that cannot be parsed, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at character {at}: {reason}")]
pub struct SyntaxError {
    pub at: usize,
    pub reason: String,
}

/// An expression that parses but cannot be evaluated (a wrong type, an
/// unknown property): the whole query is refused, naming it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("unknown property `{path}` of {set}")]
    UnknownProperty { path: String, set: &'static str },
    #[error("`{path}`: {set} has no single-valued relation `{name}` to follow here")]
    NotNavigable { path: String, set: &'static str, name: String },
    #[error("{func}() takes {expected}, not {got}")]
    Type { func: &'static str, expected: &'static str, got: &'static str },
    #[error("`{op}` cannot combine {left} and {right}")]
    Operands { op: &'static str, left: &'static str, right: &'static str },
}
