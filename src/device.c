// device.c: train.device, the backend of a run and its transport (see device.h).
#include "device.h"
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include "common.h"
#ifdef ENTRANK_CUDA
#include "../cuda/backend_cuda.h"
#include "../cuda/comm_nccl.h"
#endif


#ifdef ENTRANK_CUDA
// The lowest rank for which `failed` holds, or -1 if none (the same answer on every rank), so that
// exactly one rank prints a verdict that several may have reached.
static int first_failing_rank(int rank, int failed) {
    int world, first;
    mpiCheck(MPI_Comm_size(MPI_COMM_WORLD, &world));
    int mine = failed ? rank : world;
    mpiCheck(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));
    return first < world ? first : -1;
}

// Node-local rank: with one rank per GPU, it picks this rank's device among the node's.
static int node_local_rank(void) {
    MPI_Comm node;
    int rank, local;
    mpiCheck(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    mpiCheck(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_rank(node, &local));
    mpiCheck(MPI_Comm_free(&node));
    return local;
}
#endif

int select_device(const Config *cfg, int rank, Device *dev) {
    memset(dev, 0, sizeof *dev);
    dev->run = (RunDevice){backend_cpu_f32(), "cpu", "cpu", dev->notice};
    snprintf(dev->name, sizeof dev->name, "cpu");
#ifndef ENTRANK_CUDA
    // Every rank reads the same config: rank 0 speaks for all.
    if (!strcmp(cfg->device, "cuda")) {
        if (rank == 0) fprintf(stderr, "entrank: train.device: \"cuda\" requested but this build has no CUDA backend\n");
        return EXIT_BAD_INPUT;
    }
    if (!strcmp(cfg->device, "auto"))
        snprintf(dev->notice, sizeof dev->notice, "device auto: this build has no CUDA backend: running on the CPU");
    return EXIT_DONE;
#else
    if (!strcmp(cfg->device, "cpu")) return EXIT_DONE;   // the CUDA runtime is never touched
    char why[256] = "";
    int count = cuda_device_count(why, sizeof why);
    // A mixed world (GPU on some nodes only) cannot run one transport: it counts as no device.
    int first = first_failing_rank(rank, count == 0);
    if (first >= 0) {
        mpiCheck(MPI_Bcast(why, (int)sizeof why, MPI_CHAR, first, MPI_COMM_WORLD));
        char where[64] = "";
        if (first > 0) snprintf(where, sizeof where, "rank %d: ", first);
        if (!strcmp(cfg->device, "cuda")) {
            if (rank == first)
                fprintf(stderr, "entrank: train.device: \"cuda\" requested but no CUDA device is usable (%s%s)\n", where, why);
            return EXIT_BAD_INPUT;
        }
        snprintf(dev->notice, sizeof dev->notice, "device auto: no CUDA device (%s%s): running on the CPU", where, why);
        return EXIT_DONE;
    }
    int device = node_local_rank() % count;
    const Backend *be = backend_cuda_create(device, CUDA_GEMM_BF16, why, sizeof why);
    // A device that is present but cannot be used is a failure, not a reason to fall back: a GPU
    // job silently training on the CPU would hide it for days.
    first = first_failing_rank(rank, be == NULL);
    if (first >= 0) {
        if (rank == first) fprintf(stderr, "entrank: train.device: cannot use CUDA device %d: %s\n", device, why);
        if (be) backend_cuda_destroy();
        return EXIT_FAILURE_OTHER;
    }
    dev->cuda = 1;
    snprintf(dev->name, sizeof dev->name, "%s", backend_cuda_device_name());
    dev->run = (RunDevice){be, "cuda", dev->name, dev->notice};
    return EXIT_DONE;
#endif
}

Comm *comm_for(const Device *dev, int pp) {
#ifdef ENTRANK_CUDA
    if (dev->cuda) return comm_nccl_create(pp, dev->run.be->elem_size);
#endif
    return comm_mpi_create(pp, dev->run.be->elem_size);
}

void release_device(Device *dev) {
#ifdef ENTRANK_CUDA
    if (dev->cuda) backend_cuda_destroy();
#endif
    dev->cuda = 0;
}
