"""``carousel bench``: the table it prints and writes, and its argument errors."""

from __future__ import annotations

import numpy as np
import torch

from carousel.benchmarks import floor
from carousel.benchmarks.layers import cell_spec
from carousel.cli import main


def test_bench_writes_its_table_between_markers(tmp_path, capsys):
    report = tmp_path / "performance.md"
    report.write_text(
        "# Performance\n\nprose\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\nend\n"
    )
    status = main(
        ["bench", "--cells", "vanilla,cifg,elman", "--grid", "2x5x3x4", "--seconds", "0.01",
         "--threads", "1,2", "--output", str(report)]
    )  # fmt: skip
    assert status == 0
    text = report.read_text()
    assert text.startswith("# Performance\n\nprose\n") and text.endswith(
        "<!-- bench:end -->\nend\n"
    )
    assert "old" not in text and "fp32 GEMM peak" in text and "Load average" in text
    assert "at 1 thread" in text and "at 2 threads" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "2x5x3x4" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| vanilla", "| cifg", "| elman"]
    vanilla, cifg, _ = (row.split(" | ") for row in rows)
    assert vanilla[4].endswith("x") and vanilla[7].endswith("x")  # speed-ups at 1 and 2 threads
    assert vanilla[8].endswith("x") and vanilla[9].endswith("x")  # scaling of numba and torch.nn
    assert cifg[3] == "" and cifg[9] == ""  # torch.nn has no CIFG cell
    assert cifg[10].endswith("x") and cifg[17].endswith("x")  # vs vanilla, vs the reference
    assert vanilla[14].endswith("ms") or float(vanilla[14]) > 0  # the GEMM floor
    assert vanilla[15].endswith("x") and vanilla[16].endswith("x")  # numba, torch.nn over it
    assert cifg[15].endswith("x") and cifg[16] == ""
    assert "numba" in capsys.readouterr().out


def test_bench_rejects_a_malformed_grid(capsys):
    assert main(["bench", "--grid", "2x5x3", "--no-reference"]) == 2
    assert "--grid entries must look like 16x100x32x64" in capsys.readouterr().err


def test_bench_rejects_an_unknown_cell(capsys):
    assert main(["bench", "--cells", "vanilla,lstm2000"]) == 2
    assert "--cells must name variants from" in capsys.readouterr().err


def test_bench_rejects_bad_thread_counts(capsys):
    assert main(["bench", "--threads", "1,two"]) == 2
    assert "--threads must be positive integers" in capsys.readouterr().err


def test_bench_gives_cell_options_to_the_cells_that_take_them(capsys):
    status = main(
        ["bench", "--cells", "vanilla,slstm", "--grid", "2x5x3x4", "--seconds", "0.01",
         "--threads", "1,2", "--cell-options", "num_heads=2,forget_activation=exp",
         "--no-reference"]
    )  # fmt: skip
    assert status == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "2x5x3x4" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| vanilla", "| slstm"]
    assert rows[1].split(" | ")[10].endswith("x")  # time / vanilla


def test_bench_rejects_malformed_cell_options(capsys):
    assert main(["bench", "--cells", "slstm", "--cell-options", "num_heads"]) == 2
    assert "--cell-options entries must look like num_heads=4" in capsys.readouterr().err


def test_bench_options_refuses_the_cuda_device(capsys):
    assert main(["bench", "--options", "--device", "cuda"]) == 2
    assert "--options times the numba kernels on the CPU; got --device cuda" in (
        capsys.readouterr().err
    )


def test_bench_layers_times_stacks_and_leaves_the_wavefront_as_it_was(tmp_path, capsys):
    from carousel.kernels.numba_cpu import wavefront

    count, limit, enabled = wavefront.chunk_count, wavefront.MAX_CHUNKS, wavefront.ENABLED
    report = tmp_path / "performance.md"
    status = main(
        ["bench", "--layers", "2,3", "--cells", "vanilla,elman", "--grid", "1x20x3x4",
         "--seconds", "0.01", "--threads", "1,2", "--output", str(report)]
    )  # fmt: skip
    assert status == 0
    assert wavefront.chunk_count is count and wavefront.MAX_CHUNKS == limit
    assert wavefront.ENABLED == enabled
    text = report.read_text()
    assert "<!-- bench-layers:start -->" in text and "Load average" in text
    rows = [line.split(" | ") for line in text.splitlines() if "1x20x3x4" in line]
    assert [(row[0], row[2]) for row in rows] == [
        ("| vanilla", "2"), ("| elman", "2"), ("| vanilla", "3"), ("| elman", "3")
    ]  # fmt: skip
    assert all(row[3] == "1 (off)" for row in rows)  # too little work for chunks
    assert all(row[7].endswith("x") and row[11].endswith("x") for row in rows)
    assert "wavefront" in capsys.readouterr().out


def test_bench_layers_needs_two_layers_and_two_threads(capsys):
    assert main(["bench", "--layers", "1"]) == 2
    assert "--layers must be layer counts of 2 or more" in capsys.readouterr().err
    assert main(["bench", "--layers", "2", "--threads", "1"]) == 2
    assert "--layers compares one thread with more" in capsys.readouterr().err


def test_gemm_floor_makes_the_products_of_one_forward_and_backward_pass():
    generator = np.random.default_rng(1)
    steps, batch, inputs, rows, recurrent = 3, 2, 5, 8, 4

    def array(*size):
        return generator.standard_normal(size)

    x, weight_ih, weight_hh = (
        array(steps * batch, inputs),
        array(rows, inputs),
        array(rows, recurrent),
    )
    state, sources = array(batch, recurrent), array(steps * batch, recurrent)
    projected, net, d_state = (
        np.empty((steps * batch, rows)),
        np.empty((batch, rows)),
        np.empty((batch, recurrent)),
    )
    grads = (
        np.empty((rows, inputs)),
        np.empty((rows, recurrent)),
        np.empty((steps * batch, inputs)),
    )
    floor._gemms(x, weight_ih, weight_hh, np.ascontiguousarray(weight_hh.T), projected, state, net, d_state, sources, grads)  # fmt: skip
    np.testing.assert_allclose(projected, x @ weight_ih.T)
    np.testing.assert_allclose(net, state @ weight_hh.T)
    np.testing.assert_allclose(d_state, net @ weight_hh)
    np.testing.assert_allclose(grads[0], projected.T @ x)
    np.testing.assert_allclose(grads[1], projected.T @ sources)
    np.testing.assert_allclose(grads[2], projected @ weight_ih)
    spec = cell_spec("vanilla")
    assert floor.gemm_floor(spec, (2, 3, 5, 4), torch.float64, seconds=0.0) > 0
