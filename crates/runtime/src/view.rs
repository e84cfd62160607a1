//! A tensor seen as matrices, as PyTorch's Adafactor factors it: the last two dimensions are
//! the rows and columns, the leading ones count matrices; fewer than two dimensions make one row.

/// The most values of one kind (rows, columns) a tensor may have: as many f64 as memory can
/// address.
pub(crate) const MAX_VALUES: usize = isize::MAX as usize / size_of::<f64>();

/// How a tensor of some shape is seen by per-matrix, per-row and per-column values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct View {
    /// How many matrices (the product of the leading dimensions).
    pub(crate) matrices: usize,
    /// Rows of each matrix (dimension -2).
    pub(crate) rows: usize,
    /// Columns of each matrix (dimension -1).
    pub(crate) cols: usize,
    /// The number of dimensions.
    pub(crate) rank: usize,
}

impl View {
    /// The view of a tensor of `shape` holding `len` elements, or `None` when its matrices,
    /// rows over every matrix or columns over every matrix are more than memory could hold
    /// one value each of (a shape with a zero dimension may have very many: `[1 << 40, 0]`).
    pub(crate) fn of(shape: &[usize], len: usize) -> Option<View> {
        let view = match shape {
            [lead @ .., rows, cols] => View {
                matrices: lead.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?,
                rows: *rows,
                cols: *cols,
                rank: shape.len(),
            },
            _ => View {
                matrices: 1,
                rows: 1,
                cols: len,
                rank: shape.len(),
            },
        };
        let fits = |n: Option<usize>| n.is_some_and(|n| n <= MAX_VALUES);
        let rows = view.matrices.checked_mul(view.rows);
        let cols = view.matrices.checked_mul(view.cols);
        (fits(rows) && fits(cols)).then_some(view)
    }

    /// Rows over every matrix.
    pub(crate) fn total_rows(&self) -> usize {
        self.matrices * self.rows
    }

    /// Columns over every matrix.
    pub(crate) fn total_cols(&self) -> usize {
        self.matrices * self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::View;

    #[test]
    fn views_follow_pytorch_factoring() {
        let v = View::of(&[2, 3, 4], 24).unwrap();
        assert_eq!((v.matrices, v.rows, v.cols, v.rank), (2, 3, 4, 3));
        assert_eq!((v.total_rows(), v.total_cols()), (6, 8));
        assert_eq!(View::of(&[1 << 62, 0], 0), None);
        assert_eq!(View::of(&[usize::MAX, 0], 0), None);
        assert_eq!(View::of(&[1 << 33, 1 << 33, 0, 5], 0), None);
        let v = View::of(&[7], 7).unwrap();
        assert_eq!((v.matrices, v.rows, v.cols), (1, 1, 7));
        let v = View::of(&[], 1).unwrap();
        assert_eq!((v.matrices, v.rows, v.cols, v.rank), (1, 1, 1, 0));
        let v = View::of(&[0, 5], 0).unwrap();
        assert_eq!((v.total_rows(), v.total_cols()), (0, 5));
    }
}
