#!/usr/bin/env bash
# Run benchmarks/gpu_check.py on a GPU host that has jax, flax, optax, xarray, scipy, matplotlib,
# pytest and tqdm but no network: zarr and its wheels-only dependencies travel in .whl/.
#
#   benchmarks/gpu_check.sh --download    # here (with network): fetch the wheels into .whl/
#   benchmarks/gpu_check.sh [--quick]     # there: install .whl/ into $SITE, run the check
#
# --download fetches the versions installed in this environment for CPython 3.12 manylinux x86_64
# (PYVER=3.11 etc. to change). Other arguments are passed to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}

if [ "${1:-}" = "--download" ]; then
  pins=$("$PY" -c 'import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("zarr", "numcodecs", "donfig", "google-crc32c")))')
  echo "downloading $pins"
  # shellcheck disable=SC2086
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl $pins
  exit 0
fi

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install --no-index --no-deps --quiet --target "$SITE" .whl/*.whl
else
  echo "no wheels in .whl/ (run '$0 --download' where there is network); using installed packages" >&2
fi
PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" benchmarks/gpu_check.py "$@"
