"""OpenAI's API as this server speaks it: the request that checks itself (every bad field a 400
naming the field and what it may be), the errors in OpenAI's shape, the response bodies.
Tokens are characters here.

    req = CompletionRequest.parse(body, max_chars=4096, max_choices=320)   # or ApiError(400)
    raise model_not_found("gpt-4", ["tiny", "q8"])                          # 404, code model_not_found
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_N = 128  # OpenAI's limit on n
MAX_STOPS = 4  # OpenAI's limit on stop strings
MAX_LOGPROBS = 5  # OpenAI's limit on logprobs
SEED_MOD = 2**64


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


@dataclass(frozen=True)
class CompletionRequest:
    """A checked POST /v1/completions body (CompletionRequest.parse). model: the name asked
    for, None where the body has none (the server's first model)."""

    model: str | None
    prompts: list[str]
    prompt_is_list: bool
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    n: int
    stop: tuple[str, ...] | None
    seed: int | None
    echo: bool
    stream: bool
    include_usage: bool
    logprobs: int | None
    unknown: str

    @classmethod
    def parse(cls, body, *, max_chars: int, max_choices: int) -> "CompletionRequest":
        """See parse_completion."""
        return parse_completion(body, max_chars=max_chars, max_choices=max_choices)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(body: dict, name: str, default, lo: int, hi: int | None, what: str = "") -> int:
    x = body.get(name)
    if x is None:
        return default
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not _is_int(x) or x < lo or (hi is not None and x > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise bad(name, f"'{name}' must be {rng}{what}, not {x!r}")
    return x


def _number(body: dict, name: str, default: float, lo: float, hi: float, *, open_lo: bool = False,
            what: str = "") -> float:
    x = body.get(name)
    if x is None:
        return default
    if not _is_number(x) or (x <= lo if open_lo else x < lo) or x > hi:
        rng = f"({lo:g}, {hi:g}]" if open_lo else f"[{lo:g}, {hi:g}]"
        raise bad(name, f"'{name}' must be a number in {rng}{what}, not {x!r}")
    return float(x)


def _bool(body: dict, name: str, default: bool) -> bool:
    x = body.get(name)
    if x is None:
        return default
    if not isinstance(x, bool):
        raise bad(name, f"'{name}' must be true or false, not {x!r}")
    return x


def parse_completion(body, *, max_chars: int, max_choices: int) -> CompletionRequest:
    """A CompletionRequest from a decoded JSON body, or ApiError(400) naming the first bad field.
    The prompt's characters are checked against the model later (they need the vocabulary)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")

    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("model", f"'model' must be a string, not {model!r}")
    model = model or None  # "" as absent: the server's first model (as vLLM does)

    if "prompt" not in body or body["prompt"] is None:
        raise bad("prompt", "'prompt' is required: a string, or a list of strings")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        prompts, is_list = [prompt], False
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts, is_list = list(prompt), True
    elif isinstance(prompt, list) and prompt and all(_is_int(p) or isinstance(p, list) for p in prompt):
        raise bad("prompt", "'prompt' must be a string or a list of strings: token ids are not accepted "
                            "(this model's tokens are characters; send the text)")
    else:
        raise bad("prompt", "'prompt' must be a string or a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not p:
            where = f"prompt[{i}]" if is_list else "prompt"
            raise bad("prompt", f"'{where}' is empty: the model needs at least one character to start from")

    max_tokens = _int(body, "max_tokens", 16, 0, None, " (characters to generate)")
    longest = max(len(p) for p in prompts)
    if longest + max_tokens > max_chars:
        raise bad("max_tokens", f"the prompt ({longest} characters) plus 'max_tokens' ({max_tokens}) is "
                                f"{longest + max_tokens} characters, over this server's limit of {max_chars} "
                                f"(--max-chars)")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0, what=" (0 = greedy)")
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, open_lo=True)
    top_k = body.get("top_k")
    if top_k == -1:  # vLLM's "no cut"
        top_k = 0
    top_k = _int({"top_k": top_k}, "top_k", 0, 0, None, " (0 = no top-k cut)")
    n = _int(body, "n", 1, 1, MAX_N)
    if n * len(prompts) > max_choices:
        raise bad("n", f"'n' ({n}) times the number of prompts ({len(prompts)}) is {n * len(prompts)} "
                       f"choices, over the {max_choices} this server can hold at once (--max-batch + --max-queue)")

    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOPS
                or not all(isinstance(s, str) and s for s in stops)):
            raise bad("stop", f"'stop' must be a non-empty string or a list of 1 to {MAX_STOPS} of them, not {stop!r}")
        stop = tuple(dict.fromkeys(stops))

    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed) or not -(2**63) <= seed < SEED_MOD:
            raise bad("seed", f"'seed' must be an integer in [-2**63, 2**64), not {seed!r}")
        seed %= SEED_MOD

    echo = _bool(body, "echo", False)
    stream = _bool(body, "stream", False)
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise bad("stream_options", f"'stream_options' must be an object, not {so!r}")
        if not stream:
            raise bad("stream_options", "'stream_options' is only allowed with 'stream': true")
        include_usage = _bool(so, "include_usage", False)

    logprobs = body.get("logprobs")
    if logprobs is not None:
        if logprobs is False:
            logprobs = None
        else:
            logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS, " (the top-N characters per character)")

    unknown = body.get("unknown", "error")
    if unknown not in ("error", "skip"):
        raise bad("unknown", f"'unknown' must be \"error\" or \"skip\" (characters the model's alphabet "
                             f"lacks), not {unknown!r}")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad("user", f"'user' must be a string, not {user!r}")

    # OpenAI fields this server cannot honour: accepted at their neutral values only
    for name in ("presence_penalty", "frequency_penalty"):
        v = body.get(name)
        if v is not None and (not _is_number(v) or v != 0):
            raise bad(name, f"'{name}' is not supported by this server: leave it out or set it to 0")
    best_of = body.get("best_of")
    if best_of is not None and not (_is_int(best_of) and best_of in (1, n)):
        raise bad("best_of", f"'best_of' is not supported by this server: leave it out, or set it to 'n' ({n})")
    logit_bias = body.get("logit_bias")
    if logit_bias not in (None, {}):
        raise bad("logit_bias", "'logit_bias' is not supported by this server (token ids would be characters): "
                                "leave it out")
    suffix = body.get("suffix")
    if suffix not in (None, ""):
        raise bad("suffix", "'suffix' is not supported by this server: leave it out")

    return CompletionRequest(
        model=model, prompts=prompts, prompt_is_list=is_list, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, n=n, stop=stop, seed=seed, echo=echo, stream=stream, include_usage=include_usage,
        logprobs=logprobs, unknown=unknown,
    )


# ---------------------------------------------------------------------- errors of the API
def model_not_found(name: str, served) -> ApiError:
    """404 for a `model` this server does not serve, naming the ones it does."""
    names = ", ".join(repr(n) for n in served)
    return ApiError(404, f"The model {name!r} does not exist on this server; it serves {names} "
                         f"(GET /v1/models lists them).", param="model", code="model_not_found")


def not_a_chat_model(name, served) -> ApiError:
    """POST /v1/chat/completions: a 404 as OpenAI answers it for its completions-only models
    (param 'model'), with a code a client can test (OpenAI's is null)."""
    if isinstance(name, str) and name in served:
        which = f"The model {name!r} completes text; it is not a chat model"
    else:
        which = f"This server's models ({', '.join(map(repr, served))}) complete text; they are not chat models"
    return ApiError(404, f"{which}, so /v1/chat/completions is not supported. Send a 'prompt' to "
                         "POST /v1/completions instead.", param="model", code="model_not_supported")


def unavailable(message: str, retry: bool = True) -> ApiError:
    return ApiError(503, message, code="unavailable", headers={"retry-after": "1"} if retry else None)


def queue_full(max_queue: int, model: str) -> ApiError:
    return ApiError(429, f"the server is busy: {max_queue} choices wait for a slot of {model!r} already; "
                         "retry later", type="server_busy", code="queue_full", headers={"retry-after": "1"})


def too_large(limit: int, size: int | None = None) -> ApiError:
    what = f"the request body is {size} bytes, over the limit of {limit}" if size is not None else \
        f"the request body is over the limit of {limit} bytes"
    return ApiError(413, what, code="request_too_large")


def unknown_characters(where: str, unknown, vocab) -> ApiError:
    """400 for prompt characters the model's alphabet lacks (unknown: a Counter of them)."""
    shown = ", ".join(f"{c!r} (x{n})" for c, n in unknown.most_common(10))
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return ApiError(400, f"'{where}' has {sum(unknown.values())} character(s) not in the model's alphabet: "
                         f"{shown}{more}. The model knows {len(vocab)} characters: {''.join(vocab.chars)!r}. "
                         f"Remove them, or send \"unknown\": \"skip\" to drop them.",
                    param="prompt", code="unknown_characters")


# ---------------------------------------------------------------------- response bodies
def model_card(name: str, model, *, created: int, engine: str, max_batch: int, max_chars: int) -> dict:
    """OpenAI's model object, with what a client of a character model wants to know beside it."""
    cfg = dict(model.config)
    return {
        "id": name, "object": "model", "created": created, "owned_by": "chargen",
        "vocab_size": model.vocab_size, "layers": model.num_layers, "hidden_size": model.hidden_size,
        "embedding_dim": cfg.get("embedding_dim"), "precision": model.precision, "engine": engine,
        "device": model.device, "corpus": model.corpus or None, "val_loss": model.val_loss,
        "max_batch": max_batch, "max_chars": max_chars,
    }
