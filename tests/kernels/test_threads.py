"""The thread setting: one number for PyTorch's pool and the BLAS pools of the numba kernels."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

import carousel
from carousel.kernels import threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    threads._requested = None
    torch.set_num_threads(before)
    threads.limit_blas(before)


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_set_num_threads_sets_torch_and_the_kernels_blas(restore_threads):
    layer = carousel.LSTM(3, 40, backend="numba")  # 1 x 40 x 160 > the loop size: BLAS runs
    layer(torch.randn(4, 2, 3))  # loads the kernels and their BLAS
    carousel.set_num_threads(1)
    assert carousel.get_num_threads() == 1
    assert torch.get_num_threads() == 1
    assert _blas_threads() == {1}
    output, _ = layer(torch.randn(4, 2, 3))
    assert output.shape == (4, 2, 40)


def test_environment_variable_is_the_default(monkeypatch, restore_threads):
    monkeypatch.setenv("CAROUSEL_NUM_THREADS", "1")
    assert carousel.get_num_threads() == 1
    threads.apply_policy()
    assert torch.get_num_threads() == 1
    assert _blas_threads() == {1}
    monkeypatch.delenv("CAROUSEL_NUM_THREADS")
    assert carousel.get_num_threads() == torch.get_num_threads()


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (0, ValueError, "num_threads must be a positive int; got 0"),
        (2.0, TypeError, "num_threads must be a positive int; got float 2.0"),
        (True, TypeError, "num_threads must be a positive int; got bool True"),
    ],
)
def test_bad_thread_counts_are_rejected(value, error, match):
    with pytest.raises(error, match=match):
        carousel.set_num_threads(value)


def test_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("CAROUSEL_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="CAROUSEL_NUM_THREADS must be a positive integer"):
        carousel.get_num_threads()


def test_environment_variable_sets_torch_threads_on_import():
    import subprocess
    import sys

    code = "import torch, carousel; print(torch.get_num_threads(), carousel.get_num_threads())"
    for value in ("1", "3"):
        env = {**__import__("os").environ, "CAROUSEL_NUM_THREADS": value}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.split() == [value, value]
