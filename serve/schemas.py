"""Request/response bodies of the RM endpoint, and the request-size limits.

Types are checked by pydantic (a number where text belongs is a 422, not a silent str()).
The limits come from `ServeConfig` at deploy time, so they are checked here by `check_limits`
rather than baked into the models; exceeding one is a 413 whose message names the limit.
"""

from __future__ import annotations

import math

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr


def _unicode_text(value: str) -> str:
    """JSON may carry an escaped lone surrogate ("\\ud800"), which decodes to a str that no
    tokenizer can encode: refuse it here (422 naming the field), not in the model (500)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text: a lone surrogate {value[e.start]!r} "
                         f"at character {e.start}") from None
    return value


Text = Annotated[StrictStr, AfterValidator(_unicode_text)]


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Text
    response: Text


class ScoreRequest(BaseModel):
    """POST /v1/score."""

    model_config = ConfigDict(extra="forbid")
    items: list[ScoreItem] = Field(min_length=1)


class ScoreResponse(BaseModel):
    scores: list[float]
    model_version: int


class RewardRequest(BaseModel):
    """POST /get_reward, OpenRLHF's remote-RM format: each query is prompt + response as one text.

    `prompts` (optional) splits each query into prompt and response; `labels` is accepted and
    ignored. Unknown keys are ignored too, so newer OpenRLHF clients keep working.
    """

    model_config = ConfigDict(extra="ignore")
    query: list[Text] = Field(min_length=1)
    prompts: list[Text] | None = None
    labels: list[Any] | None = None


class RewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="sigmoid(reward), in [0, 1]")
    extra_logs: dict[str, list[float]]
    model_version: int


class LimitError(Exception):
    """A request over a configured size limit (HTTP 413)."""

    def __init__(self, message: str, limit: str, value: int):
        super().__init__(message)
        self.message, self.limit, self.value = message, limit, value


class PairError(Exception):
    """A /get_reward query that its prompt does not prefix, or lists of different lengths (HTTP 422)."""


class NonFiniteScore(Exception):
    """The RM gave NaN or +-inf for an item (a broken checkpoint, or an overflow in its dtype): HTTP 500
    with a JSON body naming the item, never a bare 500 from JSON encoding."""

    def __init__(self, item: str, value: float, version: int):
        super().__init__(f"the reward model (version {version}) gave a non-finite score ({value}) for {item}")
        self.item, self.version = item, version


class VersionUnavailable(Exception):
    """The request asked for a model version (X-Min-Model-Version) that is not published yet (HTTP
    409), or that this replica could not load (HTTP 503: retry)."""

    def __init__(self, wanted: int, newest: int | None, load_error: str | None = None):
        if load_error is None:
            msg = (f"X-Min-Model-Version {wanted} is not published yet (the newest version is {newest}); "
                   "send the newest version you have seen")
        else:
            msg = f"X-Min-Model-Version {wanted}: this replica could not load version {newest} ({load_error}); retry"
        super().__init__(msg)
        self.wanted, self.newest, self.status = wanted, newest, 409 if load_error is None else 503


def check_finite(scores: list[float], field: str, version: int) -> None:
    """Raise NonFiniteScore naming the first item (`field[i]`) whose score is NaN or infinite."""
    for i, s in enumerate(scores):
        if not math.isfinite(s):
            raise NonFiniteScore(f"{field}[{i}]", s, version)


def loc_str(loc) -> str:
    """A location in the body as a client writes it: ("body", "items", 0, "prompt") -> items[0].prompt."""
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def check_limits(texts: dict[tuple[str, ...], list[str]], n_items: int, max_items: int, max_text_chars: int) -> None:
    """Raise LimitError naming the limit and the first offending text, located like a 422's fields.

    `texts` is keyed by the list's field, then the field inside each element: ("items", "prompt")
    names items[i].prompt, ("query",) names query[i]."""
    if n_items > max_items:
        raise LimitError(f"too many items: {n_items} > max_items={max_items}", "max_items", max_items)
    for (field, *inner), values in texts.items():
        for i, t in enumerate(values):
            if len(t) > max_text_chars:
                raise LimitError(
                    f"{loc_str((field, i, *inner))} has {len(t)} characters > max_text_chars={max_text_chars}",
                    "max_text_chars",
                    max_text_chars,
                )


def split_queries(query: list[str], prompts: list[str] | None) -> tuple[list[str], list[str]]:
    """OpenRLHF queries -> (prompts, responses). Without prompts the whole text is the response."""
    if prompts is None:
        return [""] * len(query), list(query)
    if len(prompts) != len(query):
        raise PairError(f"prompts has {len(prompts)} entries but query has {len(query)}; they must match")
    responses = []
    for i, (q, p) in enumerate(zip(query, prompts)):
        if not q.startswith(p):
            raise PairError(f"query[{i}] does not start with prompts[{i}]; each query must be prompt + response")
        responses.append(q[len(p) :])
    return list(prompts), responses
