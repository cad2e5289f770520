"""The compiled CrystalNN fingerprint against matminer's and pymatgen's own evaluation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from matgen.data import load_dataset
from matgen.evaluate.crystal._order_params import KINDS, order_parameters, pack_parameters
from matgen.evaluate.crystal.fingerprints import CompiledCrystalNNFingerprint

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def reference():
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops")


@pytest.fixture(scope="module")
def compiled(reference):
    return CompiledCrystalNNFingerprint(reference)


def _steinhardt_columns(reference) -> np.ndarray:
    return np.array([label.startswith("q") for label in reference.feature_labels()])


def _compare_sites(reference, compiled, structures):
    """Every site: motif order parameters bit-equal, Steinhardt q_l within rounding."""
    q_cols = _steinhardt_columns(reference)
    worst_q = 0.0
    n_sites = 0
    for k, structure in enumerate(structures):
        for i in range(len(structure)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = np.asarray(reference.featurize(structure, i), dtype=np.float64)
            got = np.asarray(compiled.featurize(structure, i), dtype=np.float64)
            assert got.shape == want.shape == (61,)
            np.testing.assert_array_equal(
                got[~q_cols], want[~q_cols], err_msg=f"structure {k} site {i}"
            )
            worst_q = max(worst_q, float(np.abs(got[q_cols] - want[q_cols]).max()))
            n_sites += 1
    # q_l near 0 is the square root of a rounding-level sum: ~1e-8 is the floor there.
    assert worst_q < 1e-7
    return n_sites


@pytest.mark.parametrize(("dataset", "n"), [("mp_20", 30), ("perov_5", 6), ("carbon_24", 4)])
def test_every_site_equals_matminer(root, reference, compiled, dataset, n):
    data = load_dataset(dataset, "test", progress=False)
    rng = np.random.default_rng(11)
    structures = [data.structure(int(i)) for i in rng.choice(len(data), n, replace=False)]
    # Perturbed copies: no symmetry, generic angles, neighbour shells of every size.
    np.random.seed(0)  # noqa: NPY002 -- pymatgen's perturb draws from numpy's global generator
    for s in structures[: max(2, n // 3)]:
        s = s.copy()
        s.perturb(0.25)
        structures.append(s)
    assert _compare_sites(reference, compiled, structures) > 2 * n


def _shell(name: str) -> np.ndarray:
    """Ideal coordination shells, whose angles sit exactly on pymatgen's thresholds (90 and
    180 degrees), where rounding decides branches."""
    s2 = np.sqrt(0.5)
    if name == "octahedron":
        return np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    if name == "tetrahedron":
        return np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1.0]]) * 1.1
    if name == "cube":
        return np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    if name == "cuboctahedron":
        out = []
        for a in (-s2, s2):
            for b in (-s2, s2):
                out += [[a, b, 0], [a, 0, b], [0, a, b]]
        return np.array(out)
    if name == "linear":
        return np.array([[0, 0, 1.2], [0, 0, -1.3]])
    if name == "bent":
        return np.array([[1.0, 0, 0], [np.cos(2.0), np.sin(2.0), 0]])
    if name == "single":
        return np.array([[0.3, 0.4, 1.2]])
    if name == "square":
        return np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0.0]]) * 2.05
    raise KeyError(name)


@pytest.mark.parametrize(
    "shape",
    ["octahedron", "tetrahedron", "cube", "cuboctahedron", "linear", "bent", "single", "square"],
)
def test_each_order_parameter_equals_pymatgen_on_ideal_and_distorted_shells(reference, shape):
    from pymatgen.analysis.local_env import LocalStructOrderParams
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(5)
    ideal = _shell(shape)
    # Rotated copies keep the ties only up to rounding; distorted ones break them.
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    shells = [ideal, ideal @ rot.T, ideal + rng.normal(scale=0.05, size=ideal.shape)]
    ops = [op for table in reference.ops.values() for op in table if op != "wt"]
    for vectors in shells:
        centre = np.array([5.0, 5.0, 5.0])
        structure = Structure(
            Lattice.cubic(30.0),
            ["Si"] * (len(vectors) + 1),
            np.vstack([centre, centre + vectors]),
            coords_are_cartesian=True,
        )
        sites = list(structure)
        for op in ops:
            (name,) = op._types
            want = LocalStructOrderParams([name], parameters=[op._params[0]]).get_order_parameters(
                sites, 0, indices_neighs=list(range(1, len(sites)))
            )[0]
            rel = np.array([s.coords - sites[0].coords for s in sites[1:]])
            got = order_parameters(
                rel,
                np.array([KINDS[name]], dtype=np.int64),
                pack_parameters(name, op._params[0])[None],
            )[0]
            if want is None:
                assert np.isnan(got), (shape, name, got)
            elif name.startswith("q"):
                assert got == pytest.approx(want, abs=1e-7), (shape, name)
            else:
                assert got == want, (shape, name, got, want)


def test_unsupported_order_parameters_are_named():
    with pytest.raises(ValueError, match="sq_face_cap_trig_pris"):
        pack_parameters("sq_face_cap_trig_pris", None)


def test_voronoi_helpers_equal_pymatgen_bit_for_bit_and_are_restored(mp20_test):
    from pymatgen.core import local_env

    from matgen.evaluate.crystal._voronoi_terms import (
        compiled_voronoi_helpers,
        solid_angle,
        vol_tetra,
    )

    rng = np.random.default_rng(3)
    for _ in range(2000):
        centre = rng.normal(size=3)
        polygon = [rng.normal(size=3) * rng.uniform(0.1, 5.0) for _ in range(rng.integers(2, 9))]
        assert solid_angle(centre, polygon) == local_env.solid_angle(centre, polygon)
        corners = [rng.normal(size=3) for _ in range(4)]
        assert vol_tetra(*corners) == local_env.vol_tetra(*corners)
    # A face seen edge-on (zero denominators) and a degenerate tetrahedron.
    flat = [np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([-1.0, 0, 0])]
    assert solid_angle(np.zeros(3), flat) == local_env.solid_angle(np.zeros(3), flat)
    assert vol_tetra(*flat, np.zeros(3)) == local_env.vol_tetra(*flat, np.zeros(3))

    original = (local_env.solid_angle, local_env.vol_tetra)
    with compiled_voronoi_helpers():
        with compiled_voronoi_helpers():
            assert local_env.solid_angle is solid_angle
        assert local_env.vol_tetra is vol_tetra  # the inner block left the swap in place
    assert (local_env.solid_angle, local_env.vol_tetra) == original
    # Whole Voronoi analyses agree too.
    structure = mp20_test.structure(0)
    plain = local_env.VoronoiNN(weight="solid_angle").get_voronoi_polyhedra(structure, 0)
    with compiled_voronoi_helpers():
        fast = local_env.VoronoiNN(weight="solid_angle").get_voronoi_polyhedra(structure, 0)
    assert plain.keys() == fast.keys()
    for key in plain:
        for field in ("solid_angle", "volume", "area", "face_dist"):
            assert plain[key][field] == fast[key][field]
