// gelu.cu: a GELU MLP's two dense layers with their GELU (tanh approximation) on the CUDA backend:
// the product through cuBLAS (matmul.cu), then GELU and its slope (which backward reads instead of
// the pre-activation), or the slope times the product's gradient, as one grid-stride pass. The CPU
// twin applies the same math to each product tile while it is in cache (src/cpu/matmul.inc); here
// the pass is memory bound and kept separate from cuBLAS (a cuBLASLt GELU epilogue would save it,
// once a GPU run can show the gain).
//
// GELU uses the CPU twin's exact form, x / (1 + exp(-2u)) = x * 0.5 (1 + tanh(u)),
// u = sqrt(2/pi) (x + 0.044715 x^3), with expf (full precision, not the __expf intrinsic) so GPU and
// CPU agree to a few ulp.
#include "reduce.cuh"

#define GELU_THREADS 256
#define GELU_SCALE 0.7978845608028654f   // sqrt(2 / pi)
#define GELU_CUBIC 0.044715f

// act (n) = gelu(x), and x (n) becomes gelu'(x), in place; with s = sigmoid(2u):
// gelu(x) = x s, gelu'(x) = d/dx [x s] = s + x 2 s (1 - s) du/dx
static __global__ void gelu_act_slope_kernel(float *act, float *x_slope, size_t n) {
    GRID_STRIDE(i, n) {
        float x = x_slope[i];
        float u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
        float s = 1.0f / (1.0f + expf(-2.0f * u));
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * x * x);
        act[i] = x * s;
        x_slope[i] = s + x * 2.0f * s * (1.0f - s) * du;
    }
}

// d (n) *= slope (n)
static __global__ void gelu_slope_apply_kernel(float *d, const float *slope, size_t n) {
    GRID_STRIDE(i, n) d[i] *= slope[i];
}

// With pre = inp (N,C) weight^T + bias: act (N,OC) = gelu(pre), slope (N,OC) = gelu'(pre) (the
// product lands in slope and is overwritten there)
void cuda_matmul_gelu_forward(void *slope, void *act, const void *inp, const void *weight, const void *bias, int N, int C, int OC) {
    cuda_matmul_forward(slope, inp, weight, bias, N, C, OC);
    size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(OC > 0 ? OC : 0);
    if (n == 0) return;
    gelu_act_slope_kernel<<<stride_grid(n, GELU_THREADS), GELU_THREADS, 0, cuda_context()->stream>>>((float *)act,
                                                                                                    (float *)slope, n);
    cudaCheckLaunch();
}

// dpre (=) (N,C) = slope (dout (N,OC) weight (OC,C)); dweight (+=), dbias (+=) as cuda_matmul_backward
void cuda_matmul_backward_gelu(void *dpre, void *dweight, void *dbias, const void *dout, const void *inp, const void *weight,
                               const void *slope, int N, int C, int OC) {
    cuda_matmul_backward(dpre, GRAD_ASSIGN, dweight, dbias, dout, inp, weight, N, C, OC);
    size_t n = (size_t)(N > 0 ? N : 0) * (size_t)(C > 0 ? C : 0);
    if (n == 0) return;
    gelu_slope_apply_kernel<<<stride_grid(n, GELU_THREADS), GELU_THREADS, 0, cuda_context()->stream>>>((float *)dpre,
                                                                                                      (const float *)slope, n);
    cudaCheckLaunch();
}
