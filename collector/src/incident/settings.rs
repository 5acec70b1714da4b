//! `[incidents]` and `[[department]]` in the collector config: plain serde
//! structs, checked at start-up (and by `check`) with messages naming the field.

use std::collections::HashMap;

use serde::Deserialize;
use shared::config::{HumanDuration, Problem};
use shared::topics::valid_id;

use super::department::DepartmentConfig;
use super::grouping::GroupKey;
use super::sla::{Calendar, SlaEntry};

/// `[incidents]`: how alerts are grouped, the default deadlines and the calendar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentsConfig {
    /// What alerts of one incident share: any of `rule`, `district`, `kind`, `sensor`, `severity`, `department`.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<GroupKey>,
    /// An alert joins an open incident with its key if that incident's last alert is at most this old.
    #[serde(default = "default_group_window")]
    pub group_window: HumanDuration,
    /// An alert on a sensor and metric already in the incident within this of it is a duplicate: merged, not announced.
    #[serde(default = "default_merge_within")]
    pub merge_within: HumanDuration,
    /// After the acknowledge reminder, each further wait before the next level of the escalation chain is told.
    #[serde(default = "default_escalate_after")]
    pub escalate_after: HumanDuration,
    /// Owner of alerts whose sensor no department owns (and no rule names); without it they stay `new` until assigned.
    pub default_department: Option<String>,
    /// Deadlines for departments without their own entry for a severity.
    #[serde(default)]
    pub sla: Vec<SlaEntry>,
    /// The working-hours calendar departments with `working_hours = true` count their deadlines in.
    pub working_hours: Option<Calendar>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            group_by: default_group_by(),
            group_window: default_group_window(),
            merge_within: default_merge_within(),
            escalate_after: default_escalate_after(),
            default_department: None,
            sla: Vec::new(),
            working_hours: None,
        }
    }
}

fn default_group_by() -> Vec<GroupKey> {
    vec![GroupKey::District, GroupKey::Kind]
}
fn default_group_window() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 60))
}
fn default_merge_within() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_escalate_after() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(15 * 60))
}

impl IncidentsConfig {
    pub fn validate(&self, departments: &[DepartmentConfig], p: &mut Vec<Problem>) {
        if self.group_by.is_empty() {
            p.push(Problem::new("incidents.group_by", "name at least one key: rule, district, kind, sensor, severity or department"));
        }
        if self.escalate_after.0.is_zero() {
            p.push(Problem::new("incidents.escalate_after", "must be more than 0s"));
        }
        if let Some(d) = &self.default_department {
            if !departments.iter().any(|x| &x.id == d) {
                p.push(Problem::new("incidents.default_department", format!("`{d}` is not the id of a [[department]]")));
            }
        }
        SlaEntry::validate_all(&self.sla, "incidents.sla", p);
        if let Some(c) = &self.working_hours {
            c.validate("incidents.working_hours", p);
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, d) in departments.iter().enumerate() {
            let path = format!("department[{i}]");
            if !valid_id(&d.id) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is not a valid id: letters, digits, - _ . :", d.id)));
            }
            if let Some(first) = ids.insert(&d.id, i) {
                p.push(Problem::new(format!("{path}.id"), format!("`{}` is already department[{first}]", d.id)));
            }
            if d.name.trim().is_empty() {
                p.push(Problem::new(format!("{path}.name"), "must not be empty"));
            }
            if let Some(w) = &d.webhook {
                if let Some(msg) = (crate::feed::webhook::WebhookConfig { url: w.clone(), min_severity: None }).validate() {
                    p.push(Problem::new(format!("{path}.webhook"), msg));
                }
            }
            if let Some(up) = &d.escalate_to {
                if !departments.iter().any(|x| &x.id == up) {
                    p.push(Problem::new(format!("{path}.escalate_to"), format!("`{up}` is not the id of a [[department]]")));
                }
            }
            if d.working_hours && self.working_hours.is_none() {
                p.push(Problem::new(format!("{path}.working_hours"), "needs an [incidents.working_hours] calendar (days, start, end, utc_offset)"));
            }
            SlaEntry::validate_all(&d.sla, &format!("{path}.sla"), p);
        }
        if let Some(cycle) = super::department::Departments::new(departments.to_vec()).cycle() {
            p.push(Problem::new("department", format!("the escalation chain goes round in a circle: {}", cycle.join(" → "))));
        }
    }

    /// One line for `check`.
    pub fn summary(&self, departments: &[DepartmentConfig]) -> String {
        let keys: Vec<&str> = self.group_by.iter().map(|k| k.as_str()).collect();
        let chains: Vec<String> = super::department::Departments::new(departments.to_vec()).all().iter().map(|d| d.chain_text()).collect();
        format!(
            "incidents: grouped by {} within {}, duplicates within {} merged, escalation every {}; {} department(s){}{}",
            keys.join("+"),
            humantime::format_duration(self.group_window.0),
            humantime::format_duration(self.merge_within.0),
            humantime::format_duration(self.escalate_after.0),
            departments.len(),
            if chains.is_empty() { String::new() } else { format!(": {}", chains.join("; ")) },
            if self.working_hours.is_some() { ", working-hours calendar set" } else { "" }
        )
    }
}
