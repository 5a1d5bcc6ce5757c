"""The repository's documents stand on their own (issue 17).

- README.md, every docs/*.md and the directories' READMEs (slurm/, jobs/) link only to files that
  exist in the repository: Markdown links and images (relative to the document), anchors of the
  document linked (GitHub's heading slugs), and bare repository paths such as `docs/design.md` or
  `src/sga.c` (relative to the root).
- No file of the repository refers to the specification outside it (`../shared`, `DESIGN.md`,
  "DESIGN section N"): a user who clones the repository does not have it. The posts may still be
  cited as seeds/000..002; docs/design.md says what those are.
"""
import glob
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Top-level directories whose paths the documents cite bare (`src/sga.c`, `configs/tiny.cfg`).
CITED_DIRS = ("src", "cuda", "docs", "configs", "jobs", "slurm", "analysis", "tools", "tests")

# A bare path: one of CITED_DIRS, then path characters; globs (*) and placeholders (<date>) included.
BARE_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*<>+-]*)" % "|".join(CITED_DIRS))
MD_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")

# References to the specification outside the repository.
# "DESIGN section" may be split over two comment lines ("(DESIGN\n// section 5)").
OUTSIDE_SPEC = re.compile(r"\.\./shared\b|\bDESIGN\.md\b|\bDESIGN(?:\s|//|#|\*)*sections?\b|\bDESIGN(?:'s|,)")

# Files allowed to contain those strings: this test (it names them).
SPEC_EXEMPT = {"tests/test_docs_links.py"}


def documents():
    """README.md, docs/**/*.md, and the READMEs of the top-level directories (slurm/, jobs/)."""
    docs = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    readmes = sorted(glob.glob(os.path.join(ROOT, "*", "README.md")))
    return [os.path.join(ROOT, "README.md")] + docs + readmes


def rel(path):
    return os.path.relpath(path, ROOT)


def slug(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)   # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    in_fence = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                base = slug(m.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                out.add(base if n == 0 else "%s-%d" % (base, n))
    return out


def inside_repo(path):
    real = os.path.realpath(path)
    return real == ROOT or real.startswith(ROOT + os.sep)


def bare_path_exists(path):
    """A cited repository path exists (a program: its source); a glob matches something; a
    placeholder's directory exists."""
    path = path.rstrip(".,:;")
    if "<" in path or ">" in path or "NAME" in path:
        # A pattern with placeholders (bench/results/gpu-<date>-<gpu>.txt, src/attn_NAME.c): its
        # fixed directory part must exist.
        head = re.split(r"[<>]|NAME", path)[0]
        return os.path.isdir(os.path.join(ROOT, os.path.dirname(head) or "."))
    if "*" in path:
        return bool(glob.glob(os.path.join(ROOT, path)))
    full = os.path.join(ROOT, path)
    if path.endswith("/"):
        return os.path.isdir(full)
    # A program named without extension (tests/gpu_mpi_nccl) is cited by its source.
    return os.path.exists(full) or (not os.path.splitext(path)[1] and any(os.path.exists(full + e) for e in (".c", ".cu", ".cpp")))


def broken_links(doc):
    """(line number, target, reason) for every link of `doc` that does not resolve."""
    bad = []
    here = os.path.dirname(doc)
    own_anchors = anchors(doc)
    in_fence = False
    with open(doc, encoding="utf-8") as f:
        lines = f.readlines()
    for no, line in enumerate(lines, 1):
        if FENCE.match(line):
            in_fence = not in_fence
        if not in_fence:
            for target in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                if not path:
                    if anchor not in own_anchors:
                        bad.append((no, target, "no heading with this anchor in the document"))
                    continue
                full = os.path.normpath(os.path.join(here, path))
                if not inside_repo(full):
                    bad.append((no, target, "points outside the repository"))
                elif not os.path.exists(full):
                    bad.append((no, target, "no such file"))
                elif anchor and full.endswith(".md") and anchor not in anchors(full):
                    bad.append((no, target, "no heading with this anchor in %s" % rel(full)))
        # Bare paths count in code blocks too: commands name real files.
        for path in BARE_PATH.findall(line):
            if not bare_path_exists(path):
                bad.append((no, path, "cited path does not exist"))
    return bad


@pytest.mark.parametrize("doc", documents(), ids=rel)
def test_document_links_resolve(doc):
    bad = broken_links(doc)
    assert not bad, "%s:\n%s" % (rel(doc), "\n".join("  line %d: %s: %s" % b for b in bad))


def test_design_documents_exist_and_are_linked():
    """README links the design document, and the design document the code-structure page."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "docs/design.md" in readme
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
        design = f.read()
    assert "architecture.md" in design


def repository_files():
    """Tracked and untracked-but-not-ignored files; hidden top-level paths (.ci, .git) excluded."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", ".", ":!:.*"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode()
        files = [p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("bin", "build", "build-emu", "runs", "data")]
            files += [rel(os.path.join(d, n)) for n in names]
    return sorted(p for p in files if not p.startswith(".") and os.path.isfile(os.path.join(ROOT, p)))


def test_no_reference_to_the_specification_outside_the_repository():
    found = []
    for path in repository_files():
        if path in SPEC_EXEMPT:
            continue
        with open(os.path.join(ROOT, path), "rb") as f:
            data = f.read()
        if b"\0" in data[:8192]:   # binary
            continue
        text = data.decode("utf-8", "replace")
        for m in OUTSIDE_SPEC.finditer(text):
            no = text.count("\n", 0, m.start()) + 1
            found.append("%s:%d: %s" % (path, no, text.splitlines()[no - 1].strip()[:120]))
    assert not found, "references to a document outside the repository (cite docs/design.md instead):\n" + "\n".join(found)


def test_design_reference_code_runs_and_is_causal():
    """docs/design.md's NumPy reference code executes, and has the properties the text states:
    an orthogonal DCT, causal rows, alpha = 0 giving the scores back, PR of an isotropic stream = D."""
    np = pytest.importorskip("numpy")
    with open(os.path.join(ROOT, "docs", "design.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    ns = {}
    for block in blocks:
        exec(block, ns)
    rng = np.random.default_rng(0)
    T, De, Hg = 12, 3, 5
    M = ns["dct_matrix"](T)
    assert np.allclose(M @ M.T, np.eye(T))
    params = (rng.normal(size=De), rng.normal(size=(Hg, De + 4)), rng.normal(size=Hg), rng.normal(size=(T, Hg)),
              rng.normal(size=T))
    a = rng.normal(size=(T, T))
    out, stats = ns["sga_logits"](a, *params, 0.3)
    b = a.copy()
    b[np.triu_indices(T, 1)] = rng.normal(size=T * (T - 1) // 2)   # change only what rows must not see
    out_b, _ = ns["sga_logits"](b, *params, 0.3)
    assert np.array_equal(out, out_b)
    assert stats.shape == (T, 4) and np.all(np.isfinite(stats))
    out0, _ = ns["sga_logits"](a, *params, 0.0)
    tri = np.tri(T, dtype=bool)
    assert np.allclose(out0[tri], a[tri]) and np.all(np.isneginf(out0[~tri]))
    assert abs(ns["pr"](np.eye(8)) - 8) < 1e-12
