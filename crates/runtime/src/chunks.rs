//! The chunk table a kernel walks: every tensor of every group cut into fixed-size chunks, and
//! the split of those chunks between threads.

use crate::jit::KernelFn;
use crate::pool::Pool;
use crate::view::View;
use optjit_kernels_gen::ChunkAbi;

/// Elements per chunk: big enough to amortize the per-chunk setup, small enough to balance
/// threads on a single large tensor.
pub const CHUNK_ELEMS: usize = 1 << 16;

/// Below this many elements a step runs on the calling thread alone.
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// A chunk table under construction: records of `[len, scalar_row, buffer addresses...]`
/// (see `optjit_kernels_gen::ChunkAbi`), host or device addresses alike.
pub(crate) struct ChunkTable<'a> {
    pub(crate) words: &'a mut Vec<u64>,
    /// Per record: its element count.
    pub(crate) lens: &'a mut Vec<usize>,
    /// Per record: the tensor it belongs to.
    pub(crate) owners: &'a mut Vec<usize>,
    /// Per record: its row (or column, in a column walk) over all its tensor's matrices, for
    /// records pushed by [`ChunkTable::push_rows`] and [`ChunkTable::push_columns`].
    pub(crate) entities: &'a mut Vec<usize>,
    pub(crate) n_buffers: usize,
    /// Elements per chunk (the last chunk of a tensor may be shorter).
    pub(crate) chunk_elems: usize,
    /// Per buffer, the bytes of one stored element (see `Kernel::storage`).
    pub(crate) elem_bytes: &'a [usize],
    /// Partials the column-walk records pushed so far write (see `ChunkTable::push_columns`).
    pub(crate) partials: usize,
}

impl ChunkTable<'_> {
    /// Adds the chunks of tensor `tensor`, of `len` f32 elements; `base[i]` is the address of
    /// element 0 in buffer i, `row` that of its scalar row.
    pub(crate) fn push_tensor(&mut self, tensor: usize, len: usize, row: u64, base: &[u64]) {
        debug_assert_eq!(base.len(), self.n_buffers);
        let mut start = 0;
        while start < len {
            let n = self.chunk_elems.min(len - start);
            self.words.push(n as u64);
            self.words.push(row);
            // start < len: the address stays inside every buffer of this tensor.
            let offsets = self.elem_bytes.iter().map(|&size| (start * size) as u64);
            self.words
                .extend(base.iter().zip(offsets).map(|(&p, o)| p + o));
            self.lens.push(n);
            self.owners.push(tensor);
            start += n;
        }
    }

    /// Adds the chunks of tensor `tensor` seen as `view`, cut so that none crosses a row: row
    /// `r` (over all matrices) reads the scalar row at `row(r)`. `base` as for
    /// [`ChunkTable::push_tensor`]; a buffer marked in `per_col` holds one value per column of
    /// every matrix instead of one per element.
    pub(crate) fn push_rows(
        &mut self,
        tensor: usize,
        view: &View,
        row: impl Fn(usize) -> u64,
        base: &[u64],
        per_col: &[bool],
    ) {
        let cols = view.cols;
        for r in 0..view.total_rows() {
            let matrix = r / view.rows;
            let mut start = 0;
            while start < cols {
                let n = self.chunk_elems.min(cols - start);
                self.words.push(n as u64);
                self.words.push(row(r));
                let (element, column) = (r * cols + start, matrix * cols + start);
                let buffers = base.iter().zip(per_col).zip(self.elem_bytes);
                self.words.extend(buffers.map(|((&p, &c), &size)| match c {
                    true => p + (column * size) as u64,
                    false => p + (element * size) as u64,
                }));
                self.lens.push(n);
                self.owners.push(tensor);
                self.entities.push(r);
                start += n;
            }
        }
    }

    /// Adds the records of a column walk (see `ChunkAbi`) over tensor `tensor` seen as `view`:
    /// each holds `ChunkAbi::tile_rows` whole rows of one matrix (about `chunk_elems`
    /// elements; fewer rows at its end) and reads
    /// the scalar row at `row`. Its entity is the index of its first element in the tensor, its
    /// `lens` entry its element count (for balancing threads); `partials(rows, cols)` says how
    /// many partials a record writes, counted in `self.partials`.
    pub(crate) fn push_columns(
        &mut self,
        tensor: usize,
        view: &View,
        row: u64,
        base: &[u64],
        partials: impl Fn(usize, usize) -> usize,
    ) {
        // A column walk reads tensors only (no scratch or column values): one element size.
        let size = self.elem_bytes.first().copied().unwrap_or(size_of::<f32>());
        debug_assert!(self.elem_bytes.iter().all(|&s| s == size));
        let stride = (view.cols * size) as u64;
        let tile = ChunkAbi::tile_rows(view.cols, self.chunk_elems);
        for m in 0..view.matrices {
            for r0 in (0..view.rows).step_by(tile) {
                let rows = tile.min(view.rows - r0);
                let first = (m * view.rows + r0) * view.cols;
                let offset = (first * size) as u64;
                self.words.push(rows as u64);
                self.words.push(row);
                self.words.extend(base.iter().map(|&p| p + offset));
                self.words
                    .extend([stride, view.cols as u64, self.partials as u64]);
                self.partials += partials(rows, view.cols);
                self.lens.push(rows * view.cols);
                self.owners.push(tensor);
                self.entities.push(first);
            }
        }
    }
}

/// How many threads a step can use at most (the calling thread plus the pool's workers).
pub fn max_threads() -> usize {
    Pool::global().max_parts()
}

/// Runs `kernel` over every record of `table`, split into contiguous ranges of about equal
/// element counts, one per thread of the persistent pool (the calling thread takes the first).
///
/// `partials` receives the kernel's per-record partials (see `optjit_kernels_gen::ChunkAbi`): it
/// holds `lens.len()` rows of the kernel's reduction count (empty for a kernel that reduces
/// nothing); threads write disjoint rows.
///
/// # Safety
/// Every pointer in `table` must be valid for the record's length, and no two records of the
/// same call may write overlapping memory.
pub(crate) unsafe fn run(
    kernel: KernelFn,
    table: &[u64],
    lens: &[usize],
    threads: usize,
    partials: &mut [f64],
) {
    let pool = Pool::global();
    let total: usize = lens.iter().sum();
    let parts = if total < PARALLEL_MIN_ELEMS {
        1
    } else {
        threads.clamp(1, lens.len().max(1)).min(pool.max_parts())
    };
    let ranges = split(lens, total, parts);
    // As an address, so that the closure can be shared between threads.
    let partials = partials.as_mut_ptr() as usize;
    pool.run(ranges.len(), &|part| {
        let (begin, end) = ranges[part];
        // SAFETY: forwarded from the caller; ranges are disjoint, and so are the partial rows
        // of their records.
        unsafe {
            kernel(
                table.as_ptr(),
                begin as u64,
                end as u64,
                partials as *mut f64,
            )
        }
    });
}

/// Cuts `0..lens.len()` into `parts` contiguous ranges holding about `total / parts` elements.
fn split(lens: &[usize], total: usize, parts: usize) -> Vec<(usize, usize)> {
    let mut ranges = Vec::with_capacity(parts);
    let (mut begin, mut acc) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        acc += len;
        let boundary = total * (ranges.len() + 1) / parts;
        if acc >= boundary && ranges.len() + 1 < parts {
            ranges.push((begin, i + 1));
            begin = i + 1;
        }
    }
    ranges.push((begin, lens.len()));
    ranges
}

#[cfg(test)]
mod tests {
    use super::{ChunkTable, split};
    use crate::view::View;

    /// Runs `push` on an empty table of buffers whose elements take `sizes` bytes, with
    /// chunks of `chunk_elems` elements; returns the words and the partials counted.
    fn table(
        sizes: &[usize],
        chunk_elems: usize,
        push: impl FnOnce(&mut ChunkTable<'_>),
    ) -> (Vec<u64>, usize) {
        let (mut words, mut lens, mut owners, mut entities) = (vec![], vec![], vec![], vec![]);
        let mut table = ChunkTable {
            words: &mut words,
            lens: &mut lens,
            owners: &mut owners,
            entities: &mut entities,
            n_buffers: sizes.len(),
            chunk_elems,
            elem_bytes: sizes,
            partials: 0,
        };
        push(&mut table);
        let partials = table.partials;
        (words, partials)
    }

    #[test]
    fn records_offset_each_buffer_by_its_element_size() {
        // A bf16 param (2 bytes) and an f32 scratch buffer (4 bytes), 20 elements: 8 + 8 + 4.
        let (words, _) = table(&[2, 4], 8, |t| {
            t.push_tensor(0, 20, 0x900, &[0x1000, 0x2000])
        });
        let record = |r: usize| &words[4 * r..4 * r + 4];
        assert_eq!(record(0), [8, 0x900, 0x1000, 0x2000]);
        assert_eq!(record(1), [8, 0x900, 0x1000 + 16, 0x2000 + 32]);
        assert_eq!(record(2), [4, 0x900, 0x1000 + 32, 0x2000 + 64]);

        // Row-aligned: two 3 x 5 matrices of bf16, a column-value buffer of f32.
        let view = View::of(&[2, 3, 5], 30).unwrap();
        let (words, _) = table(&[2, 4], 8, |t| {
            let row = |r: usize| 0x900 + r as u64;
            t.push_rows(0, &view, row, &[0x1000, 0x2000], &[false, true])
        });
        assert_eq!(words.len(), 4 * 6, "one record per row");
        // Row 4 is row 1 of matrix 1: element 20, columns of matrix 1 from 5.
        assert_eq!(&words[16..20], [5, 0x904, 0x1000 + 2 * 20, 0x2000 + 4 * 5]);
    }

    #[test]
    fn column_walk_records_use_the_element_size_for_rows_and_starts() {
        // 5000 x 20 bf16 in records of 64K elements: 3276 rows (ChunkAbi::tile_rows), then 1724.
        let view = View::of(&[5000, 20], 100_000).unwrap();
        let (words, partials) = table(&[2, 2], 1 << 16, |t| {
            let per_record = |rows: usize, cols: usize| 1 + rows + cols;
            t.push_columns(0, &view, 0x900, &[0x1000, 0x2000], per_record)
        });
        let words_per_record = 2 + 2 + 3;
        assert_eq!(words.len(), 2 * words_per_record);
        let (first, second) = words.split_at(words_per_record);
        assert_eq!(first, [3276, 0x900, 0x1000, 0x2000, 40, 20, 0]);
        let start = 2 * 3276 * 20;
        let expected = [1724, 0x900, 0x1000 + start, 0x2000 + start, 40, 20];
        assert_eq!(second[..6], expected);
        assert_eq!(
            second[6],
            1 + 3276 + 20,
            "the second record's partials follow the first's"
        );
        assert_eq!(partials, (1 + 3276 + 20) + (1 + 1724 + 20));
        // A smaller budget (OPTJIT_CUDA_CHUNK_ELEMS on the GPU) gives shorter records.
        let (words, _) = table(&[2, 2], 1000, |t| {
            t.push_columns(0, &view, 0x900, &[0x1000, 0x2000], |_, _| 0)
        });
        assert_eq!(words.len(), 5000 / 50 * words_per_record);
        assert_eq!(words[0], 50);
    }

    #[test]
    fn split_balances_elements_and_covers_every_record() {
        let lens = vec![10; 10];
        assert_eq!(split(&lens, 100, 2), vec![(0, 5), (5, 10)]);
        assert_eq!(split(&lens, 100, 1), vec![(0, 10)]);
        let uneven = vec![90, 5, 5];
        assert_eq!(split(&uneven, 100, 2), vec![(0, 1), (1, 3)]);
        let ranges = split(&lens, 100, 3);
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(10));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
