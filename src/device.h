// device.h: choosing where a train or eval run computes (train.device), and the transport that
// goes with it: the CPU backend with MPI, or the CUDA backend with NCCL.
#pragma once
#include "comm.h"
#include "config.h"
#include "commands.h"

// The device of a train or eval run, and what main must release at the end.
typedef struct {
    RunDevice run;
    int cuda;                // the CUDA backend was created (destroy it after the Comm)
    char name[256];
    char notice[512];
} Device;

// train.device: "cpu", "cuda" (a usable GPU on every rank, or exit 2 before anything is written),
// or "auto" (CUDA where every rank has a GPU, else the CPU with a notice for rank 0's log). All
// ranks reach the same verdict. Returns EXIT_DONE, or the exit code after one `entrank:` line.
int select_device(const Config *cfg, int rank, Device *dev);

// The transport that moves the chosen backend's buffers (MPI for the CPU, NCCL for CUDA).
Comm *comm_for(const Device *dev, int pp);

// Releases the CUDA backend, if one was created (after the Comm is freed).
void release_device(Device *dev);
