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
