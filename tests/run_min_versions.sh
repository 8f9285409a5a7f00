#!/usr/bin/env bash
# Runs the model and image-processing tests against the lowest transformers version setup.cfg declares, in a throwaway
# venv (MIN_VENV, default /tmp/eomt-min-versions; torch stays at 2.13.0 CPU, the other packages at what pip resolves).
# Extra arguments go to pytest, e.g. `bash tests/run_min_versions.sh -x tests/modeling/test_modeling.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MIN_VENV:-/tmp/eomt-min-versions}
PYTHON=${PYTHON:-python3}
MIN_TRANSFORMERS=$(sed -n 's/^ *transformers>=\([0-9.]*\).*/\1/p' setup.cfg)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" "transformers==$MIN_TRANSFORMERS"
"$VENV/bin/python" -c "import transformers; print('transformers', transformers.__version__)"
TESTS=(tests/modeling tests/image_processing tests/test_import_graph.py)
[ $# -gt 0 ] && TESTS=("$@")
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
