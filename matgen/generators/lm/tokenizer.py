"""Tokenizers of the text generators: a Hugging Face word-level tokenizer with atomic tokens.

One example is ``<bos> PROMPT <gen> BODY <eos>``. The special tokens come first, with fixed ids
(:data:`SPECIAL_TOKENS`: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3,
``<gen>`` = 4, ``<mask>`` = 5, then the condition tokens). The rest of the vocabulary depends on
the kind:

=================  ===========================================================================
kind               body tokens
=================  ===========================================================================
``crystal-ctl``    ``0``..``9``, ``.``, ``-``, space, newline, and the 118 element symbols
``crystal-cif``    the CIF data names of :data:`~matgen.generators.lm.crystal_cif.CIF_KEYWORDS`,
                   the 230 space-group symbols (only right after the H-M data name), the
                   element symbols, and every printable ASCII character
``selfies``        the SELFIES symbols (``[C]``, ``[=O]``, ``[Branch1]``, ...) and ``.`` found
                   in a training corpus
``smiles``         the tokens of the SMILES regular expression of Schwaller et al. (ACS Cent.
                   Sci. 2019) found in a training corpus
=================  ===========================================================================

The two crystal vocabularies are fixed (they also cover every prompt); the two molecule
vocabularies are built from a corpus. A ``tokenizers.Tokenizer`` with a ``WordLevel`` model does
the work: the special tokens are matched first, then a regex ``Split`` pre-tokenizer isolates
the atomic tokens (alternatives tried longest first; any other single character becomes its own
piece and maps to ``<unk>``), and a ``Fuse`` decoder joins tokens with nothing in between, so that
``decode(ids, skip_special_tokens=True)`` gives back the body text exactly. It is wrapped as a
``transformers.PreTrainedTokenizerFast`` and saved with ``save_pretrained(dir)`` (``tokenizer.json``
+ ``tokenizer_config.json``, which records the kind as ``matgen_kind``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from matgen.generators.lm.crystal_text import ELEMENT_SYMBOLS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "CONDITION_TOKENS",
    "KINDS",
    "SPECIAL_TOKENS",
    "body_vocabulary",
    "build_tokenizer",
    "load_tokenizer",
    "split_text",
    "tokenizer_kind",
]

#: Tokenizer kinds.
KINDS: tuple[str, ...] = ("crystal-ctl", "crystal-cif", "selfies", "smiles")
#: Special tokens; token ``SPECIAL_TOKENS[i]`` has id ``i`` in every tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<unk>",
    "<gen>",
    "<mask>",
    "<comp>",
    "<sg>",
    "<e_form>",
    "<band_gap>",
    "<e_hull>",
    "<infill>",
)
#: The special tokens that open a prompt field (never inside a body).
CONDITION_TOKENS: tuple[str, ...] = ("<comp>", "<sg>", "<e_form>", "<band_gap>", "<e_hull>")

_CTL_CHARACTERS = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ".", "-", " ", "\n")
_PRINTABLE = (*(chr(c) for c in range(32, 127)), "\n")
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def _alternation(tokens: Iterable[str]) -> str:
    """A regex alternation of literal tokens, longest first (so ``Sn`` wins over ``S``)."""
    return "|".join(re.escape(t) for t in sorted(set(tokens), key=lambda t: (-len(t), t)))


@cache
def _pattern(kind: str) -> str:
    """The pre-tokenizer pattern of a kind; valid for both Python ``re`` and Oniguruma."""
    any_char = r"[\s\S]"
    elements = _alternation(ELEMENT_SYMBOLS)
    if kind == "crystal-ctl":
        return f"{elements}|{any_char}"
    if kind == "crystal-cif":
        from matgen.generators.lm.crystal_cif import CIF_KEYWORDS, space_group_symbols

        groups = _alternation(space_group_symbols())
        after_hm = re.escape("_symmetry_space_group_name_H-M ")
        return f"{_alternation(CIF_KEYWORDS)}|(?<={after_hm})(?:{groups})|{elements}|{any_char}"
    if kind == "selfies":
        return rf"\[[^\]]*\]|{any_char}"
    if kind == "smiles":
        from matgen.generators.lm.molecule_text import SMILES_PATTERN

        return f"{SMILES_PATTERN}|{any_char}"
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")


@cache
def _compiled(kind: str) -> re.Pattern[str]:
    return re.compile(_pattern(kind))


def split_text(kind: str, text: str) -> list[str]:
    """Split a text into the tokens the tokenizer of ``kind`` gives it (as strings).

    Special tokens written literally (``"<gen>"``) are single tokens; the rest is split by the
    kind's pattern. Runs in Python (``re``) and agrees with the Hugging Face tokenizer.
    """
    pattern = _compiled(kind)
    out: list[str] = []
    for piece in _SPECIAL_SPLIT.split(text):
        if not piece:
            continue
        if piece in SPECIAL_TOKENS:
            out.append(piece)
        else:
            out.extend(pattern.findall(piece))
    return out


def body_vocabulary(kind: str) -> tuple[str, ...]:
    """The fixed body tokens of a crystal kind, in id order (after the special tokens)."""
    if kind == "crystal-ctl":
        tokens: Iterable[str] = (*_CTL_CHARACTERS, *ELEMENT_SYMBOLS)
    elif kind == "crystal-cif":
        from matgen.generators.lm.crystal_cif import CIF_KEYWORDS, space_group_symbols

        tokens = (*_PRINTABLE, *CIF_KEYWORDS, *space_group_symbols(), *ELEMENT_SYMBOLS)
    elif kind in KINDS:
        raise ValueError(f"the {kind!r} vocabulary is built from a corpus, it is not fixed")
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    return tuple(dict.fromkeys(t for t in tokens if t not in SPECIAL_TOKENS))


def _corpus_vocabulary(kind: str, corpus: Iterable[str]) -> tuple[str, ...]:
    """Tokens of a molecule corpus, most frequent first (ties by text)."""
    from matgen.generators.lm.molecule_text import split_selfies, tokenize_smiles

    split = split_selfies if kind == "selfies" else tokenize_smiles
    counts: Counter[str] = Counter()
    for i, text in enumerate(corpus):
        if not isinstance(text, str):
            raise TypeError(f"corpus item {i} is a {type(text).__name__}, not a string")
        for piece in _SPECIAL_SPLIT.split(text):
            if piece and piece not in SPECIAL_TOKENS:
                try:
                    counts.update(split(piece))
                except ValueError as exc:
                    raise ValueError(f"corpus item {i}: {exc}") from None
    if not counts:
        raise ValueError(f"the corpus holds no {kind} tokens")
    return tuple(sorted(counts, key=lambda t: (-counts[t], t)))


def build_tokenizer(kind: str, *, corpus: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Build the tokenizer of a kind.

    Args:
        kind: one of :data:`KINDS`.
        corpus: texts (bodies or full examples with special tokens written literally). Required
            for ``"selfies"`` and ``"smiles"``, whose vocabulary is the set of tokens found in it.
            For the fixed crystal kinds it is optional and only checked: every text must
            tokenize without ``<unk>``.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad/bos/eos/unk/mask`` tokens set, the other special
        tokens registered as extra special tokens, and ``init_kwargs["matgen_kind"] = kind``.

    Raises:
        ValueError: unknown kind, a molecule kind without a corpus, or a crystal-corpus text
            with characters outside the vocabulary (naming the item and the characters).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    if kind.startswith("crystal"):
        body = body_vocabulary(kind)
    elif corpus is None:
        raise ValueError(f"a {kind!r} tokenizer needs a corpus to build its vocabulary from")
    else:
        body = _corpus_vocabulary(kind, corpus)
    vocab = {token: i for i, token in enumerate((*SPECIAL_TOKENS, *body))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_pattern(kind)), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in _NAMED],
        clean_up_tokenization_spaces=False,
        matgen_kind=kind,
    )
    if kind.startswith("crystal") and corpus is not None:
        _check_corpus(tokenizer, kind, corpus)
    return tokenizer


_NAMED = frozenset(("<pad>", "<bos>", "<eos>", "<unk>", "<mask>"))


def _check_corpus(tokenizer: PreTrainedTokenizerFast, kind: str, corpus: Iterable[str]) -> None:
    vocab = tokenizer.get_vocab()
    for i, text in enumerate(corpus):
        unknown = sorted({t for t in split_text(kind, text) if t not in vocab})
        if unknown:
            raise ValueError(
                f"corpus item {i}: {unknown!r} are not in the fixed {kind!r} vocabulary"
            )


def tokenizer_kind(tokenizer: PreTrainedTokenizerFast) -> str:
    """The kind a tokenizer was built for (``init_kwargs["matgen_kind"]``)."""
    kind = tokenizer.init_kwargs.get("matgen_kind")
    if kind not in KINDS:
        raise ValueError(f"not a matgen text tokenizer (matgen_kind is {kind!r})")
    return kind


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``tokenizer.save_pretrained(directory)``.

    Raises:
        FileNotFoundError: no ``tokenizer.json`` in the directory.
        ValueError: the special tokens do not have the fixed ids of :data:`SPECIAL_TOKENS`.
    """
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{directory}: no tokenizer.json")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    vocab = tokenizer.get_vocab()
    wrong = [t for i, t in enumerate(SPECIAL_TOKENS) if vocab.get(t) != i]
    if wrong:
        raise ValueError(
            f"{directory / 'tokenizer.json'}: special tokens {wrong} do not have their fixed ids"
        )
    config = directory / "tokenizer_config.json"
    if "matgen_kind" not in tokenizer.init_kwargs and config.is_file():
        kind = json.loads(config.read_text()).get("matgen_kind")
        if kind is not None:
            tokenizer.init_kwargs["matgen_kind"] = kind
    return tokenizer
