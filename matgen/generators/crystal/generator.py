"""The user-facing crystal generator: ``CrystalGenerator.load(name).sample(n, ...)``.

Requests are checked before any sampling starts (elements in the vocabulary, atom counts within
``1..max_atoms``, well-formed chemical systems); samples come out as pymatgen ``Structure``
objects in chunks, so a long run hands over finished crystals as it goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from matgen.generators.crystal.checkpoint import load_crystal_diffusion
from matgen.generators.crystal.dataset import CrystalBatch
from matgen.generators.crystal.model import CrystalDiffusion

__all__ = ["CrystalGenerator", "parse_chemsys", "parse_composition"]

_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")


def parse_composition(formula: str) -> dict[str, int]:
    """``"SrTiO3"`` -> ``{"Sr": 1, "Ti": 1, "O": 3}`` (integer counts of one unit cell).

    Raises:
        ValueError: the text is not a formula of element symbols and integer counts.
    """
    from pymatgen.core.periodic_table import Element

    text = formula.replace(" ", "")
    parts = _FORMULA.findall(text)
    if not text or "".join(f"{el}{n}" for el, n in parts) != text:
        raise ValueError(f"malformed composition {formula!r}: use symbols and integer counts")
    counts: dict[str, int] = {}
    for symbol, n in parts:
        if not Element.is_valid_symbol(symbol):
            raise ValueError(f"composition {formula!r}: {symbol!r} is not an element")
        counts[symbol] = counts.get(symbol, 0) + (int(n) if n else 1)
    if any(n == 0 for n in counts.values()):
        raise ValueError(f"composition {formula!r}: zero counts")
    return counts


def parse_chemsys(chemsys: str) -> list[str]:
    """``"Li-Fe-O"`` -> ``["Li", "Fe", "O"]``.

    Raises:
        ValueError: not dash-separated element symbols, or a symbol repeated.
    """
    from pymatgen.core.periodic_table import Element

    symbols = [s.strip() for s in chemsys.split("-")]
    bad = [s for s in symbols if not s or not Element.is_valid_symbol(s)]
    if bad or len(set(symbols)) != len(symbols):
        raise ValueError(
            f"malformed chemical system {chemsys!r}: use distinct element symbols joined by '-', "
            "e.g. Li-Fe-O"
        )
    return symbols


@dataclass
class CrystalGenerator:
    """A crystal diffusion model and how to sample it.

    Attributes:
        model: the network and its processes.
        device: where sampling runs.
        steps: sampler steps (the model's ``T`` when None).
        step_lr: Langevin corrector step on the coordinates (0: none).
        chunk: crystals per sampling batch.
    """

    model: CrystalDiffusion
    device: str = "cpu"
    steps: int | None = None
    step_lr: float = 1e-5
    chunk: int = 256

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        **settings: object,
    ) -> CrystalGenerator:
        """A shipped model by name, or a checkpoint file."""
        model = load_crystal_diffusion(name_or_path, device=device, dtype=dtype)
        return cls(model, device=device, **settings)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ requests
    def _symbols(self) -> list[str]:
        from pymatgen.core.periodic_table import Element

        return [Element.from_Z(z).symbol for z in self.model.elements]

    def _types_of(self, composition: dict[str, int]) -> list[int]:
        symbols = self._symbols()
        missing = sorted(set(composition) - set(symbols))
        if missing:
            raise ValueError(
                f"element(s) {', '.join(missing)} outside the model's vocabulary of "
                f"{len(symbols)} elements"
            )
        types = [symbols.index(el) for el, n in composition.items() for _ in range(n)]
        if not 1 <= len(types) <= self.model.config.max_atoms:
            raise ValueError(
                f"{len(types)} atoms requested; the model supports 1..{self.model.config.max_atoms}"
            )
        return types

    # ------------------------------------------------------------------ sampling
    def iter_samples(
        self,
        n: int,
        *,
        composition: str | Sequence[str] | None = None,
        n_atoms: int | Sequence[int] | None = None,
        chemsys: str | None = None,
        properties: dict[str, float] | None = None,
        guidance: float = 0.0,
        seed: int | None = None,
    ) -> Iterator[list]:
        """Yield lists of ``Structure`` chunk by chunk (see :meth:`sample`)."""
        if n < 1:
            raise ValueError(f"n must be positive, not {n}")
        allowed = None
        if chemsys is not None:
            if composition is not None:
                raise ValueError("give a composition or a chemical system, not both")
            elements = parse_chemsys(chemsys)
            self._types_of(dict.fromkeys(elements, 1))  # every element in the vocabulary
            symbols = self._symbols()
            allowed = torch.tensor([s in elements for s in symbols], device=self.device)
        known = self.model.conditioner.names if self.model.conditioner is not None else ()
        unknown = sorted(set(properties or {}) - set(known))
        if unknown:
            raise ValueError(
                f"property condition(s) {', '.join(unknown)} unknown to this model "
                f"(it was trained on: {', '.join(known) or 'none'})"
            )
        max_atoms = self.model.config.max_atoms
        if composition is not None:
            formulas = [composition] * n if isinstance(composition, str) else list(composition)
            if len(formulas) != n:
                raise ValueError(f"{len(formulas)} compositions for {n} samples")
            per_sample = [self._types_of(parse_composition(f)) for f in formulas]
        else:
            per_sample = None
            if n_atoms is not None:
                sizes = [n_atoms] * n if isinstance(n_atoms, int) else list(n_atoms)
                bad = [s for s in sizes if not 1 <= int(s) <= max_atoms]
                if bad or len(sizes) != n:
                    raise ValueError(
                        f"atom counts must number {n} and lie in 1..{max_atoms}: got {bad or sizes}"
                    )
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
        if per_sample is None and n_atoms is None:
            sizes = self.model.sample_atom_counts(n, generator=generator).tolist()
        for lo in range(0, n, self.chunk):
            hi = min(lo + self.chunk, n)
            if per_sample is not None:
                chunk_types = per_sample[lo:hi]
                counts = torch.tensor([len(t) for t in chunk_types])
                types = torch.tensor([z for t in chunk_types for z in t])
            else:
                counts, types = torch.tensor(sizes[lo:hi]), None
            B = len(counts)
            conditioned = self.model.config.chemsys_condition and allowed is not None
            out = self.model.sample_tensors(
                counts,
                types=types,
                steps=self.steps,
                step_lr=self.step_lr,
                generator=generator,
                allowed_types=allowed,
                properties={
                    k: torch.full((B,), float(v), device=self.device)
                    for k, v in (properties or {}).items()
                }
                or None,
                chemsys=allowed.float().expand(B, -1) if conditioned else None,
                guidance=guidance,
            )
            yield self.to_structures(out)

    def sample(
        self,
        n: int,
        *,
        composition: str | Sequence[str] | None = None,
        n_atoms: int | Sequence[int] | None = None,
        chemsys: str | None = None,
        properties: dict[str, float] | None = None,
        guidance: float = 0.0,
        seed: int | None = None,
    ) -> list:
        """``n`` crystals as pymatgen ``Structure`` objects.

        Args:
            n: number of crystals.
            composition: a formula per crystal (or one for all): crystal structure prediction.
            n_atoms: atoms per crystal for de novo generation; drawn from the training
                histogram when None.
            chemsys: de novo crystals within a chemical system (``"Li-Fe-O"``): every
                generated type is drawn from its elements only (and a model trained with
                chemical-system conditions is conditioned on it too).
            properties: target values of the model's scalar conditions, e.g.
                ``{"band_gap": 1.5}``.
            guidance: classifier-free guidance weight for the conditions.
            seed: seeds the whole run; the same seed, settings and device repeat the samples.

        Raises:
            ValueError: an impossible request, before sampling starts.
        """
        out: list = []
        chunks = self.iter_samples(
            n,
            composition=composition,
            n_atoms=n_atoms,
            chemsys=chemsys,
            properties=properties,
            guidance=guidance,
            seed=seed,
        )
        for chunk in chunks:
            out.extend(chunk)
        return out

    def to_structures(self, batch: CrystalBatch) -> list:
        """Sampled tensors as ``Structure`` objects (degenerate ones too: the evaluation suite
        flags them)."""
        from pymatgen.core import Lattice, Structure

        elements = np.asarray(self.model.elements)
        K = len(elements)
        types = batch.types.cpu().numpy()
        frac = batch.frac.detach().double().cpu().numpy()
        lattice = batch.lattice.detach().double().cpu().numpy()
        offsets = np.concatenate([[0], np.cumsum(batch.n_atoms.cpu().numpy())])
        structures = []
        for b in range(len(offsets) - 1):
            lo, hi = offsets[b], offsets[b + 1]
            species = elements[np.clip(types[lo:hi], 0, K - 1)].tolist()
            structures.append(
                Structure(Lattice(lattice[b]), species, frac[lo:hi], coords_are_cartesian=False)
            )
        return structures
