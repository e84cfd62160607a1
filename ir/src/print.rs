//! The deterministic text form of graphs and fusion plans (what `OPTJIT_DUMP` and snapshots show).

use crate::dtype::Class;
use crate::graph::{Graph, Target};
use crate::op::Op;
use crate::plan::FusionPlan;
use petgraph::stable_graph::NodeIndex;
use std::collections::HashMap;
use std::fmt::{self, Write};

/// Formats a float so that parsing it gives back the same bits (`0.9`, `1e-8`, `inf`, `NaN`).
pub fn format_f64(x: f64) -> String {
    format!("{x:?}")
}

/// Dense numbering of a graph's live nodes in topological order, as printed (`%0`, `%1`, ...).
pub fn numbering(graph: &Graph) -> HashMap<NodeIndex, usize> {
    graph
        .nodes()
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect()
}

/// The right-hand side of a node's line: `mul %3, %4`, `hyper lr`, `const 0.9`, `cast f64 %2`.
pub(crate) fn node_body(graph: &Graph, idx: NodeIndex, num: &HashMap<NodeIndex, usize>) -> String {
    let node = graph.node(idx);
    let operands: Vec<String> = graph
        .operands(idx)
        .iter()
        .map(|o| format!("%{}", num[o]))
        .collect();
    match &node.op {
        Op::Input(input) => input.to_string(),
        Op::Const(c) => format!("const {}", format_f64(*c)),
        Op::Cast(d) => format!("cast {d} {}", operands.join(", ")),
        op => format!("{} {}", op.mnemonic(), operands.join(", ")),
    }
}

/// One node as printed in the text form (`%4 = mul %3, %1 : elem f32`), for messages that
/// name a node; numbering the graph costs a pass, so this is not for loops.
pub fn node_text(graph: &Graph, idx: NodeIndex) -> String {
    node_line(graph, idx, &numbering(graph))
}

/// One node's line, without indentation: `%4 = mul %3, %1 : elem f32`.
fn node_line(graph: &Graph, idx: NodeIndex, num: &HashMap<NodeIndex, usize>) -> String {
    let node = graph.node(idx);
    format!(
        "%{} = {} : {} {}",
        num[&idx],
        node_body(graph, idx, num),
        node.class,
        node.dtype
    )
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = numbering(self);
        writeln!(f, "optimizer {} {{", self.name)?;
        writeln!(f, "  dtype {}", self.elem_dtype)?;
        for h in &self.hypers {
            writeln!(f, "  hyper {} = {}", h.name, format_f64(h.default))?;
        }
        for s in &self.states {
            let class = match s.class {
                Class::Elem => String::new(),
                other => format!(": {other} "),
            };
            writeln!(f, "  state {} {class}= {}", s.name, format_f64(s.init))?;
        }
        for idx in self.nodes() {
            writeln!(f, "  {}", node_line(self, idx, &num))?;
        }
        for o in &self.outputs {
            writeln!(f, "  {} = %{}", o.target.name(), num[&o.value])?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for FusionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.graph;
        let num = numbering(g);
        let refs = |nodes: &[NodeIndex]| -> String {
            nodes
                .iter()
                .map(|n| format!("%{}", num[n]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "plan {} {{  // phases={} bytes_per_elem={}",
            g.name,
            self.phases.len(),
            self.bytes_per_elem()
        )?;
        // Stage 0 first; a later stage (after a reducing phase) is printed after that phase,
        // when it has nodes. Scalar-state updates, made at the end of the step, close the last
        // printed stage.
        let last_stage = (1..=self.phases.len())
            .rev()
            .find(|&k| !self.stage(k).is_empty())
            .unwrap_or(0);
        let stage = |f: &mut fmt::Formatter<'_>, k: usize| -> fmt::Result {
            if k > 0 && self.stage(k).is_empty() {
                return Ok(());
            }
            match k {
                0 => writeln!(
                    f,
                    "  scalar program (host, f64, once per group per step) {{"
                )?,
                k => writeln!(f, "  scalar program after phase {} {{", k - 1)?,
            }
            for &idx in self.stage(k) {
                writeln!(f, "    {}", node_line(g, idx, &num))?;
            }
            if k == last_stage {
                for (target, value) in &self.scalar_outputs {
                    writeln!(f, "    {} = %{}", target.name(), num[value])?;
                }
            }
            writeln!(f, "  }}")
        };
        stage(f, 0)?;
        writeln!(f, "  kernel scalars [{}]", refs(&self.kernel_scalars))?;
        if !self.col_values.is_empty() {
            writeln!(f, "  column values [{}]", refs(&self.col_values))?;
        }
        for (k, phase) in self.phases.iter().enumerate() {
            let mut access = String::new();
            for (i, b) in phase.buffers.iter().enumerate() {
                let mode = match (b.read, b.write) {
                    (true, true) => "rw",
                    (true, false) => "r",
                    (false, true) => "w",
                    (false, false) => "-",
                };
                let sep = if i == 0 { "" } else { ", " };
                write!(access, "{sep}{} {mode}", b.buffer)?;
            }
            let bytes = phase.bytes_per_elem(g.elem_dtype.size_bytes());
            let walk = match phase.walk {
                crate::Walk::Elements => "",
                crate::Walk::Columns => " walk=columns",
            };
            writeln!(f, "  phase {k} [{access}] bytes_per_elem={bytes}{walk} {{")?;
            for (buffer, value) in &phase.loads {
                writeln!(f, "    load %{} from {buffer}", num[value])?;
            }
            for &idx in &phase.nodes {
                writeln!(f, "    {}", node_line(g, idx, &num))?;
            }
            for (buffer, value) in &phase.stores {
                writeln!(f, "    store {buffer} = %{}", num[value])?;
            }
            for (slot, &reduce) in phase.reductions.iter().enumerate() {
                let operand = g.operands(reduce)[0];
                let op = g.node(reduce).op.mnemonic();
                writeln!(
                    f,
                    "    partial {slot} = {op} %{} -> %{}",
                    num[&operand], num[&reduce]
                )?;
            }
            writeln!(f, "  }}")?;
            stage(f, k + 1)?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
