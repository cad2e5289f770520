"""Training examples of the text generators as token ids, re-drawn every epoch and batched by
length.

Each example is one text ``<bos> PROMPT <gen> BODY <eos>`` (see ``matgen.generators.lm``). A
:class:`CrystalExamples` source writes a fresh text per epoch: a random translation of the
coordinates, each condition dropped independently, and a share of infilling examples.
:class:`TokenizedExamples` holds one epoch's token ids as one flat array; :class:`LengthBucketSampler`
orders them so that every batch holds sequences of (nearly) the same length, so padding costs
almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "CrystalExamples",
    "ExampleSource",
    "LengthBucketSampler",
    "MoleculeExamples",
    "TokenizedExamples",
    "collate_examples",
]

IGNORE_INDEX = -100


class ExampleSource(Protocol):
    """Writes example ``i`` as text with the randomness of ``rng``."""

    def __len__(self) -> int: ...

    def text(self, i: int, rng: np.random.Generator) -> str: ...


@dataclass
class CrystalExamples:
    """Crystals with their conditions; each call of :meth:`text` draws a new example.

    Attributes:
        structures: the crystals (pymatgen ``Structure``).
        conditions: per crystal, the known prompt values: ``spacegroup`` (int) and the
            property names of ``matgen.generators.lm.prompts.PROPERTY_NAMES`` (missing values
            left out; :func:`~matgen.generators.lm.prompts.properties_from_row`).
        form: ``ctl`` or ``cif``.
        use: prompt fields the model is trained with (``composition``, ``spacegroup``, property
            names); the others are never written.
        drop_prob: probability of dropping each used field independently.
        infill_fraction: share of masked-element (infilling) examples.
        translate: random translation of the fractional coordinates (ctl).
        site_order: site order of ctl bodies, ``"given"`` or ``"sorted"`` (see
            :func:`~matgen.generators.lm.crystal_text.encode_ctl`).
    """

    structures: Sequence[Any]
    conditions: Sequence[dict[str, float]]
    form: str = "ctl"
    use: Sequence[str] = ("composition", "spacegroup", "e_form", "band_gap", "e_hull")
    drop_prob: float = 0.5
    infill_fraction: float = 0.1
    translate: bool = True
    site_order: str = "given"

    def __len__(self) -> int:
        return len(self.structures)

    def text(self, i: int, rng: np.random.Generator) -> str:
        from matgen.generators.lm.prompts import CONDITIONS, infill_example, training_text

        structure = self.structures[i]
        if self.infill_fraction > 0 and rng.random() < self.infill_fraction:
            elements = sorted({site.specie.symbol for site in structure})
            element = elements[int(rng.integers(len(elements)))]
            return infill_example(
                structure,
                element,
                form=self.form,
                translate=self.translate,
                rng=rng,
                site_order=self.site_order,
            )
        drop = {name: (self.drop_prob if name in self.use else 1.0) for name in CONDITIONS}
        return training_text(
            structure,
            self.conditions[i],
            form=self.form,
            drop_prob=drop,
            rng=rng,
            translate=self.translate,
            site_order=self.site_order,
        )


@dataclass
class MoleculeExamples:
    """Molecule strings (SELFIES or SMILES) as ``<bos><gen>BODY<eos>``; nothing is re-drawn."""

    bodies: Sequence[str]

    def __len__(self) -> int:
        return len(self.bodies)

    def text(self, i: int, rng: np.random.Generator) -> str:
        return f"<bos><gen>{self.bodies[i]}<eos>"


class TokenizedExamples(Dataset):
    """One epoch's examples as token ids.

    :meth:`draw` writes every example of epoch ``e`` (random stream seeded by ``(seed, e)``)
    and tokenizes them in one batch call; items are ``int64`` arrays. With ``redraw=False``
    (molecules, validation) the epoch-0 examples are kept for good.

    Args:
        source: writes the texts.
        tokenizer: the model's tokenizer.
        seed: base seed of the augmentation.
        redraw: draw new examples each epoch.
        name: used in messages.
    """

    def __init__(
        self,
        source: ExampleSource,
        tokenizer: Any,
        *,
        seed: int = 0,
        redraw: bool = True,
        name: str = "train",
    ) -> None:
        self.source = source
        self.tokenizer = tokenizer
        self.seed = int(seed)
        self.redraw = bool(redraw)
        self.name = name
        self.epoch: int | None = None
        self.ids = np.zeros(0, dtype=np.int32)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.draw(0)

    def draw(self, epoch: int) -> None:
        """Write and tokenize the examples of ``epoch`` (a no-op when already drawn or when
        ``redraw`` is off after the first draw)."""
        epoch = int(epoch) if self.redraw else 0
        if epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        texts = [self.source.text(i, rng) for i in range(len(self.source))]
        chunks = []
        for lo in range(0, len(texts), 4096):
            encoded = self.tokenizer(texts[lo : lo + 4096], add_special_tokens=False)["input_ids"]
            chunks.extend(np.asarray(ids, dtype=np.int32) for ids in encoded)
        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        self.ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.epoch = epoch

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example, ``(N,)``."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)


class LengthBucketSampler(Sampler[int]):
    """Indices in an order whose consecutive runs of ``batch_size`` have equal or nearly equal
    lengths: sort by (length, random key), cut into batches, shuffle the batches.

    Use it as a DataLoader's ``sampler`` with the same ``batch_size`` (and ``drop_last=False``).
    ``set_epoch`` (called by Lightning before each epoch) re-draws the dataset's examples.
    """

    def __init__(
        self, dataset: TokenizedExamples, batch_size: int, *, shuffle: bool = True, seed: int = 0
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.draw(self.epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self) -> list[np.ndarray]:
        """The batches of the current epoch as index arrays."""
        self.dataset.draw(self.epoch)
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        lengths = self.dataset.lengths
        key = rng.random(len(lengths)) if self.shuffle else np.arange(len(lengths))
        order = np.lexsort((key, lengths))
        batches = [order[lo : lo + self.batch_size] for lo in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        for batch in self.batches():
            yield from batch.tolist()


def collate_examples(
    items: Sequence[np.ndarray],
    *,
    pad_id: int,
    gen_id: int,
    prompt_loss: bool = False,
    infill_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad a batch; the loss covers the tokens after ``<gen>`` (body and ``<eos>``), and
    with ``prompt_loss`` also the prompt after ``<bos>`` (condition tokens and values, ``<gen>``)
    so that the model learns to write its own conditions — a composition first, as CrystaLLM
    writes the formula before the structure. Infilling examples (second token ``infill_id``)
    keep their loss on the answer only.

    Returns:
        ``input_ids`` and ``attention_mask`` ``(B, L)``, and ``labels`` ``(B, L)`` with
        :data:`IGNORE_INDEX` on padding and on the tokens without loss.
    """
    width = max(len(x) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, x in enumerate(items):
        x = np.asarray(x)
        t = torch.from_numpy(x.astype(np.int64))
        ids[row, : len(t)] = t
        mask[row, : len(t)] = 1
        gen = np.flatnonzero(x == gen_id)
        start = int(gen[0]) + 1 if len(gen) else 0
        if prompt_loss and len(gen) and not (len(x) > 1 and x[1] == infill_id):
            start = 1
        labels[row, start : len(t)] = t[start:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
