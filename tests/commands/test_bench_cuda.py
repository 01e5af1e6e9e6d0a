"""``carousel bench --device cuda`` on a machine without a GPU: refused with the reason. (Its
table is checked on CPU tensors in tests/kernels/test_triton_interpreter.py.)"""

from __future__ import annotations

import pytest
import torch

from carousel.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_bench_on_cuda_needs_a_cuda_device(capsys):
    assert main(["bench", "--device", "cuda", "--no-reference"]) == 2
    assert "--device cuda needs a CUDA device" in capsys.readouterr().err


def test_bench_on_cuda_refuses_cells_the_triton_backend_does_not_run(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["bench", "--device", "cuda", "--cells", "vanilla,slstm"]) == 2
    assert "do not implement the 'slstm' family" in capsys.readouterr().err
    assert main(["bench", "--device", "cuda", "--cell-options", "num_heads=2"]) == 2
    assert "--cell-options applies to --device cpu only" in capsys.readouterr().err
