"""The character-level GRU: Embedding(V, E) -> GRU(H) x L -> Linear(V).

With the defaults (E=256, H=1024, L=1) it is exactly the TensorFlow tutorial's
model: 4,021,569 parameters for tiny-shakespeare's 65 symbols. The weights are
nn.GRU's (gate order r, z, n; ONNX linear_before_reset=1), so the model loads
into torch, cuDNN and the ONNX step graph alike.

On CPU, training runs through hand-written pieces: `FusedGRU`, a forward/
backward that keeps torch's autograd out of the time loop, calls one C kernel
per step for the gate arithmetic (csrc/gru_train.c) and turns the weight
gradient into one large GEMM instead of T small ones; dropout through a C
kernel; and the large arrays reused from step to step (`Scratch`). On CUDA it runs cuDNN's nn.GRU.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _gru


@dataclass
class ModelConfig:
    vocab_size: int
    embedding_dim: int = 256
    hidden_size: int = 1024
    layers: int = 1
    dropout: float = 0.0  # on GRU outputs: between layers and before the head
    weight_drop: float = 0.0  # DropConnect on the recurrent weights W_hh, one mask per step (AWD-LSTM)
    input_dropout: float = 0.0  # drops whole input characters: their embedding is zeroed (the GRU sees only its bias)


def _empty(shape, dtype) -> np.ndarray:
    """A large array from numpy, not torch: numpy asks Linux for huge pages
    (madvise), so first touch costs one fault per 2 MB instead of per 4 KB."""
    return np.empty(shape, dtype)


class Scratch:
    """The large arrays of a CPU training step, reused from step to step.

    A tutorial-model step needs about 400 MB of them; allocated afresh every
    step they took 70,000 page faults, 0.15 s of a 1.2 s step. An array is
    handed out again only when nothing else references it (the autograd graph
    of the last step is gone), so a caller that keeps a graph alive, or calls
    backward twice, gets fresh arrays instead of corrupted ones.
    """

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        array = self._arrays.get(name)
        # three references when free: the dict, `array` and getrefcount's argument
        if array is None or array.shape != shape or array.dtype != dtype or sys.getrefcount(array) > 3:
            array = self._arrays[name] = _empty(shape, dtype)
        return array

    def __deepcopy__(self, memo):
        return Scratch()


def _scratch(scratch: Scratch | None, name: str, shape: tuple, dtype) -> np.ndarray:
    return scratch.get(name, shape, dtype) if scratch is not None else _empty(shape, dtype)


class _Gather(torch.autograd.Function):
    """F.embedding(tokens, table) into a huge-page array (see _empty)."""

    @staticmethod
    def forward(ctx, table, tokens, scratch=None):
        table_ = table.detach().contiguous().numpy()
        gi = _scratch(scratch, "gi", (*tokens.shape, table_.shape[1]), table_.dtype)
        np.take(table_, tokens.numpy(), axis=0, out=gi)
        ctx.save_for_backward(tokens)
        ctx.num_rows = table_.shape[0]
        return torch.from_numpy(gi)

    @staticmethod
    def backward(ctx, d_gi):
        (tokens,) = ctx.saved_tensors
        d_table = d_gi.new_zeros(ctx.num_rows, d_gi.shape[-1])
        return d_table.index_add_(0, tokens.reshape(-1), d_gi.reshape(-1, d_gi.shape[-1])), None, None


class _Dropout(torch.autograd.Function):
    """Dropout on CPU through the C kernel (csrc/gru_train.c).

    torch's CPU dropout took 0.1-0.2 s of a 1.2 s step at the GRU's output.
    The mask comes from a seed drawn from torch's generator, so runs stay
    reproducible under torch.manual_seed and resume bit-exactly.
    """

    @staticmethod
    def forward(ctx, x, p, scratch=None, name=""):
        x_ = x.detach().contiguous().numpy().reshape(-1)
        mask = _scratch(scratch, name + "mask", x_.shape, np.uint8)
        _gru.dropout_mask(mask, p, int(torch.randint(0, 2**62, ()).item()))
        y = _scratch(scratch, name + "dropped", x_.shape, x_.dtype)
        ctx.scale = 1.0 / (1.0 - p)
        _gru.dropout_apply(x_, mask, ctx.scale, y)
        ctx.save_for_backward(torch.from_numpy(mask))
        return torch.from_numpy(y).view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        (mask,) = ctx.saved_tensors
        dy_ = dy.contiguous().numpy().reshape(-1)
        dx = np.empty_like(dy_)
        _gru.dropout_apply(dy_, mask.numpy(), ctx.scale, dx)
        return torch.from_numpy(dx).view(dy.shape), None, None, None


class FusedGRU(torch.autograd.Function):
    """One GRU layer over a whole sequence on CPU, given its input projection.

    gi = x @ W_ih^T + b_ih is computed outside (one GEMM for all T steps), so
    the loop holds only the recurrent GEMM and one call of a C kernel for the
    gate arithmetic (csrc/gru_train.c), forward and backward. The GEMMs go
    through numpy's BLAS: OpenBLAS runs this loop's (64 x 1024) @ (1024 x 3072)
    at about twice the speed of torch's MKL on AMD processors (measured: 3.4 ms
    against 6.6 ms), and the arrays share memory with the tensors, so nothing
    is copied. The weight gradient is one large GEMM instead of T small ones.
    """

    @staticmethod
    def forward(ctx, gi, h0, w_hh, b_hh, scratch=None, name="", bf16=False):
        # gi: (T, B, 3H)  h0: (B, H)  w_hh: (3H, H)  b_hh: (3H,)
        T, B, H3 = gi.shape
        H = H3 // 3
        gi_ = gi.contiguous().numpy()
        out_ = _scratch(scratch, name + "out", (T, B, H), gi_.dtype)  # h_1..h_T
        gates_ = _scratch(scratch, name + "gates", (T, B, 4 * H), gi_.dtype)  # [r z n gh_n]: all the backward needs
        ctx.scratch, ctx.name, ctx.bf16 = scratch, name, bf16
        out, gates = torch.from_numpy(out_), torch.from_numpy(gates_)
        b_hh_ = b_hh.detach().contiguous().numpy()
        gh = np.empty((B, 3 * H), dtype=gi_.dtype)  # gh: (B, 3H)
        h = h0.detach().contiguous().numpy()  # h: (B, H)
        if bf16:
            # bf16 GEMMs through torch (oneDNN: avx512_bf16 / AMX), float32 accumulation;
            # the state, the gates and everything outside the products stay float32
            ctx.w_bf = w_hh.detach().to(torch.bfloat16)  # w_bf: (3H, H), the backward's too
            w_t = ctx.w_bf.t()  # w_t: (H, 3H)
            h_bf, gh_bf = torch.empty(B, H, dtype=torch.bfloat16), torch.empty(B, 3 * H, dtype=torch.bfloat16)
            gh_t = torch.from_numpy(gh)
        else:
            w_hh_t = w_hh.detach().numpy().T
        for t in range(T):
            if bf16:
                h_bf.copy_(torch.from_numpy(h))
                torch.mm(h_bf, w_t, out=gh_bf)
                gh_t.copy_(gh_bf)
            else:
                np.matmul(h, w_hh_t, out=gh)
            _gru.forward_step(gi_[t], gh, b_hh_, h, gates_[t], out_[t])
            h = out_[t]
        ctx.save_for_backward(h0, w_hh, out, gates)
        return out, out[-1].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT):
        h0, w_hh, out, gates = ctx.saved_tensors
        T, B, H = out.shape
        h0_, w_hh_, out_, gates_ = h0.contiguous().numpy(), w_hh.contiguous().numpy(), out.numpy(), gates.numpy()
        d_out_ = d_out.contiguous().numpy() if d_out is not None else None
        carry = d_hT.contiguous().numpy().copy() if d_hT is not None else np.zeros((B, H), out_.dtype)
        dh_rec = np.empty((B, H), out_.dtype)  # dh_rec: (B, H), d_gh[t + 1] @ W_hh
        d_gi_ = _scratch(ctx.scratch, ctx.name + "d_gi", (T, B, 3 * H), out_.dtype)
        d_gh_ = _scratch(ctx.scratch, ctx.name + "d_gh", (T, B, 3 * H), out_.dtype)
        d_gi, d_gh = torch.from_numpy(d_gi_), torch.from_numpy(d_gh_)
        if ctx.bf16:
            w_bf = ctx.w_bf  # w_bf: (3H, H), rounded once in the forward
            dgh_bf, dh_bf = torch.empty(B, 3 * H, dtype=torch.bfloat16), torch.empty(B, H, dtype=torch.bfloat16)
            dh_rec_t = torch.from_numpy(dh_rec)
        for t in range(T - 1, -1, -1):
            h_prev = out_[t - 1] if t > 0 else h0_
            _gru.backward_step(gates_[t], h_prev, None if d_out_ is None else d_out_[t],
                               None if t == T - 1 else dh_rec, carry, d_gi_[t], d_gh_[t])
            if ctx.bf16:
                dgh_bf.copy_(d_gh[t])
                torch.mm(dgh_bf, w_bf, out=dh_bf)
                dh_rec_t.copy_(dh_bf)
            else:
                np.matmul(d_gh_[t], w_hh_, out=dh_rec)
        d_h0 = torch.from_numpy(dh_rec + carry)
        # weight gradient: one GEMM over all steps instead of T small ones
        if ctx.bf16:
            h_prevs = torch.cat([h0.to(torch.bfloat16)[None], out[:-1].to(torch.bfloat16)])  # h_prevs: (T, B, H)
            d_w_hh = torch.mm(d_gh.reshape(-1, 3 * H).to(torch.bfloat16).t(), h_prevs.reshape(-1, H)).float()
        else:
            d_w_hh = np.matmul(d_gh_[1:].reshape(-1, 3 * H).T, out_[:-1].reshape(-1, H))
            d_w_hh += d_gh_[0].T @ h0_
            d_w_hh = torch.from_numpy(d_w_hh)
        d_b_hh = d_gh.reshape(-1, 3 * H).sum(0)
        return d_gi, d_h0, d_w_hh, d_b_hh, None, None, None


def _linear_bf16(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x @ weight^T + bias with the product in bfloat16 (float32 accumulation) and the
    result and bias in float32: what autocast would do, kept out of the custom
    autograd Functions around it, which take float32 numpy-backed tensors."""
    return F.linear(x.to(torch.bfloat16), weight.to(torch.bfloat16)).float() + bias


class CharGRU(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.rnn = nn.GRU(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.fused = True  # use FusedGRU on CPU
        self.bf16 = False  # in fused CPU training: the GEMMs in bfloat16 (float32 accumulation)
        self.scratch = Scratch()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def initial_state(self, batch_size: int, device=None) -> torch.Tensor:
        c = self.config
        return torch.zeros(c.layers, batch_size, c.hidden_size, device=device, dtype=self.head.weight.dtype)

    def forward(self, tokens: torch.Tensor, h: torch.Tensor | None = None):
        """tokens: (T, B) int64, time-major; h: (L, B, H). Returns logits (T, B, V), h (L, B, H)."""
        T, B = tokens.shape
        if h is None:
            h = self.initial_state(B, tokens.device)
        keep = None
        if self.training and self.config.input_dropout > 0:
            keep = torch.rand(tokens.shape, device=tokens.device) >= self.config.input_dropout  # keep: (T, B)
        fused = self.fused and tokens.device.type == "cpu" and self.training
        if fused:
            x, h = self._fused_rnn(tokens, None, h, keep)
        else:
            x = self.embedding(tokens)  # x: (T, B, E)
            if keep is not None:
                x = x * (keep[..., None] / (1 - self.config.input_dropout))
            if self.training and self.config.weight_drop > 0:
                dropped = {f"weight_hh_l{layer}": self.recurrent_weight(layer) for layer in range(self.config.layers)}
                with warnings.catch_warnings():  # cuDNN re-packs the masked weights each call: expected
                    warnings.filterwarnings("ignore", message="RNN module weights are not part")
                    x, h = torch.func.functional_call(self.rnn, dropped, (x, h))  # x: (T, B, H)
            else:
                x, h = self.rnn(x, h)  # x: (T, B, H)
        x = self.dropout(x, self.config.dropout, "out.")
        if fused and self.bf16:
            logits = _linear_bf16(x, self.head.weight, self.head.bias)  # logits: (T, B, V)
        else:
            logits = self.head(x)  # logits: (T, B, V)
        return logits, h

    def _fused_rnn(self, tokens, x, h, keep=None):
        h_out = []
        for layer in range(self.config.layers):
            if layer > 0:
                x = self.dropout(x, self.rnn.dropout, f"l{layer}.in.")
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            b_ih = getattr(self.rnn, f"bias_ih_l{layer}")
            w_hh = self.recurrent_weight(layer)
            b_hh = getattr(self.rnn, f"bias_hh_l{layer}")
            if layer == 0:
                # Embedding and input projection fold into one (V, 3H) table: a
                # (V x E x 3H) GEMM and a gather instead of a (T*B x E x 3H) GEMM.
                table = F.linear(self.embedding.weight, w_ih, b_ih)  # table: (V, 3H)
                if keep is not None:
                    # input dropout inside the gather: kept characters read rows scaled by 1/(1-p),
                    # dropped ones an extra row holding what a zero embedding gives, the bias
                    p = self.config.input_dropout
                    table = torch.cat([(table - b_ih) / (1 - p) + b_ih, b_ih[None]])  # table: (V + 1, 3H)
                    tokens = torch.where(keep, tokens, table.shape[0] - 1)
                gi = _Gather.apply(table, tokens, self.scratch)  # gi: (T, B, 3H)
            elif self.bf16:
                gi = _linear_bf16(x, w_ih, b_ih)  # gi: (T, B, 3H), one GEMM for all steps
            else:
                gi = F.linear(x, w_ih, b_ih)  # gi: (T, B, 3H), one GEMM for all steps
            x, h_last = FusedGRU.apply(gi, h[layer], w_hh, b_hh, self.scratch, f"l{layer}.", self.bf16)
            h_out.append(h_last)
        return x, torch.stack(h_out)  # h: (L, B, H)

    def recurrent_weight(self, layer: int) -> torch.Tensor:
        """W_hh of a layer; in training, with weight drop, a masked copy (the same mask for every time step)."""
        w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
        return self.dropout(w_hh, self.config.weight_drop, f"l{layer}.w_hh.")

    def dropout(self, x: torch.Tensor, p: float, name: str) -> torch.Tensor:
        """Dropout in training; on CPU through the C kernel, elsewhere torch's."""
        if not self.training or p == 0:
            return x
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
            return _Dropout.apply(x, p, self.scratch, name)
        return F.dropout(x, p, True)

    def loss(self, tokens, targets, h=None):
        logits, h = self(tokens, h)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return loss, h
