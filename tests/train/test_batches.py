"""The batch order: windowed and stateful (truncated BPTT) batches, a pure function of (seed, epoch, index)."""

import pytest
import torch

from chargen.train.config import ConfigError, make_config
from chargen.train.loop import Batches

IDS = torch.arange(10_000) % 9973  # distinct enough to locate every window in the text


def test_stateful_streams_continue_from_batch_to_batch():
    b = Batches(torch.arange(10_000), batch_size=8, seq_len=50, seed=3, stateful=True)
    assert b.steps_per_epoch == (10_000 - 51) // 8 // 50
    x0, y0, keep0 = b.get(0, 0)
    assert x0.shape == y0.shape == (50, 8) and torch.equal(y0[:-1], x0[1:])
    assert torch.equal(keep0, torch.zeros(8))  # every epoch starts cold
    previous = (x0, y0)
    for index in range(1, b.steps_per_epoch):
        x, y, keep = b.get(0, index)
        assert torch.equal(x[0], previous[1][-1])  # each stream picks up where it left off
        assert torch.equal(keep, torch.ones(8))  # state_reset 0: the state always carries
        previous = (x, y)
    # the streams are disjoint stretches of the text, and the last one stays inside it
    starts = b.get(0, 0)[0][0]
    assert len(set(starts.tolist())) == 8 and int(b.get(0, b.steps_per_epoch - 1)[1].max()) < 10_000


def test_stateful_batches_are_a_pure_function_of_seed_epoch_and_index():
    a = Batches(torch.arange(10_000), 8, 50, seed=3, stateful=True, state_reset=0.3)
    b = Batches(torch.arange(10_000), 8, 50, seed=3, stateful=True, state_reset=0.3)
    keeps = []
    for epoch, index in [(0, 5), (1, 2), (0, 7), (1, 2)]:
        xa, _, ka = a.get(epoch, index)
        xb, _, kb = b.get(epoch, index)  # b reaches the same batch by another path
        assert torch.equal(xa, xb) and torch.equal(ka, kb)
    for index in range(1, a.steps_per_epoch):
        keeps.append(a.get(0, index)[2])
    resets = 1 - torch.stack(keeps).mean()
    assert 0.2 < resets < 0.4  # about state_reset of the streams restart cold
    assert not torch.equal(a.get(0, 1)[0], a.get(1, 1)[0])  # another epoch, another offset


def test_windowed_batches_are_unchanged_by_the_stateful_option():
    x, y, keep = Batches(IDS, 8, 50, seed=3).get(0, 0)
    assert keep is None and torch.equal(y[:-1], x[1:])
    starts = x[0].tolist()
    assert len(set(starts)) == 8  # shuffled windows, not streams: not evenly spaced
    assert len({b - a for a, b in zip(sorted(starts), sorted(starts)[1:])}) > 1


def test_state_reset_needs_stateful_and_a_probability():
    with pytest.raises(ConfigError, match="--state-reset needs --stateful"):
        make_config("tutorial", state_reset=0.1)
    with pytest.raises(ConfigError, match=r"--state-reset must be in \[0, 1\]"):
        make_config("tutorial", stateful=True, state_reset=1.5)
    assert make_config("tutorial", stateful=True, state_reset=1.0).stateful
