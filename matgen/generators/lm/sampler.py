"""Batched, seeded, key/value-cached sampling of a text model with Hugging Face ``generate``:
the machinery shared by :mod:`matgen.generators.lm.generator`'s crystal and molecule generators.

Prompts are left-padded into one batch; ``generate`` samples with temperature and nucleus
(top-p) sampling and the cache on, under the generator's logits processors (the grammar). It runs
in segments of ``segment`` new tokens, after each of which the rows that wrote ``<eos>`` leave the
batch (with their cache rows), so long and short bodies share a batch without the short ones
being computed to the end. Bodies that do not decode are recorded in a :class:`SamplingReport`.

A seed fixes the whole run: segment ``j`` of chunk ``k`` samples with a torch seed that numpy's
``SeedSequence`` derives from ``(seed, k, j)``, inside a forked RNG, so the same seed, settings,
chunk size and device give the same samples and the caller's global RNG is left alone.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from matgen.generators.lm.checkpoint import TextLM, load_text_lm, quiet_transformers
from matgen.generators.lm.kv_cache import GrowingCache

__all__ = ["ParseFailure", "SamplingReport", "TextSampler"]


@dataclass(frozen=True)
class ParseFailure:
    """A sampled body that did not decode: its sample index, text and the decoder's reason."""

    index: int
    text: str
    reason: str


@dataclass
class SamplingReport:
    """What the last call of ``sample`` / ``iter_samples`` produced.

    Attributes:
        requested: samples asked for.
        decoded: samples that decoded (returned).
        failures: samples that did not, with the reason.
        truncated: indices of samples that reached the token budget without ``<eos>`` and were
            decoded as they stood (only for forms where every prefix is a valid text: SELFIES).
        new_tokens: tokens sampled (prompt excluded, padding after ``<eos>`` excluded).
        seconds: wall time of sampling and decoding.
        resampled_formulas: formulas drawn again because they failed the SMACT test
            (formula-first crystal sampling with ``enforce_validity``).
    """

    requested: int = 0
    decoded: int = 0
    failures: list[ParseFailure] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)
    new_tokens: int = 0
    seconds: float = 0.0
    resampled_formulas: int = 0

    @property
    def failure_rate(self) -> float:
        done = self.decoded + len(self.failures)
        return len(self.failures) / done if done else 0.0


@functools.cache
def _cache_name() -> str:
    """The name of the key/value cache in ``generate``'s arguments and output (``cache`` from
    transformers 5.x on, ``past_key_values`` before)."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    names = {f.name for f in dataclasses.fields(GenerateDecoderOnlyOutput)}
    return "cache" if "cache" in names else "past_key_values"


def _chunk_seed(seed: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class TextSampler:
    """Shared machinery: batched, seeded, cached ``generate`` over prompts. Subclasses say
    which processors guard the body, how many tokens it may take and how it decodes."""

    lm: TextLM
    device: str = "cpu"
    chunk: int = 64
    max_new_tokens: int | None = None
    segment: int = 48
    report: SamplingReport = field(default_factory=SamplingReport)

    #: the model kind (``crystal`` or ``molecule``) a subclass samples
    kind: ClassVar[str] = ""

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        **settings: Any,
    ) -> Any:
        """A shipped text model by name, or a model directory, of this sampler's kind."""
        lm = load_text_lm(name_or_path, device=device, dtype=dtype)
        if lm.kind != cls.kind:
            raise ValueError(f"{name_or_path}: a {lm.kind} model, not a {cls.kind} model")
        return cls(lm, device=device, **settings)

    def _id(self, token: str) -> int:
        return int(self.lm.tokenizer.convert_tokens_to_ids(token))

    def _processors(self, rows: list[int], width: int, request: dict[str, Any]) -> list[Any]:
        """The logits processors of one ``generate`` segment; ``rows`` are the indices (in the
        chunk's prompt list) of the rows still in the batch, in batch order."""
        raise NotImplementedError

    def _prepare(
        self,
        prompts: list[str],
        request: dict[str, Any],
        *,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[list[str], dict[str, Any]]:
        """A chance to rewrite a chunk's prompts and request before its bodies are sampled
        (a first sampling stage, e.g. a formula written by the model); by default unchanged."""
        return prompts, request

    def _decode(self, text: str) -> Any:
        raise NotImplementedError

    def _budget(self, request: dict[str, Any]) -> int:
        raise NotImplementedError

    def _decodes_prefixes(self) -> bool:
        """Whether every prefix of a body is itself a valid text (then a body cut off by the
        token budget is decoded and counted in ``report.truncated`` instead of failing)."""
        return False

    @torch.no_grad()
    def _generate(
        self,
        prompts: list[str],
        *,
        request: dict[str, Any],
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[list[str], list[str | None]]:
        """Sample one body per prompt; returns the body texts and, per row, None or the reason
        it is incomplete (no ``<eos>`` within the token budget).

        ``generate`` runs in segments of :attr:`segment` new tokens: after each, the rows that
        wrote ``<eos>`` leave the batch (their key/value cache rows are dropped) and the others
        continue from their cache, so a batch never keeps computing finished rows for long.
        """
        from transformers import LogitsProcessorList

        tokenizer, model = self.lm.tokenizer, self.lm.model
        encoded = tokenizer(
            prompts,
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        ids = encoded["input_ids"].to(self.device)
        mask = encoded["attention_mask"].to(self.device)
        width = ids.shape[1]
        budget = self.max_new_tokens or self._budget(request)
        context = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None
        )
        if context is not None:  # learned positions end there
            budget = min(budget, int(context) - width)
        eos, pad = self._id(request.get("stop", "<eos>")), self._id("<pad>")
        sampling = {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
        if temperature == 0:
            sampling = {"do_sample": False}
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        rows = list(range(len(prompts)))  # batch row -> prompt index
        finished: dict[int, list[int]] = {}
        cache = GrowingCache()
        for part in range(-(-budget // self.segment)):
            steps = min(self.segment, budget - part * self.segment)
            processors = LogitsProcessorList(self._processors(rows, width, request))
            with torch.random.fork_rng(devices=devices), quiet_transformers():
                torch.manual_seed(_chunk_seed(seed, part))
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=steps,
                    use_cache=True,
                    return_dict_in_generate=True,
                    top_k=0,
                    logits_processor=processors,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    bos_token_id=self._id("<bos>"),
                    **{_cache_name(): cache},
                    **sampling,
                )
            bodies = out.sequences[:, width:].cpu().tolist()
            keep = []
            for i, body in enumerate(bodies):
                if eos in body or part * self.segment + steps >= budget:
                    finished[rows[i]] = body
                else:
                    keep.append(i)
            if not keep:
                break
            new = out.sequences.shape[1] - ids.shape[1]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], new))], dim=1)
            index = torch.tensor(keep, device=self.device)
            ids, mask = out.sequences[index], mask[index]
            cache = getattr(out, _cache_name())
            cache.batch_select_indices(index)
            rows = [rows[i] for i in keep]
        texts, problems = [], []
        for i in range(len(prompts)):
            body = finished[i]
            end = body.index(eos) if eos in body else None
            body = body[:end] if end is not None else [t for t in body if t != pad]
            self.report.new_tokens += len(body) + (end is not None)
            texts.append(tokenizer.decode(body, skip_special_tokens=False))
            problems.append(None if end is not None else f"no <eos> within {budget} tokens")
        return texts, problems

    def _run(
        self,
        n: int,
        prompt_of: Any,
        *,
        request: dict[str, Any],
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> Iterator[list[Any]]:
        if n < 1:
            raise ValueError(f"n must be positive, not {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], not {top_p}")
        base = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.report = SamplingReport(requested=n)
        start = time.perf_counter()
        for k, lo in enumerate(range(0, n, self.chunk)):
            hi = min(lo + self.chunk, n)
            prompts = [prompt_of(i) for i in range(lo, hi)]
            chunk_seed = _chunk_seed(base, k)
            prompts, chunk_request = self._prepare(
                prompts, request, temperature=temperature, top_p=top_p, seed=chunk_seed
            )
            bodies, problems = self._generate(
                prompts,
                request=chunk_request,
                temperature=temperature,
                top_p=top_p,
                seed=chunk_seed,
            )
            samples = []
            for i, (body, problem) in enumerate(zip(bodies, problems, strict=True)):
                try:
                    if problem is not None and not self._decodes_prefixes():
                        raise ValueError(problem)
                    samples.append(self._decode(body))
                    if problem is not None:
                        self.report.truncated.append(lo + i)
                except Exception as exc:  # any decoder error is a failed sample, reported
                    self.report.failures.append(ParseFailure(lo + i, body, str(exc)))
            self.report.decoded += len(samples)
            self.report.seconds = time.perf_counter() - start
            yield samples
        if self.report.failures:
            warnings.warn(
                f"{len(self.report.failures)} of {n} sampled bodies did not decode "
                f"(first: {self.report.failures[0].reason}); see the generator's report",
                RuntimeWarning,
                stacklevel=3,
            )
