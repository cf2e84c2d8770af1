#!/usr/bin/env bash
# On the GPU node, from the project root: install .gpu-bundle/ (scripts/gpu_bundle.sh) under SITE (/tmp/site)
# for PY (python3), and write a random-weight MiniLM to /tmp/minilm-random. Then:
#   export PYTHONPATH=$SITE:$PWD     # SITE first: its transformers shadows an older one of the node
#   EMBEDDER=/tmp/minilm-random scripts/gpu_check.sh
# Nothing goes to the node's own site-packages; its torch (built for its CUDA) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
SITE="${SITE:-/tmp/site}"
B=.gpu-bundle
[ -d "$B/whl" ] || { echo "no $B/ here: build it with scripts/gpu_bundle.sh and copy it with the checkout"; exit 2; }
rm -rf "$SITE" && mkdir -p "$SITE"
tar -xJf "$B/ray-trim.tar.xz" -C "$SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$B"/whl/*.whl
rm -rf /tmp/minilm-random && cp -r "$B/minilm" /tmp/minilm-random
PYTHONPATH="$SITE:$PWD" "$PY" - <<'PY'
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
BertModel(BertConfig.from_pretrained("/tmp/minilm-random"), add_pooling_layer=False).save_pretrained("/tmp/minilm-random")
# every part a run and the GPU check import: a missing module fails here, not minutes into the check
import pydantic, ray, ray.data, ray.serve, ray.train.torch, transformers  # noqa: E401,F401
import frft_ray.driver, serve.app  # noqa: E401,F401

print("installed: ray", ray.__version__, "| transformers", transformers.__version__, "| pydantic", pydantic.__version__,
      "| torch", torch.__version__, "| cuda", torch.cuda.is_available())
PY
echo "export PYTHONPATH=$SITE:\$PWD   # then: EMBEDDER=/tmp/minilm-random scripts/gpu_check.sh"
