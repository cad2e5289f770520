"""Crystals as short plain text, the "ctl" form of Crystal-text-LLM (Gruver et al., ICLR 2024).

A structure with ``N`` sites is written as ``2 + 2 N`` lines, each ending in ``"\\n"``::

    a b c              lattice lengths in Å, "%.1f" each, single spaces
    alpha beta gamma   lattice angles in degrees, integers ("%d" of the rounded value)
    El                 for each site: its element symbol,
    x y z              then its fractional coordinates, "%.2f" each, wrapped to [0, 1)

The lattice is that of the **Niggli-reduced cell** (pymatgen ``get_reduced_structure("niggli")``),
taken right-handed, so that the same crystal always gets the same six numbers; the sites keep the
structure's order (or, with ``site_order="sorted"``, are grouped by element in order of first
appearance and sorted by their written coordinates within each group). A coordinate that rounds
to ``1.00`` is written ``0.00``. The rounding errors
are at most 0.05 Å per length, 0.5° per angle and 0.005 per fractional coordinate, well inside
pymatgen ``StructureMatcher``'s default tolerances for the crystals of MP-20.

Training can shift all fractional coordinates by one random vector (``translate=True``): the
crystal is the same, its text is not, which teaches a language model translation invariance.

:func:`decode_ctl` is the exact inverse up to that rounding. It accepts any plain decimal numbers
(no exponents) in the fields and raises :class:`CrystalTextError` naming the line that is wrong.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "ELEMENT_SYMBOLS",
    "SITE_ORDERS",
    "CrystalTextError",
    "cell_volume_factor",
    "decode_ctl",
    "encode_ctl",
    "lattice_matrix",
]


#: The 118 element symbols H..Og in order of atomic number (one text token each).
ELEMENT_SYMBOLS: tuple[str, ...] = tuple(
    """H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As
    Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd
    Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am
    Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og""".split()
)
_ELEMENT_SET = frozenset(ELEMENT_SYMBOLS)
#: Site orders of :func:`encode_ctl`.
SITE_ORDERS: tuple[str, ...] = ("given", "sorted")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class CrystalTextError(ValueError):
    """A crystal text that does not describe a structure; the message names the line."""


def cell_volume_factor(alpha: float, beta: float, gamma: float) -> float:
    """The volume of a cell with unit lengths and angles ``alpha, beta, gamma`` (degrees).

    .. math:: V / (abc) = \\sqrt{1 - \\cos^2\\alpha - \\cos^2\\beta - \\cos^2\\gamma
              + 2 \\cos\\alpha \\cos\\beta \\cos\\gamma}

    Returns 0 for angle triples that no cell has (the radicand is then <= 0).
    """
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    radicand = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    return math.sqrt(radicand) if radicand > 0.0 else 0.0


def lattice_matrix(
    a: float, b: float, c: float, alpha: float, beta: float, gamma: float
) -> np.ndarray:
    """Row-vector lattice matrix (Å) with ``a`` along x and ``b`` in the xy plane for lengths
    (Å) and angles (degrees); any orientation gives the same distances as the decoded cell.

    Raises:
        ValueError: angles that no cell has (:func:`cell_volume_factor` is 0).
    """
    if cell_volume_factor(alpha, beta, gamma) <= 0.0:
        raise ValueError(f"no cell has the angles {alpha}, {beta}, {gamma}")
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    sg = math.sin(math.radians(gamma))
    cy = (ca - cb * cg) / sg
    cz = math.sqrt(max(1.0 - cb * cb - cy * cy, 0.0))
    return np.array([[a, 0.0, 0.0], [b * cg, b * sg, 0.0], [c * cb, c * cy, c * cz]])


def encode_ctl(
    structure: Structure,
    *,
    translate: bool = False,
    rng: np.random.Generator | None = None,
    site_order: str = "given",
) -> str:
    """Write a structure as ctl text (see the module docstring for the format).

    Args:
        structure: an ordered pymatgen ``Structure`` (one element per site).
        translate: shift all fractional coordinates by one vector drawn uniformly from
            ``[0, 1)^3`` (training augmentation).
        rng: random generator for the shift (default: a fresh unseeded one).
        site_order: ``"given"``: the structure's site order; ``"sorted"``: the sites grouped by
            element (the groups in order of first appearance), each group in increasing
            ``(x, y, z)`` of its written coordinates (after any translation), so that a site
            written twice for one element would be written on consecutive lines.

    Returns:
        The text, ``2 + 2 N`` lines for ``N`` sites, ending in ``"\\n"``.

    Raises:
        CrystalTextError: a disordered site (partial occupancy or mixed species), or no sites.
        ValueError: an unknown ``site_order``.
    """
    if site_order not in SITE_ORDERS:
        raise ValueError(f"site_order {site_order!r} unknown; expected one of {SITE_ORDERS}")
    if len(structure) == 0:
        raise CrystalTextError("the structure has no sites")
    symbols = []
    for i, site in enumerate(structure):
        if not site.is_ordered:
            raise CrystalTextError(
                f"site {i} is disordered ({site.species}); ctl text holds one element per site"
            )
        symbols.append(site.specie.symbol)
    reduced = structure.get_reduced_structure("niggli")
    # get_reduced_structure keeps the site order; check it so a pymatgen change cannot go unseen
    if [site.specie.symbol for site in reduced] != symbols:
        raise CrystalTextError("Niggli reduction reordered the sites")  # pragma: no cover
    matrix = reduced.lattice.matrix
    frac = np.asarray(reduced.frac_coords, dtype=np.float64)
    if np.linalg.det(matrix) < 0.0:
        # the same points in the basis -L: lengths and angles are unchanged, and the cell that
        # decode_ctl builds from them (always right-handed) is then not the mirror image
        frac = -frac
    if translate:
        rng = rng if rng is not None else np.random.default_rng()
        frac = frac + rng.random(3)
    a, b, c = reduced.lattice.abc
    alpha, beta, gamma = reduced.lattice.angles
    hundredths = np.rint((frac - np.floor(frac)) * 100.0).astype(np.int64) % 100
    if site_order == "sorted":
        group = {symbol: i for i, symbol in reversed(list(enumerate(symbols)))}
        order = sorted(range(len(symbols)), key=lambda i: (group[symbols[i]], *hundredths[i]))
        symbols = [symbols[i] for i in order]
        hundredths = hundredths[order]
    lines = [f"{a:.1f} {b:.1f} {c:.1f}", f"{round(alpha):d} {round(beta):d} {round(gamma):d}"]
    for symbol, (x, y, z) in zip(symbols, hundredths, strict=True):
        lines.append(symbol)
        lines.append(f"0.{x:02d} 0.{y:02d} 0.{z:02d}")
    return "\n".join(lines) + "\n"


def _numbers(line: str, lineno: int, what: str) -> list[float]:
    fields = line.split(" ")
    if len(fields) != 3:
        raise CrystalTextError(
            f"line {lineno}: expected 3 {what} separated by single spaces, got {line!r}"
        )
    for field in fields:
        if not _NUMBER.fullmatch(field):
            raise CrystalTextError(f"line {lineno}: {field!r} is not a decimal number ({what})")
    return [float(field) for field in fields]


def decode_ctl(text: str) -> Structure:
    """Read ctl text back into a ``Structure`` (the inverse of :func:`encode_ctl`).

    Args:
        text: lengths line, angles line, then an element line and a coordinates line per site;
            every line, the last included, ends in ``"\\n"``.

    Returns:
        The structure, with fractional coordinates wrapped to [0, 1).

    Raises:
        CrystalTextError: naming the 1-based line that is wrong: a missing final newline, a wrong
            number of fields, a field that is not a decimal number, a length <= 0, an angle
            outside (0°, 180°), angles that form no cell, an unknown element symbol, or a site
            without its coordinates line.
    """
    from pymatgen.core import Lattice, Structure

    if not isinstance(text, str):
        raise CrystalTextError(f"expected a string, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise CrystalTextError(
            "the text does not end with a newline (truncated?): "
            f"last line {text.rsplit(chr(10), 1)[-1]!r}"
        )
    lines = text[:-1].split("\n")
    if len(lines) < 4:
        raise CrystalTextError(
            f"{len(lines)} lines: need a lengths line, an angles line and at least one site "
            "(element line + coordinates line)"
        )
    if len(lines) % 2:
        raise CrystalTextError(
            f"line {len(lines)}: site {(len(lines) - 3) // 2} has an element line "
            f"({lines[-1]!r}) but no coordinates line"
        )
    lengths = _numbers(lines[0], 1, "lattice lengths")
    for value in lengths:
        if value <= 0.0:
            raise CrystalTextError(f"line 1: lattice length {value:g} Å is not positive")
    angles = _numbers(lines[1], 2, "lattice angles")
    for value in angles:
        if not 0.0 < value < 180.0:
            raise CrystalTextError(f"line 2: lattice angle {value:g}° is outside (0°, 180°)")
    if cell_volume_factor(*angles) < 1e-6:
        raise CrystalTextError(
            f"line 2: the angles {lines[1]!r} form no cell (zero or imaginary volume)"
        )
    species, coords = [], []
    for k in range(2, len(lines), 2):
        symbol = lines[k]
        if symbol not in _ELEMENT_SET:
            raise CrystalTextError(f"line {k + 1}: {symbol!r} is not an element symbol")
        species.append(symbol)
        coords.append(_numbers(lines[k + 1], k + 2, "fractional coordinates"))
    frac = np.asarray(coords, dtype=np.float64)
    frac = frac - np.floor(frac)
    frac[frac >= 1.0] = 0.0
    lattice = Lattice.from_parameters(*lengths, *angles)
    return Structure(lattice, species, frac)
