"""The ctl grammar processor: it accepts every real MP-20 body, offers exactly the allowed next
tokens, and makes a randomly initialised model's samples (which otherwise almost never parse)
all decode, with the requested composition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from matgen.generators.lm.constrained import BodyOnlyProcessor, CrystalGrammar, FormulaGrammar
from matgen.generators.lm.crystal_text import (
    CrystalTextError,
    cell_volume_factor,
    decode_ctl,
    encode_ctl,
)
from matgen.generators.lm.prompts import CrystalPrompt
from matgen.generators.lm.tokenizer import SPECIAL_TOKENS, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer("crystal-ctl")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def _sample(model, tokenizer, prefix, n, processors, max_new_tokens, seed=0):
    torch.manual_seed(seed)
    batch = tokenizer([prefix] * n, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.5,
            top_k=0,
            max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=0,
            eos_token_id=2,
        )
    width = batch["input_ids"].shape[1]
    return out[:, width:], width


def _allowed(processor, tokenizer, texts):
    """The token strings the processor allows after each text (one row per text)."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    assert len({len(r) for r in rows}) == 1
    ids = torch.tensor(rows)
    scores = processor(ids, torch.zeros(len(rows), len(tokenizer)))
    names = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [{names[i] for i in torch.nonzero(torch.isfinite(s)).flatten().tolist()} for s in scores]


def _tokens(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_random_model_samples_all_parse_with_the_requested_composition(model, tokenizer):
    composition = {"Sr": 1, "Ti": 1, "O": 3}
    prefix = CrystalPrompt(composition=composition).prefix()
    n = 200
    width = len(tokenizer(prefix)["input_ids"])
    grammar = CrystalGrammar(tokenizer, width, compositions=[composition] * n, max_atoms=20)
    ids, _ = _sample(model, tokenizer, prefix, n, [grammar], max_new_tokens=18 + 12 + 5 * 17 + 1)
    bodies = tokenizer.batch_decode(ids, skip_special_tokens=True)
    for row, body in zip(ids.tolist(), bodies, strict=True):
        assert 2 in row, "every row ends with <eos>"
        structure = decode_ctl(body)
        assert structure.composition.as_dict() == {"Sr": 1.0, "Ti": 1.0, "O": 3.0}
        lengths = [float(x) for x in body.split("\n")[0].split()]
        angles = [int(x) for x in body.split("\n")[1].split()]
        assert all(0.5 <= x <= 100.0 for x in lengths)
        assert all(10 <= x <= 170 for x in angles)
        assert cell_volume_factor(*angles) >= 0.1
    assert len(set(bodies)) == n  # and it does sample: temperature 1.5 gives distinct bodies


def test_without_the_grammar_the_same_model_almost_never_parses(model, tokenizer):
    ids, _ = _sample(model, tokenizer, "<bos><gen>", 200, [], max_new_tokens=120)
    parsed = 0
    for body in tokenizer.batch_decode(ids, skip_special_tokens=True):
        try:
            decode_ctl(body)
            parsed += 1
        except CrystalTextError:
            pass
    assert parsed <= 10


def test_free_composition_respects_elements_and_max_atoms(model, tokenizer):
    n = 100
    grammar = CrystalGrammar(tokenizer, 2, max_atoms=3, elements=["Li", "O", "Fe"])
    ids, _ = _sample(model, tokenizer, "<bos><gen>", n, [grammar], max_new_tokens=18 + 12 + 52)
    for body in tokenizer.batch_decode(ids, skip_special_tokens=True):
        structure = decode_ctl(body)
        assert 1 <= len(structure) <= 3
        assert {e.symbol for e in structure.composition} <= {"Li", "O", "Fe"}


def test_grammar_accepts_every_real_mp20_body(mp20_test, tokenizer):
    """Feeding real encoder outputs token by token: each next token is allowed, and only at the
    end is <eos>, with the composition constraint of the structure itself."""
    rows = np.linspace(0, len(mp20_test) - 1, 100).astype(int)
    structures = [mp20_test.structure(int(i)) for i in rows]
    bodies = [encode_ctl(s, translate=True, rng=np.random.default_rng(0)) for s in structures]
    # MP-20's cells are all inside the grammar's ranges
    assert all(max(float(x) for x in b.split("\n")[0].split()) <= 100.0 for b in bodies)
    texts = [f"<bos><gen>{b}<eos>" for b in bodies]
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    length = max(map(len, encoded))
    ids = torch.tensor([e + [0] * (length - len(e)) for e in encoded])
    compositions = [{e.symbol: int(c) for e, c in s.composition.items()} for s in structures]
    grammar = CrystalGrammar(tokenizer, 2, compositions=compositions, max_atoms=20)
    for t in range(2, length):
        scores = grammar(ids[:, :t], torch.zeros(len(texts), len(tokenizer)))
        chosen = scores.gather(1, ids[:, t : t + 1]).flatten()
        assert torch.isfinite(chosen).all(), (t, torch.nonzero(~torch.isfinite(chosen)))
        # the composition forbids <eos> before the last site is complete
        eos_allowed = torch.isfinite(scores[:, 2])
        assert torch.equal(eos_allowed, ids[:, t] == 2)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", set("0123456789")),
        ("0", {"."}),
        ("0.", set("56789")),
        ("10", {"0", "."}),
        ("9", set("0123456789.")),
        ("100", {"."}),
        ("100.", {"0"}),
        ("5.2", {" "}),
        ("5.2 5.2 5.", set("0123456789")),
        ("5.2 5.2 5.2", {"\n"}),
        ("5.2 5.2 5.2\n", set("123456789")),
        ("5.2 5.2 5.2\n17", {"0", " "}),
        ("5.2 5.2 5.2\n170", {" "}),
        ("5.2 5.2 5.2\n90 90 90", {"\n"}),
        ("5.2 5.2 5.2\n90 90 9", set("0123456789")),
        ("5.2 5.2 5.2\n90 90 12", set("0123456789") | {"\n"}),
        ("5.2 5.2 5.2\n90 90 90\n", {"Sr", "O"}),
        ("5.2 5.2 5.2\n90 90 90\nSr", {"\n"}),
        ("5.2 5.2 5.2\n90 90 90\nSr\n", {"0"}),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.", set("0123456789")),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.5", set("0123456789")),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.50", {" "}),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.50 0.50 0.50", {"\n"}),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.50 0.50 0.50\n", {"O"}),
        ("5.2 5.2 5.2\n90 90 90\nSr\n0.50 0.50 0.50\nO\n0.50 0.50 0.00\n", {"<eos>"}),
    ],
)
def test_allowed_next_tokens(tokenizer, body, expected):
    grammar = CrystalGrammar(tokenizer, 2, compositions=[{"Sr": 1, "O": 1}])
    assert _allowed(grammar, tokenizer, [f"<bos><gen>{body}"]) == [expected]


def test_after_eos_only_pad(tokenizer):
    body = "5.2 5.2 5.2\n90 90 90\nO\n0.50 0.50 0.50\n<eos><pad><pad>"
    grammar = CrystalGrammar(tokenizer, 2)
    assert _allowed(grammar, tokenizer, [f"<bos><gen>{body}"]) == [{"<pad>"}]


def test_angles_always_leave_a_cell(tokenizer):
    """The grammar never lets the angles run into a triple without volume: every accepted
    (alpha, beta) has an accepted gamma, and the accepted gammas are exactly those with
    V/abc >= min_volume_factor."""
    from matgen.generators.lm.constrained import _angle_trie

    alphas = _angle_trie(0.3, ()).complete
    assert "10" not in alphas and "90" in alphas  # no beta, gamma give 10° a volume factor 0.3
    for alpha in ("35", "60", "90", "140"):
        for beta in _angle_trie(0.3, (int(alpha),)).complete:
            gammas = {int(g) for g in _angle_trie(0.3, (int(alpha), int(beta))).complete}
            brute = {
                g for g in range(10, 171) if cell_volume_factor(int(alpha), int(beta), g) >= 0.3
            }
            assert gammas and gammas == brute, (alpha, beta)


def test_state_is_incremental(model, tokenizer, monkeypatch):
    """Each generated token is parsed once, not the whole prefix at every step."""
    calls = []
    grammar = CrystalGrammar(tokenizer, 2, max_atoms=2)
    original = grammar._feed
    monkeypatch.setattr(grammar, "_feed", lambda *a: (calls.append(a), original(*a))[1])
    ids, _ = _sample(model, tokenizer, "<bos><gen>", 8, [grammar], max_new_tokens=70)
    steps = ids.shape[1]
    assert len(calls) == 8 * (steps - 1)  # the last sampled token is never fed back


def test_body_prefix_in_the_input_is_parsed(tokenizer):
    prefix = "<bos><gen>5.2 5.2 5.2\n90 90 90\nSr\n0.50 0.50 0.50\n"
    grammar = CrystalGrammar(tokenizer, 2, compositions=[{"Sr": 1, "O": 2}])
    assert _allowed(grammar, tokenizer, [prefix]) == [{"O"}]
    bad = CrystalGrammar(tokenizer, 2, compositions=[{"O": 2}])
    with pytest.raises(ValueError, match=r"row 0: token 'Sr' at body position 21 breaks"):
        _allowed(bad, tokenizer, [prefix])


def test_rows_are_independent(tokenizer):
    grammar = CrystalGrammar(tokenizer, 2, compositions=[{"Sr": 1}, None])
    texts = ["<bos><gen>5.2 5.2 5.2\n90 90 90\n", "<bos><gen>5.2 5.2 5.2\n90 90 120"]
    first, second = _allowed(grammar, tokenizer, texts)
    assert first == {"Sr"} and second == {"\n"}


def test_grammar_errors(tokenizer):
    with pytest.raises(ValueError, match="element 'Xe' is not allowed"):
        CrystalGrammar(tokenizer, compositions=[{"Xe": 1}], elements=["O"])
    with pytest.raises(ValueError, match="has 21 atoms, more than max_atoms = 20"):
        CrystalGrammar(tokenizer, compositions=[{"O": 21}], max_atoms=20)
    with pytest.raises(ValueError, match="count of O is 0"):
        CrystalGrammar(tokenizer, compositions=[{"O": 0}])
    with pytest.raises(ValueError, match="lacks the ctl tokens"):
        CrystalGrammar(build_tokenizer("selfies", corpus=["[C][O]"]))
    grammar = CrystalGrammar(tokenizer, compositions=[{"O": 1}, {"O": 2}])
    with pytest.raises(ValueError, match="2 compositions for a batch of 1 rows"):
        _allowed(grammar, tokenizer, ["<bos><gen>"])
    grammar = CrystalGrammar(tokenizer)
    _allowed(grammar, tokenizer, ["<bos><gen>"])
    with pytest.raises(RuntimeError, match="serves one generate call"):
        _allowed(grammar, tokenizer, ["<bos><gen>", "<bos><gen>"])


def test_body_only_processor_on_selfies(tokenizer):
    selfies = build_tokenizer("selfies", corpus=["[C][C][O]", "[N][=C][Branch1][C][O]"])
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(selfies), n_layer=1, n_embd=32, n_head=2, n_positions=64, eos_token_id=2
    )
    model = GPT2LMHeadModel(config).eval()
    processor = BodyOnlyProcessor(selfies, 2)
    ids, _ = _sample(model, selfies, "<bos><gen>", 100, [processor], max_new_tokens=30)
    specials = set(range(len(SPECIAL_TOKENS)))
    for row in ids.tolist():
        assert row[0] != 2  # no empty body
        end = row.index(2) if 2 in row else len(row)
        assert not specials & set(row[:end])
        assert all(t == 0 for t in row[end + 1 :])
    assert _allowed(BodyOnlyProcessor(selfies, 2), selfies, ["<bos><gen>[C]<eos>"]) == [{"<pad>"}]


# -- validity constraints --------------------------------------------------------------------
_CUBE = "3.0 3.0 3.0\n90 90 90\nO\n0.00 0.00 0.00\nO\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # 3 Å cube, an O at the origin, the next O at x = y = 0: z within 0.5 Å of 0 or 1 is out
        (_CUBE + "0.00 0.00 0.", set("12345678")),
        (_CUBE + "0.00 0.00 0.1", set("789")),
        (_CUBE + "0.00 0.00 0.8", set("0123")),
        # off the axis nothing is crowded
        (_CUBE + "0.00 0.50 0.", set("0123456789")),
        # the first two coordinates are not constrained (only the last one is)
        (_CUBE + "0.0", set("0123456789")),
    ],
)
def test_minimum_distance_removes_crowded_last_digits(tokenizer, body, expected):
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True)
    assert _allowed(grammar, tokenizer, [f"<bos><gen>{body}"]) == [expected]
    free = CrystalGrammar(tokenizer, 2)
    assert _allowed(free, tokenizer, [f"<bos><gen>{body}"]) == [set("0123456789")]


def test_minimum_distance_gives_way_where_every_value_is_crowded(tokenizer):
    # a 0.8 Å cell axis: every z of a second atom at x = y = 0 is within 0.5 Å of the first
    body = "3.0 3.0 0.8\n90 90 90\nO\n0.00 0.00 0.00\nO\n0.00 0.00 0."
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True)
    assert _allowed(grammar, tokenizer, [f"<bos><gen>{body}"]) == [set("0123456789")]


def test_end_only_where_the_composition_is_charge_neutral(tokenizer):
    lattice = "5.2 5.2 5.2\n90 90 90\n"
    na = "Na\n0.00 0.00 0.00\n"
    cl = "Cl\n0.50 0.50 0.50\n"
    cl2 = "Cl\n0.50 0.00 0.00\n"
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True, max_atoms=3)
    (after_na,) = _allowed(grammar, tokenizer, [f"<bos><gen>{lattice}{na}"])
    assert "<eos>" in after_na  # one element: valid
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True, max_atoms=3)
    (after_nacl,) = _allowed(grammar, tokenizer, [f"<bos><gen>{lattice}{na}{cl}"])
    assert "<eos>" in after_nacl and "Fe" in after_nacl
    # Na Cl Cl is not neutral: no end, and the only repair is one more Na
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True, max_atoms=4)
    (after,) = _allowed(grammar, tokenizer, [f"<bos><gen>{lattice}{na}{cl}{cl2}"])
    assert after == {"Na"}
    # at max_atoms the row must be able to end all the same
    grammar = CrystalGrammar(tokenizer, 2, enforce_validity=True, max_atoms=3)
    (full,) = _allowed(grammar, tokenizer, [f"<bos><gen>{lattice}{na}{cl}{cl2}"])
    assert full == {"<eos>"}
    free = CrystalGrammar(tokenizer, 2, max_atoms=4)
    (unconstrained,) = _allowed(free, tokenizer, [f"<bos><gen>{lattice}{na}{cl}{cl2}"])
    assert "<eos>" in unconstrained and "Fe" in unconstrained


def test_random_model_samples_are_valid_under_the_constraints(model, tokenizer):
    from matgen.evaluate.crystal.validity import (
        reduced_composition,
        smact_validity,
        structure_validity,
    )

    n = 100
    elements = ["Li", "Na", "Mg", "Fe", "O", "S", "Cl"]

    def run(enforce):
        grammar = CrystalGrammar(
            tokenizer, 2, max_atoms=6, elements=elements, enforce_validity=enforce
        )
        ids, _ = _sample(model, tokenizer, "<bos><gen>", n, [grammar], 18 + 12 + 6 * 17 + 1)
        out = [decode_ctl(b) for b in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        assert len(out) == n
        return out

    constrained, free = run(True), run(False)
    for s in constrained:
        if len(s) < 6:  # ended by choice: only allowed when neutral
            assert smact_validity(*reduced_composition(s.atomic_numbers)), s.composition
    struct = np.mean([structure_validity(s) for s in constrained])
    comp = np.mean([smact_validity(*reduced_composition(s.atomic_numbers)) for s in constrained])
    struct_free = np.mean([structure_validity(s) for s in free])
    comp_free = np.mean([smact_validity(*reduced_composition(s.atomic_numbers)) for s in free])
    assert struct >= 0.95 and struct > struct_free
    assert comp >= 0.8 and comp > comp_free


# -- formula grammar (formula-first sampling) ---------------------------------------------------
def _formula_counts(text):
    from matgen.generators.crystal.generator import parse_composition

    return parse_composition(text)


def test_formula_grammar_accepts_every_real_mp20_composition(mp20_test, tokenizer):
    """The composition fields of real prompts, fed token by token, are each allowed, and
    <gen> is allowed exactly where a formula is complete."""
    for i in range(0, len(mp20_test), 97):
        structure = mp20_test.structure(i)
        composition = {e.symbol: int(n) for e, n in structure.composition.items()}
        text = CrystalPrompt(composition=composition).text()[len("<comp>") :]
        grammar = FormulaGrammar(tokenizer, 2, max_atoms=20)
        tokens = _tokens(tokenizer, text)
        for k, token in enumerate(tokens):
            (allowed,) = _allowed(grammar, tokenizer, ["<bos><comp>" + "".join(tokens[:k])])
            assert token in allowed, (text, k)
            grammar = FormulaGrammar(tokenizer, 2, max_atoms=20)
        (at_end,) = _allowed(grammar, tokenizer, ["<bos><comp>" + text])
        assert "<gen>" in at_end


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", "elements"),  # an element first, no <gen> yet
        ("Li", set("123456789")),  # a count, no leading zero
        ("Li1", set("0123456789") | {"<gen>", "Fe", "O"}),  # 1 -> 10..19 or the next pair
        ("Li2", set("0") | {"<gen>", "Fe", "O"}),  # 20 is the most, 21 is not
        ("Li20", {"<gen>"}),  # full: it can only end
        ("Li1O", set("123456789")),
        ("Li1O9Fe", set("123456789")),  # 10 + 19 > 20, so one digit only, but 1..9 all fit
        ("Li1O9Fe1", set("0") | {"<gen>"}),  # Fe10 fills the cell; no element left
        ("Li1O19", {"<gen>"}),
    ],
)
def test_formula_grammar_allowed_next_tokens(tokenizer, prefix, expected):
    grammar = FormulaGrammar(tokenizer, 2, max_atoms=20, elements=["Li", "Fe", "O"])
    (allowed,) = _allowed(grammar, tokenizer, ["<bos><comp>" + prefix])
    assert allowed == ({"Li", "Fe", "O"} if expected == "elements" else expected)


def test_random_model_formulas_all_parse_within_the_budget(model, tokenizer):
    n, max_atoms = 200, 12
    grammar = FormulaGrammar(tokenizer, 2, max_atoms=max_atoms)
    gen = tokenizer.convert_tokens_to_ids("<gen>")
    torch.manual_seed(0)
    batch = tokenizer(["<bos><comp>"] * n, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.5,
            top_k=0,
            max_new_tokens=3 * max_atoms + 1,
            logits_processor=LogitsProcessorList([grammar]),
            pad_token_id=0,
            eos_token_id=gen,
        )
    formulas = []
    for row in out[:, 2:].tolist():
        assert gen in row, "every formula ends within 3 * max_atoms + 1 tokens"
        text = tokenizer.decode(row[: row.index(gen)], skip_special_tokens=False)
        counts = _formula_counts(text)
        assert 1 <= sum(counts.values()) <= max_atoms
        assert CrystalPrompt(composition=counts).text() == "<comp>" + text  # the prompt form
        formulas.append(text)
    assert len(set(formulas)) > n // 2
