import numpy as np
import pytest
import torch

from chargen.train import evaluate
from chargen.train.model import CharGRU, ModelConfig


def test_tutorial_model_has_the_tutorial_parameter_count():
    assert CharGRU(ModelConfig(65)).num_parameters() == 4_021_569


@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (2, 0.0), (2, 0.3)])
def test_fused_cpu_gru_matches_nn_gru_forward_and_gradients(layers, dropout):
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(11, 5, 7, layers=layers, dropout=dropout)).double().train()
    tokens, targets = torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))
    h0 = torch.randn(layers, 3, 7, dtype=torch.double)
    results = []
    for fused in (True, False):
        model.fused = fused
        torch.manual_seed(1)  # same dropout masks on both paths
        loss, h = model.loss(tokens, targets, h0)
        grads = torch.autograd.grad(loss + h.square().sum(), list(model.parameters()))
        results.append((loss, h, grads))
    (l1, h1, g1), (l2, h2, g2) = results
    if dropout == 0.0:
        assert torch.allclose(l1, l2, atol=1e-12) and torch.allclose(h1, h2, atol=1e-12)
        for a, b in zip(g1, g2):
            assert torch.allclose(a, b, atol=1e-10)
    else:  # nn.GRU draws its inter-layer masks differently; the losses are both finite and close
        assert torch.isfinite(l1) and abs(l1.item() - l2.item()) < 0.5


def test_fused_gradcheck():
    torch.manual_seed(0)
    from chargen.train.model import FusedGRU

    gi = torch.randn(4, 2, 9, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    w = torch.randn(9, 3, dtype=torch.double, requires_grad=True)
    b = torch.randn(9, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(FusedGRU.apply, (gi, h0, w, b))


def test_fused_float32_kernel_matches_nn_gru():
    # float32 runs the vectorised kernel (its own sigmoid/tanh); float64 above runs libm's
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(65, 32, 256)).train()
    tokens, targets = torch.randint(0, 65, (50, 8)), torch.randint(0, 65, (50, 8))
    h0 = torch.randn(1, 8, 256) * 3  # saturating gates too
    results = []
    for fused in (True, False):
        model.fused = fused
        loss, h = model.loss(tokens, targets, h0)
        grads = torch.autograd.grad(loss + h.square().sum(), list(model.parameters()))
        results.append((loss, h, grads))
    (l1, h1, g1), (l2, h2, g2) = results
    assert abs(l1.item() - l2.item()) < 1e-5
    assert torch.allclose(h1, h2, atol=1e-5)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("layers", [1, 2])
def test_fused_bf16_gemms_stay_close_to_float32(layers):
    """--precision bf16 on CPU: bfloat16 products (8-bit mantissa), float32 sums, state and
    gates. Loss and every gradient stay within bf16 rounding of the float32 path's, and the
    path is deterministic (resume depends on it)."""
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(65, 32, 128, layers=layers)).train()
    tokens, targets = torch.randint(0, 65, (40, 8)), torch.randint(0, 65, (40, 8))
    h0 = torch.randn(layers, 8, 128)
    results = []
    for bf16 in (False, True, True):
        model.bf16 = bf16
        loss, h = model.loss(tokens, targets, h0)
        grads = torch.autograd.grad(loss + h.square().mean(), list(model.parameters()))
        results.append((loss, h, grads))
    (l32, h32, g32), (l16, h16, g16), (l16b, h16b, g16b) = results
    assert l16.dtype == torch.float32 and h16.dtype == torch.float32
    assert abs(l16.item() - l32.item()) < 5e-3 * l32.item()
    assert (h16 - h32).abs().max() < 0.05
    for a, b in zip(g16, g32):
        assert (a - b).norm() < 0.03 * b.norm() + 1e-6, ((a - b).norm(), b.norm())
    assert l16b.item() == l16.item() and torch.equal(h16b, h16)
    assert all(torch.equal(a, b) for a, b in zip(g16, g16b))
    assert l16.item() != l32.item()  # it did run in bf16


def test_gru_kernel_rejects_wrong_shapes():
    from chargen.train import _gru

    B, H = 2, 3
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    _gru.forward_step(z(B, 3 * H), z(B, 3 * H), z(3 * H), z(B, H), z(B, 4 * H), z(B, H))
    with pytest.raises(ValueError, match=r"gates must be \(2, 12\)"):
        _gru.forward_step(z(B, 3 * H), z(B, 3 * H), z(3 * H), z(B, H), z(B, 3 * H), z(B, H))
    with pytest.raises(ValueError, match="dh_rec"):
        _gru.backward_step(z(B, 4 * H), z(B, H), None, z(B, 2 * H), z(B, H), z(B, 3 * H), z(B, 3 * H))


def test_numpy_evaluation_matches_torch():
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(13, 8, 16, layers=2)).eval()
    ids = np.random.default_rng(0).integers(0, 13, 3000)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids[:-1])[:, None])
        stateful = torch.nn.functional.cross_entropy(logits[:, 0], torch.as_tensor(ids[1:])).item()
        windows = torch.as_tensor(ids[: 29 * 100 + 1])
        x = windows[:-1].reshape(29, 100).T
        y = windows[1:].reshape(29, 100).T
        logits, _ = model(x)
        windowed = torch.nn.functional.cross_entropy(logits.reshape(-1, 13), y.reshape(-1)).item()
    assert evaluate.stateful_loss(model, ids) == pytest.approx(stateful, abs=1e-5)
    assert evaluate.windowed_loss(model, ids, 100) == pytest.approx(windowed, abs=1e-5)
    # the stateful pass runs in chunks: a text longer than one chunk gives the same answer
    old = evaluate.CHUNK
    try:
        evaluate.CHUNK = 700
        assert evaluate.stateful_loss(model, ids) == pytest.approx(stateful, abs=1e-5)
    finally:
        evaluate.CHUNK = old


def test_sampling_uses_its_own_generator_only():
    model = CharGRU(ModelConfig(13, 8, 16))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = evaluate.sample(model, [1, 2], 30, torch.Generator().manual_seed(3))
    assert torch.equal(before, torch.get_rng_state())
    assert a == evaluate.sample(model, [1, 2], 30, torch.Generator().manual_seed(3))
    assert len(a) == 30 and all(0 <= i < 13 for i in a)


def test_scratch_reuse_never_overwrites_a_live_graph():
    # Two forwards before either backward: the second must not reuse the first's arrays.
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(11, 5, 7, layers=2)).double().train()
    batches = [(torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))) for _ in range(2)]
    expected = []
    for x, y in batches:  # one at a time: arrays reused between them
        loss, _ = model.loss(x, y)
        expected.append(torch.autograd.grad(loss, list(model.parameters())))
    losses = [model.loss(x, y)[0] for x, y in batches]  # both graphs alive at once
    for loss, want in zip(reversed(losses), reversed(expected)):
        got = torch.autograd.grad(loss, list(model.parameters()))
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    reused = model.scratch.get("l0.gates", model.scratch._arrays["l0.gates"].shape, np.float64)
    assert reused is model.scratch._arrays["l0.gates"]


def assert_paths_agree(model, tokens, targets):
    """Fused and nn.GRU paths under the same seed (so the same masks): same loss and gradients.
    Returns (loss, gradients) of the fused path."""
    results = []
    for fused in (True, False):
        model.fused = fused
        torch.manual_seed(1)
        loss, _ = model.loss(tokens, targets)
        results.append((loss, torch.autograd.grad(loss, list(model.parameters()))))
    (l1, g1), (l2, g2) = results
    assert torch.allclose(l1, l2, atol=1e-12)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10)
    return l1, g1


def test_weight_drop_is_the_same_on_both_paths_and_off_in_eval():
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(11, 5, 7, dropout=0.2, weight_drop=0.5)).double().train()
    tokens, targets = torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))
    l1, g1 = assert_paths_agree(model, tokens, targets)
    w_hh_grad = g1[list(dict(model.named_parameters())).index("rnn.weight_hh_l0")]
    assert (w_hh_grad == 0).float().mean() > 0.3  # dropped connections get no gradient
    torch.manual_seed(2)
    without, _ = model.loss(tokens, targets)
    assert not torch.allclose(without, l1)  # another mask, another loss
    model.eval()
    e1, _ = model.loss(tokens, targets)
    e2, _ = model.loss(tokens, targets)
    assert torch.equal(e1, e2)


def test_input_dropout_is_the_same_on_both_paths_and_off_in_eval():
    """Fused: dropped characters read an extra table row (the bias); nn.GRU path: a zeroed embedding."""
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(11, 5, 7, layers=2, input_dropout=0.4)).double().train()
    tokens, targets = torch.randint(0, 11, (9, 3)), torch.randint(0, 11, (9, 3))
    l1, g1 = assert_paths_agree(model, tokens, targets)
    model.eval()
    clean, _ = model.loss(tokens, targets)
    assert not torch.allclose(clean, l1)  # the mask changed the training loss
    torch.manual_seed(1)
    keep = torch.rand(tokens.shape) >= 0.4
    assert 0 < keep.float().mean() < 1
    # what the mask means: a dropped character is a zero embedding, a kept one scaled by 1/(1-p)
    with torch.no_grad():
        x = model.embedding(tokens) * (keep[..., None] / 0.6)
        out, _ = model.rnn(x)
        expected = torch.nn.functional.cross_entropy(model.head(out).reshape(-1, 11), targets.reshape(-1))
    assert torch.allclose(l1, expected, atol=1e-12)


def test_cpu_dropout_kernel():
    from chargen.train.model import Scratch, _Dropout

    x = torch.randn(200, 64, 33, dtype=torch.double, requires_grad=True)
    torch.manual_seed(3)
    y = _Dropout.apply(x, 0.3, Scratch(), "t.")
    kept = y != 0
    assert abs(kept.double().mean().item() - 0.7) < 0.01
    assert torch.allclose(y[kept], x[kept] / 0.7)
    (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(g != 0, kept) and torch.allclose(g[kept], torch.full_like(g[kept], 1 / 0.7))
    torch.manual_seed(3)
    assert torch.equal(_Dropout.apply(x, 0.3, None, ""), y)  # the mask follows torch's seed
    assert not torch.equal(_Dropout.apply(x, 0.3, None, ""), y)
    small = torch.randn(5, 4, dtype=torch.double, requires_grad=True)

    def fixed_mask(t):
        torch.manual_seed(4)
        return _Dropout.apply(t, 0.5, None, "")

    assert torch.autograd.gradcheck(fixed_mask, (small,))
