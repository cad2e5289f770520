"""Grammar-constrained decoding of text bodies: logits processors for Hugging Face ``generate``.

:class:`CrystalGrammar` makes every sampled ctl body parse (see
:mod:`matgen.generators.lm.crystal_text`). Before each sampling step it sets to ``-inf`` the score
of every token that cannot continue the body of its row into a valid text:

- **numbers** exactly as the encoder writes them: lattice lengths ``0.5``..``100.0`` Å with one
  decimal, angles ``10``..``170`` integers, fractional coordinates ``0.00``..``0.99``; no leading
  zeros, no signs;
- **a cell with volume**: the angles are chosen so that ``V / abc`` (see
  :func:`~matgen.generators.lm.crystal_text.cell_volume_factor`) is at least
  ``min_volume_factor``; the choice of each angle already excludes values for which no later
  angle would work, and the last digit of the last angle is only offered where the cell exists;
- **separators**: one space between the three numbers of a line, a newline after each line;
- **sites**: an element line (one element token, only from the allowed set) and then a
  coordinates line; with a requested composition, no element beyond its count and ``<eos>`` only
  once every atom is placed; otherwise ``<eos>`` after at least one site, and at most
  ``max_atoms`` sites;
- after ``<eos>``, ``<pad>`` forever;
- optionally (``enforce_validity``), the evaluation suite's validity as far as a left-to-right
  grammar can see it: a free composition may only end (``<eos>``) where it passes the SMACT
  charge-neutrality and electronegativity test (:func:`matgen.data.composition.smact_validity`,
  CDVAE's definition), and while it does not, where one more atom of an element already in it
  would make it pass, only such atoms may follow; the last coordinate of each site may only take
  the values (tenths digit, then hundredths digit) that keep the site at least ``min_distance`` Å
  from every earlier site, periodic images included. Where no value is left (the first two
  coordinates already sit on an earlier atom) or ``max_atoms`` sites are placed without a
  neutral composition, the constraint gives way rather than leave the row without a token,
  and the suite then counts that sample invalid.

Rows are independent. Each row's parser state advances by the tokens appended since the previous
call (one per step), so a step costs O(batch), never a re-parse of the prefix. Masks are cached
by parser state and gathered with one indexing operation.

:class:`FormulaGrammar` constrains the composition field a model writes for itself in
formula-first sampling (element tokens with counts, at most ``max_atoms`` atoms, then ``<gen>``).

:class:`BodyOnlyProcessor` is the minimal processor for the other bodies (cif, SELFIES, SMILES):
no special token but ``<eos>`` inside a body, no empty body, ``<pad>`` after ``<eos>``.

Both serve one ``generate`` call (sampling or greedy search; beam search reorders rows and is not
supported) and fail loudly if they see a token their own mask forbade.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessor

from matgen.generators.lm.crystal_text import ELEMENT_SYMBOLS
from matgen.generators.lm.tokenizer import SPECIAL_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["ANGLE_RANGE", "LENGTH_RANGE", "BodyOnlyProcessor", "CrystalGrammar", "FormulaGrammar"]

#: Lattice lengths the grammar allows, Å (one decimal).
LENGTH_RANGE: tuple[float, float] = (0.5, 100.0)
#: Lattice angles the grammar allows, degrees (integers).
ANGLE_RANGE: tuple[int, int] = (10, 170)

_LENGTHS = tuple(f"{k / 10:.1f}" for k in range(round(LENGTH_RANGE[0] * 10), 1001))
_ANGLES = np.arange(ANGLE_RANGE[0], ANGLE_RANGE[1] + 1)
_COORDS = tuple(f"0.{k:02d}" for k in range(100))

# phases of a ctl body
_LENGTH, _ANGLE, _ELEMENT, _ELEMENT_END, _COORD, _DONE = range(6)


class _Trie:
    """Prefixes of a finite set of strings: the characters that may follow each prefix and
    whether the prefix is itself a member."""

    __slots__ = ("complete", "following")

    def __init__(self, strings: Sequence[str]) -> None:
        following: dict[str, set[str]] = {}
        for s in strings:
            for i in range(len(s)):
                following.setdefault(s[:i], set()).add(s[i])
        self.following = {p: frozenset(c) for p, c in following.items()}
        self.complete = frozenset(strings)


@cache
def _static_trie(name: str) -> _Trie:
    return _Trie(_LENGTHS if name == "length" else _COORDS)


@cache
def _angle_feasibility(min_volume_factor: float) -> np.ndarray:
    """``ok[i, j, k]``: angles ``(_ANGLES[i], _ANGLES[j], _ANGLES[k])`` give ``V/abc`` >= the
    threshold."""
    c = np.cos(np.radians(_ANGLES.astype(np.float64)))
    ca, cb, cg = c[:, None, None], c[None, :, None], c[None, None, :]
    radicand = 1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg
    return np.sqrt(np.clip(radicand, 0.0, None)) >= min_volume_factor


# (processor class, vocabulary, settings) -> (key -> mask id, masks, allowed sets); bounded by the
# number of distinct parser states, a few thousand for ctl bodies
_MASK_STORES: dict[tuple, tuple[dict[object, int], list[torch.Tensor], list[frozenset[int]]]] = {}


@functools.lru_cache(maxsize=1 << 15)
def _angle_trie(min_volume_factor: float, angles: tuple[int, ...]) -> _Trie:
    """The values the next angle may take after ``angles`` (zero to two of them): those for
    which some choice of the remaining angles gives a cell with ``V/abc`` >= the threshold.
    Shared by every grammar in the process (26,083 keys at most)."""
    ok = _angle_feasibility(min_volume_factor)
    idx = [a - ANGLE_RANGE[0] for a in angles]
    if len(idx) == 0:
        valid = ok.any(axis=(1, 2))
    elif len(idx) == 1:
        valid = ok[idx[0]].any(axis=1)
    else:
        valid = ok[idx[0], idx[1]]
    return _Trie([str(a) for a in _ANGLES[valid]])


class _RowwiseProcessor(LogitsProcessor):
    """Shared bookkeeping: where each row's body starts and which tokens were already fed."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, prompt_lengths: int | Sequence[int] | None
    ) -> None:
        vocab = tokenizer.get_vocab()
        wrong = [t for i, t in enumerate(SPECIAL_TOKENS) if vocab.get(t) != i]
        if wrong:
            raise ValueError(f"not a matgen text tokenizer: {wrong} lack their fixed ids")
        self.vocab = vocab
        self.vocab_size = max(vocab.values()) + 1
        self.pad_id, self.eos_id = vocab["<pad>"], vocab["<eos>"]
        self.prompt_lengths = prompt_lengths
        self._starts: list[int] | None = None
        self._consumed = 0
        self._table: torch.Tensor | None = None
        self._vocab_key = tuple(sorted(vocab.items()))

    def _share_masks(self, *settings: object) -> None:
        """Use the mask cache of every processor with this class, vocabulary and ``settings``
        (a generator makes a new processor for each segment of each chunk). Each subclass calls
        this at the end of ``__init__`` with whatever its masks depend on."""
        store = _MASK_STORES.setdefault((type(self), self._vocab_key, settings), ({}, [], []))
        self._mask_index, self._masks, self._sets = store

    # -- subclasses ---------------------------------------------------------------------
    def _new_rows(self, batch: int) -> None:
        raise NotImplementedError

    def _feed(self, row: int, token: int, position: int) -> None:
        raise NotImplementedError

    def _key(self, row: int) -> object:
        raise NotImplementedError

    def _allowed(self, key: object) -> Collection[int]:
        raise NotImplementedError

    # -- machinery ----------------------------------------------------------------------
    def _start(self, batch: int, length: int) -> None:
        lengths = self.prompt_lengths
        if lengths is None:
            starts = [length] * batch
        elif isinstance(lengths, int):
            starts = [lengths] * batch
        else:
            starts = [int(x) for x in lengths]
        if len(starts) != batch:
            raise ValueError(f"{len(starts)} prompt lengths for a batch of {batch} rows")
        if any(not 0 < s <= length for s in starts):
            raise ValueError(f"prompt lengths {starts} do not fit input_ids of length {length}")
        self._starts = starts
        self._consumed = min(starts)
        self._new_rows(batch)

    def _mask_id(self, key: object) -> int:
        index = self._mask_index.get(key)
        if index is None:
            allowed = frozenset(self._allowed(key))
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[sorted(allowed)] = True
            index = self._mask_index[key] = len(self._masks)
            self._masks.append(mask)
            self._sets.append(allowed)
        return index

    def _permits(self, row: int, token: int) -> bool:
        """Whether the row's current mask allows ``token``."""
        return token in self._sets[self._mask_id(self._key(row))]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        if self._starts is None:
            self._start(batch, length)
        elif batch != len(self._starts) or length < self._consumed:
            raise RuntimeError(
                f"{type(self).__name__} serves one generate call on a fixed batch "
                f"(it saw {len(self._starts)} rows, now {batch}); build a new one"
            )
        if length > self._consumed:
            new = input_ids[:, self._consumed :].tolist()
            for row, tokens in enumerate(new):
                start = self._starts[row]
                for offset, token in enumerate(tokens):
                    position = self._consumed + offset
                    if position >= start:
                        self._feed(row, token, position - start)
            self._consumed = length
        ids = [self._mask_id(self._key(row)) for row in range(batch)]
        table = self._table
        if table is None or table.device != scores.device or len(table) != len(self._masks):
            self._table = table = torch.stack(self._masks).to(scores.device)
        allowed = table[torch.tensor(ids, device=scores.device)]
        if scores.shape[-1] != self.vocab_size:
            width = scores.shape[-1]
            if width < self.vocab_size:
                raise ValueError(f"scores have {width} columns for {self.vocab_size} tokens")
            allowed = torch.nn.functional.pad(allowed, (0, width - self.vocab_size))
        return scores.masked_fill(~allowed, float("-inf"))

    def _token_text(self, token: int) -> str:
        for text, index in self.vocab.items():
            if index == token:
                return repr(text)
        return f"id {token}"


class BodyOnlyProcessor(_RowwiseProcessor):
    """Keeps special tokens out of bodies: only body tokens and ``<eos>`` (not as the first body
    token) after ``<gen>``, then ``<pad>`` forever.

    Args:
        tokenizer: a matgen text tokenizer.
        prompt_lengths: where each row's body starts in ``input_ids`` (one for all rows, or per
            row); None: the length of ``input_ids`` at the first call.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_lengths: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__(tokenizer, prompt_lengths)
        special = set(range(len(SPECIAL_TOKENS)))
        self._body = frozenset(i for i in range(self.vocab_size) if i not in special)
        self._empty: list[bool] = []
        self._done: list[bool] = []
        self._share_masks()

    def _new_rows(self, batch: int) -> None:
        self._empty = [True] * batch
        self._done = [False] * batch

    def _feed(self, row: int, token: int, position: int) -> None:
        if self._done[row]:
            if token not in (self.pad_id, self.eos_id):
                raise ValueError(f"row {row}: token {self._token_text(token)} after <eos>")
            return
        if token == self.eos_id and not self._empty[row]:
            self._done[row] = True
        elif token in self._body:
            self._empty[row] = False
        else:
            raise ValueError(
                f"row {row}: token {self._token_text(token)} at body position {position} "
                "is not allowed in a body"
            )

    def _key(self, row: int) -> object:
        return "done" if self._done[row] else ("empty" if self._empty[row] else "body")

    def _allowed(self, key: object) -> Collection[int]:
        if key == "done":
            return [self.pad_id]
        return self._body if key == "empty" else self._body | {self.eos_id}


class _CtlRow:
    """Parser state of one ctl body."""

    __slots__ = (
        "angles",
        "counts",
        "crowded",
        "current",
        "field",
        "frac",
        "lengths",
        "phase",
        "prefix",
        "remaining",
        "sites",
    )

    def __init__(self, remaining: dict[int, int] | None) -> None:
        self.phase = _LENGTH
        self.field = 0  # which of the three numbers of the line
        self.prefix = ""  # characters of the current number so far
        self.lengths: list[float] = []
        self.angles: list[int] = []
        self.sites = 0
        self.remaining = remaining  # element id -> atoms still to place, or None
        self.counts: dict[int, int] = {}  # element token id -> sites written
        self.current: list[float] = []  # completed coordinates of the site being written
        self.frac: list[tuple[float, float, float]] = []  # completed sites
        self.crowded: tuple[object, frozenset[str]] = (None, frozenset())  # last answer


class CrystalGrammar(_RowwiseProcessor):
    """The ctl grammar as a logits processor (see the module docstring for the rules).

    Args:
        tokenizer: a ``crystal-ctl`` tokenizer (digits, ``.``, space and newline single tokens,
            one token per element).
        prompt_lengths: where each row's body starts in ``input_ids`` (one for all rows, or per
            row); None: the length of ``input_ids`` at the first call. Tokens already between the
            start and the end of ``input_ids`` are parsed as a body prefix.
        compositions: per row, the element counts the body must hold exactly (``{"Sr": 1, "Ti":
            1, "O": 3}``) or None for a free composition; None for all rows free.
        max_atoms: at most this many sites per body (None: no limit).
        elements: the elements a free composition may use (default: all 118).
        min_volume_factor: smallest allowed ``V / abc`` of the cell (0 < value < 1).
        enforce_validity: also enforce charge neutrality of free compositions and a minimum
            distance between sites (see the module docstring).
        min_distance: that distance, Å (the suite's structural-validity cutoff).

    Raises:
        ValueError: a tokenizer without the ctl tokens, a composition with an element outside
            ``elements``, a count < 1, or more atoms than ``max_atoms``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_lengths: int | Sequence[int] | None = None,
        *,
        compositions: Sequence[Mapping[str, int] | None] | None = None,
        max_atoms: int | None = None,
        elements: Collection[str] | None = None,
        min_volume_factor: float = 0.1,
        enforce_validity: bool = False,
        min_distance: float = 0.5,
    ) -> None:
        super().__init__(tokenizer, prompt_lengths)
        missing = [t for t in (*"0123456789", ".", " ", "\n") if t not in self.vocab]
        if missing:
            raise ValueError(f"tokenizer lacks the ctl tokens {missing!r}")
        if not 0.0 < min_volume_factor < 1.0:
            raise ValueError(f"min_volume_factor {min_volume_factor} is not in (0, 1)")
        if max_atoms is not None and max_atoms < 1:
            raise ValueError(f"max_atoms {max_atoms} is not >= 1")
        self.max_atoms = max_atoms
        self.min_volume_factor = float(min_volume_factor)
        self._char = {c: self.vocab[c] for c in (*"0123456789", ".", " ", "\n")}
        self._text = {i: t for t, i in self.vocab.items()}
        chosen = ELEMENT_SYMBOLS if elements is None else tuple(elements)
        unknown = sorted(set(chosen) - set(ELEMENT_SYMBOLS))
        if unknown:
            raise ValueError(f"elements: {unknown} are not element symbols")
        absent = sorted(e for e in chosen if e not in self.vocab)
        if absent:
            raise ValueError(f"elements: {absent} are not tokens of this tokenizer")
        self._element_ids = frozenset(self.vocab[e] for e in chosen)
        self._compositions: list[dict[int, int] | None] | None = None
        if compositions is not None:
            self._compositions = [self._check(i, c) for i, c in enumerate(compositions)]
        self._rows: list[_CtlRow] = []
        self.enforce_validity = bool(enforce_validity)
        self.min_distance = float(min_distance)
        self._atomic_number = {
            self.vocab[e]: ELEMENT_SYMBOLS.index(e) + 1 for e in chosen if e in self.vocab
        }
        self._share_masks(self._element_ids, self.max_atoms, self.min_volume_factor)

    def _check(self, row: int, composition: Mapping[str, int] | None) -> dict[int, int] | None:
        if composition is None:
            return None
        out: dict[int, int] = {}
        for element, count in composition.items():
            if element not in self.vocab or self.vocab[element] not in self._element_ids:
                raise ValueError(f"composition of row {row}: element {element!r} is not allowed")
            if int(count) != count or count < 1:
                raise ValueError(f"composition of row {row}: count of {element} is {count}")
            out[self.vocab[element]] = int(count)
        total = sum(out.values())
        if not out:
            raise ValueError(f"composition of row {row} is empty")
        if self.max_atoms is not None and total > self.max_atoms:
            raise ValueError(
                f"composition of row {row} has {total} atoms, more than max_atoms = "
                f"{self.max_atoms}"
            )
        return out

    # -- parser -------------------------------------------------------------------------
    def _new_rows(self, batch: int) -> None:
        if self._compositions is not None and len(self._compositions) != batch:
            raise ValueError(f"{len(self._compositions)} compositions for a batch of {batch} rows")
        self._rows = [
            _CtlRow(None if self._compositions is None else _copy(self._compositions[r]))
            for r in range(batch)
        ]

    def _feed(self, row: int, token: int, position: int) -> None:
        state = self._rows[row]
        phase = state.phase
        if phase == _DONE:
            if token not in (self.pad_id, self.eos_id):
                raise ValueError(f"row {row}: token {self._token_text(token)} after <eos>")
            return
        if not self._permits(row, token):
            raise ValueError(
                f"row {row}: token {self._token_text(token)} at body position {position} breaks "
                f"the ctl grammar (phase {phase}, number so far {state.prefix!r})"
            )
        if token == self.eos_id:
            state.phase = _DONE
            return
        if phase == _ELEMENT:
            if state.remaining is not None:
                state.remaining[token] -= 1
            state.counts[token] = state.counts.get(token, 0) + 1
            state.sites += 1
            state.phase = _ELEMENT_END
            return
        if phase == _ELEMENT_END:
            state.phase, state.field = _COORD, 0
            return
        text = self._text[token]
        if text not in (" ", "\n"):
            state.prefix += text
            return
        # a number is complete
        if phase == _ANGLE:
            state.angles.append(int(state.prefix))
        elif phase == _LENGTH:
            state.lengths.append(float(state.prefix))
        else:
            state.current.append(float(state.prefix))
        state.prefix = ""
        if text == " ":
            state.field += 1
        else:
            state.field = 0
            state.phase = {_LENGTH: _ANGLE, _ANGLE: _ELEMENT, _COORD: _ELEMENT}[phase]
            if phase == _COORD:
                state.frac.append(tuple(state.current))  # type: ignore[arg-type]
                state.current = []

    def _key(self, row: int) -> object:
        state = self._rows[row]
        phase = state.phase
        if phase == _DONE:
            return _DONE
        if phase == _ELEMENT_END:
            return _ELEMENT_END
        if phase == _ELEMENT:
            if state.remaining is None:
                more = self.max_atoms is None or state.sites < self.max_atoms
                end = state.sites > 0
                if end and more and self.enforce_validity and not self._neutral(state.counts):
                    # not neutral yet: no end; one more atom of an element already there, where
                    # one makes it neutral
                    repairs = frozenset(
                        t
                        for t in (state.counts if self._searchable(state.counts) else ())
                        if self._neutral({**state.counts, t: state.counts[t] + 1})
                    )
                    return (_ELEMENT, repairs or None, True, False)
                return (_ELEMENT, None, more, end)
            left = frozenset(e for e, n in state.remaining.items() if n > 0)
            return (_ELEMENT, left, True, not left)
        separator = " " if state.field < 2 else "\n"
        if phase == _ANGLE:
            return (_ANGLE, tuple(state.angles), state.prefix, separator)
        if (
            phase == _COORD
            and self.enforce_validity
            and state.field == 2
            and state.frac
            and state.prefix.startswith("0.")
            and len(state.prefix) < 4
        ):
            return (phase, state.prefix, separator, self._crowded_digits(state))
        return (phase, state.prefix, separator)

    # -- validity ----------------------------------------------------------------------
    def _neutral(self, counts: dict[int, int]) -> bool:
        from matgen.data.composition import reduced_composition, smact_validity

        numbers = [self._atomic_number[t] for t, n in counts.items() for _ in range(n)]
        return smact_validity(*reduced_composition(numbers))

    def _searchable(self, counts: dict[int, int]) -> bool:
        """Whether checking a composition of these elements is cheap: at most 1e5 combinations
        of SMACT oxidation states (the test enumerates them; its limit is 1e7)."""
        from matgen.data.composition import oxidation_combinations

        return oxidation_combinations(tuple(self._atomic_number[t] for t in counts)) <= 100_000

    def _crowded_digits(self, state: _CtlRow) -> frozenset[str]:
        """Digits of the last coordinate (its tenths, or with the tenths chosen its hundredths)
        that would put the site closer than ``min_distance`` to an earlier site, for every
        completion; empty where every digit would (the constraint gives way there)."""
        from matgen.generators.lm.crystal_text import lattice_matrix

        asked = (state.prefix, len(state.frac))
        if state.crowded[0] == asked:
            return state.crowded[1]
        lattice = lattice_matrix(*state.lengths, *state.angles)
        x, y = state.current
        tenths = int(state.prefix[2]) if len(state.prefix) == 3 else None
        z = np.arange(100) / 100.0 if tenths is None else (tenths * 10 + np.arange(10)) / 100.0
        candidates = np.stack([np.full_like(z, x), np.full_like(z, y), z], axis=1)
        delta = candidates[:, None, :] - np.asarray(state.frac)[None, :, :]  # (C, S, 3)
        delta -= np.round(delta)
        images = _IMAGES[None, None, :, :] + delta[:, :, None, :]  # (C, S, 27, 3)
        distance = np.linalg.norm(images @ lattice, axis=-1).min(axis=(1, 2))
        ok = distance >= self.min_distance
        if tenths is None:
            ok = ok.reshape(10, 10).any(axis=1)
        crowded = frozenset(str(d) for d in np.nonzero(~ok)[0]) if ok.any() else frozenset()
        state.crowded = (asked, crowded)
        return crowded

    def _allowed(self, key: object) -> Collection[int]:
        if key == _DONE:
            return (self.pad_id,)
        if key == _ELEMENT_END:
            return (self._char["\n"],)
        assert isinstance(key, tuple)
        if key[0] == _ELEMENT:
            _, left, more, eos = key
            out = set(self._element_ids if left is None else left) if more else set()
            if eos:
                out.add(self.eos_id)
            return out
        if key[0] == _ANGLE:
            _, angles, prefix, separator = key
            trie = _angle_trie(self.min_volume_factor, angles)
        else:
            phase, prefix, separator, *crowded = key
            trie = _static_trie("length" if phase == _LENGTH else "coord")
        out = {self._char[c] for c in trie.following.get(prefix, ())}
        if key[0] == _COORD and crowded:
            out -= {self._char[c] for c in crowded[0]}
        if prefix in trie.complete:
            out.add(self._char[separator])
        return out


_IMAGES = np.array(
    [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=np.float64
)


def _copy(composition: dict[int, int] | None) -> dict[int, int] | None:
    return None if composition is None else dict(composition)


# phases of a formula (the <comp> field written by the model itself)
_F_ELEMENT, _F_COUNT, _F_DONE = range(3)


class _FormulaRow:
    """Parser state of one formula: elements written so far, their total, the count being
    written."""

    __slots__ = ("counts", "current", "phase", "prefix", "total")

    def __init__(self) -> None:
        self.phase = _F_ELEMENT
        self.counts: dict[int, int] = {}  # element token id -> count (completed)
        self.current: int | None = None  # element whose count is being written
        self.prefix = ""  # digits of that count so far
        self.total = 0  # atoms of the completed counts


class FormulaGrammar(_RowwiseProcessor):
    """The composition field a model writes for itself before its structure (formula-first
    sampling): after ``<comp>``, pairs of an element token and its count in the cell, then
    ``<gen>``.

    - each element at most once, only from the allowed set;
    - counts are integers >= 1 without leading zeros, the cell holding at most ``max_atoms``
      atoms in all (a formula that reaches ``max_atoms`` can only end);
    - ``<gen>`` only after at least one complete pair;
    - after ``<gen>``, ``<pad>`` forever.

    So every formula written within ``3 * max_atoms + 1`` tokens is complete, and it is in the
    form the prompts use (``Sr1Ti1O3``), which the structure stage then places atom by atom
    under :class:`CrystalGrammar`. (Validity is not steered token by token here: a row that
    wants to end but may not would add elements; the generator redraws invalid formulas
    instead.)

    Args:
        tokenizer: a matgen crystal tokenizer (element tokens and digits).
        prompt_lengths: where each row's formula starts (after ``<comp>``); None: the length of
            ``input_ids`` at the first call.
        max_atoms: atoms per cell at most (>= 1).
        elements: the elements a formula may use (default: all 118).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_lengths: int | Sequence[int] | None = None,
        *,
        max_atoms: int,
        elements: Collection[str] | None = None,
    ) -> None:
        super().__init__(tokenizer, prompt_lengths)
        if max_atoms < 1:
            raise ValueError(f"max_atoms {max_atoms} is not >= 1")
        missing = [t for t in (*"0123456789", "<gen>") if t not in self.vocab]
        if missing:
            raise ValueError(f"tokenizer lacks the formula tokens {missing!r}")
        chosen = ELEMENT_SYMBOLS if elements is None else tuple(elements)
        absent = sorted(e for e in chosen if e not in self.vocab)
        if absent:
            raise ValueError(f"elements: {absent} are not tokens of this tokenizer")
        self.max_atoms = int(max_atoms)
        self.gen_id = self.vocab["<gen>"]
        self._digit = {self.vocab[d]: d for d in "0123456789"}
        self._element_ids = frozenset(self.vocab[e] for e in chosen)
        self._rows: list[_FormulaRow] = []
        self._share_masks(self._element_ids, self.max_atoms)

    def _new_rows(self, batch: int) -> None:
        self._rows = [_FormulaRow() for _ in range(batch)]

    def _close(self, state: _FormulaRow) -> None:
        if state.current is not None:
            count = int(state.prefix)
            state.counts[state.current] = count
            state.total += count
            state.current, state.prefix = None, ""

    def _feed(self, row: int, token: int, position: int) -> None:
        state = self._rows[row]
        if state.phase == _F_DONE:
            if token not in (self.pad_id, self.gen_id):
                raise ValueError(f"row {row}: token {self._token_text(token)} after <gen>")
            return
        if not self._permits(row, token):
            raise ValueError(
                f"row {row}: token {self._token_text(token)} at formula position {position} "
                f"breaks the formula grammar (count so far {state.prefix!r})"
            )
        if token in self._digit:
            state.prefix += self._digit[token]
            state.phase = _F_COUNT
            return
        self._close(state)
        if token == self.gen_id:
            state.phase = _F_DONE
        else:
            state.current, state.phase = token, _F_COUNT

    def _key(self, row: int) -> object:
        state = self._rows[row]
        if state.phase == _F_DONE:
            return _F_DONE
        total = state.total + (int(state.prefix) if state.prefix else 0)
        if state.phase == _F_COUNT and not state.prefix:
            return (_F_COUNT, "", total, None)  # a count must start
        used = frozenset(state.counts) | ({state.current} if state.current is not None else set())
        following = frozenset() if total >= self.max_atoms else self._element_ids - used
        return (state.phase, state.prefix, total, (following, bool(used)))

    def _allowed(self, key: object) -> Collection[int]:
        if key == _F_DONE:
            return (self.pad_id,)
        assert isinstance(key, tuple)
        phase, prefix, total, then = key
        out: set[int] = set()
        if phase == _F_COUNT:  # digits that keep the count within max_atoms
            base = total - (int(prefix) if prefix else 0)
            for token, digit in self._digit.items():
                if (prefix or digit != "0") and base + int(prefix + digit) <= self.max_atoms:
                    out.add(token)
        if then is not None:  # the count (if any) may end here
            following, end = then
            out |= following
            if end:
                out.add(self.gen_id)
        return out
