"""Validation loss two ways, and samples, from a CharGRU.

val_loss           one stateful pass over the whole text: the hidden state is
                   carried from character to character, as in generation.
val_loss_windowed  windows of seq_len characters, each from a zero state, as in training.

On CPU the recurrence runs in numpy (OpenBLAS's matrix-vector product is 2-3x
faster than torch's MKL one on AMD processors, and a 111k-step stateful pass
is all matrix-vector products); on CUDA it runs cuDNN's nn.GRU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from chargen.train.model import CharGRU

CHUNK = 4096  # steps of the stateful pass held in memory at once


def _numpy_weights(model: CharGRU) -> list[dict]:
    rnn = model.rnn
    layers = []
    for k in range(model.config.layers):
        w_ih = getattr(rnn, f"weight_ih_l{k}").detach().float().cpu().numpy()
        b_ih = getattr(rnn, f"bias_ih_l{k}").detach().float().cpu().numpy()
        layer = dict(
            # (3H, H) row-major, used transposed: OpenBLAS then runs B=1 as a fast gemv
            w_hh_t=getattr(rnn, f"weight_hh_l{k}").detach().float().cpu().numpy().T,
            b_hh=getattr(rnn, f"bias_hh_l{k}").detach().float().cpu().numpy(),
            w_ih_t=np.ascontiguousarray(w_ih.T),
            b_ih=b_ih,
        )
        if k == 0:  # embedding and input projection folded into one (V, 3H) table
            emb = model.embedding.weight.detach().float().cpu().numpy()
            layer["table"] = emb @ w_ih.T + b_ih
        layers.append(layer)
    return layers


def _sigmoid(x, out):
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


def _gru_layer(gi: np.ndarray, h: np.ndarray, w_hh_t: np.ndarray, b_hh: np.ndarray) -> np.ndarray:
    """gi: (T, B, 3H) input projections; h: (B, H), updated in place. Returns (T, B, H)."""
    T, B, H3 = gi.shape
    H = H3 // 3
    out = np.empty((T, B, H), dtype=np.float32)
    gh = np.empty((B, H3), dtype=np.float32)
    rz = np.empty((B, 2 * H), dtype=np.float32)
    n = np.empty((B, H), dtype=np.float32)
    for t in range(T):
        np.matmul(h, w_hh_t, out=gh)
        gh += b_hh
        _sigmoid(np.add(gi[t, :, : 2 * H], gh[:, : 2 * H], out=rz), rz)
        np.multiply(rz[:, :H], gh[:, 2 * H :], out=n)
        n += gi[t, :, 2 * H :]
        np.tanh(n, out=n)
        # h = (1 - z) * n + z * h = n + z * (h - n)
        h -= n
        h *= rz[:, H:]
        h += n
        out[t] = h
    return out


def _hidden_numpy(layers: list[dict], tokens: np.ndarray, h: np.ndarray) -> np.ndarray:
    """tokens: (T, B); h: (L, B, H) updated in place. Returns the last layer's outputs (T, B, H)."""
    x = None
    for k, layer in enumerate(layers):
        gi = layer["table"][tokens] if k == 0 else x @ layer["w_ih_t"] + layer["b_ih"]
        x = _gru_layer(gi, h[k], layer["w_hh_t"], layer["b_hh"])
    return x


def _nll_sum(model: CharGRU, hidden, targets) -> float:
    """Summed cross-entropy of the head's logits for `hidden` (T, B, H) against targets (T, B)."""
    with torch.no_grad():
        hidden = torch.as_tensor(hidden, device=model.head.weight.device)
        logits = model.head(hidden.float())
        targets = torch.as_tensor(targets, device=logits.device)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum").item()


@torch.no_grad()
def stateful_loss(model: CharGRU, ids: np.ndarray) -> float:
    """Mean cross-entropy (nats/char) of predicting ids[1:] from ids[:-1], state carried throughout."""
    model.eval()
    device = model.head.weight.device
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2:
        raise ValueError("need at least 2 characters to measure a loss")
    total = 0.0
    if device.type == "cpu":
        layers = _numpy_weights(model)
        h = np.zeros((model.config.layers, 1, model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(ids) - 1, CHUNK):
            x = ids[start : start + CHUNK][:, None]  # x: (T, 1)
            y = ids[start + 1 : start + CHUNK + 1][:, None]
            x = x[: len(y)]
            total += _nll_sum(model, _hidden_numpy(layers, x, h), y)
    else:
        h = model.initial_state(1, device)
        data = torch.as_tensor(ids, device=device)
        for start in range(0, len(ids) - 1, CHUNK):
            y = data[start + 1 : start + CHUNK + 1]
            x = data[start : start + len(y)]
            logits, h = model(x[:, None], h)  # logits: (T, 1, V)
            total += F.cross_entropy(logits[:, 0].float(), y, reduction="sum").item()
    return total / (len(ids) - 1)


@torch.no_grad()
def windowed_loss(model: CharGRU, ids: np.ndarray, seq_len: int, batch_size: int = 256) -> float:
    """Mean cross-entropy over windows of seq_len characters, each from a zero state."""
    total, count = windowed_nll(model, ids, seq_len, batch_size)
    return total / count


@torch.no_grad()
def windowed_nll(model: CharGRU, ids: np.ndarray, seq_len: int, batch_size: int = 256,
                 shard: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """(summed cross-entropy, predictions) over this shard's windows: shard (rank, world) takes every world-th."""
    model.eval()
    ids = np.asarray(ids, dtype=np.int64)
    n_windows = max(1, (len(ids) - 1) // seq_len)
    T = min(seq_len, len(ids) - 1)
    rank, world = shard
    starts = np.arange(n_windows)[rank::world] * seq_len
    n_windows = len(starts)
    offsets = np.arange(T)
    total, count = 0.0, 0
    device = model.head.weight.device
    layers = _numpy_weights(model) if device.type == "cpu" else None
    for i in range(0, n_windows, batch_size):
        s = starts[i : i + batch_size]
        x = ids[s[None, :] + offsets[:, None]]  # x: (T, B)
        y = ids[s[None, :] + offsets[:, None] + 1]
        if layers is not None:
            h = np.zeros((model.config.layers, len(s), model.config.hidden_size), dtype=np.float32)
            total += _nll_sum(model, _hidden_numpy(layers, x, h), y)
        else:
            logits, _ = model(torch.as_tensor(x, device=device))
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), torch.as_tensor(y, device=device).reshape(-1),
                reduction="sum",
            ).item()
        count += y.size
    return total, count


@torch.no_grad()
def sample(model: CharGRU, start_ids: list[int], length: int, generator: torch.Generator,
           temperature: float = 1.0) -> list[int]:
    """Ids generated after priming with start_ids; uses only `generator`, never the global RNG."""
    model.eval()
    device = model.head.weight.device
    logits, h = model(torch.tensor(start_ids, device=device)[:, None])
    out = []
    for _ in range(length):
        probs = torch.softmax(logits[-1, 0].float().cpu() / temperature, dim=-1)
        next_id = int(torch.multinomial(probs, 1, generator=generator))
        out.append(next_id)
        logits, h = model(torch.tensor([[next_id]], device=device), h)
    return out

