"""The crystal diffusion model on real Perov-5 crystals: its loss learns, its samplers respect
what is given, seeded runs repeat, checkpoints load weights-only, bad requests fail early."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matgen.data import load_dataset
from matgen.data.errors import DataError
from matgen.generators.crystal.checkpoint import load_crystal_diffusion, save_crystal_diffusion
from matgen.generators.crystal.dataset import CrystalDataset, prepare_collection
from matgen.generators.crystal.denoiser_config import preset
from matgen.generators.crystal.generator import CrystalGenerator, parse_composition
from matgen.generators.crystal.model import CrystalDiffusion, CrystalDiffusionConfig


@pytest.fixture(scope="module")
def perov(root):
    data = load_dataset("perov_5", "val", progress=False)
    collection = prepare_collection(data.collection.subset(range(96)))
    elements = tuple(sorted({int(z) for z in np.unique(data.collection.numbers)}))
    return CrystalDataset(collection, elements, name="perov_5 val")


def tiny(elements, **changes) -> CrystalDiffusion:
    torch.manual_seed(0)
    config = CrystalDiffusionConfig(
        denoiser=preset(
            "cpu-small", elements=elements, hidden_dim=32, num_layers=2, n_freq=4, time_dim=16
        ),
        timesteps=50,
        max_atoms=8,
        **changes,
    )
    return CrystalDiffusion(config, atom_counts=[0, 0, 0, 0, 0, 10])


def test_dataset_reads_types_coordinates_and_cells(perov):
    item = perov[0]
    numbers = perov.collection.arrays(0)[0]
    assert [perov.elements[t] for t in item["types"]] == numbers.tolist()
    assert ((item["frac"] >= 0) & (item["frac"] < 1)).all()
    positions = item["frac"] @ item["lattice"]
    diff = positions - perov.collection.arrays(0)[1]
    shift = diff @ np.linalg.inv(item["lattice"])
    assert np.allclose(shift, np.round(shift), atol=1e-8)  # the same atoms, up to lattice vectors
    batch = perov.batch([0, 1, 2])
    assert batch.num_graphs == 3 and batch.batch.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_an_element_outside_the_vocabulary_is_named(perov):
    with pytest.raises(DataError, match="outside the model's vocabulary"):
        CrystalDataset(perov.collection, perov.elements[1:], name="perov")


def test_the_loss_learns(perov):
    model = tiny(perov.elements)
    batch = perov.batch(range(64)).to(dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    seeded = [torch.Generator().manual_seed(k) for k in range(2)]
    before = sum(float(model.loss(batch, generator=g)["loss"].detach()) for g in seeded)
    for step in range(60):
        optimizer.zero_grad()
        losses = model.loss(batch, generator=torch.Generator().manual_seed(100 + step))
        assert all(torch.isfinite(v) for v in losses.values())
        losses["loss"].backward()
        optimizer.step()
    seeded = [torch.Generator().manual_seed(k) for k in range(2)]
    after = sum(float(model.loss(batch, generator=g)["loss"].detach()) for g in seeded)
    assert after < 0.8 * before, (before, after)


def test_structure_prediction_keeps_the_given_types(perov):
    model = tiny(perov.elements)
    batch = perov.batch(range(4))
    out = model.sample_tensors(
        batch.n_atoms, types=batch.types, steps=8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out.types, batch.types)
    assert out.frac.shape == (20, 3) and ((out.frac >= 0) & (out.frac < 1)).all()
    assert out.lattice.shape == (4, 3, 3) and torch.isfinite(out.lattice).all()


def test_de_novo_unmasks_every_atom_and_fixed_types_stay(perov):
    model = tiny(perov.elements)
    g = torch.Generator().manual_seed(1)
    out = model.sample_tensors(torch.tensor([5, 3]), steps=10, generator=g)
    assert ((out.types >= 0) & (out.types < len(perov.elements))).all()
    types = torch.tensor([0, 1, 2, 2, 2])
    fixed = torch.tensor([True, False, True, False, True])
    out = model.sample_tensors(
        torch.tensor([5]), types=types, fixed_types=fixed, steps=10, generator=g
    )
    assert torch.equal(out.types[fixed], types[fixed])
    assert (out.types < len(perov.elements)).all()


def test_seeded_sampling_repeats(perov):
    model = tiny(perov.elements)

    def run(seed: int):
        return model.sample_tensors(
            torch.tensor([5, 5, 4]), steps=12, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.types, b.types) and torch.equal(a.frac, b.frac)
    assert torch.equal(a.lattice, b.lattice)
    assert not torch.equal(a.frac, c.frac)


def test_every_step_count_runs(perov):
    model = tiny(perov.elements)
    for steps in (1, 2, 50):
        out = model.sample_tensors(
            torch.tensor([5]), steps=steps, step_lr=0.0, generator=torch.Generator()
        )
        assert torch.isfinite(out.lattice).all()
    with pytest.raises(ValueError, match="steps"):
        model.sample_tensors(torch.tensor([5]), steps=51)


def test_checkpoint_round_trip_is_weights_only(perov, tmp_path):
    model = tiny(perov.elements)
    path = save_crystal_diffusion(model, tmp_path / "m.pt", metadata={"note": "test"})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "matgen-crystal-diffusion"
    loaded = load_crystal_diffusion(path)
    assert loaded.metadata["note"] == "test" and len(loaded.metadata["sha256"]) == 64
    batch = perov.batch(range(2)).to(dtype=torch.float32)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.allclose(
        model.loss(batch, generator=g1)["loss"], loaded.loss(batch, generator=g2)["loss"]
    )
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"other\.pt: not a readable weights-only checkpoint"):
        load_crystal_diffusion(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="shipped"):
        load_crystal_diffusion("no-such-model")


def test_generator_refuses_impossible_requests_before_sampling(perov):
    generator = CrystalGenerator(tiny(perov.elements), steps=5)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generator.sample(1, composition="Xe2")
    with pytest.raises(ValueError, match=r"supports 1\.\.8"):
        generator.sample(1, composition="Sr3Ti3O9")
    with pytest.raises(ValueError, match=r"1\.\.8"):
        generator.sample(2, n_atoms=0)
    with pytest.raises(ValueError, match="malformed"):
        generator.sample(1, composition="SrTiO3-")
    with pytest.raises(ValueError, match="not an element"):
        parse_composition("SrQq3")
    with pytest.raises(ValueError, match="positive"):
        generator.sample(0)
    assert parse_composition("SrTiO3") == {"Sr": 1, "Ti": 1, "O": 3}


def test_generator_returns_structures_in_chunks(perov):
    generator = CrystalGenerator(tiny(perov.elements), steps=4, chunk=3)
    chunks = list(generator.iter_samples(7, composition="SrTiO3", seed=0))
    assert [len(c) for c in chunks] == [3, 3, 1]
    structures = [s for c in chunks for s in c]
    assert all(s.composition.reduced_formula == "SrTiO3" for s in structures)
    again = generator.sample(7, composition="SrTiO3", seed=0)
    assert [s.lattice.abc for s in again] == [s.lattice.abc for s in structures]


def test_matgen_load_gives_a_generator(perov, tmp_path):
    import matgen

    path = save_crystal_diffusion(tiny(perov.elements), tmp_path / "tiny.pt")
    generator = matgen.load(path, steps=3)
    structures = generator.sample(2, n_atoms=5, seed=0)
    assert [len(s) for s in structures] == [5, 5]
    with pytest.raises(FileNotFoundError, match="shipped"):
        matgen.load("no-such-generator")
    assert isinstance(matgen.available(), list)


def test_chemical_system_constrains_every_generated_type(perov):
    generator = CrystalGenerator(tiny(perov.elements), steps=6)
    structures = generator.sample(6, chemsys="Sr-Ti-O", n_atoms=5, seed=0)
    assert all({el.symbol for el in s.composition} <= {"Sr", "Ti", "O"} for s in structures)
    with pytest.raises(ValueError, match="malformed chemical system"):
        generator.sample(1, chemsys="Sr--O")
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generator.sample(1, chemsys="Sr-Xe")


def test_the_sampler_clips_the_clean_lattice_estimate(perov):
    """Near T, √ᾱ_t is about 5e-5: an untrained network's ε error would blow the cell up to
    thousands of Å without the clip; with it every sampled cell stays within bounds."""
    model = tiny(perov.elements)
    for steps in (50, 10):
        out = model.sample_tensors(
            torch.tensor([5, 4, 3]), steps=steps, generator=torch.Generator().manual_seed(0)
        )
        bound = model.config.lattice_clip * out.n_atoms.float().pow(1 / 3)[:, None, None]
        assert (out.lattice.abs() <= bound * 1.05).all()
