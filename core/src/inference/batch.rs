//! Building padded input tensors from tokenized texts.

use ndarray::Array2;

use crate::inference::tokenize::Encoded;

/// Input tensors for one micro-batch, padded to its own longest sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Array2<i64>,
    pub attention_mask: Array2<i64>,
    pub token_type_ids: Array2<i64>,
}

impl Batch {
    /// Pads every row with `pad_id` (mask 0, type 0) to the longest row.
    pub fn pad(rows: &[&Encoded], pad_id: i64) -> Batch {
        let width = rows.iter().map(|e| e.len()).max().unwrap_or(0);
        let shape = (rows.len(), width);
        let mut input_ids = Array2::from_elem(shape, pad_id);
        let mut attention_mask = Array2::zeros(shape);
        let mut token_type_ids = Array2::zeros(shape);
        for (r, e) in rows.iter().enumerate() {
            for (c, (&id, &ty)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                input_ids[(r, c)] = id;
                attention_mask[(r, c)] = 1;
                token_type_ids[(r, c)] = ty;
            }
        }
        Batch {
            input_ids,
            attention_mask,
            token_type_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_longest_row_with_mask() {
        let a = Encoded {
            ids: vec![2, 5, 3],
            type_ids: vec![0, 0, 0],
        };
        let b = Encoded {
            ids: vec![2, 3],
            type_ids: vec![0, 0],
        };
        let batch = Batch::pad(&[&a, &b], 0);
        assert_eq!(batch.input_ids, ndarray::array![[2, 5, 3], [2, 3, 0]]);
        assert_eq!(batch.attention_mask, ndarray::array![[1, 1, 1], [1, 1, 0]]);
        assert_eq!(batch.token_type_ids, ndarray::array![[0, 0, 0], [0, 0, 0]]);
        assert_eq!(batch.input_ids.len(), 6);
    }

    #[test]
    fn single_row_is_not_padded() {
        let a = Encoded {
            ids: vec![2, 5, 3],
            type_ids: vec![0, 0, 0],
        };
        let batch = Batch::pad(&[&a], 0);
        assert_eq!(batch.input_ids.dim(), (1, 3));
        assert!(batch.attention_mask.iter().all(|&m| m == 1));
    }
}
