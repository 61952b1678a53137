#!/usr/bin/env bash
# Bring a GPU session's results back through the device tool's $OUT (at most 8 files of 16 MiB):
# every small file (logs, JSON, model cards) in one results.tgz, plus the weight shards of the
# models named.   bash maintainer/gpu_collect.sh OUT_DIR [MODEL ...]
set -u
RUNS=${RUNS:-runs/gpu}
out=$1; shift
mkdir -p "$out"
tail -n 40 "$RUNS/session.log"
tar czf "$out/results.tgz" --exclude='*.safetensors' --exclude='train_state' --exclude='.train_state*' "$RUNS"
for m in "$@"; do
  [ -d "$RUNS/$m" ] || continue
  mkdir -p "$out/$m"
  cp "$RUNS/$m"/*.safetensors "$out/$m/" 2>/dev/null
  ls -la "$out/$m"
done
