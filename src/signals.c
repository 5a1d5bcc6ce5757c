#include "signals.h"
#include <signal.h>
#include <string.h>

// The one piece of process-wide mutable state: a signal handler can only talk through it.
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;   // keep MPI and file I/O calls going; the loop polls the flag
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    // A write past the file-size limit (ulimit -f, RLIMIT_FSIZE: a site's per-job policy) would
    // kill the process with SIGXFSZ in the middle of a checkpoint. Ignored, the write fails with
    // EFBIG and takes the same path as a full disk: one line, exit 1, `latest` intact.
    signal(SIGXFSZ, SIG_IGN);
}

int signals_stop_requested(void) { return stop_requested != 0; }
