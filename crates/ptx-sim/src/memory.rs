//! Simulated global memory: allocations at fixed device addresses, with every access checked
//! (inside one allocation, naturally aligned) and, during a launch, the hazards that a GPU
//! would not report: two threads writing the same byte, and a write to memory that the launch
//! also reads through the non-coherent cache.

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
    /// Whether some thread read it through `ld.global.nc`.
    read_nc: bool,
}

/// The device's global memory.
#[derive(Default)]
pub struct Memory {
    bytes: Vec<u8>,
    /// `(start, len)` of each allocation, by increasing start (offsets into `bytes`).
    allocations: Vec<(u64, u64)>,
    touched: Vec<Touch>,
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
        self.touched.fill(Touch::default());
    }

    /// A kernel's load of `len` bytes (aligned to `len`).
    pub(crate) fn load(
        &mut self,
        address: u64,
        len: usize,
        nc: bool,
        thread: u32,
    ) -> Result<&[u8], SimError> {
        let at = self.check(address, len, len)?;
        for touch in &mut self.touched[at..at + len] {
            if nc && touch.writer != 0 {
                return Err(SimError::Hazard {
                    address,
                    message: format!(
                        "thread {thread} reads through the non-coherent cache (ld.global.nc) \
                         memory that thread {} wrote in this launch",
                        touch.writer - 1
                    ),
                });
            }
            touch.read_nc |= nc;
        }
        Ok(&self.bytes[at..at + len])
    }

    /// A kernel's store of `data` (aligned to its length) by `thread`.
    pub(crate) fn store(&mut self, address: u64, data: &[u8], thread: u32) -> Result<(), SimError> {
        let at = self.check(address, data.len(), data.len())?;
        for touch in &mut self.touched[at..at + data.len()] {
            if touch.read_nc {
                return Err(SimError::Hazard {
                    address,
                    message: format!(
                        "thread {thread} writes memory that this launch reads through the \
                         non-coherent cache (ld.global.nc)"
                    ),
                });
            }
            if touch.writer != 0 && touch.writer != thread + 1 {
                return Err(SimError::Hazard {
                    address,
                    message: format!(
                        "threads {} and {thread} both write it in one launch (a data race)",
                        touch.writer - 1
                    ),
                });
            }
            touch.writer = thread + 1;
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
