//! What an Observations `$filter` tells the store before any observation is
//! read: the conjuncts `phenomenonTime`/`resultTime` `gt|ge|lt|le|eq`
//! constant become the time range of the store's range query, and those that
//! only look at the Datastream (`Datastream/…`) choose the series. Only the
//! remaining conjuncts are evaluated per observation; when none remain, the
//! range is exact and counts can come from rollups.

use super::eval::{eval, NoEntity, Value};
use super::{Cmp, Expr};

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Inclusive bounds, epoch ms.
    pub from: i64,
    pub to: i64,
    /// Conjuncts on the Datastream, with the leading `Datastream/` removed.
    pub per_datastream: Vec<Expr>,
    /// Conjuncts evaluated on each observation.
    pub rest: Vec<Expr>,
}

impl Plan {
    /// Whether the range and the series choice are the whole filter.
    pub fn exact(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn everything() -> Plan {
        Plan { from: i64::MIN, to: i64::MAX, per_datastream: Vec::new(), rest: Vec::new() }
    }
}

fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other.clone()),
    }
}

fn is_time(e: &Expr) -> bool {
    matches!(e, Expr::Path(p) if p.len() == 1 && (p[0] == "phenomenonTime" || p[0] == "resultTime"))
}

/// The instant a property-free expression evaluates to.
fn constant_time(e: &Expr, now_ms: i64) -> Option<i64> {
    match eval(e, &NoEntity, now_ms).ok()? {
        Value::Time(ms, _) => Some(ms),
        Value::Str(s) => crate::sta::time::parse(&s).map(|t| t.0),
        _ => None,
    }
}

/// Every property path in `e`.
fn paths<'a>(e: &'a Expr, out: &mut Vec<&'a Vec<String>>) {
    match e {
        Expr::Path(p) => out.push(p),
        Expr::Lit(_) => {}
        Expr::Not(x) | Expr::Neg(x) => paths(x, out),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) | Expr::Arith(_, a, b) => {
            paths(a, out);
            paths(b, out);
        }
        Expr::Call(_, args) => args.iter().for_each(|a| paths(a, out)),
    }
}

fn strip_datastream(e: &Expr) -> Expr {
    match e {
        Expr::Path(p) => Expr::Path(p[1..].to_vec()),
        Expr::Lit(v) => Expr::Lit(v.clone()),
        Expr::Not(x) => Expr::Not(Box::new(strip_datastream(x))),
        Expr::Neg(x) => Expr::Neg(Box::new(strip_datastream(x))),
        Expr::And(a, b) => Expr::And(Box::new(strip_datastream(a)), Box::new(strip_datastream(b))),
        Expr::Or(a, b) => Expr::Or(Box::new(strip_datastream(a)), Box::new(strip_datastream(b))),
        Expr::Cmp(op, a, b) => Expr::Cmp(*op, Box::new(strip_datastream(a)), Box::new(strip_datastream(b))),
        Expr::Arith(op, a, b) => Expr::Arith(*op, Box::new(strip_datastream(a)), Box::new(strip_datastream(b))),
        Expr::Call(f, args) => Expr::Call(*f, args.iter().map(strip_datastream).collect()),
    }
}

pub fn plan(filter: Option<&Expr>, now_ms: i64) -> Plan {
    let mut p = Plan::everything();
    let Some(filter) = filter else { return p };
    let mut all = Vec::new();
    conjuncts(filter, &mut all);
    for c in all {
        if let Expr::Cmp(op, a, b) = &c {
            // Put the property on the left.
            let (op, bound) = match (is_time(a), is_time(b)) {
                (true, false) => (Some(*op), constant_time(b, now_ms)),
                (false, true) => (
                    Some(match op {
                        Cmp::Gt => Cmp::Lt,
                        Cmp::Ge => Cmp::Le,
                        Cmp::Lt => Cmp::Gt,
                        Cmp::Le => Cmp::Ge,
                        same => *same,
                    }),
                    constant_time(a, now_ms),
                ),
                _ => (None, None),
            };
            if let (Some(op), Some(t)) = (op, bound) {
                let pushed = match op {
                    Cmp::Gt => Some((t.saturating_add(1), i64::MAX)),
                    Cmp::Ge => Some((t, i64::MAX)),
                    Cmp::Lt => Some((i64::MIN, t.saturating_sub(1))),
                    Cmp::Le => Some((i64::MIN, t)),
                    Cmp::Eq => Some((t, t)),
                    Cmp::Ne => None,
                };
                if let Some((from, to)) = pushed {
                    p.from = p.from.max(from);
                    p.to = p.to.min(to);
                    continue;
                }
            }
        }
        let mut ps = Vec::new();
        paths(&c, &mut ps);
        if !ps.is_empty() && ps.iter().all(|p| p.len() > 1 && p[0] == "Datastream") {
            p.per_datastream.push(strip_datastream(&c));
        } else {
            p.rest.push(c);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    #[test]
    fn time_conjuncts_become_the_range_and_datastream_ones_choose_series() {
        let f = parse("phenomenonTime ge 2023-11-14T00:00:00Z and 2023-11-15T00:00:00Z gt resultTime and Datastream/Thing/name eq 'x' and result gt 3").unwrap();
        let p = plan(Some(&f), 0);
        assert_eq!((p.from, p.to), (1_699_920_000_000, 1_700_006_400_000 - 1));
        assert_eq!(p.per_datastream, vec![parse("Thing/name eq 'x'").unwrap()]);
        assert_eq!(p.rest, vec![parse("result gt 3").unwrap()]);
        let exact = plan(Some(&parse("phenomenonTime gt now() sub duration'PT1H'").unwrap()), 7_200_000);
        assert!(exact.exact() && exact.from == 3_600_001 && exact.to == i64::MAX);
        // Under `or` nothing is pushed: the whole filter runs per observation.
        let or = plan(Some(&parse("phenomenonTime gt 2023-11-14T00:00:00Z or result gt 1").unwrap()), 0);
        assert!(!or.exact() && or.from == i64::MIN);
        assert!(!plan(Some(&parse("phenomenonTime ne 2023-11-14T00:00:00Z").unwrap()), 0).exact());
    }
}
