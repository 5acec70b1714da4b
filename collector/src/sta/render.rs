//! Entities and collections as SensorThings JSON: `@iot.id`,
//! `@iot.selfLink`, `Relation@iot.navigationLink`, `$select`ed properties,
//! `$expand`ed relations (with their own options, count and nextLink), and
//! collections as `{"@iot.count", "value", "@iot.nextLink"}`.

use serde_json::{json, Map, Value as Json};

use super::error::StaError;
use super::filter::eval::{eval, matches, order};
use super::ids::{entity_path, Set};
use super::model::{Bound, Entity, Graph, Nav, Source};
use super::observations::{Page, Reader, Request};
use super::options::Options;

pub struct Renderer<'g, 'a> {
    pub reader: Reader<'g, 'a>,
    /// The service root, `http://host/sta/v1.1`, without a trailing slash.
    pub base: String,
    pub default_top: usize,
    pub max_top: usize,
}

impl Renderer<'_, '_> {
    fn graph(&self) -> &Graph<'_> {
        self.reader.graph
    }

    pub fn self_link(&self, e: &Entity) -> String {
        format!("{}/{}", self.base, entity_path(Graph::set_of(e), &self.graph().id(e)))
    }

    fn top(&self, o: &Options) -> usize {
        o.top.unwrap_or(self.default_top).min(self.max_top)
    }

    /// One page of a collection with the options applied.
    pub fn page(&self, set: Set, source: &Source, o: &Options) -> Result<Page, StaError> {
        check_options(set, o)?;
        let top = self.top(o);
        match source {
            Source::Observations(dss) => self.reader.page(&Request { datastreams: dss, filter: o.filter.as_ref(), orderby: &o.orderby, skip: o.skip, top, count: o.count }),
            Source::All(set) if o.filter.is_none() && o.orderby.is_empty() => {
                // Only the page is taken from the model: a nextLink walk
                // costs a page a request, not the whole catalogue.
                let (g, total) = (self.graph(), self.graph().len(*set));
                let end = o.skip.saturating_add(top);
                let items = (o.skip.min(total)..end.min(total)).map(|i| g.nth(*set, i)).collect();
                Ok(Page { more: end < total, items, count: o.count.then_some(total as u64) })
            }
            Source::All(set) => {
                let g = self.graph();
                self.list((0..g.len(*set)).map(|i| g.nth(*set, i)), o, top)
            }
            Source::List(items) => self.list(items.iter().cloned(), o, top),
        }
    }

    /// A page of entities of the model, filtered and ordered.
    fn list(&self, items: impl Iterator<Item = Entity>, o: &Options, top: usize) -> Result<Page, StaError> {
        let g = self.graph();
        let now = self.reader.now_ms;
        let end = o.skip.saturating_add(top);
        if o.orderby.is_empty() {
            // In the model's order: done at the entity after the page, unless counting.
            let (mut total, mut page) = (0usize, Vec::new());
            for e in items {
                self.reader.budget.check()?;
                if let Some(f) = &o.filter {
                    if !matches(f, &Bound { graph: g, entity: &e }, now)? {
                        continue;
                    }
                }
                total += 1;
                if total > o.skip && page.len() < top {
                    page.push(e);
                } else if total > end && !o.count {
                    break;
                }
            }
            return Ok(Page { more: total > end, items: page, count: o.count.then_some(total as u64) });
        }
        let mut keyed = Vec::new();
        for e in items {
            self.reader.budget.check()?;
            if let Some(f) = &o.filter {
                if !matches(f, &Bound { graph: g, entity: &e }, now)? {
                    continue;
                }
            }
            let keys = o.orderby.iter().map(|(k, _)| eval(k, &Bound { graph: g, entity: &e }, now)).collect::<Result<Vec<_>, _>>()?;
            keyed.push((keys, e));
        }
        keyed.sort_by(|a, b| {
            for (i, (_, desc)) in o.orderby.iter().enumerate() {
                let c = order(&a.0[i], &b.0[i]);
                let c = if *desc { c.reverse() } else { c };
                if c != std::cmp::Ordering::Equal {
                    return c;
                }
            }
            std::cmp::Ordering::Equal
        });
        let total = keyed.len();
        let items: Vec<Entity> = keyed.into_iter().skip(o.skip).take(top).map(|(_, e)| e).collect();
        Ok(Page { more: end < total, items, count: o.count.then_some(total as u64) })
    }

    /// `{"@iot.count", "value", "@iot.nextLink"}`; `path` is the collection's
    /// path under the root, for the nextLink.
    pub fn collection(&self, set: Set, source: &Source, o: &Options, path: &str, refs: bool) -> Result<Json, StaError> {
        let page = self.page(set, source, o)?;
        let mut out = Map::new();
        if let Some(c) = page.count {
            out.insert("@iot.count".into(), json!(c));
        }
        let mut value = Vec::with_capacity(page.items.len());
        for e in &page.items {
            self.reader.budget.check()?;
            value.push(if refs { json!({ "@iot.selfLink": self.self_link(e) }) } else { self.entity(e, o)? });
        }
        out.insert("value".into(), Json::Array(value));
        if page.more {
            out.insert("@iot.nextLink".into(), json!(format!("{}/{}?{}", self.base, path, o.query_with_skip(o.skip + self.top(o)))));
        }
        Ok(Json::Object(out))
    }

    /// One entity, with `$select` and `$expand` of `o` applied.
    pub fn entity(&self, e: &Entity, o: &Options) -> Result<Json, StaError> {
        let set = Graph::set_of(e);
        check_select(set, o)?;
        let selected = |name: &str| o.select.as_ref().is_none_or(|s| s.iter().any(|n| n == name));
        let mut out = Map::new();
        let link = self.self_link(e);
        if selected("id") {
            out.insert("@iot.id".into(), json!(self.graph().id(e)));
            out.insert("@iot.selfLink".into(), json!(link));
        }
        for (k, v) in self.graph().properties(e) {
            if selected(&k) {
                out.insert(k, v);
            }
        }
        for (rel, _, _) in set.relations() {
            if selected(rel) {
                out.insert(format!("{rel}@iot.navigationLink"), json!(format!("{link}/{rel}")));
            }
        }
        for ex in &o.expand {
            let Some((target, _)) = set.relation(&ex.relation) else {
                return Err(StaError::Option { option: "$expand".into(), reason: format!("{} has no relation `{}`", set.name(), ex.relation) });
            };
            match self.graph().navigate(e, &ex.relation) {
                Some(Nav::One(Some(related))) => {
                    check_options(target, &ex.options)?;
                    out.insert(ex.relation.clone(), self.entity(&related, &ex.options)?);
                }
                Some(Nav::One(None)) | None => {
                    out.insert(ex.relation.clone(), Json::Null);
                }
                Some(Nav::Many(source)) => {
                    let page = self.page(target, &source, &ex.options)?;
                    let items = page.items.iter().map(|i| self.entity(i, &ex.options)).collect::<Result<Vec<_>, _>>()?;
                    if let Some(c) = page.count {
                        out.insert(format!("{}@iot.count", ex.relation), json!(c));
                    }
                    out.insert(ex.relation.clone(), Json::Array(items));
                    if page.more {
                        let next = ex.options.query_with_skip(ex.options.skip + self.top(&ex.options));
                        out.insert(format!("{}@iot.nextLink", ex.relation), json!(format!("{link}/{}?{next}", ex.relation)));
                    }
                }
            }
        }
        Ok(Json::Object(out))
    }
}

fn check_select(set: Set, o: &Options) -> Result<(), StaError> {
    for name in o.select.iter().flatten() {
        if !set.properties().contains(&name.as_str()) && set.relation(name).is_none() {
            return Err(StaError::Option { option: "$select".into(), reason: format!("{} has no property or relation `{name}`", set.name()) });
        }
    }
    Ok(())
}

/// What can be checked before any entity is read: `$select` and `$expand` names.
pub fn check_options(set: Set, o: &Options) -> Result<(), StaError> {
    check_select(set, o)?;
    for ex in &o.expand {
        let Some((target, _)) = set.relation(&ex.relation) else {
            return Err(StaError::Option { option: "$expand".into(), reason: format!("{} has no relation `{}`", set.name(), ex.relation) });
        };
        check_options(target, &ex.options)?;
    }
    Ok(())
}
