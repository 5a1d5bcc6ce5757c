// task_logic.h: the synthetic `logic` task (private to src/data; the token ids are public to tests).
//
// One example, e.g. with n_vars = 3, depth 2:
//   a = 1 b = 0 c = 1 ; ( a AND NOT b ) ? 1
// All variables are assigned, in order, then `;`, the expression, `?` and the answer (0 or 1).
// Grammar of the expression (unambiguous, so no precedence to learn):
//   expr := VAR | NOT expr | ( expr OP expr )      OP := AND | OR | XOR
// Depth is the height of the operator tree (a variable is height 0, NOT counts as a level).
// A sequence packs whole examples back to back until the next one would not fit in T, then PAD.
// Loss only at the `?` positions (target = the answer token that follows), bucket depth - depth_min.
#pragma once
#include <stdint.h>
#include "data.h"
#include "data_hash.h"

enum {
    LOGIC_PAD = 0,
    LOGIC_FALSE = 1,    // "0"
    LOGIC_TRUE = 2,     // "1"
    LOGIC_NOT = 3,
    LOGIC_AND = 4,
    LOGIC_OR = 5,
    LOGIC_XOR = 6,
    LOGIC_LPAREN = 7,
    LOGIC_RPAREN = 8,
    LOGIC_EQ = 9,       // "="
    LOGIC_SEMI = 10,    // ";" ends the assignments
    LOGIC_QUERY = 11,   // "?" the answer follows
    LOGIC_VAR0 = 12,    // variables a, b, c, ... are LOGIC_VAR0 + i
};

#define LOGIC_MAX_VARS 26
#define LOGIC_MAX_DEPTH 24

typedef struct {
    int depth_min, depth_max, n_vars, T;
    int max_example_len;   // longest example depth_max can produce
} LogicTask;

int logic_init(LogicTask *task, const Config *cfg, Error *err);
static inline int logic_vocab(const LogicTask *task) { return LOGIC_VAR0 + task->n_vars; }
// Longest example of the given depth (the generator's worst case).
int logic_max_example_len(int n_vars, int depth);
int logic_fill(const LogicTask *task, uint64_t seed, DataSplit split, uint64_t step, int index,
               SequenceBuffers out, Error *err);
