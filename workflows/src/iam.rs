//! IAM policy statements that steps declare and the compiler gathers.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether a statement allows or denies its actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Effect {
    /// Grants the actions.
    Allow,
    /// Refuses the actions, overriding any `Allow`.
    Deny,
}

/// One statement of an IAM policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// An optional statement id (`Sid`), left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// Whether the statement allows or denies.
    pub effect: Effect,
    /// The actions (`ec2:DescribeInstances`), wildcards allowed.
    pub action: Vec<String>,
    /// The resource ARNs the actions apply to (`*` for all).
    pub resource: Vec<String>,
    /// The `Condition` block as JSON, left out when `None`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub condition: Option<Value>,
}

impl Statement {
    /// Allows `actions` on `resources`.
    pub fn allow<A, R>(actions: A, resources: R) -> Statement
    where
        A: IntoIterator,
        A::Item: Into<String>,
        R: IntoIterator,
        R::Item: Into<String>,
    {
        Statement {
            sid: None,
            effect: Effect::Allow,
            action: actions.into_iter().map(Into::into).collect(),
            resource: resources.into_iter().map(Into::into).collect(),
            condition: None,
        }
    }

    /// The same statement with `condition` as its `Condition` block.
    pub fn with_condition(mut self, condition: Value) -> Statement {
        self.condition = Some(condition);
        self
    }
}

/// Effect, sorted resources, condition, and the union of actions.
type Merged = (Effect, Vec<String>, Option<Value>, BTreeSet<String>);

/// An IAM policy document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    /// The policy language version (`2012-10-17` from
    /// [`PolicyDocument::gather`]).
    pub version: String,
    /// The statements; [`PolicyDocument::gather`] sorts them by effect,
    /// resources and first action.
    pub statement: Vec<Statement>,
}

impl PolicyDocument {
    /// Gathers statements from several steps into one policy: statements
    /// with the same effect, resources and condition become one statement
    /// whose actions are the sorted union. Deterministic, so generated
    /// policies diff cleanly.
    pub fn gather<'a>(statements: impl IntoIterator<Item = &'a Statement>) -> PolicyDocument {
        let mut merged: Vec<Merged> = Vec::new();
        for s in statements {
            let mut resources = s.resource.clone();
            resources.sort();
            resources.dedup();
            match merged
                .iter_mut()
                .find(|(e, r, c, _)| *e == s.effect && *r == resources && *c == s.condition)
            {
                Some((_, _, _, actions)) => actions.extend(s.action.iter().cloned()),
                None => merged.push((
                    s.effect,
                    resources,
                    s.condition.clone(),
                    s.action.iter().cloned().collect(),
                )),
            }
        }
        merged.sort_by(|a, b| (a.0, &a.1, a.3.iter().next()).cmp(&(b.0, &b.1, b.3.iter().next())));
        PolicyDocument {
            version: "2012-10-17".into(),
            statement: merged
                .into_iter()
                .map(|(effect, resource, condition, actions)| Statement {
                    sid: None,
                    effect,
                    action: actions.into_iter().collect(),
                    resource,
                    condition,
                })
                .collect(),
        }
    }

    /// Every action the policy allows, sorted.
    pub fn allowed_actions(&self) -> BTreeSet<&str> {
        self.statement
            .iter()
            .filter(|s| s.effect == Effect::Allow)
            .flat_map(|s| s.action.iter().map(String::as_str))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_merges_same_resources_and_sorts_actions() {
        let a = Statement::allow(["ec2:DescribeInstances"], ["*"]);
        let b = Statement::allow(["ec2:CreateSnapshots", "ec2:DescribeInstances"], ["*"]);
        let c = Statement::allow(["iam:PutRolePolicy"], ["arn:aws:iam::*:role/*"]);
        let doc = PolicyDocument::gather([&a, &b, &c]);
        assert_eq!(doc.statement.len(), 2);
        assert_eq!(
            doc.statement[0].action,
            vec!["ec2:CreateSnapshots", "ec2:DescribeInstances"]
        );
    }
}
