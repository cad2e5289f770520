"""EDM's metrics for generated 3D molecules (Hoogeboom et al. 2022, "Equivariant Diffusion for
Molecule Generation in 3D").

For every molecule, bonds and bond orders are perceived from the coordinates with EDM's tables
(:mod:`matgen.evaluate.edm_bonds`); hydrogens are explicit atoms. Then, over ``N`` molecules with
``A`` atoms in all:

- atom stability = (atoms whose bond-order sum is an allowed valence) / ``A``;
- molecule stability = (molecules whose atoms are all stable) / ``N``;
- validity (EDM) = (molecules whose RDKit graph, built from the perceived bonds with no formal
  charges, passes ``SanitizeMol``) / ``N``. Disconnected molecules count as valid; the molecule's
  SMILES is that of its largest fragment (EDM's ``BasicMolecularMetrics.compute_validity``);
- connected validity = (valid molecules with one fragment) / ``N``;
- uniqueness = (distinct SMILES) / (valid molecules); ``validity_x_uniqueness`` = distinct / ``N``;
- novelty = (distinct SMILES absent from the training SMILES) / (distinct SMILES). EDM's
  training SMILES are rebuilt from the training coordinates in the same way, each the SMILES of
  the whole sanitized molecule (:func:`edm_training_smiles`).

SMILES are RDKit canonical SMILES of graphs that keep their explicit hydrogens (``[H]`` atoms),
as in EDM; they are comparable with each other, not with ordinary QM9 SMILES.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from matgen.evaluate.edm_bonds import (
    ALLOWED_VALENCES,
    EDM_MARGINS,
    BondMargins,
    bond_orders,
    element_symbol,
    stable_atoms,
)
from matgen.evaluate.report import EvaluationReport, InvalidSample

if TYPE_CHECKING:
    from ase import Atoms
    from rdkit import Chem

__all__ = [
    "edm_rdkit_mol",
    "edm_smiles",
    "edm_training_smiles",
    "evaluate_molecules_3d",
    "training_smiles_from_coordinates",
]

Validity = Literal["edm", "connected"]
Fragment = Literal["largest", "whole"]

_VALIDITY_TEXT = {
    "edm": "RDKit SanitizeMol passes on the whole molecule (fragments allowed); SMILES of the "
    "largest fragment (EDM)",
    "connected": "RDKit SanitizeMol passes and the molecule is one fragment",
}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class _Assessment:
    """What one molecule scored; ``error`` is set for unusable input or a failed sanitization."""

    n_atoms: int
    n_stable_atoms: int
    smiles: str | None = None
    n_fragments: int = 0
    error: str | None = None
    bad_input: bool = False


class _BadInput(ValueError):
    pass


def evaluate_molecules_3d(
    molecules: Iterable[tuple[Sequence[int], np.ndarray] | Atoms],
    *,
    train_smiles: Iterable[str] | None = None,
    margins: BondMargins = EDM_MARGINS,
    validity: Validity = "edm",
    reference_name: str | None = None,
    ids: Sequence[str] | None = None,
) -> EvaluationReport:
    """Evaluate 3D molecules with EDM's stability, validity, uniqueness and novelty.

    Args:
        molecules: ``(atomic_numbers (n,), positions (n, 3) in Å)`` pairs or non-periodic ASE
            ``Atoms``; hydrogens included. Element symbols are accepted for the numbers.
        train_smiles: training-set SMILES built the EDM way (:func:`edm_training_smiles`) for
            novelty; None leaves novelty out.
        margins: bond-length tolerances in pm.
        validity: which valid molecules feed uniqueness and novelty: ``"edm"`` (sanitizable,
            fragments allowed) or ``"connected"`` (sanitizable and one fragment).
        reference_name: how the training set is named in ``settings`` (``"qm9/train"``).
        ids: one id per molecule for ``report.invalid`` (default: the position).

    Returns:
        An :class:`EvaluationReport` (task ``molecules-3d``) with ``atom_stability``,
        ``molecule_stability``, ``validity``, ``validity_connected``, ``uniqueness``,
        ``validity_x_uniqueness`` and ``novelty`` (fractions). Unusable input (no atoms, non-finite
        or mis-shaped coordinates, an element without an EDM valence, a periodic system) never
        raises: it counts in every denominator as unstable and invalid, and is listed in
        ``report.invalid`` with the reason, as is every molecule that fails sanitization.
    """
    if validity not in _VALIDITY_TEXT:
        raise ValueError(f"validity must be one of {sorted(_VALIDITY_TEXT)}, not {validity!r}")
    from rdkit import rdBase

    with rdBase.BlockLogs():
        results = [_assess(item, margins) for item in molecules]
    if ids is not None and len(ids) != len(results):
        raise ValueError(f"{len(ids)} ids for {len(results)} molecules")

    n = len(results)
    n_atoms = sum(r.n_atoms for r in results)
    n_stable_atoms = sum(r.n_stable_atoms for r in results)
    n_stable = sum(not r.bad_input and r.n_atoms == r.n_stable_atoms for r in results)
    valid = [r for r in results if r.smiles is not None]
    connected = [r for r in valid if r.n_fragments == 1]
    chosen = valid if validity == "edm" else connected
    unique = {r.smiles for r in chosen}

    invalid = [
        InvalidSample(i, str(ids[i]) if ids is not None else str(i), r.error)
        for i, r in enumerate(results)
        if r.error is not None
    ]
    notes: list[str] = []
    novelty: float | None = None
    n_novel: int | None = None
    reference: frozenset[str] | set[str] | None = None
    if train_smiles is not None:
        reference = (
            train_smiles if isinstance(train_smiles, (set, frozenset)) else set(train_smiles)
        )
        n_novel = sum(s not in reference for s in unique)
        novelty = n_novel / len(unique) if unique else None
    else:
        notes.append("novelty not computed: no train_smiles given")
    if n == 0:
        notes.append("no molecules given")

    metrics: dict[str, float | int | None] = {
        "atom_stability": n_stable_atoms / n_atoms if n_atoms else None,
        "molecule_stability": n_stable / n if n else None,
        "validity": len(valid) / n if n else None,
        "validity_connected": len(connected) / n if n else None,
        "uniqueness": len(unique) / len(chosen) if chosen else None,
        "validity_x_uniqueness": len(unique) / n if n else None,
        "novelty": novelty,
    }
    counts = {
        "n_samples": n,
        "n_atoms": n_atoms,
        "n_stable_atoms": n_stable_atoms,
        "n_stable_molecules": n_stable,
        "n_valid": len(valid),
        "n_valid_connected": len(connected),
        "n_unique": len(unique),
        "n_bad_input": sum(r.bad_input for r in results),
    }
    if n_novel is not None:
        counts["n_novel"] = n_novel
    return EvaluationReport(
        task="molecules-3d",
        metrics=metrics,
        settings=_settings(margins, validity, reference, reference_name),
        counts=counts,
        invalid=invalid,
        notes=notes,
    )


def edm_rdkit_mol(
    numbers: Sequence[int], positions: np.ndarray, *, margins: BondMargins = EDM_MARGINS
) -> Chem.RWMol:
    """An unsanitized RDKit molecule: one atom per input atom (explicit hydrogens, no charges) and
    one bond per atom pair with a nonzero EDM bond order (single, double or triple)."""
    z = np.asarray(numbers, dtype=np.int64)
    return _rdkit_graph(z, bond_orders(z, np.asarray(positions, dtype=np.float64), margins))


def edm_smiles(
    numbers: Sequence[int],
    positions: np.ndarray,
    *,
    margins: BondMargins = EDM_MARGINS,
    fragment: Fragment = "largest",
) -> str | None:
    """SMILES of a 3D molecule under EDM's protocol, or None when RDKit cannot sanitize it.

    ``fragment="largest"`` gives the SMILES EDM uses for generated molecules, ``"whole"`` the one
    it uses for training molecules.
    """
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = edm_rdkit_mol(numbers, positions, margins=margins)
        try:
            Chem.SanitizeMol(mol)
        except ValueError:
            return None
        return Chem.MolToSmiles(_largest_fragment(mol) if fragment == "largest" else mol)


def training_smiles_from_coordinates(
    molecules: Iterable[tuple[Sequence[int], np.ndarray]], *, margins: BondMargins = EDM_MARGINS
) -> frozenset[str]:
    """EDM's training reference: the whole-molecule SMILES of every sanitizable molecule."""
    out = (edm_smiles(z, x, margins=margins, fragment="whole") for z, x in molecules)
    return frozenset(s for s in out if s is not None)


def edm_training_smiles(
    dataset: str = "qm9",
    split: str = "train",
    *,
    margins: BondMargins = EDM_MARGINS,
    root: str | Path | None = None,
    cache: bool = True,
) -> frozenset[str]:
    """Training SMILES of a registered molecular data set rebuilt from its coordinates (EDM).

    The first call perceives every molecule of the split (about a minute for QM9's 100,000) and
    writes the SMILES as JSON under :func:`matgen.data.root.cache_dir`, keyed by the data file's
    sha256, the margins and the RDKit version (canonical SMILES may change between versions).

    Args:
        dataset: registry name of a non-periodic atomistic data set.
        split: the split to read.
        margins: bond-length tolerances in pm.
        root: data root (default :func:`matgen.data.root.data_root`).
        cache: read and write the JSON cache.
    """
    from rdkit import __version__ as rdkit_version

    from matgen.data import cache_dir, get_spec, load_dataset

    digest = get_spec(dataset).file(split).sha256
    tag = f"{margins.single:g}_{margins.double:g}_{margins.triple:g}"
    path = (
        cache_dir()
        / f"edm_smiles-v{_CACHE_VERSION}-{dataset}-{split}-{digest[:16]}-m{tag}-rdkit{rdkit_version}.json"
    )
    if cache and path.is_file():
        return frozenset(json.loads(path.read_text())["smiles"])
    data = load_dataset(dataset, split, root=root)
    collection = data.collection
    if collection.pbc.any():
        raise ValueError(f"{dataset}/{split} has periodic systems; EDM's metrics are for molecules")
    smiles = training_smiles_from_coordinates(
        (collection.arrays(i)[:2] for i in range(len(collection))), margins=margins
    )
    if cache:
        record = {
            "format": "matgen EDM training SMILES",
            "version": _CACHE_VERSION,
            "dataset": dataset,
            "split": split,
            "source_sha256": digest,
            "bond_margins_pm": margins.as_dict(),
            "rdkit_version": rdkit_version,
            "n_molecules": len(collection),
            "smiles": sorted(smiles),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(path)
    return smiles


# ---------------------------------------------------------------------------------- internals
def _assess(item: Any, margins: BondMargins) -> _Assessment:
    from rdkit import Chem

    try:
        z, x = _as_arrays(item)
    except _BadInput as exc:
        n_atoms = _count_atoms(item)
        return _Assessment(n_atoms, 0, error=str(exc), bad_input=True)
    orders = bond_orders(z, x, margins)
    n_stable = int(stable_atoms(z, orders).sum())
    mol = _rdkit_graph(z, orders)
    try:
        Chem.SanitizeMol(mol)
    except ValueError as exc:
        return _Assessment(len(z), n_stable, error=f"RDKit sanitization failed: {exc}")
    n_fragments = len(Chem.GetMolFrags(mol))
    return _Assessment(len(z), n_stable, Chem.MolToSmiles(_largest_fragment(mol)), n_fragments)


def _as_arrays(item: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(numbers, positions)`` of one input molecule, or :class:`_BadInput` saying what is wrong."""
    if hasattr(item, "get_atomic_numbers") and hasattr(item, "pbc"):
        if np.any(item.pbc):
            raise _BadInput("periodic system: EDM's metrics are for isolated molecules")
        numbers, positions = item.get_atomic_numbers(), item.get_positions()
    else:
        try:
            numbers, positions = item
        except (TypeError, ValueError):
            raise _BadInput(
                f"expected (atomic_numbers, positions) or ase.Atoms, got {type(item).__name__}"
            ) from None
    z = _atomic_numbers(numbers)
    if len(z) == 0:
        raise _BadInput("molecule has no atoms")
    try:
        x = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise _BadInput("positions are not numbers") from None
    if x.shape != (len(z), 3):
        raise _BadInput(f"positions have shape {x.shape}, expected ({len(z)}, 3) in Å")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise _BadInput(f"non-finite position for atom {int(np.flatnonzero(~finite)[0])}")
    unknown = [int(v) for v in z if element_symbol(int(v)) not in ALLOWED_VALENCES]
    if unknown:
        raise _BadInput(
            f"unknown element: atomic number {unknown[0]} ({element_symbol(unknown[0])}) has no "
            f"EDM valence; known: {', '.join(ALLOWED_VALENCES)}"
        )
    return z, x


def _atomic_numbers(numbers: Any) -> np.ndarray:
    values = np.asarray(numbers).reshape(-1) if np.ndim(numbers) <= 1 else None
    if values is None:
        raise _BadInput(f"atomic numbers have shape {np.shape(numbers)}, expected (n,)")
    if values.dtype.kind in "USO":
        from ase.data import atomic_numbers

        try:
            return np.array([atomic_numbers[str(s)] for s in values], dtype=np.int64)
        except KeyError as exc:
            raise _BadInput(f"unknown element symbol {exc.args[0]!r}") from None
    if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
        raise _BadInput("atomic numbers are not integers")
    if values.dtype.kind not in "iuf" and len(values):
        raise _BadInput(f"atomic numbers have dtype {values.dtype}")
    return values.astype(np.int64)


def _count_atoms(item: Any) -> int:
    """Atoms of an unusable input, for the atom-stability denominator (0 when unknowable)."""
    try:
        return len(item) if hasattr(item, "get_atomic_numbers") else int(np.size(item[0]))
    except Exception:
        return 0


def _rdkit_graph(z: np.ndarray, orders: np.ndarray) -> Chem.RWMol:
    from rdkit import Chem

    bond_type = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for number in z:
        mol.AddAtom(Chem.Atom(int(number)))
    for i, j in zip(*np.nonzero(np.triu(orders)), strict=True):
        mol.AddBond(int(i), int(j), bond_type[int(orders[i, j])])
    return mol


def _largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    """The fragment with most atoms (the first of equals, as EDM's ``max``)."""
    from rdkit import Chem

    fragments = Chem.GetMolFrags(mol, asMols=True)
    return max(fragments, default=mol, key=lambda m: m.GetNumAtoms())


def _settings(
    margins: BondMargins,
    validity: Validity,
    train_smiles: frozenset[str] | set[str] | None,
    reference_name: str | None,
) -> dict[str, Any]:
    from rdkit import __version__ as rdkit_version

    reference: str | None = None
    if train_smiles is not None:
        reference = f"{reference_name or 'given'} ({len(train_smiles)} SMILES)"
    return {
        "protocol": "EDM (Hoogeboom et al. 2022)",
        "bond_margins_pm": margins.as_dict(),
        "bond_rule": "d < L1+m1 -> 1, then d < L2+m2 -> 2, then d < L3+m3 -> 3 (pm, strict)",
        "allowed_valences": {k: list(v) for k, v in ALLOWED_VALENCES.items()},
        "formal_charges": False,
        "hydrogens": "explicit atoms, as given",
        "validity": validity,
        "validity_definition": _VALIDITY_TEXT[validity],
        "validity_connected_definition": _VALIDITY_TEXT["connected"],
        "uniqueness_denominator": f"valid molecules ({validity})",
        "smiles": "RDKit canonical SMILES with explicit [H] atoms, largest fragment",
        "novelty_reference": reference,
        "novelty_denominator": "unique valid molecules",
        "bad_input": "counted in every denominator as unstable and invalid",
        "distances": "float64, Å converted to pm (EDM computed in float32)",
        "rdkit_version": rdkit_version,
    }
