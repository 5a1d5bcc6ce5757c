// comm_groups.h: what every transport of comm.h shares. The rank layout (world = dp x pp, rank =
// dp_index * pp + stage), the MPI groups that follow from it, and the host-scalar reductions,
// which travel over MPI whatever moves the tensors (MPI on the CPU, NCCL on the GPU).
#pragma once
#include <mpi.h>
#include <stddef.h>
#include "comm.h"

typedef struct {
    MPI_Comm pipeline;   // ranks of this dp replica, rank = stage
    MPI_Comm dp;         // ranks holding this stage, rank = dp_index
    MPI_Comm tie;        // {first, last} stage of this pipeline; MPI_COMM_NULL elsewhere or when pp = 1
} CommGroups;

// A new Comm called `name` with its layout filled in, `impl` attached and the host-scalar ops set.
// `impl` must begin with the CommGroups that this call splits off MPI_COMM_WORLD (the host-scalar
// ops find the dp group there); the transport sets the tensor ops and `free`.
Comm *comm_groups_create(const char *name, int pp, size_t elem_size, void *impl);

// Frees the groups of `impl` (the CommGroups it begins with), then impl and c.
void comm_groups_free(Comm *c);
