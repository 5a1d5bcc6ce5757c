"""The dependency arrows run one way: train -> model -> attention variants / block hooks -> backend.

Checked on the sources as text (what a reviewer would grep): the module headers never include
model.h or train.h, the module sources never include train.h, and the schedule, the training step
and the communication layer never name an attention variant.
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src"

# Headers of the variant and hook modules and of what they are built on.
MODULE_HEADERS = ["attention_variant.h", "attn_core.h", "block_hook.h", "layer_call.h", "model_shape.h",
                  "param_spec.h", "step_context.h", "sga.h", "sga_rows.h", "r3si.h", "stream_stats.h"]
# Sources of the variants and hooks.
MODULE_SOURCES = ["attention_variants.c", "attn_core.c", "attn_sdpa.c", "attn_head_scale.c", "sga.c", "sga_tiled.c",
                  "block_hooks.c", "r3si.c", "block_drop.c", "stream_stats.c"]
# What must stay ignorant of the attention variants.
VARIANT_BLIND = [SRC / "train.c", SRC / "train.h", SRC / "schedule.c", SRC / "schedule.h", SRC / "comm.h",
                 SRC / "comm_mpi.c", SRC / "comm_groups.c", SRC / "comm_groups.h", ROOT / "cuda" / "comm_nccl.c",
                 ROOT / "cuda" / "comm_nccl.h"]


def includes(path):
    return re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M)


def variant_names():
    table = (SRC / "attention_variant.h").read_text()
    names = re.findall(r'^\s*X\("([a-z_0-9]+)",\s*(ATTENTION_[A-Z_0-9]+)\)', table, re.M)
    assert len(names) >= 3, "the variant table should list sdpa, sga and head_scale at least"
    return names


def test_module_headers_do_not_include_the_model():
    for name in MODULE_HEADERS:
        found = [i for i in includes(SRC / name) if i in ("model.h", "train.h", "checkpoint.h", "trace.h")]
        assert not found, f"src/{name} includes {found}: the arrow would point back to the model"


def test_module_sources_do_not_include_the_trainer():
    for name in MODULE_SOURCES:
        found = [i for i in includes(SRC / name) if i in ("model.h", "train.h", "checkpoint.h")]
        assert not found, f"src/{name} includes {found}"


def test_schedule_step_and_comm_layer_name_no_variant():
    words = set()
    for name, obj in variant_names():
        words |= {name, obj}
    words |= {"sga", "SGA", "sdpa", "SDPA"}
    for path in VARIANT_BLIND:
        text = path.read_text()
        hits = [w for w in words if re.search(rf"\b{re.escape(w)}\b", text)]
        assert not hits, f"{path.relative_to(ROOT)} names attention variant(s) {hits}"


def test_every_variant_in_the_table_is_defined_once():
    defined = {}
    for path in SRC.glob("*.c"):
        for obj in re.findall(r"^const AttentionVariant (ATTENTION_[A-Z_0-9]+) = \{", path.read_text(), re.M):
            defined.setdefault(obj, []).append(path.name)
    for name, obj in variant_names():
        assert defined.get(obj, []) and len(defined[obj]) == 1, f"{obj} ({name}) defined in {defined.get(obj)}"
        assert re.search(rf'\.name = "{name}"', (SRC / defined[obj][0]).read_text()), f"{obj}'s .name is not \"{name}\""
