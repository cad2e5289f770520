"""The crystal denoiser's symmetry suite (STYLE.md), in float64 on random skewed crystals of 1–12
atoms: O(3) with inversion, permutations, translations, lattice-vector shifts, equivalent unit
cells (and that the test catches a model without canonicalisation), batch = single,
zero-initialised adapters, float32 / float64 and CUDA parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matgen.generators.crystal.denoiser import CrystalDenoiser
from matgen.generators.crystal.denoiser_config import CrystalDenoiserConfig, preset

ELEMENTS = (3, 8, 14, 26)
COND_DIM = 4
KEYS = ("type_logits", "frac_score", "lattice_eps")


def _model(canonicalize: bool = True, dtype: torch.dtype = torch.float64) -> CrystalDenoiser:
    """A small denoiser with every weight but the adapters' randomly perturbed, so that no
    zero bias or unit LayerNorm gain hides a broken symmetry."""
    config = CrystalDenoiserConfig(
        elements=ELEMENTS,
        hidden_dim=32,
        num_layers=3,
        n_freq=8,
        time_dim=16,
        cond_dim=COND_DIM,
        canonicalize=canonicalize,
    )
    torch.manual_seed(0)
    model = CrystalDenoiser(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adapters" not in name:
                param.add_(0.3 * torch.randn_like(param))
    return model.to(dtype)


@pytest.fixture
def crystals(random_lattices):
    """Four crystals of 1, 12, 5 and 3 atoms, masked types among them, in skewed cells."""
    rng = np.random.default_rng(0)
    sizes = [1, 12, 5, 3]
    n = sum(sizes)
    return {
        "types": torch.as_tensor(rng.integers(0, len(ELEMENTS) + 1, n)),
        "frac": torch.as_tensor(rng.random((n, 3))),
        "lattice": torch.as_tensor(random_lattices(rng, len(sizes))),
        "batch": torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        "t": torch.as_tensor(rng.random(len(sizes))),
        "conditions": torch.as_tensor(rng.normal(size=(len(sizes), COND_DIM))),
    }


def _run(model: CrystalDenoiser, inputs: dict, **changes) -> dict[str, torch.Tensor]:
    args = {**inputs, **changes}
    with torch.no_grad():
        return model(
            args["types"], args["frac"], args["lattice"], args["batch"], args["t"],
            args.get("conditions"),
        )  # fmt: skip


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))


def _row_transform(vectors: torch.Tensor, matrices: torch.Tensor, batch: torch.Tensor):
    """``v_i @ M[batch_i]`` for row vectors ``(N, 3)`` and per-system ``(B, 3, 3)``."""
    return torch.einsum("ni,nij->nj", vectors, matrices[batch])


def _random_orthogonal(rng: np.random.Generator, proper: bool) -> torch.Tensor:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] *= -1
    return torch.as_tensor(q)


def test_outputs_are_not_trivial(crystals):
    """The outputs depend on the positions, the lattice, the types and the time (so the
    invariance tests below are not vacuous)."""
    model = _model()
    ref = _run(model, crystals)
    assert ref["type_logits"].shape == (21, len(ELEMENTS))
    assert ref["frac_score"].shape == (21, 3) and ref["lattice_eps"].shape == (4, 3, 3)
    frac = crystals["frac"].clone()
    frac[3] += torch.tensor([0.1, -0.05, 0.02], dtype=frac.dtype)
    lattice = crystals["lattice"] * 1.1
    types = (crystals["types"] + 1) % (len(ELEMENTS) + 1)
    for changed in (
        _run(model, crystals, frac=frac),
        _run(model, crystals, lattice=lattice),
        _run(model, crystals, types=types),
        _run(model, crystals, t=crystals["t"] * 0.5),
    ):
        for key in KEYS:
            assert (changed[key] - ref[key]).abs().max() > 1e-4 * ref[key].abs().max(), key


@pytest.mark.parametrize("canonicalize", [True, False])
@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "rotoinversion"])
def test_rotation_with_inversion(crystals, canonicalize, proper):
    model = _model(canonicalize)
    rng = np.random.default_rng(1)
    rot = torch.stack([_random_orthogonal(rng, proper) for _ in range(4)])  # one per crystal
    ref = _run(model, crystals)
    got = _run(model, crystals, lattice=crystals["lattice"] @ rot.transpose(1, 2))
    _close(got["type_logits"], ref["type_logits"])
    _close(got["frac_score"], ref["frac_score"])
    _close(got["lattice_eps"], ref["lattice_eps"] @ rot.transpose(1, 2))


@pytest.mark.parametrize("canonicalize", [True, False])
def test_permutation_within_crystals(crystals, canonicalize):
    model = _model(canonicalize)
    torch.manual_seed(2)
    batch = crystals["batch"]
    perm = torch.cat(
        [
            torch.nonzero(batch == b).flatten()[torch.randperm(int((batch == b).sum()))]
            for b in range(4)
        ]
    )
    ref = _run(model, crystals)
    got = _run(model, crystals, types=crystals["types"][perm], frac=crystals["frac"][perm])
    _close(got["type_logits"], ref["type_logits"][perm])
    _close(got["frac_score"], ref["frac_score"][perm])
    _close(got["lattice_eps"], ref["lattice_eps"])


@pytest.mark.parametrize("canonicalize", [True, False])
def test_translation_and_lattice_vector_shifts(crystals, canonicalize):
    model = _model(canonicalize)
    rng = np.random.default_rng(3)
    ref = _run(model, crystals)
    tau = torch.as_tensor(rng.random((4, 3)))[crystals["batch"]]  # one translation per crystal
    shift = torch.as_tensor(rng.integers(-3, 4, (21, 3))).to(torch.float64)
    for frac in (
        torch.remainder(crystals["frac"] + tau, 1.0),
        crystals["frac"] + shift,  # not wrapped: images in other cells
    ):
        got = _run(model, crystals, frac=frac)
        for key in KEYS:
            _close(got[key], ref[key])


def _other_cells(crystals, seed: int, random_unimodular):
    """The same crystals described in other unit cells: ``L' = W L``, ``f' = f W^{-1}`` mod 1."""
    rng = np.random.default_rng(seed)
    w = torch.as_tensor(np.stack([random_unimodular(rng, steps=5) for _ in range(4)])).double()
    frac = torch.remainder(
        _row_transform(crystals["frac"], torch.linalg.inv(w), crystals["batch"]), 1.0
    )
    return w, {"lattice": w @ crystals["lattice"], "frac": frac}


def _cell_change_error(model, crystals, w, changes) -> dict[str, float]:
    """Largest deviation from ``types`` invariant, ``s' = s W^T``, ``ε' = W ε``, relative."""
    ref = _run(model, crystals)
    got = _run(model, crystals, **changes)
    expected = {
        "type_logits": ref["type_logits"],
        "frac_score": _row_transform(ref["frac_score"], w.transpose(1, 2), crystals["batch"]),
        "lattice_eps": w @ ref["lattice_eps"],
    }
    return {k: float((got[k] - expected[k]).abs().max() / expected[k].abs().max()) for k in KEYS}


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_equivalent_unit_cells(crystals, seed, random_unimodular):
    w, changes = _other_cells(crystals, seed, random_unimodular)
    errors = _cell_change_error(_model(True), crystals, w, changes)
    assert max(errors.values()) < 1e-10, errors


def test_equivalent_unit_cells_catches_a_model_without_canonicalisation(
    crystals, random_unimodular
):
    w, changes = _other_cells(crystals, 4, random_unimodular)
    errors = _cell_change_error(_model(False), crystals, w, changes)
    assert all(error > 1e-3 for error in errors.values()), errors


def test_equivalent_cells_of_a_cubic_lattice(random_unimodular):
    """A lattice with 48 automorphisms: the frame average still makes the cell irrelevant."""
    rng = np.random.default_rng(8)
    inputs = {
        "types": torch.tensor([0, 1, 1, 2]),
        "frac": torch.as_tensor(rng.random((4, 3))),
        "lattice": torch.eye(3, dtype=torch.float64)[None] * 4.2,
        "batch": torch.zeros(4, dtype=torch.long),
        "t": torch.tensor([0.3], dtype=torch.float64),
    }
    w = torch.as_tensor(random_unimodular(rng, steps=6)).double()[None]
    changes = {
        "lattice": w @ inputs["lattice"],
        "frac": torch.remainder(
            _row_transform(inputs["frac"], torch.linalg.inv(w), inputs["batch"]), 1.0
        ),
    }
    errors = _cell_change_error(_model(True), inputs, w, changes)
    assert max(errors.values()) < 1e-10, errors


@pytest.mark.parametrize("canonicalize", [True, False])
def test_batch_equals_single(crystals, canonicalize):
    model = _model(canonicalize)
    ref = _run(model, crystals)
    batch = crystals["batch"]
    for b in range(4):
        atoms = batch == b
        alone = _run(
            model,
            crystals,
            types=crystals["types"][atoms],
            frac=crystals["frac"][atoms],
            lattice=crystals["lattice"][b : b + 1],
            batch=torch.zeros(int(atoms.sum()), dtype=torch.long),
            t=crystals["t"][b : b + 1],
            conditions=crystals["conditions"][b : b + 1],
        )
        _close(alone["type_logits"], ref["type_logits"][atoms])
        _close(alone["frac_score"], ref["frac_score"][atoms])
        _close(alone["lattice_eps"], ref["lattice_eps"][b : b + 1])


def test_zero_initialised_adapters(crystals):
    model = _model()
    without = _run(model, crystals, conditions=None)
    with_conditions = _run(model, crystals)
    for key in KEYS:
        torch.testing.assert_close(with_conditions[key], without[key], rtol=0, atol=0)
    with torch.no_grad():
        model.network.adapters[1].weight.normal_()
    changed = _run(model, crystals)
    for key in KEYS:
        assert (changed[key] - without[key]).abs().max() > 1e-4 * without[key].abs().max()
    # Unconditional evaluation ignores the adapters.
    for key in KEYS:
        torch.testing.assert_close(_run(model, crystals, conditions=None)[key], without[key])


def test_float32_matches_float64(crystals):
    ref = _run(_model(dtype=torch.float64), crystals)
    low = {k: v.float() if v.is_floating_point() else v for k, v in crystals.items()}
    got = _run(_model(dtype=torch.float32), low)
    for key in KEYS:
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(
            got[key].double(), ref[key], rtol=1e-4, atol=1e-4 * float(ref[key].abs().max())
        )


def test_gradients_reach_every_weight(crystals):
    model = _model()
    out = model(
        **{k: crystals[k] for k in ("types", "frac", "lattice", "batch", "t", "conditions")}
    )
    sum(v.square().sum() for v in out.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_bad_inputs_say_what_is_wrong(crystals):
    model = _model()
    with pytest.raises(ValueError, match="non-decreasing"):
        _run(model, crystals, batch=crystals["batch"].flip(0))
    with pytest.raises(ValueError, match="types must lie"):
        _run(model, crystals, types=crystals["types"] + 10)
    with pytest.raises(ValueError, match="conditions"):
        _run(model, crystals, conditions=crystals["conditions"][:, :2])
    with pytest.raises(ValueError, match="t has shape"):
        _run(model, crystals, t=crystals["t"][:2])


def test_presets():
    small = preset("cpu-small", elements=ELEMENTS)
    assert (small.hidden_dim, small.num_layers) == (128, 4)
    assert CrystalDenoiserConfig.from_dict(small.to_dict()) == small
    mp_vocab = tuple(range(1, 101))
    n_params = sum(
        p.numel() for p in CrystalDenoiser(preset("cpu-small", elements=mp_vocab)).parameters()
    )
    assert 4 * n_params < 25e6  # float32 checkpoint under the shipping limit
    big = preset("diffcsp", elements=mp_vocab)
    assert (big.hidden_dim, big.num_layers, big.n_freq, big.time_dim) == (512, 6, 128, 256)
    with pytest.raises(ValueError, match="elements"):
        preset("cpu-small")
    with pytest.raises(KeyError, match="cpu-small"):
        preset("huge", elements=ELEMENTS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_cuda_equals_cpu(crystals, dtype, tol):
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in crystals.items()}
    ref = _run(_model(dtype=dtype), inputs)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    got = _run(_model(dtype=dtype).cuda(), cuda)
    for key in KEYS:
        _close(got[key].cpu(), ref[key], tol)
