"""The triton backend on a GPU against the reference backend on the same GPU: every cell (the
sLSTM included), option, stacking and direction, the regularisers, resets and layer norm, float32
and float64, at shapes with several programs per launch.

Skipped (with the reason) without a CUDA device; ``benchmarks/gpu_check.sh`` runs it on one. The
same comparisons run on every CI run in Triton's interpreter (``test_triton_interpreter.py``);
here the kernels are compiled for the device and the GEMMs run on cuBLAS. float32 is compared to
1e-3 relative and 1e-4 of each tensor's largest magnitude absolute: the two backends sum in
different orders, and over 23 steps of a 1997 cell (no forget gate, weights up to 0.5) both
differ from float64 by up to 1.5e-6 of the largest gradient and 1.5e-5 in the outputs (measured
in the interpreter); float64 holds them to 1e-10.
"""

from __future__ import annotations

import pytest
import torch

from carousel import kernels
from carousel.cells import make_spec

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the GPU run of the triton backend", allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed (pip install 'carousel-lstm[gpu]')")

from carousel.kernels import triton as triton_backend
from tests.kernels.triton_cases import (
    CELLS,
    OPTIONS,
    Shape,
    compare,
    compare_regularized,
    every_option,
    split_options,
)

if triton_backend.unsupported(
    kernels.Workload(
        make_spec("peephole"), torch.device("cuda"), torch.float32, 1, 1, 1, 1, 0, 1, 1, False
    )
):
    pytest.skip("the triton backend cannot run on this GPU", allow_module_level=True)

MEDIUM = Shape(batch=19, steps=23, input=7, hidden=96, lengths=(23, 5, *range(6, 23)))
FLOAT32 = {"rtol": 1e-3, "atol": 1e-4, "scaled": True}
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def _tolerance(dtype):
    return FLOAT32 if dtype == torch.float32 else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", CELLS)
def test_every_cell_matches_reference_on_the_gpu(variant, dtype):
    compare(variant, dtype, MEDIUM, "cuda", {"num_layers": 2}, _tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("variant", "options"), OPTIONS.values(), ids=OPTIONS.keys())
def test_every_option_matches_reference_on_the_gpu(variant, options, dtype):
    layer_options, options = split_options(options)
    compare(variant, dtype, MEDIUM, "cuda", layer_options, _tolerance(dtype), **options)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [{}, {"num_heads": 4, "forget_activation": "exp", "output_activation": "tanh"}],
    ids=["heads1", "heads4-exp-tanh"],
)
def test_slstm_matches_reference_on_the_gpu(options, dtype):
    """A random state with a positive normaliser and one empty row (see triton_cases)."""
    compare("slstm", dtype, MEDIUM, "cuda", {"num_layers": 2}, _tolerance(dtype), **options)


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman", "slstm"])
def test_full_length_and_blocks_of_three(variant):
    options = {"block_size": 3} if variant == "1997" else {}
    shape = Shape(batch=64, steps=12, input=32, hidden=300, lengths=None)
    compare(variant, torch.float64, shape, "cuda", {"num_layers": 2}, None, **options)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_low_precision_layers_match_the_reference(dtype):
    compare("peephole", dtype, MEDIUM, "cuda", {}, {"rtol": 2e-2, "atol": 2e-2, "scaled": True})


def test_auto_picks_triton_for_the_variants_cudnn_lacks():
    import carousel

    layer = carousel.LSTM(4, 8, variant="cifg", device="cuda")
    work = kernels.Workload(
        layer.spec, torch.device("cuda"), torch.float32, 5, 2, 4, 8, 0, 1, 1, False
    )
    assert kernels.select("auto", work).name == "triton"
    output, _ = layer(torch.randn(5, 2, 4, device="cuda"))
    assert output.shape == (5, 2, 8)


REGULARIZED = {
    "vanilla": ("vanilla", {}),
    "peephole-proj": ("peephole", {"layer_options": {"proj_size": 48}}),
    "1997-blocks3-truncate": ("1997", {"block_size": 3, "truncate_gradient": True}),
    "gru": ("gru", {}),
    "gru-eval": ("gru", {"training": False}),
    "slstm": ("slstm", {"num_heads": 4}),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("variant", "extra"), REGULARIZED.values(), ids=REGULARIZED.keys())
def test_regularisers_resets_and_layer_norm_match_reference_on_the_gpu(variant, extra, dtype):
    """Every regulariser the family takes, layer norm (whole rows of 96 cells) and resets at
    about one step in ten, two layers both ways; the masks drawn on the GPU from one seed."""
    reset = torch.rand(MEDIUM.steps, MEDIUM.batch, generator=torch.Generator().manual_seed(0))
    extra = dict(extra)
    layer_options = {"num_layers": 2} | extra.pop("layer_options", {})
    compare_regularized(
        variant, dtype, MEDIUM, reset=reset < 0.1, layer_options=layer_options,
        tolerance=_tolerance(dtype), device="cuda", **every_option(variant) | extra,
    )  # fmt: skip


# ---- level 2: the persistent kernels --------------------------------------------------------------

LEVEL_TWO_CELLS = ["vanilla", "peephole", "nig", "cifg", "gru", "elman"]
LEVEL_TWO_HIDDEN = {torch.float32: 48, torch.float64: 24}  # padded to 64 and 32: the budget's top


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", LEVEL_TWO_CELLS)
def test_level_two_matches_reference_on_the_gpu(variant, dtype, monkeypatch):
    """The persistent kernels forced (``CAROUSEL_TRITON_LEVEL=2`` raises rather than fall back):
    37 rows in three programs, 23 steps, lengths, two layers both ways."""
    monkeypatch.setenv("CAROUSEL_TRITON_LEVEL", "2")
    shape = Shape(37, 23, 7, LEVEL_TWO_HIDDEN[dtype], tuple(1 + (r * 7) % 23 for r in range(37)))
    compare(variant, dtype, shape, "cuda", {"num_layers": 2}, _tolerance(dtype))


def test_level_two_truncated_gradient_and_elman_relu_on_the_gpu(monkeypatch):
    monkeypatch.setenv("CAROUSEL_TRITON_LEVEL", "2")
    shape = Shape(37, 23, 7, 64, tuple(1 + (r * 7) % 23 for r in range(37)))
    compare("peephole", torch.float32, shape, "cuda", {}, FLOAT32, truncate_gradient=True)
    compare("elman", torch.float64, shape, "cuda", {}, None, nonlinearity="relu")


def test_level_two_with_a_projection_on_the_gpu(monkeypatch):
    monkeypatch.setenv("CAROUSEL_TRITON_LEVEL", "2")
    shape = Shape(37, 23, 7, 64, tuple(1 + (r * 7) % 23 for r in range(37)))
    layer_options = {"num_layers": 2, "proj_size": 24}
    compare("peephole", torch.float32, shape, "cuda", layer_options, FLOAT32)
