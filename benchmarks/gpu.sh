#!/usr/bin/env bash
# Everything this project measures on a GPU, as one prepared script of about 9 minutes (a lent
# machine's whole budget is short: run it once, keep its output).
#
#   bash benchmarks/gpu.sh [OUT_DIR]        # default OUT_DIR: runs/gpu (or $OUT where set)
#
# 1. benchmarks/gpu.py: MFU of the MLM train step in f32 and bf16, XLA vs fused (cuDNN)
#    attention, evaluation tokens/s at 1024-4096           -> OUT/performance_gpu.md  (<= 4 min)
# 2. The length study at the post's scale: a RoFormer-small-size model (width 384, 6 layers,
#    6 heads, MLP 1536, RoPE) trained at 64 on the shipped Chinese novel, standard vs log-n,
#    seed 0, evaluated at 64 ... 4096. The steps are sized from a 100-step probe so that each
#    run trains for LENGTH_SECONDS (default 150)             -> OUT/length_post_scale.md
# Logs of every step go to OUT/*.log. Nothing here is needed by the project or its tests.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-runs/gpu}}
LENGTH_SECONDS=${LENGTH_SECONDS:-150}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
began=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" >> "$OUT_DIR/gpu.txt" 2>&1

if [ -z "${SKIP_PERF:-}" ]; then
  timeout -s TERM 270 python benchmarks/gpu.py --out "$OUT_DIR/performance_gpu.md" \
      > "$OUT_DIR/performance_gpu.log" 2>&1 || echo "gpu.py: exit $? (see performance_gpu.log)"
fi

CONFIG=configs/mlm_extrapolation.py
# MODEL and LENGTHS may be overridden (e.g. a tiny model, to check the script on a CPU)
MODEL=${MODEL:-width=384,layers=6,heads=6,mlp=1536,lr=1e-3}
BATCH=${BATCH:-128}
LENGTHS=${LENGTHS:-64+128+256+512+1024+2048+4096}
probe="$OUT_DIR/runs/probe"
python train.py --config "$CONFIG:$MODEL,batch=$BATCH,steps=100,warmup=10,lengths=64" --workdir "$probe" \
    --overwrite --progress=false > "$OUT_DIR/probe.log" 2>&1
steps=$(python - "$probe/metrics.jsonl" "$LENGTH_SECONDS" "$BATCH" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if '"tokens_per_sec"' in line]
tokens_per_sec = max(r["tokens_per_sec"] for r in rows)
steps = int(float(sys.argv[2]) * tokens_per_sec / (int(sys.argv[3]) * 64)) // 100 * 100
print(max(500, min(steps, 50000)))
EOF
)
echo "probe: $(tail -n 1 "$probe/metrics.jsonl"); steps per run: $steps" | tee "$OUT_DIR/length.log"
for scale in standard logn; do
  python train.py --config "$CONFIG:$MODEL,batch=$BATCH,lengths=$LENGTHS,scale=$scale,steps=$steps,warmup=$((steps / 15)),entropy=true" \
      --workdir "$OUT_DIR/runs/scale-$scale" --progress=false >> "$OUT_DIR/length.log" 2>&1 \
      || echo "scale=$scale: exit $?" | tee -a "$OUT_DIR/length.log"
done
{
  echo "# The length study at the post's scale (one GPU, seed 0, $steps steps of $BATCH x 64)"
  echo
  echo "Commands: benchmarks/gpu.sh (model: $MODEL, batch $BATCH), commit $(git rev-parse --short HEAD)."
  echo
  python evaluate.py --workdirs "$OUT_DIR"/runs/scale-* --table --baseline scale=standard
  echo
  python evaluate.py --workdirs "$OUT_DIR"/runs/scale-* --table --entropy
  echo
  echo "Wall time of benchmarks/gpu.sh: $(( $(date +%s) - began )) s."
} > "$OUT_DIR/length_post_scale.md" 2>&1
cat "$OUT_DIR/length_post_scale.md"
