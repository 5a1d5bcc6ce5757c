// trace.c: the per-layer traces (docs/metrics-schema.md) from a model's activations and gradients.
#include "trace.h"
#include <math.h>
#include <string.h>
#include "r3si_math.h"
#include "sga.h"
#include "stream_stats.h"

// Every array of the record and its length: one list for allocation, clearing and the world sum.
#define TRACE_ARRAYS(X, L, B, H)             \
    X(entropy_bh, (L) * (B) * (H))           \
    X(entropy, (L) * (H))                    \
    X(redundancy, (L))                       \
    X(eff_rank, (L) * (H))                   \
    X(resid_rank, (L) + 1)                   \
    X(token_cos, (L) + 1)                    \
    X(grad_div, (L))                         \
    X(sga_alpha, (L))                        \
    X(sga_stats, (L) * 4)                    \
    X(sga_band, (L) * 4)

typedef struct {
    double **array;
    size_t n;
} TraceArray;

// The record's arrays with their lengths; returns how many.
static int trace_arrays(TraceRecord *r, TraceArray *out) {
    size_t L = (size_t)r->L, H = (size_t)r->H, B = (size_t)r->B;
    int n = 0;
#define TRACE_ARRAY_ENTRY(field, len) out[n++] = (TraceArray){&r->field, (len)};
    TRACE_ARRAYS(TRACE_ARRAY_ENTRY, L, B, H)
#undef TRACE_ARRAY_ENTRY
    return n;
}
#define TRACE_MAX_ARRAYS 16

// Head redundancy builds an (H,H) Gram matrix per sequence on the host.
#define TRACE_REDUNDANCY_MAX_HEADS 64

void trace_init(TraceRecord *r, const ModelShape *s, int B) {
    memset(r, 0, sizeof *r);
    r->L = s->n_layer;
    r->B = B;
    r->H = s->n_head;
    r->T = s->seq_len;
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++) *arrays[i].array = xcalloc(arrays[i].n, sizeof(double));
}

void trace_free(TraceRecord *r) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++) free(*arrays[i].array);
    memset(r, 0, sizeof *r);
}

void trace_clear(TraceRecord *r) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++) memset(*arrays[i].array, 0, arrays[i].n * sizeof(double));
}

// Per layer: effective rank ||A||_F^4 / ||A A^T||_F^2 of each head's map, mean over sequences,
// and the mean pairwise cosine of the heads' maps.
static void map_stats(TraceRecord *r, const Model *m, const Activations *a, int li) {
    const Backend *be = m->be;
    int B = a->B, H = r->H, T = a->T, layer = m->layer_begin + li;
    const void *probs = model_layer_probs(m, a, li);   // (B,H,T,T)
    void *aat = be->alloc((size_t)T * T), *gram = be->alloc((size_t)H * H);
    double G[TRACE_REDUNDANCY_MAX_HEADS * TRACE_REDUNDANCY_MAX_HEADS], cos_sum = 0;
    int pairs = 0;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const void *A = be_offset(be, (void *)probs, ((size_t)b * H + h) * T * T);
            be->gemm(0, 1, T, T, T, 1.0, A, T, A, T, 0, aat, T);
            double f2 = be->sum_squares(A, (size_t)T * T), g2 = be->sum_squares(aat, (size_t)T * T);
            r->eff_rank[(size_t)layer * H + h] += (g2 > 0 ? f2 * f2 / g2 : 0) / B;
        }
        if (H > TRACE_REDUNDANCY_MAX_HEADS) continue;   // redundancy is reported as 1 (see below)
        const void *P = be_offset(be, (void *)probs, (size_t)b * H * T * T);
        be->gemm(0, 1, H, H, T * T, 1.0, P, T * T, P, T * T, 0, gram, H);
        be->download_f64(G, gram, (size_t)H * H);
        for (int h = 0; h < H; h++)
            for (int g = h + 1; g < H; g++) {
                double d = sqrt(G[h * H + h] * G[g * H + g]);
                cos_sum += d > 0 ? G[h * H + g] / d : 0;
                pairs++;
            }
    }
    r->redundancy[layer] = pairs ? cos_sum / pairs : 1.0;
    be->free(aat);
    be->free(gram);
}

static void sga_stats_of_layer(TraceRecord *r, const Model *m, Activations *a, int li) {
    int layer = m->layer_begin + li;
    ModuleCall mc;
    model_variant_call(m, a, li, &mc);
    sga_trace_layer(a->attn_slot, &mc.call, &r->sga_alpha[layer], &r->sga_stats[(size_t)layer * 4], &r->sga_band[(size_t)layer * 4]);
}

void trace_forward(TraceRecord *r, const Model *m, Activations *a) {
    int B = a->B, H = r->H;
    double *ent = xmalloc(sizeof(double) * a->n_local * B * H);
    model_head_entropies(m, a, ent);   // (n_local, B, H)
    for (int li = 0; li < a->n_local; li++) {
        int layer = m->layer_begin + li;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                double e = ent[((size_t)li * B + b) * H + h];
                r->entropy_bh[((size_t)layer * B + b) * H + h] = e;
                r->entropy[(size_t)layer * H + h] += e / B;
            }
        map_stats(r, m, a, li);
        stream_rank_and_token_cos(m->be, model_block_input(m, a, li), B, a->T, m->shape.d_model, &r->resid_rank[layer], &r->token_cos[layer]);
        if (m->shape.attention == &ATTENTION_SGA) sga_stats_of_layer(r, m, a, li);
    }
    if (m->has_head && a->n_local > 0)   // the final stream, leaving the last block
        stream_rank_and_token_cos(m->be, model_block_output(m, a, a->n_local - 1), B, a->T, m->shape.d_model, &r->resid_rank[r->L],
                           &r->token_cos[r->L]);
    free(ent);
}

void trace_finish(TraceRecord *r, const Model *m, Comm *comm, int grads_reduced) {
    size_t n = (size_t)4 * m->shape.head_size * m->shape.d_model;
    double *G = xmalloc(sizeof(double) * r->H * n);
    for (int layer = m->layer_begin; layer < m->layer_end; layer++) {
        model_head_gradients(m, layer, G);
        if (!grads_reduced) comm->dp_sum_doubles(comm, G, (int)(r->H * n));
        if (comm->dp_index == 0) r->grad_div[layer] = head_gradient_diversity(G, r->H, n);
    }
    free(G);
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n_arrays = trace_arrays(r, arrays);
    for (int i = 0; i < n_arrays; i++) comm->world_sum(comm, *arrays[i].array, (int)arrays[i].n);
}
