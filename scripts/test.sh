#!/usr/bin/env bash
# The whole test suite, from a fresh clone (what CI runs, through .ci/run):
#   1. installs the package (editable) with its test extras into the active Python;
#   2. builds, once, a real kube-apiserver/controller-manager/kubectl v1.20 from Debian's source
#      package into ~/.cache/synergai-kube (apt-get installs golang-go etcd-server rsync jq dpkg-dev make,
#      about 490 MB; the build takes about 10 minutes on 2 cores; needs root or sudo);
#   3. lints: ruff check, ruff format --check, mypy on the public API (SYNERGAI_LINT=0 skips it);
#   4. runs pytest, printing why any test was skipped (-rs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
bash .ci/build-kube.sh
if [[ ${SYNERGAI_LINT:-1} == 1 ]]; then
    bash scripts/lint.sh
fi
exec python3 -m pytest -q -rs -p no:cacheprovider --timeout=900 "$@"
