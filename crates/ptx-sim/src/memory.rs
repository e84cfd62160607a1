//! Simulated global memory: allocations at fixed device addresses, with every access checked
//! (inside one allocation, naturally aligned) and, during a launch, the hazards that a GPU
//! would not report: two threads writing the same byte, a write to memory that the launch
//! also reads through the non-coherent cache, and a block reading what another block wrote.

use crate::SimError;

/// Where the first allocation starts: small addresses (null plus an offset) are never valid.
const BASE: u64 = 1 << 32;
/// Allocations are aligned to this, and separated by at least this much unmapped space.
const ALIGN: u64 = 256;

/// Who last touched a byte during the current launch.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Touch {
    /// 1 + the global index of the thread that wrote it (0: not written).
    writer: u32,
    /// The block of that thread.
    writer_block: u32,
    /// Whether some thread read it through `ld.global.nc`.
    read_nc: bool,
}

/// A thread of a launch, for hazard tracking.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who {
    /// Its index in the grid.
    pub thread: u32,
    /// Its block.
    pub block: u32,
}

/// The device's global memory.
#[derive(Default)]
pub struct Memory {
    bytes: Vec<u8>,
    /// `(start, len)` of each allocation, by increasing start (offsets into `bytes`).
    allocations: Vec<(u64, u64)>,
    touched: Vec<Touch>,
    /// The bytes touched in the current launch (so that the next one resets only those).
    dirty: Vec<usize>,
}

impl Memory {
    /// Allocates `len` zeroed bytes; returns their device address.
    pub fn alloc(&mut self, len: usize) -> u64 {
        let start = (self.bytes.len() as u64).div_ceil(ALIGN) * ALIGN + ALIGN;
        let len = len as u64;
        self.allocations.push((start, len));
        self.bytes.resize((start + len) as usize, 0);
        self.touched.resize(self.bytes.len(), Touch::default());
        BASE + start
    }

    /// Allocates a copy of `data`; returns its device address.
    pub fn upload(&mut self, data: &[u8]) -> u64 {
        let address = self.alloc(data.len());
        self.write_host(address, data)
            .expect("a fresh allocation holds its data");
        address
    }

    /// Copies `data` to `address` from the host (no hazard tracking).
    pub fn write_host(&mut self, address: u64, data: &[u8]) -> Result<(), SimError> {
        let at = self.check(address, data.len(), 1)?;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Copies `len` bytes at `address` to the host.
    pub fn read_host(&self, address: u64, len: usize) -> Result<Vec<u8>, SimError> {
        let at = self.check(address, len, 1)?;
        Ok(self.bytes[at..at + len].to_vec())
    }

    /// Forgets who touched what: a new launch starts.
    pub(crate) fn begin_launch(&mut self) {
        for at in self.dirty.drain(..) {
            self.touched[at] = Touch::default();
        }
    }

    /// A kernel's load of `len` bytes (aligned to `len`) by `who`.
    pub(crate) fn load(
        &mut self,
        address: u64,
        len: usize,
        nc: bool,
        who: Who,
    ) -> Result<&[u8], SimError> {
        let at = self.check(address, len, len)?;
        for (i, touch) in self.touched[at..at + len].iter_mut().enumerate() {
            let hazard = |message: String| SimError::Hazard { address, message };
            if touch.writer != 0 && nc {
                return Err(hazard(format!(
                    "thread {} reads through the non-coherent cache (ld.global.nc) memory that \
                     thread {} wrote in this launch",
                    who.thread,
                    touch.writer - 1
                )));
            }
            if touch.writer != 0 && touch.writer_block != who.block {
                return Err(hazard(format!(
                    "thread {} (block {}) reads what thread {} of block {} wrote in this launch \
                     (blocks run in no set order)",
                    who.thread,
                    who.block,
                    touch.writer - 1,
                    touch.writer_block
                )));
            }
            if nc && !touch.read_nc {
                if *touch == Touch::default() {
                    self.dirty.push(at + i);
                }
                touch.read_nc = true;
            }
        }
        Ok(&self.bytes[at..at + len])
    }

    /// A kernel's store of `data` (aligned to its length) by `who`.
    pub(crate) fn store(&mut self, address: u64, data: &[u8], who: Who) -> Result<(), SimError> {
        let at = self.check(address, data.len(), data.len())?;
        for (i, touch) in self.touched[at..at + data.len()].iter_mut().enumerate() {
            let hazard = |message: String| SimError::Hazard { address, message };
            if touch.read_nc {
                return Err(hazard(format!(
                    "thread {} writes memory that this launch reads through the non-coherent \
                     cache (ld.global.nc)",
                    who.thread
                )));
            }
            if touch.writer != 0 && touch.writer != who.thread + 1 {
                return Err(hazard(format!(
                    "threads {} and {} both write it in one launch (a data race)",
                    touch.writer - 1,
                    who.thread
                )));
            }
            if touch.writer == 0 {
                self.dirty.push(at + i);
            }
            touch.writer = who.thread + 1;
            touch.writer_block = who.block;
        }
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// The offset in `bytes` of `len` bytes at `address`, which must lie inside one allocation
    /// and be aligned to `align`.
    fn check(&self, address: u64, len: usize, align: usize) -> Result<usize, SimError> {
        let fault = |message: String| SimError::Fault { address, message };
        if !address.is_multiple_of(align as u64) {
            return Err(fault(format!(
                "a {len}-byte access must be aligned to {align} bytes"
            )));
        }
        let offset = address
            .checked_sub(BASE)
            .ok_or_else(|| fault("below every allocation".into()))?;
        let index = self
            .allocations
            .partition_point(|&(start, _)| start <= offset);
        let inside = index
            .checked_sub(1)
            .map(|i| self.allocations[i])
            .filter(|&(start, size)| offset + len as u64 <= start + size);
        match inside {
            Some(_) => Ok(offset as usize),
            None => Err(fault(format!(
                "{len} bytes there are not inside one allocation"
            ))),
        }
    }
}
