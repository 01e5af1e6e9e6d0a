"""Token-type tagging of Python source: the tags, the files and their split, chunks, batches and
metrics."""

from __future__ import annotations

import io
import keyword
import math
import sysconfig
import tokenize
from pathlib import Path

import pytest
import torch

import carousel.tasks
from carousel.tasks.pytokens import (
    TAG_CODES,
    TAGS,
    UNKNOWN,
    PyTokensOptions,
    PyTokensTask,
    default_source_dir,
    read_source,
    render,
    tag_f1,
    tag_source,
)


def test_tags_of_a_hand_written_snippet():
    source = 'def f(x=1):  # hi\n    return (x,\n            "s")\n\nmatch = None\n'
    expected = (
        "kkk.nonodoo..ccccE"  # def f(x=1):  # hi
        "....kkkkkk.onoe"  # return (x,   <- the line break inside brackets is NL
        "............sssoE"  #  "s")
        "e"  # blank line
        "nnnnn.o.kkkkE"  # a soft keyword stays a name; None is a keyword
    )
    assert render(tag_source(source)) == expected


def test_continuations_fstrings_comments_and_a_missing_final_newline():
    source = 'x = 1 + \\\n    2\n# only a comment\ny = f"a{x!r:>{w}}b"'
    expected = "n.o.d.o..." + "....dE" + "c" * 16 + "e" + "n.o." + "s" * 15
    assert render(tag_source(source)) == expected
    assert len(expected) == len(source)


def test_tags_agree_with_tokenize_on_a_standard_library_file():
    path = default_source_dir() / "tokenize.py"
    text = read_source(path)
    tags = tag_source(text)
    assert tags.shape == (len(text),) and tags.dtype == torch.long
    covered = torch.zeros(len(text), dtype=torch.bool)
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    expected_tag = {"OP": "op", "NUMBER": "number", "STRING": "string", "COMMENT": "comment"}
    expected_tag.update(NEWLINE="newline", NL="nl")
    checked = 0
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        kind = tokenize.tok_name[token.type]
        start = starts[token.start[0] - 1] + token.start[1]
        stop = starts[token.end[0] - 1] + token.end[1]
        if kind == "NAME":
            label = "keyword" if keyword.iskeyword(token.string) else "name"
        elif kind in expected_tag:
            label = expected_tag[kind]
        else:
            continue
        assert text[start:stop] == token.string
        assert set(tags[start:stop].tolist()) == {TAGS.index(label)}, token
        covered[start:stop] = True
        checked += 1
    assert checked > 1000
    assert (tags[~covered] == TAGS.index("space")).all()
    assert set(text[i] for i in torch.nonzero(~covered).flatten().tolist()) <= set(" \\\n\x0c")


def _write_sources(directory: Path, count: int = 10) -> list[str]:
    """``count`` readable modules of 90-220 bytes, a broken one, a too large one, a text file."""
    names = []
    for k in range(count):
        body = f'"""Module {k}."""\n\nVALUE_{k} = {k} * 2  # {chr(0x410 + k)}\n\n\ndef f{k}(x):\n'
        body += f"    return [x, {k}.5, 'é' if x else None]\n" * (1 + k % 4)
        (directory / f"m{k:02d}.py").write_text(body, encoding="utf-8")
        names.append(f"m{k:02d}.py")
    (directory / "broken.py").write_text('x = """never closed\n' + "y = 1\n" * 40)
    (directory / "huge.py").write_text("z = 1\n" * 400)
    (directory / "notes.txt").write_text("not python " * 40)
    return names


def _task(directory: Path, seed: int = 0, **options) -> PyTokensTask:
    settings = {"source_dir": str(directory), "min_bytes": 50, "max_bytes": 1500, "seq_len": 16}
    return PyTokensTask(PyTokensOptions(**{**settings, **options}), seed)


def test_files_are_split_by_file_disjoint_and_covering(tmp_path):
    names = _write_sources(tmp_path)
    task = _task(tmp_path)
    assert task.skipped == ["broken.py"]
    split = {name: [source.name for source in task.files[name]] for name in task.files}
    assert [len(split[name]) for name in ("test", "valid", "train")] == [2, 1, 7]
    assert sorted(split["test"] + split["valid"] + split["train"]) == names
    assert not set(split["test"]) & set(split["train"]) and not set(split["valid"]) & set(
        split["train"] + split["test"]
    )
    for source in task.files["train"]:
        assert source.text == (tmp_path / source.name).read_text(encoding="utf-8")
        assert torch.equal(source.tags, tag_source(source.text))
    # the split depends on split_seed only, not on the training seed
    assert [s.name for s in _task(tmp_path, seed=7).files["test"]] == split["test"]
    other = _task(tmp_path, split_seed=3)
    assert [s.name for s in other.files["test"] + other.files["valid"]] != split["test"] + split[
        "valid"
    ]
    limited = _task(tmp_path, max_files=5)
    assert sum(len(files) for files in limited.files.values()) == 5


def test_vocabulary_comes_from_the_training_files_only(tmp_path):
    _write_sources(tmp_path)
    task = _task(tmp_path)
    train_chars = set("".join(source.text for source in task.files["train"]))
    assert task.vocabulary == [UNKNOWN, *sorted(train_chars)]
    for source in task.files["test"]:  # each file has a letter of its own in a comment
        own = chr(0x410 + int(source.name[1:3]))
        assert own in source.text and own not in task.vocabulary
        assert int(task.encode(own)) == 0
    ids = task.encode("ŋx = 'é'")
    assert ids[0] == 0 and ids[1] == task.vocabulary.index("x")
    assert task.decode(ids) == "<unk>x = 'é'"
    assert task.io.head == "tagger" and task.io.tokens
    assert task.io.input_size == len(task.vocabulary) and task.io.output_size == len(TAGS)
    rare = _task(tmp_path, min_count=1000)
    assert rare.vocabulary == [UNKNOWN] and bool((rare.encode("x = 1") == 0).all())


def test_chunks_cut_each_file_and_test_batches_cover_the_test_files(tmp_path):
    _write_sources(tmp_path)
    task = _task(tmp_path, eval_batch_size=5)
    for split, sources in task.files.items():
        chunks = task.chunks[split]
        assert int(chunks.lengths.max()) <= 16 and int(chunks.lengths.min()) >= 1
        for file_index, source in enumerate(sources):
            rows = [r for r, (f, _) in enumerate(chunks.origin) if f == file_index]
            starts = [chunks.origin[r][1] for r in rows]
            assert starts == list(range(0, len(source.text), 16))
            ids = torch.cat([chunks.ids[r, : chunks.lengths[r]] for r in rows])
            tags = torch.cat([chunks.tags[r, : chunks.lengths[r]] for r in rows])
            assert torch.equal(ids, task.encode(source.text))
            assert torch.equal(tags, source.tags)
    batches = task.test_batches()
    assert all(batch.size <= 5 for batch in batches)
    flat = torch.cat([batch.y[batch.mask] for batch in batches])
    assert torch.equal(flat, torch.cat([source.tags for source in task.files["test"]]))
    valid = torch.cat([batch.x[batch.mask] for batch in task.eval_batches()])
    assert torch.equal(valid, torch.cat([task.encode(s.text) for s in task.files["valid"]]))


def test_training_batches_are_seeded_epochs_of_the_training_chunks(tmp_path):
    _write_sources(tmp_path)
    task = _task(tmp_path)
    chunks = task.chunks["train"]
    count = len(chunks.lengths)
    chunks.ids[:, 0] = torch.arange(count)  # mark each chunk with its row
    batch_size = 3
    rows = []
    for index in range(-(-count // batch_size) + 1):  # an epoch and a bit
        batch = task.train_batch(index, batch_size)
        chosen = batch.x[:, 0]
        assert torch.equal(batch.mask.sum(1), chunks.lengths[chosen])
        steps = batch.mask.shape[1]
        assert steps == int(chunks.lengths[chosen].max())
        assert torch.equal(batch.x, chunks.ids[chosen, :steps])
        assert torch.equal(batch.y, chunks.tags[chosen, :steps])
        rows += chosen.tolist()
    assert sorted(rows[:count]) == list(range(count)), "every chunk once per epoch"
    assert rows[count : 2 * count] != rows[: len(rows) - count], "each epoch has its order"
    again = _task(tmp_path)
    for index in (0, 5, 40):
        first, second = task.train_batch(index, 4), again.train_batch(index, 4)
        assert torch.equal(first.y, second.y) and torch.equal(first.mask, second.mask)
    reseeded = _task(tmp_path, seed=1)
    assert not torch.equal(reseeded.train_batch(0, 8).y, again.train_batch(0, 8).y)


def test_metrics_match_scikit_learn_and_add_over_batches(tmp_path):
    metrics_module = pytest.importorskip("sklearn.metrics")
    _write_sources(tmp_path)
    task = _task(tmp_path, eval_batch_size=4)
    batches = task.test_batches()
    assert len(batches) > 1
    rng = torch.Generator().manual_seed(1)
    totals, true, predicted = {}, [], []
    for batch in batches:
        logits = torch.randn(*batch.y.shape, len(TAGS), generator=rng)
        logits[..., TAGS.index("string")] += 1.0
        for name, value in task.scores(logits, batch).items():
            assert value.shape == (batch.size,)
            totals[name] = totals.get(name, 0.0) + float(value.sum())
        true.append(batch.y[batch.mask])
        predicted.append(logits.argmax(-1)[batch.mask])
    true, predicted = torch.cat(true).numpy(), torch.cat(predicted).numpy()
    metrics = task.metrics(totals, sum(b.size for b in batches))
    assert metrics["accuracy"] == pytest.approx(metrics_module.accuracy_score(true, predicted))
    assert metrics["macro_f1"] == pytest.approx(
        metrics_module.f1_score(true, predicted, average="macro")
    )
    per_tag = tag_f1(totals)
    labels = sorted(set(true) | set(predicted))
    reference = metrics_module.f1_score(true, predicted, labels=labels, average=None)
    for label, value in zip(labels, reference, strict=True):
        assert per_tag[TAGS[label]] == pytest.approx(value)
    uniform = torch.zeros(*batches[0].y.shape, len(TAGS))
    assert float(task.loss(uniform, batches[0])) == pytest.approx(math.log(len(TAGS)))


def test_options_are_checked(tmp_path):
    _write_sources(tmp_path)
    with pytest.raises(ValueError, match="seq_len"):
        _task(tmp_path, seq_len=0)
    with pytest.raises(ValueError, match="test_fraction"):
        _task(tmp_path, test_fraction=1.5)
    with pytest.raises(ValueError, match="valid_fraction \\+ test_fraction"):
        _task(tmp_path, valid_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="min_bytes"):
        _task(tmp_path, min_bytes=900, max_bytes=800)
    with pytest.raises(ValueError, match="no such directory"):
        _task(tmp_path / "missing")
    with pytest.raises(ValueError, match="need at least 3"):
        _task(tmp_path, max_files=2)


def test_default_files_come_from_the_standard_library(monkeypatch):
    task = carousel.tasks.build_task("pytokens", {"max_files": 4, "max_bytes": 6000}, seed=0)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert task.source_dir == stdlib
    for source in [s for files in task.files.values() for s in files]:
        path = stdlib / source.name
        assert 2000 <= path.stat().st_size <= 6000
        assert source.text == read_source(path)
    assert len(TAG_CODES) == len(TAGS) == len(set(TAG_CODES))
