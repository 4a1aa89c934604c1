//! The host sum of every rank's part: f32, in rank order, so every rank gets the same bits.
use burn::tensor::TensorData;

/// The element-wise f32 sum of `parts` (one per rank, in rank order, of one length).
pub fn sum_in_rank_order(parts: &[TensorData]) -> Vec<f32> {
    let mut sum: Vec<f32> = Vec::new();
    for part in parts {
        let values = part
            .clone()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 part");
        match sum.is_empty() {
            true => sum = values,
            false => {
                assert_eq!(sum.len(), values.len(), "every rank's part has one shape");
                sum.iter_mut().zip(values).for_each(|(s, v)| *s += v);
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sum_in_f32() {
        let parts = [
            TensorData::new(vec![1.0f32, 2.0], [1, 2]),
            TensorData::new(vec![0.5f32, -2.0], [1, 2]),
        ];
        assert_eq!(sum_in_rank_order(&parts), vec![1.5, 0.0]);
    }
}
