#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the package with its test extras,
# builds (or reuses the cached) kube-apiserver from Debian's source package, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
bash .ci/build-kube.sh
exec python3 -m pytest -q -p no:cacheprovider --timeout=900 "$@"
