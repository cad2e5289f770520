"""Conditions: embeddings with null fallbacks, adapters that start at zero, classifier-free
guidance, and a conditional model whose samples follow the condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matgen.data import load_dataset
from matgen.generators.crystal.conditioning import ConditionEmbedding, PropertySpec
from matgen.generators.crystal.dataset import CrystalDataset, prepare_collection
from matgen.generators.crystal.denoiser_config import preset
from matgen.generators.crystal.model import CrystalDiffusion, CrystalDiffusionConfig


@pytest.fixture(scope="module")
def perov(root):
    """Perov-5 crystals carrying their volume per atom (Å^3) as a property."""
    data = load_dataset("perov_5", "val", progress=False)
    collection = prepare_collection(data.collection.subset(range(256)))
    volume = np.abs(np.linalg.det(collection.cell)) / collection.n_atoms
    collection.properties["volume_per_atom"] = volume
    elements = tuple(sorted({int(z) for z in np.unique(data.collection.numbers)}))
    return CrystalDataset(collection, elements, properties=["volume_per_atom"], name="perov_5")


def base_model(elements) -> CrystalDiffusion:
    torch.manual_seed(0)
    config = CrystalDiffusionConfig(
        denoiser=preset(
            "cpu-small", elements=elements, hidden_dim=32, num_layers=2, n_freq=4, time_dim=16
        ),
        timesteps=50,
        max_atoms=5,
    )
    return CrystalDiffusion(config, atom_counts=[0, 0, 0, 0, 0, 10])


def test_unknown_and_dropped_conditions_use_the_null_embedding():
    embed = ConditionEmbedding(8, [PropertySpec("band_gap", 0.0, 5.0)], num_classes=4)
    values = {"band_gap": torch.tensor([1.0, float("nan"), 3.0])}
    chemsys = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = embed(values, chemsys, batch_size=3)
    null = embed(None, None, batch_size=3)
    assert not torch.allclose(out[0], null[0])
    gap_null = embed({"band_gap": torch.tensor([float("nan")] * 3)}, chemsys, batch_size=3)
    assert torch.allclose(out[1], gap_null[1])  # NaN property: its null, chemsys still known
    assert torch.allclose(out[2] - gap_null[2], embed(values, None, batch_size=3)[2] - null[2])
    dropped = embed(values, chemsys, batch_size=3, drop=torch.tensor([True, False, True]))
    assert torch.allclose(dropped[0], null[0]) and torch.allclose(dropped[1], out[1])
    with pytest.raises(ValueError, match="high must exceed low"):
        PropertySpec("x", 1.0, 1.0)


def test_added_conditions_change_nothing_until_trained(perov):
    base = base_model(perov.elements)
    spec = [{"name": "volume_per_atom", "low": 8.0, "high": 20.0}]
    model = base.with_conditions(properties=spec, chemsys_condition=True, cond_dim=16)
    batch = perov.batch(range(16)).to(dtype=torch.float32)
    a = base.loss(batch, generator=torch.Generator().manual_seed(0))["loss"]
    b = model.loss(batch, generator=torch.Generator().manual_seed(0))["loss"]
    assert torch.allclose(a, b)
    target = {"volume_per_atom": torch.full((3,), 12.0)}
    kwargs = {"steps": 5, "types": batch.types[:15]}
    x = base.sample_tensors(batch.n_atoms[:3], generator=torch.Generator(), **kwargs)
    y = model.sample_tensors(
        batch.n_atoms[:3], generator=torch.Generator(), properties=target, guidance=2.0, **kwargs
    )
    assert torch.allclose(x.lattice, y.lattice, atol=1e-5)
    with pytest.raises(ValueError, match="without conditions"):
        base.sample_tensors(batch.n_atoms[:1], properties=target, steps=2)


def test_a_conditional_model_follows_its_condition(perov):
    """Fine-tuned for a few hundred steps on volume per atom, the model's prediction of the
    clean lattice from the same noisy crystals (half-way through the noise schedule) follows
    the volume it is asked for: asking for the 90th instead of the 10th percentile scales the
    predicted volume by the same ratio."""
    spec = [{"name": "volume_per_atom", "low": 8.0, "high": 20.0}]
    model = base_model(perov.elements).with_conditions(properties=spec, cond_dim=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for step in range(250):
        batch = perov.batch(rng.choice(len(perov), 64, replace=False)).to(dtype=torch.float32)
        optimizer.zero_grad()
        model.loss(batch, generator=torch.Generator().manual_seed(step))["loss"].backward()
        optimizer.step()
    model.eval()
    low, high = np.quantile(perov.property_values["volume_per_atom"], [0.1, 0.9])
    batch = perov.batch(range(64)).to(dtype=torch.float32)
    B, t = batch.num_graphs, 25
    g = torch.Generator().manual_seed(0)
    scale = batch.n_atoms.float().pow(1 / 3)[:, None, None]
    lattice_t, _ = model.lattice_process.q_sample(batch.lattice / scale, t, g)
    frac_t, _ = model.coord_process.q_sample(batch.frac, t, g)

    def predicted_volume(target: float) -> float:
        conditions = model.conditioner({"volume_per_atom": torch.full((B,), target)}, batch_size=B)
        with torch.no_grad():
            out = model.denoiser(
                batch.types,
                frac_t,
                lattice_t * scale,
                batch.batch,
                torch.full((B,), t / 50),
                conditions=conditions,
            )
        clean = model.lattice_process.predict_x0(out["lattice_eps"], lattice_t, t) * scale
        return float(np.median(np.abs(np.linalg.det(clean.numpy())) / batch.n_atoms.numpy()))

    v_low, v_high = predicted_volume(low), predicted_volume(high)
    # the asked-for ratio (about 1.7) comes through; the absolute scale of so short a training
    # is not yet right (the tiny network's lattice prediction is about 3x too small)
    assert v_high > 1.1 * v_low, (low, high, v_low, v_high)
    assert abs(np.log((v_high / v_low) / (high / low))) < np.log(1.3), (low, high, v_low, v_high)
