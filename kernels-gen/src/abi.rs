//! The chunk-table layout every emitted kernel walks, shared by the Cranelift and PTX emitters.

/// The calling convention and chunk-table layout of every emitted kernel.
///
/// The Cranelift emitter ([`emit_clif`](crate::emit_clif)) builds a host function
///
/// ```text
/// extern "C" fn(table: *const u64, begin: u64, end: u64, partials: *mut f64)
/// ```
///
/// and the PTX emitter ([`emit_ptx`](crate::emit_ptx)) a kernel entry
///
/// ```text
/// .visible .entry <name>(.param .u64 table, .param .u64 n_records, .param .u64 partials)
/// ```
///
/// Both walk the same table. `table` is an array of chunk records,
/// [`ChunkAbi::record_words`]`(kernel.buffers.len())` 64-bit words each (stride
/// `(2 + kernel.buffers.len()) * 8` bytes):
///
/// | word | meaning |
/// | --- | --- |
/// | [`ChunkAbi::LEN_WORD`] = 0 | `len`: number of elements in this chunk (may be 0) |
/// | [`ChunkAbi::SCALARS_WORD`] = 1 | `*const f32`: the chunk's scalar row, `kernel.n_scalars` values: its group's, or its tensor's when the step has per-tensor values |
/// | [`ChunkAbi::BUFFERS_WORD`] + i | `*mut f32`: element 0 of this chunk in buffer `i` (`kernel.buffers` order) |
/// | [`ChunkAbi::BUFFERS_WORD`] + `kernel.buffers.len()` | column walks only ([`Walk::Columns`](optjit_ir::Walk)): `stride`, the distance in bytes between two rows |
/// | [`ChunkAbi::BUFFERS_WORD`] + `kernel.buffers.len()` + 1 | column walks only: `width`, the columns of each row |
/// | [`ChunkAbi::BUFFERS_WORD`] + `kernel.buffers.len()` + 2 | column walks only: `first`, the index in `partials` of the record's first partial |
///
/// Element `i` of a chunk is at byte `size * i` from its buffer pointers, `size` the bytes of
/// one stored element: 4 for f32 and for column values, 2 for f16 and bf16
/// ([`Kernel::elem_dtype`](crate::Kernel::elem_dtype)). In a column walk
/// ([`Kernel::record_words`](crate::Kernel::record_words) counts the three extra words) a record
/// is `len` whole rows of `width` columns: element (row `i`, column `c`) is at byte
/// `stride * i + size * c`. Its partials start at `partials[first]`, slot after slot, each as its
/// [`ReduceScope`](crate::ReduceScope) says: one for the record, one per row (`len`), or one per
/// column (`width`) ([`Kernel::column_walk_partials`](crate::Kernel::column_walk_partials)).
/// Column partials are added into, so the caller zero-fills them (the Cranelift emitter sums
/// each record's column as f32 in the first half of its slot and widens it in place at the
/// record's end; the PTX emitter adds in f64).
///
/// A kernel with reductions ([`Kernel::reductions`](crate::Kernel::reductions), `n` of them)
/// that walks elements writes, for every record `r` with `len > 0`, the partial of slot `j` (the fold of that
/// record's values, see [`ReduceOp`](crate::ReduceOp)) to `partials[r * n + j]`, an f64; it never
/// reads `partials`, and writes nothing for an empty record, so the caller fills the array with
/// each op's identity before the call and folds the partials in record order after it. The
/// order in which a target folds the values of one record is fixed, so the same inputs always
/// give the same partials. A kernel without reductions ignores `partials` (pass 0).
///
/// The host function processes records `begin..end` (`begin >= end` does nothing); its pointers
/// are host addresses. The PTX entry processes records `0..n_records`, block `b` of a grid of
/// `g` blocks taking records `b, b + g, ...` with all the block's threads; there the table, the
/// scalar rows and the buffers are device (global-memory) addresses, and the table and the
/// scalar rows must stay unchanged during the launch (they are read through the non-coherent
/// cache, as are the buffers that the kernel reads but never stores).
///
/// Pointers need only element alignment (the PTX entry takes a vector path of 4 elements for
/// records whose buffer pointers are all aligned to 4 elements, and a scalar path otherwise); the scalar row
/// is not read when `len` is 0 or the kernel has no scalars. Records of one call must not write
/// overlapping memory, and the buffers of a record must not overlap (a group of elements is
/// loaded from every buffer before any is stored). Host functions that compute `exp`, `log` or
/// `pow` import [`LIBCALLS`](crate::LIBCALLS).
#[derive(Clone, Copy, Debug)]
pub struct ChunkAbi;

impl ChunkAbi {
    /// Word holding the element count.
    pub const LEN_WORD: usize = 0;
    /// Word holding the scalar-row pointer.
    pub const SCALARS_WORD: usize = 1;
    /// Word holding the pointer of buffer 0; buffer i follows at `BUFFERS_WORD + i`.
    pub const BUFFERS_WORD: usize = 2;
    /// How many whole rows of `cols` columns one record of a column walk holds: about
    /// `chunk_elems` elements, at least one row, and at most 4096 so that no f32 column sum
    /// adds more values than an element walk's lane does.
    pub const fn tile_rows(cols: usize, chunk_elems: usize) -> usize {
        let rows = chunk_elems / if cols == 0 { 1 } else { cols };
        if rows == 0 {
            1
        } else if rows > 4096 {
            4096
        } else {
            rows
        }
    }

    /// Words per record for a kernel with `n_buffers` buffers.
    pub const fn record_words(n_buffers: usize) -> usize {
        Self::BUFFERS_WORD + n_buffers
    }
}
