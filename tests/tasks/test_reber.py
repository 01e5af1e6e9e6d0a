"""The (embedded) Reber grammar task against its definition (Hochreiter & Schmidhuber 1997, exp. 1)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest
import torch

from carousel.tasks import ReberTask, build_task
from carousel.tasks.reber import EMBEDDED_REBER, REBER, SYMBOLS, ReberOptions, legal_next

# An independent oracle: the grammars as regular expressions.
_NODE_4 = r"(XT*VP)*(S|XT*VV)"
_REBER = rf"B(TS*X{_NODE_4}|PT*V(V|P{_NODE_4}))E"
REBER_RE = re.compile(rf"^{_REBER}$")
EMBEDDED_RE = re.compile(rf"^B(T{_REBER}T|P{_REBER}P)E$")


def encode(text: str) -> tuple[int, ...]:
    return tuple(SYMBOLS.index(symbol) for symbol in text)


def decode(batch) -> list[str]:
    """The strings of a batch: its inputs, then the last target."""
    strings = []
    for row in range(batch.size):
        steps = int(batch.mask[row].sum())
        symbols = batch.x[row, :steps].argmax(-1).tolist()
        symbols.append(int(batch.y[row, steps - 1, :7].argmax()))
        strings.append("".join(SYMBOLS[s] for s in symbols))
    return strings


@pytest.fixture(scope="module")
def task():
    return ReberTask(seed=1)


def test_the_oracle_accepts_known_strings_and_rejects_others():
    for text in ("BTXSE", "BPVVE", "BTSSXXTVVE", "BPTVPSE", "BTXXVPXVPSE"):
        assert REBER_RE.match(text), text
    for text in ("BTXE", "BPVE", "BTSXVE", "BPVSE"):
        assert not REBER_RE.match(text), text
    assert EMBEDDED_RE.match("BTBTXSETE") and not EMBEDDED_RE.match("BTBTXSEPE")


def test_strings_are_in_the_embedded_grammar_and_both_branches_occur(task):
    strings = decode(task.train_batch(0, 256)) + decode(task.eval_batches()[0])
    assert all(EMBEDDED_RE.match(text) for text in strings)
    branches = Counter(text[1] for text in strings)
    assert set(branches) == {"T", "P"} and 0.35 < branches["T"] / len(strings) < 0.65
    assert min(len(text) for text in strings) >= 9  # BTBTXSETE is among the shortest


def test_the_plain_grammar():
    task = ReberTask(ReberOptions(embedded=False, train_size=64, test_size=64), seed=2)
    strings = decode(task.train_batch(0, 64))
    assert all(REBER_RE.match(text) for text in strings)
    assert not any(EMBEDDED_RE.match(text) for text in strings)


def test_legal_next_symbols_by_hand():
    as_text = [
        {SYMBOLS[s] for s in legal}
        for legal in legal_next(EMBEDDED_REBER, "start", encode("BTBTXSETE"))
    ]
    assert as_text == [{"T", "P"}, {"B"}, {"T", "P"}, {"S", "X"}, {"X", "S"}, {"E"}, {"T"}, {"E"}]
    as_text = [{SYMBOLS[s] for s in legal} for legal in legal_next(REBER, 0, encode("BPVPXVVE"))]
    assert as_text == [
        {"T", "P"},
        {"T", "V"},
        {"P", "V"},
        {"X", "S"},
        {"T", "V"},
        {"P", "V"},
        {"E"},
    ]
    with pytest.raises(ValueError, match="not in the grammar"):
        legal_next(REBER, 0, encode("BTVE"))


def test_inputs_targets_and_legal_marks(task):
    batch = task.train_batch(1, 128)
    assert batch.x.shape[-1] == 7 and batch.y.shape[-1] == 14
    mask = batch.mask
    assert torch.equal(mask, torch.arange(mask.shape[1]) < mask.sum(1, keepdim=True))
    assert bool((batch.x[~mask] == 0).all()) and bool((batch.y[~mask] == 0).all())
    assert bool((batch.x[mask].sum(-1) == 1).all()) and bool(
        (batch.y[mask][:, :7].sum(-1) == 1).all()
    )
    # the target at step t is the input at step t + 1
    inner = mask[:, 1:]
    assert torch.equal(batch.y[:, :-1, :7][inner], batch.x[:, 1:][inner])
    legal, target = batch.y[..., 7:][mask], batch.y[..., :7][mask]
    assert bool((legal >= target).all()), "the next symbol is always legal"
    assert set(legal.sum(-1).tolist()) == {1.0, 2.0}
    # the symbol before last: only the second symbol is legal (the long-lag prediction)
    lengths = mask.sum(1)
    rows = torch.arange(batch.size)
    assert torch.equal(batch.y[rows, lengths - 2, 7:], batch.x[:, 1])


def test_legal_marks_are_exactly_the_continuations_seen_in_a_large_sample(task):
    rng = torch.Generator().manual_seed(0)
    seen = defaultdict(set)
    strings = [task.draw(rng) for _ in range(3000)]
    for string in strings:
        for t in range(1, len(string)):
            seen[string[:t]].add(string[t])
    counts = Counter(string[:t] for string in strings for t in range(1, len(string)))
    checked = 0
    for string in strings[:300]:
        for t, legal in enumerate(legal_next(EMBEDDED_REBER, "start", string)):
            prefix = string[: t + 1]
            assert seen[prefix] <= legal
            if counts[prefix] >= 30:
                assert seen[prefix] == legal
                checked += 1
    assert checked > 1000


def test_training_goes_through_the_fixed_set_in_epochs_of_seeded_orders(task):
    epoch = [s for i in range(4) for s in decode(task.train_batch(i, 64))]
    again = [s for i in range(4, 8) for s in decode(task.train_batch(i, 64))]
    names = ["".join(SYMBOLS[s] for s in string) for string in task.train_strings]
    assert Counter(epoch) == Counter(names) == Counter(again)
    assert epoch != again, "each epoch has its own order"
    # the stream does not depend on how it is cut into batches
    assert decode(task.train_batch(1, 128)) == decode(task.train_batch(2, 64)) + decode(
        task.train_batch(3, 64)
    )


def test_the_test_set_is_fixed_and_separate_from_the_training_set(task):
    (test,) = task.eval_batches()
    assert test.size == 256
    assert not set(decode(test)) & {"".join(SYMBOLS[s] for s in s_) for s_ in task.train_strings}
    assert torch.equal(test.x, build_task("reber", {}, seed=1).eval_batches()[0].x)


def test_batches_are_pure_functions_of_seed_and_index(task):
    again = build_task("reber", {}, seed=1)
    assert torch.equal(task.train_batch(9, 16).y, again.train_batch(9, 16).y)
    assert not torch.equal(task.train_batch(9, 16).x, task.train_batch(10, 16).x)
    assert task.train_strings != ReberTask(seed=2).train_strings


def _perfect(batch):
    """Outputs 0.9 at the legal symbols, 0.1 elsewhere, garbage after the end."""
    output = 0.1 + 0.8 * batch.y[..., 7:]
    return torch.where(batch.mask.unsqueeze(-1), output, torch.rand(output.shape))


def test_correct_means_legal_outputs_above_all_others_at_every_step(task):
    batch = task.train_batch(0, 4)
    output = _perfect(batch)
    assert task.scores(output, batch)["correct"].tolist() == [1, 1, 1, 1]
    # row 1: an illegal output reaches a legal one's level at one step
    step, illegal = 2, int((batch.y[1, 2, 7:] == 0).nonzero()[0])
    output[1, step, illegal] = output[1, step].max()
    # row 2: a legal output drops below an illegal one at its last step
    last = int(batch.mask[2].sum()) - 1
    output[2, last] = torch.where(batch.y[2, last, 7:] > 0, 0.05, 0.1)
    scores = task.scores(output, batch)
    assert scores["correct"].tolist() == [1, 0, 0, 1]
    expected = ((output - batch.y[..., :7]) * batch.mask.unsqueeze(-1)).square().sum((1, 2))
    torch.testing.assert_close(scores["loss"], expected)
    torch.testing.assert_close(task.loss(output, batch), expected.mean())


def test_solved_needs_the_last_epoch_correct_and_no_test_string_wrong():
    task = ReberTask(ReberOptions(train_size=4, test_size=4))
    good = {"loss": torch.full((4,), 3.0), "correct": torch.ones(4)}
    assert task.window == 4
    assert task.solved(good, {"wrong": 0.0})
    assert not task.solved(good, None)
    assert not task.solved(good, {"wrong": 1.0})
    assert not task.solved({k: v[:3] for k, v in good.items()}, {"wrong": 0.0})
    assert not task.solved({**good, "correct": torch.tensor([1.0, 0, 1, 1])}, {"wrong": 0.0})


def test_sampling_with_replacement_draws_training_strings_at_random():
    task = ReberTask(ReberOptions(sampling="replacement"), seed=1)
    names = ["".join(SYMBOLS[s] for s in string) for string in task.train_strings]
    drawn = [s for i in range(40) for s in decode(task.train_batch(i, 64))]
    assert set(drawn) <= set(names)
    assert Counter(drawn[:256]) != Counter(names), "not a pass through the set"
    for name, count in Counter(names).most_common(5):  # each string as often as in the set
        assert abs(drawn.count(name) / len(drawn) - count / len(names)) < 0.02, name
    assert drawn[:64] == decode(
        build_task("reber", {"sampling": "replacement"}, 1).train_batch(0, 64)
    )
    assert decode(task.train_batch(0, 64)) != decode(task.train_batch(1, 64))
    assert task.window == 0  # the rule is judged on the sets, not on the training stream


def test_with_replacement_the_rule_is_judged_on_both_sets_and_the_test_set_scored_at_the_end():
    task = ReberTask(ReberOptions(sampling="replacement"), seed=1)
    test, *training = task.eval_batches()
    assert test.size == 256 and sum(batch.size for batch in training) == 256
    names = ["".join(SYMBOLS[s] for s in string) for string in task.train_strings]
    assert [s for batch in training for s in decode(batch)] == names
    (final,) = task.final_batches()
    assert torch.equal(final.x, test.x) and torch.equal(
        test.x, ReberTask(seed=1).eval_batches()[0].x
    )
    assert task.solved({}, {"wrong": 0.0})
    assert not task.solved({}, {"wrong": 1.0}) and not task.solved({}, None)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sampling": "bootstrap"}, "option 'sampling' must be one of"),
        ({"train_size": 0}, "reber option train_size must be >= 1"),
        ({"test_size": 0}, "reber option test_size must be >= 1"),
        ({"embedded": "yes"}, "embedded.* must be bool"),
    ],
)
def test_bad_options_are_rejected(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_task("reber", options)
