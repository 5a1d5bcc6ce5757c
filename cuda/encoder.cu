// encoder.cu: (to be written) the encoder kernel family of the CUDA backend.
#include "cuda_common.h"

void cuda_fill_encoder_ops(Backend *be) { (void)be; }
