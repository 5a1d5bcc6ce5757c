// The NCCL Comm against the MPI Comm on the same data, under mpirun with one rank per GPU
// (`make test-gpu` runs it when a node has two or more GPUs): dp all-reduce, reduce-scatter,
// all-gather and broadcast, the tied-embedding all-reduce, pipeline send/receive in both directions,
// and the trainer's 1F1B pattern of sends and receives on large buffers (which would hang if the
// transport could deadlock; tests/run_gpu.sh runs it under a timeout). Every topology dp x pp of
// the world with pp in {1, 2, world}. TAP output on rank 0; exits 77 (skip) with fewer than two
// ranks or without a GPU on every rank.
//   mpirun -np 2 build/tests/gpu_mpi_nccl
#include <mpi.h>
#include <string.h>
#include "gpu_compare.h"
#include "comm.h"
#include "common.h"
#include "schedule.h"
#include "../cuda/comm_nccl.h"

// Sums over ranks in another order than MPI's: fp32 rounding, relative to the scale.
#define TOL_SUM 1e-5
// Moves and copies: bit for bit.
#define TOL_EXACT 0.0

static int rank, world, n_tests, n_failed;
static const Backend *gpu, *cpu;

// One TAP line on rank 0 for a check every rank made: the worst error over the ranks.
static void report(const char *name, double err, double tol) {
    double worst = isnan(err) ? INFINITY : err;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
    int ok = worst <= tol;
    n_tests++;
    n_failed += !ok;
    if (rank == 0) printf("%s %d - %s (max error %.2e, tolerance %.0e)\n", ok ? "ok" : "not ok", n_tests, name, worst, tol);
    fflush(stdout);
}

// The same host data on the GPU (for NCCL) and on the CPU backend (for MPI).
typedef struct { void *g, *c; size_t n; } Pair;

static Pair pair_random(size_t n, uint64_t seed) {
    float *h = gpu_random(n, seed, 1.0);
    Pair p = {gpu_put(gpu, h, n), gpu_put(cpu, h, n), n};
    free(h);
    return p;
}

static void pair_free(Pair *p) { gpu->free(p->g); cpu->free(p->c); }

static double pair_error(const Pair *p, size_t offset, size_t n) {
    return gpu_error(gpu, be_offset(gpu, p->g, offset), cpu, be_offset(cpu, p->c, offset), n);
}

// ---- data parallel ---------------------------------------------------------------------------------
static void check_dp(Comm *nccl, Comm *mpi, const char *topo) {
    char name[160];
    size_t n = 1000003;   // odd: no collective may assume an aligned count
    Pair a = pair_random(n, 100 + (uint64_t)rank);
    CommHandle hg = {0}, hc = {0};
    nccl->dp_allreduce_start(nccl, a.g, n, &hg);
    mpi->dp_allreduce_start(mpi, a.c, n, &hc);
    nccl->wait(nccl, &hg);
    mpi->wait(mpi, &hc);
    snprintf(name, sizeof name, "%s: dp_allreduce_start + wait", topo);
    report(name, pair_error(&a, 0, n), TOL_SUM);
    pair_free(&a);

    size_t shard = 100003;
    Pair full = pair_random(shard * (size_t)nccl->dp, 200 + (uint64_t)rank);
    Pair part = pair_random(shard, 300);
    nccl->dp_reduce_scatter(nccl, full.g, part.g, shard);
    mpi->dp_reduce_scatter(mpi, full.c, part.c, shard);
    snprintf(name, sizeof name, "%s: dp_reduce_scatter", topo);
    report(name, pair_error(&part, 0, shard), TOL_SUM);

    // All-gather in place: this replica's part of `full` is its reduced shard.
    gpu->copy(be_offset(gpu, full.g, (size_t)nccl->dp_index * shard), part.g, shard);
    cpu->copy(be_offset(cpu, full.c, (size_t)mpi->dp_index * shard), part.c, shard);
    nccl->dp_allgather(nccl, full.g, shard);
    mpi->dp_allgather(mpi, full.c, shard);
    snprintf(name, sizeof name, "%s: dp_allgather", topo);
    report(name, pair_error(&full, 0, shard * (size_t)nccl->dp), TOL_SUM);
    pair_free(&full);
    pair_free(&part);

    Pair b = pair_random(n, 400 + (uint64_t)rank);
    nccl->dp_broadcast(nccl, b.g, n);
    mpi->dp_broadcast(mpi, b.c, n);
    snprintf(name, sizeof name, "%s: dp_broadcast", topo);
    report(name, pair_error(&b, 0, n), TOL_EXACT);
    pair_free(&b);

    double xg[3] = {rank, 1.5, -rank}, xc[3] = {rank, 1.5, -rank};
    nccl->dp_sum_doubles(nccl, xg, 3);
    mpi->dp_sum_doubles(mpi, xc, 3);
    double err = 0;
    for (int i = 0; i < 3; i++) err = fmax(err, fabs(xg[i] - xc[i]));
    snprintf(name, sizeof name, "%s: dp_sum_doubles", topo);
    report(name, err, TOL_EXACT);
}

// ---- pipeline ----------------------------------------------------------------------------------------
static void check_p2p(Comm *nccl, Comm *mpi, const char *topo) {
    char name[160];
    size_t n = 300007;
    int s = nccl->stage, pp = nccl->pp;
    // Downstream: stage s sends to s + 1; upstream: s + 1 sends back to s.
    for (int dir = 0; dir < 2; dir++) {
        Pair out = pair_random(n, 500 + (uint64_t)rank * 2 + dir), in = pair_random(n, 900);
        int to = dir == 0 ? s + 1 : s - 1, from = dir == 0 ? s - 1 : s + 1;
        CommHandle hg = {0}, hc = {0};
        if (to >= 0 && to < pp) {
            nccl->send(nccl, to, out.g, n, 1 + dir, &hg);
            mpi->send(mpi, to, out.c, n, 1 + dir, &hc);
        }
        if (from >= 0 && from < pp) {
            nccl->recv(nccl, from, in.g, n, 1 + dir);
            mpi->recv(mpi, from, in.c, n, 1 + dir);
        }
        nccl->wait(nccl, &hg);
        mpi->wait(mpi, &hc);
        snprintf(name, sizeof name, "%s: send/recv %s", topo, dir == 0 ? "to the next stage" : "to the previous stage");
        report(name, pair_error(&in, 0, n), TOL_EXACT);
        pair_free(&out);
        pair_free(&in);
    }

    Pair t = pair_random(n, 700 + (uint64_t)rank);
    nccl->tie_allreduce(nccl, t.g, n);
    mpi->tie_allreduce(mpi, t.c, n);
    snprintf(name, sizeof name, "%s: tie_allreduce (first + last stage)", topo);
    report(name, pair_error(&t, 0, n), TOL_SUM);
    pair_free(&t);
}

// The trainer's pattern (train.c): 1F1B over m micro-batches, slots reused once their send is
// waited for, activations forward and gradients backward on the same neighbour pairs. Each stage
// adds 1 to what it receives; the last stage and stage 0 check the values that arrive. Buffers
// of 16 MB: NCCL cannot complete such sends before the receive is posted.
static void check_1f1b(Comm *c, const Backend *be, const char *topo, const char *transport) {
    int s = c->stage, pp = c->pp, m = pp + 2;
    size_t n = (size_t)4 << 20;
    int slots = schedule_slots(s, pp, m);
    void **in = malloc(sizeof(void *) * slots), **out = malloc(sizeof(void *) * slots);
    void **gin = malloc(sizeof(void *) * slots), **gout = malloc(sizeof(void *) * slots);
    CommHandle *act = calloc((size_t)slots, sizeof(CommHandle)), *grad = calloc((size_t)slots, sizeof(CommHandle));
    for (int i = 0; i < slots; i++) { in[i] = be->alloc(n); out[i] = be->alloc(n); gin[i] = be->alloc(n); gout[i] = be->alloc(n); }
    float *ones = malloc(n * sizeof(float)), *host = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ones[i] = 1;
    void *one = be->alloc(n);
    be->upload(one, ones, n);
    Action actions[64];
    int n_actions = schedule_1f1b(s, pp, m, actions);
    double err = 0;
    for (int k = 0; k < n_actions; k++) {
        int mb = actions[k].micro_batch, slot = mb % slots;
        if (actions[k].kind == ACTION_FORWARD) {
            c->wait(c, &act[slot]);
            if (s == 0) {
                for (size_t i = 0; i < n; i++) host[i] = (float)(1000 * mb + (int)(i % 7));
                be->upload(in[slot], host, n);
            } else {
                c->recv(c, s - 1, in[slot], n, 1);
            }
            be->add(out[slot], in[slot], one, n);
            if (s < pp - 1) {
                c->send(c, s + 1, out[slot], n, 1, &act[slot]);
            } else {
                be->synchronize();
                be->download(host, out[slot], n);
                for (size_t i = 0; i < n; i++) err = fmax(err, fabs(host[i] - (float)(1000 * mb + (int)(i % 7) + pp)));
            }
        } else {
            c->wait(c, &grad[slot]);
            if (s == pp - 1) {
                for (size_t i = 0; i < n; i++) host[i] = (float)(-1000 * mb - (int)(i % 5));
                be->upload(gin[slot], host, n);
            } else {
                c->recv(c, s + 1, gin[slot], n, 2);
            }
            be->add(gout[slot], gin[slot], one, n);
            if (s > 0) {
                c->send(c, s - 1, gout[slot], n, 2, &grad[slot]);
            } else {
                be->synchronize();
                be->download(host, gout[slot], n);
                for (size_t i = 0; i < n; i++) err = fmax(err, fabs(host[i] - (float)(-1000 * mb - (int)(i % 5) + pp)));
            }
        }
    }
    for (int i = 0; i < slots; i++) { c->wait(c, &act[i]); c->wait(c, &grad[i]); }
    be->synchronize();
    char name[160];
    snprintf(name, sizeof name, "%s: 1F1B pattern over %d micro-batches of 16 MB (%s)", topo, m, transport);
    report(name, err, TOL_EXACT);
    for (int i = 0; i < slots; i++) { be->free(in[i]); be->free(out[i]); be->free(gin[i]); be->free(gout[i]); }
    be->free(one);
    free(in); free(out); free(gin); free(gout); free(act); free(grad); free(ones); free(host);
}

static void check_world(Comm *nccl, const char *topo) {
    double x[2] = {rank, -rank};
    nccl->world_sum(nccl, x, 2);
    double err = fabs(x[0] - world * (world - 1) / 2.0) + fabs(x[1] + world * (world - 1) / 2.0);
    double y = rank;
    nccl->world_max(nccl, &y, 1);
    err += fabs(y - (world - 1));
    nccl->barrier(nccl);
    char name[160];
    snprintf(name, sizeof name, "%s: world_sum, world_max, barrier", topo);
    report(name, err, TOL_EXACT);
}

static int node_local_rank(void) {
    MPI_Comm node;
    int local;
    mpiCheck(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
    mpiCheck(MPI_Comm_rank(node, &local));
    mpiCheck(MPI_Comm_free(&node));
    return local;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    char why[256] = "";
    int count = cuda_device_count(why, sizeof why), fewest = count;
    MPI_Allreduce(&count, &fewest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (world < 2 || fewest == 0) {
        if (rank == 0) printf("# SKIP: %s\n", world < 2 ? "needs two or more ranks (mpirun -np N, one per GPU)" : "a rank has no CUDA device");
        MPI_Finalize();
        return 77;
    }
    gpu = backend_cuda_create(node_local_rank() % count, CUDA_GEMM_FP32, why, sizeof why);
    if (!gpu) { fprintf(stderr, "rank %d: cannot create the CUDA backend: %s\n", rank, why); MPI_Abort(MPI_COMM_WORLD, 1); }
    cpu = backend_cpu_f32();
    // Topologies: pp = 1 (all dp), 2 and world (all pipeline), each once and only if it divides.
    int pps[3], n_pp = 0, candidates[3] = {1, 2, world};
    for (int i = 0; i < 3; i++) {
        int seen = 0;
        for (int j = 0; j < n_pp; j++) seen |= pps[j] == candidates[i];
        if (!seen && world % candidates[i] == 0) pps[n_pp++] = candidates[i];
    }
    for (int i = 0; i < n_pp; i++) {
        int pp = pps[i];
        char topo[64];
        snprintf(topo, sizeof topo, "dp %d x pp %d", world / pp, pp);
        Comm *nccl = comm_nccl_create(pp, gpu->elem_size), *mpi = comm_mpi_create(pp, cpu->elem_size);
        if (nccl->dp > 1) check_dp(nccl, mpi, topo);
        if (pp > 1) {
            check_p2p(nccl, mpi, topo);
            check_1f1b(nccl, gpu, topo, "NCCL");
            check_1f1b(mpi, cpu, topo, "MPI");
        }
        check_world(nccl, topo);
        nccl->free(nccl);
        mpi->free(mpi);
    }
    backend_cuda_destroy();
    if (rank == 0) printf("1..%d\n", n_tests);
    MPI_Finalize();
    return n_failed ? 1 : 0;
}
