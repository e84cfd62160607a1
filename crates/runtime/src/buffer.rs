//! Per-element state storage: f32 buffers aligned to 64 bytes, as PyTorch's CPU allocator
//! aligns tensors, so that kernels stream through whole cache lines.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};

/// Alignment of every state buffer, in bytes.
pub const ALIGN: usize = 64;

/// A heap buffer of f32 with [`ALIGN`]-byte alignment.
pub struct AlignedBuf {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the buffer owns its memory exclusively, like a `Vec<f32>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[f32]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: f32) -> AlignedBuf {
        if len == 0 {
            return AlignedBuf {
                ptr: std::ptr::NonNull::dangling().as_ptr(),
                len: 0,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: the layout has a nonzero size.
        let raw = unsafe {
            if value.to_bits() == 0 {
                alloc_zeroed(layout)
            } else {
                alloc(layout)
            }
        };
        if raw.is_null() {
            handle_alloc_error(layout);
        }
        let mut buf = AlignedBuf {
            ptr: raw.cast(),
            len,
        };
        if value.to_bits() != 0 {
            buf.fill(value);
        } else {
            // Touch every page now rather than during the first step.
            buf.fill(0.0);
        }
        buf
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len * size_of::<f32>(), ALIGN).expect("state buffer size overflows")
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
        let mut copy = AlignedBuf::filled(self.len, 0.0);
        copy.copy_from_slice(self);
        copy
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated in `filled` with this layout.
            unsafe { dealloc(self.ptr.cast(), Self::layout(self.len)) }
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
