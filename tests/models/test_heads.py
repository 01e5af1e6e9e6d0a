"""Model heads: each one learns its kind of task through the trainer, masks are honoured, and
decoding and sampling agree with teacher-forced scoring."""

from __future__ import annotations

import itertools

import pytest
import torch

from carousel import models
from carousel.models import Classifier, Encoder, LanguageModel, Regressor, Seq2Seq, Tagger
from carousel.nn import Recurrent
from carousel.tasks import TASKS, ModelIO, build_task
from carousel.train import Config, ModelConfig, OptimConfig, TrainConfig, train
from carousel.train.distributed import Context
from carousel.train.loop import evaluate
from tests.toy_tasks import END, START, TOY_TASKS
from tests.train.runs import one_thread  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = {
    # head: (task, its options, model settings, steps, the final test metric that shows skill)
    "regressor": ("adding", {"length": 12, "test_size": 256}, {}, 100, None),
    "classifier": ("toy-sign", {}, {}, 150, ("accuracy", 0.85)),
    "tagger": ("toy-next-sign", {}, {"bidirectional": True}, 150, ("accuracy", 0.9)),
    "language_model": (
        "charlm",
        {"max_chars": 6000, "seq_len": 25, "eval_streams": 4},
        {"hidden_size": 48, "tie_weights": True},
        60,
        None,
    ),
    "seq2seq": ("toy-reverse", {}, {"hidden_size": 48}, 150, ("accuracy", 0.85)),
}


@pytest.mark.parametrize("head", sorted(CASES))
def test_each_head_learns_its_task(head, tmp_path, monkeypatch):
    for name, cls in TOY_TASKS.items():
        monkeypatch.setitem(TASKS, name, cls)
    task_name, task_options, model_settings, steps, skill = CASES[head]
    config = Config(
        task_name,
        task_options,
        model=ModelConfig(**{"hidden_size": 24, **model_settings}),
        optim=OptimConfig(lr=0.01, clip_norm=1.0),
        train=TrainConfig(steps=steps, batch_size=32, eval_every=0, checkpoint_every=steps),
    )
    task = build_task(task_name, task_options, config.train.seed)
    assert task.io.head == head
    torch.manual_seed(config.train.seed)  # the trainer's initial weights
    before = evaluate(models.build(task.io, config.model), task, Context())["loss"]
    summary = train(config, tmp_path / "run", quiet=True)
    after = summary["evaluation"]["loss"]
    assert after < 0.6 * before, f"{head}: test loss {before:.4g} -> {after:.4g}"
    if skill is not None:
        name, threshold = skill
        assert summary["evaluation"][name] > threshold, summary["evaluation"]


def _encoder(input_size=3, hidden=5, vocab=0, bidirectional=False, variant="vanilla"):
    layer = Recurrent(
        input_size, hidden, batch_first=True, bidirectional=bidirectional, variant=variant
    )
    return Encoder(layer, vocab)


@pytest.mark.parametrize("variant", ["vanilla", "1997"])
def test_padding_beyond_the_mask_changes_nothing(variant):
    torch.manual_seed(1)
    lengths = [5, 2, 4]
    x = torch.randn(3, 5, 3)
    mask = torch.arange(5) < torch.tensor(lengths).unsqueeze(1)
    garbage = torch.where(mask.unsqueeze(-1), x, torch.randn(3, 5, 3) * 100)
    regressor = Regressor(_encoder(variant=variant, hidden=4), 2, "sigmoid")
    tagger = Tagger(_encoder(bidirectional=True, variant=variant, hidden=4), 3)
    batched_regression = regressor(garbage, mask)[0]
    batched_tags = tagger(garbage, mask)[0]
    for row, length in enumerate(lengths):
        alone = x[row : row + 1, :length]
        torch.testing.assert_close(batched_regression[row], regressor(alone)[0][0])
        torch.testing.assert_close(batched_tags[row, :length], tagger(alone)[0][0])
    assert bool(((batched_regression > 0) & (batched_regression < 1)).all())


def test_bad_masks_are_rejected():
    model = Classifier(_encoder(), 2)
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="prefix"):
        model(x, torch.tensor([[True, False, True, True], [True, True, True, True]]))
    with pytest.raises(ValueError, match="mask must have"):
        model(x, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        model(x, torch.ones(2, 4))


def _seq2seq(seed=0):
    torch.manual_seed(seed)
    vocab = 2 + 2  # start, end and two symbols
    encoder = _encoder(input_size=4, hidden=6, vocab=vocab)
    decoder = _encoder(input_size=4, hidden=6, vocab=vocab)
    return Seq2Seq(encoder, decoder, START, END).eval()


def test_beam_search_finds_the_exhaustive_best_and_scores_it_exactly():
    model = _seq2seq()
    source = torch.tensor([[2, 3, 3], [3, 2, 2]])
    max_length = 3
    candidates = []  # every output: symbols then END, or max_length symbols
    for length in range(max_length + 1):
        for symbols in itertools.product([2, 3], repeat=length):
            output = (
                list(symbols) + [END] * (max_length - length)
                if length < max_length
                else list(symbols)
            )
            candidates.append(output)
    candidates = torch.tensor(candidates)  # (C, L)
    tokens, scores = model.beam_search(source, beam_width=16, max_length=max_length)
    for row in range(2):
        log_probs = model.log_probability(source[row].expand(len(candidates), -1), candidates)
        best = int(log_probs.argmax())
        assert tokens[row].tolist() == candidates[best].tolist()
        torch.testing.assert_close(scores[row], log_probs[best])
    narrow, narrow_scores = model.beam_search(source, beam_width=2, max_length=max_length)
    torch.testing.assert_close(narrow_scores, model.log_probability(source, narrow))


def test_greedy_is_beam_search_of_width_one():
    model = _seq2seq(seed=3)
    source = torch.randint(2, 4, (5, 4))
    greedy = model.greedy(source, max_length=6)
    beam, _ = model.beam_search(source, beam_width=1, max_length=6)
    assert torch.equal(greedy, beam)


def test_seq2seq_rejects_mismatched_parts():
    with pytest.raises(ValueError, match="states must match"):
        Seq2Seq(_encoder(vocab=4), _encoder(hidden=7, vocab=4), START, END)
    with pytest.raises(ValueError, match="unidirectional"):
        Seq2Seq(_encoder(vocab=4, bidirectional=True), _encoder(vocab=4), START, END)
    with pytest.raises(ValueError, match="end_token"):
        Seq2Seq(_encoder(vocab=4), _encoder(vocab=4), START, 9)


def test_language_model_ties_weights_and_samples_what_a_full_pass_predicts():
    torch.manual_seed(0)
    model = LanguageModel(_encoder(input_size=5, hidden=5, vocab=7), tie_weights=True).eval()
    assert model.decoder.weight is model.encoder.embedding.weight
    prompt = torch.tensor([1, 4, 2])
    generated = model.sample(prompt, 6, temperature=0)
    logits, _ = model(torch.cat([prompt, generated[:-1]]).unsqueeze(0))
    assert torch.equal(logits[0, len(prompt) - 1 :].argmax(-1), generated)
    draws = [model.sample(prompt, 20, 1.0, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_impossible_model_combinations_are_rejected():
    with pytest.raises(ValueError, match="embedding size"):
        LanguageModel(_encoder(input_size=5, hidden=6, vocab=7), tie_weights=True)
    with pytest.raises(ValueError, match="bidirectional"):
        LanguageModel(_encoder(input_size=5, vocab=7, bidirectional=True))
    adding = ModelIO("regressor", 2, 1)
    with pytest.raises(ValueError, match="tie_weights applies to language models"):
        models.build(adding, ModelConfig(tie_weights=True))
    with pytest.raises(ValueError, match="bidirectional does not apply"):
        models.build(ModelIO("language_model", 5, 5, tokens=True), ModelConfig(bidirectional=True))
    with pytest.raises(ValueError, match="batch_first"):
        Encoder(Recurrent(3, 4), 0)


def test_build_makes_every_head():
    config = ModelConfig(hidden_size=8, num_layers=2, dropout=0.1)
    expected = {
        "regressor": Regressor,
        "classifier": Classifier,
        "tagger": Tagger,
        "language_model": LanguageModel,
        "seq2seq": Seq2Seq,
    }
    for head, cls in expected.items():
        tokens = head in ("language_model", "seq2seq")
        io = ModelIO(head, 5, 5, tokens=tokens, start_token=0, end_token=1)
        model = models.build(io, config)
        assert type(model) is cls
        assert model.encoder.layer.dropout == 0.1 and model.encoder.layer.batch_first


def test_initialisers_are_parsed_not_evaluated():
    from carousel.models import parse_init

    model = models.build(
        ModelIO("regressor", 2, 1), ModelConfig(hidden_size=4, init="forget_bias(1.0)")
    )
    layer = model.encoder.layer
    forget = slice(4, 8)  # (i, f, g, o) blocks of 4 rows
    assert torch.equal(layer.bias_ih_l0[forget] + layer.bias_hh_l0[forget], torch.ones(4))
    assert len(parse_init("uniform(0.1), gate_bias('i', [-3, -6])")) == 2
    for bad in ("__import__('os').getcwd()", "uniform(bound)", "print(1)", "uniform(0.1"):
        with pytest.raises(ValueError, match="literal arguments"):
            parse_init(bad)


def test_build_passes_every_cell_option_that_is_set():
    io = ModelIO("regressor", 2, 1)
    config = ModelConfig(hidden_size=4, candidate_activation="identity", cell_bias=False)
    spec = models.build(io, config).encoder.layer.spec
    assert (spec.candidate_activation, spec.cell_bias, spec.output_activation) == (
        "identity", False, "tanh",
    )  # fmt: skip
    spec = models.build(
        io, ModelConfig(variant="1997", output_activation="tanh")
    ).encoder.layer.spec
    assert (spec.output_activation, spec.candidate_activation) == ("tanh", "g1997")
    elman = ModelConfig(variant="elman", hidden_size=4, nonlinearity="relu")
    assert models.build(io, elman).encoder.layer.spec.candidate_activation == "relu"
    with pytest.raises(ValueError, match="variant 'gru' takes the options"):
        models.build(io, ModelConfig(variant="gru", peepholes=True))
