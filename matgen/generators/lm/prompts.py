"""Prompts and training examples of the text crystal generators.

One example is the text ``<bos> PROMPT <gen> BODY <eos>`` (special tokens written literally, no
spaces around them). PROMPT holds zero or more condition fields, always in this order:

==============  =========================  ================================================
token           value                      text
==============  =========================  ================================================
``<comp>``      the cell's composition     ``Sr1Ti1O3``: elements in ``Structure.composition``
                                           order, each followed by its integer count
``<sg>``        space group number         ``221``
``<e_form>``    formation energy, eV/atom  ``"%.2f"``, e.g. ``-0.57``
``<band_gap>``  band gap, eV               ``"%.2f"``
``<e_hull>``    energy above hull, eV/atom ``"%.2f"``
==============  =========================  ================================================

Training drops each field independently with a given probability, so one model learns the
unconditional distribution (empty prompt) and every conditional one. The masked-element task of
Crystal-text-LLM is its own example type, ``<bos> <infill> BODY_WITH_MASK <gen> ELEMENT <eos>``:
every occurrence of one element in the body is replaced by ``<mask>`` and the answer is that
element's token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from matgen.generators.lm.crystal_text import ELEMENT_SYMBOLS, encode_ctl

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "CONDITIONS",
    "FORMS",
    "MP20_COLUMNS",
    "PROPERTY_NAMES",
    "CrystalPrompt",
    "crystal_body",
    "infill_example",
    "properties_from_row",
    "training_text",
]

#: Crystal body forms.
FORMS: tuple[str, ...] = ("ctl", "cif")
#: Scalar properties a prompt can hold, in prompt order.
PROPERTY_NAMES: tuple[str, ...] = ("e_form", "band_gap", "e_hull")
#: Every droppable condition, in prompt order.
CONDITIONS: tuple[str, ...] = ("composition", "spacegroup", *PROPERTY_NAMES)
#: MP-20 CSV columns of the conditions (``properties_from_row`` reads them).
MP20_COLUMNS: dict[str, str] = {
    "spacegroup": "spacegroup.number",
    "e_form": "formation_energy_per_atom",
    "band_gap": "band_gap",
    "e_hull": "e_above_hull",
}
_ELEMENTS = frozenset(ELEMENT_SYMBOLS)


def _format_value(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


@dataclass(frozen=True)
class CrystalPrompt:
    """The conditions of one crystal example or request.

    Args:
        composition: element symbol -> number of atoms in the cell (integers >= 1), in the order
            they are to be written; None for no composition field.
        spacegroup: international space group number 1..230, or None.
        properties: values of some of :data:`PROPERTY_NAMES` (eV/atom or eV).
        infill: a body with ``<mask>`` in place of one element (the infilling task); exclusive
            with the other fields.
        max_atoms: if set, the composition may hold at most this many atoms.

    Raises:
        ValueError: naming the field and value: unknown element, a count < 1 or not an integer,
            more atoms than ``max_atoms``, a space group outside 1..230, an unknown property
            name, a non-finite value, or an infill body without ``<mask>`` or with other fields.
    """

    composition: Mapping[str, int] | None = None
    spacegroup: int | None = None
    properties: Mapping[str, float] = field(default_factory=dict)
    infill: str | None = None
    max_atoms: int | None = None

    def __post_init__(self) -> None:
        if self.composition is not None:
            composition = dict(self.composition)
            if not composition:
                raise ValueError("composition is empty; use None for no composition field")
            for element, count in composition.items():
                if element not in _ELEMENTS:
                    raise ValueError(f"composition: unknown element {element!r}")
                if isinstance(count, bool) or not isinstance(count, Integral):
                    raise ValueError(
                        f"composition: count of {element} is {count!r}, not an integer"
                    )
                if count < 1:
                    raise ValueError(f"composition: count of {element} is {count}; must be >= 1")
            composition = {e: int(c) for e, c in composition.items()}
            total = sum(composition.values())
            if self.max_atoms is not None and total > self.max_atoms:
                raise ValueError(
                    f"composition {_formula(composition)} has {total} atoms, more than "
                    f"max_atoms = {self.max_atoms}"
                )
            object.__setattr__(self, "composition", composition)
        if self.spacegroup is not None:
            sg = self.spacegroup
            if isinstance(sg, bool) or not isinstance(sg, Integral) or not 1 <= sg <= 230:
                raise ValueError(f"spacegroup {sg!r} is not a space group number 1..230")
            object.__setattr__(self, "spacegroup", int(sg))
        properties = dict(self.properties)
        for name, value in properties.items():
            if name not in PROPERTY_NAMES:
                raise ValueError(f"unknown property {name!r}; expected one of {PROPERTY_NAMES}")
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ValueError(f"property {name} = {value!r} is not a finite number")
        object.__setattr__(
            self, "properties", {n: float(properties[n]) for n in PROPERTY_NAMES if n in properties}
        )
        if self.infill is not None:
            if "<mask>" not in self.infill:
                raise ValueError("infill body has no <mask> token")
            if self.composition is not None or self.spacegroup is not None or self.properties:
                raise ValueError("an infill prompt takes no composition, spacegroup or properties")

    def text(self) -> str:
        """The PROMPT part, e.g. ``"<comp>Sr1Ti1O3<sg>221<e_form>-0.57"`` (empty: no fields)."""
        if self.infill is not None:
            return "<infill>" + self.infill
        parts = []
        if self.composition is not None:
            parts.append("<comp>" + _formula(self.composition))
        if self.spacegroup is not None:
            parts.append(f"<sg>{self.spacegroup}")
        for name, value in self.properties.items():
            parts.append(f"<{name}>{_format_value(value)}")
        return "".join(parts)

    def prefix(self) -> str:
        """What generation starts from: ``"<bos>" + text() + "<gen>"``."""
        return f"<bos>{self.text()}<gen>"

    def example(self, body: str) -> str:
        """A full example: ``"<bos>" + text() + "<gen>" + body + "<eos>"``."""
        return f"{self.prefix()}{body}<eos>"


def _formula(composition: Mapping[str, int]) -> str:
    return "".join(f"{element}{count}" for element, count in composition.items())


def _composition(structure: Structure) -> dict[str, int]:
    out: dict[str, int] = {}
    for element, amount in structure.composition.items():
        if abs(amount - round(amount)) > 1e-8:
            raise ValueError(f"{structure.formula}: {element} has a fractional count {amount}")
        out[element.symbol] = round(amount)
    return out


def crystal_body(
    structure: Structure,
    form: str,
    *,
    translate: bool = False,
    rng: np.random.Generator | None = None,
    site_order: str = "given",
) -> str:
    """The body text of a structure in ``form`` (``"ctl"`` or ``"cif"``).

    ``translate`` and ``site_order`` apply to ctl only (see
    :func:`~matgen.generators.lm.crystal_text.encode_ctl`): a cif body is written from the
    symmetrized standard cell, which no translation changes, in ``CifWriter``'s site order.
    """
    if form == "ctl":
        return encode_ctl(structure, translate=translate, rng=rng, site_order=site_order)
    if form == "cif":
        from matgen.generators.lm.crystal_cif import encode_cif

        return encode_cif(structure)
    raise ValueError(f"unknown crystal text form {form!r}; expected one of {FORMS}")


def properties_from_row(row: Mapping[str, Any]) -> dict[str, float | int]:
    """The conditions of an MP-20 CSV row (see :data:`MP20_COLUMNS`); missing/NaN values are
    left out."""
    out: dict[str, float | int] = {}
    for name, column in MP20_COLUMNS.items():
        value = row.get(column)
        if value is None or (isinstance(value, Real) and not math.isfinite(value)):
            continue
        out[name] = int(value) if name == "spacegroup" else float(value)
    return out


def _keep(
    name: str, drop_prob: float | Mapping[str, float], rng: np.random.Generator | None
) -> bool:
    p = drop_prob.get(name, 0.0) if isinstance(drop_prob, Mapping) else drop_prob
    if p <= 0.0:
        return True
    if rng is None:
        raise ValueError("drop_prob > 0 needs an rng")
    return bool(rng.random() >= p)


def training_text(
    structure: Structure,
    properties: Mapping[str, float | int | None] | None = None,
    *,
    form: str = "ctl",
    drop_prob: float | Mapping[str, float] = 0.0,
    rng: np.random.Generator | None = None,
    translate: bool = False,
    body: str | None = None,
    site_order: str = "given",
) -> str:
    """One training example ``"<bos>PROMPT<gen>BODY<eos>"`` for a structure.

    Args:
        structure: the crystal (its composition is the ``<comp>`` condition).
        properties: values of ``"spacegroup"`` and of :data:`PROPERTY_NAMES`; a missing key, None
            or NaN leaves that field out.
        form: ``"ctl"`` or ``"cif"``.
        drop_prob: probability of leaving out each present condition, one for all or one per
            name of :data:`CONDITIONS` (absent names are never dropped).
        rng: random generator for dropping and translation.
        translate: random translation of the ctl body (ignored for cif).
        body: a precomputed body to use instead of encoding the structure (cif bodies are slow
            to write; cache them).
        site_order: site order of a ctl body (``"given"`` or ``"sorted"``; ignored for cif).

    Raises:
        ValueError: unknown property or condition names, or invalid values (see
            :class:`CrystalPrompt`).
    """
    properties = dict(properties or {})
    unknown = set(properties) - {"spacegroup", *PROPERTY_NAMES}
    if unknown:
        raise ValueError(
            f"unknown properties {sorted(unknown)}; expected spacegroup or one of {PROPERTY_NAMES}"
        )
    if isinstance(drop_prob, Mapping):
        wrong = set(drop_prob) - set(CONDITIONS)
        if wrong:
            raise ValueError(
                f"drop_prob: unknown conditions {sorted(wrong)}; expected {CONDITIONS}"
            )
    if translate and rng is None:
        rng = np.random.default_rng()

    def present(name: str) -> bool:
        value = properties.get(name)
        return value is not None and not (isinstance(value, float) and math.isnan(value))

    prompt = CrystalPrompt(
        composition=_composition(structure) if _keep("composition", drop_prob, rng) else None,
        spacegroup=(
            int(properties["spacegroup"])  # type: ignore[arg-type]
            if present("spacegroup") and _keep("spacegroup", drop_prob, rng)
            else None
        ),
        properties={
            name: float(properties[name])  # type: ignore[arg-type]
            for name in PROPERTY_NAMES
            if present(name) and _keep(name, drop_prob, rng)
        },
    )
    if body is None:
        body = crystal_body(structure, form, translate=translate, rng=rng, site_order=site_order)
    return prompt.example(body)


def infill_example(
    structure: Structure,
    element: str,
    form: str = "ctl",
    *,
    translate: bool = False,
    rng: np.random.Generator | None = None,
    body: str | None = None,
    site_order: str = "given",
) -> str:
    """The masked-element example ``"<bos><infill>BODY_WITH_MASK<gen>ELEMENT<eos>"``.

    Every token of ``element`` in the body becomes ``<mask>`` (in a ctl body, its site lines; in
    a cif body also the formula lines and site labels).

    Raises:
        ValueError: ``element`` is not in the structure.
    """
    from matgen.generators.lm.tokenizer import split_text

    symbols = {site.specie.symbol for site in structure}
    if element not in symbols:
        raise ValueError(f"{element!r} is not an element of {structure.formula}")
    if body is None:
        body = crystal_body(structure, form, translate=translate, rng=rng, site_order=site_order)
    kind = f"crystal-{form}"
    masked = "".join("<mask>" if t == element else t for t in split_text(kind, body))
    return CrystalPrompt(infill=masked).example(element)
