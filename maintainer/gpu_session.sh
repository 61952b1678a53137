#!/usr/bin/env bash
# One rented-GPU session, end to end: benchmark, then train, evaluate and audit the shipped
# checkpoints, each stage inside a time budget (our GPU slots are ~15 minutes, start included).
# It is the command, settings and log behind every GPU number in README.md and checkpoints/.
#
#   bash maintainer/gpu_session.sh                                 # on the GPU machine, repo root
#   DATASET=synthetic DEVICE=cpu SMALL=1 bash maintainer/gpu_session.sh   # CPU dry run of every stage
#
# Stages (each logged to $RUNS/session.log with seconds since start):
#  1. bench: python -m pagdemo.bench (every exact PAG implementation, PGD vs torchattacks, app grid)
#  2. wait for the lossless CIFAR-10 (staged over several device calls) and check its SHA256SUMS
#  3. train concurrently: vanilla, FGSM-RS adversarial linf and l2 (the judges / RIGD teachers), and
#     PAG Class Mean with the fastest exact implementation the bench found, its epochs sized to fit
#  4. eval: PGD-20 linf 8/255 and l2 0.5 on the full test set (the paper's Table 1 settings)
#  5. audit (linf, then l2): masking checks, AutoAttack standard and the PAG score on a fixed subset
#  6. bench the torch.compile'd implementation, if time is left
set -u
RUNS=${RUNS:-runs/gpu}
DATASET=${DATASET:-cifar10}
DATA_DIR=${DATA_DIR:-.stage/cifar10}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-600}            # seconds for the whole session
TRAIN_END=${TRAIN_END:-290}      # training must be done by then (seconds since start)
EVAL_END=${EVAL_END:-420}
PAG_SECONDS=${PAG_SECONDS:-190}  # the PAG run's share of the training stage
AUDIT_LIMIT=${AUDIT_LIMIT:-500}
AUDIT_RESTARTS=${AUDIT_RESTARTS:-2}
mkdir -p "$RUNS"
export PYTHONUNBUFFERED=1
[ -f .stage/COMMIT ] && export PAGDEMO_COMMIT=$(cat .stage/COMMIT)
log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$RUNS/session.log"; }
left() { echo $(( $1 - SECONDS > 5 ? $1 - SECONDS : 5 )); }

if [ -n "${SMALL:-}" ]; then  # tiny settings for the CPU dry run
  BENCH=(--small --model tinycnn --batch-sizes 8 --repeats 1 --warmup 1)
  TRAIN=(--dataset "$DATASET" --limit 256 --batch-size 64 --monitor-limit 64 --monitor-robust 16)
  EPOCHS=(2 1 1); EVAL=(--limit 64); AUDIT=(--limit 32 --pag-limit 4 --pag-steps 5 --autoattack lite)
else
  BENCH=(--channels-last --warmup "${BENCH_WARMUP:-2}" --repeats "${BENCH_REPEATS:-5}")
  TRAIN=(--dataset "$DATASET" --data-dir "$DATA_DIR" --recipe fast)
  EPOCHS=("${VANILLA_EPOCHS:-15}" "${ADV_LINF_EPOCHS:-10}" "${ADV_L2_EPOCHS:-8}"); EVAL=(--data-dir "$DATA_DIR"); AUDIT=(--data-dir "$DATA_DIR" --limit "$AUDIT_LIMIT" --autoattack standard)
fi
log "start: $(python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")') commit ${PAGDEMO_COMMIT:-?}"

log "1. bench"
timeout 120 python -m pagdemo.bench --device "$DEVICE" "${BENCH[@]}" --impls loop batched vmap explicit sampled-k1 \
  --json "$RUNS/bench.json" >"$RUNS/bench.log" 2>&1
log "bench rc=$?"
read -r IMPL SPEED < <(python - "$RUNS/bench.json" <<'EOF'
import json, sys
try:
    rows = [r for r in json.load(open(sys.argv[1]))["train_step"] if "img_per_s" in r and r["case"] not in ("vanilla", "sampled-k1")]
    best = max((r for r in rows if r["batch"] == max(x["batch"] for x in rows)), key=lambda r: r["img_per_s"])
    print(best["case"], best["img_per_s"])
except Exception:
    print("batched", 400)
EOF
)
PAG_EPOCHS=$(python -c "print(max(1, min(30, int($PAG_SECONDS * 0.7 * $SPEED / 50000))))")
[ -n "${SMALL:-}" ] && PAG_EPOCHS=1
PAG_EPOCHS=${FORCE_PAG_EPOCHS:-$PAG_EPOCHS}
log "PAG: impl $IMPL at $SPEED img/s in the bench -> $PAG_EPOCHS epochs"

if [ "$DATASET" = cifar10 ]; then
  log "2. waiting for the data"
  until [ -f "$DATA_DIR/train-2.npz" ] && (cd "$DATA_DIR" && sha256sum --quiet -c SHA256SUMS); do
    [ "$SECONDS" -gt 240 ] && { log "data never arrived complete"; exit 1; }
    sleep 3
  done
  log "data ok"
fi

log "3. train"
T=$(left "$TRAIN_END")
timeout "$T" python -m pagdemo train --method vanilla "${TRAIN[@]}" --epochs "${EPOCHS[0]}" --out "$RUNS/vanilla" >"$RUNS/train-vanilla.log" 2>&1 &
timeout "$T" python -m pagdemo adv-train --norm linf --attack fgsm "${TRAIN[@]}" --epochs "${EPOCHS[1]}" --out "$RUNS/adv-linf" >"$RUNS/train-adv-linf.log" 2>&1 &
timeout "$T" python -m pagdemo adv-train --norm l2 --eps 0.5 --attack fgsm "${TRAIN[@]}" --epochs "${EPOCHS[2]}" --out "$RUNS/adv-l2" >"$RUNS/train-adv-l2.log" 2>&1 &
timeout "$T" python -m pagdemo train --method cm --pag-impl "$IMPL" "${TRAIN[@]}" --epochs "$PAG_EPOCHS" --out "$RUNS/pag-cm" >"$RUNS/train-pag-cm.log" 2>&1 &
wait
MODELS=(vanilla pag-cm adv-linf adv-l2)
for m in "${MODELS[@]}"; do log "trained $m: $(tail -c 300 "$RUNS/$m/train_log.jsonl" 2>/dev/null | tail -1)"; done

log "4. eval PGD-20"
T=$(left "$EVAL_END")
for m in "${MODELS[@]}"; do
  for n in linf l2; do
    timeout "$T" python -m pagdemo eval --checkpoint "$RUNS/$m" --norm "$n" "${EVAL[@]}" --device "$DEVICE" >"$RUNS/eval-$m-$n.log" 2>&1 &
  done
done
wait
log "eval done"

log "5. audits"
judge() { case $1 in adv-linf) echo "$RUNS/adv-l2" ;; *) echo "$RUNS/adv-linf" ;; esac; }
for n in linf l2; do
  T=$(left $(( BUDGET - 40 )))
  [ "$T" -le 30 ] && { log "no time left for the $n audits"; break; }
  for m in "${MODELS[@]}"; do
    timeout "$T" python -m pagdemo audit --checkpoint "$RUNS/$m" --norm "$n" --vanilla "$RUNS/vanilla" --judge "$(judge "$m")" \
      --aa-backend torchattacks --restarts "$AUDIT_RESTARTS" "${AUDIT[@]}" --device "$DEVICE" >"$RUNS/audit-$m-$n.log" 2>&1 &
  done
  wait
  log "$n audits done"
done

if [ "$DEVICE" = cuda ] && [ $(( BUDGET - SECONDS )) -gt 60 ]; then
  log "6. bench compiled"
  timeout $(( BUDGET - SECONDS - 10 )) python -m pagdemo.bench --device cuda "${BENCH[@]}" --batch-sizes 256 --impls loop explicit compiled \
    --json "$RUNS/bench-compiled.json" >"$RUNS/bench-compiled.log" 2>&1
  log "bench compiled rc=$?"
fi
log "session done"
