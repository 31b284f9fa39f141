"""chargen.runtime.bench: what gen bench reports, on a tiny random model (no timings asserted,
only what must hold however fast the machine is)."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from chargen.export.graph import build_step_graph, random_weights  # noqa: E402
from chargen.runtime import GenerationOptions, Generator, Model  # noqa: E402
from chargen.runtime.bench import StepSplit, compare_bench  # noqa: E402
from chargen.runtime.contract import Vocab  # noqa: E402

ALPHABET = "\n !,.:;?abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    vocab = Vocab.from_text(ALPHABET)
    config = dict(vocab_size=len(vocab), embedding_dim=8, hidden_size=16, layers=1, dropout=0.0)
    path = tmp_path_factory.mktemp("bench") / "tiny.onnx"
    onnx.save(build_step_graph(random_weights(len(vocab), 8, 16, 1, seed=3), config, vocab), path)
    return Model.load(path, device="cpu")


def generator(model, B=3):
    g = Generator(model, GenerationOptions(seed=11), batch_size=B)
    g.feed("to be")
    return g


def test_step_split_times_the_real_step_and_leaves_the_generator_as_it_was(model):
    timed, plain = generator(model), generator(model)
    split = StepSplit(timed)
    whole, graph, sampler = split.run(40)
    assert graph > 0 and sampler > 0 and whole >= graph + sampler
    # the timed steps are the generator's own: same text as untimed steps, and afterwards the
    # generator runs its own methods again
    for _ in range(40):
        plain.step()
    assert np.array_equal(timed.state().h, plain.state().h)
    assert "_run" not in vars(timed) and type(timed._sampler).__name__ == "Sampler"
    assert timed.step() == plain.step()


def test_the_split_adds_up_to_the_step_it_was_taken_from(model):
    report = compare_bench([model.path], device="cpu", seconds=0.1, batch_sizes=(1, 4), cold_start=False)[0]
    for run in report["runs"]:
        parts = run["graph_us"] + run["sampler_us"] + run["rest_us"]
        assert run["rest_us"] >= 0 and parts == pytest.approx(run["split_step_us"])
        assert run["chars_per_s"] == pytest.approx(run["batch_size"] / run["step_us"] * 1e6)
