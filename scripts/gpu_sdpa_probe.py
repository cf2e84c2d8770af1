"""Does this node's default SDPA give NaN gradients when training on left-padded rows in bf16?

Trains one backward of a small GPT-2 (head dim 64) on a left-padded batch whose length is 64 mod 128
(fully masked query rows for the pad tokens), twice: under plain `torch.autocast` with torch's
default SDPA backends, and under `frft_ray.devices.autocast` (cuDNN attention kept out of training).
Prints the non-finite gradient count of each; exits 1 if the project's context gives any.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from frft_ray.devices import autocast


def non_finite_grads(context, seq_len: int = 192, pad: int = 40) -> int:
    torch.manual_seed(0)
    dev = torch.device("cuda", 0)
    cfg = GPT2Config(vocab_size=512, n_positions=256, n_embd=128, n_layer=2, n_head=2, attn_implementation="sdpa")
    model = GPT2LMHeadModel(cfg).to(dev)
    ids = torch.randint(0, 512, (4, seq_len), device=dev)
    mask = torch.ones_like(ids)
    mask[:2, :pad] = 0
    with context():
        logits = model(input_ids=ids, attention_mask=mask).logits
    (logits.float() * mask[..., None]).sum().backward()
    return sum(int((~torch.isfinite(p.grad)).sum()) for p in model.parameters() if p.grad is not None)


def main() -> int:
    print(f"torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}")
    default = non_finite_grads(lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    ours = non_finite_grads(lambda: autocast(torch.device("cuda", 0), torch.bfloat16))
    print(f"non-finite gradients: torch.autocast with default SDPA backends {default}; frft_ray.devices.autocast {ours}")
    return 1 if ours else 0


if __name__ == "__main__":
    raise SystemExit(main())
