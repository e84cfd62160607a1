//! Running an entry on a simulated grid: blocks one after another, the threads of a block
//! each to their next barrier or warp shuffle, which complete only when every thread they
//! involve has reached the same instruction (anything else is reported, as a GPU would hang
//! or be undefined there).

use crate::SimError;
use crate::memory::{Memory, Who};
use crate::parse::{Base, Bin, Cmp, Entry, Instr, Op, Operand, Space, Special, Ty};
use crate::shared::SharedMemory;
use half::{bf16, f16};

/// Threads per warp.
const WARP: usize = 32;
/// Instructions one launch may execute before it is taken to be looping forever.
const BUDGET: u64 = 2_000_000_000;

/// Where a thread stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    /// Waiting at the `bar.sync` or `shfl` at this instruction.
    AtBarrier(usize),
    AtShuffle(usize),
    Done,
}

struct Thread {
    /// Register values; `None` until first written (reading one then is reported: on a GPU
    /// its value is whatever the register last held).
    regs: Vec<Option<u64>>,
    pc: usize,
    state: State,
}

/// One block's execution.
struct Block<'a> {
    entry: &'a Entry,
    params: &'a [u64],
    ctaid: u64,
    nctaid: u64,
    ntid: u64,
    shared: SharedMemory,
    threads: Vec<Thread>,
}

/// Runs `entry` with `grid` blocks of `block` threads on `memory`; returns the instructions
/// executed.
pub(crate) fn launch(
    memory: &mut Memory,
    entry: &Entry,
    grid: usize,
    block: usize,
    params: &[u64],
) -> Result<u64, SimError> {
    if params.len() != entry.params.len() {
        return Err(SimError::Launch(format!(
            "{} takes {} parameters, given {}",
            entry.name,
            entry.params.len(),
            params.len()
        )));
    }
    if grid == 0 || block == 0 {
        return Err(SimError::Launch(format!(
            "an empty launch: {grid} blocks of {block} threads"
        )));
    }
    // The driver's limits: the entry's thread count, 2^31 - 1 blocks, 48 KiB of static
    // shared memory.
    match entry.threads {
        Some((n, true)) if block != n => {
            return Err(SimError::Launch(format!(
                "{} requires blocks of {n} threads (.reqntid), launched with {block}",
                entry.name
            )));
        }
        Some((n, _)) if block > n => {
            return Err(SimError::Launch(format!(
                "{} takes at most {n} threads per block (.maxntid), launched with {block}",
                entry.name
            )));
        }
        _ => {}
    }
    if grid >= 1 << 31 || entry.shared_bytes > 48 << 10 {
        return Err(SimError::Launch(format!(
            "{}: {grid} blocks, {} bytes of shared memory: beyond the driver's limits",
            entry.name, entry.shared_bytes
        )));
    }
    if (grid as u64) * (block as u64) >= u64::from(u32::MAX) {
        return Err(SimError::Launch(format!(
            "{grid} blocks of {block} threads: more threads than the simulator tracks"
        )));
    }
    memory.begin_launch();
    let mut executed = 0u64;
    for ctaid in 0..grid {
        let threads = (0..block)
            .map(|_| Thread {
                regs: vec![None; entry.reg_names.len()],
                pc: 0,
                state: State::Running,
            })
            .collect();
        let mut b = Block {
            entry,
            params,
            ctaid: ctaid as u64,
            nctaid: grid as u64,
            ntid: block as u64,
            shared: SharedMemory::new(entry.shared_bytes),
            threads,
        };
        b.run(memory, &mut executed)?;
    }
    Ok(executed)
}

impl Block<'_> {
    fn run(&mut self, memory: &mut Memory, executed: &mut u64) -> Result<(), SimError> {
        loop {
            for t in 0..self.threads.len() {
                if self.threads[t].state == State::Running {
                    self.run_thread(t, memory, executed)?;
                }
            }
            if self.threads.iter().all(|t| t.state == State::Done) {
                return Ok(());
            }
            if self.shuffle()? {
                continue;
            }
            self.barrier()?;
        }
    }

    /// Completes every warp whose threads all wait at one shuffle; whether any did.
    fn shuffle(&mut self) -> Result<bool, SimError> {
        let mut any = false;
        for warp in 0..self.threads.len().div_ceil(WARP) {
            let lanes = warp * WARP..((warp + 1) * WARP).min(self.threads.len());
            let states: Vec<State> = self.threads[lanes.clone()]
                .iter()
                .map(|t| t.state)
                .collect();
            let Some(&State::AtShuffle(pc)) =
                states.iter().find(|s| matches!(s, State::AtShuffle(_)))
            else {
                continue;
            };
            if states.iter().any(|&s| s != State::AtShuffle(pc)) {
                return Err(self.fault(
                    pc,
                    format!("warp {warp}: not every lane reached this shuffle ({states:?})"),
                ));
            }
            let instr = &self.entry.body[pc];
            let [dst, src, delta, clamp, mask] = &instr.args[..] else {
                return Err(self.fault(pc, "shfl.sync.down takes 5 operands".into()));
            };
            // The lane delta is b[4:0], the clamp c[4:0]; the same in every lane.
            let operand = |t: usize, x: &Operand| self.value(t, x).map_err(|e| self.at(pc, e));
            let mut uniform = Vec::with_capacity(3);
            for x in [delta, clamp, mask] {
                let first = operand(lanes.start, x)?;
                for t in lanes.clone() {
                    if operand(t, x)? != first {
                        return Err(self.fault(pc, "shuffle operands differ between lanes".into()));
                    }
                }
                uniform.push(first);
            }
            let (delta, clamp, mask) = (uniform[0] & 31, uniform[1], uniform[2] as u32);
            if mask != u32::MAX || lanes.len() != WARP || clamp & 0x1f00 != 0 {
                return Err(self.fault(
                    pc,
                    "only full-warp shuffles without segments are simulated".into(),
                ));
            }
            let values: Vec<u64> =
                (lanes.clone().map(|t| operand(t, src))).collect::<Result<_, _>>()?;
            for (lane, t) in lanes.enumerate() {
                let from = lane + delta as usize;
                let value = if from <= (clamp & 31) as usize {
                    values[from]
                } else {
                    values[lane]
                };
                self.set(t, dst, value & 0xffff_ffff)?;
                self.threads[t].pc = pc + 1;
                self.threads[t].state = State::Running;
            }
            any = true;
        }
        Ok(any)
    }

    /// Completes the barrier that every thread of the block waits at.
    fn barrier(&mut self) -> Result<(), SimError> {
        let waiting = self.threads.iter().find_map(|t| match t.state {
            State::AtBarrier(pc) => Some(pc),
            _ => None,
        });
        let Some(pc) = waiting else {
            let states: Vec<State> = self.threads.iter().map(|t| t.state).collect();
            return Err(SimError::Deadlock(format!(
                "{} block {}: no thread can go on: {:?}",
                self.entry.name,
                self.ctaid,
                summarize(&states)
            )));
        };
        if self.threads.iter().any(|t| t.state != State::AtBarrier(pc)) {
            let states: Vec<State> = self.threads.iter().map(|t| t.state).collect();
            return Err(self.fault(
                pc,
                format!(
                    "not every thread of the block reached this barrier: {:?}",
                    summarize(&states)
                ),
            ));
        }
        for t in &mut self.threads {
            t.pc = pc + 1;
            t.state = State::Running;
        }
        self.shared.barrier();
        Ok(())
    }

    /// Register `r` of thread `t`, which must have been written.
    fn read(&self, t: usize, r: usize) -> Result<u64, SimError> {
        self.threads[t].regs[r].ok_or_else(|| {
            SimError::Launch(format!(
                "thread {t} reads {} before anything wrote it",
                self.entry.reg_names[r]
            ))
        })
    }

    /// `error` placed at instruction `pc` (errors without a place get it).
    fn at(&self, pc: usize, error: SimError) -> SimError {
        match error {
            SimError::Launch(message) => self.fault(pc, message),
            other => other,
        }
    }

    fn fault(&self, pc: usize, message: String) -> SimError {
        let instr = &self.entry.body[pc];
        SimError::Exec {
            entry: self.entry.name.clone(),
            line: instr.line,
            text: instr.text.clone(),
            message,
        }
    }

    /// Runs thread `t` until it waits or exits.
    fn run_thread(
        &mut self,
        t: usize,
        memory: &mut Memory,
        executed: &mut u64,
    ) -> Result<(), SimError> {
        let body = &self.entry.body;
        loop {
            let pc = self.threads[t].pc;
            let instr = body.get(pc).ok_or_else(|| {
                SimError::Launch(format!("{}: ran past the end", self.entry.name))
            })?;
            *executed += 1;
            if *executed > BUDGET {
                return Err(self.fault(pc, format!("more than {BUDGET} instructions: a loop?")));
            }
            let guard = match instr.guard {
                Some((pred, negated)) => {
                    Some((self.read(t, pred).map_err(|e| self.at(pc, e))?, negated))
                }
                None => None,
            };
            if let Some((pred, negated)) = guard
                && (pred != 0) == negated
            {
                self.threads[t].pc = pc + 1;
                continue;
            }
            let next = match instr.op {
                Op::Bar => {
                    self.threads[t].state = State::AtBarrier(pc);
                    return Ok(());
                }
                Op::ShflDown => {
                    self.threads[t].state = State::AtShuffle(pc);
                    return Ok(());
                }
                Op::Ret => {
                    self.threads[t].state = State::Done;
                    return Ok(());
                }
                Op::Bra => match instr.args.first() {
                    Some(Operand::Label(target)) => *target,
                    _ => return Err(self.fault(pc, "bra needs a label".into())),
                },
                _ => {
                    self.step(t, instr, memory).map_err(|e| self.at(pc, e))?;
                    pc + 1
                }
            };
            self.threads[t].pc = next;
        }
    }

    /// The global index of thread `t` (for hazard reports).
    fn who(&self, t: usize) -> Who {
        Who {
            thread: (self.ctaid * self.ntid) as u32 + t as u32,
            block: self.ctaid as u32,
        }
    }

    /// Executes one non-control instruction for thread `t`.
    fn step(&mut self, t: usize, instr: &Instr, memory: &mut Memory) -> Result<(), SimError> {
        let fault = |message: String| SimError::Exec {
            entry: self.entry.name.clone(),
            line: instr.line,
            text: instr.text.clone(),
            message,
        };
        let args = &instr.args;
        let arg = |i: usize| {
            args.get(i)
                .ok_or_else(|| fault(format!("operand {i} missing")))
        };
        let v = |this: &Self, i: usize| -> Result<u64, SimError> { this.value(t, arg(i)?) };
        match instr.op {
            Op::Ld { space, ty, lanes } => {
                let address = self.address(t, arg(1)?)?;
                let size = ty.bytes();
                let values: Lanes = match space {
                    Space::Param => {
                        let Operand::Addr {
                            base: Base::Param(p),
                            offset: 0,
                        } = arg(1)?
                        else {
                            return Err(fault("ld.param reads a parameter by name".into()));
                        };
                        ([self.params[*p], 0, 0, 0], 1)
                    }
                    Space::Shared => {
                        let bytes = self
                            .shared
                            .load(shared_offset(address)?, size * lanes, t)
                            .map_err(|e| fault(e.to_string()))?;
                        from_bytes(bytes, size)
                    }
                    Space::Global | Space::GlobalNc => {
                        let nc = space == Space::GlobalNc;
                        let bytes = memory
                            .load(address, size * lanes, nc, self.who(t))
                            .map_err(|e| fault(e.to_string()))?;
                        from_bytes(bytes, size)
                    }
                };
                self.set_lanes(t, arg(0)?, &values.0[..values.1])
            }
            Op::St { space, ty, lanes } => {
                let address = self.address(t, arg(0)?)?;
                let size = ty.bytes();
                let (values, n) = self.lanes(t, arg(1)?, lanes)?;
                let mut buffer = [0u8; 32];
                for (i, x) in values[..n].iter().enumerate() {
                    buffer[i * size..(i + 1) * size].copy_from_slice(&x.to_le_bytes()[..size]);
                }
                let bytes = &buffer[..n * size];
                match space {
                    Space::Shared => self
                        .shared
                        .store(shared_offset(address)?, bytes, t)
                        .map_err(|e| fault(e.to_string())),
                    Space::Global => memory
                        .store(address, bytes, self.who(t))
                        .map_err(|e| fault(e.to_string())),
                    _ => Err(fault("stores go to global or shared memory".into())),
                }
            }
            Op::Cvta => {
                let x = v(self, 1)?;
                self.set(t, arg(0)?, x)
            }
            Op::Mov(ty) => {
                let x = match arg(1)? {
                    // mov.b32 %r, {lo, hi}: two 16-bit halves.
                    Operand::Vector(halves) if ty == Ty::U32 => {
                        let [lo, hi] = &halves[..] else {
                            return Err(fault("mov.b32 packs two halves".into()));
                        };
                        (self.value(t, lo)? & 0xffff) | ((self.value(t, hi)? & 0xffff) << 16)
                    }
                    other => self.value(t, other)?,
                };
                self.set(t, arg(0)?, mask(ty, x))
            }
            Op::Binary(bin, ty) => {
                let (a, b) = (v(self, 1)?, v(self, 2)?);
                let r = binary(bin, ty, a, b).ok_or_else(|| fault("unsupported type".into()))?;
                self.set(t, arg(0)?, r)
            }
            Op::Mad(ty) | Op::Fma(ty) => {
                let (a, b, c) = (v(self, 1)?, v(self, 2)?, v(self, 3)?);
                let r = match ty {
                    Ty::U64 => a.wrapping_mul(b).wrapping_add(c),
                    Ty::U32 => u64::from((a as u32).wrapping_mul(b as u32).wrapping_add(c as u32)),
                    Ty::F32 => f32b(f(a).mul_add(f(b), f(c))),
                    Ty::F64 => d(a).mul_add(d(b), d(c)).to_bits(),
                    _ => return Err(fault("unsupported type".into())),
                };
                self.set(t, arg(0)?, r)
            }
            Op::Sqrt(ty) | Op::Neg(ty) | Op::Abs(ty) => {
                let a = v(self, 1)?;
                let r = match (instr.op, ty) {
                    (Op::Sqrt(_), Ty::F32) => f32b(f(a).sqrt()),
                    (Op::Sqrt(_), Ty::F64) => d(a).sqrt().to_bits(),
                    (Op::Neg(_), Ty::F32) => a ^ 0x8000_0000,
                    (Op::Neg(_), Ty::F64) => a ^ (1 << 63),
                    (Op::Abs(_), Ty::F32) => a & 0x7fff_ffff,
                    (Op::Abs(_), Ty::F64) => a & !(1 << 63),
                    _ => return Err(fault("unsupported type".into())),
                };
                self.set(t, arg(0)?, r)
            }
            Op::Ex2 => {
                let r = f32b(f(v(self, 1)?).exp2());
                self.set(t, arg(0)?, r)
            }
            Op::Lg2 => {
                let r = f32b(f(v(self, 1)?).log2());
                self.set(t, arg(0)?, r)
            }
            Op::Setp { cmp, ty } => {
                let (a, b) = (v(self, 1)?, v(self, 2)?);
                let r = compare(cmp, ty, a, b).ok_or_else(|| fault("unsupported type".into()))?;
                self.set(t, arg(0)?, u64::from(r))
            }
            Op::Selp(_) => {
                let (a, b, p) = (v(self, 1)?, v(self, 2)?, v(self, 3)?);
                self.set(t, arg(0)?, if p != 0 { a } else { b })
            }
            Op::Cvt { to, from } => {
                let a = v(self, 1)?;
                let r = convert(to, from, a)
                    .ok_or_else(|| fault(format!("no cvt {to:?} <- {from:?}")))?;
                self.set(t, arg(0)?, r)
            }
            Op::Bar | Op::ShflDown | Op::Bra | Op::Ret => {
                unreachable!("control flow in run_thread")
            }
        }
    }

    /// An operand's value for thread `t`.
    fn value(&self, t: usize, operand: &Operand) -> Result<u64, SimError> {
        Ok(match operand {
            Operand::Reg(r) => self.read(t, *r)?,
            Operand::Imm(bits) => *bits,
            Operand::Shared(offset) => *offset as u64,
            Operand::Special(s) => match s {
                Special::TidX => t as u64,
                Special::NtidX => self.ntid,
                Special::CtaidX => self.ctaid,
                Special::NctaidX => self.nctaid,
            },
            other => {
                return Err(SimError::Launch(format!("{other:?} is not a value")));
            }
        })
    }

    /// The address an `[...]` operand names (global, or an offset in shared memory).
    fn address(&self, t: usize, operand: &Operand) -> Result<u64, SimError> {
        let Operand::Addr { base, offset } = operand else {
            return Err(SimError::Launch(format!("{operand:?} is not an address")));
        };
        let base = match base {
            Base::Reg(r) => self.read(t, *r)?,
            Base::Shared(o) => *o as u64,
            Base::Param(_) => 0,
        };
        Ok(base.wrapping_add(*offset as u64))
    }

    fn set(&mut self, t: usize, operand: &Operand, value: u64) -> Result<(), SimError> {
        match operand {
            Operand::Reg(r) => {
                self.threads[t].regs[*r] = Some(value);
                Ok(())
            }
            other => Err(SimError::Launch(format!("cannot write to {other:?}"))),
        }
    }

    /// Writes `values` to a register or a `{...}` vector of registers.
    fn set_lanes(&mut self, t: usize, operand: &Operand, values: &[u64]) -> Result<(), SimError> {
        match operand {
            Operand::Vector(regs) if regs.len() == values.len() => {
                for (reg, &x) in regs.iter().zip(values) {
                    self.set(t, reg, x)?;
                }
                Ok(())
            }
            reg if values.len() == 1 => self.set(t, reg, values[0]),
            other => Err(SimError::Launch(format!(
                "{other:?} cannot take {} lanes",
                values.len()
            ))),
        }
    }

    /// The values of a register or of a `{...}` vector of `lanes` registers.
    fn lanes(&self, t: usize, operand: &Operand, lanes: usize) -> Result<Lanes, SimError> {
        let mut out = [0; 4];
        match operand {
            Operand::Vector(xs) if xs.len() == lanes && lanes <= 4 => {
                for (slot, x) in out.iter_mut().zip(xs) {
                    *slot = self.value(t, x)?;
                }
            }
            x if lanes == 1 => out[0] = self.value(t, x)?,
            other => return Err(SimError::Launch(format!("{other:?} is not {lanes} lanes"))),
        }
        Ok((out, lanes))
    }
}

/// A shared-window address as an offset into the block's shared memory.
fn shared_offset(address: u64) -> Result<usize, SimError> {
    usize::try_from(address).map_err(|_| SimError::Fault {
        address,
        message: "beyond the shared window".into(),
    })
}

/// Up to four lane values and how many there are.
type Lanes = ([u64; 4], usize);

/// The lanes of `size` bytes each in `bytes` (at most four).
fn from_bytes(bytes: &[u8], size: usize) -> Lanes {
    let mut out = [0; 4];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks(size)) {
        *slot = le_bits(chunk);
    }
    (out, bytes.len() / size)
}

/// Whether the executor implements `op` for its types (checked when parsing, so that an
/// unsupported instruction is reported even on a path no test takes).
pub(crate) fn supports(op: Op) -> bool {
    match op {
        Op::Binary(bin, ty) => binary(bin, ty, 0, 0).is_some(),
        Op::Mad(ty) => matches!(ty, Ty::U32 | Ty::U64),
        Op::Fma(ty) | Op::Sqrt(ty) | Op::Neg(ty) | Op::Abs(ty) => matches!(ty, Ty::F32 | Ty::F64),
        Op::Setp { cmp, ty } => compare(cmp, ty, 0, 0).is_some(),
        Op::Cvt { to, from } => convert(to, from, 0).is_some(),
        Op::Ld { ty, .. } | Op::St { ty, .. } | Op::Mov(ty) | Op::Selp(ty) => ty != Ty::Pred,
        Op::Cvta | Op::Ex2 | Op::Lg2 | Op::ShflDown | Op::Bar | Op::Bra | Op::Ret => true,
    }
}

/// A run of identical states, for error messages: `(state, count)`.
fn summarize(states: &[State]) -> Vec<(State, usize)> {
    let mut out: Vec<(State, usize)> = Vec::new();
    for &s in states {
        match out.last_mut() {
            Some((last, n)) if *last == s => *n += 1,
            _ => out.push((s, 1)),
        }
    }
    out
}

fn le_bits(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

fn f(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}

fn d(bits: u64) -> f64 {
    f64::from_bits(bits)
}

fn f32b(x: f32) -> u64 {
    u64::from(x.to_bits())
}

/// Keeps the bits of a `ty` register.
fn mask(ty: Ty, x: u64) -> u64 {
    match ty.bytes() {
        2 => x & 0xffff,
        4 => x & 0xffff_ffff,
        _ => x,
    }
}

/// The canonical NaNs that PTX's `min.NaN`/`max.NaN` return.
const NAN32: u64 = 0x7fff_ffff;
const NAN64: u64 = 0x7fff_ffff_ffff_ffff;

/// PTX `min`/`max` of `a` and `b` (bits; `values` as f64): -0 orders below +0; a NaN operand
/// gives `nan_bits` with `.NaN`, and the other operand without.
fn min_max(min: bool, nan: bool, a: u64, b: u64, values: (f64, f64), nan_bits: u64) -> u64 {
    let (x, y) = values;
    match (x.is_nan(), y.is_nan()) {
        (false, false) => {
            let x_first = (x < y) || (x == y && x.is_sign_negative());
            if x_first == min { a } else { b }
        }
        _ if nan => nan_bits,
        (true, true) => nan_bits,
        (true, false) => b,
        (false, true) => a,
    }
}

fn binary(op: Bin, ty: Ty, a: u64, b: u64) -> Option<u64> {
    Some(match (op, ty) {
        (Bin::Add, Ty::U64) => a.wrapping_add(b),
        (Bin::Add, Ty::U32) => u64::from((a as u32).wrapping_add(b as u32)),
        (Bin::Sub, Ty::U64) => a.wrapping_sub(b),
        (Bin::Mul, Ty::U64) => a.wrapping_mul(b),
        (Bin::Mul, Ty::U32) => u64::from((a as u32).wrapping_mul(b as u32)),
        (Bin::Shl, Ty::U64) => a.checked_shl(b as u32).unwrap_or(0),
        (Bin::Shl, Ty::U32) => u64::from((a as u32).checked_shl(b as u32).unwrap_or(0)),
        (Bin::Shr, Ty::U64) => a.checked_shr(b as u32).unwrap_or(0),
        (Bin::Shr, Ty::U32) => u64::from((a as u32).checked_shr(b as u32).unwrap_or(0)),
        (Bin::And, _) => mask(ty, a & b),
        (Bin::Or, _) => mask(ty, a | b),
        (Bin::Add, Ty::F32) => f32b(f(a) + f(b)),
        (Bin::Sub, Ty::F32) => f32b(f(a) - f(b)),
        (Bin::Mul, Ty::F32) => f32b(f(a) * f(b)),
        (Bin::Div, Ty::F32) => f32b(f(a) / f(b)),
        (Bin::Add, Ty::F64) => (d(a) + d(b)).to_bits(),
        (Bin::Sub, Ty::F64) => (d(a) - d(b)).to_bits(),
        (Bin::Mul, Ty::F64) => (d(a) * d(b)).to_bits(),
        (Bin::Div, Ty::F64) => (d(a) / d(b)).to_bits(),
        (Bin::Min { nan } | Bin::Max { nan }, Ty::F32) => {
            let min = matches!(op, Bin::Min { .. });
            min_max(min, nan, a, b, (f(a).into(), f(b).into()), NAN32)
        }
        (Bin::Min { nan } | Bin::Max { nan }, Ty::F64) => {
            let min = matches!(op, Bin::Min { .. });
            min_max(min, nan, a, b, (d(a), d(b)), NAN64)
        }
        _ => return None,
    })
}

fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> Option<bool> {
    let ordered = |o: std::cmp::Ordering| match cmp {
        Cmp::Lt => o.is_lt(),
        Cmp::Le => o.is_le(),
        Cmp::Gt => o.is_gt(),
        Cmp::Ge => o.is_ge(),
        Cmp::Eq => o.is_eq(),
        Cmp::Ne | Cmp::Neu => o.is_ne(),
        Cmp::Nan => false,
    };
    let float = |o: Option<std::cmp::Ordering>| match o {
        Some(o) => ordered(o),
        // Unordered: only the "u" comparisons and `nan` hold.
        None => matches!(cmp, Cmp::Neu | Cmp::Nan),
    };
    Some(match ty {
        Ty::U64 => ordered(a.cmp(&b)),
        Ty::U32 => ordered((a as u32).cmp(&(b as u32))),
        Ty::F32 => float(f(a).partial_cmp(&f(b))),
        Ty::F64 => float(d(a).partial_cmp(&d(b))),
        _ => return None,
    })
}

fn convert(to: Ty, from: Ty, a: u64) -> Option<u64> {
    Some(match (to, from) {
        (Ty::U64, Ty::U32) => a & 0xffff_ffff,
        (Ty::U32, Ty::U64) => a & 0xffff_ffff,
        (Ty::F64, Ty::F32) => f64::from(f(a)).to_bits(),
        (Ty::F32, Ty::F64) => f32b(d(a) as f32),
        (Ty::F32, Ty::F16) => f32b(f16::from_bits(a as u16).to_f32()),
        (Ty::F32, Ty::Bf16) => f32b(bf16::from_bits(a as u16).to_f32()),
        (Ty::F16, Ty::F32) => u64::from(f16::from_f32(f(a)).to_bits()),
        (Ty::Bf16, Ty::F32) => u64::from(bf16::from_f32(f(a)).to_bits()),
        _ => return None,
    })
}
