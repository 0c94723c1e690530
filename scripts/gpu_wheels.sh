#!/usr/bin/env bash
# The wheels scripts/gpu_recipe.sh needs on the lent GPU machine (Python 3.12, PyTorch,
# Lightning, NumPy, SciPy, xarray, numba, typer, rich and matplotlib already there; no
# network): downloaded here into .whl/, which git ignores, carried there with the working tree
# (`carry: [".whl"]`, about 24 MB; the tracked tree is about 23 MB, the limit 64).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
  manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl \
  cholespy pymetis netCDF4 cftime global-land-mask jsonargparse docstring-parser \
  typeshed-client dask distributed partd locket tblib zict tornado
du -sh .whl
