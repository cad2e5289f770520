"""Crystals as symmetrized CIF text, the "cif" form (after CrystaLLM, Antunes et al. 2024).

:func:`encode_cif` writes a compact CIF in the layout of pymatgen's
``CifWriter(structure, symprec=0.1)``: the spglib-refined conventional cell in the standard
setting of its space group, and one row per symmetrically distinct site. It differs from
``CifWriter``'s text in that

- there is no ``# generated using pymatgen`` comment and no symmetry-operations loop (the
  operations follow from ``_symmetry_Int_Tables_number``; :func:`decode_cif` puts them back);
- every line is ``name value`` with one space, and loop rows have single spaces, no indentation;
- cell lengths, angles, volume and fractional coordinates have 4 decimals (coordinates wrapped to
  [0, 1));
- everything comes from one spglib analysis. ``CifWriter`` takes the space group from an analysis
  of the input but the sites and operations from a second analysis of the refined cell, and the
  two disagree for about 0.1% of MP-20 (a higher group, or a shifted origin, found the second
  time), which writes a CIF that does not give back the crystal. Here the sites of the refined
  cell are grouped into orbits under the standard operations of the group found, and each orbit
  is written at its idealized (site-symmetry averaged) position.

The result reads, line by line::

    data_NaTiVS4
    _symmetry_space_group_name_H-M Cm
    _cell_length_a 14.1817
    _cell_length_b 3.4297
    _cell_length_c 5.9062
    _cell_angle_alpha 90.0000
    _cell_angle_beta 98.0233
    _cell_angle_gamma 90.0000
    _symmetry_Int_Tables_number 8
    _chemical_formula_structural NaTiVS4
    _chemical_formula_sum 'Na2 Ti2 V2 S8'
    _cell_volume 284.4635
    _cell_formula_units_Z 2
    loop_
    _atom_site_type_symbol
    _atom_site_label
    _atom_site_symmetry_multiplicity
    _atom_site_fract_x
    _atom_site_fract_y
    _atom_site_fract_z
    _atom_site_occupancy
    Na Na0 2 0.2433 0.0000 0.0864 1
    ...

:func:`decode_cif` rebuilds the symmetry operations of the space group's standard setting (the
first Hall setting of spglib's table, the one spglib refines to), checks the text's own
consistency (space-group symbol against number, atom sites against ``_chemical_formula_sum``) and
parses it with pymatgen's ``CifParser``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from matgen.generators.lm.crystal_text import CrystalTextError

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["CIF_KEYWORDS", "decode_cif", "encode_cif", "space_group_symbols"]

#: The CIF data names of the cif form (one text token each), plus ``data_`` and ``loop_``.
CIF_KEYWORDS: tuple[str, ...] = (
    "data_",
    "loop_",
    "_symmetry_space_group_name_H-M",
    "_symmetry_Int_Tables_number",
    "_cell_length_a",
    "_cell_length_b",
    "_cell_length_c",
    "_cell_angle_alpha",
    "_cell_angle_beta",
    "_cell_angle_gamma",
    "_cell_volume",
    "_cell_formula_units_Z",
    "_chemical_formula_structural",
    "_chemical_formula_sum",
    "_atom_site_type_symbol",
    "_atom_site_label",
    "_atom_site_symmetry_multiplicity",
    "_atom_site_fract_x",
    "_atom_site_fract_y",
    "_atom_site_fract_z",
    "_atom_site_occupancy",
)
_SITE_COLUMNS = (
    "type_symbol",
    "label",
    "symmetry_multiplicity",
    "fract_x",
    "fract_y",
    "fract_z",
    "occupancy",
)


@contextlib.contextmanager
def _quiet_spglib() -> Iterator[None]:
    """Silence the DeprecationWarning spglib >= 2.5 gives about its error-handling mode on every
    call (pymatgen's calls included)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="spglib")
        yield


@cache
def _standard_settings() -> tuple[tuple[int, str], ...]:
    """(Hall number, short international symbol) of the standard setting of groups 1..230."""
    import spglib

    first: dict[int, tuple[int, str]] = {}
    with _quiet_spglib():
        for hall in range(1, 531):
            kind = spglib.get_spacegroup_type(hall)
            first.setdefault(kind.number, (hall, kind.international_short))
    return tuple(first[n] for n in range(1, 231))


def space_group_symbols() -> tuple[str, ...]:
    """The short Hermann–Mauguin symbols of space groups 1..230 in their standard settings, as
    ``CifWriter`` writes them (``"P6_3/mmc"``); entry ``n - 1`` is group ``n``."""
    return tuple(symbol for _, symbol in _standard_settings())


@cache
def _standard_operations(number: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``(n_ops, 3, 3)`` (integer) and translations ``(n_ops, 3)`` of group ``number``
    in its standard setting, centring translations included (the conventional cell)."""
    import spglib

    hall, _ = _standard_settings()[number - 1]
    with _quiet_spglib():
        ops = spglib.get_symmetry_from_database(hall)
    return np.asarray(ops["rotations"]), np.asarray(ops["translations"], dtype=np.float64)


@cache
def _symmetry_loop(number: int) -> str:
    """The ``_symmetry_equiv_pos`` loop of group ``number`` in its standard setting."""
    from pymatgen.core.operations import SymmOp

    rotations, translations = _standard_operations(number)
    rows = [
        f"{i} '{SymmOp.from_rotation_and_translation(rot, trans).as_xyz_str()}'"
        for i, (rot, trans) in enumerate(zip(rotations, translations, strict=True), start=1)
    ]
    return "\n".join(["loop_", "_symmetry_equiv_pos_site_id", "_symmetry_equiv_pos_as_xyz", *rows])


def _coordinate(value: float) -> str:
    return f"{round(float(value), 4) % 1.0:.4f}"


def _asymmetric_unit(
    refined: Structure, number: int, tolerance: float
) -> list[tuple[str, int, np.ndarray]]:
    """``(element, multiplicity, idealized fractional position)`` of each orbit of the refined
    conventional cell under the standard operations of group ``number``.

    The representative of an orbit is its site with the smallest ``|x|, |y|, |z|`` (as
    ``CifWriter`` picks it); its position is projected onto its special position by averaging
    its images under its site-symmetry group.

    Raises:
        CrystalTextError: a symmetry image of a site that matches no site of the same element
            (the refined cell is not symmetric under the standard operations).
    """
    rotations, translations = _standard_operations(number)
    frac = np.asarray(refined.frac_coords, dtype=np.float64) % 1.0
    matrix = refined.lattice.matrix
    symbols = [site.specie.symbol for site in refined]
    unassigned = set(range(len(refined)))
    orbits = []
    while unassigned:
        first = min(unassigned)
        images = np.einsum("oij,j->oi", rotations, frac[first]) + translations  # (n_ops, 3)
        delta = frac[None, :, :] - images[:, None, :]  # (n_ops, n_sites, 3)
        delta -= np.round(delta)
        distance = np.linalg.norm(delta @ matrix, axis=-1)
        same = np.array([symbols[j] == symbols[first] for j in range(len(refined))])
        distance[:, ~same] = np.inf
        nearest = distance.argmin(axis=1)
        if np.any(distance[np.arange(len(images)), nearest] > tolerance):
            raise CrystalTextError(
                f"a symmetry image of site {first} ({symbols[first]}) matches no site of the "
                f"refined cell of space group {number}"
            )
        members = sorted(set(nearest.tolist()))
        unassigned -= set(members)
        rep = min(members, key=lambda j: tuple(np.abs(frac[j])))
        # site-symmetry group of the representative: the operations that map it onto itself
        images = np.einsum("oij,j->oi", rotations, frac[rep]) + translations
        shift = frac[rep] - images
        stabilizer = np.linalg.norm((shift - np.round(shift)) @ matrix, axis=-1) <= tolerance
        unwrapped = images[stabilizer] + np.round(shift[stabilizer])
        orbits.append((symbols[rep], len(members), unwrapped.mean(axis=0) % 1.0))
    return orbits


def encode_cif(structure: Structure, *, symprec: float = 0.1) -> str:
    """Write a structure as cif-form text (see the module docstring).

    One spglib analysis (``SpacegroupAnalyzer(structure, symprec)``) gives the space group and
    the refined conventional cell in the standard setting; the sites are grouped into orbits
    under the standard operations of that group, and each orbit is written once, at its
    idealized position, in ``CifWriter``'s layout and order (by electronegativity, then
    decreasing multiplicity, then position; labels ``<El><running index>``).

    Args:
        structure: an ordered pymatgen ``Structure``.
        symprec: symmetry tolerance of spglib, Å (also the tolerance for matching symmetry
            images).

    Returns:
        The text, ending in ``"\\n"``.

    Raises:
        CrystalTextError: a disordered site, no sites, or a refined cell that is not symmetric
            under its own space group's operations.
    """
    from pymatgen.core import Structure
    from pymatgen.core.periodic_table import Element
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if len(structure) == 0:
        raise CrystalTextError("the structure has no sites")
    for i, site in enumerate(structure):
        if not site.is_ordered:
            raise CrystalTextError(
                f"site {i} is disordered ({site.species}); cif text holds one element per site"
            )
    bare = Structure(structure.lattice, [site.specie for site in structure], structure.frac_coords)
    with _quiet_spglib():
        analyzer = SpacegroupAnalyzer(bare, symprec=symprec)
        number = analyzer.get_space_group_number()
        refined = analyzer.get_refined_structure()
    orbits = _asymmetric_unit(refined, number, symprec)
    orbits.sort(key=lambda o: (Element(o[0]).X, -o[1], *o[2]))
    composition = refined.composition
    _, units = composition.get_reduced_composition_and_factor()
    formula = composition.formula
    lattice = refined.lattice
    lines = [
        f"data_{composition.reduced_formula}",
        f"_symmetry_space_group_name_H-M {space_group_symbols()[number - 1]}",
        *(f"_cell_length_{k} {v:.4f}" for k, v in zip("abc", lattice.abc, strict=True)),
        *(
            f"_cell_angle_{k} {v:.4f}"
            for k, v in zip(("alpha", "beta", "gamma"), lattice.angles, strict=True)
        ),
        f"_symmetry_Int_Tables_number {number}",
        f"_chemical_formula_structural {composition.reduced_formula}",
        f"_chemical_formula_sum {repr(formula) if ' ' in formula else formula}",
        f"_cell_volume {lattice.volume:.4f}",
        f"_cell_formula_units_Z {int(units)}",
        "loop_",
        *(f"_atom_site_{k}" for k in _SITE_COLUMNS),
    ]
    for i, (symbol, multiplicity, position) in enumerate(orbits):
        xyz = " ".join(_coordinate(x) for x in position)
        lines.append(f"{symbol} {symbol}{i} {multiplicity} {xyz} 1")
    return "\n".join(lines) + "\n"


def _value(lines: list[str], key: str) -> tuple[int, str]:
    for i, line in enumerate(lines):
        if line.startswith(key + " "):
            return i, line[len(key) + 1 :].strip()
    raise CrystalTextError(f"no {key} line")


def decode_cif(text: str) -> Structure:
    """Read cif-form text back into a ``Structure`` (the conventional cell as written).

    Args:
        text: the text of :func:`encode_cif` (or any CIF with ``_symmetry_Int_Tables_number``
            and no symmetry-operations loop).

    Returns:
        The structure with all symmetry images of the listed sites.

    Raises:
        CrystalTextError: naming the line for a missing or out-of-range space-group number, a
            symbol that does not belong to that number, a text pymatgen cannot parse, or atom
            sites whose composition differs from ``_chemical_formula_sum``.
    """
    from pymatgen.core import Composition
    from pymatgen.io.cif import CifParser

    if not isinstance(text, str):
        raise CrystalTextError(f"expected a string, got {type(text).__name__}")
    lines = text.splitlines()
    row, number_text = _value(lines, "_symmetry_Int_Tables_number")
    if not number_text.isdigit() or not 1 <= int(number_text) <= 230:
        raise CrystalTextError(f"line {row + 1}: space group number {number_text!r} not in 1..230")
    number = int(number_text)
    expected = space_group_symbols()[number - 1]
    try:
        row, symbol = _value(lines, "_symmetry_space_group_name_H-M")
    except CrystalTextError:
        symbol = None
    if symbol is not None and symbol.strip("'\"") != expected:
        raise CrystalTextError(
            f"line {row + 1}: space group symbol {symbol!r} is not that of number {number} "
            f"({expected!r})"
        )
    if any(line.startswith("_symmetry_equiv_pos") for line in lines):
        full = text
    else:
        full = text.rstrip("\n") + "\n" + _symmetry_loop(number) + "\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structures = CifParser.from_str(full, site_tolerance=1e-3).parse_structures(
                primitive=False, on_error="raise"
            )
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            messages = [str(w.message).strip().splitlines()[-1] for w in caught]
            detail = f" ({messages[-1]})" if messages else ""
            first = str(exc).strip().splitlines()
            reason = first[0] if first else type(exc).__name__
            raise CrystalTextError(f"pymatgen cannot parse the CIF: {reason}{detail}") from None
    if len(structures) != 1:
        raise CrystalTextError(f"expected one data block, found {len(structures)}")
    structure = structures[0]
    try:
        row, formula = _value(lines, "_chemical_formula_sum")
    except CrystalTextError:
        return structure
    try:
        stated = Composition(formula.strip("'\""))
    except Exception:
        raise CrystalTextError(f"line {row + 1}: cannot read formula {formula!r}") from None
    if not stated.almost_equals(structure.composition):
        raise CrystalTextError(
            f"line {row + 1}: the atom sites give {structure.composition.formula!r} "
            f"but _chemical_formula_sum says {formula!r}"
        )
    return structure
