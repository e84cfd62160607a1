//! The element types a CUDA step takes (f32, f16, bf16) and their bytes on the device.

use cudarc::driver::DeviceRepr;
use half::{bf16, f16};
use optjit_ir::DType;

/// A float type whose device buffers a [`CudaOptimizer`](crate::CudaOptimizer) steps: its
/// [`Setup::dtype`](crate::Setup::dtype) must be this type's.
pub trait DeviceFloat: DeviceRepr + Copy {
    /// The dtype of its buffers.
    const DTYPE: DType;

    /// `x` in this type, rounded to nearest even.
    fn from_f32(x: f32) -> Self;
}

impl DeviceFloat for f32 {
    const DTYPE: DType = DType::F32;

    fn from_f32(x: f32) -> f32 {
        x
    }
}

impl DeviceFloat for f16 {
    const DTYPE: DType = DType::F16;

    fn from_f32(x: f32) -> f16 {
        f16::from_f32(x)
    }
}

impl DeviceFloat for bf16 {
    const DTYPE: DType = DType::BF16;

    fn from_f32(x: f32) -> bf16 {
        bf16::from_f32(x)
    }
}

/// `values` stored as `dtype` (f32, f16 or bf16, rounded to nearest even), as little-endian
/// bytes.
pub(crate) fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F16 => (values.iter())
            .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        DType::BF16 => (values.iter())
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// `x` stored as `dtype` (rounded to nearest even) and widened back to f32.
pub(crate) fn round_trip(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(x).to_f32(),
        DType::BF16 => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// The values of `bytes` stored as `dtype`, widened exactly to f32.
pub(crate) fn decode(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    let halves =
        || (bytes.chunks_exact(2)).map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")));
    match dtype {
        DType::F16 => halves().map(|h| f16::from_bits(h).to_f32()).collect(),
        DType::BF16 => halves().map(|h| bf16::from_bits(h).to_f32()).collect(),
        _ => (bytes.chunks_exact(4))
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_each_storage() {
        let values = [0.0f32, -1.5, 1.0 / 3.0, 65504.0, 1e-8, f32::INFINITY];
        assert_eq!(decode(DType::F32, &encode(DType::F32, &values)), values);
        for dtype in [DType::F16, DType::BF16] {
            let bytes = encode(dtype, &values);
            assert_eq!(bytes.len(), 2 * values.len());
            let back = decode(dtype, &bytes);
            // Exact for what the format holds, rounded to nearest for the rest.
            assert_eq!(back[..2], [0.0, -1.5]);
            assert_eq!(back[5], f32::INFINITY);
            let third = (back[2] - 1.0 / 3.0).abs();
            let ulp = if dtype == DType::F16 {
                2f32.powi(-12)
            } else {
                2f32.powi(-9)
            };
            assert!(third <= ulp / 2.0, "{dtype}: {}", back[2]);
        }
        assert_eq!(
            decode(DType::BF16, &encode(DType::BF16, &[1.0 + 2f32.powi(-8)])),
            [1.0]
        );
    }
}
