// emu_nccl_faults.c: the rules of the emulated NCCL (tests/cuda_emu/nccl_mpi.cpp) that
// cuda/comm_nccl.c's design note relies on, shown on NCCL calls made directly (emulated build
// only; tests/test_emu_nccl.sh runs each mode under mpirun and checks the outcome):
//   pipeline-two-comms  the trainer's 1F1B schedule (schedule_1f1b) with comm_nccl.c's streams
//                       and one communicator per direction: completes, the data arrive (TAP ok)
//   pipeline-one-comm   the same on a single communicator: deadlocks (the design note's case),
//                       which the watchdog must report and abort
//   cta-fit             four communicators with maxCTAs = SMs / 4, a send in flight on each at
//                       once: fits (TAP ok)
//   cta-overflow        the same with maxCTAs = SMs / 2: must be reported
//   ring-grouped        every rank sends to the next and receives from the previous in one group:
//                       completes (a group's send does not wait for its receive)
//   ring-ungrouped      the same without the group: every send waits for a receive queued behind
//                       its rank's own send (rendezvous and order), a deadlock to be reported
//   collectives         AllReduce, ReduceScatter, AllGather (in place) and Broadcast against the
//                       values summed on the host in rank order, bit for bit on every rank (TAP)
// Every rank is one pipeline stage (pp = world) for the pipeline modes; the CTA modes need 2 ranks.
//   mpirun -np 2 build-emu/fast/tests/emu_nccl_faults MODE
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "schedule.h"

#define N 4099          // floats per message: odd, larger than any eager-send threshold would matter
#define MICRO_BATCHES 4

static int rank, world;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "rank %d: %s failed\n", rank, what);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}
#define CK(call) check((call) == 0, #call)

// A communicator over the world with `max_ctas` CTAs at most.
static ncclComm_t world_comm(int max_ctas) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (rank == 0) CK(ncclGetUniqueId(&id));
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.maxCTAs = max_ctas;
    ncclComm_t c;
    CK(ncclCommInitRankConfig(&c, world, id, rank, &config));
    return c;
}

static float act_value(int mb, int i) { return (float)(1000 * mb + i % 7); }
static float grad_value(int mb, int i) { return (float)(-1000 * mb - i % 5); }

// Stage `rank` of the pipeline: activations forward, gradients backward, as comm_nccl.c issues
// them (receives on the compute stream; each send on its direction's stream after the compute
// stream's work, its end an event the compute stream waits for before the buffer is reused).
static int pipeline(int one_comm) {
    int s = rank, pp = world, sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    // comm_nccl.c's share of the SMs: one of at most four NCCL kernels in flight.
    int ctas = sms / 4 > 0 ? sms / 4 : 1;
    ncclComm_t down = world_comm(ctas), up = one_comm ? down : world_comm(ctas);
    cudaStream_t compute, down_stream, up_stream;
    CK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&down_stream, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&up_stream, cudaStreamNonBlocking));
    cudaEvent_t ready, sent[2 * MICRO_BATCHES];
    CK(cudaEventCreate(&ready));
    float *act[MICRO_BATCHES], *grad[MICRO_BATCHES], host[N];
    for (int mb = 0; mb < MICRO_BATCHES; mb++) {
        CK(cudaMalloc((void **)&act[mb], N * sizeof(float)));
        CK(cudaMalloc((void **)&grad[mb], N * sizeof(float)));
        CK(cudaEventCreate(&sent[2 * mb]));
        CK(cudaEventCreate(&sent[2 * mb + 1]));
    }
    Action actions[2 * MICRO_BATCHES];
    int n = schedule_1f1b(s, pp, MICRO_BATCHES, actions);
    for (int k = 0; k < n; k++) {
        int mb = actions[k].micro_batch, fwd = actions[k].kind == ACTION_FORWARD;
        float *buf = fwd ? act[mb] : grad[mb];
        int from = fwd ? s - 1 : s + 1, to = fwd ? s + 1 : s - 1;
        ncclComm_t comm = fwd ? down : up;
        cudaStream_t send_stream = fwd ? down_stream : up_stream;
        if (from >= 0 && from < pp) {
            CK(ncclRecv(buf, N, ncclFloat, from, comm, compute));
        } else {
            for (int i = 0; i < N; i++) host[i] = fwd ? act_value(mb, i) : grad_value(mb, i);
            CK(cudaMemcpyAsync(buf, host, sizeof host, cudaMemcpyHostToDevice, compute));
        }
        if (to >= 0 && to < pp) {
            CK(cudaEventRecord(ready, compute));
            CK(cudaStreamWaitEvent(send_stream, ready, 0));
            CK(ncclSend(buf, N, ncclFloat, to, comm, send_stream));
            CK(cudaEventRecord(sent[2 * mb + !fwd], send_stream));
        }
        // The stage's own work on what arrived: the host waits for the compute stream here, as
        // the trainer does wherever an op needs host data.
        CK(cudaStreamSynchronize(compute));
    }
    for (int e = 0; e < 2 * MICRO_BATCHES; e++) CK(cudaStreamWaitEvent(compute, sent[e], 0));
    CK(cudaDeviceSynchronize());
    // The last stage holds every activation as stage 0 made it, stage 0 every gradient.
    int bad = 0;
    for (int mb = 0; mb < MICRO_BATCHES; mb++) {
        if (s == pp - 1) {
            CK(cudaMemcpy(host, act[mb], sizeof host, cudaMemcpyDeviceToHost));
            for (int i = 0; i < N; i++) bad += host[i] != act_value(mb, i);
        }
        if (s == 0) {
            CK(cudaMemcpy(host, grad[mb], sizeof host, cudaMemcpyDeviceToHost));
            for (int i = 0; i < N; i++) bad += host[i] != grad_value(mb, i);
        }
        CK(cudaFree(act[mb]));
        CK(cudaFree(grad[mb]));
    }
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s 1 - 1F1B over %d stages, %d micro-batches, %s: every activation and gradient arrived (%d wrong values)\n",
               bad ? "not ok" : "ok", pp, MICRO_BATCHES, one_comm ? "one communicator" : "a communicator per direction", bad);
    CK(ncclCommDestroy(down));
    if (!one_comm) CK(ncclCommDestroy(up));
    return bad != 0;
}

// Rank 0 sends on four communicators from four streams at once; rank 1 receives them in reverse
// order on one stream, so that rank 0's first three sends are still in flight when its fourth
// starts: all four hold their CTAs together.
static int concurrent(int divisor) {
    check(world == 2, "the CTA modes need 2 ranks");
    int sms;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    ncclComm_t comm[4];
    cudaStream_t stream[4];
    float *buf[4], host[N];
    for (int c = 0; c < 4; c++) {
        comm[c] = world_comm(sms / divisor > 0 ? sms / divisor : 1);
        CK(cudaStreamCreateWithFlags(&stream[c], cudaStreamNonBlocking));
        CK(cudaMalloc((void **)&buf[c], sizeof host));
        for (int i = 0; i < N; i++) host[i] = (float)(c * 10000 + i);
        if (rank == 0) CK(cudaMemcpy(buf[c], host, sizeof host, cudaMemcpyHostToDevice));
    }
    for (int k = 0; k < 4; k++) {
        int c = rank == 0 ? k : 3 - k;
        if (rank == 0) CK(ncclSend(buf[c], N, ncclFloat, 1, comm[c], stream[c]));
        else CK(ncclRecv(buf[c], N, ncclFloat, 0, comm[c], stream[0]));
    }
    CK(cudaDeviceSynchronize());
    int bad = 0;
    for (int c = 0; c < 4; c++) {
        CK(cudaMemcpy(host, buf[c], sizeof host, cudaMemcpyDeviceToHost));
        for (int i = 0; i < N; i++) bad += host[i] != (float)(c * 10000 + i);
        CK(cudaFree(buf[c]));
        CK(ncclCommDestroy(comm[c]));
    }
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s 1 - four sends in flight on four communicators with maxCTAs = %d of %d SMs each (%d wrong values)\n", bad ? "not ok" : "ok",
               sms / divisor, sms, bad);
    return bad != 0;
}

// Rank r sends to r + 1 and receives from r - 1 (mod world).
static int ring(int grouped) {
    ncclComm_t comm = world_comm(1);
    float *send, *recv, host[N];
    CK(cudaMalloc((void **)&send, sizeof host));
    CK(cudaMalloc((void **)&recv, sizeof host));
    for (int i = 0; i < N; i++) host[i] = (float)(rank * 100000 + i);
    CK(cudaMemcpy(send, host, sizeof host, cudaMemcpyHostToDevice));
    if (grouped) CK(ncclGroupStart());
    CK(ncclSend(send, N, ncclFloat, (rank + 1) % world, comm, 0));
    CK(ncclRecv(recv, N, ncclFloat, (rank + world - 1) % world, comm, 0));
    if (grouped) CK(ncclGroupEnd());
    CK(cudaMemcpy(host, recv, sizeof host, cudaMemcpyDeviceToHost));
    int bad = 0, from = (rank + world - 1) % world;
    for (int i = 0; i < N; i++) bad += host[i] != (float)(from * 100000 + i);
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s 1 - ring exchange over %d ranks in one group (%d wrong values)\n", bad ? "not ok" : "ok", world, bad);
    CK(cudaFree(send));
    CK(cudaFree(recv));
    CK(ncclCommDestroy(comm));
    return bad != 0;
}

// Rank r's i-th value: magnitudes that make float sums depend on their order.
static float contribution(int r, int i) { return (float)((r + 1) * 1e-3 * ((i % 13) - 6) + (r == 1 ? 1e4 : 0.3) * ((i % 3) - 1)); }

static int collectives(void) {
    ncclComm_t comm = world_comm(1);
    float host[N], *full = malloc((size_t)world * N * sizeof(float)), *d, *dfull;
    CK(cudaMalloc((void **)&d, sizeof host));
    CK(cudaMalloc((void **)&dfull, (size_t)world * N * sizeof(float)));
    int bad = 0;
    // AllReduce: ((x0 + x1) + x2) + ... in float, as the host adds them.
    for (int i = 0; i < N; i++) host[i] = contribution(rank, i);
    CK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    CK(ncclAllReduce(d, d, N, ncclFloat, ncclSum, comm, 0));
    CK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    for (int i = 0; i < N; i++) {
        float sum = contribution(0, i);
        for (int r = 1; r < world; r++) sum += contribution(r, i);
        bad += memcmp(&sum, &host[i], sizeof sum) != 0;
    }
    // ReduceScatter: rank r gets block r of the reduced world * N values.
    for (int i = 0; i < world * N; i++) full[i] = contribution(rank, i);
    CK(cudaMemcpy(dfull, full, (size_t)world * N * sizeof(float), cudaMemcpyHostToDevice));
    CK(ncclReduceScatter(dfull, d, N, ncclFloat, ncclSum, comm, 0));
    CK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    for (int i = 0; i < N; i++) {
        int k = rank * N + i;
        float sum = contribution(0, k);
        for (int r = 1; r < world; r++) sum += contribution(r, k);
        bad += memcmp(&sum, &host[i], sizeof sum) != 0;
    }
    // AllGather in place: block r from rank r.
    for (int i = 0; i < N; i++) host[i] = (float)(rank * 7 + i);
    CK(cudaMemcpy(dfull + (size_t)rank * N, host, sizeof host, cudaMemcpyHostToDevice));
    CK(ncclAllGather(dfull + (size_t)rank * N, dfull, N, ncclFloat, comm, 0));
    CK(cudaMemcpy(full, dfull, (size_t)world * N * sizeof(float), cudaMemcpyDeviceToHost));
    for (int r = 0; r < world; r++)
        for (int i = 0; i < N; i++) bad += full[(size_t)r * N + i] != (float)(r * 7 + i);
    // Broadcast from the last rank.
    for (int i = 0; i < N; i++) host[i] = (float)(rank * 1000 + i);
    CK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    CK(ncclBroadcast(d, d, N, ncclFloat, world - 1, comm, 0));
    CK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    for (int i = 0; i < N; i++) bad += host[i] != (float)((world - 1) * 1000 + i);
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("%s 1 - AllReduce and ReduceScatter bit for bit as summed in rank order, AllGather in place, Broadcast, %d ranks (%d wrong)\n",
               bad ? "not ok" : "ok", world, bad);
    free(full);
    CK(cudaFree(d));
    CK(cudaFree(dfull));
    CK(ncclCommDestroy(comm));
    return bad != 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    const char *mode = argc > 1 ? argv[1] : "";
    int rc;
    if (!strcmp(mode, "pipeline-two-comms")) rc = pipeline(0);
    else if (!strcmp(mode, "pipeline-one-comm")) rc = pipeline(1);
    else if (!strcmp(mode, "cta-fit")) rc = concurrent(4);
    else if (!strcmp(mode, "cta-overflow")) rc = concurrent(2);
    else if (!strcmp(mode, "ring-grouped")) rc = ring(1);
    else if (!strcmp(mode, "ring-ungrouped")) rc = ring(0);
    else if (!strcmp(mode, "collectives")) rc = collectives();
    else {
        if (rank == 0) fprintf(stderr, "usage: %s pipeline-two-comms|pipeline-one-comm|cta-fit|cta-overflow|ring-grouped|ring-ungrouped|collectives\n", argv[0]);
        rc = 2;
    }
    MPI_Finalize();
    return rc;
}
