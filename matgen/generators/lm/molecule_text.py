"""Molecules as text: RDKit-canonical SMILES and SELFIES (Krenn et al., Mach. Learn.: Sci.
Technol. 2020).

A molecule body is either its canonical isomeric SMILES (RDKit ``MolToSmiles``), tokenized with
the regular expression of Schwaller et al. (ACS Cent. Sci. 2019), or the SELFIES string of that
SMILES, one token per bracketed symbol. Every SELFIES string decodes to a valid molecule under the
semantic (valence) constraints in force; the constraints are a process-wide setting of the
``selfies`` package, so the functions here that use them take the preset's name, set it for the
call (in every worker process) and put the previous setting back.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

from matgen.data.collection import BadItem

if TYPE_CHECKING:
    from rdkit import Chem

__all__ = [
    "MOLECULE_KINDS",
    "SMILES_PATTERN",
    "canonical_smiles",
    "decode_molecule",
    "encode_molecules",
    "selfies_to_smiles",
    "smiles_to_selfies",
    "split_selfies",
    "tokenize_smiles",
]

#: Molecule text kinds.
MOLECULE_KINDS: tuple[str, ...] = ("selfies", "smiles")
#: SMILES tokens (Schwaller et al. 2019): bracket atoms, two-letter organic-subset atoms, ring
#: closures ``%nn``, bonds, branches and single characters. Valid in Python ``re`` and Oniguruma.
SMILES_PATTERN = (
    r"\[[^\]]+\]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$"
    r"|%[0-9]{2}|[0-9]"
)
_SMILES = re.compile(SMILES_PATTERN)
_SELFIES = re.compile(r"\[[^\]]*\]|\.")
_CONSTRAINTS = ("default", "octet_rule", "hypervalent")


def _split(pattern: re.Pattern[str], text: str, what: str) -> list[str]:
    tokens = pattern.findall(text)
    if sum(map(len, tokens)) != len(text):
        position = 0
        for match in pattern.finditer(text):
            if match.start() != position:
                break
            position = match.end()
        raise ValueError(
            f"{what} {text!r}: character {position} ({text[position]!r}) is not part of a token"
        )
    return tokens


def tokenize_smiles(smiles: str) -> list[str]:
    """Split a SMILES string into tokens; ``"".join`` of the result is the input.

    Raises:
        ValueError: a character no token covers (naming it and its position).
    """
    return _split(_SMILES, smiles, "SMILES")


def split_selfies(selfies: str) -> list[str]:
    """Split a SELFIES string into its symbols (``[...]`` and the fragment separator ``.``).

    Raises:
        ValueError: a character outside the brackets (naming it and its position).
    """
    return _split(_SELFIES, selfies, "SELFIES")


@contextlib.contextmanager
def _semantic_constraints(name: str) -> Iterator[None]:
    """Use the ``selfies`` preset ``name`` inside the block and restore the setting after."""
    import selfies as sf

    if name not in _CONSTRAINTS:
        raise ValueError(f"unknown SELFIES constraints {name!r}; expected one of {_CONSTRAINTS}")
    previous = sf.get_semantic_constraints()
    wanted = sf.get_preset_constraints(name)
    if previous == wanted:
        yield
        return
    sf.set_semantic_constraints(wanted)
    try:
        yield
    finally:
        sf.set_semantic_constraints(previous)


def _parse(smiles: str) -> Chem.Mol:
    """Parse and sanitize a SMILES string; ValueError with RDKit's reason on failure."""
    from rdkit import Chem, rdBase

    if not isinstance(smiles, str) or not smiles.strip():
        raise ValueError("empty SMILES")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        raise ValueError(f"cannot parse SMILES {smiles!r}")
    try:
        with rdBase.BlockLogs():
            Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises its own sanitization exception types
        raise ValueError(f"invalid SMILES {smiles!r}: {exc}") from None
    return mol


def canonical_smiles(smiles: str) -> str:
    """RDKit's canonical isomeric SMILES of a SMILES string.

    Raises:
        ValueError: unparsable SMILES or a molecule RDKit cannot sanitize (with RDKit's reason).
    """
    from rdkit import Chem

    return Chem.MolToSmiles(_parse(smiles))


def smiles_to_selfies(smiles: str, *, constraints: str = "default") -> str:
    """The SELFIES string of a SMILES string (encoded as given; canonicalize first if needed).

    Raises:
        ValueError: the ``selfies`` encoder's reason (unsupported syntax, or an atom whose
            valence breaks the constraints).
    """
    import selfies as sf

    with _semantic_constraints(constraints):
        try:
            return sf.encoder(smiles, strict=True)
        except sf.EncoderError as exc:
            raise ValueError(str(exc).strip().splitlines()[0]) from None


def selfies_to_smiles(selfies: str, *, constraints: str = "default") -> str:
    """The SMILES string of a SELFIES string (as the ``selfies`` decoder writes it).

    Raises:
        ValueError: the decoder's reason (an unknown symbol).
    """
    import selfies as sf

    with _semantic_constraints(constraints):
        try:
            return sf.decoder(selfies)
        except sf.DecoderError as exc:
            raise ValueError(str(exc).strip().splitlines()[0]) from None


def _encode_one(smiles: str, kind: str, constraints: str) -> tuple[bool, str]:
    """``(True, text)`` or ``(False, reason)`` for one SMILES."""
    try:
        canonical = canonical_smiles(smiles)
        if kind == "smiles":
            return True, canonical
        return True, smiles_to_selfies(canonical, constraints=constraints)
    except ValueError as exc:
        return False, str(exc)


def _encode_chunk(chunk: tuple[str, ...], *, kind: str, constraints: str) -> list[tuple[bool, str]]:
    with _semantic_constraints(constraints):
        return [_encode_one(smiles, kind, constraints) for smiles in chunk]


def encode_molecules(
    smiles: Sequence[str],
    *,
    kind: str,
    workers: int = 1,
    constraints: str = "default",
) -> tuple[list[str], list[BadItem]]:
    """Canonicalize SMILES with RDKit and write them as ``kind`` text, skipping bad ones.

    Args:
        smiles: input SMILES, one molecule each.
        kind: ``"selfies"`` or ``"smiles"`` (canonical SMILES).
        workers: processes (1 runs here).
        constraints: SELFIES semantic-constraint preset (``"default"``, ``"octet_rule"``,
            ``"hypervalent"``), set in every worker.

    Returns:
        ``(texts, bad)``: the texts of the good molecules in input order, and one
        :class:`~matgen.data.collection.BadItem` (0-based row, the SMILES, RDKit's or the
        encoder's reason) per skipped molecule.
    """
    from matgen.data.parallel import process_map

    if kind not in MOLECULE_KINDS:
        raise ValueError(f"unknown molecule text kind {kind!r}; expected one of {MOLECULE_KINDS}")
    if constraints not in _CONSTRAINTS:
        raise ValueError(f"unknown SELFIES constraints {constraints!r}; expected {_CONSTRAINTS}")
    items = list(smiles)
    # a few chunks per worker, so that small inputs are spread over the workers too
    size = max(1, min(2048, -(-len(items) // (4 * max(workers, 1)))))
    chunks = [tuple(items[i : i + size]) for i in range(0, len(items), size)]
    results = process_map(
        partial(_encode_chunk, kind=kind, constraints=constraints),
        chunks,
        workers=workers,
        chunk_size=1,
    )
    texts: list[str] = []
    bad: list[BadItem] = []
    row = 0
    for chunk_result in results:
        for ok, value in chunk_result:
            if ok:
                texts.append(value)
            else:
                bad.append(BadItem(row, str(items[row]), value))
            row += 1
    return texts, bad


def decode_molecule(text: str, kind: str, *, constraints: str = "default") -> Chem.Mol:
    """The RDKit molecule of a SELFIES or SMILES body.

    Args:
        text: the body (tokens joined with nothing in between).
        kind: ``"selfies"`` or ``"smiles"``.
        constraints: SELFIES semantic-constraint preset used by the decoder.

    Raises:
        ValueError: an unknown kind, a SELFIES decoder error, an empty molecule, or SMILES that
            RDKit cannot parse or sanitize (with RDKit's reason).
    """
    if kind == "selfies":
        smiles = selfies_to_smiles(text, constraints=constraints)
        if not smiles:
            raise ValueError(f"SELFIES {text!r} decodes to an empty molecule")
    elif kind == "smiles":
        smiles = text
    else:
        raise ValueError(f"unknown molecule text kind {kind!r}; expected one of {MOLECULE_KINDS}")
    return _parse(smiles)
