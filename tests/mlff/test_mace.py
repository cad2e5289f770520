"""MACE: the invariance/equivariance suite in float64, batching, cutoff smoothness, bad input."""

from __future__ import annotations

import copy
import dataclasses
import threading

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from matgen.data import AtomsBatch, DataError

TOL = 1e-9  # relative error allowed for exact symmetries in float64


def _eval(model, atoms_list):
    out = model(AtomsBatch.from_atoms(atoms_list))
    return {k: v.detach().numpy() for k, v in out.items()}


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)


def _rotation(seed):
    torch.manual_seed(seed)
    rot = o3.rand_matrix(dtype=torch.float64).numpy()
    return -rot if seed % 2 else rot  # odd seeds: with inversion


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_energy_invariant_forces_and_stress_equivariant_under_o3(model, mp20_atoms, ethanol, seed):
    systems = [*mp20_atoms, ethanol]
    ref = _eval(model, systems)
    rot = _rotation(seed)
    turned = []
    for a in systems:
        b = a.copy()
        b.positions = a.positions @ rot.T
        b.cell = a.cell.array @ rot.T
        turned.append(b)
    out = _eval(model, turned)
    assert _rel(out["energy"], ref["energy"]) < TOL
    assert _rel(out["forces"], ref["forces"] @ rot.T) < TOL
    assert _rel(out["stress"], np.einsum("ij,bjk,lk->bil", rot, ref["stress"], rot)) < TOL
    assert np.abs(ref["forces"]).max() > 1e-3  # a non-trivial check


def test_translations_lattice_shifts_and_permutations(model, mp20_atoms, ethanol):
    systems = [*mp20_atoms, ethanol]
    ref = _eval(model, systems)
    rng = np.random.default_rng(1)
    moved, perms = [], []
    for a in systems:
        b = a.copy()
        b.positions = b.positions + rng.normal(size=3) * 3.0
        if a.pbc.any():  # move each atom by a random lattice vector
            b.positions = b.positions + rng.integers(-2, 3, size=(len(b), 3)) @ a.cell.array
        perm = rng.permutation(len(b))
        perms.append(perm)
        moved.append(b[perm])
    out = _eval(model, moved)
    assert _rel(out["energy"], ref["energy"]) < TOL
    offsets = np.cumsum([0] + [len(a) for a in systems])
    forces = np.concatenate(
        [ref["forces"][o : o + len(p)][p] for o, p in zip(offsets, perms, strict=False)]
    )
    assert _rel(out["forces"], forces) < TOL
    assert _rel(out["stress"], ref["stress"]) < TOL


def test_supercells_give_extensive_energy_tiled_forces_equal_stress(model, mp20_atoms):
    for a in mp20_atoms[:3]:
        ref = _eval(model, [a])
        big = a.repeat((2, 1, 3))
        out = _eval(model, [big])
        assert _rel(out["energy"], 6 * ref["energy"]) < TOL
        assert _rel(out["forces"], np.tile(ref["forces"], (6, 1))) < TOL
        assert _rel(out["stress"], ref["stress"]) < TOL


def test_mixed_batch_equals_each_system_alone(model, mp20_atoms, ethanol):
    systems = [mp20_atoms[0], ethanol, mp20_atoms[1], mp20_atoms[3]]
    both = _eval(model, systems)
    start = 0
    for k, a in enumerate(systems):
        alone = _eval(model, [a])
        assert abs(both["energy"][k] - alone["energy"][0]) < 1e-10 * abs(alone["energy"][0])
        np.testing.assert_allclose(
            both["forces"][start : start + len(a)], alone["forces"], atol=1e-12
        )
        np.testing.assert_allclose(both["stress"][k], alone["stress"][0], atol=1e-12)
        start += len(a)
    assert np.all(both["stress"][1] == 0)  # the molecule has no stress


def test_float32_agrees_with_float64(model, mp20_atoms):
    batch = AtomsBatch.from_atoms(mp20_atoms)
    ref = model(batch)
    single = copy.deepcopy(model).to(torch.float32)
    out = single(batch.to(dtype=torch.float32))
    assert out["energy"].dtype == torch.float32
    np.testing.assert_allclose(out["energy"].numpy(), ref["energy"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["forces"].numpy(), ref["forces"].numpy(), atol=1e-4)


def test_compiled_cpu_kernels_equal_the_training_path(model, mp20_atoms, ethanol):
    """Evaluation mode on a CPU runs the compiled convolution and the element-grouped skip
    connections; training mode the eager operations. Energies, forces and stress agree, and a
    force loss is differentiable in both (its gradients agree too)."""
    batch = AtomsBatch.from_atoms([*mp20_atoms, ethanol])
    eager_model = copy.deepcopy(model).train()
    results = []
    for m in (model, eager_model):
        out = m(batch, training=True)
        loss = out["forces"].pow(2).sum() + out["stress"].pow(2).sum()
        grads = torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    (compiled, g_compiled), (eager, g_eager) = results
    model(batch)  # forces alone: parameters are frozen during the call, and restored
    assert all(p.requires_grad for p in model.parameters())
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-10, atol=1e-10)
    for a, b in zip(g_compiled, g_eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("training", [False, True])
def test_radial_weights_once_per_pair_change_nothing(model, mp20_atoms, ethanol, training):
    """The batched neighbour list writes each pair's two directions as edges 2k and 2k + 1, and
    the model evaluates the radial MLP once per pair; the same edges shuffled (no pairs) give
    the same energies, forces and stress."""
    from matgen.mlff.mace import _reverse_pairs

    batch = model.prepare(AtomsBatch.from_atoms([*mp20_atoms, ethanol]))
    order = torch.randperm(batch.num_edges, generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(
        batch, edge_index=batch.edge_index[:, order], shifts=batch.shifts[order]
    )
    assert _reverse_pairs(batch) and not _reverse_pairs(shuffled)
    module = copy.deepcopy(model).train(training)
    paired, unpaired = module(batch), module(shuffled)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(paired[key], unpaired[key], rtol=1e-12, atol=1e-12)


def test_energy_and_forces_continuous_across_the_cutoff(model):
    r_max = model.r_max
    z = model.config.elements[:2]
    energies, forces = [], []
    for r in (r_max - 1e-7, r_max + 1e-7):
        out = _eval(model, [Atoms(numbers=z, positions=[[0, 0, 0], [r, 0, 0]])])
        energies.append(out["energy"][0])
        forces.append(out["forces"])
    isolated = _eval(model, [Atoms(numbers=z[:1]), Atoms(numbers=z[1:])])
    assert abs(energies[0] - energies[1]) < 1e-12
    assert abs(energies[1] - isolated["energy"].sum()) < 1e-12
    assert np.abs(forces[0]).max() < 1e-10  # the envelope's derivative vanishes at r_max
    # and the pair does interact inside the cutoff
    inside = _eval(model, [Atoms(numbers=z, positions=[[0, 0, 0], [0.7 * r_max, 0, 0]])])
    assert abs(inside["energy"][0] - energies[1]) > 1e-6


def test_bad_input_is_named_never_nan(model, mp20_atoms):
    a = mp20_atoms[0].copy()
    a.numbers[0] = 92  # uranium: not in the model
    with pytest.raises(DataError, match=r"element U is not supported.*knows") as err:
        model(AtomsBatch.from_atoms([mp20_atoms[1], a], ids=["ok", "bad-U"]))
    assert "bad-U" in str(err.value)

    b = mp20_atoms[1].copy()
    b.positions[0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite position") as err:
        model(AtomsBatch.from_atoms([b], ids=["nan-row"]))
    assert "nan-row" in str(err.value)

    c = mp20_atoms[2].copy()
    c.positions[1] = c.positions[0]
    with pytest.raises(DataError, match="overlap"):
        model(AtomsBatch.from_atoms([c], ids=["overlap"]))

    with pytest.raises(DataError, match="no atoms"):
        model(AtomsBatch.from_atoms([Atoms(cell=np.eye(3) * 3, pbc=True)], ids=["empty"]))

    z = model.config.elements
    close = _eval(model, [Atoms(numbers=z[:2], positions=[[0, 0, 0], [0.05, 0, 0]])])
    single = _eval(model, [Atoms(numbers=z[:1])])
    for out in (close, single):
        assert all(np.isfinite(v).all() for v in out.values())
    if model.config.first_interaction == "element":  # no neighbour: every feature vanishes
        e_free = model.config.atomic_energies[0] + model.config.shift
        assert abs(single["energy"][0] - e_free) < 1e-9


@pytest.mark.parametrize("name", ["mp0-small", "mp0-medium"])
def test_mp0_presets_mirror_the_foundation_models(name):
    from matgen.mlff.config import preset
    from matgen.mlff.mace import MACE

    config = preset(name)
    assert len(config.elements) == 89 and config.r_max == 6.0 and config.num_bessel == 10
    model = MACE(config)
    assert len(model.interactions) == 2 and model.config.correlations == (3, 3)
    hidden = str(model.products[0].target_irreps)
    assert hidden == ("128x0e" if name == "mp0-small" else "128x0e+128x1o")
    assert str(model.products[1].target_irreps) == "128x0e"  # the last layer keeps scalars


def test_radial_table_agrees_with_the_mlps(model, mp20_atoms, ethanol):
    """Inference on a CPU reads the radial weights from a table; energies, forces and stress
    agree with the MLPs' to 1e-9 in float64 (to float32's rounding in float32)."""
    batch = AtomsBatch.from_atoms([*mp20_atoms, ethanol])
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
        tabled = copy.deepcopy(model).to(dtype)
        exact = copy.deepcopy(tabled)
        exact.tabulate_radial = False
        a, b = tabled(batch.to(dtype=dtype)), exact(batch.to(dtype=dtype))
        with torch.no_grad():
            probe = torch.ones(1, dtype=dtype)
            assert tabled._table_for(probe) is not None and exact._table_for(probe) is None
        for key in ("energy", "forces", "stress"):
            scale = float(b[key].abs().max())
            torch.testing.assert_close(a[key], b[key], rtol=tol, atol=tol * scale)


def test_radial_table_only_where_no_parameter_needs_a_gradient(model, mp20_atoms):
    module = copy.deepcopy(model)
    batch = module.prepare(AtomsBatch.from_atoms(mp20_atoms))
    i, j = batch.edge_index
    lengths = batch.positions[i] - batch.positions[j] - batch.shifts.double() @ batch.cell[0]
    lengths = torch.linalg.vector_norm(lengths[batch.batch[i] == 0], dim=1)
    feats = module.radial(lengths)
    with torch.no_grad():
        exact = [block.radial_mlp(feats) for block in module.interactions]
        tabled = module.radial_weights(lengths)
    assert not all(torch.equal(a, b) for a, b in zip(tabled, exact, strict=True))
    for a, b in zip(tabled, exact, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))
    # parameters that need gradients: the MLPs
    weights = module.radial_weights(lengths)
    assert all(torch.equal(a, b) for a, b in zip(weights, exact, strict=True))
    # edges shorter than the table: the MLPs for those, the table for the others
    short = torch.cat([lengths, lengths.new_tensor([0.3])])
    with torch.no_grad():
        weights = module.radial_weights(short)
        reference = [block.radial_mlp(module.radial(short[-1:])) for block in module.interactions]
    for w, t, r in zip(weights, tabled, reference, strict=True):
        assert torch.equal(w[:-1], t) and torch.equal(w[-1:], r)
    module.train()
    with torch.no_grad():
        assert all(
            torch.equal(a, b) for a, b in zip(module.radial_weights(lengths), exact, strict=True)
        )
    # new radial parameters: a new table
    module.eval()
    with torch.no_grad():
        module.interactions[0].radial_mlp[0].weight.mul_(1.5)
        changed = module.radial_weights(lengths)[0]
        reference = module.interactions[0].radial_mlp(feats)
    assert not torch.allclose(changed, exact[0])
    torch.testing.assert_close(
        changed, reference, rtol=1e-10, atol=1e-10 * float(reference.abs().max())
    )


def test_radial_table_follows_dtype_and_state_dict_and_falls_back_with_gradients(model, mp20_atoms):
    module = copy.deepcopy(model)
    batch = AtomsBatch.from_atoms(mp20_atoms)
    with pytest.raises(RuntimeError):  # lengths of the wrong dtype: the MLPs report it
        module(batch.to(dtype=torch.float32))
    out = module(batch)  # and the float64 table still serves float64 batches
    reference = copy.deepcopy(module)
    reference.tabulate_radial = False
    torch.testing.assert_close(out["forces"], reference(batch)["forces"], rtol=1e-9, atol=1e-10)
    # new weights through load_state_dict: a new table
    state = {k: v * 1.1 if "radial_mlp" in k else v for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    reference.load_state_dict(state)
    torch.testing.assert_close(
        module(batch)["energy"], reference(batch)["energy"], rtol=1e-9, atol=0
    )
    # edges outside the table on both sides: the MLP's rows, with its gradients
    r = torch.tensor(
        [0.3, 0.49999, 0.5, 2.0, module.r_max, module.r_max + 0.1], dtype=torch.float64
    )
    r.requires_grad_(True)
    module.requires_grad_(False)
    assert module._table_for(r.detach()) is not None
    assert torch.autograd.gradcheck(lambda x: module.radial_weights(x), (r,))


def test_threaded_evaluation_equals_one_call_and_restores_state(model, mp20_atoms, ethanol):
    from matgen.mlff.potential import evaluate_threaded

    systems = [*mp20_atoms, ethanol, *mp20_atoms[:3]]
    batch = AtomsBatch.from_atoms(systems)
    whole = model(batch)
    threads = torch.get_num_threads()
    fresh = copy.deepcopy(model)
    fresh._radial_table = None  # the parts' threads meet with no radial table built yet
    for parts, each in ((3, fresh), (2, model), (5, model)):
        out = evaluate_threaded(each, batch, threads=parts)
        assert set(out) == set(whole)
        for key in whole:  # each system's arithmetic is the same in any part
            torch.testing.assert_close(out[key], whole[key], rtol=1e-12, atol=1e-12)
    assert torch.get_num_threads() == threads
    assert all(p.requires_grad for p in model.parameters())

    bad = mp20_atoms[2].copy()
    bad.positions[1] = bad.positions[0]  # in the last part
    batch = AtomsBatch.from_atoms([*mp20_atoms, bad], ids=[*"abcde", "fused"])
    with pytest.raises(DataError, match="overlap") as err:
        evaluate_threaded(model, batch, threads=3)
    assert "fused" in str(err.value)
    assert torch.get_num_threads() == threads
    assert all(p.requires_grad for p in model.parameters())


def test_threaded_evaluation_keeps_the_callers_modes_and_falls_back(mp20_atoms):
    from matgen.mlff.potential import evaluate_threaded

    class Recorder(torch.nn.Module):  # one row per system: its part's grad mode and thread
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, batch, **kwargs):
            self.calls.append(threading.get_ident())
            flag = float(torch.is_grad_enabled())
            return {"energy": torch.full((len(batch),), flag), "n": batch.n_atoms.clone()}

    batch = AtomsBatch.from_atoms(mp20_atoms * 2)
    model = Recorder()
    with torch.no_grad():
        out = evaluate_threaded(model, batch, threads=3)
    # three parts: the first on this thread, the others on the pool (one pool thread may take
    # both when the first of them finishes before the second is picked up)
    assert len(model.calls) == 3 and model.calls.count(threading.get_ident()) == 1
    assert out["energy"].tolist() == [0.0] * len(batch)
    assert out["n"].tolist() == batch.n_atoms.tolist()  # parts merged in order
    for kwargs in ({"training": True}, {"create_graph": True}):
        model.calls.clear()
        evaluate_threaded(model, batch, threads=3, **kwargs)
        assert len(model.calls) == 1  # a graph to keep: one call, parameters untouched
    calls = []
    evaluate_threaded(lambda b, **kw: calls.append(len(b)) or {}, batch, threads=3)
    assert calls == [len(batch)]  # not a Module: its parameters cannot be frozen for all parts
