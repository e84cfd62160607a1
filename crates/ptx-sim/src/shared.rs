//! A block's shared memory, with the races a missing `bar.sync` allows reported: a thread
//! reading what another wrote, or writing what another read or wrote, since the last barrier.

use crate::SimError;

/// Threads reading a byte since the last barrier.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readers {
    None,
    One(usize),
    Many,
}

/// Who touched a byte, and in which barrier interval.
#[derive(Clone, Copy)]
struct Touch {
    epoch: u64,
    writer: Option<usize>,
    readers: Readers,
}

impl Touch {
    /// Forgets the touches of earlier barrier intervals.
    fn since(&mut self, epoch: u64) {
        if self.epoch != epoch {
            *self = Touch {
                epoch,
                writer: None,
                readers: Readers::None,
            };
        }
    }
}

/// One block's shared memory.
pub(crate) struct SharedMemory {
    bytes: Vec<u8>,
    touched: Vec<Touch>,
    /// Barriers completed so far.
    epoch: u64,
}

impl SharedMemory {
    pub(crate) fn new(len: usize) -> SharedMemory {
        let untouched = Touch {
            epoch: 0,
            writer: None,
            readers: Readers::None,
        };
        SharedMemory {
            bytes: vec![0; len],
            touched: vec![untouched; len],
            epoch: 0,
        }
    }

    /// Every thread of the block passed a barrier.
    pub(crate) fn barrier(&mut self) {
        self.epoch += 1;
    }

    /// Thread `thread` reads `len` bytes at offset `at` (aligned to `len`).
    pub(crate) fn load(&mut self, at: usize, len: usize, thread: usize) -> Result<&[u8], SimError> {
        self.check(at, len)?;
        let epoch = self.epoch;
        for touch in &mut self.touched[at..at + len] {
            touch.since(epoch);
            if let Some(writer) = touch.writer.filter(|&w| w != thread) {
                return Err(race(
                    at,
                    format!("thread {thread} reads what thread {writer} wrote"),
                ));
            }
            touch.readers = match touch.readers {
                Readers::None => Readers::One(thread),
                Readers::One(t) if t == thread => Readers::One(t),
                _ => Readers::Many,
            };
        }
        Ok(&self.bytes[at..at + len])
    }

    /// Thread `thread` writes `data` at offset `at` (aligned to its length).
    pub(crate) fn store(&mut self, at: usize, data: &[u8], thread: usize) -> Result<(), SimError> {
        self.check(at, data.len())?;
        let epoch = self.epoch;
        for touch in &mut self.touched[at..at + data.len()] {
            touch.since(epoch);
            if let Some(writer) = touch.writer.filter(|&w| w != thread) {
                return Err(race(
                    at,
                    format!("threads {writer} and {thread} both write it"),
                ));
            }
            match touch.readers {
                Readers::One(reader) if reader != thread => {
                    return Err(race(
                        at,
                        format!("thread {thread} overwrites what thread {reader} read"),
                    ));
                }
                Readers::Many => {
                    return Err(race(
                        at,
                        format!("thread {thread} overwrites what other threads read"),
                    ));
                }
                _ => {}
            }
            touch.writer = Some(thread);
        }
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn check(&self, at: usize, len: usize) -> Result<(), SimError> {
        let outside = at.checked_add(len).is_none_or(|end| end > self.bytes.len());
        if outside || !at.is_multiple_of(len) {
            return Err(SimError::Fault {
                address: at as u64,
                message: format!(
                    "a {len}-byte shared access out of the block's {} bytes, or misaligned",
                    self.bytes.len()
                ),
            });
        }
        Ok(())
    }
}

fn race(at: usize, message: String) -> SimError {
    SimError::Hazard {
        address: at as u64,
        message: format!("shared memory, with no barrier between: {message}"),
    }
}
