// backend_count.h: a Backend that only counts. Its alloc, alloc_i32 and free keep the bytes held
// and their high-water mark and hand out distinct fake addresses that are never dereferenced; every
// other op is NULL. Building a rank's state on it (trainer_alloc_state) measures what the real
// backends would allocate, without the memory: memory_estimate.c.
#pragma once
#include "backend.h"

// The counting backend with fp32 elements (the element of the trainer's backends: CPU fp32, CUDA).
// Single-threaded: one estimate at a time; backend_count_reset zeroes its counters.
const Backend *backend_count(void);
void backend_count_reset(void);
