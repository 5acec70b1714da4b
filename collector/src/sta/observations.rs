//! Observations come from the store, a chunk at a time: a page reads only
//! what it shows (plus what `$skip` passes over), a time `$filter` becomes
//! the store's range (`filter::pushdown`), `$count` of a time range adds up
//! hour rollups instead of reading samples, and ordering by time across
//! Datastreams merges one cursor per series. The newest observation of a
//! series comes from the live registry. Every loop checks the deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use shared::Sample;

use super::error::StaError;
use super::filter::eval::{matches, order, Value};
use super::filter::pushdown::{self, Plan};
use super::filter::Expr;
use super::model::{Bound, Entity, Graph};
use crate::store::Level;

const HOUR: i64 = 3_600_000;
/// Samples read from the store at once.
const CHUNK: usize = 2048;
/// The most samples one backward window may hold before it is narrowed.
const WINDOW_CAP: usize = 100_000;

/// The per-query deadline.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
    limit: Duration,
}

impl Budget {
    pub fn new(limit: Duration) -> Budget {
        Budget { deadline: Instant::now() + limit, limit }
    }

    pub fn check(&self) -> Result<(), StaError> {
        if Instant::now() > self.deadline {
            return Err(StaError::Deadline(self.limit.as_millis() as u64));
        }
        Ok(())
    }
}

/// What a collection query asks of Observations.
pub struct Request<'q> {
    pub datastreams: &'q [usize],
    pub filter: Option<&'q Expr>,
    pub orderby: &'q [(Expr, bool)],
    pub skip: usize,
    pub top: usize,
    pub count: bool,
}

/// One page of a collection.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Entity>,
    pub count: Option<u64>,
    /// Whether entities follow this page (a nextLink is due).
    pub more: bool,
}

pub struct Reader<'g, 'a> {
    pub graph: &'g Graph<'a>,
    pub budget: Budget,
    pub now_ms: i64,
    pub max_sort: usize,
}

enum Order {
    /// By Datastream, then time (the order of their ids).
    Series,
    /// By time across Datastreams, ascending or descending.
    Time { desc: bool },
    /// Anything else: sorted in memory, bounded.
    Sorted,
}

fn is_path(e: &Expr, names: &[&str]) -> bool {
    matches!(e, Expr::Path(p) if p.len() == 1 && names.contains(&p[0].as_str()))
}

impl Reader<'_, '_> {
    fn series(&self, d: usize) -> (&str, &str) {
        let ds = &self.graph.datastreams[d];
        (self.graph.things[ds.thing].entry.id.as_str(), ds.metric.as_str())
    }

    fn keep(&self, rest: &[Expr], d: usize, s: Sample) -> Result<Option<Entity>, StaError> {
        let e = Entity::Observation(d, s);
        for c in rest {
            if !matches(c, &Bound { graph: self.graph, entity: &e }, self.now_ms)? {
                return Ok(None);
            }
        }
        Ok(Some(e))
    }

    /// Up to `n` samples of series `d` in `[lo, hi]`, oldest first (or newest
    /// first when `desc`), and the bound to continue from when there may be more.
    fn fetch(&self, d: usize, lo: i64, hi: i64, n: usize, desc: bool) -> Result<(Vec<Sample>, Option<i64>), StaError> {
        let (s, m) = self.series(d);
        if lo > hi {
            return Ok((Vec::new(), None));
        }
        if !desc {
            let got = self.graph.store.query(s, m, lo, hi, n)?;
            let next = (got.len() == n).then(|| got.last().map(|x| x.ts_ms.saturating_add(1))).flatten();
            return Ok((got, next));
        }
        // Backwards: windows from `hi` down, widened while empty, narrowed when too full.
        let Some(lo) = self.start(d, lo, hi)? else { return Ok((Vec::new(), None)) };
        let (mut top, mut width, mut out) = (hi, HOUR, Vec::new());
        while top >= lo && out.len() < n {
            self.budget.check()?;
            let bottom = top.saturating_sub(width - 1).max(lo);
            let window = self.graph.store.query(s, m, bottom, top, WINDOW_CAP)?;
            if window.len() == WINDOW_CAP && width > 1 {
                width = (width / 4).max(1);
                continue;
            }
            let empty = window.is_empty();
            out.extend(window.into_iter().rev().take(n - out.len()));
            if out.len() == n {
                let next = out.last().map(|x| x.ts_ms - 1).filter(|t| *t >= lo);
                return Ok((out, next));
            }
            if bottom == lo {
                break;
            }
            top = bottom - 1;
            if empty {
                width = width.saturating_mul(4);
            }
        }
        Ok((out, None))
    }

    /// Where samples of `d` in `[lo, hi]` can start: `lo`, or the series'
    /// oldest sample when that is later (None: none there). Raw retention
    /// may have removed older samples whose rollups remain, so counts start
    /// here. The store keeps the oldest time in memory: no read.
    fn start(&self, d: usize, lo: i64, hi: i64) -> Result<Option<i64>, StaError> {
        let (s, m) = self.series(d);
        Ok(self.graph.store.first_ts(s, m)?.map(|first| first.max(lo)).filter(|&start| start <= hi))
    }

    /// Samples of `d` in `[lo, hi]` (the whole range exactly, or up to the
    /// filter), counted without keeping them: hour rollups for whole hours,
    /// raw samples at the edges.
    pub fn count_range(&self, d: usize, lo: i64, hi: i64) -> Result<u64, StaError> {
        let (s, m) = self.series(d);
        let Some(start) = self.start(d, lo, hi)? else { return Ok(0) };
        let h0 = start.saturating_add(HOUR - 1).div_euclid(HOUR).saturating_mul(HOUR);
        if hi == i64::MAX {
            // Open-ended: every hour from `h0` on is whole, the newest included.
            let whole: u64 = self.graph.store.rollups(s, m, Level::Hour, h0, hi)?.iter().map(|r| r.count as u64).sum();
            return Ok(self.count_raw(d, start, h0 - 1)? + whole);
        }
        let h1 = hi.saturating_add(1).div_euclid(HOUR).saturating_mul(HOUR);
        if h0 >= h1 {
            return self.count_raw(d, start, hi);
        }
        let whole: u64 = self.graph.store.rollups(s, m, Level::Hour, h0, h1 - HOUR)?.iter().map(|r| r.count as u64).sum();
        Ok(self.count_raw(d, start, h0 - 1)? + whole + self.count_raw(d, h1, hi)?)
    }

    /// Where to start reading `d` in `[lo, hi]` to pass over `skip` samples,
    /// and how many samples lie before that point (at most `skip`): the
    /// samples before the first whole hour counted raw, then whole hours by
    /// their rollup counts (current: `page` rolls up before a `$skip`).
    fn pass_hours(&self, d: usize, lo: i64, hi: i64, skip: usize) -> Result<(i64, usize), StaError> {
        let (s, m) = self.series(d);
        // As in `count_range`: from the first sample raw retention kept.
        let Some(start) = self.start(d, lo, hi)? else { return Ok((lo, 0)) };
        let h0 = start.saturating_add(HOUR - 1).div_euclid(HOUR).saturating_mul(HOUR);
        let h1 = hi.saturating_add(1).div_euclid(HOUR).saturating_mul(HOUR);
        if h0 >= h1 {
            return Ok((lo, 0));
        }
        let mut passed = self.count_raw(d, start, h0 - 1)? as usize;
        if passed > skip {
            return Ok((lo, 0));
        }
        let mut at = h0;
        for r in self.graph.store.rollups(s, m, Level::Hour, h0, h1 - HOUR)? {
            self.budget.check()?;
            if passed + r.count as usize > skip {
                break;
            }
            passed += r.count as usize;
            // An hour without a rollup holds no samples.
            at = r.start_ms + HOUR;
        }
        Ok((at, passed))
    }

    fn count_raw(&self, d: usize, mut lo: i64, hi: i64) -> Result<u64, StaError> {
        let mut n = 0;
        loop {
            self.budget.check()?;
            let (got, next) = self.fetch(d, lo, hi, CHUNK, false)?;
            n += got.len() as u64;
            match next {
                Some(t) => lo = t,
                None => return Ok(n),
            }
        }
    }

    pub fn page(&self, req: &Request) -> Result<Page, StaError> {
        let plan = pushdown::plan(req.filter, self.now_ms);
        let mut dss = Vec::with_capacity(req.datastreams.len());
        for &d in req.datastreams {
            let ds = Entity::Datastream(d);
            let mut keep = true;
            for c in &plan.per_datastream {
                if !matches(c, &Bound { graph: self.graph, entity: &ds }, self.now_ms)? {
                    keep = false;
                    break;
                }
            }
            if keep {
                dss.push(d);
            }
        }
        let order = match req.orderby {
            [] => Order::Series,
            [(k, false)] if is_path(k, &["id"]) => Order::Series,
            [(k, desc)] if is_path(k, &["phenomenonTime", "resultTime"]) => Order::Time { desc: *desc },
            [(k, desc), (i, false)] if is_path(k, &["phenomenonTime", "resultTime"]) && is_path(i, &["id"]) => Order::Time { desc: *desc },
            _ => Order::Sorted,
        };
        if plan.exact() && (req.count || req.skip > 0) {
            // Rollups keep their counts current only after a pass over what was written.
            self.graph.store.roll_up()?;
        }
        let mut page = match order {
            Order::Series => self.in_series_order(&dss, &plan, req)?,
            Order::Time { desc } => self.in_time_order(&dss, &plan, req, desc)?,
            Order::Sorted => return self.sorted(&dss, &plan, req),
        };
        if req.count && plan.exact() {
            let mut total = 0;
            for &d in &dss {
                self.budget.check()?;
                total += self.count_range(d, plan.from, plan.to)?;
            }
            page.count = Some(total);
        }
        Ok(page)
    }

    fn in_series_order(&self, dss: &[usize], plan: &Plan, req: &Request) -> Result<Page, StaError> {
        let want = req.top.saturating_add(1);
        let counting = req.count && !plan.exact();
        let (mut skip, mut items, mut total) = (req.skip, Vec::new(), 0u64);
        'series: for &d in dss {
            if items.len() >= want && !counting {
                break;
            }
            let mut lo = plan.from;
            // Whole series passed over by $skip are counted, not read; inside
            // a series, whole hours are (a nextLink walk would otherwise
            // read every page before the one it asks for).
            if skip > 0 && plan.exact() {
                let n = self.count_range(d, plan.from, plan.to)?;
                if n as usize <= skip {
                    skip -= n as usize;
                    continue;
                }
                let (from, passed) = self.pass_hours(d, plan.from, plan.to, skip)?;
                lo = from;
                skip -= passed;
            }
            loop {
                self.budget.check()?;
                let (got, next) = self.fetch(d, lo, plan.to, CHUNK, false)?;
                for s in got {
                    let Some(e) = self.keep(&plan.rest, d, s)? else { continue };
                    total += 1;
                    if skip > 0 {
                        skip -= 1;
                    } else if items.len() < want {
                        items.push(e);
                    } else if !counting {
                        break 'series;
                    }
                }
                match next {
                    Some(t) => lo = t,
                    None => break,
                }
            }
        }
        Ok(finish(items, req.top, counting.then_some(total)))
    }

    fn in_time_order(&self, dss: &[usize], plan: &Plan, req: &Request, desc: bool) -> Result<Page, StaError> {
        let want = req.top.saturating_add(1);
        // The newest observation of one series: the live registry has it.
        if let ([d], true, 0, false) = (dss, desc, req.skip, req.count && !plan.exact()) {
            if let Some(latest) = self.graph.latest(*d).filter(|l| (plan.from..=plan.to).contains(&l.ts_ms) && plan.rest.is_empty()) {
                if req.top == 1 {
                    // One more may exist; a nextLink leads to it (or to an empty page).
                    return Ok(Page { items: vec![Entity::Observation(*d, latest)], count: None, more: true });
                }
            }
        }
        struct Cursor {
            d: usize,
            rank: usize,
            buf: VecDeque<Sample>,
            next: Option<i64>,
        }
        let counting = req.count && !plan.exact();
        let step = want.clamp(16, CHUNK);
        let refill = |c: &mut Cursor| -> Result<(), StaError> {
            if let Some(bound) = c.next {
                let (lo, hi) = if desc { (plan.from, bound) } else { (bound, plan.to) };
                let (got, next) = self.fetch(c.d, lo, hi, step, desc)?;
                c.buf.extend(got);
                c.next = next;
            }
            Ok(())
        };
        let mut cursors = Vec::with_capacity(dss.len());
        let mut heap: BinaryHeap<(i64, Reverse<usize>)> = BinaryHeap::new();
        let key = |ts: i64| if desc { ts } else { -ts };
        for (rank, &d) in dss.iter().enumerate() {
            self.budget.check()?;
            let mut c = Cursor { d, rank, buf: VecDeque::new(), next: Some(if desc { plan.to } else { plan.from }) };
            refill(&mut c)?;
            if let Some(s) = c.buf.front() {
                heap.push((key(s.ts_ms), Reverse(rank)));
            }
            cursors.push(c);
        }
        let (mut skip, mut items, mut total, mut popped) = (req.skip, Vec::new(), 0u64, 0u64);
        while let Some((_, Reverse(rank))) = heap.pop() {
            popped += 1;
            if popped % 1024 == 0 {
                self.budget.check()?;
            }
            let c = &mut cursors[rank];
            let s = c.buf.pop_front().expect("a cursor in the heap has a sample");
            if c.buf.is_empty() {
                refill(c)?;
            }
            if let Some(n) = c.buf.front() {
                heap.push((key(n.ts_ms), Reverse(c.rank)));
            }
            let Some(e) = self.keep(&plan.rest, c.d, s)? else { continue };
            total += 1;
            if skip > 0 {
                skip -= 1;
            } else if items.len() < want {
                items.push(e);
            } else if !counting {
                break;
            }
        }
        Ok(finish(items, req.top, counting.then_some(total)))
    }

    fn sorted(&self, dss: &[usize], plan: &Plan, req: &Request) -> Result<Page, StaError> {
        let mut all: Vec<(Vec<Value>, Entity)> = Vec::new();
        for &d in dss {
            let mut lo = plan.from;
            loop {
                self.budget.check()?;
                let (got, next) = self.fetch(d, lo, plan.to, CHUNK, false)?;
                for s in got {
                    let Some(e) = self.keep(&plan.rest, d, s)? else { continue };
                    if all.len() == self.max_sort {
                        return Err(StaError::TooBroad(format!(
                            "$orderby: ordering Observations by anything but phenomenonTime sorts them in memory, at most {} (sta.max_sort); narrow the $filter (e.g. on phenomenonTime)",
                            self.max_sort
                        )));
                    }
                    let keys =
                        req.orderby.iter().map(|(k, _)| super::filter::eval::eval(k, &Bound { graph: self.graph, entity: &e }, self.now_ms)).collect::<Result<Vec<_>, _>>()?;
                    all.push((keys, e));
                }
                match next {
                    Some(t) => lo = t,
                    None => break,
                }
            }
        }
        all.sort_by(|a, b| {
            for (i, (_, desc)) in req.orderby.iter().enumerate() {
                let o = order(&a.0[i], &b.0[i]);
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
        let total = all.len() as u64;
        let items: Vec<Entity> = all.into_iter().skip(req.skip).take(req.top.saturating_add(1)).map(|(_, e)| e).collect();
        Ok(finish(items, req.top, req.count.then_some(total)))
    }
}

/// A page of at most `top` from up to `top + 1` collected: the extra one says more follow.
fn finish(mut items: Vec<Entity>, top: usize, count: Option<u64>) -> Page {
    let more = items.len() > top;
    items.truncate(top);
    Page { items, count, more }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_stops_the_query_saying_which_setting() {
        let b = Budget::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        let e = b.check().unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("0 ms deadline (sta.deadline)"), "{e}");
        assert!(Budget::new(Duration::from_secs(60)).check().is_ok());
    }
}
