// attention.cu: (to be written) the attention kernel family of the CUDA backend.
#include "cuda_common.h"

void cuda_fill_attention_ops(Backend *be) { (void)be; }
