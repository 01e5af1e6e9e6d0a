r"""Tag every character of Python source files with the token type :mod:`tokenize` gives it.

The data are modules of the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``), so nothing is downloaded and the data are fixed for a given
Python version. The files, in this order:

1. the top-level ``*.py`` files of the directory (``source_dir``, default the standard library),
   sorted by name, whose size in bytes lies in ``[min_bytes, max_bytes]``;
2. put in a seeded random order (``split_seed``, independent of the training seed);
3. read in that order with :func:`tokenize.open` (which honours coding cookies, universal
   newlines) and tokenized; files tokenize cannot read are skipped; the first ``max_files``
   readable ones are kept (0: all);
4. split by *file*: the first ``round(test_fraction * n)`` (at least 1) are the test files, the
   next ``round(valid_fraction * n)`` (at least 1) the validation files, the rest train.

The tags (:data:`TAGS`; the letter of each, :data:`TAG_CODES`, renders tagged text), per character:

- ``space`` (``.``): outside every token: spaces, indentation, form feeds, backslash line
  continuations, and characters tokenize reports as errors;
- ``name`` (``n``): a ``NAME`` token that is not a keyword (soft keywords such as ``match``,
  ``case``, ``type`` and ``_`` stay names);
- ``keyword`` (``k``): a ``NAME`` token for which :func:`keyword.iskeyword` holds (``def``,
  ``None``, ``and``);
- ``op`` (``o``): an ``OP`` token: operators, brackets, ``:``, ``.``, ``,``, ``->``, ...;
- ``number`` (``d``): a ``NUMBER`` token;
- ``string`` (``s``): a ``STRING`` token, prefix and quotes included. An f-string is one string
  as a whole: Python 3.12 splits it into ``FSTRING_START`` / ``FSTRING_MIDDLE`` /
  ``FSTRING_END`` around the tokens of its replacement fields, and these are merged back, so the
  tags are the same on every version;
- ``comment`` (``c``): a ``COMMENT`` token;
- ``newline`` (``E``): the ``NEWLINE`` token that ends a logical line;
- ``nl`` (``e``): an ``NL`` token, a line break that ends no logical line (blank lines,
  comment-only lines, breaks inside brackets).

Telling ``newline`` from ``nl`` needs the bracket depth, and telling a ``#`` or a word inside a
string from code needs the quote that opened the string, perhaps lines before: context that a
per-character lookup lacks.

Inputs are character ids: the vocabulary (:attr:`PyTokensTask.vocabulary`, saved with a run) is
``"<unk>"`` (id 0) then the sorted characters that occur at least ``min_count`` times in the
*training* files; any other character reads as id 0. Each file is cut into consecutive chunks of
``seq_len`` characters (the last one shorter); a chunk never spans two files. Training batch
``k`` takes the chunks at positions ``k * B ... k * B + B - 1`` of an endless sequence of seeded
random permutations of the training chunks (one per epoch), so every chunk is seen once per
epoch. The validation and test chunks come in file order, ``eval_batch_size`` at a time.

Metrics: ``loss`` (cross-entropy, nats per character), ``accuracy`` (per character) and
``macro_f1`` (the mean over tags of :math:`F_1 = 2\,TP / (\text{predicted} + \text{actual})`,
over the tags that occur in the targets or the predictions, as scikit-learn's
``f1_score(average="macro")``), from the additive per-chunk counts ``tp_<tag>``,
``predicted_<tag>``, ``actual_<tag>`` (:func:`tag_f1` gives the F1 of each tag).
"""

from __future__ import annotations

import io
import keyword
import math
import sysconfig
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from carousel.options import option
from carousel.tasks.base import Batch, ModelIO, Task, check_held_out, generator

TAGS = ("space", "name", "keyword", "op", "number", "string", "comment", "newline", "nl")
"""The tag of each id (see the module docstring)."""

TAG_CODES = ".nkodscEe"
"""One letter per tag, in the order of :data:`TAGS`, for rendering tagged text."""

UNKNOWN = "<unk>"
"""The vocabulary entry (id 0) of characters not in the training vocabulary."""

SPACE, NAME, KEYWORD, OP, NUMBER, STRING, COMMENT, NEWLINE, NL = range(len(TAGS))

_TOKEN_TAGS = {"OP": OP, "NUMBER": NUMBER, "STRING": STRING, "COMMENT": COMMENT}
_TOKEN_TAGS.update(NEWLINE=NEWLINE, NL=NL)


@dataclass(frozen=True)
class PyTokensOptions:
    """Options of token-type tagging of Python source."""

    source_dir: str = option(
        "", "directory of *.py files to tag; empty: this Python's standard library"
    )
    min_bytes: int = option(2000, "smallest file size in bytes to use")
    max_bytes: int = option(30000, "largest file size in bytes to use")
    max_files: int = option(
        0, "use the first N readable files of the seeded order (0: all)", minimum=0
    )
    split_seed: int = option(0, "seed of the file order that fixes the split")
    valid_fraction: float = option(0.1, "fraction of the files held out for validation")
    test_fraction: float = option(0.2, "fraction of the files held out for the final test")
    seq_len: int = option(256, "characters per chunk", minimum=1)
    min_count: int = option(
        1, "characters seen fewer times in the training files read as <unk>", minimum=1
    )
    eval_batch_size: int = option(256, "chunks per validation / test batch", minimum=1)


def default_source_dir() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def tag_tokens(text: str, tokens: Iterable[tokenize.TokenInfo]) -> Tensor:
    """The tag id of every character of ``text``, ``(len(text),)`` int64, from its ``tokens``.

    ``tokens`` are those of ``tokenize.generate_tokens`` for ``text`` (lines end in ``"\\n"``);
    positions ``(row, column)`` count rows from 1 and columns in characters. Characters no token
    covers are ``space``.
    """
    line_starts = [0]
    line_starts += [offset + 1 for offset, char in enumerate(text) if char == "\n"]

    def offset(position: tuple[int, int]) -> int:
        row, column = position
        return line_starts[row - 1] + column if row <= len(line_starts) else len(text)

    tags = bytearray(len(text))  # SPACE is 0
    fstring_depth, fstring_start = 0, 0
    for token in tokens:
        kind = tokenize.tok_name[token.type]
        if kind == "FSTRING_START":
            if fstring_depth == 0:
                fstring_start = offset(token.start)
            fstring_depth += 1
            continue
        if kind == "FSTRING_END":
            fstring_depth -= 1
            if fstring_depth == 0:
                stop = offset(token.end)
                tags[fstring_start:stop] = bytes([STRING]) * (stop - fstring_start)
            continue
        if fstring_depth:
            continue  # inside an f-string: tagged with the whole string at its end
        if not token.string:
            continue  # DEDENT, ENDMARKER, the NEWLINE added after a last line without one
        start, stop = offset(token.start), min(offset(token.end), len(text))
        if kind == "NAME":
            tag = KEYWORD if keyword.iskeyword(token.string) else NAME
        elif kind in _TOKEN_TAGS:
            tag = _TOKEN_TAGS[kind]
        else:
            continue
        tags[start:stop] = bytes([tag]) * (stop - start)
    return (
        torch.frombuffer(tags, dtype=torch.uint8).long()
        if tags
        else torch.zeros(0, dtype=torch.long)
    )


def tag_source(text: str) -> Tensor:
    """The tag id of every character of the Python source ``text``, ``(len(text),)`` int64.

    Raises:
        tokenize.TokenError, SyntaxError: ``text`` cannot be tokenized.
    """
    return tag_tokens(text, tokenize.generate_tokens(io.StringIO(text).readline))


def read_source(path: Path) -> str:
    """The text of a Python file as the interpreter reads it (coding cookie, universal newlines)."""
    with tokenize.open(path) as handle:
        return handle.read()


def render(tags: Tensor) -> str:
    """Tag ids ``(N,)`` as one letter each (:data:`TAG_CODES`)."""
    return "".join(TAG_CODES[tag] for tag in tags.tolist())


@dataclass
class SourceFile:
    """A tagged file: ``name`` (relative to the source directory), ``text`` and its ``tags``
    ``(len(text),)``."""

    name: str
    text: str
    tags: Tensor


@dataclass
class Chunks:
    """The chunks of a split, padded to ``seq_len``.

    Attributes:
        ids: ``(N, seq_len)`` character ids (0 past a chunk's end).
        tags: ``(N, seq_len)`` tag ids (0 past a chunk's end).
        lengths: ``(N,)`` characters in each chunk (>= 1).
        origin: ``(file index within the split, start offset)`` of each chunk.
    """

    ids: Tensor
    tags: Tensor
    lengths: Tensor
    origin: list[tuple[int, int]]

    def batch(self, rows: Tensor) -> Batch:
        """The chunks ``rows`` ``(B,)`` as a batch, trimmed to the longest of them."""
        lengths = self.lengths[rows]
        steps = int(lengths.max())
        mask = torch.arange(steps) < lengths.unsqueeze(1)  # (B, T)
        return Batch(x=self.ids[rows, :steps], y=self.tags[rows, :steps], mask=mask)


class PyTokensTask(Task):
    """Token-type tagging of Python source; ``x``: ``(B, T)`` character ids, ``y``: ``(B, T)``
    tag ids (see the module docstring)."""

    name = "pytokens"
    Options = PyTokensOptions

    def configure(self, options: PyTokensOptions) -> None:
        if options.min_bytes < 0 or options.max_bytes < options.min_bytes:
            raise ValueError(
                "pytokens options need 0 <= min_bytes <= max_bytes; got "
                f"min_bytes={options.min_bytes}, max_bytes={options.max_bytes}"
            )
        check_held_out("pytokens", options, below=1)
        self.source_dir = Path(options.source_dir) if options.source_dir else default_source_dir()
        self.skipped: list[str] = []
        files = self.read_files()
        test_count = max(1, round(options.test_fraction * len(files)))
        valid_count = max(1, round(options.valid_fraction * len(files)))
        if len(files) < test_count + valid_count + 1:
            raise ValueError(
                f"pytokens: {len(files)} readable file(s) in {str(self.source_dir)!r} with "
                f"{options.min_bytes} <= size <= {options.max_bytes} bytes; need at least "
                f"{test_count + valid_count + 1} (test, validation, training); widen min_bytes / "
                "max_bytes or raise max_files"
            )
        self.files = {
            "test": files[:test_count],
            "valid": files[test_count : test_count + valid_count],
            "train": files[test_count + valid_count :],
        }
        counts = Counter()
        for source in self.files["train"]:
            counts.update(source.text)
        kept = sorted(char for char, count in counts.items() if count >= options.min_count)
        self.vocabulary = [UNKNOWN, *kept]
        self.index = {char: i for i, char in enumerate(self.vocabulary)}
        self._codes = np.array([ord(char) for char in kept], dtype=np.uint32)
        self.chunks = {split: self.cut(sources) for split, sources in self.files.items()}
        self.io = ModelIO("tagger", len(self.vocabulary), len(TAGS), tokens=True)
        self._permutations: dict[int, Tensor] = {}

    # ---- data ------------------------------------------------------------------------------

    def candidates(self) -> list[Path]:
        """The ``*.py`` files directly in the source directory with a size in
        ``[min_bytes, max_bytes]``, sorted by name."""
        if not self.source_dir.is_dir():
            raise ValueError(
                f"pytokens option source_dir: no such directory {str(self.source_dir)!r}"
            )
        low, high = self.options.min_bytes, self.options.max_bytes
        return sorted(
            path
            for path in self.source_dir.glob("*.py")
            if path.is_file() and low <= path.stat().st_size <= high
        )

    def read_files(self) -> list[SourceFile]:
        """The candidates in the seeded order of ``split_seed``, tagged; unreadable files are
        skipped (their names in :attr:`skipped`); at most ``max_files`` (0: all)."""
        paths = self.candidates()
        order = torch.randperm(len(paths), generator=generator(self.options.split_seed, "files"))
        files = []
        for position in order.tolist():
            if self.options.max_files and len(files) == self.options.max_files:
                break
            path = paths[position]
            try:
                text = read_source(path)
                tags = tag_source(text)
            except (SyntaxError, UnicodeDecodeError, tokenize.TokenError, OSError):
                self.skipped.append(path.name)
                continue
            if text:
                files.append(SourceFile(path.name, text, tags))
        return files

    def encode(self, text: str) -> Tensor:
        """Character ids of ``text``, ``(len(text),)`` int64; characters outside the vocabulary
        are 0 (``<unk>``)."""
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        known = self._codes  # (V - 1,) code points of the vocabulary after <unk>, ascending
        if not len(known):
            return torch.zeros(len(codes), dtype=torch.long)
        position = np.minimum(np.searchsorted(known, codes), len(known) - 1)
        ids = np.where(known[position] == codes, position + 1, 0)
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: Tensor) -> str:
        """The characters of ids (``<unk>`` for id 0)."""
        return "".join(self.vocabulary[i] for i in ids.tolist())

    def cut(self, sources: list[SourceFile]) -> Chunks:
        """Every file of ``sources`` cut into consecutive chunks of ``seq_len`` characters."""
        seq_len = self.options.seq_len
        rows_ids, rows_tags, lengths, origin = [], [], [], []
        for file_index, source in enumerate(sources):
            ids = self.encode(source.text)
            for start in range(0, len(ids), seq_len):
                piece = slice(start, min(start + seq_len, len(ids)))
                length = piece.stop - piece.start
                rows_ids.append(F.pad(ids[piece], (0, seq_len - length)))
                rows_tags.append(F.pad(source.tags[piece], (0, seq_len - length)))
                lengths.append(length)
                origin.append((file_index, start))
        return Chunks(
            ids=torch.stack(rows_ids),
            tags=torch.stack(rows_tags),
            lengths=torch.tensor(lengths, dtype=torch.long),
            origin=origin,
        )

    def train_batch(self, index: int, batch_size: int) -> Batch:
        """Training chunks ``index * batch_size ...`` of the endless sequence of per-epoch seeded
        permutations of the training chunks."""
        chunks = self.chunks["train"]
        count = len(chunks.lengths)
        positions = torch.arange(index * batch_size, (index + 1) * batch_size)
        rows = torch.empty(batch_size, dtype=torch.long)
        for epoch in torch.unique(positions // count).tolist():
            if epoch not in self._permutations:
                if len(self._permutations) > 4:
                    self._permutations.clear()
                rng = generator(self.seed, "pytokens-train", epoch)
                self._permutations[epoch] = torch.randperm(count, generator=rng)
            here = positions // count == epoch
            rows[here] = self._permutations[epoch][positions[here] % count]
        return chunks.batch(rows)

    def batches(self, split: str) -> list[Batch]:
        """The chunks of ``split`` in file order, ``eval_batch_size`` at a time."""
        count = len(self.chunks[split].lengths)
        size = self.options.eval_batch_size
        return [
            self.chunks[split].batch(torch.arange(start, min(start + size, count)))
            for start in range(0, count, size)
        ]

    def eval_batches(self) -> list[Batch]:
        """The validation files' chunks (model selection)."""
        if not hasattr(self, "_valid"):
            self._valid = self.batches("valid")
        return self._valid

    def test_batches(self) -> list[Batch]:
        """The test files' chunks (the reported numbers)."""
        if not hasattr(self, "_test"):
            self._test = self.batches("test")
        return self._test

    # ---- loss and metrics ------------------------------------------------------------------

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy per character over the characters that exist; ``output``: logits
        ``(B, T, len(TAGS))``."""
        return F.cross_entropy(output[batch.mask], batch.y[batch.mask])

    def scores(self, output: Tensor, batch: Batch) -> dict[str, Tensor]:
        """Per chunk ``(B,)``: summed negative log-likelihood, characters, correct ones, and per
        tag the true positives, predictions and actual occurrences."""
        mask = batch.mask
        nll = F.cross_entropy(output.transpose(1, 2), batch.y, reduction="none")  # (B, T)
        predicted = output.argmax(-1)  # (B, T)
        scores = {
            "nll": (nll * mask).sum(1),
            "chars": mask.sum(1),
            "correct": ((predicted == batch.y) & mask).sum(1),
        }
        for tag, label in enumerate(TAGS):
            is_predicted = (predicted == tag) & mask
            is_actual = (batch.y == tag) & mask
            scores[f"tp_{label}"] = (is_predicted & is_actual).sum(1)
            scores[f"predicted_{label}"] = is_predicted.sum(1)
            scores[f"actual_{label}"] = is_actual.sum(1)
        return scores

    def metrics(self, totals: dict[str, float], sequences: int) -> dict[str, float]:
        """``loss`` (nats per character), ``accuracy`` and ``macro_f1``."""
        f1 = [value for value in tag_f1(totals).values() if not math.isnan(value)]
        return {
            "loss": totals["nll"] / totals["chars"],
            "accuracy": totals["correct"] / totals["chars"],
            "macro_f1": sum(f1) / len(f1) if f1 else math.nan,
        }


def tag_f1(totals: dict[str, float]) -> dict[str, float]:
    r"""The F1 of each tag, :math:`2\,TP / (\text{predicted} + \text{actual})`, from the
    summed :meth:`PyTokensTask.scores`; NaN for a tag neither predicted nor present."""
    f1 = {}
    for label in TAGS:
        seen = totals[f"predicted_{label}"] + totals[f"actual_{label}"]
        f1[label] = 2 * totals[f"tp_{label}"] / seen if seen else math.nan
    return f1


__all__ = [
    "TAGS",
    "TAG_CODES",
    "UNKNOWN",
    "Chunks",
    "PyTokensOptions",
    "PyTokensTask",
    "SourceFile",
    "default_source_dir",
    "read_source",
    "render",
    "tag_f1",
    "tag_source",
    "tag_tokens",
]
