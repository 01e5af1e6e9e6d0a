"""Benchmark programs and their timing machinery: :mod:`.harness` (interleaved medians, GEMM peak,
markdown blocks), :mod:`.layers` (``carousel bench``). ``benchmarks/`` at the repository root
holds stand-alone programs built on them."""
