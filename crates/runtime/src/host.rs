//! `Optimizer`: the optimizer on the host. Its executor, [`Host`], runs each phase's Cranelift
//! kernel over host memory on a pool of worker threads; states are f32 buffers here.

use crate::checkpoint::{self, Checkpoint, Slot};
use crate::checkpoint_file::{CheckpointError, CheckpointView};
use crate::error::OptimizerError;
use crate::executor::Executor;
use crate::kind_step::{KindStep, step_in_lockstep};
use crate::optimizer::{OptimizerOn, Setup};
use crate::part::Part;
use crate::pipeline::{CompileOptions, Compiled};
use crate::target::Target;
use crate::variant::PartPlan;
use optjit_ir::DType;
use optjit_trace::Definition;
use std::path::Path;
use std::sync::Arc;

/// A compiled optimizer step with its state, on the host.
///
/// ```
/// use optjit_runtime::{Optimizer, Setup};
/// let adamw = optjit_optim::AdamW::new().lr(0.1).build().unwrap();
/// let setup = Setup { shapes: vec![vec![3]], hypers: adamw.hypers.clone(), ..Setup::default() };
/// let mut opt = Optimizer::new(&adamw.definition, setup).unwrap();
/// let mut params = vec![vec![1.0f32, 2.0, 3.0]];
/// opt.step(&mut params, &[vec![0.5f32, -0.5, 0.0]]).unwrap();
/// assert!(params[0][0] < 1.0 && params[0][1] > 2.0);
/// assert_eq!(opt.stats().kernels_per_step, 1);
/// ```
pub type Optimizer = OptimizerOn<Host>;

/// The host as an optimizer's executor: worker threads per step.
pub struct Host {
    threads: usize,
}

impl Executor for Host {
    type Part = Part;

    const TARGET: &'static str = "cpu";

    fn options(
        &self,
        rule: &str,
        setup: &Setup,
        options: &CompileOptions,
    ) -> Result<CompileOptions, OptimizerError> {
        if options.target != Target::Cpu {
            return Err(OptimizerError::WrongTarget {
                rule: rule.to_string(),
                target: options.target.to_string(),
                expected: Self::TARGET,
            });
        }
        if setup.dtype != DType::F32 {
            return Err(OptimizerError::NotOnTarget {
                rule: rule.to_string(),
                what: format!("{} tensors (Setup::dtype)", setup.dtype),
                target: Self::TARGET,
            });
        }
        Ok(options.clone())
    }

    fn runs(&self, compiled: &Compiled) -> bool {
        compiled.cpu_module().is_some()
    }

    fn part(
        &self,
        plan: &PartPlan,
        compiled: Arc<Compiled>,
    ) -> Result<(Part, f64), OptimizerError> {
        Ok((Part::new(plan, compiled)?, 0.0))
    }

    fn read_state(
        &self,
        part: &Part,
        local: usize,
        state: usize,
    ) -> Result<Vec<f32>, OptimizerError> {
        Ok(part.elem_state(local, state).to_vec())
    }

    fn write_state(
        &self,
        part: &mut Part,
        local: usize,
        state: usize,
        values: &[f32],
    ) -> Result<(), OptimizerError> {
        part.elem_state_mut(local, state).copy_from_slice(values);
        Ok(())
    }

    fn refuse_values(&self, _: usize, _: &str, _: &[f32]) -> Option<String> {
        None
    }

    fn dtype(&self) -> DType {
        DType::F32
    }

    fn step_host_tensors(
        opt: &mut Optimizer,
        params: &mut [Vec<f32>],
        grads: &[Option<Vec<f32>>],
    ) -> Result<(), OptimizerError> {
        opt.step_optional(params, grads)
    }

    fn state_on_host(
        opt: &Optimizer,
        tensor: usize,
        name: &str,
    ) -> Result<Option<Vec<f32>>, OptimizerError> {
        Ok(opt.state(tensor, name).map(<[f32]>::to_vec))
    }
}

impl OptimizerOn<Host> {
    /// Compiles `definition` and allocates its state for `setup`'s tensors.
    pub fn new(definition: &Definition, setup: Setup) -> Result<Optimizer, OptimizerError> {
        Self::with_options(definition, setup, &CompileOptions::default())
    }

    /// As [`Optimizer::new`], with explicit compile options (their target must be the CPU).
    pub fn with_options(
        definition: &Definition,
        setup: Setup,
        options: &CompileOptions,
    ) -> Result<Optimizer, OptimizerError> {
        let threads = match setup.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        OptimizerOn::build(definition, setup, options, Host { threads })
    }

    /// The state `name` of tensor `tensor` (PyTorch's state names): per element, or per row
    /// or column of each matrix (row-major over the matrices).
    pub fn state(&self, tensor: usize, name: &str) -> Option<&[f32]> {
        let &(part, local) = self.placement.get(tensor)?;
        self.parts[part].state(local, name)
    }

    /// Everything this optimizer carries to its next step (states, scalar states,
    /// hyperparameters, step counts), to save ([`Checkpoint::save`]) and resume from with
    /// [`OptimizerOn::restore`], here or in a [`crate::CudaOptimizer`].
    pub fn checkpoint(&self) -> Checkpoint {
        self.take_checkpoint()
            .expect("reading host states cannot fail")
    }

    /// Saves the checkpoint to `path`, written straight from the states where they lie: the
    /// same file as `checkpoint().save(path)`, without a copy of the states in memory.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let kinds: Vec<&KindStep> = self.parts.iter().map(|p| &p.kind).collect();
        let layout = checkpoint::layout(self.table.lens.len(), &kinds);
        let groups = checkpoint::groups(&self.table, &kinds);
        let tensors = (layout.iter())
            .map(|states| {
                let mut states: Vec<(&str, &[f32])> = (states.iter())
                    .map(|(name, _, slot)| {
                        let values = match *slot {
                            Slot::Elem { part, local, state } => {
                                self.parts[part].elem_state(local, state)
                            }
                            Slot::Factor { part, local, state } => {
                                &kinds[part].binding.factor_states[local][state]
                            }
                        };
                        (name.as_str(), values)
                    })
                    .collect();
                states.sort_by_key(|&(name, _)| name);
                states
            })
            .collect();
        let (tensor_steps, tensor_scalar_states) =
            checkpoint::tensor_scalars(self.table.lens.len(), &kinds);
        let view = CheckpointView {
            rule: &self.table.rule,
            dtype: DType::F32,
            steps: self.steps(),
            shapes: &self.table.shapes,
            groups: &groups,
            tensors,
            tensor_steps,
            tensor_scalar_states,
        };
        view.save(path.as_ref())
    }

    /// Takes one step: updates every parameter and state in place. `params[i]` and `grads[i]`
    /// are tensor i of the setup. On error nothing is modified.
    pub fn step<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[G],
    ) -> Result<(), OptimizerError> {
        let grads: Vec<Option<&[f32]>> = grads.iter().map(|g| Some(g.as_ref())).collect();
        self.step_optional(params, &grads)
    }

    /// Takes one step over the tensors that have a gradient (`Some`), as PyTorch skips a
    /// parameter whose `.grad` is `None`: a tensor without one keeps its parameter, states,
    /// step count and scalar states (so its bias corrections, NAdam's `mu_product`, ... go on
    /// from where it stopped), and a reduction over every tensor (`clip_grad_norm`) covers
    /// those that have one. Schedules count the optimizer's steps. On error nothing is
    /// modified.
    pub fn step_optional<P: AsMut<[f32]>, G: AsRef<[f32]>>(
        &mut self,
        params: &mut [P],
        grads: &[Option<G>],
    ) -> Result<(), OptimizerError> {
        // Take each slice once: the pointers handed to the kernels are those of the checked
        // slices, whatever a user's AsMut/AsRef would return on a second call.
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut()).collect();
        let grads: Vec<Option<&[f32]>> = (grads.iter())
            .map(|g| g.as_ref().map(|g| g.as_ref()))
            .collect();
        let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
        let grad_lens: Vec<Option<usize>> = grads.iter().map(|g| g.map(<[f32]>::len)).collect();
        self.table.check_lengths(&param_lens, &grad_lens)?;
        self.begin_step(|t| grads[t].is_some());
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.unwrap_or(&[])).collect();
        // Each part's tensors, in its order (ascending optimizer indices).
        let mut part_params: Vec<Vec<&mut [f32]>> = self.parts.iter().map(|_| Vec::new()).collect();
        let mut part_grads: Vec<Vec<&[f32]>> = self.parts.iter().map(|_| Vec::new()).collect();
        for ((param, grad), &(part, _)) in params.drain(..).zip(grads).zip(&self.placement) {
            part_params[part].push(param);
            part_grads[part].push(grad);
        }
        let threads = self.exec.threads;
        let run = |i: usize, part: &mut Part, phase: usize| {
            part.run_phase(phase, &mut part_params[i], &part_grads[i], threads);
            Ok::<(), std::convert::Infallible>(())
        };
        let Ok(()) = step_in_lockstep(&mut self.parts, run);
        Ok(())
    }
}
