"""The triton backend without a GPU: its kernels compiled for sm80/sm90 GPUs (to PTX and a cubin,
by Triton's own compiler and ptxas), the interpreter suite run in a subprocess, and where the
registry sends calls (CUDA workloads simulated).

The numerical checks against the reference backend are in ``test_triton_interpreter.py``; they
need ``TRITON_INTERPRET=1`` before the kernels are first imported, so :func:`test_interpreter_suite`
runs that module in a fresh process with it set.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "triton",
    reason="triton is not installed (pip install 'carousel-lstm[gpu]', or make install); the "
    "triton backend's kernels cannot be compiled or interpreted without it",
)

from carousel import kernels
from carousel.cells import VARIANTS, CellSpec, CellWeights, make_spec
from carousel.kernels import triton as triton_backend
from carousel.kernels.triton import coverage

ROOT = Path(__file__).resolve().parents[2]


def test_interpreter_suite():
    """Every cell, option, stacking, direction and lengths against the reference backend, float32
    and float64, in Triton's interpreter (see test_triton_interpreter.py)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CAROUSEL_BACKEND": "auto"}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "tests/kernels/test_triton_interpreter.py"),
            "tests/kernels/test_triton_persistent_interpreter.py",
            *("-p", "no:cacheprovider", "--durations=3"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, f"interpreter suite failed:\n{report}"
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, report


# ---- compiled for real GPUs ----------------------------------------------------------------------

COMPILE_CASES = {
    name: (name, {}, False)
    for name in VARIANTS
    if name != "np" and coverage.unsupported_spec(make_spec(name)) is None
}
COMPILE_CASES |= {
    "1997-blocks2-truncate": ("1997", {"block_size": 2, "truncate_gradient": True}, False),
    "vanilla-proj-hard_sigmoid": ("vanilla", {"gate_activation": "hard_sigmoid"}, True),
    "peephole-truncate": ("peephole", {"truncate_gradient": True}, False),
    "elman-relu": ("elman", {"nonlinearity": "relu"}, False),
    "slstm-heads4-exp-tanh": (
        "slstm",
        {"num_heads": 4, "forget_activation": "exp", "output_activation": "tanh"},
        False,
    ),
    # the regularisers and layer normalisation the kernels compute (the others are the loop's)
    "vanilla-layer_norm-candidate": ("vanilla", {"layer_norm": True, "candidate": True}, False),
    "1997-blocks3-layer_norm-candidate": (
        "1997",
        {"block_size": 3, "layer_norm": True, "candidate": True},
        False,
    ),
    "peephole-proj-layer_norm": ("peephole", {"layer_norm": True}, True),
    "gru-candidate": ("gru", {"candidate": True}, False),
}


def _compile(
    spec, project: bool, dtype: torch.dtype, has_lengths: bool, capability: int,
    candidate: bool = False, hidden: int = 512, level: int = 1, out_size: int | None = None,
):  # fmt: skip
    """Compile both kernels of ``spec`` (level 1's per-step kernels, or level 2's persistent ones)
    for ``sm{capability}``; returns the compiled kernels. With ``layer_norm`` the kernels
    normalise the cell state, with ``candidate`` they apply the candidate dropout's mask."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from carousel.kernels.triton import persistent

    batch = 64
    out_size = out_size or (256 if project else hidden)
    bias_hh = spec.family == "gru"
    features = frozenset(
        ({"candidate"} if candidate else set()) | ({"layer_norm"} if spec.layer_norm else set())
    )
    plan = triton_backend.FAMILIES[spec.family].plan(
        spec, hidden, out_size, batch, dtype, project, bias_hh, features
    )
    if level == 2:
        plan = persistent.plan(plan, spec, hidden, out_size, batch, dtype, project, bias_hh)
    options = {"enable_fp_fusion": True}
    if "num_warps" in plan.constants:
        options["num_warps"] = plan.constants["num_warps"]
    element = {torch.float32: "fp32", torch.float64: "fp64"}[dtype]
    compiled = []
    for kernel, extras in (
        (plan.forward, plan.extra_forward),
        (plan.backward, plan.extra_backward),
    ):
        constants = {k: v for k, v in plan.constants.items() if k != "num_warps"}
        constants["HAS_LENGTHS"] = has_lengths
        names = kernel.arg_names
        pointers = [*names[: names.index("step" if level == 1 else "steps")], *extras]
        signature = {
            name: "constexpr"
            if name in constants
            else ("*i64" if name == "lengths" else f"*{element}")
            if name in pointers
            else "i32"
            for name in names
        }
        constexprs = {(names.index(name),): value for name, value in constants.items()}
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled.append(triton.compile(source, GPUTarget("cuda", capability, 32), options))
    return compiled


@pytest.fixture(scope="module")
def compiled_kernels():
    if triton_backend.kernels_interpreted():
        pytest.skip("the kernels were imported for Triton's interpreter in this process")
    ptxas = Path(__import__("triton").__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip(f"triton's ptxas is missing ({ptxas}); cannot compile for a GPU here")


@pytest.mark.parametrize(
    ("variant", "options", "project"), COMPILE_CASES.values(), ids=COMPILE_CASES.keys()
)
def test_kernels_compile_for_sm80(variant, options, project, compiled_kernels):
    """What the interpreter runs must also compile for a real GPU: power-of-two tiles, no
    interpreter-only constructs; Triton's compiler and ptxas emit a cubin for sm80."""
    options = dict(options)
    candidate = options.pop("candidate", False)
    spec = make_spec(variant, **options)
    compiled = _compile(spec, project, torch.float32, True, 80, candidate)
    assert all(len(kernel.asm["cubin"]) > 0 for kernel in compiled)


@pytest.mark.parametrize("variant", ["vanilla", "1997", "gru", "elman", "slstm", "vanilla-ln"])
def test_kernels_compile_for_sm90_in_float64_without_lengths(variant, compiled_kernels):
    options = {"1997": {"block_size": 2}, "vanilla-ln": {"layer_norm": True}}
    spec = make_spec(variant.removesuffix("-ln"), **options.get(variant, {}))
    compiled = _compile(spec, False, torch.float64, False, 90, variant == "vanilla-ln")
    assert all(len(kernel.asm["cubin"]) > 0 for kernel in compiled)


PERSISTENT_CASES = {
    # name: variant, options, hidden, dtype, capability, projection; the largest sizes the budget
    # admits
    "vanilla-H64-f32-sm80": ("vanilla", {}, 64, torch.float32, 80),
    "nog-H64-P32-f32-sm90": ("nog", {}, 64, torch.float32, 90, 32),
    "vanilla-H32-P16-f64-sm80": ("vanilla", {}, 32, torch.float64, 80, 16),
    "peephole-truncate-H20-f32-sm80": ("peephole", {"truncate_gradient": True}, 20, torch.float32,
                                       80),
    "cifg-hard_sigmoid-H16-f32-sm90": ("cifg", {"gate_activation": "hard_sigmoid"}, 16,
                                       torch.float32, 90),
    "gru-H64-f32-sm90": ("gru", {}, 64, torch.float32, 90),
    "elman-relu-H64-f32-sm80": ("elman", {"nonlinearity": "relu"}, 64, torch.float32, 80),
    "vanilla-H32-f64-sm90": ("vanilla", {}, 32, torch.float64, 90),
    "gru-H32-f64-sm80": ("gru", {}, 32, torch.float64, 80),
    "elman-H64-f64-sm90": ("elman", {}, 64, torch.float64, 90),
}  # fmt: skip

SHARED_MEMORY = {80: 163 * 1024, 90: 227 * 1024}
"""The most shared memory a block may use (opt-in) on sm80 (A100) and sm90 (H100)."""


@pytest.mark.parametrize("case", PERSISTENT_CASES.values(), ids=PERSISTENT_CASES.keys())
def test_persistent_kernels_compile_within_shared_memory(case, compiled_kernels):
    """Level 2's kernels (``tl.dot`` tiles of 16 and more, a runtime loop over the steps) compile
    for sm80/sm90 at the sizes the on-chip budget admits, within the GPU's shared memory."""
    variant, options, hidden, dtype, capability, *projection = case
    spec, project = make_spec(variant, **options), bool(projection)
    out_size = projection[0] if project else None
    compiled = _compile(spec, project, dtype, True, capability, False, hidden, 2, out_size)
    for kernel in compiled:
        assert len(kernel.asm["cubin"]) > 0
        assert kernel.metadata.shared <= SHARED_MEMORY[capability]  # none without tl.dot


# ---- registry ---------------------------------------------------------------------------------


def _work(variant="vanilla", device="cpu", **changes):
    fields = dict(
        spec=make_spec(variant),
        device=torch.device(device),
        dtype=torch.float32,
        steps=100,
        batch=64,
        input_size=256,
        hidden_size=512,
        proj_size=0,
        num_layers=1,
        num_directions=1,
        has_lengths=False,
    )
    return kernels.Workload(**(fields | changes))


@pytest.fixture
def cuda_device(monkeypatch):
    """Pretend torch sees an sm90 GPU (only the registry's decisions are tested with it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def test_auto_runs_every_cell_that_cudnn_lacks_on_triton_and_leaves_it_the_stock_cells(
    cuda_device,
):
    for variant in VARIANTS:
        stock = variant in ("vanilla", "np", "gru", "elman")
        expected = "torch-native" if stock else "triton"
        assert kernels.select("auto", _work(variant, "cuda")).name == expected, variant
    assert kernels.select("triton", _work("vanilla", "cuda")).name == "triton"
    bf16 = _work("peephole", "cuda", dtype=torch.bfloat16)
    assert kernels.select("auto", bf16).name == "triton"


def test_cuda_calls_in_a_graph_capture_or_transform_are_handed_over(cuda_device):
    captured = _work("peephole", "cuda", context="torch.compile or torch.export captures the graph")
    assert "torch.compile" in triton_backend.unsupported(captured)
    assert kernels.select("triton", captured).name == "reference"


def test_old_gpus_are_refused_with_the_reason(monkeypatch, cuda_device):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert "compute capability 8.0" in triton_backend.unsupported(_work(device="cuda"))


def test_cpu_tensors_only_under_the_interpreter_and_never_by_auto(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = triton_backend.unsupported(_work("peephole"))
    assert "TRITON_INTERPRET=1" in reason
    with pytest.raises(ValueError, match="backend 'triton' cannot run this layer: the triton"):
        kernels.select("triton", _work("peephole"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton_backend, "kernels_interpreted", lambda: None)
    assert triton_backend.unsupported(_work("peephole")) is None
    assert kernels.select("auto", _work("peephole")).name != "triton"
    assert triton_backend.cost(_work("peephole")) == float("inf")
    monkeypatch.setattr(triton_backend, "kernels_interpreted", lambda: False)
    assert "set after the triton kernels were imported" in triton_backend.unsupported(_work())


def test_unsupported_workloads_are_explained(monkeypatch, cuda_device):
    backend = kernels.BACKENDS["triton"]
    assert backend.unsupported(_work(device="cuda")) is None
    assert "float32 or float64" in backend.unsupported(_work(device="cuda", dtype=torch.int32))
    assert "CUDA tensors" in backend.unsupported(_work(device="meta"))
    monkeypatch.setattr(triton_backend, "missing_dependency", lambda: "triton is not installed")
    assert backend.unsupported(_work(device="cuda")) == "triton is not installed"
    assert kernels.select("auto", _work("peephole", "cuda")).name == "reference"


# ---- coverage: a whitelist of what the kernels implement ---------------------------------------


@dataclass(frozen=True)
class FutureSpec(CellSpec):
    """A spec with a field the kernels do not know, as a later option would add one."""

    future_option: bool = False


@dataclass(frozen=True)
class FutureWorkload(kernels.Workload):
    """A workload with layer options the kernels do not know (one without a default)."""

    recurrent_dropout: float = 0.0
    reset_mask: torch.Tensor | None = None


def _one_line_refusal(work) -> str:
    with pytest.raises(ValueError, match="backend 'triton' cannot run this layer: the triton") as e:
        kernels.select("triton", work)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.fixture(params=["cuda", "cpu-interpreter"])
def device(request, monkeypatch):
    """A simulated sm90 GPU, or CPU tensors under Triton's interpreter (the decision only)."""
    if request.param == "cuda":
        request.getfixturevalue("cuda_device")
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(triton_backend, "kernels_interpreted", lambda: None)
    return "cpu"


@pytest.fixture
def family_without_kernels():
    """A cell family registered without triton kernels (as a new family is, at first)."""
    from carousel.cells import FAMILIES, Family, register_family

    register_family(Family("elman2", ("h",), FAMILIES["elman"].step))
    yield CellSpec(family="elman2", variant="elman2", gates=("h",))
    del FAMILIES["elman2"]


def test_a_family_without_kernels_is_handed_over_or_refused_by_name(device, family_without_kernels):
    work = _work(device=device, spec=family_without_kernels)
    assert kernels.select("auto", work).name == "reference"
    assert "do not implement the 'elman2' family" in _one_line_refusal(work)


def test_every_slstm_option_runs_on_triton(device):
    for options in ({}, {"num_heads": 4}, {"forget_activation": "exp"}):
        work = _work(device=device, spec=make_spec("slstm", **options))
        assert triton_backend.unsupported(work) is None
        if device == "cuda":  # cuDNN has no sLSTM
            assert kernels.select("auto", work).name == "triton"


def test_an_unknown_cell_option_is_accepted_at_its_default_only(device):
    base = make_spec("peephole")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(CellSpec)}
    assert triton_backend.unsupported(_work(device=device, spec=FutureSpec(**fields))) is None
    work = _work(device=device, spec=FutureSpec(**fields, future_option=True))
    assert kernels.select("auto", work).name != "triton"
    if device == "cuda":  # torch-native and triton refuse it
        assert kernels.select("auto", work).name == "reference"
    assert "cell option future_option=True (of 'peephole')" in _one_line_refusal(work)


def test_unknown_layer_options_are_accepted_off_only(device):
    work = FutureWorkload(**dataclasses.asdict(_work(device=device)) | {"spec": make_spec("cifg")})
    assert triton_backend.unsupported(work) is None
    for change, named in (
        ({"recurrent_dropout": 0.25}, "layer option recurrent_dropout=0.25"),
        ({"reset_mask": torch.ones(3, 2)}, "reset_mask=<tensor of shape (3, 2)>"),
    ):
        changed = dataclasses.replace(work, **change)
        assert kernels.select("auto", changed).name != "triton"
        assert named in _one_line_refusal(changed)


def test_the_regularisers_resets_and_layer_norm_run_on_triton(device):
    """The masks of carousel.cells.regularizers and layer normalisation are in the kernels (the
    weight drop is the layer's): on the GPU ``auto`` runs them there, cuDNN having none."""
    every = frozenset({"recurrent", "candidate", "zoneout_cell", "zoneout_hidden", "reset"})
    for variant, masks in (
        ("vanilla", every),
        ("1997", every),
        ("gru", every - {"zoneout_cell"}),
        ("slstm", frozenset({"reset"})),
        ("elman", frozenset({"reset"})),
    ):
        spec = make_spec(variant)
        if variant in ("vanilla", "1997", "gru"):
            spec = spec.replace(layer_norm=True)
        work = _work(device=device, spec=spec, masks=masks)
        assert triton_backend.unsupported(work) is None, variant
        if device == "cuda":
            assert kernels.select("auto", work).name == "triton", variant


def test_a_mask_a_family_does_not_take_is_refused_by_name(device):
    """Masks the regularisers never draw for a family (the layer refuses them first) are refused,
    never ignored."""
    for variant, masks, named in (
        ("gru", {"zoneout_cell"}, "zoneout_cell masks for the gru family"),
        ("elman", {"recurrent", "zoneout_hidden"}, "recurrent, zoneout_hidden masks for the elman"),
        ("slstm", {"candidate"}, "candidate masks for the slstm family"),
    ):
        work = _work(variant, device, masks=frozenset(masks))
        assert kernels.select("auto", work).name != "triton"
        assert named in _one_line_refusal(work)


def test_values_outside_the_whitelist_are_refused(device, monkeypatch):
    """A value the spec accepts but the kernels lack (here: an activation taken off the list, as a
    newly registered activation would be missing from it) is refused, never computed as another."""
    monkeypatch.setitem(coverage.SPEC_VALUES, "output_activation", ("tanh",))
    work = _work(device=device, spec=make_spec("vanilla", output_activation="identity"))
    assert "output_activation='identity' (of 'vanilla'); they implement 'tanh'" in (
        _one_line_refusal(work)
    )
    assert triton_backend.unsupported(_work("vanilla", device)) is None


def test_the_whitelist_names_real_fields_activations_and_kernel_modules():
    """Every listed spec field and workload field exists, every listed activation is registered
    and has a code in the kernels, every listed family has its kernel module. (Fields, options
    and activations added later need no entry: unlisted, they are refused unless off.)"""
    import importlib

    from carousel.cells.activations import ACTIVATIONS

    assert set(coverage.SPEC_VALUES) <= {f.name for f in dataclasses.fields(CellSpec)}
    assert coverage.WORKLOAD_FIELDS <= {f.name for f in dataclasses.fields(kernels.Workload)}
    assert set(coverage.ACTIVATIONS) <= set(ACTIVATIONS)
    common = importlib.import_module("carousel.kernels.triton.common")
    codes = {int(getattr(common, name.upper()).value) for name in coverage.ACTIVATIONS}
    assert codes == {ACTIVATIONS[name].code for name in coverage.ACTIVATIONS}
    for family in coverage.FAMILIES:
        assert callable(triton_backend.FAMILIES[family].plan), family


def test_run_direction_called_directly_refuses_what_it_cannot_compute():
    base = make_spec("elman")
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(CellSpec)}
    spec = FutureSpec(**fields, future_option=True)
    weights = CellWeights(torch.zeros(4, 3), torch.zeros(4, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="cell option future_option=True"):
        triton_backend.run_direction(spec, torch.zeros(2, 2, 3), (torch.zeros(2, 4),), weights)
