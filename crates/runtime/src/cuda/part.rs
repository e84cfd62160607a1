//! `CudaPart`: one kind's compiled step on a CUDA device (see `part::kinds`): its PTX loaded,
//! its state, scalar rows and column values on the device, and one launch per phase over a
//! device chunk table.

use super::elem::{decode, encode};
use super::gpu::Gpu;
use crate::binding::{Source, row_width};
use crate::chunks::ChunkTable;
use crate::error::OptimizerError;
use crate::kind_step::KindStep;
use crate::pipeline::Compiled;
use crate::reduce::Records;
use crate::variant::PartPlan;
use crate::view::View;
use optjit_ir::{Class, DType, Walk};
use optjit_kernels_gen::{PTX_BLOCK_THREADS, ptx_entry_name};
use std::sync::Arc;

/// Most blocks one launch starts; blocks walk the records with a grid stride beyond that.
const MAX_GRID_BLOCKS: usize = 1 << 16;

/// One phase's loaded kernel and its device chunk table.
struct Phase<G: Gpu> {
    /// The kernel's name (for errors).
    name: String,
    kernel: G::Kernel,
    /// The chunk table on the device (`None` when the step has no elements).
    table: Option<G::Buffer<u64>>,
    n_records: usize,
    /// The tensor of each record of the table.
    owners: Vec<usize>,
    /// The row (or first element, in a column walk) of each record, when records are
    /// row-aligned.
    entities: Vec<usize>,
    /// The element count of each record.
    lens: Vec<usize>,
    /// How many partials the phase writes over the table (0 when it reduces nothing).
    n_partials: usize,
    /// The device partials, when it reduces.
    partials: Option<G::Buffer<f64>>,
    /// The phase reads column values (uploaded before it runs).
    reads_cols: bool,
}

/// One kind's compiled step on a device, with its state there.
pub(crate) struct CudaPart<G: Gpu> {
    pub(super) kind: KindStep,
    phases: Vec<Phase<G>>,
    /// How tensors and per-element states are stored (the compiled graph's element dtype).
    dtype: DType,
    /// `states[tensor][state]`: per-element buffers, stored as `dtype` (`None` for other states
    /// and tensors without elements), then the plan's scratch buffers (f32).
    states: Vec<Vec<Option<G::Buffer<u8>>>>,
    /// Every row of kernel scalars (see `Binding::row_of`).
    rows: G::Buffer<f32>,
    /// Every tensor's column values, one buffer after another (`col_offsets[t][c]` floats in),
    /// when the step has any.
    cols: Option<G::Buffer<f32>>,
    col_offsets: Vec<Vec<usize>>,
    /// The column values gathered on the host before an upload.
    col_staging: Vec<f32>,
    /// The param and grad addresses, and each tensor's row, the tables were built for.
    table_tensors: Vec<u64>,
}

/// Where each tensor's `n_values` column-value buffers lie in one device buffer (in floats,
/// tensor after tensor), and its length: each starts 16-byte aligned, so that row records of
/// matrices whose width is a multiple of 4 keep the vector path.
fn column_layout(views: &[View], n_values: usize) -> (Vec<Vec<usize>>, usize) {
    let mut offsets = Vec::with_capacity(views.len());
    let mut total = 0;
    for view in views {
        let mut own = Vec::with_capacity(n_values);
        for _ in 0..n_values {
            own.push(total);
            total += view.total_cols().next_multiple_of(4);
        }
        offsets.push(own);
    }
    (offsets, total)
}

impl<G: Gpu> AsMut<KindStep> for CudaPart<G> {
    fn as_mut(&mut self) -> &mut KindStep {
        &mut self.kind
    }
}

impl<G: Gpu> AsRef<KindStep> for CudaPart<G> {
    fn as_ref(&self) -> &KindStep {
        &self.kind
    }
}

impl<G: Gpu> CudaPart<G> {
    /// Loads `compiled` (PTX) on `device` for the part `plan` and allocates its tensors' state
    /// there.
    pub(super) fn new(
        plan: &PartPlan,
        compiled: Arc<Compiled>,
        device: &G,
    ) -> Result<CudaPart<G>, OptimizerError> {
        let definition = &plan.definition;
        let kind = KindStep::new(plan, compiled)?;
        let compiled = &kind.compiled;
        let modules = compiled.ptx().expect("the caller checked the target");
        let mut phases = Vec::with_capacity(modules.len());
        for ((ptx, kernel), sources) in
            (modules.iter().zip(&compiled.kernels)).zip(&kind.buffer_sources)
        {
            let loaded = device.load(ptx, &ptx_entry_name(kernel), &kernel.name)?;
            phases.push(Phase {
                name: kernel.name.clone(),
                kernel: loaded,
                table: None,
                n_records: 0,
                owners: Vec::new(),
                entities: Vec::new(),
                lens: Vec::new(),
                n_partials: 0,
                partials: None,
                reads_cols: sources.iter().any(|s| matches!(s, Source::ColValue(_))),
            });
        }

        let binding = &kind.binding;
        let graph = &definition.graph;
        let dtype = plan.setup.dtype;
        let buffer = |len: usize, init: f64, dtype: DType| match len {
            0 => Ok(None),
            _ => device
                .upload(&encode(dtype, &vec![init as f32; len]))
                .map(Some),
        };
        let mut states = Vec::with_capacity(binding.lens.len());
        for &len in &binding.lens {
            let mut tensor_states = Vec::with_capacity(graph.states.len());
            for state in &graph.states {
                tensor_states.push(match state.class {
                    Class::Elem => buffer(len, state.init, dtype)?,
                    _ => None,
                });
            }
            // The plan's scratch buffers follow the states (see `Source::State`), in f32.
            for _ in 0..compiled.plan.temps {
                tensor_states.push(buffer(len, 0.0, DType::F32)?);
            }
            states.push(tensor_states);
        }
        let program = &compiled.scalar_program;
        // One row to start with: `prepare_tables` sizes it for each step's cohorts.
        let rows = device.upload(&vec![0f32; row_width(program)])?;
        let (col_offsets, n_cols) = column_layout(&binding.views, program.n_col_values());
        let cols = match n_cols {
            0 => None,
            n => Some(device.upload(&vec![0f32; n])?),
        };
        Ok(CudaPart {
            kind,
            phases,
            dtype,
            states,
            rows,
            cols,
            col_offsets,
            col_staging: vec![0.0; n_cols],
            table_tensors: Vec::new(),
        })
    }

    /// The per-element state `name` of this part's tensor `tensor`, copied to the host (waits
    /// for the stream), or its row or column state. `None` if there is no such state.
    pub(super) fn state(
        &self,
        device: &G,
        tensor: usize,
        name: &str,
    ) -> Result<Option<Vec<f32>>, OptimizerError> {
        let binding = &self.kind.binding;
        let Some(rank) = binding.views.get(tensor).map(|v| v.rank) else {
            return Ok(None);
        };
        let name = binding.definition.state_name(name, rank);
        let Some(index) = binding.state_index(name, Class::Elem) else {
            return Ok(binding.factor_state(tensor, name).map(<[f32]>::to_vec));
        };
        self.elem_state(device, tensor, index).map(Some)
    }

    /// The per-element state with index `state` among the graph's of this part's tensor
    /// `tensor`, copied to the host (waits for the stream).
    pub(super) fn elem_state(
        &self,
        device: &G,
        tensor: usize,
        state: usize,
    ) -> Result<Vec<f32>, OptimizerError> {
        match &self.states[tensor][state] {
            None => Ok(Vec::new()),
            Some(buffer) => Ok(decode(self.dtype, &device.download(buffer)?)),
        }
    }

    /// Overwrites that state with `values` (of its length), stored as the part's dtype (on
    /// the stream, after the work before).
    pub(super) fn write_elem_state(
        &mut self,
        device: &G,
        tensor: usize,
        state: usize,
        values: &[f32],
    ) -> Result<(), OptimizerError> {
        match &mut self.states[tensor][state] {
            None => Ok(()),
            Some(buffer) => Ok(device.write(&encode(self.dtype, values), buffer)?),
        }
    }

    /// Builds the phases' chunk tables for this part's tensors at these device addresses
    /// (`params[i]`, `grads[i]`: its tensor i), unless they are those of the last build. A
    /// table of the same length is rewritten in place (on the stream, after the work before),
    /// so the launches keep their arguments. Returns whether any launch's arguments changed (a
    /// table or partials buffer allocated or dropped: only the first build, for one setup),
    /// which a captured graph cannot follow.
    pub(super) fn prepare_tables(
        &mut self,
        device: &G,
        params: &[u64],
        grads: &[u64],
        chunk_elems: usize,
    ) -> Result<bool, OptimizerError> {
        // The step's cohorts (formed by `KindStep::begin`) decide which tensors have records
        // and which row each reads: one per group unless tensors skip steps.
        let program = &self.kind.compiled.scalar_program;
        let n_rows = (0..params.len()).map(|t| {
            let row = self.kind.binding.row_of(program, &self.kind.stage, t, 0);
            row.map_or(u64::MAX, |r| r as u64)
        });
        let tensors: Vec<u64> = params.iter().chain(grads).copied().chain(n_rows).collect();
        if tensors == self.table_tensors {
            return Ok(false);
        }
        let mut moved = false;
        // Forget the old tables first: a rebuild that fails half-way is redone next step.
        self.table_tensors.clear();
        let width = row_width(program);
        let n_rows = self.kind.binding.n_rows(program, &self.kind.stage).max(1);
        if G::len(&self.rows) != n_rows * width {
            self.rows = device.upload(&vec![0f32; n_rows * width])?;
            moved = true;
        }
        let rows = device.address(&self.rows);
        let cols = self.cols.as_ref().map_or(0, |c| device.address(c));
        let (states, col_offsets) = (&self.states, &self.col_offsets);
        for (k, phase) in self.phases.iter_mut().enumerate() {
            let mut words = Vec::new();
            phase.lens.clear();
            phase.owners.clear();
            phase.entities.clear();
            let mut table = ChunkTable {
                words: &mut words,
                lens: &mut phase.lens,
                owners: &mut phase.owners,
                entities: &mut phase.entities,
                n_buffers: self.kind.buffer_sources[k].len(),
                chunk_elems,
                elem_bytes: &self.kind.buffer_bytes[k],
                partials: 0,
            };
            let address = |t: usize, source: Source| match source {
                Source::Param => params[t],
                Source::Grad => grads[t],
                Source::State(s) => states[t][s].as_ref().map_or(0, |b| device.address(b)),
                Source::ColValue(c) => cols + (col_offsets[t][c] * size_of::<f32>()) as u64,
            };
            let row = |index: usize| rows + (index * width * size_of::<f32>()) as u64;
            self.kind.push_records(k, &mut table, address, row);
            phase.n_partials = self.kind.n_partials(k, &table);
            phase.n_records = phase.lens.len();
            let had = (phase.table.is_some(), phase.partials.is_some());
            phase.table = match (phase.table.take(), phase.n_records) {
                (_, 0) => None,
                (Some(mut table), _) if G::len(&table) == words.len() => {
                    device.write(&words, &mut table)?;
                    Some(table)
                }
                _ => {
                    moved = true;
                    Some(device.upload(&words)?)
                }
            };
            phase.partials = match (phase.partials.take(), phase.n_partials) {
                (_, 0) => None,
                (Some(partials), n) if G::len(&partials) == n => Some(partials),
                (_, n) => {
                    moved = true;
                    Some(device.upload(&vec![0.0f64; n])?)
                }
            };
            moved |= had != (phase.table.is_some(), phase.partials.is_some());
        }
        self.table_tensors = tensors;
        Ok(moved)
    }

    /// Runs stage `k` of the scalar program and copies its rows (and column values, if phase
    /// `k` reads any) to the device, launches phase `k` and, if it reduces, waits for its
    /// partials and folds them in record order (so the result is the same run to run).
    pub(super) fn run_phase(&mut self, device: &G, k: usize) -> Result<(), OptimizerError> {
        self.kind.scalar_stage(k);
        // A copy from pageable memory: the driver takes the data before returning, so the rows
        // can be rewritten next, and the stream orders the copy after the previous launches
        // (page-locked rows with an event gained nothing on an H200, docs/perf.md).
        device.write(&self.kind.stage.rows, &mut self.rows)?;
        let phase = &mut self.phases[k];
        if let (true, Some(cols)) = (phase.reads_cols, &mut self.cols) {
            for (t, offsets) in self.col_offsets.iter().enumerate() {
                for (values, &offset) in self.kind.stage.cols[t].iter().zip(offsets) {
                    self.col_staging[offset..offset + values.len()].copy_from_slice(values);
                }
            }
            device.write(&self.col_staging, cols)?;
        }
        if phase.table.is_none() {
            // No elements: every reduction folds nothing.
            let records = Records {
                owners: &[],
                entities: &[],
                lens: &[],
            };
            self.kind.finish_phase(k, &[], &records);
            return Ok(());
        }
        if let Some(partials) = &mut phase.partials {
            // An element walk writes every partial (its records are never empty); a column walk
            // adds into its column partials, which start at 0.
            if self.kind.compiled.plan.phases[k].walk == Walk::Columns {
                device.zero(partials)?;
            }
        }
        self.launch(device, k)?;
        let phase = &self.phases[k];
        if let Some(partials) = &phase.partials {
            let host = device.download(partials)?;
            let records = Records {
                owners: &phase.owners,
                entities: &phase.entities,
                lens: &phase.lens,
            };
            self.kind.finish_phase(k, &host, &records);
        }
        Ok(())
    }

    /// Whether a whole step of this part can run without the host between its phases (and so
    /// be captured in a CUDA graph): no phase reduces or reads column values.
    pub(super) fn capturable(&self) -> bool {
        let plan = &self.kind.compiled.plan;
        let reduces = plan.phases.iter().any(|p| !p.reductions.is_empty());
        !reduces && !self.phases.iter().any(|p| p.reads_cols)
    }

    /// Whether a step launches anything (some tensor has elements).
    pub(super) fn launches(&self) -> bool {
        self.phases.iter().any(|p| p.table.is_some())
    }

    /// For a [capturable](CudaPart::capturable) part: runs every stage of the scalar program
    /// (none waits for a reduction) and copies the rows to the device once.
    pub(super) fn stage_all(&mut self, device: &G) -> Result<(), OptimizerError> {
        for k in 0..self.phases.len() {
            self.kind.scalar_stage(k);
        }
        device.write(&self.kind.stage.rows, &mut self.rows)?;
        Ok(())
    }

    /// Enqueues the launch of every phase, in order (for a capturable part, whose phases need
    /// nothing from the host in between).
    pub(super) fn launch_all(&self, device: &G) -> Result<(), OptimizerError> {
        (0..self.phases.len()).try_for_each(|k| self.launch(device, k))
    }

    /// Enqueues the launch of phase `k` over its table (nothing for a phase without elements).
    fn launch(&self, device: &G, k: usize) -> Result<(), OptimizerError> {
        let phase = &self.phases[k];
        let Some(table) = &phase.table else {
            return Ok(());
        };
        let partials = phase.partials.as_ref().map_or(0, |p| device.address(p));
        let args = [device.address(table), phase.n_records as u64, partials];
        let blocks = phase.n_records.min(MAX_GRID_BLOCKS) as u32;
        // SAFETY: the kernel takes (table: u64, n_records: u64, partials: u64) (ChunkAbi); every
        // address in the table is a live device buffer of the tensor's length (or, for rows
        // and column values, of the part's buffers) on this device, the records of distinct
        // tensors never overlap, the partials are sized for the table, and the table, rows,
        // column values and partials stay alive (owned by self) until the stream has run the
        // launch (a captured graph is dropped whenever the tables are rebuilt).
        unsafe { device.launch(&phase.kernel, &phase.name, blocks, PTX_BLOCK_THREADS, args)? };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::column_layout;
    use crate::view::View;

    #[test]
    fn column_values_start_16_byte_aligned_tensor_after_tensor() {
        let views = [
            View::of(&[3, 5], 15).unwrap(),
            View::of(&[2, 4, 8], 64).unwrap(),
            View::of(&[7], 7).unwrap(),
        ];
        let (offsets, total) = column_layout(&views, 2);
        // 5 columns padded to 8; 2 matrices x 8 columns; a vector of 7 is one row of 7 columns.
        assert_eq!(offsets, [vec![0, 8], vec![16, 32], vec![48, 56]]);
        assert_eq!(total, 64);
        assert_eq!(column_layout(&views, 0), (vec![vec![]; 3], 0));
    }
}
