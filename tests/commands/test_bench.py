"""``carousel bench``: the table it prints and writes, and its argument errors."""

from __future__ import annotations

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
    assert cifg[10].endswith("x") and cifg[14].endswith("x")  # vs vanilla, vs the reference
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
