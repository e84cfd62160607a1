// optjit's hand-fused CUDA C AdamW (PyTorch AdamW semantics, fp32), the GPU bench's yardstick:
// every tensor flattened into one buffer, one launch, float4 loads and stores, grid-stride.
// Scalars come precomputed from the host as PyTorch's fused kernel computes them:
//   lr_wd = 1 - lr * weight_decay, step_size = lr / (1 - beta1^t),
//   inv_bc2_sqrt = 1 / sqrt(1 - beta2^t).
extern "C" __global__ void adamw_reference(float4* __restrict__ param,
                                           const float4* __restrict__ grad,
                                           float4* __restrict__ exp_avg,
                                           float4* __restrict__ exp_avg_sq,
                                           unsigned long long n4,
                                           float lr_wd, float beta1, float beta2,
                                           float step_size, float inv_bc2_sqrt, float eps) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += stride) {
        float4 p = param[i], g = grad[i], m = exp_avg[i], v = exp_avg_sq[i];
#define LANE(x)                                                         \
        p.x *= lr_wd;                                                   \
        m.x = fmaf(beta1, m.x - g.x, g.x);                              \
        v.x = fmaf(beta2, v.x - g.x * g.x, g.x * g.x);                  \
        p.x -= step_size * m.x / (sqrtf(v.x) * inv_bc2_sqrt + eps);
        LANE(x) LANE(y) LANE(z) LANE(w)
#undef LANE
        param[i] = p; exp_avg[i] = m; exp_avg_sq[i] = v;
    }
}
