#!/usr/bin/env bash
# Issue 35's GPU measurements in one call: iresnet beside the Residual Flows reference on one card.
#
# Runs scripts/compare_reference.py on CUDA for the mnist5k protocol and the CIFAR-10 paper
# configuration at batch 64, eager, then (where configs/train.yaml has a `compile` key) again with
# `compile=true`; writes every JSON and markdown table, the runs' logs and the card, driver, torch
# and CUDA versions under $OUT. Each comparison has its own time limit, so that one that hangs
# leaves the others' results; the exit code is the number of comparisons that failed.
#
# Prepare on a machine with PyPI (the device image lacks Hydra, OmegaConf and mlxtend), in the
# repository root, then carry both folders (`carry: [".whl", ".peers"]`):
#   echo /.whl/ >> .git/info/exclude; echo /.peers/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       hydra-core omegaconf antlr4-python3-runtime==4.9.3 mlxtend
#   mkdir -p .peers && cp -r ../shared/peers/residual-flows .peers/
# Run there: `bash scripts/compare_reference_gpu.sh` (timeout_s 420 leaves room for one rerun in
# 15 minutes of device time). Environment: OUT (default compare-gpu), PEER_DIR (default
# .peers/residual-flows), STEPS (mnist5k, default 60), CIFAR_STEPS (default 12; 0: none), BATCH
# (default 64), LIMIT_S (seconds per comparison, default 150), DEVICE (default cuda; a CPU rehearsal:
# DEVICE=cpu STEPS=4 CIFAR_STEPS=0 BATCH=8), BPD_STEPS (default 0: none; 2000 for issue 35's check):
# that many protocol steps of `iresnet-train`, compiled where it can, then its test bits/dim in
# $OUT/bpd.log, to set beside the CPU eager run of the same steps
# (`iresnet-train experiment=mnist5k_bench trainer.max_steps=2000 trainer.max_epochs=-1`).
set -u
OUT=${OUT:-compare-gpu}
PEER_DIR=${PEER_DIR:-.peers/residual-flows}
STEPS=${STEPS:-60}
CIFAR_STEPS=${CIFAR_STEPS:-12}
BATCH=${BATCH:-64}
LIMIT_S=${LIMIT_S:-150}
DEVICE=${DEVICE:-cuda}
BPD_STEPS=${BPD_STEPS:-0}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 100
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.is_available())'
    echo "CPUs: $(nproc)"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

failed=0
compare() {  # NAME PROTOCOL STEPS WARMUP [--override ...]
    local name=$1 protocol=$2 steps=$3 warmup=$4
    shift 4
    echo "== $name: $protocol, $steps steps (warm-up $warmup), batch $BATCH, $DEVICE $*"
    timeout "$LIMIT_S" python3 scripts/compare_reference.py --peer-dir "$PEER_DIR" --protocol "$protocol" \
        --device "$DEVICE" --steps "$steps" --batch-size "$BATCH" --warmup-steps "$warmup" --out "$OUT/$name.json" \
        --workdir "$OUT/runs/$name" --overwrite "$@" 2>&1 | tee "$OUT/$name.log"
    local code=${PIPESTATUS[0]}
    if [ "$code" -ne 0 ]; then
        echo "== $name failed (exit $code; 124: over $LIMIT_S s)"
        failed=$((failed + 1))
    fi
}

# Compiled steps need more warm-up: the first steps compile.
compiles=$(grep -q '^compile:' configs/train.yaml && echo yes)
compare mnist5k-eager mnist5k "$STEPS" $((STEPS / 3))
[ "$CIFAR_STEPS" -gt 0 ] && compare cifar10-paper-eager cifar10-paper "$CIFAR_STEPS" $((CIFAR_STEPS / 3))
[ -n "$compiles" ] && compare mnist5k-compiled mnist5k "$STEPS" $((STEPS / 2)) --override compile=true
[ -n "$compiles" ] && [ "$CIFAR_STEPS" -gt 0 ] &&
    compare cifar10-paper-compiled cifar10-paper "$CIFAR_STEPS" $((CIFAR_STEPS / 2)) --override compile=true
if [ "$BPD_STEPS" -gt 0 ]; then
    trainer=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)
    echo "== bits/dim after $BPD_STEPS protocol steps, trainer=$trainer ${compiles:+compile=true}"
    timeout "$LIMIT_S" python3 -m iresnet.cli.train experiment=mnist5k_bench trainer="$trainer" \
        trainer.max_steps="$BPD_STEPS" trainer.max_epochs=-1 ${compiles:+compile=true} \
        hydra.run.dir="$OUT/runs/bpd" 2>&1 | tail -n 20 | tee "$OUT/bpd.log"
    [ "${PIPESTATUS[0]}" -ne 0 ] && failed=$((failed + 1))
fi
exit "$failed"
