#!/usr/bin/env bash
# Lint and type-check: ruff (lint + format check) over the repository, mypy over the public API
# (the `synergai` namespace: its __init__ and extras, the document models in synergai.models, and the
# planner: offline planning, the online scheduler and the service model).
# Run by scripts/test.sh when SYNERGAI_LINT=1, and by pre-commit (SYNERGAI_LINT_ONLY=mypy).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
only="${SYNERGAI_LINT_ONLY:-}"
status=0
if [[ -z $only || $only == ruff ]]; then
    echo "[lint] ruff check"
    python3 -m ruff check . || status=1
    echo "[lint] ruff format --check"
    python3 -m ruff format --check . || status=1
fi
if [[ -z $only || $only == mypy ]]; then
    echo "[lint] mypy (public API)"
    # mypy cannot follow setuptools' editable package-dir mapping (models/ installs as synergai.models):
    # rebuild the installed layout from symlinks and check it there.
    TREE="$(mktemp -d)"
    trap 'rm -rf "$TREE"' EXIT
    mkdir "$TREE/synergai"
    for f in synergai/*.py synergai/py.typed; do ln -s "$ROOT/$f" "$TREE/synergai/"; done
    for d in models planner executor experiments profiling_data; do ln -s "$ROOT/$d" "$TREE/synergai/$d"; done
    (cd "$TREE" && python3 -m mypy --config-file "$ROOT/pyproject.toml" --cache-dir "$TREE/.mypy_cache" \
        -p synergai.models -m synergai -m synergai.extras -m synergai.planner -m synergai.planner.service \
        -m synergai.planner.online -m synergai.planner.offline -m synergai.planner.candidates \
        -m synergai.planner.milp -m synergai.planner.decode -m synergai.planner.packing -m synergai.planner.solvers) \
        || status=1
fi
exit $status
