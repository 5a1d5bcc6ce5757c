#!/usr/bin/env bash
# The emulated NCCL over MPI (tests/cuda_emu/nccl_mpi.cpp) under mpirun, one TAP line per check
# (tests/run_emu.sh counts them):
#   - 1F1B with one communicator per direction completes (tests/emu_nccl_faults.c, 2 and 3 stages);
#   - 1F1B on a single communicator (comm_nccl.c's design note) is reported by the watchdog at its
#     default timeout, within 60 s, naming the communicator and its pending send and receive;
#   - four NCCL kernels with maxCTAs = SMs / 4 fit; with SMs / 2 the overflow is reported;
#   - a ring exchange completes in a group and is reported as a deadlock without one (rendezvous);
#   - the collectives have NCCL's layouts and reduce in rank order, bit for bit on every rank;
#   - a 2x2 (dp 2 x pp 2) training run of the emulated entrank (train.device = "cuda") gives the
#     CPU backend's losses within the bf16 trainer tolerance, its ranks never hold more CTAs in
#     flight than the device has SMs, and more than one NCCL kernel is in flight at times.
# Usage: tests/emu_nccl_cases.sh BUILD_EMU_DIR LOG_DIR (the CPU binary is bin/entrank)
set -u
dir=$1
logs=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ENTRANK_CPU_PEAK_GFLOPS=100
unset EMU_NCCL_TIMEOUT   # the watchdog's default is what the deadlock case measures
faults=$dir/tests/emu_nccl_faults
n=0
failed=0

tap() {   # tap OK DESCRIPTION [DETAIL FILE]
  n=$((n + 1))
  if [ "$1" = 1 ]; then echo "ok $n - $2"; else
    failed=$((failed + 1))
    echo "not ok $n - $2"
    [ -n "${3:-}" ] && [ -f "$3" ] && grep -vE '^\[[a-z0-9]+:[0-9]+\]' "$3" | tail -n 15 | sed 's/^/# /'
  fi
}

mpi() {   # mpi NP LOG PROGRAM ARGS...: exit status in $rc, seconds in $secs
  local np=$1 log=$2 t0=$SECONDS
  shift 2
  timeout 300 mpirun -np "$np" --oversubscribe --bind-to none "$@" >"$log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
}

for np in 2 3; do
  log=$logs/nccl_pipeline_$np.log
  mpi "$np" "$log" "$faults" pipeline-two-comms
  ok=0; [ $rc -eq 0 ] && grep -q '^ok 1 ' "$log" && ok=1
  tap $ok "1F1B over $np stages, a communicator per direction: completes, data intact (${secs}s)" "$log"
done

log=$logs/nccl_deadlock.log
mpi 2 "$log" "$faults" pipeline-one-comm
ok=0
if [ $rc -ne 0 ] && [ $secs -lt 60 ] && grep -q 'NCCL deadlock on world rank' "$log" &&
   grep -q 'comm #1 (rank 0 of 2, world ranks 0 1' "$log" && grep -q 'comm #1 (rank 1 of 2, world ranks 0 1' "$log" &&
   grep -qE 'ncclSend 4099 x float32 to peer [01] on stream #[0-9]+: started' "$log" &&
   grep -qE 'ncclRecv 4099 x float32 from peer [01] on stream #[0-9]+: waiting for an earlier operation of its communicator' "$log"; then ok=1; fi
tap $ok "1F1B on one communicator: deadlock reported (communicator, pending send and receive), all ranks aborted, exit $rc after ${secs}s (< 60s)" "$log"

log=$logs/nccl_cta_fit.log
mpi 2 "$log" "$faults" cta-fit
ok=0; [ $rc -eq 0 ] && grep -q '^ok 1 ' "$log" && ok=1
tap $ok "four NCCL kernels in flight with maxCTAs = SMs / 4 fit on the device (${secs}s)" "$log"

log=$logs/nccl_cta_overflow.log
mpi 2 "$log" "$faults" cta-overflow
ok=0
if [ $rc -ne 0 ] && grep -qE 'in flight on world rank 0 need [0-9]+ CTAs together, the device has [0-9]+ SMs' "$log" &&
   [ "$(grep -cE 'comm #[0-9] \(rank 0 of 2, world ranks 0 1, maxCTAs [0-9]+\): ncclSend' "$log")" -ge 3 ]; then ok=1; fi
tap $ok "NCCL kernels in flight with maxCTAs = SMs / 2: the overflow is reported with the kernels named (exit $rc)" "$log"

log=$logs/nccl_ring_grouped.log
mpi 3 "$log" "$faults" ring-grouped
ok=0; [ $rc -eq 0 ] && grep -q '^ok 1 ' "$log" && ok=1
tap $ok "ring send/receive over 3 ranks in one group completes (${secs}s)" "$log"

log=$logs/nccl_ring_ungrouped.log
EMU_NCCL_TIMEOUT=3 mpi 3 "$log" "$faults" ring-ungrouped
ok=0
if [ $rc -ne 0 ] && [ "$(grep -c 'NCCL deadlock on world rank' "$log")" -ge 1 ] &&
   grep -qE 'ncclRecv 4099 x float32 from peer [0-2] on stream #0: queued behind earlier work of its stream' "$log"; then ok=1; fi
tap $ok "the same ring without a group (rendezvous sends) is reported as a deadlock (exit $rc after ${secs}s, timeout 3 s)" "$log"

log=$logs/nccl_collectives.log
mpi 3 "$log" "$faults" collectives
ok=0; [ $rc -eq 0 ] && grep -q '^ok 1 ' "$log" && ok=1
tap $ok "collectives over 3 ranks: NCCL's layouts, reductions in rank order bit for bit (${secs}s)" "$log"

# dp 2 x pp 2 on the tiny config shrunk to a few seconds a step under emulation.
args=(train -c configs/tiny.cfg --set model.n_layer=4 --set model.d_model=32 --set model.n_head=2 --set model.seq_len=32
      --set train.batch_size=16 --set train.micro_batch_size=2 --set train.steps=3 --set train.warmup_steps=2
      --set train.log_every=1 --set eval.batches=1 --set data.logic.n_vars=4 --set data.logic.depth_min=2
      --set data.logic.depth_max=3 --set parallel.pp=2)
runs=$(mktemp -d /tmp/entrank-emu-nccl.XXXXXX)
cpu_log=$logs/train_2x2_cpu.log emu_log=$logs/train_2x2_emu.log
mpi 4 "$cpu_log" bin/entrank "${args[@]}" --set train.device=cpu --run-dir "$runs/cpu"
cpu_rc=$rc
EMU_STATS=1 mpi 4 "$emu_log" "$dir/entrank" "${args[@]}" --set train.device=cuda --run-dir "$runs/emu"
emu_rc=$rc emu_secs=$secs
rm -rf "$runs"
# The loss of every step and the validation loss, relative to the CPU's: the bf16 trainer-steps
# tolerance of tests/gpu_test_model_matches_cpu.c (TOL[CUDA_GEMM_BF16].steps).
losses() { sed -nE 's/^step +[0-9]+\/[0-9]+ \| loss ([0-9.]+) .*/\1/p; s/^eval step [0-9]+ \| val loss ([0-9.]+) .*/\1/p' "$1"; }
worst=$(paste <(losses "$cpu_log") <(losses "$emu_log") |
        awk 'NF == 2 { e = ($2 - $1) / $1; if (e < 0) e = -e; if (e > w) w = e; n++ } END { if (n == 4) printf "%.2e", w; else print "missing" }')
ok=0
if [ $cpu_rc -eq 0 ] && [ $emu_rc -eq 0 ] && grep -q 'device cuda: emulated CUDA device' "$emu_log" && grep -q '4 ranks: dp 2 x pp 2' "$emu_log" &&
   [ "$worst" != missing ] && awk -v w="$worst" 'BEGIN { exit !(w <= 1e-3) }' &&
   # The emulated device has no datasheet peak: its step lines say "MFU n/a", never "nan".
   grep -q '| MFU n/a |' "$emu_log" && ! grep -qi 'nan%' "$emu_log"; then ok=1; fi
tap $ok "2x2 training, emulated CUDA + NCCL vs CPU: 3 steps and the eval loss within 1e-3 relative (worst $worst, ${emu_secs}s)" "$emu_log"
# EMU_STATS: each rank's most kernels and CTAs in flight at once.
stats=$(sed -nE 's/.*at most ([0-9]+) kernels .* holding at most ([0-9]+) CTAs of ([0-9]+) SMs/\1 \2 \3/p' "$emu_log")
ok=0
if [ $emu_rc -eq 0 ] && [ "$(echo "$stats" | grep -c .)" -eq 4 ] &&
   echo "$stats" | awk '$2 > $3 { bad = 1 } $1 > most { most = $1 } END { exit !(!bad && most >= 2) }'; then ok=1; fi
tap $ok "2x2 training: NCCL kernels in flight concurrently (most per rank: $(echo "$stats" | awk '{printf "%s ", $1}')) never need more CTAs than the SMs" "$emu_log"
[ $failed -eq 0 ]
