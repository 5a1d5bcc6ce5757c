"""OpenBLAS's kernels (src/cpu_kernels.h, src/blas_kernels.h; issue 21): entrank runs a core type
whose features the CPU has (checked here against the kernel's /proc/cpuinfo flags), never the
environment's OPENBLAS_CORETYPE when the CPU lacks what it needs (SKYLAKEX without AVX-512 was a
SIGILL at the first GEMM), says in the run log which kernels run and why, measures the sgemm
ceiling with them, and ENTRANK_CPU_FEATURES_HIDE=avx512 makes a CPU with AVX-512 run as one
without. Under every core type of the table this CPU supports, fp32 results stay within fp32's
tolerance of the fp64 oracle (tests/test_fp32_matches_fp64_oracle.c)."""
import os
import re
import subprocess

import pytest

from conftest import BIN, ROOT, TINY_TWO_STEPS, entrank_error, train_tiny_two_steps
# The C test programs: where `make test` built them (tests/run_all.sh passes its directory).
ORACLE = ROOT / os.environ.get("ENTRANK_TEST_BIN_DIR", "build/tests") / "test_fp32_matches_fp64_oracle"
# /proc/cpuinfo's name of the features whose names differ in src/cpu_kernels.c.
CPUINFO_NAME = {"sse3": "pni"}
# Settings of the runs these tests make, and cmocka's output format (the oracle's is read as text).
BLAS_ENV = ("OPENBLAS_CORETYPE", "ENTRANK_CPU_FEATURES_HIDE", "CMOCKA_MESSAGE_OUTPUT")


def cpuinfo_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    pytest.fail("/proc/cpuinfo has no flags line")


@pytest.fixture(scope="module")
def table():
    """src/cpu_kernels.c's core types ({name: [features]}) and this CPU's usable features, as the
    oracle program prints them."""
    assert ORACLE.exists(), f"{ORACLE} is missing: build the C tests (make test)"
    proc = subprocess.run([str(ORACLE), "--core-types"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    types = {m[1]: m[2].split() for m in re.finditer(r"^core-type (\w+): (.*)$", proc.stdout, re.M)}
    cpu = re.search(r"^cpu: (.*)$", proc.stdout, re.M)[1].split()
    assert "Haswell" in types and "SkylakeX" in types, proc.stdout
    return types, cpu


def supported_by_cpuinfo(features):
    flags = cpuinfo_flags()
    return all(CPUINFO_NAME.get(f, f) in flags for f in features)


def train(tmp_path, name, env_extra, ranks=0, measure_peak=False):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    if measure_peak:
        env.pop("ENTRANK_CPU_PEAK_GFLOPS", None)
    stdout, losses = train_tiny_two_steps(tmp_path, name, dict(env, **env_extra), ranks)
    blas = re.findall(r"^blas: .*$", stdout, re.M)
    assert len(blas) == 1, stdout
    kernels = re.search(r", kernels (\w+) \(", blas[0])[1]
    ceiling = re.findall(r"^throughput reference: .*$", stdout, re.M)
    return blas[0], kernels, losses, ceiling[0]


def test_the_log_names_kernels_whose_features_the_cpu_has(tmp_path, table):
    types, cpu = table
    line, kernels, losses, ceiling = train(tmp_path, "default", {}, measure_peak=True)
    # What cpuid says (the line's cpu list) is what the kernel says.
    assert set(re.search(r"; cpu: ([\w ]+)$", line)[1].split()) == set(cpu), line
    assert supported_by_cpuinfo(cpu), (cpu, sorted(cpuinfo_flags()))
    if kernels in types:
        assert supported_by_cpuinfo(types[kernels]), (line, types[kernels])
    else:
        assert "OpenBLAS's own choice" in line, line   # a type outside the table is only ever OpenBLAS's
    # The ceiling is measured in the process that trains, with the same kernels.
    assert "measured at" in ceiling and f"with OpenBLAS's {kernels} kernels" in ceiling, ceiling
    # Without AVX-512 nothing changes: OpenBLAS's own choice runs.
    if "avx512f" not in cpuinfo_flags():
        assert "(OpenBLAS's own choice)" in line, line
    else:
        assert kernels in types and "avx512f" in types[kernels], line


def test_an_unsupported_coretype_is_replaced_not_run(tmp_path, table):
    types, _ = table
    line, kernels, losses, _ = train(tmp_path, "default", {})
    # AVX-512 hidden, the environment's SKYLAKEX is one this CPU may not run, on every machine:
    # it is replaced, and the run ends normally (not with SIGILL, exit 132).
    hide = {"ENTRANK_CPU_FEATURES_HIDE": "avx512"}
    line_hidden, kernels_hidden, losses_hidden, _ = train(tmp_path, "hidden", hide)
    line_skx, kernels_skx, losses_skx, _ = train(tmp_path, "skx", {"OPENBLAS_CORETYPE": "SKYLAKEX", **hide})
    assert "the environment's OPENBLAS_CORETYPE=SKYLAKEX needs avx512f" in line_skx, line_skx
    assert "so entrank replaced it" in line_skx, line_skx
    for l, k in ((line_hidden, kernels_hidden), (line_skx, kernels_skx)):
        assert k not in types or "avx512f" not in types[k], l
        assert "forced SkylakeX" not in l and "forced Cooperlake" not in l, l
        assert supported_by_cpuinfo(types.get(k, [])), l
    if "avx512f" not in cpuinfo_flags():
        # Here hiding changes nothing, and without hiding SKYLAKEX is replaced as well.
        assert kernels_hidden == kernels and losses_hidden == losses, (line, line_hidden)
        line_plain, kernels_plain, losses_plain, _ = train(tmp_path, "skx-plain", {"OPENBLAS_CORETYPE": "SKYLAKEX"})
        assert "needs avx512f avx512cd avx512bw avx512dq avx512vl, which this CPU lacks" in line_plain, line_plain
        assert kernels_plain == kernels and losses_plain == losses, (line, line_plain)
    # The same kernels give the same numbers.
    if kernels_skx == kernels_hidden:
        assert losses_skx == losses_hidden, (line_hidden, line_skx)


def test_a_supported_coretype_from_the_environment_stands(tmp_path, table):
    types, _ = table
    line, kernels, losses, _ = train(tmp_path, "default", {})
    line_env, kernels_env, losses_env, _ = train(tmp_path, "haswell", {"OPENBLAS_CORETYPE": "haswell"})
    assert kernels_env == "Haswell" and "OPENBLAS_CORETYPE=haswell from the environment" in line_env, line_env
    if kernels == "Haswell":
        assert losses_env == losses, (line, line_env)


def test_each_rank_of_an_mpirun_replaces_an_unsupported_coretype(tmp_path):
    hide = {"ENTRANK_CPU_FEATURES_HIDE": "avx512", "OPENBLAS_CORETYPE": "SKYLAKEX"}
    line, kernels, _, _ = train(tmp_path, "mpi", hide, ranks=2)
    assert "so entrank replaced it" in line and kernels != "SkylakeX", line


def test_a_hide_list_naming_no_feature_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    env["ENTRANK_CPU_FEATURES_HIDE"] = "avx512,avx513"
    proc = subprocess.run([str(BIN), *TINY_TWO_STEPS, "--run-dir", str(tmp_path / "bad"), "--resume", "never"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    line = entrank_error(proc, 2)
    assert 'ENTRANK_CPU_FEATURES_HIDE=avx512,avx513: "avx513" is no feature entrank knows' in line, line
    assert not (tmp_path / "bad").exists()


def test_fp32_matches_the_fp64_oracle_under_every_supported_core_type(table):
    types, cpu = table
    supported = [name for name, needs in types.items() if set(needs) <= set(cpu)]
    assert supported and all(supported_by_cpuinfo(types[name]) for name in supported), supported
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    for coretype in [None, *supported]:
        run_env = dict(env, OMP_NUM_THREADS="2", **({"OPENBLAS_CORETYPE": coretype} if coretype else {}))
        proc = subprocess.run([str(ORACLE)], env=run_env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"OPENBLAS_CORETYPE={coretype}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
        running = re.search(r"^# OpenBLAS kernels: (\w+)$", proc.stdout, re.M)[1]
        if coretype:
            assert running.lower() == coretype.lower(), proc.stdout
        assert proc.stdout.count("[       OK ]") == 3, proc.stdout + proc.stderr
