"""Shared code of the Python tools in tools/ (prepare-data, sample, export-hf, import-hf).

The tools run in the project's virtual environment .venv (made by `make deps` from
tools/requirements.txt). Started with another interpreter, a tool re-executes itself with the venv's
python, so `tools/prepare-data ...` works from any shell without activating anything."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


class BadInput(Exception):
    """Bad input: printed as one line `entrank: FILE: key/record/offset: reason`, exit 2."""


def use_venv():
    """Re-executes the running tool under .venv's python unless it already runs there."""
    if os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(ROOT, ".venv")):
        return
    if os.environ.get("ENTRANK_TOOLS_NO_VENV"):
        return  # the caller's interpreter already has the packages (e.g. a user's own environment)
    if not os.path.exists(VENV_PYTHON):
        sys.stderr.write(f"entrank: {VENV_PYTHON}: missing; run `make deps` to install the tools' Python packages\n")
        sys.exit(1)
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(sys.argv[0]), *sys.argv[1:]])


def run_main(main):
    """Calls main(); BadInput becomes its one stderr line and exit 2."""
    try:
        code = main()
    except BadInput as e:
        sys.stderr.write(f"entrank: {e}\n")
        sys.exit(2)
    sys.exit(code or 0)
