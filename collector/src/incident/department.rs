//! Departments on duty (职能部门): who owns which sensors (by the catalogue's
//! `owner`), whom to tell (contacts, a webhook) and whom to escalate to
//! (`escalate_to`, forming a chain up to city command).

use serde::{Deserialize, Serialize};

use super::sla::SlaEntry;
use crate::alert::Severity;

/// `[[department]]` in the collector config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentConfig {
    /// Short id used in the API, topics and tokens (`water`).
    pub id: String,
    /// Display name (`Water Authority`); also matched against the catalogue's `owner`.
    pub name: String,
    /// Catalogue `owner` values this department answers for, besides its name.
    #[serde(default)]
    pub owners: Vec<String>,
    /// People or duty desks to reach, as shown to operators.
    #[serde(default)]
    pub contacts: Vec<String>,
    /// Incident events addressed to this department are POSTed here (durable outbox).
    pub webhook: Option<String>,
    /// The next level up: told when an incident of this department is overdue unacknowledged.
    pub escalate_to: Option<String>,
    /// Count deadlines in `[incidents.working_hours]` only.
    #[serde(default)]
    pub working_hours: bool,
    /// Deadlines per severity; `[[incidents.sla]]` fills the rest.
    #[serde(default)]
    pub sla: Vec<SlaEntry>,
}

impl DepartmentConfig {
    pub fn answers_for(&self, owner: &str) -> bool {
        self.name == owner || self.id == owner || self.owners.iter().any(|o| o == owner)
    }
}

/// The departments, with lookups by owner and along the escalation chain.
#[derive(Debug, Clone, Default)]
pub struct Departments {
    list: Vec<DepartmentConfig>,
}

/// A department as the API shows it: its config and its whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct DepartmentView {
    #[serde(flatten)]
    pub config: DepartmentConfig,
    pub chain: Vec<String>,
}

impl DepartmentView {
    pub fn chain_text(&self) -> String {
        std::iter::once(self.config.id.as_str()).chain(self.chain.iter().map(|s| s.as_str())).collect::<Vec<_>>().join(" → ")
    }
}

impl Departments {
    pub fn new(list: Vec<DepartmentConfig>) -> Departments {
        Departments { list }
    }

    pub fn get(&self, id: &str) -> Option<&DepartmentConfig> {
        self.list.iter().find(|d| d.id == id)
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|d| d.id == id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|d| d.id.as_str())
    }

    /// The department that answers for a catalogue owner.
    pub fn for_owner(&self, owner: &str) -> Option<&DepartmentConfig> {
        self.list.iter().find(|d| d.answers_for(owner))
    }

    /// The levels above `id`, nearest first (`district-command`, `city-command`);
    /// stops before a department seen already, so a bad config cannot loop.
    pub fn chain(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut at = self.get(id);
        while let Some(up) = at.and_then(|d| d.escalate_to.as_deref()) {
            if up == id || out.iter().any(|s| s == up) {
                break;
            }
            out.push(up.to_string());
            at = self.get(up);
        }
        out
    }

    /// A chain that comes back to where it started, if any (config check).
    pub fn cycle(&self) -> Option<Vec<String>> {
        for d in &self.list {
            let mut path = vec![d.id.clone()];
            let mut at = d;
            while let Some(up) = at.escalate_to.as_deref() {
                if path.iter().any(|p| p == up) {
                    path.push(up.to_string());
                    return (up == d.id).then_some(path);
                }
                path.push(up.to_string());
                match self.get(up) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
        None
    }

    /// Deadlines for `severity` in department `id`: its own entry, else the default.
    pub fn sla<'a>(&'a self, id: Option<&str>, severity: Severity, defaults: &'a [SlaEntry]) -> Option<&'a SlaEntry> {
        let own = id.and_then(|i| self.get(i)).map(|d| d.sla.as_slice()).unwrap_or(&[]);
        SlaEntry::pick(own, severity).or_else(|| SlaEntry::pick(defaults, severity))
    }

    pub fn all(&self) -> Vec<DepartmentView> {
        self.list.iter().map(|d| DepartmentView { config: d.clone(), chain: self.chain(&d.id) }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn dept(id: &str, up: Option<&str>) -> DepartmentConfig {
        DepartmentConfig {
            id: id.into(),
            name: format!("{id} dept"),
            owners: vec![],
            contacts: vec![],
            webhook: None,
            escalate_to: up.map(|s| s.into()),
            working_hours: false,
            sla: vec![],
        }
    }

    #[test]
    fn the_escalation_chain_runs_up_to_city_command_and_stops_at_a_loop() {
        let mut water = dept("water", Some("xihu-command"));
        water.owners = vec!["Water Resources Bureau".into()];
        let d = Departments::new(vec![water, dept("xihu-command", Some("city-command")), dept("city-command", None)]);
        assert_eq!(d.chain("water"), ["xihu-command", "city-command"]);
        assert_eq!(d.chain("city-command"), Vec::<String>::new());
        assert_eq!(d.for_owner("Water Resources Bureau").map(|x| x.id.as_str()), Some("water"));
        assert_eq!(d.for_owner("water dept").map(|x| x.id.as_str()), Some("water"), "the name answers too");
        assert!(d.for_owner("Traffic Police").is_none());
        assert!(d.cycle().is_none());
        let looped = Departments::new(vec![dept("a", Some("b")), dept("b", Some("c")), dept("c", Some("a"))]);
        assert_eq!(looped.chain("a"), ["b", "c"], "the chain stops before coming back");
        assert_eq!(looped.cycle(), Some(vec!["a".to_string(), "b".into(), "c".into(), "a".into()]));
    }
}
