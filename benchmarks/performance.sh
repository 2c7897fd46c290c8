#!/usr/bin/env bash
# The CPU performance page: five measurements in sequence, each in its own process, every
# ratio measured within one process (or one interleaved run), on an otherwise idle machine.
# About 11 minutes on 2 idle CPU cores (estimated: peers ~3, throughput ~2.5, eval ~2,
# remat ~2, devices ~2); --quick: tiny shapes, ~2.5 minutes of CPU, a check that the chain
# works.
#
#   bash benchmarks/performance.sh [--quick] [OUT]
#        # OUT default: docs/results/performance.md (--quick: runs/performance_quick.md)
#
# 1. benchmarks/peers.py: our MLM train step vs HF RoFormer in PyTorch and in Flax, same
#    model and data, timed in turn, at training lengths 64 and 128
# 2. benchmarks/mlm_throughput.py --vocab 8000: our step vs the f32 matmul peak and the
#    bare-products stand-ins
# 3. benchmarks/performance.py --section eval: evaluation tokens/s at 1024-4096 (study model)
# 4. benchmarks/performance.py --section remat: model.remat's memory and time at 512
# 5. benchmarks/performance.py --section devices: the step on 1 vs 8 host devices
# The page keeps the written analysis (from '## Reading' on) of the page it replaces; a new
# page gets a placeholder there. Logs of every section go to OUT's name with .logs/.
# Not on the page, its own command: where section 2's step loses to its stand-in, one piece
# removed at a time (benchmarks/step_gap.py; a few minutes a length on 2 idle cores):
#   python benchmarks/performance.py --section gap [--gap_lengths 128,64] [--gap_clock cpu] \
#       [--out docs/results/performance_gap.md]
set -uo pipefail
cd "$(dirname "$0")/.."
QUICK=""
if [ "${1:-}" = "--quick" ]; then QUICK=--quick; shift; fi
if [ -n "$QUICK" ]; then DEFAULT_OUT=runs/performance_quick.md; else DEFAULT_OUT=docs/results/performance.md; fi
OUT=${1:-$DEFAULT_OUT}
LOGS="${OUT%.md}.logs"
mkdir -p "$LOGS" "$(dirname "$OUT")"
rm -f "$LOGS"/*.md "$LOGS"/*.log "$LOGS"/*.seconds
export PYTHONUNBUFFERED=1
began=$(date +%s)

section() {  # NAME COMMAND...: runs it with --out LOGS/NAME.md, its output in LOGS/NAME.log
  local name=$1 start
  shift
  start=$(date +%s)
  echo "$name: $*"
  "$@" --out "$LOGS/$name.md" > "$LOGS/$name.log" 2>&1 || echo "$name: exit $? (see $LOGS/$name.log)"
  echo $(( $(date +%s) - start )) > "$LOGS/$name.seconds"
}

section peers python benchmarks/peers.py $QUICK
if [ -n "$QUICK" ]; then
  section throughput python benchmarks/mlm_throughput.py --quick
else
  section throughput python benchmarks/mlm_throughput.py --vocab 8000
fi
section eval python benchmarks/performance.py --section eval $QUICK
section remat python benchmarks/performance.py --section remat $QUICK
section devices python benchmarks/performance.py --section devices $QUICK

python - "$OUT" "$LOGS" "$(( $(date +%s) - began ))" "$QUICK" <<'EOF'
import os, re, sys
out, logs, seconds, quick = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = ["peers", "throughput", "eval", "remat", "devices"]
reading = "\n## Reading\n\n(PLACEHOLDER: to be written from the numbers above.)\n"
if os.path.exists(out):
  old = open(out, encoding="utf-8").read()
  reading = old[old.index("\n## Reading"):] if "\n## Reading" in old else reading
parts = [f"# Performance on a CPU\n\nMade by `bash benchmarks/performance.sh{' --quick' if quick else ''}` "
         f"in {seconds} s (each section's own wall time, imports and compilation included, "
         "under its table)." + (" QUICK: tiny shapes, not a measurement." if quick else "")]
for i, name in enumerate(names, 1):
  wall = open(f"{logs}/{name}.seconds").read().strip()
  path = f"{logs}/{name}.md"
  if os.path.exists(path):
    text = open(path, encoding="utf-8").read().rstrip()
    text = re.sub(r" --out \S+`", "`", text)  # the command as a reader runs it
    text = re.sub(r"^# ", f"## {i}. ", text, count=1)
  else:  # a failed section: what it printed last
    tail = open(f"{logs}/{name}.log", encoding="utf-8").read().splitlines()[-15:]
    text = f"## {i}. {name}: FAILED\n\n```\n" + "\n".join(tail) + "\n```"
  parts.append(f"{text}\n\nSection wall time: {wall} s.")
with open(out, "w", encoding="utf-8") as f:
  f.write("\n\n".join(parts) + "\n" + reading)
print(f"wrote {out}")
EOF
