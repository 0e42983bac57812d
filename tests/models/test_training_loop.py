import argparse
import json
import multiprocessing

import numpy as np
import pytest
import torch

from napari_connectome.models.datasets import DataSource
from napari_connectome.models.synapse_training import SynapseTrainingConfig
from napari_connectome.models.training import TrainingConfig
from napari_connectome.models.training_loop import (
    _lr_factor,
    add_training_arguments,
    batch_stream,
    config_arguments,
    optimise,
    record_path,
    run_training,
    training_record,
    write_record,
)


class _Sampler:
    """Batches of (images, targets) drawn from numpy's generator of a seed."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed):
        self.rng = np.random.default_rng(seed)

    def batch(self, size):
        images = self.rng.random((size, 1, 8, 8)).astype(np.float32)
        return images, (images > 0.5).astype(np.float32)


def _setup():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 1, 1))
    return model, {"name": "tiny"}, ["plane"], _Sampler(0)


def _loss(logits, targets):
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_optimise_is_seeded_and_reports_every_step():
    config = TrainingConfig(output="unused", steps=5, batch_size=2, warmup_steps=1, seed=3)
    steps = []
    model, cfg, samples, losses = optimise(
        config, torch.device("cpu"), _setup, _loss, lambda s, n, v: steps.append((s, n))
    )
    assert steps == [(i, 5) for i in range(1, 6)] and len(losses) == 5
    assert cfg == {"name": "tiny"} and samples == ["plane"] and not model.training
    again = optimise(config, torch.device("cpu"), _setup, _loss)[0]
    torch.testing.assert_close(_params(again), _params(model), rtol=0, atol=0)
    reseeded = TrainingConfig(**{**vars(config), "seed": 4})
    other = optimise(reseeded, torch.device("cpu"), _setup, _loss)[0]
    assert not torch.equal(_params(other), _params(model))  # the seed sets the initial weights


def test_batch_stream_without_workers_draws_the_samplers_own_batches():
    stream = batch_stream(_Sampler(5), 3, seed=0)
    expected = _Sampler(5)
    for _ in range(3):
        images, targets = next(stream)
        want = expected.batch(3)
        assert isinstance(images, torch.Tensor) and images.shape == (3, 1, 8, 8)
        np.testing.assert_array_equal(images.numpy(), want[0])
        np.testing.assert_array_equal(targets.numpy(), want[1])


def test_batch_stream_workers_take_turns_with_their_own_seeds():
    def first(workers, seed):
        stream = batch_stream(_Sampler(0), 2, seed=seed, workers=workers)
        return [next(stream)[0].numpy() for _ in range(4)]

    batches = first(2, seed=7)
    # worker i draws from the generator of [seed, i], in turn
    drawn = {i: _Sampler([7, i]) for i in (0, 1)}
    for batch, worker in zip(batches, (0, 1, 0, 1), strict=True):
        np.testing.assert_array_equal(batch, drawn[worker].batch(2)[0])
    again = first(2, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert not np.array_equal(first(2, seed=8)[0], batches[0])


def test_optimise_with_workers_trains_reproducibly():
    config = TrainingConfig(
        output="unused", steps=4, batch_size=2, warmup_steps=1, seed=3, workers=2
    )
    model, _, _, losses = optimise(config, torch.device("cpu"), _setup, _loss)
    assert len(losses) == 4 and all(np.isfinite(losses))
    again = optimise(config, torch.device("cpu"), _setup, _loss)[0]
    torch.testing.assert_close(_params(again), _params(model), rtol=0, atol=0)
    serial = optimise(
        TrainingConfig(**{**vars(config), "workers": 0}), torch.device("cpu"), _setup, _loss
    )[0]
    assert not torch.equal(_params(serial), _params(model))  # other patches, other result


def test_optimise_stops_its_workers_when_training_fails():
    config = TrainingConfig(
        output="unused", steps=5, batch_size=2, warmup_steps=1, seed=3, workers=2
    )

    def fail_at_step_two(step, steps, loss):
        if step == 2:
            raise RuntimeError("stopped by the test")

    with pytest.raises(RuntimeError, match="stopped by the test") as failure:
        optimise(config, torch.device("cpu"), _setup, _loss, fail_at_step_two)
    # the traceback keeps optimise's variables alive; the workers must be gone anyway
    assert failure.value is not None and multiprocessing.active_children() == []


def test_optimise_stops_at_the_deadline():
    config = TrainingConfig(output="unused", steps=5, batch_size=2)
    model, _, _, losses = optimise(config, torch.device("cpu"), _setup, _loss, deadline=0.0)
    assert losses == [] and not model.training


def test_stop_after_repeats_a_run_cut_short_at_that_step():
    config = TrainingConfig(output="unused", steps=5, batch_size=2, warmup_steps=1, seed=3)
    held = {}

    def setup():
        out = _setup()
        held["model"] = out[0]
        return out

    def progress(step, steps, value):
        if step == 3:
            held["after 3"] = _params(held["model"]).clone()

    full_losses = optimise(config, torch.device("cpu"), setup, _loss, progress)[3]
    model, _, _, losses = optimise(config, torch.device("cpu"), _setup, _loss, stop_after=3)
    assert losses == full_losses[:3]  # same batches, same learning rates (schedule of 5)
    torch.testing.assert_close(_params(model), held["after 3"], rtol=0, atol=0)


def test_learning_rate_warms_up_then_decays_to_five_percent():
    factor = _lr_factor(TrainingConfig(output="x", steps=100, warmup_steps=10))
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(9) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.05) and factor(500) == pytest.approx(0.05)
    values = [factor(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_record_fields_and_writing(tmp_path):
    raw = np.zeros((6, 4, 4), np.uint8)
    np.savez(tmp_path / "vol.npz", raw=raw, membranes=raw)
    source = DataSource(str(tmp_path / "vol.npz"), (40.0, 4.0, 4.0), holdout_last=2)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")

    class Plane:
        def __init__(self, source):
            self.source = source

    samples = [Plane("vol"), Plane("vol"), Plane("phantom0")]
    config = TrainingConfig(output=str(weights), steps=3)
    losses = [3.0, 2.0, 1.0]
    record = training_record(
        weights,
        {"depth": 2},
        config,
        [source],
        samples,
        losses,
        1.234,
        torch.device("cpu"),
        source_fields=lambda s: {"target": s.membranes},
        stopped_early=False,
    )
    keys = list(record)
    assert keys.index("stopped_early") == keys.index("steps") + 1
    assert list(record["data"][0]) == [
        "name",
        "path",
        "target",
        "voxel_size",
        "held_out_sections",
        "training_planes",
    ]
    assert record["data"][0]["held_out_sections"] == [4, 5]
    assert record["data"][0]["training_planes"] == 2
    assert record["phantom_planes"] == {"phantom0": 1}
    assert record["steps"] == 3 and record["seconds"] == 1.23
    assert record["first_loss"] == 3.0 and record["final_loss"] == 1.0
    assert record["loss_curve"] == [[1, 3.0], [2, 2.5], [3, 2.0]]
    assert record["training_config"]["steps"] == 3 and record["validation"] == {}
    assert record["hardware"]["device"] == "cpu" and record["weights_bytes"] == 7
    plain = training_record(weights, {}, config, [], [], [], 0.0, torch.device("cpu"))
    assert "stopped_early" not in plain and plain["final_loss"] is None
    path = write_record(record)
    assert path == record_path(weights) == tmp_path / "w.training.json"
    assert json.loads(path.read_text())["steps"] == 3
    assert write_record({"a": 1}, tmp_path / "other.pt") == tmp_path / "other.training.json"


@pytest.mark.parametrize("config_class", [TrainingConfig, SynapseTrainingConfig])
def test_command_line_defaults_are_the_configuration_defaults(config_class):
    parser = argparse.ArgumentParser()
    add_training_arguments(parser, config_class)
    from_cli = config_class(**config_arguments(parser.parse_args(["--output", "w.st"])))
    assert from_cli == config_class(output="w.st")
    args = parser.parse_args(
        ["--output", "w", "--lr", "0.5", "--threads", "3", "--no-validate", "--workers", "2"]
        + ["--phantom-shape", "2", "3", "4", "--data-dir", "d"]
    )
    config = config_class(**config_arguments(args))
    assert config.learning_rate == 0.5 and config.num_threads == 3 and not config.validate
    assert config.workers == 2
    assert config.phantom_shape == (2, 3, 4) and config.data_dir == "d"


def test_run_training_prints_progress_summary_and_validation(capsys):
    def fake_train(config, progress):
        for step in range(1, config.steps + 1):
            progress(step, config.steps, 1.0 / step)
        return {"weights": "w", "seconds": 1.0, "final_loss": 0.1, "validation": {"v": 1}}

    assert run_training(fake_train, TrainingConfig(output="w", steps=100)) == 0
    out = capsys.readouterr().out
    assert "step 2/100 loss 0.5000" in out and "step 3/100" not in out
    assert "step 100/100" in out
    assert '"final_loss": 0.1' in out and '"v": 1' in out
