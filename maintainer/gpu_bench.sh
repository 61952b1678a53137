#!/usr/bin/env bash
# Issue 6's device check in one call (~3 minutes on an H100): the bench with every PAG
# implementation, torch.compile'd `explicit` included, plus a profile of the explicit steps.
# It is the command and log behind the GPU tables in docs/bench/README.md.
#
#   PAGDEMO_COMMIT=<sha> bash maintainer/gpu_bench.sh        # on the GPU machine, repo root
#   DEVICE=cpu SMALL=1 bash maintainer/gpu_bench.sh          # CPU dry run (tiny model, no compile)
#
# If the full bench cannot finish in time (a compile that hangs, say), an eager-only bench runs
# instead, so the call still brings back numbers.
set -u
RUNS=${RUNS:-runs/gpu-bench}
DEVICE=${DEVICE:-cuda}
FULL_LIMIT=${FULL_LIMIT:-420}  # seconds for the full bench; compiling takes ~50 s per batch size on an H100
mkdir -p "$RUNS"
export PYTHONUNBUFFERED=1
log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$RUNS/session.log"; }
for whl in .stage/*.whl; do  # torchattacks is not installed on the GPU machine: carried as a wheel
  [ -f "$whl" ] && python -m pip install -q --no-deps --no-index "$whl" 2>&1 | tail -1
done
if [ -n "${SMALL:-}" ]; then
  COMMON=(--device "$DEVICE" --small --model tinycnn --batch-sizes 8 --repeats 1 --warmup 1 --pgd-repeats 1)
  IMPLS=(loop batched vmap explicit sampled-k1); PROFILE=(explicit)
else
  COMMON=(--device "$DEVICE" --channels-last --warmup 2 --repeats 5)
  IMPLS=(loop batched vmap explicit compiled sampled-k1); PROFILE=(loop explicit compiled)
fi
log "start: $(python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")') commit ${PAGDEMO_COMMIT:-?}"
log "bench: ${COMMON[*]} --impls ${IMPLS[*]} --profile ${PROFILE[*]}"
timeout "$FULL_LIMIT" python -m pagdemo.bench "${COMMON[@]}" --impls "${IMPLS[@]}" --profile "${PROFILE[@]}" \
  --json "$RUNS/bench.json" >"$RUNS/bench.log" 2>&1
rc=$?
log "bench rc=$rc"
if [ "$rc" -ne 0 ]; then
  EAGER=("${IMPLS[@]/compiled}")
  log "fallback bench without compiled: --impls ${EAGER[*]}"
  timeout 150 python -m pagdemo.bench "${COMMON[@]}" --impls ${EAGER[*]} --profile explicit \
    --json "$RUNS/bench-eager.json" >"$RUNS/bench-eager.log" 2>&1
  log "fallback bench rc=$?"
fi
log "done"
