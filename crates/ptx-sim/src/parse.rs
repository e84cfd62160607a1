//! PTX text to decoded instructions: the entries of a module, their parameters, registers,
//! shared variables and bodies, with labels resolved to instruction indices.

use crate::SimError;
use std::collections::HashMap;

/// A value's type, as an instruction names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    B16,
    U32,
    U64,
    F16,
    Bf16,
    F32,
    F64,
    Pred,
}

impl Ty {
    fn parse(name: &str) -> Option<Ty> {
        Some(match name {
            "b16" | "u16" => Ty::B16,
            "b32" | "u32" => Ty::U32,
            "b64" | "u64" => Ty::U64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Bytes in memory.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Ty::B16 | Ty::F16 | Ty::Bf16 => 2,
            Ty::U32 | Ty::F32 => 4,
            Ty::U64 | Ty::F64 => 8,
            Ty::Pred => 1,
        }
    }
}

/// Where a load or store goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    /// `ld.global.nc`: through the non-coherent cache, so the memory must not change during
    /// the launch.
    GlobalNc,
    Shared,
    Param,
}

/// A comparison of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    /// Not equal or unordered.
    Neu,
    /// Either operand is NaN.
    Nan,
}

/// A decoded opcode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Op {
    Ld {
        space: Space,
        ty: Ty,
        lanes: usize,
    },
    St {
        space: Space,
        ty: Ty,
        lanes: usize,
    },
    Cvta,
    Mov(Ty),
    /// Two operands, one result: arithmetic, shifts, bitwise, min and max.
    Binary(Bin, Ty),
    Mad(Ty),
    Fma(Ty),
    Sqrt(Ty),
    Neg(Ty),
    Abs(Ty),
    Setp {
        cmp: Cmp,
        ty: Ty,
    },
    Selp(Ty),
    Cvt {
        to: Ty,
        from: Ty,
    },
    Ex2,
    Lg2,
    ShflDown,
    Bar,
    Bra,
    Ret,
}

/// A two-operand op (see [`Op::Binary`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Shl,
    Shr,
    And,
    Or,
    /// `min`, with `.NaN` when `nan`.
    Min {
        nan: bool,
    },
    Max {
        nan: bool,
    },
}

/// A special register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    TidX,
    NtidX,
    CtaidX,
    NctaidX,
}

/// What an address is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    Reg(usize),
    /// A shared variable, by its byte offset in the block's shared memory.
    Shared(usize),
    /// A kernel parameter, by index.
    Param(usize),
}

/// An instruction operand.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Reg(usize),
    /// An integer (two's complement) or the bits of a float (`0f...`, `0d...`).
    Imm(u64),
    Special(Special),
    /// The shared-window address of a shared variable (its byte offset).
    Shared(usize),
    Addr {
        base: Base,
        offset: i64,
    },
    Vector(Vec<Operand>),
    Label(usize),
}

/// One instruction, with where it came from.
#[derive(Clone, Debug)]
pub(crate) struct Instr {
    /// `@%p` (false) or `@!%p` (true).
    pub guard: Option<(usize, bool)>,
    pub op: Op,
    pub args: Vec<Operand>,
    /// 1-based line in the module text.
    pub line: usize,
    pub text: String,
}

/// One `.entry` of a module.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// The parameter names, in order.
    pub params: Vec<String>,
    /// The declared registers' names, by slot (every declared register gets one).
    pub(crate) reg_names: Vec<String>,
    /// Bytes of shared memory per block.
    pub(crate) shared_bytes: usize,
    /// `.maxntid N` (at most N threads per block) or `.reqntid N` (exactly N), if declared.
    pub(crate) threads: Option<(usize, bool)>,
    pub(crate) body: Vec<Instr>,
}

/// A parsed module: its entries.
#[derive(Clone, Debug)]
pub struct Module {
    /// The entries, in text order.
    pub entries: Vec<Entry>,
}

impl Module {
    /// Parses the PTX that optjit's emitter writes (one instruction per line; `//` comments).
    /// Anything outside that subset is an error naming the line.
    pub fn parse(text: &str) -> Result<Module, SimError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.split("//").next().unwrap_or("").trim()))
            .filter(|(_, line)| !line.is_empty())
            .collect();
        let mut entries = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let (_, line) = lines[i];
            if line.starts_with(".visible .entry") || line.starts_with(".entry") {
                let (entry, next) = parse_entry(&lines, i)?;
                entries.push(entry);
                i = next;
            } else {
                i += 1;
            }
        }
        Ok(Module { entries })
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn error(line: usize, message: impl Into<String>) -> SimError {
    SimError::Parse {
        line,
        message: message.into(),
    }
}

/// Parses the entry starting at `lines[start]`; returns it and the index after its `}`.
fn parse_entry(lines: &[(usize, &str)], start: usize) -> Result<(Entry, usize), SimError> {
    let (line_no, header) = lines[start];
    let name = header
        .split_whitespace()
        .last()
        .and_then(|s| s.strip_suffix('('))
        .ok_or_else(|| {
            error(
                line_no,
                format!("expected `.entry NAME(`, found `{header}`"),
            )
        })?
        .to_string();
    let mut params = Vec::new();
    let mut i = start + 1;
    while i < lines.len() && !lines[i].1.starts_with(')') {
        let (n, line) = lines[i];
        let param = line.trim_end_matches(',').split_whitespace().last();
        match param {
            Some(p) if line.starts_with(".param") => params.push(p.to_string()),
            _ => return Err(error(n, format!("expected a parameter, found `{line}`"))),
        }
        i += 1;
    }
    // `)`, then `.maxntid N, 1, 1` or `.reqntid N, 1, 1`, up to `{`.
    let mut threads = None;
    while i < lines.len() && lines[i].1 != "{" {
        let (n, line) = lines[i];
        for (directive, exact) in [(".maxntid", false), (".reqntid", true)] {
            if let Some(dims) = line.strip_prefix(directive) {
                let x = dims.split(',').next().unwrap_or("").trim();
                let x = x.parse().map_err(|_| error(n, format!("bad `{line}`")))?;
                threads = Some((x, exact));
            }
        }
        i += 1;
    }
    i += 1;
    let mut regs: HashMap<String, usize> = HashMap::new();
    let mut shared: HashMap<String, usize> = HashMap::new();
    let mut shared_bytes = 0usize;
    let mut labels: HashMap<String, usize> = HashMap::new();
    let mut pending: Vec<(usize, &str)> = Vec::new();
    while i < lines.len() && lines[i].1 != "}" {
        let (n, line) = lines[i];
        i += 1;
        if let Some(decl) = line.strip_prefix(".reg") {
            // .reg .f32 %f<83>;
            let spec = decl.trim().trim_end_matches(';');
            let name = spec.split_whitespace().last().unwrap_or("");
            let (prefix, count) = name
                .strip_suffix('>')
                .and_then(|s| s.split_once('<'))
                .and_then(|(p, c)| Some((p, c.parse::<usize>().ok()?)))
                .ok_or_else(|| error(n, format!("expected `.reg .T %x<N>;`, found `{line}`")))?;
            for k in 0..count {
                let next = regs.len();
                regs.insert(format!("{prefix}{k}"), next);
            }
        } else if let Some(decl) = line.strip_prefix(".shared") {
            // .shared .align 16 .f32 warp_partials[24];
            let words: Vec<&str> = decl
                .trim()
                .trim_end_matches(';')
                .split_whitespace()
                .collect();
            let bad = || {
                error(
                    n,
                    format!("expected `.shared .align A .T name[N];`, found `{line}`"),
                )
            };
            let [".align", align, ty, array] = words[..] else {
                return Err(bad());
            };
            let align: usize = align.parse().map_err(|_| bad())?;
            let ty = Ty::parse(ty.trim_start_matches('.')).ok_or_else(bad)?;
            let (var, count) = array
                .strip_suffix(']')
                .and_then(|s| s.split_once('['))
                .and_then(|(v, c)| Some((v, c.parse::<usize>().ok()?)))
                .ok_or_else(bad)?;
            let offset = shared_bytes.div_ceil(align) * align;
            shared.insert(var.to_string(), offset);
            shared_bytes = offset + count * ty.bytes();
        } else if let Some(label) = line.strip_suffix(':') {
            labels.insert(label.to_string(), pending.len());
        } else {
            pending.push((n, line));
        }
    }
    let names = Names {
        regs: &regs,
        shared: &shared,
        params: &params,
        labels: &labels,
    };
    let body = pending
        .into_iter()
        .map(|(n, line)| parse_instr(n, line, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let mut reg_names = vec![String::new(); regs.len()];
    for (name, &slot) in &regs {
        reg_names[slot] = name.clone();
    }
    let entry = Entry {
        name,
        params,
        reg_names,
        shared_bytes,
        threads,
        body,
    };
    Ok((entry, i + 1))
}

/// The names an instruction may refer to.
struct Names<'a> {
    regs: &'a HashMap<String, usize>,
    shared: &'a HashMap<String, usize>,
    params: &'a [String],
    labels: &'a HashMap<String, usize>,
}

fn parse_instr(n: usize, line: &str, names: &Names<'_>) -> Result<Instr, SimError> {
    let text = line.trim_end_matches(';').trim();
    let (guard, rest) = match text.strip_prefix('@') {
        Some(rest) => {
            let (pred, rest) = rest
                .split_once(' ')
                .ok_or_else(|| error(n, format!("a guard without an instruction: `{line}`")))?;
            let (negated, pred) = match pred.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pred),
            };
            let reg = *names
                .regs
                .get(pred)
                .ok_or_else(|| error(n, format!("undeclared register {pred}")))?;
            (Some((reg, negated)), rest.trim())
        }
        None => (None, text),
    };
    let (opcode, operands) = rest.split_once(' ').unwrap_or((rest, ""));
    let op = (decode(opcode).filter(|&op| crate::exec::supports(op)))
        .ok_or_else(|| error(n, format!("unsupported instruction `{opcode}`")))?;
    let args = split_operands(operands)
        .into_iter()
        .map(|s| parse_operand(n, s, names))
        .collect::<Result<Vec<_>, _>>()?;
    if args.len() != operand_count(op) {
        let (want, got) = (operand_count(op), args.len());
        return Err(error(
            n,
            format!("`{opcode}` takes {want} operands, given {got}"),
        ));
    }
    Ok(Instr {
        guard,
        op,
        args,
        line: n,
        text: line.to_string(),
    })
}

/// How many operands `op` takes.
fn operand_count(op: Op) -> usize {
    match op {
        Op::Ret => 0,
        Op::Bar | Op::Bra => 1,
        Op::Ld { .. } | Op::St { .. } | Op::Cvta | Op::Mov(_) | Op::Cvt { .. } => 2,
        Op::Sqrt(_) | Op::Neg(_) | Op::Abs(_) | Op::Ex2 | Op::Lg2 => 2,
        Op::Mad(_) | Op::Fma(_) | Op::Selp(_) => 4,
        Op::ShflDown => 5,
        _ => 3,
    }
}

/// Splits at top-level commas (not inside `{}` or `[]`).
fn split_operands(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

fn parse_operand(n: usize, s: &str, names: &Names<'_>) -> Result<Operand, SimError> {
    if let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        let parts = split_operands(inner);
        let lanes = parts.into_iter().map(|p| parse_operand(n, p, names));
        return Ok(Operand::Vector(lanes.collect::<Result<_, _>>()?));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let (base, offset) = match inner.find(['+', '-']) {
            Some(at) => {
                let offset: i64 = inner[at..]
                    .trim_start_matches('+')
                    .parse()
                    .map_err(|_| error(n, format!("bad address offset in `{s}`")))?;
                (&inner[..at], offset)
            }
            None => (inner, 0),
        };
        let base = if let Some(&r) = names.regs.get(base) {
            Base::Reg(r)
        } else if let Some(&o) = names.shared.get(base) {
            Base::Shared(o)
        } else if let Some(p) = names.params.iter().position(|p| p == base) {
            Base::Param(p)
        } else {
            return Err(error(n, format!("unknown address base `{base}`")));
        };
        return Ok(Operand::Addr { base, offset });
    }
    if let Some(label) = s.strip_prefix('$') {
        let target = names
            .labels
            .get(&format!("${label}"))
            .ok_or_else(|| error(n, format!("unknown label `{s}`")))?;
        return Ok(Operand::Label(*target));
    }
    if s.starts_with('%') {
        let special = match s {
            "%tid.x" => Some(Special::TidX),
            "%ntid.x" => Some(Special::NtidX),
            "%ctaid.x" => Some(Special::CtaidX),
            "%nctaid.x" => Some(Special::NctaidX),
            _ => None,
        };
        if let Some(special) = special {
            return Ok(Operand::Special(special));
        }
        let reg = names
            .regs
            .get(s)
            .ok_or_else(|| error(n, format!("undeclared register {s}")))?;
        return Ok(Operand::Reg(*reg));
    }
    if let Some(&offset) = names.shared.get(s) {
        return Ok(Operand::Shared(offset));
    }
    parse_immediate(s).ok_or_else(|| error(n, format!("cannot read operand `{s}`")))
}

fn parse_immediate(s: &str) -> Option<Operand> {
    let bits = if let Some(hex) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        u64::from(u32::from_str_radix(hex, 16).ok()?)
    } else if let Some(hex) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(hex) = s.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else {
        s.parse::<i64>().ok()? as u64
    };
    Some(Operand::Imm(bits))
}

/// Decodes an opcode such as `ld.global.nc.v4.f32` or `cvt.rn.bf16.f32`.
fn decode(opcode: &str) -> Option<Op> {
    let parts: Vec<&str> = opcode.split('.').collect();
    let last = Ty::parse(parts.last()?);
    let has = |q: &str| parts.contains(&q);
    // Only the qualifiers the emitter writes: anything else (flushing, saturation, other
    // rounding modes, `.wide`, `.hi`, cache hints...) is refused rather than run wrongly.
    let float = matches!(last, Some(Ty::F32 | Ty::F64));
    let allowed: &[&str] = match parts[0] {
        "ld" => &["global", "shared", "param", "nc", "v2", "v4"],
        "st" => &["global", "shared", "v2", "v4"],
        "cvta" => &["to", "global"],
        // Float arithmetic must say `.rn` (without it ptxas may contract a multiply and an add).
        "add" | "sub" | "mul" if float => &["rn"],
        "mul" | "mad" => &["lo"],
        "fma" | "div" | "sqrt" | "cvt" => &["rn"],
        "min" | "max" => &["NaN"],
        "setp" => &["lt", "le", "gt", "ge", "eq", "ne", "neu", "nan"],
        "ex2" | "lg2" => &["approx"],
        "shfl" => &["sync", "down"],
        "bar" => &["sync"],
        "bra" => &["uni"],
        _ => &[],
    };
    let mut qualifiers = parts[1..].iter().filter(|p| Ty::parse(p).is_none());
    if qualifiers.any(|q| !allowed.contains(q)) {
        return None;
    }
    let required = match parts[0] {
        "fma" | "div" | "sqrt" => Some("rn"),
        "add" | "sub" | "mul" if float => Some("rn"),
        "mul" | "mad" => Some("lo"),
        _ => None,
    };
    if required.is_some_and(|q| !has(q)) {
        return None;
    }
    let ty = || last;
    Some(match parts[0] {
        "ld" | "st" => {
            let space = if has("param") {
                Space::Param
            } else if has("shared") {
                Space::Shared
            } else if has("nc") {
                Space::GlobalNc
            } else if has("global") {
                Space::Global
            } else {
                return None;
            };
            let lanes = if has("v4") {
                4
            } else if has("v2") {
                2
            } else {
                1
            };
            let ty = ty()?;
            if parts[0] == "ld" {
                Op::Ld { space, ty, lanes }
            } else {
                Op::St { space, ty, lanes }
            }
        }
        "cvta" if has("to") && has("global") => Op::Cvta,
        "mov" => Op::Mov(ty()?),
        "add" => Op::Binary(Bin::Add, ty()?),
        "sub" => Op::Binary(Bin::Sub, ty()?),
        "mul" => Op::Binary(Bin::Mul, ty()?),
        "mad" if has("lo") => Op::Mad(ty()?),
        "fma" if has("rn") => Op::Fma(ty()?),
        "div" if has("rn") => Op::Binary(Bin::Div, ty()?),
        "sqrt" if has("rn") => Op::Sqrt(ty()?),
        "neg" => Op::Neg(ty()?),
        "abs" => Op::Abs(ty()?),
        "min" => Op::Binary(Bin::Min { nan: has("NaN") }, ty()?),
        "max" => Op::Binary(Bin::Max { nan: has("NaN") }, ty()?),
        "shl" => Op::Binary(Bin::Shl, ty()?),
        "shr" => Op::Binary(Bin::Shr, ty()?),
        "and" => Op::Binary(Bin::And, ty()?),
        "or" => Op::Binary(Bin::Or, ty()?),
        "setp" => {
            let cmp = match *parts.get(1)? {
                "lt" => Cmp::Lt,
                "le" => Cmp::Le,
                "gt" => Cmp::Gt,
                "ge" => Cmp::Ge,
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "neu" => Cmp::Neu,
                "nan" => Cmp::Nan,
                _ => return None,
            };
            Op::Setp { cmp, ty: ty()? }
        }
        "selp" => Op::Selp(ty()?),
        "cvt" => {
            let n = parts.len();
            let from = Ty::parse(parts[n - 1])?;
            let to = Ty::parse(parts[n - 2])?;
            // Narrowing a float rounds: the emitter always rounds to nearest even.
            let narrows = matches!(to, Ty::F16 | Ty::Bf16) || (to == Ty::F32 && from == Ty::F64);
            if narrows != has("rn") {
                return None;
            }
            Op::Cvt { to, from }
        }
        "ex2" if has("approx") && last == Some(Ty::F32) => Op::Ex2,
        "lg2" if has("approx") && last == Some(Ty::F32) => Op::Lg2,
        "shfl" if has("sync") && has("down") && last == Some(Ty::U32) => Op::ShflDown,
        "bar" if has("sync") => Op::Bar,
        "bra" => Op::Bra,
        "ret" => Op::Ret,
        _ => return None,
    })
}
