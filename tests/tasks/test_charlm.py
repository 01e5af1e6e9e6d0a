"""Character-level language modelling: vocabulary, streams, chunks and resets."""

from __future__ import annotations

import math

import pytest
import torch

from carousel.tasks import CharLMTask, build_task
from carousel.tasks.charlm import CharLMOptions, default_text


def test_default_text_is_pythons_bundled_help_topics():
    task = CharLMTask(CharLMOptions(max_chars=5000))
    text = default_text()[:5000]
    assert len(default_text()) > 100_000
    assert task.vocabulary == sorted(set(text))
    assert task.decode(task.encode(text)) == text


def test_chunks_continue_each_stream_and_targets_are_the_next_character():
    task = CharLMTask(CharLMOptions(max_chars=3000, seq_len=7))
    streams = task.chunks(task.train_ids, 4)  # (4, S + 1)
    count = task.chunk_count(streams)
    batches = [task.train_batch(i, 4) for i in range(count + 1)]
    inputs = torch.cat([b.x[:, : int(b.mask[0].sum())] for b in batches[:count]], dim=1)
    targets = torch.cat([b.y[:, : int(b.mask[0].sum())] for b in batches[:count]], dim=1)
    assert not batches[count - 1].mask.all(), "the last chunk is shorter (masked)"
    assert torch.equal(inputs, streams[:, :-1])
    assert torch.equal(targets, streams[:, 1:])
    assert [bool(b.reset.all()) for b in batches] == [True] + [False] * (count - 1) + [True]
    assert torch.equal(batches[count].x, batches[0].x), "the streams start again"
    # streams are contiguous pieces of the training text
    assert torch.equal(
        streams[1, :-1], task.train_ids[len(streams[0]) - 1 : 2 * (len(streams[0]) - 1)]
    )


def test_validation_set_covers_the_held_out_text():
    task = CharLMTask(CharLMOptions(max_chars=4000, seq_len=9, eval_streams=3))
    batches = task.eval_batches()
    assert len(task.valid_ids) == 4000 - int(4000 * 0.9)
    read = torch.cat([b.x[:, : int(b.mask[0].sum())] for b in batches], dim=1)
    length = (len(task.valid_ids) - 1) // 3
    assert torch.equal(read, task.valid_ids[: 3 * length].view(3, length))
    assert batches[0].reset.all() and not batches[1].reset.any()


def test_loss_and_metrics_count_only_existing_characters():
    task = CharLMTask(CharLMOptions(max_chars=2000, seq_len=5))
    batch = task.eval_batches()[-1]
    vocab = len(task.vocabulary)
    logits = torch.zeros(*batch.x.shape, vocab)  # uniform prediction
    torch.testing.assert_close(task.loss(logits, batch), torch.tensor(math.log(vocab)))
    scores = task.scores(logits, batch)
    assert torch.equal(scores["chars"], batch.mask.sum(1))
    metrics = task.metrics({k: float(v.sum()) for k, v in scores.items()}, batch.size)
    assert metrics["bpc"] == pytest.approx(math.log2(vocab))


def test_text_file_option(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcab" * 200, encoding="utf-8")
    task = build_task("charlm", {"text": str(path), "seq_len": 4})
    assert task.vocabulary == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no such file"):
        build_task("charlm", {"text": str(tmp_path / "missing.txt")})
    with pytest.raises(ValueError, match="too short"):
        build_task("charlm", {"text": str(path), "max_chars": 10})
