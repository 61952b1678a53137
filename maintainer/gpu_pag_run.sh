#!/usr/bin/env bash
# One PAG training run inside one device call, with the compiled exact PAG loss (issue 6), then
# PGD-20 linf and l2 on the full lossless test set, results packed into $OUT by gpu_collect.sh.
# The lossless CIFAR-10 must already be staged in $DATA_DIR (three earlier calls carried it).
# On an H100 with --recipe fast: the first epoch takes ~85 s (compiling), each later one ~12 s;
# size TRAIN_LIMIT to fit them all, or the cosine schedule is cut short (2026-11-26: 11 of 12).
#
#   EPOCHS=12 PAGDEMO_COMMIT=<sha> bash maintainer/gpu_pag_run.sh            # on the GPU machine
#   DRY=1 OUT=/tmp/out bash maintainer/gpu_pag_run.sh                         # CPU dry run, synthetic data
set -u
RUNS=${RUNS:-runs/gpu-pag}
DATA_DIR=${DATA_DIR:-.stage/cifar10}
METHOD=${METHOD:-cm}
EPOCHS=${EPOCHS:-12}
TRAIN_LIMIT=${TRAIN_LIMIT:-240}  # seconds; the run checkpoints every epoch, so a kill keeps the last one
NAME=pag-$METHOD
mkdir -p "$RUNS"
export PYTHONUNBUFFERED=1
log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$RUNS/session.log"; }
if [ -n "${DRY:-}" ]; then
  TRAIN=(--dataset synthetic --limit 256 --arch tinycnn --batch-size 64 --device cpu); EVAL=(--dataset synthetic --limit 64 --device cpu)
else
  TRAIN=(--dataset cifar10 --data-dir "$DATA_DIR" --recipe fast); EVAL=(--data-dir "$DATA_DIR" --device cuda)
  (cd "$DATA_DIR" && sha256sum --quiet -c SHA256SUMS) || { log "staged data incomplete or corrupt"; exit 1; }
fi
log "start: $(python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")') commit ${PAGDEMO_COMMIT:-?}"
log "train: --method $METHOD --pag-impl compiled --epochs $EPOCHS ${TRAIN[*]}"
timeout "$TRAIN_LIMIT" python -m pagdemo train --method "$METHOD" --pag-impl compiled --epochs "$EPOCHS" "${TRAIN[@]}" \
  --monitor-limit 1000 --monitor-robust 200 --out "$RUNS/$NAME" >"$RUNS/train-$NAME.log" 2>&1
log "train rc=$? last epoch: $(tail -n 1 "$RUNS/$NAME/train_log.jsonl" 2>/dev/null)"
for n in linf l2; do  # one after the other: both append to the same metrics.json
  python -m pagdemo eval --checkpoint "$RUNS/$NAME" --norm "$n" "${EVAL[@]}" >"$RUNS/eval-$NAME-$n.log" 2>&1
  log "eval $n rc=$?: $(tail -n 1 "$RUNS/eval-$NAME-$n.log")"
done
RUNS=$RUNS bash maintainer/gpu_collect.sh "${OUT:-runs/out}" "$NAME"
