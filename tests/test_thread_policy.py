"""OpenMP's wait policy (src/thread_policy.h, issue 21): with nothing chosen in the environment,
entrank executes itself once more with GOMP_SPINCOUNT set for a spin of about 100 us on the pause
latency it measured (1000 to 100000 spins), so that libgomp (which reads it when it loads) lets
idle threads sleep soon instead of spinning on cores that other jobs share; the user's
GOMP_SPINCOUNT or OMP_WAIT_POLICY stands. The log says which policy runs and where it came from,
alone and under mpirun, and the policy changes no number of the run."""
import os
import re

from conftest import train_tiny_two_steps


SET_BY_ENTRANK = re.compile(r"idle threads sleep after (\d+) spins \(GOMP_SPINCOUNT, set by entrank for about "
                            r"100 us at the ([0-9.]+) ns this CPU's pause took: the environment chose none\)$")


def assert_spin_set_by_entrank(line):
    match = SET_BY_ENTRANK.search(line)
    assert match, line
    spins, pause_ns = int(match.group(1)), float(match.group(2))
    # The count is the spin's duration over the pause's latency, within the bounds (the latency is
    # printed to 0.1 ns, so the count agrees to that rounding).
    want = min(max(100e3 / pause_ns, 1000), 100000)
    assert 1000 <= spins <= 100000, line
    assert abs(spins - want) <= want * 0.05 / pause_ns + 1, (spins, want, line)
    return spins


def train(tmp_path, name, env_extra, ranks=0):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    stdout, losses = train_tiny_two_steps(tmp_path, name, dict(env, **env_extra), ranks)
    threads = re.findall(r"^threads: .*$", stdout, re.M)
    assert len(threads) == 1, stdout
    return threads[0], losses


def test_entrank_sets_a_short_spin_unless_the_environment_chooses(tmp_path):
    line, loss = train(tmp_path, "default", {})
    assert_spin_set_by_entrank(line)
    line, loss_spin = train(tmp_path, "spin", {"GOMP_SPINCOUNT": "5000"})
    assert line.endswith("wait policy from the environment: GOMP_SPINCOUNT=5000"), line
    line, loss_wait = train(tmp_path, "wait", {"OMP_WAIT_POLICY": "active"})
    assert line.endswith("wait policy from the environment: OMP_WAIT_POLICY=active"), line
    # How threads wait moves no number.
    assert loss == loss_spin == loss_wait, (loss, loss_spin, loss_wait)


def test_each_rank_of_an_mpirun_executes_itself_with_the_policy(tmp_path):
    # Executing again before MPI_Init keeps the rank's process and its launcher's environment: the
    # ranks start, rank 0 logs the policy, the run ends with the numbers of a run without it.
    line, loss = train(tmp_path, "mpi", {}, ranks=2)
    assert_spin_set_by_entrank(line)
    line_active, loss_active = train(tmp_path, "mpi-active", {"OMP_WAIT_POLICY": "active"}, ranks=2)
    assert line_active.endswith("OMP_WAIT_POLICY=active"), line_active
    assert loss == loss_active, (loss, loss_active)
