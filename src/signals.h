// signals.h: SIGTERM and SIGUSR1 (Slurm's --signal) ask the run to checkpoint and exit 3.
#pragma once

// Installs the handlers. The request is only noted; the training loop acts on it at the next step
// boundary, after all ranks have agreed (a handler cannot do collective I/O).
void signals_install(void);

// 1 if a stop was requested since start-up, else 0.
int signals_stop_requested(void);
