#!/usr/bin/env bash
# The GPU check on a lent GPU machine (issue 14), as one prepared command:
#   bash scripts/device_run.sh            # from the repository root; results in $OUT
# That machine's python3 has torch (CUDA), Lightning, numpy, scipy, scikit-image, ... but
# not Hydra, OmegaConf or zarr, and it reaches no package index: carry them as wheels in
# .whl/ (README "GPU check" gives the pip download commands). Every check requires CUDA
# (--device cuda), the whole run stays within BUDGET seconds (default 470), and each
# check's JSON line is written to $OUT/gpu_check.jsonl as soon as it ends.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpucheck-work}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/pip.txt" 2>&1 || { cat "$OUT/pip.txt"; exit 3; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled MPLBACKEND=Agg \
  PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import sys,torch,hydra,omegaconf,zarr,pytorch_lightning as pl;print(sys.version.split()[0],torch.__version__,torch.version.cuda,torch.cuda.is_available(),hydra.__version__,zarr.__version__,pl.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
"$PY" scripts/gpu_check.py --out "$OUT/gpu_check.jsonl" --device cuda \
  --budget "${BUDGET:-470}" --workdir "$WORK" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
# every check's log (train.log, sweep.log, ... and the child's own), for failures
(cd "$WORK" 2>/dev/null && find . -name '*.log' -o -name '*.result.json' -o -name plan.json \
  | tar czf "$OUT/logs.tgz" -T -) || true
exit "$rc"
