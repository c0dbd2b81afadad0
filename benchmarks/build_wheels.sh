#!/usr/bin/env bash
# Fills benchmarks/wheels/ with what gpu_check.sh installs (benchmarks/gpu_requirements.txt), for
# CPython 3.11-3.13 on x86-64 Linux, plus moalign's own wheel. Needs network (PyPI); run it where the
# checkout is, then hand the folder to the GPU machine (device tool: carry=["benchmarks/wheels"]).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
OUT=$HERE/wheels
mkdir -p "$OUT"
REQS=$(grep -v '^#' "$HERE/gpu_requirements.txt" | awk 'NF {print $1}')
for v in 3.11 3.12 3.13; do  # trl 1.16 needs >= 3.11
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --python-version "$v" --implementation cp -d "$OUT" $REQS
done
"$PY" -m pip wheel -q --no-deps -w "$OUT" "$HERE/.."
du -sh "$OUT"
