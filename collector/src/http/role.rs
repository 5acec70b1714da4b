//! What a token may do: each role includes the ones below it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything, follow the streams.
    Viewer,
    /// And acknowledge and resolve alerts; act on their department's incidents.
    Operator,
    /// And act on every department's incidents: assign, reassign, rate.
    Command,
    /// And change rules, read the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Command => "command",
            Role::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Command && Role::Command < Role::Admin);
    }
}
