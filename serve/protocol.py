"""OpenAI's Completions API, checked by hand: every bad field is a 400 naming the field and
what it may be, in OpenAI's error shape. Tokens are characters here."""

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
        prompts=prompts, prompt_is_list=is_list, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        top_k=top_k, n=n, stop=stop, seed=seed, echo=echo, stream=stream, include_usage=include_usage,
        logprobs=logprobs, unknown=unknown,
    )


def hold_back(text: str, stops: tuple[str, ...] | None) -> int:
    """How many characters at the end of text could still be the start of a stop string
    (a stream holds them back until the next character decides)."""
    if not stops or not text:
        return 0
    longest = min(max(len(s) for s in stops) - 1, len(text))
    for k in range(longest, 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def strip_stop(text: str, stops: tuple[str, ...] | None) -> str:
    """text without the stop string it ends with (the longest that matches)."""
    if stops:
        for s in sorted(stops, key=len, reverse=True):
            if text.endswith(s):
                return text[: -len(s)]
    return text
