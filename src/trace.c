// trace.c: the per-layer traces (docs/metrics-schema.md) from a model's activations and gradients,
// and their datasets in metrics.h5.
#include "trace.h"
#include <math.h>
#include <string.h>
#include "r3si_math.h"
#include "sga.h"
#include "stream_stats.h"

// Every array of the record and its dataset in metrics.h5: one list for allocation, clearing, the
// world sum, the metric declarations and the rows (docs/metrics-schema.md describes the same datasets).
// X(field, when, dataset, axes, description, units): `axes` names the row's axes; their names give
// the sizes (axis_size below), so an array's length is the product over its axes. `when` says
// which runs have the array: ALL, SGA (attention.kind = "sga"), SNAPSHOT (trace.snapshot_layers).
#define TRACE_ARRAYS(X)                                                                                                \
    X(entropy_bh, ALL, "/trace/attn_entropy_bh", "layer,batch,head", "mean attention row entropy per layer, sequence and head", "nats") \
    X(entropy, ALL, "/trace/attn_entropy", "layer,head", "mean attention row entropy per layer and head (mean over sequences)", "nats") \
    X(redundancy, ALL, "/trace/head_redundancy", "layer", "mean pairwise cosine of the heads' attention maps", "1") \
    X(eff_rank, ALL, "/trace/attn_eff_rank", "layer,head", "||A||_F^4 / ||A A^T||_F^2 of each head's map, mean over sequences", "dimensions") \
    X(resid_rank, ALL, "/trace/resid_rank", "stream", "participation ratio of the residual stream entering each block; last: the final stream", "dimensions") \
    X(token_cos, ALL, "/trace/token_cos", "stream", "mean cosine of adjacent tokens' residual vectors entering each block; last: final", "1") \
    X(grad_div, ALL, "/trace/grad_diversity", "layer", "variance over head pairs of the cosine of their W_q/W_k/W_v/W_o gradients", "1") \
    X(sga_alpha, SGA, "/sga/alpha", "layer", "blend weight alpha_l, clamped to [0, 1]", "1") \
    X(sga_stats, SGA, "/sga/stats", "layer,stat", "mean over rows of DC fraction, centroid, flatness, normalised entropy", "1") \
    X(sga_band, SGA, "/sga/gate_band", "layer,band", "mean gate over DC and the low, mid and high thirds of the frequencies", "1") \
    X(snapshot, SNAPSHOT, "/snapshot/attn", "layer,head,query,key", "attention weights of sequence 0 of the trace micro-batch, first heads, at the layers of trace.snapshot_layers", "1")

enum { ALL, SGA, SNAPSHOT };

typedef struct {
    double **array;
    int when;
    const char *dataset, *axes, *description, *units;
} TraceArray;

static const char *const TRACE_GROUPS[] = {"/trace", "/sga", "/snapshot"};   // each has its own step axis
#define TRACE_MAX_ARRAYS 16
#define TRACE_MAX_AXES 4

// The record's arrays, in table order; returns how many.
static int trace_arrays(TraceRecord *r, TraceArray *out) {
    int n = 0;
#define TRACE_ARRAY_ENTRY(field, when_, dataset_, axes_, description_, units_) \
    out[n++] = (TraceArray){&r->field, when_, dataset_, axes_, description_, units_};
    TRACE_ARRAYS(TRACE_ARRAY_ENTRY)
#undef TRACE_ARRAY_ENTRY
    return n;
}

static int array_present(const TraceRecord *r, const TraceArray *a) {
    return a->when == ALL || (a->when == SGA && r->sga) || (a->when == SNAPSHOT && r->n_snap > 0);
}

// Size of a named axis; with `values`, also its index values (layer numbers, ...).
static int axis_size(const TraceRecord *r, const char *dataset, const char *axis, int *values) {
    int snapshot = strncmp(dataset, "/snapshot/", 10) == 0;
    int n;
    if (!strcmp(axis, "layer")) n = snapshot ? r->n_snap : r->L;
    else if (!strcmp(axis, "stream")) n = r->L + 1;   // the stream entering block l; index L: after the last block
    else if (!strcmp(axis, "batch")) n = r->B;
    else if (!strcmp(axis, "head")) n = snapshot ? r->snap_heads : r->H;
    else if (!strcmp(axis, "stat") || !strcmp(axis, "band")) n = 4;
    else if (!strcmp(axis, "query") || !strcmp(axis, "key")) n = r->T;
    else die(EXIT_FAILURE_OTHER, "trace: %s: unknown axis '%s'", dataset, axis);
    if (values)
        for (int i = 0; i < n; i++) values[i] = snapshot && !strcmp(axis, "layer") ? r->snap_layers[i] : i;
    return n;
}

// Splits "layer,head" into names; returns how many (at most TRACE_MAX_AXES).
static int axis_names(const char *axes, char names[TRACE_MAX_AXES][16]) {
    int n = 0;
    for (const char *p = axes; *p && n < TRACE_MAX_AXES;) {
        size_t len = strcspn(p, ",");
        if (len >= sizeof names[0]) die(EXIT_FAILURE_OTHER, "trace: axis name in '%s' too long", axes);
        memcpy(names[n], p, len);
        names[n++][len] = '\0';
        p += len + (p[len] == ',');
    }
    return n;
}

static size_t array_len(const TraceRecord *r, const TraceArray *a) {
    char names[TRACE_MAX_AXES][16];
    int k = axis_names(a->axes, names);
    size_t len = 1;
    for (int i = 0; i < k; i++) len *= (size_t)axis_size(r, a->dataset, names[i], NULL);
    return len;
}

// Head redundancy builds an (H,H) Gram matrix per sequence on the host.
#define TRACE_REDUNDANCY_MAX_HEADS 64

void trace_init(TraceRecord *r, const ModelShape *s, int B, const int *snapshot_layers, int n_snapshot) {
    memset(r, 0, sizeof *r);
    r->L = s->n_layer;
    r->B = B;
    r->H = s->n_head;
    r->T = s->seq_len;
    r->sga = attention_is_sga(s->attention);
    r->n_snap = n_snapshot;
    r->snap_heads = r->H < TRACE_SNAPSHOT_HEADS ? r->H : TRACE_SNAPSHOT_HEADS;
    if (n_snapshot > 0) {
        r->snap_layers = xmalloc(sizeof(int) * (size_t)n_snapshot);
        memcpy(r->snap_layers, snapshot_layers, sizeof(int) * (size_t)n_snapshot);
    }
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++)
        if (array_present(r, &arrays[i])) *arrays[i].array = xcalloc(array_len(r, &arrays[i]), sizeof(double));
}

void trace_free(TraceRecord *r) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++) free(*arrays[i].array);
    free(r->snap_layers);
    memset(r, 0, sizeof *r);
}

void trace_clear(TraceRecord *r) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    for (int i = 0; i < n; i++)
        if (array_present(r, &arrays[i])) memset(*arrays[i].array, 0, array_len(r, &arrays[i]) * sizeof(double));
}

// Index in TRACE_GROUPS of the group holding a dataset ("/trace/x" -> "/trace"), or -1.
static int trace_group_of(const char *dataset) {
    for (size_t g = 0; g < sizeof TRACE_GROUPS / sizeof TRACE_GROUPS[0]; g++) {
        size_t len = strlen(TRACE_GROUPS[g]);
        if (!strncmp(dataset, TRACE_GROUPS[g], len) && dataset[len] == '/') return (int)g;
    }
    return -1;
}

void trace_declare_metrics(MetricsFile *mf, TraceRecord *r) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    int group_used[sizeof TRACE_GROUPS / sizeof TRACE_GROUPS[0]] = {0};
    for (int i = 0; i < n; i++) {
        const TraceArray *a = &arrays[i];
        if (!array_present(r, a)) continue;
        int g = trace_group_of(a->dataset);
        if (g >= 0 && !group_used[g]) {   // a group's step axis, declared with its first dataset
            group_used[g] = 1;
            char step[64];
            snprintf(step, sizeof step, "%s/step", TRACE_GROUPS[g]);
            metrics_declare(mf, step, 0, NULL, "step of the trace (first micro-batch of replica 0)", "step");
        }
        char names[TRACE_MAX_AXES][16];
        int k = axis_names(a->axes, names);
        size_t dims[TRACE_MAX_AXES];
        for (int j = 0; j < k; j++) dims[j] = (size_t)axis_size(r, a->dataset, names[j], NULL);
        metrics_declare(mf, a->dataset, k, dims, a->description, a->units);
        metrics_set_axis(mf, a->dataset, 0, "step", NULL, 0);
        for (int j = 0; j < k; j++) {
            int *values = xmalloc(sizeof(int) * dims[j]);
            axis_size(r, a->dataset, names[j], values);
            metrics_set_axis(mf, a->dataset, j + 1, names[j], values, (int)dims[j]);
            free(values);
        }
        // Maps are T x T per head and layer: half precision keeps a row at a quarter of float64.
        if (a->when == SNAPSHOT) metrics_set_storage(mf, a->dataset, METRICS_F16);
    }
}

void trace_append_metrics(MetricsFile *mf, TraceRecord *r, long step) {
    TraceArray arrays[TRACE_MAX_ARRAYS];
    int n = trace_arrays(r, arrays);
    double s = (double)step;
    int group_done[sizeof TRACE_GROUPS / sizeof TRACE_GROUPS[0]] = {0};
    for (int i = 0; i < n; i++) {
        const TraceArray *a = &arrays[i];
        if (!array_present(r, a)) continue;
        int g = trace_group_of(a->dataset);
        if (g >= 0 && !group_done[g]) {   // one step row per group, with its first dataset's row
            group_done[g] = 1;
            char name[64];
            snprintf(name, sizeof name, "%s/step", TRACE_GROUPS[g]);
            metrics_append(mf, name, &s);
        }
        metrics_append(mf, a->dataset, *a->array);
    }
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

// The attention maps of sequence 0, first snap_heads heads, when this stage owns a listed layer
// (under pipeline parallelism the owning stage fills its rows; the world sum brings them to rank 0).
static void snapshot_layer(TraceRecord *r, const Model *m, const Activations *a, int li) {
    int layer = m->layer_begin + li;
    size_t TT = (size_t)r->T * r->T;
    for (int j = 0; j < r->n_snap; j++) {
        if (r->snap_layers[j] != layer) continue;
        const void *probs = model_layer_probs(m, a, li);   // (B,H,T,T)
        for (int h = 0; h < r->snap_heads; h++)
            m->be->download_f64(&r->snapshot[((size_t)j * r->snap_heads + h) * TT], be_offset(m->be, (void *)probs, (size_t)h * TT), TT);
    }
}

size_t trace_scratch_numel(const ModelShape *s, int B) {
    size_t T = (size_t)s->seq_len, H = (size_t)s->n_head, C = (size_t)s->d_model;
    size_t maps = T * T + H * H;      // map_stats: aat and gram
    size_t cov = C * C;               // stream_rank_and_token_cos: the covariance
    size_t ent = (size_t)B * H * T;   // model_head_entropies: the row entropies
    size_t n = maps > cov ? maps : cov;
    return ent > n ? ent : n;
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
        if (r->sga) sga_stats_of_layer(r, m, a, li);
        snapshot_layer(r, m, a, li);
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
    for (int i = 0; i < n_arrays; i++)
        if (array_present(r, &arrays[i])) comm->world_sum(comm, *arrays[i].array, (int)array_len(r, &arrays[i]));
}
