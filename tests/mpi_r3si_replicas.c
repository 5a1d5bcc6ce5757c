// mpi_r3si_replicas: run by tests/test_r3si_runs.py under `mpirun -np 2`. Two data-parallel
// replicas train configs/tiny-r3si.cfg through two monitor updates; each then hashes its V_c,
// rank_c, alpha_c and tau, and rank 0 checks that every replica holds the very same bits.
// Prints "identical" and exits 0, or names what differs and exits 1.
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include "comm.h"
#include "r3si.h"
#include "rng.h"
#include "train.h"

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = rng_mix64(h ^ b[i]);
    return h;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    static Config cfg;
    Error err = {{0}};
    const char *sets[] = {"r3si.monitor_every=2", "train.steps=4", "train.warmup_steps=1", "train.batch_size=8",
                          "train.micro_batch_size=2", "model.n_layer=8", "r3si.layers=[3, 5]"};
    if (config_load("configs/tiny-r3si.cfg", sets, 7, &cfg, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    Comm *comm = comm_mpi_create(1, sizeof(float));
    Trainer t;
    if (trainer_init(&t, &cfg, backend_cpu_f32(), comm, &err)) die(EXIT_BAD_INPUT, "%s", err.msg);
    StepResult r;
    for (long s = 0; s < 4; s++) trainer_step(&t, s, &r, &err);
    const R3si *q = model_hook_state(&t.model, &BLOCK_HOOK_R3SI);
    uint64_t h = 0;
    float *V = xmalloc(sizeof(float) * q->D * q->k);
    double vnorm = 0;
    for (int c = 0; c < q->n_ckpt; c++) {
        t.be->download(V, q->V[c], (size_t)q->D * q->k);
        for (int i = 0; i < q->D * q->k; i++) vnorm += (double)V[i] * V[i];
        h = hash_bytes(h, V, sizeof(float) * q->D * q->k);
    }
    h = hash_bytes(h, q->rank, sizeof(double) * q->n_ckpt);
    h = hash_bytes(h, q->alpha, sizeof(double) * q->n_ckpt);
    h = hash_bytes(h, &q->tau, sizeof q->tau);
    uint64_t all[64];
    MPI_Gather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    int code = 0;
    if (comm->world_rank == 0) {
        for (int i = 1; i < comm->world_size; i++) if (all[i] != all[0]) code = 1;
        // V has k orthonormal columns per checkpoint layer: its squared norm is n_ckpt k.
        printf("%s: %d replicas, V norm^2 %.4f (expected %d), tau %.3f, monitors %d\n", code ? "differ" : "identical",
               comm->world_size, vnorm, q->n_ckpt * q->k, q->tau, q->monitors);
    }
    MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(V);
    trainer_free(&t);
    comm->free(comm);
    MPI_Finalize();
    return code;
}
