// info.h: `entrank info`: sizes, FLOPs, memory and pipeline bubble of a config, without training.
#pragma once
#include <stdio.h>
#include "config.h"

// dp, pp: topology to report per-rank memory for (pp 0 = parallel.pp of the config, dp 0 = 1).
void print_info(const Config *cfg, int dp, int pp, FILE *out);
