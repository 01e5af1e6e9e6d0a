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


@pytest.fixture
def variant_without_kernels():
    """A cell family and variant registered without triton kernels."""
    from carousel.cells import (
        FAMILIES,
        VARIANTS,
        CellSpec,
        Family,
        register_family,
        register_variant,
    )

    register_family(Family("elman2", ("h",), FAMILIES["elman"].step))

    @register_variant("elman2", "elman2", {})
    def elman2():
        """The Elman step under another family's name."""
        return CellSpec(family="elman2", variant="elman2", gates=("h",))

    yield "elman2"
    del FAMILIES["elman2"], VARIANTS["elman2"]


def test_bench_on_cuda_refuses_cells_the_triton_backend_does_not_run(
    capsys, monkeypatch, variant_without_kernels
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["bench", "--device", "cuda", "--cells", "vanilla,elman2"]) == 2
    assert "do not implement the 'elman2' family" in capsys.readouterr().err
    assert main(["bench", "--device", "cuda", "--cell-options", "num_heads=2"]) == 2
    assert "--cell-options applies to --device cpu only" in capsys.readouterr().err
