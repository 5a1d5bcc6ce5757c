// rng_streams.h: the random-stream tags of rng.h's draws outside parameter initialisation
// (param_spec.h has those). Fixed values: runs and their checkpoints depend on them.
#pragma once

#define RNG_STREAM_LAYERDROP 0x4C61796572447270ull          // "LayerDrp": which blocks skip a step
#define RNG_STREAM_STOCHASTIC_DEPTH 0x5354444550ull         // "STDEP": which sequences drop a block's branches
#define RNG_STREAM_R3SI_EIGENVECTORS (0x52335349ull * 1000003ull)   // "R3SI": the monitor's test matrices, + 64 step + layer
