//! Per-element state storage: f32 buffers aligned to 64 bytes, as PyTorch's CPU allocator
//! aligns tensors, so that kernels stream through whole cache lines.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};

/// Alignment of every state buffer, in bytes.
pub const ALIGN: usize = 64;

/// A heap buffer of f32 with [`ALIGN`]-byte alignment.
pub struct AlignedBuf {
    /// Start of the allocation.
    base: *mut f32,
    /// Start of the data: `base` plus the stagger.
    ptr: *mut f32,
    len: usize,
    /// Elements skipped at the start of the allocation.
    stagger: usize,
}

// SAFETY: the buffer owns its memory exclusively, like a `Vec<f32>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[f32]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: f32) -> AlignedBuf {
        Self::staggered(len, value, 0)
    }

    /// `len` copies of `value`, starting `stagger_bytes` (a multiple of [`ALIGN`]) past an
    /// aligned address. Buffers streamed together should not all share the same address modulo
    /// 4 KiB: loads that follow stores to such addresses are falsely taken as dependent (4K
    /// aliasing), which halved the bandwidth of the step kernels on large tensors.
    pub fn staggered(len: usize, value: f32, stagger_bytes: usize) -> AlignedBuf {
        assert!(
            stagger_bytes.is_multiple_of(ALIGN),
            "stagger {stagger_bytes} is not a multiple of {ALIGN}"
        );
        let stagger = stagger_bytes / size_of::<f32>();
        if len == 0 {
            let dangling = std::ptr::NonNull::dangling().as_ptr();
            return AlignedBuf {
                base: dangling,
                ptr: dangling,
                len: 0,
                stagger: 0,
            };
        }
        let layout = Self::layout(len.saturating_add(stagger));
        // SAFETY: the layout has a nonzero size.
        let raw = unsafe { alloc(layout) };
        if raw.is_null() {
            handle_alloc_error(layout);
        }
        let base: *mut f32 = raw.cast();
        // SAFETY: the allocation holds len + stagger elements.
        let mut buf = AlignedBuf {
            base,
            ptr: unsafe { base.add(stagger) },
            len,
            stagger,
        };
        // Writing every element also touches every page now rather than during the first step.
        buf.fill(value);
        buf
    }

    /// Panics, like `Vec`, when `len` f32s cannot be addressed.
    fn layout(len: usize) -> Layout {
        len.checked_mul(size_of::<f32>())
            .and_then(|bytes| Layout::from_size_align(bytes, ALIGN).ok())
            .unwrap_or_else(|| panic!("a buffer of {len} f32 elements exceeds the address space"))
    }
}

impl Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: ptr is valid for len initialized f32s (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in deref, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl AsRef<[f32]> for AlignedBuf {
    fn as_ref(&self) -> &[f32] {
        self
    }
}

impl AsMut<[f32]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [f32] {
        self
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        let mut copy = AlignedBuf::staggered(self.len, 0.0, self.stagger * size_of::<f32>());
        copy.copy_from_slice(self);
        copy
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated in `staggered` with this layout.
            unsafe { dealloc(self.base.cast(), Self::layout(self.len + self.stagger)) } // checked at allocation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ALIGN, AlignedBuf};

    #[test]
    fn buffers_are_aligned_filled_and_cloneable() {
        for len in [0, 1, 17, 1 << 20] {
            let buf = AlignedBuf::filled(len, 0.5);
            assert!(len == 0 || (buf.as_ptr() as usize).is_multiple_of(ALIGN));
            assert!(buf.iter().all(|&x| x == 0.5));
            assert_eq!(buf.clone().len(), len);
            assert!(AlignedBuf::filled(len, 0.0).iter().all(|&x| x == 0.0));
        }
    }
}
