// sga.cu: (to be written) the sga kernel family of the CUDA backend.
#include "cuda_common.h"

void cuda_fill_sga_ops(Backend *be) { (void)be; }
