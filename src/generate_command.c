// generate_command.c: `entrank generate`: sampling from a checkpoint's parameters.
//
// Every prompt is one sequence of a single micro-batch (B = number of prompts), so prompts run in
// parallel. There is no key/value cache: each new token reruns the forward pass over the last
// seq_len tokens of each sequence. That costs T times the work of a cached decoder, but it uses
// the training forward pass unchanged, so every attention variant and block hook (SGA's row chain,
// R3SI's injection with its stored buffers) is exactly what was trained, on the CPU and CUDA
// backends alike; causality makes the tokens after a sequence's end irrelevant to its last position.
//
// Determinism: the token drawn for prompt b at its j-th new position is a pure function of
// (seed, b, j) and the probabilities, so any topology gives the same tokens (pp stages hand the
// activations on exactly as evaluation does; the last stage of replica 0 samples and broadcasts).
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "inference_stage.h"
#include "rng.h"
#include "train.h"

// Random stream of generation draws (rng_streams.h numbers the training ones; this one is only
// used here and never mixes with them because the seed is the user's --seed).
#define GENERATE_STREAM 0x67656e6572617465ull   // "generate"

typedef struct {
    int n;            // prompts
    int *len;         // (n) tokens of each prompt
    int32_t **ids;    // (n) each prompt's ids
} Prompts;

static void prompts_free(Prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->ids[i]);
    free(p->ids);
    free(p->len);
    memset(p, 0, sizeof *p);
}

// Parses one line of ids into the prompt list. `where` names the source for messages.
static int parse_prompt_line(Prompts *p, const char *line, const char *where, int line_no, int vocab, Error *err) {
    int cap = 16, n = 0;
    int32_t *ids = xmalloc((size_t)cap * sizeof *ids);
    const char *s = line;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == ',' || *s == '\r' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v >= vocab) {
            free(ids);
            if (end == s) return error_set(err, "%s: line %d: '%.20s' is not a token id", where, line_no, s);
            return error_set(err, "%s: line %d: token id %.20s is outside the vocabulary (model.vocab_size %d)", where, line_no, s, vocab);
        }
        if (n == cap) {
            ids = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            CHECK_ALLOC(ids);
        }
        ids[n++] = (int32_t)v;
        s = end;
    }
    if (n == 0) {
        free(ids);
        return error_set(err, "%s: line %d: empty prompt (give at least one token id, e.g. the end-of-text token)", where, line_no);
    }
    p->ids = realloc(p->ids, (size_t)(p->n + 1) * sizeof *p->ids);
    p->len = realloc(p->len, (size_t)(p->n + 1) * sizeof *p->len);
    CHECK_ALLOC(p->ids);
    CHECK_ALLOC(p->len);
    p->ids[p->n] = ids;
    p->len[p->n] = n;
    p->n++;
    return 0;
}

static int read_prompts(const CliArgs *args, int vocab, Prompts *p, Error *err) {
    memset(p, 0, sizeof *p);
    if (args->prompt) return parse_prompt_line(p, args->prompt, "--prompt", 1, vocab, err);
    FILE *f = fopen(args->prompt_file, "r");
    if (!f) return error_set(err, "%s: cannot read: %s", args->prompt_file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    int no = 0, rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        no++;
        const char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
        if (!*s) continue;   // blank lines separate nothing
        if ((rc = parse_prompt_line(p, line, args->prompt_file, no, vocab, err))) break;
    }
    free(line);
    fclose(f);
    if (!rc && p->n == 0) rc = error_set(err, "%s: no prompt (one line of token ids per prompt)", args->prompt_file);
    if (rc) prompts_free(p);
    return rc;
}

typedef struct {
    float p;
    int id;
} Cand;

static int cand_desc(const void *a, const void *b) {
    const Cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id - y->id;   // ties by id: the order, and so the draw, is fully determined
}

// Draws a token from one row of probabilities: temperature (p^(1/T), renormalised, the same as
// softmax(logits / T)), then top-k, then top-p (the smallest prefix of the sorted candidates whose
// mass reaches p), with u uniform in (0, 1). Temperature 0 is the argmax (lowest id on ties).
static int sample_row(const float *probs, int V, const CliArgs *args, double u, Cand *scratch) {
    if (args->temperature == 0) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (probs[i] > probs[best]) best = i;
        return best;
    }
    // log p / T, shifted by its maximum before exp: no overflow however small T is.
    double inv_t = 1.0 / args->temperature, maxl = -INFINITY;
    for (int i = 0; i < V; i++) {
        double l = probs[i] > 0 ? log((double)probs[i]) * inv_t : -INFINITY;
        scratch[i].id = i;
        scratch[i].p = (float)l;
        if (l > maxl) maxl = l;
    }
    for (int i = 0; i < V; i++) scratch[i].p = isinf(scratch[i].p) ? 0.0f : (float)exp((double)scratch[i].p - maxl);
    qsort(scratch, (size_t)V, sizeof *scratch, cand_desc);
    int n = args->top_k > 0 && args->top_k < V ? args->top_k : V;
    double total = 0;
    for (int i = 0; i < n; i++) total += scratch[i].p;
    if (args->top_p < 1) {
        double mass = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            mass += scratch[i].p / total;
            if (mass >= args->top_p) { keep = i + 1; break; }
        }
        n = keep;
        total = 0;
        for (int i = 0; i < n; i++) total += scratch[i].p;
    }
    double target = u * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += scratch[i].p;
        if (target < acc) return scratch[i].id;
    }
    return scratch[n - 1].id;
}

// A float32 .npy file of shape (a, b, c) (NumPy format 1.0).
static int write_npy(const char *path, const float *data, int a, int b, int c, Error *err) {
    char header[128];
    int n = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d, %d), }", a, b, c);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return error_set(err, "%s: cannot create: %s", path, strerror(errno));
    unsigned short hlen = (unsigned short)(n + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hlen & 0xff, f);
    fputc(hlen >> 8, f);
    fwrite(header, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    size_t count = (size_t)a * b * c;
    int ok = fwrite(data, sizeof(float), count, f) == count;
    if (fclose(f) || !ok) return error_set(err, "%s: write failed", path);
    return 0;
}

int generate_command(const Config *cfg, const RunDevice *dev, Comm *comm, const CliArgs *args) {
    Error err = {{0}};
    const Backend *be = dev->be;
    int T = cfg->seq_len, V = cfg->vocab_size;
    Prompts prompts;
    // Every rank reads the prompts: the verdict is the same everywhere, and stage 0 needs the ids.
    int failed = read_prompts(args, V, &prompts, &err) != 0;
    if (!failed && args->logprobs_out) {
        for (int i = 1; i < prompts.n; i++)
            if (prompts.len[i] != prompts.len[0]) { failed = error_set(&err, "--logprobs-out: prompts of different lengths (%d and %d tokens); the file holds one (prompts, positions, vocab) array", prompts.len[0], prompts.len[i]) != 0; break; }
        if (!failed && prompts.len[0] > T)
            failed = error_set(&err, "--logprobs-out: prompts of %d tokens are longer than model.seq_len %d", prompts.len[0], T) != 0;
    }
    if (commands_any_failed(comm, failed, &err)) { if (!failed) prompts_free(&prompts); return EXIT_BAD_INPUT; }
    int B = prompts.n;

    int pp = comm->pp, s = comm->stage;
    InferenceStage st;
    if (inference_stage_load(&st, cfg, be, comm, args->checkpoint_path, B, &err)) {
        prompts_free(&prompts);
        return EXIT_BAD_INPUT;
    }

    // The sampler: the last stage of replica 0. It broadcasts each round's new tokens.
    int is_sampler = s == pp - 1 && comm->dp_index == 0, root;
    int mine = is_sampler ? comm->world_rank : INT_MAX;
    mpiCheck(MPI_Allreduce(&mine, &root, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD));

    int max_new = args->max_tokens;
    int32_t **seq = xcalloc((size_t)B, sizeof *seq);
    int *len = xcalloc((size_t)B, sizeof *len), *done = xcalloc((size_t)B, sizeof *done), *n_new = xcalloc((size_t)B, sizeof *n_new);
    for (int b = 0; b < B; b++) {
        seq[b] = xmalloc(((size_t)prompts.len[b] + (size_t)max_new) * sizeof(int32_t));
        memcpy(seq[b], prompts.ids[b], (size_t)prompts.len[b] * sizeof(int32_t));
        len[b] = prompts.len[b];
    }
    int32_t *host_tokens = xmalloc((size_t)B * T * sizeof(int32_t)), *host_targets = xmalloc((size_t)B * T * sizeof(int32_t));
    for (size_t i = 0; i < (size_t)B * T; i++) host_targets[i] = -1;   // no loss: nothing is scored
    float *row = is_sampler ? xmalloc((size_t)V * sizeof(float)) : NULL;
    Cand *scratch = is_sampler ? xmalloc((size_t)V * sizeof(Cand)) : NULL;
    int32_t *next = xmalloc((size_t)B * sizeof(int32_t));
    int rounds = args->logprobs_out && max_new == 0 ? 1 : max_new;
    int rc = EXIT_DONE;

    for (int round = 0; round < rounds; round++) {
        // Each sequence's window: its last T tokens (or all of them), left-aligned from position 0.
        int pos[B];
        for (int b = 0; b < B; b++) {
            int n = len[b] < T ? len[b] : T, first = len[b] - n;
            for (int t = 0; t < T; t++) host_tokens[(size_t)b * T + t] = t < n ? seq[b][first + t] : 0;
            pos[b] = n - 1;
        }
        inference_stage_forward(&st, comm, host_tokens, host_targets);
        if (is_sampler && round == 0 && args->logprobs_out) {
            // The prompts' own pass: log-probabilities of every prompt position.
            int L = prompts.len[0];
            float *lp = xmalloc((size_t)B * L * V * sizeof(float));
            for (int b = 0; b < B; b++)
                for (int t = 0; t < L; t++) {
                    float *dst = lp + ((size_t)b * L + t) * V;
                    be->download(dst, be_offset(be, st.acts.logits, ((size_t)b * T + t) * V), (size_t)V);
                    for (int v = 0; v < V; v++) dst[v] = logf(dst[v]);
                }
            if (write_npy(args->logprobs_out, lp, B, L, V, &err)) rc = EXIT_FAILURE_OTHER;
            free(lp);
        }
        if (max_new == 0) break;
        if (is_sampler) {
            for (int b = 0; b < B; b++) {
                if (done[b]) { next[b] = -1; continue; }
                be->download(row, be_offset(be, st.acts.logits, ((size_t)b * T + pos[b]) * V), (size_t)V);
                double u = rng_uniform((uint64_t)args->seed, GENERATE_STREAM + (uint64_t)b, (uint64_t)n_new[b]);
                next[b] = sample_row(row, V, args, u, scratch);
            }
        }
        mpiCheck(MPI_Bcast(next, B, MPI_INT32_T, root, MPI_COMM_WORLD));
        int all_done = 1;
        for (int b = 0; b < B; b++) {
            if (done[b]) continue;
            seq[b][len[b]++] = next[b];
            n_new[b]++;
            if (next[b] == args->stop_token || n_new[b] == max_new) done[b] = 1;
            all_done &= done[b];
        }
        if (all_done) break;
    }
    int code_any = rc;
    mpiCheck(MPI_Allreduce(&rc, &code_any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (rc != EXIT_DONE) fprintf(stderr, "entrank: %s\n", err.msg);
    if (comm->world_rank == root && code_any == EXIT_DONE) {
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < n_new[b]; j++) printf(j ? " %d" : "%d", seq[b][prompts.len[b] + j]);
            printf("\n");
        }
        fflush(stdout);
    }
    for (int b = 0; b < B; b++) free(seq[b]);
    free(seq); free(len); free(done); free(n_new); free(next);
    free(host_tokens); free(host_targets); free(row); free(scratch);
    inference_stage_free(&st);
    prompts_free(&prompts);
    return code_any;
}
