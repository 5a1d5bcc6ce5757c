// comm_nccl.h: the Comm interface (src/comm.h) over NCCL, for ranks that run the CUDA backend
// (one rank per GPU). Buffers are device pointers of the backend; device work is ordered on the
// backend's stream (backend_cuda_stream()) instead of blocking the host.
#pragma once
#include <stddef.h>
#include "../src/comm.h"

// Builds the NCCL communicators of this rank's pipeline, dp group and tied-embedding pair, their
// unique ids broadcast with MPI. Collective over MPI_COMM_WORLD; MPI must be initialised and the
// CUDA backend created on this rank's device first. pp must divide the world size.
Comm *comm_nccl_create(int pp, size_t elem_size);
