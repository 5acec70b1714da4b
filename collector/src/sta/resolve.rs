//! A parsed path against the model: which collection, entity or property
//! it names, or the 404 for the part that does not exist.

use super::error::StaError;
use super::ids::{Arity, Set};
use super::model::{Entity, Graph, Nav, Source};
use super::path::Segment;

pub enum Target {
    Collection {
        set: Set,
        source: Source,
    },
    Entity(Entity),
    /// `…/name`, or `…/name/$value` when `raw`.
    Property {
        entity: Entity,
        name: String,
        raw: bool,
    },
}

pub struct Resolved {
    pub target: Target,
    /// `…/$ref`: links only.
    pub reference: bool,
}

fn member(graph: &Graph, source: &Source, set: Set, id: &str) -> Result<Option<Entity>, StaError> {
    let Some(found) = graph.find(set, id)? else { return Ok(None) };
    Ok(match (source, &found) {
        // `find` sees only what the model holds: every member of the set.
        (Source::All(set), e) => (Graph::set_of(e) == *set).then_some(found),
        (Source::List(items), e) => items.contains(e).then_some(found),
        (Source::Observations(dss), Entity::Observation(d, _)) => dss.contains(d).then_some(found),
        _ => None,
    })
}

pub fn resolve(graph: &Graph, segments: &[Segment]) -> Result<Resolved, StaError> {
    let path = || segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join("/");
    let Some((first, rest)) = segments.split_first() else { return Err(StaError::NoResource(String::new())) };
    let set = Set::from_name(&first.name).ok_or_else(|| StaError::NoResource(first.name.clone()))?;
    let mut target = match &first.id {
        Some(id) => Target::Entity(graph.find(set, id)?.ok_or_else(|| StaError::NotFound { what: set.singular(), id: id.clone() })?),
        None => Target::Collection { set, source: graph.all(set) },
    };
    let mut reference = false;
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let must_be_last = |what: &str| -> Result<(), StaError> {
            if last {
                Ok(())
            } else {
                Err(StaError::Path { path: path(), reason: format!("{what} must end the path") })
            }
        };
        if seg.name == "$ref" {
            must_be_last("$ref")?;
            if matches!(target, Target::Property { .. }) {
                return Err(StaError::Path { path: path(), reason: "$ref follows an entity or a collection, not a property".into() });
            }
            reference = true;
            continue;
        }
        if seg.name == "$value" {
            must_be_last("$value")?;
            match &mut target {
                Target::Property { raw, .. } => *raw = true,
                _ => return Err(StaError::Path { path: path(), reason: "$value follows a property (Things('x')/name/$value)".into() }),
            }
            continue;
        }
        let entity = match &target {
            Target::Entity(e) => e.clone(),
            Target::Collection { set, .. } => {
                return Err(StaError::Path {
                    path: path(),
                    reason: format!("`{}` follows the collection {} without an id: pick one with {}('id')", seg.name, set.name(), set.name()),
                });
            }
            Target::Property { name, .. } => return Err(StaError::Path { path: path(), reason: format!("`{}` follows the property `{name}`", seg.name) }),
        };
        let here = Graph::set_of(&entity);
        target = match (here.relation(&seg.name), graph.navigate(&entity, &seg.name)) {
            (Some((_, Arity::One)), Some(Nav::One(found))) => {
                if seg.id.is_some() {
                    return Err(StaError::Path { path: path(), reason: format!("{} leads to one entity and takes no id", seg.name) });
                }
                Target::Entity(found.ok_or_else(|| StaError::NotFound { what: "related entity", id: seg.name.clone() })?)
            }
            (Some((to, Arity::Many)), Some(Nav::Many(source))) => match &seg.id {
                Some(id) => Target::Entity(member(graph, &source, to, id)?.ok_or_else(|| StaError::NotFound { what: to.singular(), id: id.clone() })?),
                None => Target::Collection { set: to, source },
            },
            _ if seg.id.is_none() && here.properties().contains(&seg.name.as_str()) && seg.name != "id" => Target::Property { entity, name: seg.name.clone(), raw: false },
            _ => return Err(StaError::NoResource(format!("{}: {} has no relation or property `{}`", path(), here.name(), seg.name))),
        };
    }
    Ok(Resolved { target, reference })
}
