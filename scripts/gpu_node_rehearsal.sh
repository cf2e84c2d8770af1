#!/usr/bin/env bash
# Rehearse the GPU check on a CPU machine, in a bare "node" Python that has only what docs/gpu.md says a GPU
# node without network has, plus the offline bundle: a step that would fail on the node for a missing module
# fails here first, before a lent GPU's minutes go to it. Needs the package index (the node venv and the
# bundle's wheels) and a built .venv. About 7 minutes on 2 cores (6 min 47 s on 2026-12-06); the steps run at toy size on the CPU.
#
#   scripts/gpu_node_rehearsal.sh            # NODE=/tmp/frft-node, PYTHON=python3 (its version picks the wheels)
#   STEPS="roles serve" scripts/gpu_node_rehearsal.sh   # reuse the node and bundle of an earlier run
set -uo pipefail
cd "$(dirname "$0")/.."
NODE="${NODE:-/tmp/frft-node}"
PYTHON="${PYTHON:-python3}"
LOGS="${LOGS:-$NODE/logs}"
STEPS="${STEPS:-setup tests bench filter sampler roles serve scale sync}"
# what docs/gpu.md assumes a GPU node has (Ray's own msgpack, protobuf and requests included); torch is
# this machine's CPU build, transformers the older one the node had when it was measured
NODE_PKGS="${NODE_PKGS:-torch==2.13.0 numpy pandas pyarrow aiohttp grpcio msgpack protobuf requests pytest
  transformers==5.17.* huggingface_hub==1.33.* sentence-transformers}"
PY="$NODE/bin/python"
SITE="$NODE-site"

if [[ " $STEPS " == *" setup "* ]]; then
  rm -rf "$NODE" "$SITE" && "$PYTHON" -m venv "$NODE" || exit 1
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $NODE_PKGS || exit 1
  "$PY" -m pip uninstall -q -y pydantic pydantic_core annotated-types typing-inspection  # the node has no pydantic
  PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') scripts/gpu_bundle.sh || exit 1
  PY="$PY" SITE="$SITE" scripts/gpu_install.sh || exit 1
fi
mkdir -p "$LOGS"
export PYTHONPATH="$SITE:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false \
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 \
  RAY_TRAIN_ENABLE_PRINT_PATCH=0
EMB=/tmp/minilm-random
failed=()
step() {  # step NAME CMD...: as scripts/gpu_check.sh's steps, at toy size on the CPU
  local name=$1; shift
  [[ " $STEPS " == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout 600 "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || { tail -n 20 "$LOGS/$name.log"; failed+=("$name"); }
}
step tests "$PY" -m pytest -m gpu -q -p no:cacheprovider $(grep -l "pytest.mark.gpu" tests/test_*.py)
step bench "$PY" benchmarks/gpu_bench.py --device cpu --shape tiny --prompt 16 --response 8 --rollout-batch 4 \
  --rollout-prompts 8 --ppo-batch 8 --ppo-minibatch 4 --ppo-micro 2 0 --ppo-steps 1 --bt-batch 4 --bt-steps 2 \
  --embed-texts 32 --embedder "$EMB" --json "$LOGS/bench.json"
step filter "$PY" benchmarks/filter_bench.py --device cpu --n 2000 --g 64
step sampler "$PY" benchmarks/sampler_bench.py --device cpu --rounds 1
rm -rf "$LOGS/run-micro"
step roles "$PY" -m frft_ray.cli run --config micro --out "$LOGS/run-micro" --set resources.num_cpus=null \
  --set resources.object_store_memory_mb=1024 --set serve.enabled=true --set "filter.embedding_model=$EMB"
step serve "$PY" benchmarks/serve_bench.py --quick --rounds 1
step scale "$PY" benchmarks/scale.py --grid quick --device cpu --embedder "$EMB" --out "$LOGS/scale.json"
step sync "$PY" benchmarks/weight_sync_bench.py --device cpu --shape tiny --workers 1 --repeats 1 \
  --baseline-repeats 1 --object-store-gb 1

if [ ${#failed[@]} -gt 0 ]; then echo "rehearsal: FAILED steps: ${failed[*]} (logs in $LOGS)"; exit 1; fi
echo "rehearsal: every step passed in the bare node Python (logs in $LOGS)"
