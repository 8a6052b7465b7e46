//! Pooling token vectors into one vector per text.

use ndarray::{Array2, ArrayView2, ArrayView3, Axis};

/// Attention-mask-weighted mean over the sequence axis, as in the notebook:
/// `sum(h * mask) / clamp(sum(mask), min=1e-9)`.  Sums are taken in f64 and
/// rounded once.  A row whose mask is all zeros gives a zero vector, never NaN.
pub fn mean_pool(hidden: ArrayView3<f32>, mask: ArrayView2<i64>) -> Array2<f32> {
    let (rows, len, dim) = hidden.dim();
    assert_eq!(
        mask.dim(),
        (rows, len),
        "mask shape must match hidden states"
    );
    let mut out = Array2::<f32>::zeros((rows, dim));
    let mut acc = vec![0f64; dim];
    for r in 0..rows {
        acc.iter_mut().for_each(|a| *a = 0.0);
        let mut weight = 0f64;
        for t in 0..len {
            let m = mask[(r, t)];
            if m == 0 {
                continue;
            }
            let w = m as f64;
            weight += w;
            for (a, &h) in acc.iter_mut().zip(hidden.slice(ndarray::s![r, t, ..])) {
                *a += w * h as f64;
            }
        }
        let denom = weight.max(1e-9);
        for (o, a) in out.row_mut(r).iter_mut().zip(&acc) {
            *o = (a / denom) as f32;
        }
    }
    out
}

/// The first token's vector of each row.
/// Element-wise maximum of each row's attended token vectors; padding never
/// wins.  A row with no attended token gives zeros.
pub fn max_pool(hidden: ArrayView3<f32>, mask: ArrayView2<i64>) -> Array2<f32> {
    let (rows, len, dim) = hidden.dim();
    assert_eq!(
        mask.dim(),
        (rows, len),
        "mask shape must match hidden states"
    );
    let mut out = Array2::<f32>::zeros((rows, dim));
    for r in 0..rows {
        let mut seen = false;
        let mut row = out.row_mut(r);
        for t in (0..len).filter(|&t| mask[(r, t)] != 0) {
            let h = hidden.slice(ndarray::s![r, t, ..]);
            if seen {
                row.zip_mut_with(&h, |o, &x| *o = o.max(x));
            } else {
                row.assign(&h);
                seen = true;
            }
        }
    }
    out
}

pub fn cls_pool(hidden: ArrayView3<f32>) -> Array2<f32> {
    hidden.index_axis(Axis(1), 0).to_owned()
}

/// Scales each row to unit L2 norm; a zero row stays zero.
pub fn l2_normalize(rows: &mut Array2<f32>) {
    for mut row in rows.rows_mut() {
        let norm = row
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|x| (x as f64 / norm) as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn mean_ignores_masked_positions() {
        let h = Array3::from_shape_vec((1, 3, 2), vec![1.0, 2.0, 3.0, 4.0, 100.0, 100.0]).unwrap();
        let m = array![[1i64, 1, 0]];
        assert_eq!(mean_pool(h.view(), m.view()), array![[2.0f32, 3.0]]);
    }

    #[test]
    fn mean_of_padded_row_equals_unpadded() {
        let h = Array3::from_shape_vec((2, 2, 1), vec![1.0, 3.0, 5.0, -7.0]).unwrap();
        let m = array![[1i64, 1], [1, 0]];
        assert_eq!(mean_pool(h.view(), m.view()), array![[2.0f32], [5.0]]);
    }

    #[test]
    fn max_ignores_padding_even_when_padding_is_larger() {
        let h =
            Array3::from_shape_vec((1, 3, 2), vec![1.0, -5.0, 3.0, -4.0, 100.0, 100.0]).unwrap();
        let m = array![[1i64, 1, 0]];
        assert_eq!(max_pool(h.view(), m.view()), array![[3.0f32, -4.0]]);
        let none = array![[0i64, 0, 0]];
        assert_eq!(max_pool(h.view(), none.view()), array![[0.0f32, 0.0]]);
    }

    #[test]
    fn empty_mask_gives_zeros_not_nan() {
        let h = Array3::from_elem((1, 2, 3), 1.5f32);
        let m = array![[0i64, 0]];
        let p = mean_pool(h.view(), m.view());
        assert!(p.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn cls_and_normalize() {
        let h = Array3::from_shape_vec((1, 2, 2), vec![3.0, 4.0, 9.0, 9.0]).unwrap();
        let mut c = cls_pool(h.view());
        assert_eq!(c, array![[3.0f32, 4.0]]);
        l2_normalize(&mut c);
        assert_eq!(c, array![[0.6f32, 0.8]]);
        let mut z = Array2::<f32>::zeros((1, 2));
        l2_normalize(&mut z);
        assert!(z.iter().all(|x| *x == 0.0));
    }
}
