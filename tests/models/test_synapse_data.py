import numpy as np
import pytest

from napari_connectome.models.datasets import DataSource
from napari_connectome.models.synapse_data import (
    SynapsePatchSampler,
    SynapsePlane,
    default_synapse_sources,
    make_synapse_samples,
    partner_zone,
    phantom_synapse_volumes,
)
from napari_connectome.models.training_loop import batch_stream


def test_presynaptic_zone_is_the_pre_neuron_near_the_synapse():
    neurons = np.zeros((3, 40, 40), np.uint32)
    neurons[:, :, :20] = 1
    neurons[:, :, 20:] = 2
    synapses = np.zeros_like(neurons)
    synapses[1, 10:30, 19:21] = 1
    table = np.array([(1, 1)], [("id", np.uint32), ("pre", np.uint32)])
    zone = partner_zone(synapses, neurons, table, (40.0, 4.0, 4.0), "pre", reach_nm=20.0)
    assert zone.any()
    assert np.all(neurons[zone] == 1)  # only the presynaptic neuron
    ys, xs = np.nonzero(zone[1])
    assert xs.min() >= 19 - 5 and ys.min() >= 10 - 5  # within 20 nm = 5 px
    assert not zone[1, :, :10].any()


def test_postsynaptic_zone_is_the_post_neurons_near_the_synapse():
    neurons = np.zeros((1, 40, 60), np.uint32)
    neurons[:, :, :20], neurons[:, :, 20:40], neurons[:, :, 40:] = 1, 2, 3
    neurons[:, 30:, 20:40] = 4  # a bystander beside the synapse
    synapses = np.zeros_like(neurons)
    synapses[0, 10:30, 19:21] = 1  # pre 1 onto 2 only
    table = np.array([(1, 1, 2)], [("id", np.uint32), ("pre", np.uint32), ("post", np.uint32)])
    zone = partner_zone(synapses, neurons, table, (40.0, 4.0, 4.0), "post", reach_nm=20.0)
    assert zone.any() and np.all(neurons[zone] == 2)  # neither pre 1 nor bystander 4
    assert not zone[0, :, 26:].any()  # within 20 nm = 5 px of the synapse
    with pytest.raises(ValueError, match="side must be"):
        partner_zone(synapses, neurons, table, (40.0, 4.0, 4.0), "both")


def test_phantom_targets_have_both_partner_zones():
    (ph,) = phantom_synapse_volumes(1, shape=(16, 256, 256), seed=3, sides=("pre", "post"))
    pre, post = ph["sides"]
    assert post.any() and pre.any()
    table = ph["phantom"].synapse_table
    assert set(np.unique(ph["phantom"].neurons[post])) <= set(table["post"].tolist())
    assert (post & ph["synapse"]).any()  # over the postsynaptic densities too


def test_default_sources_hold_out_the_validation_sections(tmp_path):
    raw = np.zeros((30, 8, 8), np.uint8)
    np.savez(tmp_path / "isbi2012_cardona_3d.npz", raw=raw, synapses=raw)
    np.savez(tmp_path / "drosophila_vnc_stack1.npz", raw=raw[:20], synapses=raw[:20])
    isbi, vnc = default_synapse_sources(tmp_path)
    assert isbi.held_out(30) == list(range(20, 30))
    assert vnc.held_out(20) == list(range(15, 20))
    assert isbi.membranes == vnc.membranes == "synapses"
    assert default_synapse_sources(tmp_path / "missing") == []


def test_held_out_sections_never_become_training_planes(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (10, 32, 32), dtype=np.uint8)
    synapses = np.zeros(raw.shape, np.uint8)
    synapses[-3:] = 1  # only the held-out sections hold synapses
    np.savez(tmp_path / "v.npz", raw=raw, synapses=synapses)
    source = DataSource(
        str(tmp_path / "v.npz"), (40.0, 8.0, 8.0), membranes="synapses", holdout_last=3
    )
    samples = make_synapse_samples([source], pixel_size_nm=8.0)
    assert len(samples) == 7
    assert all(s.target.shape == (2, 32, 32) for s in samples)
    assert all(s.target.max() == 0 and not s.pre_supervised for s in samples)
    with_post = make_synapse_samples([source], pixel_size_nm=8.0, postsynaptic=True)
    assert all(s.target.shape == (3, 32, 32) and s.target.max() == 0 for s in with_post)


def plane(pre_supervised, source):
    image = np.zeros((64, 64), np.float32)
    image[20:30, 10:50] = 1.0  # an asymmetric bar
    target = np.stack([image.copy(), image[::-1].copy(), image[:, ::-1].copy()])
    return SynapsePlane(image, target, pre_supervised, source)


def test_sampler_keeps_image_and_targets_aligned():
    samples = [plane(True, "a"), plane(False, "b")]
    sampler = SynapsePatchSampler(samples, 48, seed=1, augment=False, positive_fraction=1.0)
    images, targets, masks, pre_w = sampler.batch(6)
    assert images.shape == (6, 1, 48, 48) and targets.shape == (6, 3, 48, 48)
    assert masks.shape == (6, 1, 48, 48) and pre_w.shape == (6, 1, 1, 1)
    np.testing.assert_array_equal(images[:, 0], targets[:, 0])  # the same crop
    assert set(np.unique(pre_w)) <= {0.0, 1.0}
    assert images[:, 0].max() == 1.0  # positive-centred crops contain the synapse


def test_sampler_augmentation_moves_targets_with_the_image():
    sampler = SynapsePatchSampler([plane(True, "a")], 48, seed=3, augment=True)
    images, targets, masks, _ = sampler.batch(8)
    assert np.all((targets >= 0) & (targets <= 1))
    for img, tgt, m in zip(images[:, 0], targets[:, 0], masks[:, 0], strict=True):
        # geometric changes are shared: the target bar lies where the image is bright
        if tgt.max() > 0.5 and m.mean() > 0.9:
            assert img[tgt > 0.9].mean() > img[tgt < 0.1].mean()


def test_sampler_reseeded_per_worker_gives_that_seeds_batches():
    samples = [plane(True, "a"), plane(False, "b")]
    stream = batch_stream(SynapsePatchSampler(samples, 48, seed=0), 3, seed=5, workers=2)
    drawn = [next(stream) for _ in range(4)]
    stream.close()
    for index, batch in enumerate(drawn):
        own = SynapsePatchSampler(samples, 48, seed=0)
        own.reseed([5, index % 2])
        for _ in range(index // 2):
            own.batch(3)  # the worker's earlier batches
        for got, want in zip(batch, own.batch(3), strict=True):
            np.testing.assert_array_equal(got.numpy(), want)


def test_sampler_needs_planes():
    with pytest.raises(ValueError, match="no training planes"):
        SynapsePatchSampler([], 32)
