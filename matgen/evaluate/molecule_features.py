"""Molecule features behind the MOSES metrics, and the kernels that compare sets of them.

For one SMILES string this module gives everything the set-level metrics in
:mod:`matgen.evaluate.strings` need, so that each molecule is parsed once per pass:

- validity as MOSES defines it: ``Chem.MolFromSmiles`` succeeds, the string is not empty, and a
  second ``Chem.SanitizeMol`` passes;
- the canonical SMILES (RDKit, isomeric);
- the Morgan fingerprint, radius 2, 1024 bits, packed little-endian into 128 bytes;
- the BRICS fragments (``FragmentOnBRICSBonds``, written as canonical SMILES, one per fragment);
- the Bemis–Murcko scaffold as canonical SMILES, kept only when it has at least two rings
  (``SCAFFOLD_MIN_RINGS``, the MOSES default);
- logP (Crippen), the synthetic-accessibility score (Ertl & Schuffenhauer, RDKit Contrib
  ``sascorer``), QED and the average molecular weight (g/mol).

Generated molecules are featurized as MOSES does it: the input is parsed and canonicalized, and
the features come from the molecule re-parsed from that canonical SMILES (``reparse=True``);
the canonical SMILES reported is the canonical form of that second molecule. Reference sets use
the molecule parsed from the given string (``reparse=False``).

Set-level kernels work on the packed fingerprints: :func:`nearest_neighbour_similarity` (SNN)
and :func:`internal_diversity` (IntDiv) compute Tanimoto similarities block by block as one
matrix product of 0/1 matrices, in a dtype where the intersection counts are exact integers;
:func:`chemnet_statistics` gives the ChemNet moments behind the FCD; :func:`cosine_similarity`
compares fragment or scaffold counts.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import QED, Crippen, Descriptors, rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

from matgen.evaluate.report import InvalidSample

__all__ = [
    "CHEMNET_PAD_LENGTH",
    "MORGAN_BITS",
    "MORGAN_RADIUS",
    "PROPERTY_NAMES",
    "SCAFFOLD_MIN_RINGS",
    "MoleculeFeatures",
    "brics_fragments",
    "canonicalize_chunk",
    "chemnet_statistics",
    "cosine_similarity",
    "default_n_jobs",
    "featurize",
    "featurize_chunk",
    "featurize_samples",
    "internal_diversity",
    "map_chunks",
    "murcko_scaffold",
    "nearest_neighbour_similarity",
    "parse_smiles",
]

MORGAN_RADIUS = 2
MORGAN_BITS = 1024
SCAFFOLD_MIN_RINGS = 2
PROPERTY_NAMES = ("logP", "SA", "QED", "weight")
CHEMNET_PAD_LENGTH = 350

T = TypeVar("T")
R = TypeVar("R")


class MoleculeFeatures(NamedTuple):
    """Features of one valid molecule.

    Attributes:
        canonical: canonical isomeric SMILES (RDKit).
        fingerprint: Morgan bits (radius 2, 1024 bits) packed little-endian, 128 bytes.
        fragments: BRICS fragments as canonical SMILES (with their ``[n*]`` attachment points).
        scaffold: Bemis–Murcko scaffold SMILES, or None (no scaffold or fewer than two rings).
        properties: (logP, SA, QED, weight); NaN where RDKit gives no value.
    """

    canonical: str
    fingerprint: bytes
    fragments: tuple[str, ...]
    scaffold: str | None
    properties: tuple[float, float, float, float]


def parse_smiles(smiles: object) -> tuple[Chem.Mol | None, str]:
    """Parse and sanitize a SMILES string the way MOSES's ``get_mol`` does.

    Returns:
        (molecule, "") when valid, else (None, the reason it is invalid).
    """
    if not isinstance(smiles, str):
        return None, f"not a string ({type(smiles).__name__})"
    if not smiles:
        return None, "empty string"
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None, _diagnose(smiles)
    try:
        Chem.SanitizeMol(mol)
    except (ValueError, RuntimeError) as exc:
        return None, f"sanitization failed: {exc}"
    if mol.GetNumAtoms() == 0:
        return None, "molecule has no atoms"
    return mol, ""


def _diagnose(smiles: str) -> str:
    """Why RDKit rejected a SMILES: a syntax error or a failed sanitization step."""
    raw = Chem.MolFromSmiles(smiles, sanitize=False)
    if raw is None:
        return "SMILES syntax error: RDKit cannot parse the string"
    try:
        Chem.SanitizeMol(raw)
    except (ValueError, RuntimeError) as exc:
        return f"sanitization failed: {' '.join(str(exc).split())}"
    return "RDKit rejected the molecule"


def featurize(smiles: object, *, reparse: bool) -> MoleculeFeatures | str:
    """All features of one molecule, or the reason it is invalid.

    Args:
        smiles: a SMILES string.
        reparse: featurize the molecule re-parsed from its canonical SMILES (MOSES's treatment
            of generated molecules) instead of the molecule parsed from ``smiles`` (reference
            sets).
    """
    mol, reason = parse_smiles(smiles)
    if mol is None:
        return reason
    canonical = Chem.MolToSmiles(mol)
    if reparse:
        mol, reason = parse_smiles(canonical)
        if mol is None:
            return f"its canonical SMILES {canonical!r} does not parse again: {reason}"
        canonical = Chem.MolToSmiles(mol)
    bits = _morgan_generator().GetFingerprintAsNumPy(mol)
    fingerprint = np.packbits(bits.astype(bool), bitorder="little").tobytes()
    return MoleculeFeatures(
        canonical=canonical,
        fingerprint=fingerprint,
        fragments=brics_fragments(mol),
        scaffold=murcko_scaffold(mol),
        properties=_properties(mol),
    )


def brics_fragments(mol: Chem.Mol) -> tuple[str, ...]:
    """The BRICS fragments of a molecule as SMILES, with their ``[n*]`` attachment points."""
    return tuple(Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(mol)).split("."))


def murcko_scaffold(mol: Chem.Mol) -> str | None:
    """The Bemis-Murcko scaffold as canonical SMILES; None below ``SCAFFOLD_MIN_RINGS`` rings."""
    try:
        scaffold = MurckoScaffold.GetScaffoldForMol(mol)
    except (ValueError, RuntimeError):
        return None
    smiles = Chem.MolToSmiles(scaffold)
    if not smiles or scaffold.GetRingInfo().NumRings() < SCAFFOLD_MIN_RINGS:
        return None
    return smiles


def featurize_samples(
    items: Sequence[object], *, representation: str, n_jobs: int
) -> tuple[list[MoleculeFeatures], list[InvalidSample]]:
    """Decode (SELFIES), parse and featurize generated samples (``reparse=True``).

    Returns:
        The features of the valid samples in input order, and the invalid ones (0-based index,
        the item, the reason) sorted by index.
    """
    invalid: list[InvalidSample] = []
    smiles: list[object] = list(items)
    if representation == "selfies":
        import selfies

        smiles = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, str):
                    raise TypeError(f"not a string ({type(item).__name__})")
                smiles.append(selfies.decoder(item))
            except Exception as exc:  # any decoder failure: an invalid sample
                reason = " ".join(str(exc).split("\n")[0].split())
                invalid.append(InvalidSample(i, _short(item), f"SELFIES decoding failed: {reason}"))
                smiles.append("")
    undecoded = {s.index for s in invalid}
    results = map_chunks(functools.partial(featurize_chunk, reparse=True), smiles, n_jobs=n_jobs)
    valid: list[MoleculeFeatures] = []
    for i, result in enumerate(results):
        if isinstance(result, MoleculeFeatures):
            valid.append(result)
        elif i not in undecoded:
            invalid.append(InvalidSample(i, _short(items[i]), result))
    return valid, sorted(invalid, key=lambda s: s.index)


def featurize_chunk(chunk: Sequence[object], *, reparse: bool) -> list[MoleculeFeatures | str]:
    """:func:`featurize` over a chunk, with RDKit's log silenced for its duration."""
    blocker = rdBase.BlockLogs()
    try:
        return [featurize(s, reparse=reparse) for s in chunk]
    finally:
        del blocker


def canonicalize_chunk(chunk: Sequence[object]) -> list[str | None]:
    """Canonical SMILES of each string as :func:`featurize` with ``reparse=True`` writes it.

    Invalid strings give None.
    """
    blocker = rdBase.BlockLogs()
    try:
        out: list[str | None] = []
        for smiles in chunk:
            mol, _ = parse_smiles(smiles)
            if mol is not None:
                mol, _ = parse_smiles(Chem.MolToSmiles(mol))
            out.append(None if mol is None else Chem.MolToSmiles(mol))
        return out
    finally:
        del blocker


def map_chunks(
    func: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    *,
    n_jobs: int,
    chunk_size: int = 2000,
) -> list[R]:
    """Apply a chunk function over ``items`` in order, in ``n_jobs`` worker processes.

    Small inputs and ``n_jobs <= 1`` run in this process. Workers are forked on Linux (the
    caller needs no ``if __name__ == "__main__"`` guard; they only run RDKit) and spawned
    elsewhere. ``func`` must be picklable (a module-level function or a ``partial`` of one).
    """
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if n_jobs <= 1 or len(chunks) < 2:
        return [r for chunk in chunks for r in func(chunk)]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with context.Pool(min(n_jobs, len(chunks))) as pool:
        return [r for part in pool.imap(func, chunks) for r in part]


def default_n_jobs() -> int:
    """The CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def chemnet_statistics(
    smiles: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    n_jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (512,) and covariance (512, 512) of ChemNet's penultimate activations.

    Each SMILES is one-hot encoded with ``fcd``'s vocabulary, padded (or cut, as MOSES's
    ``fcd_torch`` does) to 350 tokens and scaled by 1/35, exactly as the ``fcd`` package
    feeds ChemNet. The moments are accumulated in float64 around the mean of the first 32. On the
    CPU, ``n_jobs`` worker processes with one torch thread each share large sets (ChemNet costs
    about 2.5 ms per molecule and thread).

    Raises:
        ValueError: fewer than two SMILES.
    """
    if len(smiles) < 2:
        raise ValueError(f"ChemNet statistics need at least two molecules, not {len(smiles)}")
    import fcd
    from fcd.utils import todevice

    device = torch.device(device)
    with todevice(fcd.load_ref_model(), device):  # any shift near the mean will do
        shift = _chemnet_activations(smiles[:32], device).mean(0)
    sums = functools.partial(_chemnet_sums, shift=shift, device=device, batch_size=batch_size)
    chunk_size = max(4 * batch_size, -(-len(smiles) // (4 * max(n_jobs, 1))))
    parts = map_chunks(
        sums, smiles, n_jobs=n_jobs if device.type == "cpu" else 1, chunk_size=chunk_size
    )
    n = sum(part[0] for part in parts)
    s1 = sum(part[1] for part in parts)
    s2 = sum(part[2] for part in parts)
    return shift + s1 / n, (s2 - np.outer(s1, s1) / n) / (n - 1)


def _chemnet_sums(
    smiles: Sequence[str], *, shift: np.ndarray, device: torch.device, batch_size: int
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(n, sum of (a - shift), sum of (a - shift)(a - shift)^T)] over one chunk, in float64.

    Runs with one torch thread (worker processes share the cores; see :func:`map_chunks`).
    """
    import fcd
    from fcd.utils import todevice

    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    s1 = np.zeros(len(shift))
    s2 = np.zeros((len(shift), len(shift)))
    try:
        with todevice(fcd.load_ref_model(), device):
            for start in range(0, len(smiles), batch_size):
                batch = smiles[start : start + batch_size]
                centred = _chemnet_activations(batch, device) - shift
                s1 += centred.sum(0)
                s2 += centred.T @ centred
    finally:
        torch.set_num_threads(threads)
    return [(len(smiles), s1, s2)]


def _chemnet_activations(smiles: Sequence[str], device: torch.device) -> np.ndarray:
    """(n, 512) float64 ChemNet activations of one batch (the model already on ``device``)."""
    import fcd
    from fcd.utils import get_one_hot, tokenize

    batch = []
    for s in smiles:
        text = "".join(tokenize(s)[: CHEMNET_PAD_LENGTH - 1])
        one_hot = get_one_hot(text, pad_len=CHEMNET_PAD_LENGTH)
        batch.append(one_hot / one_hot.shape[1])
    x = torch.from_numpy(np.stack(batch)).float().transpose(1, 2).to(device)
    with torch.no_grad():
        return fcd.load_ref_model()(x).cpu().numpy().astype(np.float64)


def nearest_neighbour_similarity(
    query: np.ndarray, reference: np.ndarray, *, device: str | torch.device = "cpu"
) -> float:
    """SNN: mean over query rows of the highest Tanimoto similarity to any reference row.

    Args:
        query: (n, 128) uint8 packed fingerprints (duplicates count with their multiplicity).
        reference: (m, 128) uint8 packed fingerprints.
    """
    unique, weights = np.unique(query, axis=0, return_counts=True)
    best = np.zeros(len(unique))
    for rows, _, sim in _tanimoto_blocks(unique, reference, torch.device(device)):
        best[rows] = np.maximum(best[rows], sim.max(dim=1).values.double().cpu().numpy())
    return float(best @ weights / weights.sum())


def internal_diversity(
    fingerprints: np.ndarray, *, p: int = 1, device: str | torch.device = "cpu"
) -> float:
    """IntDiv_p = 1 - (1/n) sum_i ((1/n) sum_j T(i, j)^p)^(1/p), over all ordered pairs.

    Args:
        fingerprints: (n, 128) uint8 packed fingerprints; pairs include i = j and duplicates.
        p: the power of the mean (1: IntDiv, 2: IntDiv2).
    """
    unique, weights = np.unique(fingerprints, axis=0, return_counts=True)
    w = torch.from_numpy(weights.astype(np.float32)).to(device)
    total = np.zeros(len(unique))
    for rows, cols, sim in _tanimoto_blocks(unique, unique, torch.device(device)):
        total[rows] += ((sim if p == 1 else sim**p) @ w[cols]).double().cpu().numpy()
    n = weights.sum()
    return float(1.0 - ((total / n) ** (1.0 / p)) @ weights / n)


def cosine_similarity(a: dict[str, int], b: dict[str, int]) -> float | None:
    """<a, b> / (|a| |b|) of two sparse count vectors; None when either is empty."""
    if not a or not b:
        return None
    dot = sum(float(v) * b.get(k, 0) for k, v in a.items())
    norm_a = np.sqrt(sum(float(v) ** 2 for v in a.values()))
    norm_b = np.sqrt(sum(float(v) ** 2 for v in b.values()))
    return float(dot / (norm_a * norm_b))


def _tanimoto_blocks(
    query: np.ndarray, reference: np.ndarray, device: torch.device
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Tanimoto similarities in blocks: (query rows, reference rows, float32 matrix).

    ``T(a, b) = |a & b| / (|a| + |b| - |a & b|)``, 1 when both are empty. The intersections come
    from one matrix product of 0/1 matrices in a dtype where they are exact integers.
    """
    bits_q = _unpack(query)
    # |a & b| <= |a|: the query's largest popcount bounds every intersection.
    dtype = _matmul_dtype(device, int(bits_q.sum(1).max(initial=0)))
    q = torch.from_numpy(bits_q).to(device=device, dtype=dtype)
    count_q = q.float().sum(1)
    q_block, r_block = 2048, 16384
    for r0 in range(0, len(reference), r_block):
        r = torch.from_numpy(_unpack(reference[r0 : r0 + r_block])).to(device=device, dtype=dtype)
        count_r = r.float().sum(1)
        cols = slice(r0, r0 + len(r))
        for q0 in range(0, len(q), q_block):
            inter = (q[q0 : q0 + q_block] @ r.T).float()
            union = count_q[q0 : q0 + q_block, None] + count_r[None, :] - inter
            sim = torch.nan_to_num_(inter / union, nan=1.0)
            yield slice(q0, q0 + len(sim)), cols, sim


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8), axis=1, bitorder="little")


def _matmul_dtype(device: torch.device, max_bits: int) -> torch.dtype:
    """A matmul dtype that counts intersections exactly, the fastest one on this device.

    float16 is exact up to 2048 and bfloat16 up to 256 (products accumulate in float32).
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and max_bits <= 256 and _bfloat16_is_faster():
        return torch.bfloat16
    return torch.float32


@functools.cache
def _bfloat16_is_faster() -> bool:
    """Whether this CPU multiplies bfloat16 faster than float32 (AMX / AVX512-BF16)."""
    generator = torch.Generator().manual_seed(0)
    a = (torch.rand(1024, 1024, generator=generator) < 0.05).float()
    b = (torch.rand(4096, 1024, generator=generator) < 0.05).float()
    best = {}
    for dtype in (torch.bfloat16, torch.float32):
        x, y = a.to(dtype), b.to(dtype)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            x @ y.T
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.bfloat16] < best[torch.float32]


@functools.cache
def _morgan_generator() -> rdFingerprintGenerator.FingerprintGenerator64:
    # Same bits as the legacy AllChem.GetMorganFingerprintAsBitVect(mol, 2, nBits=1024) MOSES calls.
    return rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)


def _properties(mol: Chem.Mol) -> tuple[float, float, float, float]:
    return (
        _descriptor(Crippen.MolLogP, mol),
        _descriptor(_sascorer().calculateScore, mol),
        _descriptor(QED.qed, mol),
        _descriptor(Descriptors.MolWt, mol),
    )


def _descriptor(func: Callable[[Chem.Mol], float | None], mol: Chem.Mol) -> float:
    """One descriptor value; NaN where it fails on an unusual molecule rather than a crash."""
    try:
        value = func(mol)
    except Exception:  # third-party descriptor code, arbitrary molecules
        return float("nan")
    return float("nan") if value is None else float(value)


@functools.cache
def _sascorer() -> ModuleType:
    """RDKit's Contrib ``SA_Score/sascorer.py``, loaded from the installed wheel."""
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    spec = importlib.util.spec_from_file_location("matgen_rdkit_contrib_sascorer", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"RDKit's Contrib SA scorer is missing at {path}; reinstall rdkit")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _short(item: object, limit: int = 200) -> str:
    text = item if isinstance(item, str) else repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."
