"""The user-facing text generators: ``TextCrystalGenerator`` and ``TextMoleculeGenerator``.

Both sample a causal LM (:mod:`matgen.generators.lm.checkpoint`) with Hugging Face
``generate``: many rows per batch, prompts left-padded, the key/value cache on, temperature and
nucleus (top-p) sampling. Crystal bodies in the ctl form are constrained token by token by
:class:`~matgen.generators.lm.constrained.CrystalGrammar` (numbers, separators, the requested
composition, at most ``max_atoms`` sites), so every body parses; bodies that do not parse all the
same (the cif form, or a truncated body) are counted in :attr:`SamplingReport.failures`, never
dropped silently. A SELFIES body cut off by the token budget is a valid SELFIES string all the
same: it is decoded and its index listed in :attr:`SamplingReport.truncated`. Requests are checked before sampling starts. The same seed, settings, chunk size
and device give the same samples (:mod:`matgen.generators.lm.sampler`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from matgen.generators.lm.checkpoint import load_text_lm
from matgen.generators.lm.sampler import ParseFailure, SamplingReport, TextSampler

__all__ = [
    "ParseFailure",
    "SamplingReport",
    "TextCrystalGenerator",
    "TextMoleculeGenerator",
    "load_text_generator",
]

# ctl body bound in tokens: "100.0 100.0 100.0\n" + "170 170 170\n", then per site the
# element, "\n" and "0.00 0.00 0.00\n"; then <eos>
_CTL_LATTICE_TOKENS = 18 + 12
_CTL_SITE_TOKENS = 1 + 1 + 15
#: Formula-first sampling with ``enforce_validity``: draws of a formula at most.
FORMULA_ATTEMPTS = 20


def _neutral(counts: dict[str, int]) -> bool:
    """Whether a composition (symbol -> count) passes the SMACT test of the evaluation suite."""
    from pymatgen.core import Element

    from matgen.data.composition import reduced_composition, smact_validity

    numbers = [Element(e).Z for e, n in counts.items() for _ in range(n)]
    return smact_validity(*reduced_composition(numbers))


@dataclass
class TextCrystalGenerator(TextSampler):
    """A crystal language model and how to sample it.

    Attributes:
        lm: the model, tokenizer and card (``kind == "crystal"``).
        device: where sampling runs.
        chunk: crystals per ``generate`` batch.
        max_new_tokens: body token budget (default: the ctl bound for ``max_atoms`` sites, or
            1.25 x the longest training body).
        segment: new tokens per ``generate`` call before finished rows leave the batch.
        report: what the last call produced (:class:`SamplingReport`).
    """

    kind = "crystal"

    # ------------------------------------------------------------------ requests
    def _elements(self) -> set[str]:
        """Elements the model can write: those of its training crystals when the card records
        them, else every element token of the vocabulary."""
        from matgen.generators.lm.crystal_text import ELEMENT_SYMBOLS

        vocab = self.lm.tokenizer.get_vocab()
        known = self.lm.elements or ELEMENT_SYMBOLS
        return {s for s in known if s in vocab}

    def prompt(
        self,
        composition: str | dict[str, int] | None = None,
        spacegroup: int | None = None,
        properties: dict[str, float] | None = None,
    ) -> tuple[str, dict[str, int] | None]:
        """The full prompt text ``<bos>PROMPT<gen>`` and the composition as counts.

        Raises:
            ValueError: a condition the model was not trained with, an unknown element or one
                outside the vocabulary, counts < 1, more atoms than ``max_atoms``, a space group
                outside 1..230, an unknown property.
        """
        from matgen.generators.crystal.generator import parse_composition
        from matgen.generators.lm.prompts import CrystalPrompt

        counts = parse_composition(composition) if isinstance(composition, str) else composition
        trained = set(self.lm.conditions)
        asked = {
            "composition": counts is not None,
            "spacegroup": spacegroup is not None,
            **dict.fromkeys(properties or {}, True),
        }
        untrained = sorted(k for k, on in asked.items() if on and k not in trained)
        if untrained:
            raise ValueError(
                f"condition(s) {', '.join(untrained)} unknown to this model (it was trained "
                f"with: {', '.join(sorted(trained)) or 'no conditions'})"
            )
        if counts is not None:
            outside = sorted(set(counts) - self._elements())
            if outside:
                raise ValueError(
                    f"element(s) {', '.join(outside)} unknown to this model (it knows "
                    f"{len(self._elements())} elements, those of its training crystals)"
                )
        prompt = CrystalPrompt(
            composition=counts,
            spacegroup=spacegroup,
            properties=dict(properties or {}),
            max_atoms=self.lm.max_atoms,
        )
        return prompt.prefix(), counts

    def _max_atoms(self) -> int:
        return int(self.lm.max_atoms or 20)

    def _budget(self, request: dict[str, Any]) -> int:
        if request.get("stage") == "formula":  # element + at most two digits per element
            return 3 * self._max_atoms() + 1
        if self.lm.form == "ctl":
            counts = [request["composition"]] if request.get("composition") else []
            counts += [c for c in request.get("compositions") or () if c]
            sites = max((sum(c.values()) for c in counts), default=self._max_atoms())
            return _CTL_LATTICE_TOKENS + _CTL_SITE_TOKENS * sites + 1
        return int(1.25 * (self.lm.max_body_tokens or 1024))

    def _processors(self, rows: list[int], width: int, request: dict[str, Any]) -> list[Any]:
        from matgen.generators.lm.constrained import (
            BodyOnlyProcessor,
            CrystalGrammar,
            FormulaGrammar,
        )

        if request.get("stage") == "formula":
            return [
                FormulaGrammar(
                    self.lm.tokenizer,
                    width,
                    max_atoms=self._max_atoms(),
                    elements=sorted(self._elements()),
                )
            ]
        if self.lm.form != "ctl":
            return [BodyOnlyProcessor(self.lm.tokenizer, width)]
        counts = request.get("composition")
        per_row = request.get("compositions")
        if per_row is not None:
            compositions = [per_row[r] for r in rows]
        else:
            compositions = [counts] * len(rows) if counts else None
        return [
            CrystalGrammar(
                self.lm.tokenizer,
                width,
                compositions=compositions,
                max_atoms=self.lm.max_atoms,
                elements=sorted(self._elements()),
                enforce_validity=bool(request.get("enforce_validity", False)),
            )
        ]

    def site_order(self) -> str:
        """The site order of the model's ctl training bodies (``"given"`` or ``"sorted"``, from
        its card; ``"given"`` for cards written before the setting existed). Sampled bodies
        decode whatever their order; infilling prompts are written in this order."""
        metadata = self.lm.card.get("metadata") or {}
        return str(metadata.get("site_order") or "given") if self.lm.form == "ctl" else "given"

    def formula_first_available(self) -> bool:
        """Whether the model learned to write its own composition field (trained with
        ``prompt_loss`` on ctl bodies with composition prompts): then free sampling can go
        formula first."""
        metadata = self.lm.card.get("metadata") or {}
        return (
            self.lm.form == "ctl"
            and "composition" in self.lm.conditions
            and bool(metadata.get("prompt_loss", False))
        )

    def _prepare(
        self,
        prompts: list[str],
        request: dict[str, Any],
        *,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[list[str], dict[str, Any]]:
        """Formula-first sampling (``request["formula_first"]``): the model writes each row's
        composition after ``<comp>`` (under :class:`~matgen.generators.lm.constrained.
        FormulaGrammar`), and the structure stage then places exactly those atoms after
        ``<bos><comp>FORMULA<gen>``. With ``enforce_validity`` a formula that fails the SMACT
        test is drawn again (up to :data:`FORMULA_ATTEMPTS` draws in all, the last one kept):
        the formulas then follow the model's own distribution restricted to valid ones, where
        a token-level constraint would push a row that wants to end into adding elements."""
        if not request.get("formula_first"):
            return prompts, request
        import numpy as np

        from matgen.generators.crystal.generator import parse_composition

        stage = {**request, "stage": "formula", "stop": "<gen>"}
        formulas: list[str] = [""] * len(prompts)
        compositions: list[dict[str, int]] = [{}] * len(prompts)
        todo = list(range(len(prompts)))
        for attempt in range(1 + (FORMULA_ATTEMPTS - 1) * bool(request.get("enforce_validity"))):
            stage_seed = int(
                np.random.SeedSequence([seed, 1, attempt]).generate_state(1, np.uint64)[0] >> 1
            )
            written, _ = self._generate(
                ["<bos><comp>"] * len(todo),
                request=stage,
                temperature=temperature,
                top_p=top_p,
                seed=stage_seed,
            )
            for i, formula in zip(todo, written, strict=True):
                formulas[i], compositions[i] = formula, parse_composition(formula)
            if attempt:
                self.report.resampled_formulas += len(todo)
            todo = [i for i in todo if not _neutral(compositions[i])]
            if not todo:
                break
        prompts = [f"<bos><comp>{f}<gen>" for f in formulas]
        return prompts, {**request, "formula_first": False, "compositions": compositions}

    def _decode(self, text: str) -> Any:
        if self.lm.form == "ctl":
            from matgen.generators.lm.crystal_text import decode_ctl

            return decode_ctl(text)
        from matgen.generators.lm.crystal_cif import decode_cif

        return decode_cif(text)

    # ------------------------------------------------------------------ sampling
    def iter_samples(
        self,
        n: int,
        *,
        composition: str | dict[str, int] | None = None,
        spacegroup: int | None = None,
        properties: dict[str, float] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        enforce_validity: bool = False,
        formula_first: bool | None = None,
    ) -> Iterator[list[Any]]:
        """Yield lists of ``Structure`` chunk by chunk (see :meth:`sample`); the request is
        checked before the first chunk is sampled."""
        prompt, counts = self.prompt(composition, spacegroup, properties)
        if enforce_validity and self.lm.form != "ctl":
            raise ValueError(f"enforce_validity needs a ctl model; this one writes {self.lm.form}")
        free = counts is None and spacegroup is None and not properties
        if formula_first is None:
            formula_first = free and self.formula_first_available()
        elif formula_first and not (free and self.formula_first_available()):
            raise ValueError(
                "formula_first needs a free request (no composition, space group or property) "
                "and a ctl model trained with prompt_loss and composition prompts"
            )
        request = {
            "composition": counts,
            "enforce_validity": enforce_validity,
            "formula_first": formula_first,
        }
        return self._run(
            n, lambda i: prompt, request=request, temperature=temperature, top_p=top_p, seed=seed
        )

    def sample(
        self,
        n: int,
        *,
        composition: str | dict[str, int] | None = None,
        spacegroup: int | None = None,
        properties: dict[str, float] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        enforce_validity: bool = False,
        formula_first: bool | None = None,
    ) -> list[Any]:
        """``n`` crystals as pymatgen ``Structure`` objects (fewer only when bodies fail to
        decode: :attr:`report` lists them).

        Args:
            n: number of crystals.
            composition: the cell's composition (``"SrTiO3"`` or ``{"Sr": 1, "Ti": 1, "O": 3}``):
                crystal structure prediction; the grammar places exactly these atoms.
            spacegroup: space group number (1..230) to condition on.
            properties: targets among ``e_form`` (eV/atom), ``band_gap`` (eV), ``e_hull``
                (eV/atom) that the model was trained with.
            temperature: softmax temperature (0: greedy).
            top_p: nucleus sampling mass.
            seed: seeds the run (see the module docstring).
            enforce_validity: let the grammar also enforce charge neutrality and a 0.5 Å
                minimum distance between sites (:class:`~matgen.generators.lm.constrained.
                CrystalGrammar`), and in formula-first sampling draw a formula again where it
                fails the SMACT test; ctl models only. This steers the sampler, not the model:
                the model's own validity is measured without it.
            formula_first: free sampling in two stages, as CrystaLLM writes a formula before
                its structure: the model first writes the cell's composition (the prompt's
                ``<comp>`` field, which it learned when trained with ``prompt_loss``), then the
                structure of exactly that composition. None: on wherever the model can (free
                requests of a model trained with ``prompt_loss``); False: the body alone.

        Raises:
            ValueError: an impossible request, before sampling starts.
        """
        out: list[Any] = []
        for chunk in self.iter_samples(
            n,
            composition=composition,
            spacegroup=spacegroup,
            properties=properties,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            enforce_validity=enforce_validity,
            formula_first=formula_first,
        ):
            out.extend(chunk)
        return out

    @torch.no_grad()
    def infill(
        self, structure: Any, element: str, *, top_k: int | None = 10
    ) -> list[tuple[str, float]]:
        """Candidate elements for the sites of ``element`` (all of them masked at once), ranked.

        The model reads ``<bos><infill>BODY_WITH_MASK<gen>`` and its next-token distribution,
        restricted to element tokens and renormalised, gives :math:`p(\\text{El} \\mid
        \\text{masked crystal})` (Crystal-text-LLM's masked-element task).

        Args:
            structure: a pymatgen ``Structure`` containing ``element``.
            element: the element whose sites are masked.
            top_k: how many candidates to return (None: all).

        Returns:
            ``[(symbol, probability), ...]`` by decreasing probability.

        Raises:
            ValueError: ``element`` is not in the structure.
        """
        from matgen.generators.lm.prompts import infill_example

        present = {site.specie.symbol for site in structure}
        if element not in present:
            raise ValueError(
                f"element {element!r} is not in the structure ({', '.join(sorted(present))})"
            )
        example = infill_example(
            structure, element, form=self.lm.form, site_order=self.site_order()
        )
        prompt = example[: example.rindex("<gen>") + len("<gen>")]
        ids = self.lm.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        logits = self.lm.model(input_ids=ids["input_ids"].to(self.device)).logits[0, -1]
        symbols = sorted(self._elements())
        token_ids = torch.tensor([self._id(s) for s in symbols], device=logits.device)
        probs = torch.softmax(logits.float()[token_ids], dim=0).cpu().tolist()
        ranked = sorted(zip(symbols, probs, strict=True), key=lambda x: -x[1])
        return ranked if top_k is None else ranked[:top_k]


@dataclass
class TextMoleculeGenerator(TextSampler):
    """A SELFIES / SMILES language model and how to sample it (attributes as
    :class:`TextCrystalGenerator`; the body budget is 1.5 x the longest training body)."""

    kind = "molecule"

    def _budget(self, request: dict[str, Any]) -> int:
        return int(1.5 * (self.lm.max_body_tokens or 128))

    def _decodes_prefixes(self) -> bool:
        return self.lm.form == "selfies"  # any SELFIES string decodes to a valid molecule

    def _processors(self, rows: list[int], width: int, request: dict[str, Any]) -> list[Any]:
        from matgen.generators.lm.constrained import BodyOnlyProcessor

        return [BodyOnlyProcessor(self.lm.tokenizer, width)]

    def _decode(self, text: str) -> Any:
        from matgen.generators.lm.molecule_text import decode_molecule

        mol = decode_molecule(text, self.lm.form)
        mol.SetProp("text", text)  # the sampled SELFIES / SMILES
        return mol

    def iter_samples(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[list[Any]]:
        """Yield lists of RDKit ``Mol`` chunk by chunk (see :meth:`sample`)."""
        return self._run(
            n, lambda i: "<bos><gen>", request={}, temperature=temperature, top_p=top_p, seed=seed
        )

    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[Any]:
        """``n`` molecules as RDKit ``Mol`` objects (bodies that fail to decode are listed in
        :attr:`report`).

        Args:
            n: number of molecules.
            temperature: softmax temperature (0: greedy).
            top_p: nucleus sampling mass.
            seed: seeds the run (see the module docstring).
        """
        out: list[Any] = []
        for chunk in self.iter_samples(n, temperature=temperature, top_p=top_p, seed=seed):
            out.extend(chunk)
        return out


def load_text_generator(
    name_or_path: str,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    **settings: Any,
) -> TextCrystalGenerator | TextMoleculeGenerator:
    """The generator class that fits the model's kind (crystal or molecule)."""
    lm = load_text_lm(name_or_path, device=device, dtype=dtype)
    cls = TextCrystalGenerator if lm.kind == "crystal" else TextMoleculeGenerator
    return cls(lm, device=device, **settings)
