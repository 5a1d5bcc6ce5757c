// dct.h: the row DCT of the CUDA backend, used by the sga family (cuda/sga.cu). Internal to cuda/.
#pragma once

// out (R,T) = orthonormal DCT-II of each row of in (R,T) (inverse = 0), or its inverse, the
// orthonormal DCT-III (inverse = 1). Queued on the context stream; out may alias in.
void cuda_dct_rows(float *out, const float *in, int R, int T, int inverse);
