"""`entrank info`: parameter counts against an independent count, FLOPs formula, bubble."""
import re
import pytest


def gpt_params(L, C, V, T, ratio=4.0, tied=True):
    H = round(ratio * C)
    per_layer = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (H * C + H) + (C * H + C)
    return V * C + T * C + L * per_layer + 2 * C + (0 if tied else V * C)


@pytest.mark.parametrize("preset,L,C,V,T,approx", [
    ("gpt-48l-768", 48, 768, 32000, 512, 366e6),
    ("gpt-48l-1152", 48, 1152, 32000, 512, 800e6),
    ("gpt-32l-2048", 32, 2048, 50304, 2048, 1.7e9),
    ("gpt-24l-2048", 24, 2048, 50304, 2048, 1.3e9),
    ("tiny", 8, 64, 64, 18, 0.405e6),
])
def test_parameter_counts_match_independent_formula(entrank, preset, L, C, V, T, approx):
    out = entrank("info", "-c", f"configs/{preset}.cfg", check=0).stdout
    total = int(re.search(r"parameters: (\d+)", out).group(1))
    assert total == gpt_params(L, C, V, T)
    assert abs(total - approx) / approx < 0.03       # docs/design.md section 2's figures
    H = 4 * C
    matmul = L * (4 * C * C + 2 * H * C) + V * C
    flops = float(re.search(r"FLOPs per token \(forward\+backward\): ([0-9.e+]+)", out).group(1))
    assert abs(flops - (6 * matmul + 12 * L * C * T)) / flops < 1e-3


def test_pipeline_bubble_and_per_stage_memory(entrank):
    out = entrank("info", "-c", "configs/tiny.cfg", "--dp", "2", "--pp", "4",
                  "--set", "train.batch_size=32", "--set", "train.micro_batch_size=4", check=0).stdout
    # 32 sequences / (4 per micro-batch x dp 2) = 4 micro-batches; bubble (4-1)/(4+4-1)
    assert "4 micro-batches" in out
    assert re.search(r"bubble .* = 0\.4286", out)
    assert len(re.findall(r"^  stage \d", out, re.M)) == 4
    assert "layers 0-1" in out and "layers 6-7" in out


def test_info_and_train_refuse_the_same_r3si_config_with_the_same_line(entrank, tmp_path):
    # Issue 17's report: info printed "checkpoint blocks 14 18 22 26" for an 8-layer model that
    # train refuses. Both run validate_run now (since issue 13's structure work; this pins it).
    args = ["-c", "configs/tiny.cfg", "--set", "r3si.enabled=true"]
    info = entrank("info", *args)
    train = entrank("train", *args, "--run-dir", tmp_path / "run")
    want = "entrank: r3si.layers: block 14 does not exist in a 8-layer model (model.n_layer)"
    assert (info.returncode, info.stderr.strip(), info.stdout) == (2, want, "")
    assert (train.returncode, train.stderr.strip()) == (2, want)
    assert not (tmp_path / "run").exists()
