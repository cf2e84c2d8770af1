"""SFT batches mask the prompt and learn the response; training lowers the loss on a small set."""

import random

import pytest
import torch

from frft_ray.algorithms.loop import FractionalEpochs
from frft_ray.algorithms.sft import IGNORE, sft_batch, sft_loss, train_sft
from frft_ray.config import ModelsConfig, SFTConfig, TinyModelConfig
from frft_ray.models import build_policy, train_tokenizer

NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay"]
FOODS = ["soup", "rice", "pears", "bread", "cheese", "plums"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def demos(n: int, seed: int = 0):
    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(n):
        name, food = rng.choice(NAMES), rng.choice(FOODS)
        prompts.append(f"What does {name} eat?\nAnswer:")
        responses.append(f" {name} eats {food} every day.")
    return prompts, responses


@pytest.fixture(scope="module")
def tok():
    p, r = demos(2000, 7)
    return train_tokenizer([a + b for a, b in zip(p, r)], vocab_size=300, model_max_length=128)


def tiny_policy(tok):
    mcfg = ModelsConfig(tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=300))
    return build_policy(mcfg, tok, seed=0)


def test_fractional_epochs_schedule():
    """1.5 epochs of 10 items in batches of 4: 3 steps per epoch, 5 steps, each epoch a full permutation."""
    b = FractionalEpochs(10, 4, 1.5, seed=0)
    steps = list(b)
    assert b.steps_per_epoch == 3 and len(b) == len(steps) == 5
    assert [(s, e) for s, e, _ in steps] == [(k, k / 3) for k in range(1, 6)]
    assert [len(idx) for _, _, idx in steps] == [4, 4, 2, 4, 4]
    assert sorted(j for _, _, idx in steps[:3] for j in idx) == list(range(10))
    assert [idx for *_, idx in FractionalEpochs(10, 4, 1.5, seed=0)] == [idx for *_, idx in steps]
    assert [idx for *_, idx in FractionalEpochs(10, 4, 1.5, seed=1)] != [idx for *_, idx in steps]
    with pytest.raises(ValueError, match="batch_size >= 1 and epochs > 0"):
        FractionalEpochs(10, 4, 0, seed=0)


def test_length_grouped_schedule_pads_less_and_keeps_the_epoch():
    """Windows of 4 batches sorted by length: each epoch still covers every item once in as many steps,
    each batch spans a narrow length range, batches come in random order, and the seed fixes it."""
    rng = random.Random(0)
    lengths = [rng.randint(5, 100) for _ in range(203)]
    grouped = FractionalEpochs(203, 8, 2, seed=0, lengths=lengths, group=4)
    plain = FractionalEpochs(203, 8, 2, seed=0)
    steps = list(grouped)
    assert len(steps) == len(list(plain)) == 2 * 26
    for epoch in (steps[:26], steps[26:]):
        assert sorted(j for *_, idx in epoch for j in idx) == list(range(203))
        assert sum(len(idx) < 8 for *_, idx in epoch) == 1  # only the last window leaves a short batch

    def padded(batches):
        return sum(max(lengths[j] for j in idx) * len(idx) for *_, idx in batches)

    assert padded(steps) < 0.8 * padded(plain)
    def median_span(batches):
        spans = sorted(max(lengths[j] for j in idx) - min(lengths[j] for j in idx) for *_, idx in batches)
        return spans[len(spans) // 2]

    assert median_span(steps) < 0.5 * median_span(plain)  # windows of 32 items: ~1/4 of the range each
    firsts = [lengths[idx[0]] for *_, idx in steps[:26]]
    assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)  # batch order shuffled
    assert [idx for *_, idx in FractionalEpochs(203, 8, 2, seed=0, lengths=lengths, group=4)] == [i for *_, i in steps]
    # group 1 is the plain schedule, lengths or not
    assert [i for *_, i in FractionalEpochs(203, 8, 2, seed=0, lengths=lengths, group=1)] == [i for *_, i in plain]
    with pytest.raises(ValueError, match="3 lengths for 203 items"):
        FractionalEpochs(203, 8, 1, seed=0, lengths=[1, 2, 3], group=4)
    with pytest.raises(ValueError, match="group >= 1"):
        FractionalEpochs(203, 8, 1, seed=0, lengths=lengths, group=0)


def test_sft_batch_masks_prompt_and_right_pads(tok):
    b = sft_batch(tok, ["What does Ada eat?\nAnswer:", "Hi"], [" Ada eats soup every day.", " yes"], max_length=64)
    p0 = len(tok("What does Ada eat?\nAnswer:")["input_ids"])
    r0 = tok(" Ada eats soup every day.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (b["labels"][0, :p0] == IGNORE).all()
    assert b["labels"][0, p0 : p0 + len(r0)].tolist() == r0  # response + EOS are the targets
    n1 = int(b["attention_mask"][1].sum())
    assert b["attention_mask"][1, :n1].all() and not b["attention_mask"][1, n1:].any()  # right padding
    assert (b["input_ids"][1, n1:] == tok.pad_token_id).all() and (b["labels"][1, n1:] == IGNORE).all()
    assert b["position_ids"][1, :n1].tolist() == list(range(n1))
    # too long: the prompt is cut on the left, the whole response (+EOS) kept
    t = sft_batch(tok, ["What does Ada eat?\nAnswer:" * 20], [" Ada eats soup every day."], max_length=24)
    assert t["input_ids"].shape[1] == 24
    assert t["labels"][0, -len(r0) :].tolist() == r0
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        sft_batch(tok, ["a", "b"], ["c"], 16)


def test_sft_loss_equals_hf_loss_on_response_tokens(tok):
    model = tiny_policy(tok).eval()
    p, r = demos(4, 1)
    b = sft_batch(tok, p, r, 64)
    with torch.no_grad():
        hf = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        ours = sft_loss(model, tok, p, r, 64)
    assert ours.item() == pytest.approx(hf.item(), rel=1e-5)
    assert ours.item() == pytest.approx(torch.log(torch.tensor(float(len(tok)))).item(), rel=0.1)  # untrained ~ uniform


def test_head_only_sft_loss_matches_the_full_logits_loss_and_gradients(tok):
    """The LM head on response positions only: same loss and gradients as logits at every position;
    used for GPT-2, not for a model that caps its logits after the head (Gemma 2)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from frft_ray.algorithms.sft import head_on_hidden_states

    model = tiny_policy(tok)
    assert head_on_hidden_states(model, tok) and model.training  # the check leaves the mode as it was
    p, r = demos(6, 5)
    grads = []
    for head_only in (False, True):
        model.zero_grad()
        loss = sft_loss(model.eval(), tok, p, r, 64, head_only=head_only)
        loss.backward()
        grads.append((loss.item(), [w.grad.clone() for w in model.parameters()]))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(grads[0][1], grads[1][1]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_on_hidden_states(model, tok)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the check's scaling undone
    # Gemma 2's default soft cap (30): random-init logits are far below it, the check's scaled head is not
    capped = Gemma2ForCausalLM(Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, head_dim=16))
    assert capped.config.final_logit_softcapping == 30.0
    assert not head_on_hidden_states(capped, tok)
    out = train_sft(capped, tok, p, r, SFTConfig(epochs=1, batch_size=3), max_length=64, progress=False)
    assert out["head_only"] is False and out["loss_end"] < out["loss_start"]


def test_train_sft_lowers_loss(tok):
    model = tiny_policy(tok)
    p, r = demos(96, 2)
    out = train_sft(model, tok, p, r, SFTConfig(epochs=3, lr=3e-3, batch_size=16), max_length=64, seed=0, progress=False)
    assert out["steps"] == 18 and out["head_only"] is True
    assert out["loss_end"] < 0.5 * out["loss_start"], out
    held_p, held_r = demos(32, 3)
    with torch.no_grad():
        assert sft_loss(model, tok, held_p, held_r, 64).item() < 0.5 * out["loss_start"]


def test_train_sft_in_bf16_keeps_fp32_weights(tok):
    """precision=bf16: autocast forward/backward lowers the loss; weights and AdamW moments stay fp32."""
    model = tiny_policy(tok)
    p, r = demos(64, 4)
    out = train_sft(model, tok, p, r, SFTConfig(epochs=2, lr=3e-3, batch_size=16), max_length=64, seed=0,
                    progress=False, dtype=torch.bfloat16)
    assert out["loss_end"] < 0.7 * out["loss_start"], out
    assert all(w.dtype == torch.float32 for w in model.parameters())
    bf16 = sft_loss(model, tok, p[:8], r[:8], 64, torch.bfloat16).item()
    fp32 = sft_loss(model, tok, p[:8], r[:8], 64).item()
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)  # really computed in bf16, and close


def test_sft_lowers_loss_on_benchmark_demonstrations():
    from frft_ray.config import BenchmarkConfig
    from frft_ray.data.benchmark import make_benchmark

    bm = make_benchmark(BenchmarkConfig(seed=0, sft_size=320, pool_size=10, eval_prompts=1))
    btok = train_tokenizer([d.prompt + d.response for d in bm.sft], vocab_size=1024, model_max_length=256)
    mcfg = ModelsConfig(tiny=TinyModelConfig(n_layer=2, n_embd=64, n_head=4, n_positions=256, vocab_size=1024))
    model = build_policy(mcfg, btok, seed=0)
    train, held = bm.sft[:256], bm.sft[256:]
    out = train_sft(model, btok, [d.prompt for d in train], [d.response for d in train],
                    SFTConfig(epochs=4, lr=3e-3, batch_size=32), max_length=160, seed=0, progress=False)
    assert out["loss_end"] < 0.75 * out["loss_start"], out
    with torch.no_grad():
        held_loss = sft_loss(model.eval(), btok, [d.prompt for d in held], [d.response for d in held], 160).item()
    assert held_loss < 0.75 * out["loss_start"]  # it generalises to unseen demonstrations
