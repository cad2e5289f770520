"""Text-generator sampling: batched ``generate`` with the key/value cache against one sample at a
time, the same model in the same run (goal: batched >= 10x the samples/s of one at a time).

Two measurements, each printed as new tokens/s and samples/s with the ratio:

1. the generator (``TextCrystalGenerator`` / ``TextMoleculeGenerator``: prompt, grammar,
   decoding), ``chunk = --batch`` against ``chunk = 1``;
2. the bare model, fixed-length bodies (``--tokens`` new tokens, no grammar): batched with the
   cache, one at a time with the cache, one at a time without it.

    python benchmarks/bench_lm_sampling.py                            # random gpt2-mini, ctl
    python benchmarks/bench_lm_sampling.py --model crystal-lm-mp20 --batch 128 --n 256
    python benchmarks/bench_lm_sampling.py --model selfies-lm-moses --device cuda --batch 512
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _random_model(preset_name: str, directory: Path) -> Path:
    """A randomly initialised crystal ctl model directory (max_atoms 20)."""
    from matgen.generators.lm.checkpoint import save_text_lm
    from matgen.generators.lm.model import build_causal_lm, preset
    from matgen.generators.lm.tokenizer import build_tokenizer

    tokenizer = build_tokenizer("crystal-ctl")
    model = build_causal_lm(
        preset(preset_name), len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2, seed=0
    )
    return save_text_lm(model, tokenizer, directory, kind="crystal", form="ctl", max_atoms=20)


def _sample_rate(generator, n: int, chunk: int, seed: int) -> tuple[float, float, int]:
    generator.chunk = chunk
    start = time.perf_counter()
    samples = generator.sample(n, seed=seed)
    seconds = time.perf_counter() - start
    done = len(samples) + len(generator.report.failures)
    return generator.report.new_tokens / seconds, done / seconds, len(generator.report.failures)


@torch.no_grad()
def _raw_rate(lm, rows: int, repeats: int, tokens: int, *, use_cache: bool, device: str) -> float:
    """New tokens/s of plain sampling of exactly ``tokens`` tokens per row."""
    bos = lm.tokenizer.convert_tokens_to_ids("<bos>")
    gen = lm.tokenizer.convert_tokens_to_ids("<gen>")
    ids = torch.tensor([[bos, gen]] * rows, device=device)
    start = time.perf_counter()
    for _ in range(repeats):
        lm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            use_cache=use_cache,
            pad_token_id=0,
        )
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return rows * repeats * tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="text model (name or directory); default: a random one")
    parser.add_argument("--preset", default="gpt2-mini", help="preset of the random model")
    parser.add_argument("--n", type=int, default=128, help="samples, batched")
    parser.add_argument("--n-single", type=int, default=8, help="samples, one at a time")
    parser.add_argument("--batch", type=int, default=128, help="rows per generate call")
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per row (bare model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from matgen.generators.lm.generator import load_text_generator

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or _random_model(args.preset, Path(tmp) / "random")
        generator = load_text_generator(str(source), device=args.device)
        lm = generator.lm
        name = args.model or f"random {args.preset} (ctl, max 20 atoms)"
        params = sum(p.numel() for p in lm.model.parameters())
        print(
            f"model: {name}, {params:,} parameters, {lm.kind}/{lm.form}, device {args.device}, "
            f"{torch.get_num_threads()} thread(s)"
        )
        _sample_rate(generator, min(4, args.n), min(4, args.batch), args.seed)  # warm-up
        batched_runs, single_runs = [], []
        for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
            batched_runs.append(_sample_rate(generator, args.n, args.batch, args.seed))
            single_runs.append(_sample_rate(generator, args.n_single, 1, args.seed))
        b_tok, b_smp, b_fail = max(batched_runs)
        s_tok, s_smp, s_fail = max(single_runs)
        print("\n1. generator (prompt + grammar + decode), same model, same run")
        print(f"{'mode':<36}{'samples':>8}{'tokens/s':>12}{'samples/s':>12}{'failed':>8}")
        print(
            f"{f'batched (chunk {args.batch}), KV cache':<36}{args.n:>8}{b_tok:>12.0f}"
            f"{b_smp:>12.2f}{b_fail:>8}"
        )
        print(
            f"{'one at a time, KV cache':<36}{args.n_single:>8}{s_tok:>12.0f}{s_smp:>12.2f}"
            f"{s_fail:>8}"
        )
        print(
            f"ratio batched / one at a time: {b_smp / s_smp:.1f}x samples/s, "
            f"{b_tok / s_tok:.1f}x tokens/s (goal >= 10x)"
        )

        # bodies fit the model's context: <bos><gen> plus t new tokens
        t = min(args.tokens, int(lm.model.config.max_position_embeddings) - 2)
        batched = single = nocache = 0.0
        for _ in range(args.repeats):
            batched = max(
                batched, _raw_rate(lm, args.batch, 1, t, use_cache=True, device=args.device)
            )
            single = max(single, _raw_rate(lm, 1, 2, t, use_cache=True, device=args.device))
            nocache = max(nocache, _raw_rate(lm, 1, 1, t, use_cache=False, device=args.device))
        print(f"\n2. bare model, {t} new tokens per row, no grammar")
        print(f"{'mode':<36}{'tokens/s':>12}{'samples/s':>12}")
        for label, rate in (
            (f"batched ({args.batch} rows), KV cache", batched),
            ("one at a time, KV cache", single),
            ("one at a time, no cache", nocache),
        ):
            print(f"{label:<36}{rate:>12.0f}{rate / t:>12.2f}")
        print(
            f"ratio batched+cache / one at a time: {batched / single:.1f}x "
            f"(with cache), {batched / nocache:.1f}x (without)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
