// optimizer.cu: (to be written) the optimizer kernel family of the CUDA backend.
#include "cuda_common.h"

void cuda_fill_optimizer_ops(Backend *be) { (void)be; }
