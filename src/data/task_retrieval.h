// task_retrieval.h: the synthetic `retrieval` task (private to src/data; token ids public to tests).
//
// A sequence of T tokens is key-value pairs "K V" with distinct keys, ending with a query:
//   position:  0 ...      p   p+1  ...        q   q+1  q+2 = T-1
//   token:     K V K V .. Kx  Vx   K V .. K V  ?   Kx   Vx
// The query "?" sits at q = T - 3 and the queried pair at p = q - d, where d is one of
// data.retrieval.distances (those with 2 <= d <= T - 3), so d is the distance from the start of
// the pair to the start of the query. Loss and bucket (index of d among the fitting distances)
// only at q + 1, whose target is Vx. A region of odd length starts with one PAD.
#pragma once
#include <stdint.h>
#include "data.h"
#include "data_hash.h"

enum { RETR_PAD = 0, RETR_QUERY = 1, RETR_KEY0 = 2 };
#define RETR_N_VALUES 32

typedef struct {
    int T;
    int n_keys;                 // keys are RETR_KEY0 + [0, n_keys), values follow them
    int distances[CFG_MAX_LIST];  // the configured distances that fit in T, in config order
    int n_distances;
} RetrievalTask;

int retrieval_init(RetrievalTask *task, const Config *cfg, Error *err);
static inline int retrieval_value0(const RetrievalTask *task) { return RETR_KEY0 + task->n_keys; }
static inline int retrieval_vocab(const RetrievalTask *task) { return RETR_KEY0 + task->n_keys + RETR_N_VALUES; }
int retrieval_fill(const RetrievalTask *task, uint64_t seed, DataSplit split, uint64_t step, int index,
                   SequenceBuffers out, Error *err);
