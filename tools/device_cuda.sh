#!/usr/bin/env bash
# One call on a GPU machine (device tool): versions, then the parts named as arguments
# (default: all) - tests (the CUDA tests on the real GPU), lab (tools/cuda_gemm_lab.py),
# profile (tools/cuda_step_profile.py), overhead (tools/cuda_overhead.py), bench
# (fastbp bench --device cuda), first (tools/cuda_first_call.py with an empty, then a
# warm Numba cache).  Logs go to $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
# numba-cuda 0.30.4 calls numpy.row_stack, which numpy 2.5 removed: carry numpy<2.5 as a
# wheel in .whl (see /work/.library/device/README.md) when the machine's numpy is newer.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade -q \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import numba, numba_cuda, torch, numpy; print('numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
parts=${*:-tests lab profile overhead bench first}
for part in $parts; do
  t=$(date +%s)
  case $part in
    tests) FASTBP_CUDA_TESTS=1 python3 -m pytest -q -p no:cacheprovider tests/cuda 2>&1 \
             | tee "$OUT/cuda_tests.log" | tail -5;;
    lab) python3 tools/cuda_gemm_lab.py 2>&1 | tee "$OUT/lab.log";;
    profile) python3 tools/cuda_step_profile.py 2>&1 | tee "$OUT/profile.log";;
    overhead) python3 tools/cuda_overhead.py 2>&1 | tee "$OUT/overhead.log";;
    bench) python3 -m fastbp bench --device cuda 2>&1 | tee -a "$OUT/bench.log";;
    first) rm -rf /tmp/fastbp_first_cache
           for run in cold warm; do echo -n "$run: "
             NUMBA_CACHE_DIR=/tmp/fastbp_first_cache python3 tools/cuda_first_call.py; done;;
  esac
  echo "== $part took $(( $(date +%s) - t )) s"
done
