//! Renders any definition as a Mermaid flowchart or a Graphviz DOT graph.
//!
//! Parallel and Map states are drawn as a fork node, one cluster per branch
//! (or the item processor), and a join node that carries the state's
//! outgoing edges. Catch edges are dashed and labelled with their errors;
//! Choice edges carry their condition.

use std::fmt::Write as _;

use indexmap::IndexMap;
use serde_json::Value;

use crate::asl::{ChoiceRule, Comparison, Condition, Operand, State, StateMachine};

/// The output language of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A Mermaid `flowchart TD` (for Markdown pages).
    Mermaid,
    /// A Graphviz DOT `digraph`.
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Start,
    End,
    Task,
    Pass,
    Choice,
    Wait,
    Succeed,
    Fail,
    Fork,
    Join,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EdgeKind {
    Normal,
    Catch,
    Branch,
}

#[derive(Debug)]
struct Node {
    id: String,
    label: String,
    kind: Kind,
}

#[derive(Debug)]
struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    kind: EdgeKind,
}

#[derive(Debug)]
struct Cluster {
    id: String,
    label: String,
    nodes: Vec<Node>,
    clusters: Vec<Cluster>,
}

#[derive(Default, Debug)]
struct Builder {
    counter: usize,
    edges: Vec<Edge>,
    /// Each state's name and the ids of its nodes, in the order made.
    state_nodes: Vec<(String, String)>,
}

impl Builder {
    fn id(&mut self) -> String {
        self.counter += 1;
        format!("n{}", self.counter)
    }

    /// Adds the states of one graph to `cluster`; returns the id of its
    /// start state and the ids of the nodes that end it.
    fn graph(
        &mut self,
        start_at: &str,
        states: &IndexMap<String, State>,
        cluster: &mut Cluster,
    ) -> (Option<String>, Vec<String>) {
        // Ids first, so edges can point forward.
        let ids: IndexMap<&str, String> = states.keys().map(|k| (k.as_str(), self.id())).collect();
        let mut ends = Vec::new();
        for (name, state) in states {
            let id = ids[name.as_str()].clone();
            // The node whose outgoing edges are the state's transitions:
            // the state itself, or the join node of a Parallel/Map.
            let out_id = match state {
                State::Parallel(p) => {
                    cluster.nodes.push(Node {
                        id: id.clone(),
                        label: name.clone(),
                        kind: Kind::Fork,
                    });
                    let join = self.id();
                    for (i, b) in p.branches.iter().enumerate() {
                        let mut sub = Cluster {
                            id: self.id(),
                            label: format!("{name}: branch {}", i + 1),
                            nodes: Vec::new(),
                            clusters: Vec::new(),
                        };
                        let (start, bends) = self.graph(&b.start_at, &b.states, &mut sub);
                        if let Some(s) = start {
                            self.edge(&id, &s, None, EdgeKind::Branch);
                        }
                        for e in bends {
                            self.edge(&e, &join, None, EdgeKind::Normal);
                        }
                        cluster.clusters.push(sub);
                    }
                    cluster.nodes.push(Node {
                        id: join.clone(),
                        label: format!("{name} (all branches done)"),
                        kind: Kind::Join,
                    });
                    join
                }
                State::Map(m) => {
                    cluster.nodes.push(Node {
                        id: id.clone(),
                        label: format!(
                            "{name}\nfor each item of {}",
                            m.items_path.as_deref().unwrap_or("$")
                        ),
                        kind: Kind::Fork,
                    });
                    let join = self.id();
                    if let Some((_, start_at, states)) = m.processor() {
                        let mut sub = Cluster {
                            id: self.id(),
                            label: format!("{name}: per item"),
                            nodes: Vec::new(),
                            clusters: Vec::new(),
                        };
                        let (start, bends) = self.graph(start_at, states, &mut sub);
                        if let Some(s) = start {
                            self.edge(&id, &s, None, EdgeKind::Branch);
                        }
                        for e in bends {
                            self.edge(&e, &join, None, EdgeKind::Normal);
                        }
                        cluster.clusters.push(sub);
                    }
                    cluster.nodes.push(Node {
                        id: join.clone(),
                        label: format!("{name} (all items done)"),
                        kind: Kind::Join,
                    });
                    join
                }
                other => {
                    let kind = match other {
                        State::Task(_) => Kind::Task,
                        State::Pass(_) => Kind::Pass,
                        State::Choice(_) => Kind::Choice,
                        State::Wait(_) => Kind::Wait,
                        State::Succeed(_) => Kind::Succeed,
                        _ => Kind::Fail,
                    };
                    let label = match other {
                        State::Wait(w) => {
                            match (w.seconds, &w.seconds_path, &w.timestamp, &w.timestamp_path) {
                                (Some(s), _, _, _) => format!("{name}\nwait {s} s"),
                                (_, Some(p), _, _) => format!("{name}\nwait {p} s"),
                                (_, _, Some(t), _) => format!("{name}\nuntil {t}"),
                                (_, _, _, Some(p)) => format!("{name}\nuntil {p}"),
                                _ => name.clone(),
                            }
                        }
                        State::Task(t) => match step_name(t.parameters.as_ref()) {
                            Some(step) => format!("{name}\n{step}"),
                            None => name.clone(),
                        },
                        State::Fail(f) => match &f.error {
                            Some(e) => format!("{name}\n{e}"),
                            None => name.clone(),
                        },
                        _ => name.clone(),
                    };
                    cluster.nodes.push(Node {
                        id: id.clone(),
                        label,
                        kind,
                    });
                    id.clone()
                }
            };
            self.state_nodes.push((name.clone(), id.clone()));
            if out_id != id {
                self.state_nodes.push((name.clone(), out_id.clone()));
            }
            if let Some(next) = state.next() {
                if let Some(t) = ids.get(next) {
                    self.edge(&out_id, t, None, EdgeKind::Normal);
                }
            }
            if let State::Choice(c) = state {
                for rule in &c.choices {
                    if let Some(t) = rule.next.as_deref().and_then(|n| ids.get(n)) {
                        self.edge(&out_id, t, Some(describe(rule)), EdgeKind::Normal);
                    }
                }
                if let Some(t) = c.default.as_deref().and_then(|n| ids.get(n)) {
                    self.edge(&out_id, t, Some("otherwise".into()), EdgeKind::Normal);
                }
            }
            for c in state.catch() {
                if let Some(t) = ids.get(c.next.as_str()) {
                    self.edge(&out_id, t, Some(c.error_equals.join(", ")), EdgeKind::Catch);
                }
            }
            if state.is_terminal() {
                ends.push(out_id);
            }
        }
        (ids.get(start_at).cloned(), ends)
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<String>, kind: EdgeKind) {
        self.edges.push(Edge {
            from: from.to_string(),
            to: to.to_string(),
            label,
            kind,
        });
    }
}

fn step_name(params: Option<&Value>) -> Option<&str> {
    params?.get("step")?.as_str()
}

fn describe(rule: &ChoiceRule) -> String {
    match &rule.condition {
        Condition::And(rs) => format!(
            "({})",
            rs.iter().map(describe).collect::<Vec<_>>().join(" and ")
        ),
        Condition::Or(rs) => format!(
            "({})",
            rs.iter().map(describe).collect::<Vec<_>>().join(" or ")
        ),
        Condition::Not(r) => format!("not {}", describe(r)),
        Condition::Compare {
            variable,
            op,
            operand,
        } => {
            let rhs = match operand {
                Operand::Literal(v) => v.to_string(),
                Operand::Path(p) => p.clone(),
            };
            let sym = match op {
                Comparison::StringEquals
                | Comparison::NumericEquals
                | Comparison::BooleanEquals
                | Comparison::TimestampEquals => "==",
                Comparison::StringLessThan
                | Comparison::NumericLessThan
                | Comparison::TimestampLessThan => "<",
                Comparison::StringGreaterThan
                | Comparison::NumericGreaterThan
                | Comparison::TimestampGreaterThan => ">",
                Comparison::StringLessThanEquals
                | Comparison::NumericLessThanEquals
                | Comparison::TimestampLessThanEquals => "<=",
                Comparison::StringGreaterThanEquals
                | Comparison::NumericGreaterThanEquals
                | Comparison::TimestampGreaterThanEquals => ">=",
                Comparison::StringMatches => "matches",
                other => {
                    let yes = operand == &Operand::Literal(serde_json::Value::Bool(true));
                    let what = match other {
                        Comparison::IsPresent => "present",
                        Comparison::IsNull => "null",
                        Comparison::IsNumeric => "a number",
                        Comparison::IsString => "a string",
                        Comparison::IsBoolean => "a boolean",
                        _ => "a timestamp",
                    };
                    return format!("{variable} is {}{what}", if yes { "" } else { "not " });
                }
            };
            format!("{variable} {sym} {rhs}")
        }
    }
}

/// Renders a definition.
pub fn render(machine: &StateMachine, format: Format) -> String {
    let (b, top) = build(machine);
    match format {
        Format::Mermaid => mermaid(&top, &b.edges),
        Format::Dot => dot(&top, &b.edges, machine.comment.as_deref()),
    }
}

/// The node ids [`render`] gives each state in its Mermaid output (`n1`,
/// `n2`...), as `(state name, node id)` in document order: one per state,
/// and a second for a Parallel or Map state (its join node). For styling a
/// rendered graph afterwards (`class n3 failed`); the ids are the same on
/// every render of the same definition.
pub fn mermaid_node_ids(machine: &StateMachine) -> Vec<(String, String)> {
    build(machine).0.state_nodes
}

/// The nodes and edges of a definition, with Start and End nodes.
fn build(machine: &StateMachine) -> (Builder, Cluster) {
    let mut b = Builder::default();
    let mut top = Cluster {
        id: "top".into(),
        label: String::new(),
        nodes: Vec::new(),
        clusters: Vec::new(),
    };
    top.nodes.push(Node {
        id: "n_start".into(),
        label: "Start".into(),
        kind: Kind::Start,
    });
    let (start, ends) = b.graph(&machine.start_at, &machine.states, &mut top);
    if let Some(s) = start {
        b.edge("n_start", &s, None, EdgeKind::Normal);
    }
    top.nodes.push(Node {
        id: "n_end".into(),
        label: "End".into(),
        kind: Kind::End,
    });
    for e in ends {
        b.edge(&e, "n_end", None, EdgeKind::Normal);
    }
    (b, top)
}

fn mermaid_text(s: &str) -> String {
    // Mermaid labels are quoted; quotes and line breaks need entities.
    s.replace('"', "#quot;").replace('\n', "<br/>")
}

fn mermaid(top: &Cluster, edges: &[Edge]) -> String {
    let mut out = String::from("flowchart TD\n");
    fn nodes(c: &Cluster, out: &mut String, depth: usize) {
        let pad = "    ".repeat(depth);
        for n in &c.nodes {
            let l = mermaid_text(&n.label);
            let _ = match n.kind {
                Kind::Start | Kind::End => writeln!(out, "{pad}{}((\"{l}\"))", n.id),
                Kind::Task => writeln!(out, "{pad}{}[\"{l}\"]", n.id),
                Kind::Pass => writeln!(out, "{pad}{}([\"{l}\"])", n.id),
                Kind::Choice => writeln!(out, "{pad}{}{{\"{l}\"}}", n.id),
                Kind::Wait => writeln!(out, "{pad}{}[/\"{l}\"/]", n.id),
                Kind::Succeed => writeln!(out, "{pad}{}([\"{l}\"]):::succeed", n.id),
                Kind::Fail => writeln!(out, "{pad}{}([\"{l}\"]):::fail", n.id),
                Kind::Fork => writeln!(out, "{pad}{}[[\"{l}\"]]", n.id),
                Kind::Join => writeln!(out, "{pad}{}>\"{l}\"]", n.id),
            };
        }
        for sub in &c.clusters {
            let _ = writeln!(
                out,
                "{pad}subgraph {}[\"{}\"]",
                sub.id,
                mermaid_text(&sub.label)
            );
            nodes(sub, out, depth + 1);
            let _ = writeln!(out, "{pad}end");
        }
    }
    nodes(top, &mut out, 1);
    for e in edges {
        let arrow = match e.kind {
            EdgeKind::Normal => "-->",
            EdgeKind::Catch => "-.->",
            EdgeKind::Branch => "==>",
        };
        match &e.label {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "    {} {arrow}|\"{}\"| {}",
                    e.from,
                    mermaid_text(l),
                    e.to
                );
            }
            None => {
                let _ = writeln!(out, "    {} {arrow} {}", e.from, e.to);
            }
        }
    }
    out.push_str("    classDef succeed fill:#d4edda,stroke:#28a745\n");
    out.push_str("    classDef fail fill:#f8d7da,stroke:#dc3545\n");
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn dot(top: &Cluster, edges: &[Edge], comment: Option<&str>) -> String {
    let mut out = String::from("digraph workflow {\n");
    if let Some(c) = comment {
        let _ = writeln!(out, "    label=\"{}\";\n    labelloc=t;", dot_text(c));
    }
    out.push_str("    node [fontname=\"Helvetica\", fontsize=11];\n    edge [fontname=\"Helvetica\", fontsize=9];\n");
    fn nodes(c: &Cluster, out: &mut String, depth: usize) {
        let pad = "    ".repeat(depth);
        for n in &c.nodes {
            let attrs = match n.kind {
                Kind::Start | Kind::End => {
                    "shape=circle, style=filled, fillcolor=black, fontcolor=white"
                }
                Kind::Task => "shape=box, style=rounded",
                Kind::Pass => "shape=box, style=dashed",
                Kind::Choice => "shape=diamond",
                Kind::Wait => "shape=parallelogram",
                Kind::Succeed => "shape=box, style=\"rounded,filled\", fillcolor=\"#d4edda\"",
                Kind::Fail => "shape=box, style=\"rounded,filled\", fillcolor=\"#f8d7da\"",
                Kind::Fork => "shape=box3d",
                Kind::Join => "shape=invhouse",
            };
            let _ = writeln!(
                out,
                "{pad}{} [label=\"{}\", {attrs}];",
                n.id,
                dot_text(&n.label)
            );
        }
        for sub in &c.clusters {
            let _ = writeln!(out, "{pad}subgraph cluster_{} {{", sub.id);
            let _ = writeln!(out, "{pad}    label=\"{}\";", dot_text(&sub.label));
            nodes(sub, out, depth + 1);
            let _ = writeln!(out, "{pad}}}");
        }
    }
    nodes(top, &mut out, 1);
    for e in edges {
        let mut attrs = Vec::new();
        if let Some(l) = &e.label {
            attrs.push(format!("label=\"{}\"", dot_text(l)));
        }
        match e.kind {
            EdgeKind::Catch => attrs.push("style=dashed, color=\"#dc3545\"".into()),
            EdgeKind::Branch => attrs.push("style=bold".into()),
            EdgeKind::Normal => {}
        }
        if attrs.is_empty() {
            let _ = writeln!(out, "    {} -> {};", e.from, e.to);
        } else {
            let _ = writeln!(out, "    {} -> {} [{}];", e.from, e.to, attrs.join(", "));
        }
    }
    out.push_str("}\n");
    out
}
