//! The `simplify` and `extract` stages: run the rules on an e-graph of the step graph, then read
//! back the cheapest graph.

use crate::analysis::{ClassAnalysis, OptEGraph};
use crate::cheapest::Cheapest;
use crate::cost::{ClassCost, graph_cost};
use crate::error::RewriteError;
use crate::lang::OptLang;
use crate::rules::{TaggedRewrite, rule_set};
use crate::value_range::ValueRange;
use egg::{Id, Language, Runner, SimpleScheduler, StopReason};
use optjit_ir::{Graph, NodeIndex, Target};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// Limits and rule selection of the e-graph run.
///
/// The iteration and node limits decide the result; the time limit is a safety net only, set
/// far above what a normal run takes (about a millisecond for AdamW), so that results never
/// depend on the speed of the machine.
#[derive(Clone, Debug, PartialEq)]
pub struct SimplifyOptions {
    /// Run only the rules that preserve values bit for bit (no reassociation).
    pub exact_only: bool,
    /// Most rule-application rounds.
    pub iter_limit: usize,
    /// Most e-nodes; the run stops once the e-graph grows past it.
    pub node_limit: usize,
    /// Wall-clock safety net.
    pub time_limit: Duration,
    /// What the caller guarantees about hyperparameters' values (their domains, checked
    /// whenever one is set): the value ranges rules with a side condition may rely on, such as
    /// `1 - beta2^step > 0` for a `beta2` in `[0, 1)`. A hyperparameter not listed may take
    /// any value. This changes the generated code, so a cache keyed on the options must
    /// include it.
    pub hyper_ranges: BTreeMap<String, ValueRange>,
}

impl Default for SimplifyOptions {
    /// All rules, 12 iterations, 5 000 e-nodes, 1 s, nothing known of hyperparameters.
    fn default() -> Self {
        SimplifyOptions {
            exact_only: false,
            iter_limit: 12,
            node_limit: 5_000,
            time_limit: Duration::from_secs(1),
            hyper_ranges: BTreeMap::new(),
        }
    }
}

/// What the e-graph run did. Its text form is deterministic (no timings).
#[derive(Clone, Debug, PartialEq)]
pub struct SimplifyReport {
    /// Rule-application rounds run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub egraph_nodes: usize,
    /// E-classes at the end.
    pub egraph_classes: usize,
    /// Why the run stopped: `saturated`, `iteration limit 12`, `node limit 5000`, ...
    pub stop_reason: String,
    /// Cost of the input graph (every node counted once, see the cost model).
    pub cost_before: f64,
    /// Cost of the extracted graph.
    pub cost_after: f64,
    /// Number of rules run.
    pub rules: usize,
}

impl fmt::Display for SimplifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "iterations: {}", self.iterations)?;
        writeln!(f, "egraph_nodes: {}", self.egraph_nodes)?;
        writeln!(f, "egraph_classes: {}", self.egraph_classes)?;
        writeln!(f, "stop_reason: {}", self.stop_reason)?;
        writeln!(f, "cost_before: {}", self.cost_before)?;
        writeln!(f, "cost_after: {}", self.cost_after)?;
        writeln!(f, "rules: {}", self.rules)
    }
}

/// What the e-graph run of a step graph gave: the cheapest graph in the saturated e-graph
/// (extracted once, when the run ends) and the run's report.
#[derive(Clone, Debug)]
pub struct Simplified {
    /// The cheapest graph in the e-graph ([`extract`] returns it).
    extracted: Graph,
    /// What the run did.
    pub report: SimplifyReport,
}

fn stop_reason_text(reason: Option<&StopReason>) -> String {
    match reason {
        None => "not run".to_string(),
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit {n}"),
        Some(StopReason::NodeLimit(n)) => format!("node limit {n}"),
        // Only the safety net: printed without the machine-dependent duration.
        Some(StopReason::TimeLimit(_)) => "time limit".to_string(),
        Some(StopReason::Other(s)) => format!("other: {s}"),
    }
}

/// The nodes that some output depends on, ascending.
fn live_nodes(graph: &Graph) -> Vec<NodeIndex> {
    let mut live: Vec<NodeIndex> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<NodeIndex> = graph.outputs.iter().map(|o| o.value).collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            live.push(n);
            stack.extend(graph.operands(n));
        }
    }
    live.sort_unstable();
    live
}

/// The rules run on the e-graph of `graph`, one root per output: the finished run.
pub(crate) fn run_rules(
    graph: &Graph,
    options: &SimplifyOptions,
    rules: &[TaggedRewrite],
) -> Runner<OptLang, ClassAnalysis, ()> {
    let analysis = ClassAnalysis {
        hyper_ranges: options.hyper_ranges.clone(),
    };
    let mut egraph = OptEGraph::new(analysis.clone());
    let mut ids: HashMap<NodeIndex, Id> = HashMap::new();
    for n in live_nodes(graph) {
        let operands: Vec<Id> = graph.operands(n).iter().map(|o| ids[o]).collect();
        let id = egraph.add(OptLang::from_op(&graph.node(n).op, &operands));
        ids.insert(n, id);
    }
    let mut runner = Runner::<OptLang, ClassAnalysis, ()>::new(analysis)
        .with_egraph(egraph)
        .with_iter_limit(options.iter_limit)
        .with_node_limit(options.node_limit)
        .with_time_limit(options.time_limit)
        .with_scheduler(SimpleScheduler);
    runner.roots = graph.outputs.iter().map(|o| ids[&o.value]).collect();
    runner.run(rules.iter().map(|(rewrite, _)| rewrite))
}

/// Stage `simplify`: builds the e-graph of `graph` (one root per output), runs the rules and
/// extracts the cheapest graph.
///
/// Refuses a graph of more than [`crate::MAX_GRAPH_NODES`] nodes.
pub fn simplify(graph: &Graph, options: &SimplifyOptions) -> Result<Simplified, RewriteError> {
    if let Some(o) = graph.outputs.iter().find(|o| !graph.contains(o.value)) {
        return Err(RewriteError::MissingNode {
            target: o.target.name().to_string(),
        });
    }
    crate::limits::check_graph_size(graph)?;
    let rules = rule_set(options.exact_only)?;
    let runner = run_rules(graph, options, &rules);

    let mut template = Graph::new(graph.name.clone());
    template.elem_dtype = graph.elem_dtype;
    template.hypers = graph.hypers.clone();
    template.states = graph.states.clone();
    let mut report = SimplifyReport {
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        stop_reason: stop_reason_text(runner.stop_reason.as_ref()),
        cost_before: graph_cost(graph),
        cost_after: 0.0,
        rules: rules.len(),
    };
    let targets: Vec<Target> = graph.outputs.iter().map(|o| o.target.clone()).collect();
    let extracted = cheapest_graph(&runner.egraph, &runner.roots, template, &targets);
    report.cost_after = graph_cost(&extracted);
    Ok(Simplified { extracted, report })
}

/// Stage `extract`: the cheapest graph in the e-graph by the class cost model, with the source
/// graph's name, dtype, declarations and output targets; hash-consed and pruned.
///
/// The graph is extracted once, at the end of [`simplify`] (its cost is the report's
/// `cost_after`); this returns a copy.
pub fn extract(simplified: &Simplified) -> Graph {
    simplified.extracted.clone()
}

/// The cheapest graph in `egraph` for `roots` (one per target of `targets`), built on
/// `template`.
///
/// Nodes are added in depth-first post-order from the outputs (operands in position order), so
/// the same e-graph always gives the same graph text. Time and memory are linear in the e-graph's
/// size ([`Cheapest`]).
fn cheapest_graph(egraph: &OptEGraph, roots: &[Id], template: Graph, targets: &[Target]) -> Graph {
    let cheapest = Cheapest::new(egraph, ClassCost { egraph });
    let best_node = |id: Id| -> &OptLang {
        cheapest
            .best(id)
            .map(|(node, _)| node)
            .expect("every e-class made from a graph node has a finite tree")
    };
    let mut graph = template;
    let mut built: HashMap<Id, NodeIndex> = HashMap::new();
    for (target, &root) in targets.iter().zip(roots) {
        let root = egraph.find(root);
        let mut stack = vec![(root, false)];
        while let Some((id, ready)) = stack.pop() {
            if built.contains_key(&id) {
                continue;
            }
            let node = best_node(id);
            if ready {
                let operands: Vec<NodeIndex> = node
                    .children()
                    .iter()
                    .map(|&c| built[&egraph.find(c)])
                    .collect();
                built.insert(id, graph.add(node.to_op(), &operands));
            } else {
                stack.push((id, true));
                stack.extend(
                    node.children()
                        .iter()
                        .rev()
                        .map(|&c| (egraph.find(c), false)),
                );
            }
        }
        graph.set_output(target.clone(), built[&root]);
    }
    graph.prune();
    graph
}
