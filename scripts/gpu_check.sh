#!/usr/bin/env bash
# The `--device cuda` check, for a machine with a GPU (CI has none, so no test can do it): train on the
# GPU with the defaults (bf16 autocast where the GPU supports it), with --precision fp32 and with
# --compile, export and verify parity on the CPU, read the examples, and ask for more processes than
# GPUs (one clear line expected). The run directory is packed into OUT/run.tar.part-* so the
# GPU-trained checkpoint can be exported and verified again on a machine without CUDA.
#
#   OUT=/tmp/gpu bash scripts/gpu_check.sh                       # on the GPU machine, from the repository root
#   PY=.venv/bin/python DEVICE=cpu EPOCHS=1 bash scripts/gpu_check.sh   # the script itself, here
set -euo pipefail
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-25}
OUT=${OUT:-runs/gpu-check}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { echo; echo "== $*"; }

step "machine"
"$PY" - <<'EOF'
import platform
import onnx, onnxruntime, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, onnx {onnx.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, GPU: {gpu}, bf16: {torch.cuda.is_available() and torch.cuda.is_bf16_supported()}")
EOF

step "train --device $DEVICE (defaults, $EPOCHS epochs)"
"$PY" -m pipeline train --device "$DEVICE" --epochs "$EPOCHS" --out "$work/run" --quiet
step "export (on the CPU) and verify"
"$PY" -m pipeline export --run "$work/run"
"$PY" -m pipeline verify "$work/run/model.onnx"
step "serve predict examples/"
"$PY" -m serve predict --model "$work/run/model.onnx" examples/ || echo "serve predict exit status $?"

step "train --device $DEVICE --precision fp32"
"$PY" -m pipeline train --device "$DEVICE" --precision fp32 --epochs "$EPOCHS" --out "$work/fp32" --quiet

step "train --device $DEVICE --compile (300 steps)"
"$PY" -m pipeline train --device "$DEVICE" --compile --max-steps 300 --out "$work/compiled" --quiet
"$PY" -m pipeline export --run "$work/compiled"

step "more processes than GPUs (expected: one line naming the problem, exit status 1)"
gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count())')
set +e
"$PY" -m pipeline train --device "$DEVICE" --nproc $((gpus + 1)) --max-steps 2 --out "$work/toomany" --quiet \
    2>"$work/toomany.err"
echo "exit status $?"
set -e
grep -v '^\s*$' "$work/toomany.err" | grep -i -m 5 'error' || true

step "results"
for run in run fp32 compiled; do
    "$PY" - "$work/$run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
m = json.loads((run / "metrics.json").read_text())
final = {k: v for k, v in m.items() if not isinstance(v, (list, dict))}
print(run.name, json.dumps(final, sort_keys=True))
EOF
done
cp "$work"/run/parity.json "$OUT/parity.json"
tar -C "$work" -cf - run | split -b 15M - "$OUT/run.tar.part-"
ls -la "$OUT"
