"""The Ray Serve deployment that serves the current reward model over HTTP (FastAPI ingress).

Routes: POST /v1/score, POST /get_reward (OpenRLHF's remote-RM format), GET /health (open even
with auth on, for load balancers), GET /v1/model.

How it stays fast and consistent:
- `serve.batcher.ContinuousBatcher` merges concurrent requests (one request = one unit, so a
  request is never split across two model versions): a batch is what queued while the previous
  forward ran, which runs in a worker thread so the event loop keeps accepting requests (under
  light traffic, a short lone forward runs on the loop itself: `serve.inline_forward_ms`).
- A daemon thread polls the version registry (`serve.versions`) and, when a newer version is
  published, loads it and replaces `self._snap` in one assignment. A batch reads `self._snap`
  once, so it scores with one version and reports that version. No replica restarts. A version
  that fails to load is retried (at once for a newer one, else with a growing pause) and GET
  /health says "degraded" until one loads.
- Read-your-version: a client that sends `X-Min-Model-Version: N` (the newest version it has
  seen) is scored by version N or newer. A replica still behind loads the registry's newest
  version on the request's path first (409 when N is not published, 503 when the load fails), so
  one client never sees the version go back across replicas.
- The replica's device comes from `placement.serve.num_gpus` and its weights' dtype from the run's
  `precision` (both in `ReplicaSettings`; `devices.serve_dtype`: under auto, bf16 on a GPU and on a
  CPU with native bf16 matmuls); every version it loads goes to the same device and dtype, and GET
  /v1/model says which ("device": "cpu/fp32", "cuda:0/bf16").
- No `from __future__ import annotations` here: Serve rebuilds the route signatures and
  string annotations would turn the JSON body into a query parameter.
- Bad input is a 4xx with a JSON body `{"error", "message", ...}` (docs/serve.md, Errors); never a
  500. FastAPI's own answers to an empty body, bytes that are not UTF-8 JSON and a body without a
  JSON content type become documented kinds too. The body's size is counted while it streams in
  (and Content-Length checked first), so an oversized body is refused at the limit, not after it
  is all in memory. A NaN/inf score is a JSON 500 naming the item.
"""

import asyncio
import hashlib
import hmac
import logging
import math
import threading
import time
from typing import Annotated

import ray
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.batcher import ContinuousBatcher
from serve.schemas import (
    LimitError,
    NonFiniteScore,
    PairError,
    RewardRequest,
    RewardResponse,
    ScoreRequest,
    ScoreResponse,
    VersionUnavailable,
    check_finite,
    check_limits,
    loc_str,
    split_queries,
)
from serve.scorer import Snapshot, load_snapshot, score_pairs
from serve.settings import ReplicaSettings
from serve.versions import get_registry

log = logging.getLogger("ray.serve")
RETRY_MAX_S = 10.0  # longest pause between two tries of a version that failed to load
# the newest version the client has seen: it is scored by that version or a newer one
MinVersion = Annotated[int | None, Header(alias="X-Min-Model-Version", ge=0)]
api = FastAPI(title="frft-ray reward model", version="1")
api.state.max_body_bytes = None
api.state.token_sha256 = None


def _err(status: int, error: str, message: str, **extra) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "message": message, **extra})


SEND_JSON = "send a JSON object with 'Content-Type: application/json'"


@api.exception_handler(RequestValidationError)
async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _err(400, "malformed_json", "request body is not valid JSON")
    whole = [e for e in errors if tuple(e["loc"]) == ("body",)]  # the body itself, not a field in it
    if any(e["type"] == "missing" for e in whole):  # FastAPI reads an empty body as no body
        return _err(400, "malformed_json", f"request body is empty; {SEND_JSON}")
    if any(isinstance(e.get("input"), bytes) for e in whole):  # FastAPI parses JSON only under a JSON content type
        got = request.headers.get("content-type") or "no Content-Type"
        return _err(415, "unsupported_media_type", f"request body was sent with {got}; {SEND_JSON}")
    msgs = [f"{loc_str(e['loc'])}: {e['msg']}" for e in errors[:10]]
    details = [{"loc": loc_str(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors[:10]]
    return _err(422, "invalid_request", "; ".join(msgs), details=details)


@api.exception_handler(LimitError)
async def _on_limit(request: Request, exc: LimitError) -> JSONResponse:
    return _err(413, "limit_exceeded", exc.message, limit=exc.limit, max=exc.value)


@api.exception_handler(PairError)
async def _on_pair(request: Request, exc: PairError) -> JSONResponse:
    return _err(422, "invalid_request", str(exc))


@api.exception_handler(NonFiniteScore)
async def _on_non_finite(request: Request, exc: NonFiniteScore) -> JSONResponse:
    return _err(500, "non_finite_score", str(exc), item=exc.item, model_version=exc.version)


@api.exception_handler(VersionUnavailable)
async def _on_version(request: Request, exc: VersionUnavailable) -> JSONResponse:
    return _err(exc.status, "version_unavailable", str(exc), wanted_version=exc.wanted, model_version=exc.newest)


@api.exception_handler(StarletteHTTPException)
async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = exc.__cause__  # FastAPI raises its 400 "error parsing the body" from the JSON parser's error
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        return _err(400, "malformed_json",
                    f"request body is not valid UTF-8 JSON ({cause.reason} at byte {cause.start})")
    if exc.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):  # too deep, a 5000-digit number
        return _err(400, "malformed_json", f"request body could not be parsed as JSON: {cause}")
    names = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
    return _err(exc.status_code, names.get(exc.status_code, "http_error"), str(exc.detail))


OPEN_PATHS = {"/health"}  # no token needed: load balancers and probes


def _token_ok(request: Request) -> bool:
    want = api.state.token_sha256
    if not want or request.url.path.rstrip("/").endswith(tuple(OPEN_PATHS)):
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    got = hashlib.sha256(token.strip().encode()).hexdigest() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(got, want)


class _Guard:
    """Auth, then body size, before any parsing: an unauthenticated caller learns nothing else.

    A plain ASGI middleware (starlette's `BaseHTTPMiddleware` runs every request through an extra
    task group and stream pair). The body's bytes are counted as they arrive: a 413 as soon as
    they pass the limit (at once when Content-Length says they will), else the route is handed the
    body whole."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)  # headers only; the body is read below
        if not _token_ok(request):
            resp = _err(401, "unauthorized", "missing or wrong bearer token (send 'Authorization: Bearer <token>')")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return await resp(scope, receive, send)
        limit = api.state.max_body_bytes
        if not limit or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        refused, body = await _read_body_within(request, receive, limit)
        if refused is not None:
            return await refused(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # after the body: what the client sends next (a disconnect)
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def _too_large(what: str, limit: int) -> JSONResponse:
    return _err(413, "limit_exceeded", f"{what} > {limit} bytes (max_body_bytes, derived from max_items and "
                "max_text_chars)", limit="max_body_bytes", max=limit)


async def _read_body_within(request: Request, receive, limit: int) -> tuple[JSONResponse | None, bytes]:
    """Read the body while counting its bytes: (a 413, b"") as soon as it passes `limit` (or at once
    when Content-Length says it will), else (None, the body)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            return _err(400, "bad_request", f"Content-Length {declared!r} is not a number of bytes"), b""
        if int(declared) > limit:
            return _too_large(f"request body of {int(declared)} bytes (Content-Length)", limit), b""
    chunks, size = [], 0
    while True:  # a proxy may send no Content-Length: count as it arrives
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _too_large(f"request body of more than {limit} bytes (refused after reading {size})", limit), b""
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return None, b"".join(chunks)


api.add_middleware(_Guard)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@serve.deployment(name="RewardModel")
@serve.ingress(api)
class RewardModelServer:
    """One replica, configured by `ReplicaSettings` (the `serve:` section plus the token's hash)."""

    def __init__(self, app_name: str, settings: ReplicaSettings):
        import torch

        from frft_ray.devices import role_device, serve_dtype

        torch.set_num_threads(settings.torch_threads)
        self._device = role_device(settings.num_gpus, "serve")
        self._dtype = serve_dtype(settings.precision, self._device)
        self._s = settings.serve
        self._poll_s = settings.poll_s
        # Serve pickles this class by value, so a bare `api` here would be a copy; the middleware
        # reads the real module's app, so set its state through the imported module.
        from serve import app as this_module

        this_module.api.state.token_sha256 = settings.token_sha256
        this_module.api.state.max_body_bytes = self._s.max_items * (self._s.max_text_chars * 6 + 64) + 4096
        self._registry = get_registry(app_name)
        cur = ray.get(self._registry.current.remote(), timeout=60)
        if cur is None:
            raise RuntimeError(f"no RM version published for app {app_name!r}; call serve.launch.publish_rm first")
        self._snap: Snapshot = self._load(cur)
        self._wanted = cur["version"]  # the registry's newest version, as last seen
        self._last_error: str | None = None  # in full, for GET /v1/model (behind auth)
        self._health_error: str | None = None  # without paths, for the open GET /health
        self._batcher = ContinuousBatcher(self._score_batch, self._s.max_batch_size, self._s.batch_wait_timeout_s,
                                          self._s.inline_forward_ms / 1000)
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()  # one load at a time: the poller's or a request's catch-up
        threading.Thread(target=self._follow_registry, name="rm-version-poller", daemon=True).start()

    # ---------------------------------------------------------------- hot swap

    def _load(self, entry: dict) -> Snapshot:
        """A registry entry's checkpoint, on this replica's device in its dtype."""
        return load_snapshot(entry["path"], entry["version"], entry["meta"], self._device, self._dtype)

    def _follow_registry(self) -> None:
        """Poll the registry; load a newer version off the request path, then swap in one assignment.

        A version that fails to load is tried again: a newer one at once, the same one after a pause
        that doubles from `poll_s` up to RETRY_MAX_S (a checkpoint still being copied, a full disk freed)."""
        failed, retry_at, pause = None, 0.0, self._poll_s
        while not self._stop.wait(self._poll_s):
            try:
                cur = ray.get(self._registry.current.remote(), timeout=10)
            except Exception as e:  # registry gone or slow: keep serving what we have
                self._last_error = f"registry poll failed: {e!r}"
                self._health_error = f"registry poll failed ({type(e).__name__})"
                continue
            if failed is None and self._health_error is not None:  # the registry answers again
                self._last_error = self._health_error = None
            if not cur or cur["version"] <= self._snap.version:
                continue
            self._wanted = cur["version"]
            if cur["version"] == failed and time.monotonic() < retry_at:
                continue
            try:
                self._swap_to(cur)
            except Exception as e:
                pause = min(2 * pause, RETRY_MAX_S) if cur["version"] == failed else self._poll_s
                failed, retry_at = cur["version"], time.monotonic() + pause
                self._last_error = f"loading version {cur['version']} from {cur['path']} failed: {e!r}"
                self._health_error = f"version {cur['version']} failed to load ({type(e).__name__}); retrying"
                log.error(self._last_error)
                continue
            failed = None

    def _swap_to(self, entry: dict) -> None:
        """Load a registry entry and serve it, unless this replica already serves it or newer."""
        with self._swap_lock:
            if entry["version"] <= self._snap.version:
                return
            snap = self._load(entry)
            self._snap = snap  # one assignment; under the lock, so versions only go forward
            self._last_error = self._health_error = None
            log.info(f"RM hot swap: now serving version {snap.version} from {snap.path}")

    async def _at_least(self, version: int | None) -> None:
        """Read-your-version: before scoring, serve `version` or newer (the client's X-Min-Model-Version).

        Behind: ask the registry, and load its newest version here, on the request's path, when the
        poller has not yet. A batch reads the snapshot after this, and snapshots only move forward."""
        if version is None or version <= self._snap.version:
            return
        cur = await self._registry.current.remote()
        if not cur or cur["version"] < version:
            raise VersionUnavailable(version, cur["version"] if cur else None)
        try:
            await asyncio.to_thread(self._swap_to, cur)
        except Exception as e:
            raise VersionUnavailable(version, cur["version"], type(e).__name__) from e

    def __del__(self):
        self._stop.set()

    # ---------------------------------------------------------------- scoring

    def _score_batch(self, reqs: list[tuple[list[str], list[str]]]) -> list[tuple[list[float], int]]:
        """The batcher's function (in its worker thread): every request of a batch on one version."""
        snap = self._snap  # one version for the whole batch
        prompts = [p for ps, _ in reqs for p in ps]
        responses = [r for _, rs in reqs for r in rs]
        flat = score_pairs(snap, prompts, responses, self._s.max_batch_size)
        out, i = [], 0
        for ps, _ in reqs:
            out.append((flat[i : i + len(ps)], snap.version))
            i += len(ps)
        return out

    # ---------------------------------------------------------------- routes

    @api.post("/v1/score", response_model=ScoreResponse)
    async def score(self, req: ScoreRequest, min_version: MinVersion = None) -> ScoreResponse:
        prompts = [it.prompt for it in req.items]
        responses = [it.response for it in req.items]
        check_limits({("items", "prompt"): prompts, ("items", "response"): responses}, len(prompts),
                     self._s.max_items, self._s.max_text_chars)
        await self._at_least(min_version)
        scores, version = await self._batcher.submit((prompts, responses))
        check_finite(scores, "items", version)
        return ScoreResponse(scores=scores, model_version=version)

    @api.post("/get_reward", response_model=RewardResponse)
    async def get_reward(self, req: RewardRequest, min_version: MinVersion = None) -> RewardResponse:
        check_limits({("query",): req.query, ("prompts",): req.prompts or []}, len(req.query),
                     self._s.max_items, self._s.max_text_chars)
        prompts, responses = split_queries(req.query, req.prompts)
        await self._at_least(min_version)
        rewards, version = await self._batcher.submit((prompts, responses))
        check_finite(rewards, "query", version)
        return RewardResponse(
            rewards=rewards,
            scores=[_sigmoid(r) for r in rewards],
            extra_logs={"model_version": [float(version)] * len(rewards)},
            model_version=version,
        )

    @api.get("/health")
    async def health(self) -> dict:
        """200 while the replica serves; "degraded" when a newer version failed to load (it keeps
        serving `model_version` and retries; GET /v1/model has the full error)."""
        return {"status": "degraded" if self._health_error else "ok", "model_version": self._snap.version,
                "wanted_version": max(self._wanted, self._snap.version), "last_error": self._health_error}

    @api.get("/v1/model")
    async def model_info(self) -> dict:
        return {**self._snap.info(), "last_error": self._last_error, "checked_at": time.time(),
                "batching": {"batches": self._batcher.batches, "requests": self._batcher.requests,
                             "inline": self._batcher.inline}}
