"""Applications: LSTMs on real data that ships with Python and its scientific libraries, each
against an honest baseline (``carousel app NAME``; ``docs/applications.md`` has the results).

=============  ==============================================================================
``charlm``     character-level language model of Python's bundled documentation text
               (``pydoc_data.topics``); bits per character against a Kneser-Ney n-gram model
``tagging``    a bidirectional LSTM tags each character of standard-library source files with
               the token type :mod:`tokenize` gives it; against the majority tag per character
``digits``     scikit-learn's 8x8 digits read row by row (8 steps) or pixel by pixel (64 steps);
               against logistic regression on the flat pixels
``forecast``   statsmodels' sunspots (yearly) and CO2 (weekly) series, multi-step forecasts of
               a held-out tail; against persistence and ARIMA
``addition``   encoder-decoder that learns written addition ("357+68" -> "425"), greedy and
               beam decoding, tested on longer numbers than it was trained on
=============  ==============================================================================

Each application is one module with ``NAME``, ``TITLE``, ``METRICS``, ``config(quick)`` and
``report(task, model, out_dir, quiet)``; :func:`carousel.applications.runner.run_application`
runs it (see :mod:`carousel.applications.runner`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

APPLICATIONS = ("charlm", "tagging", "digits", "forecast", "addition")
"""The applications' names, in the order ``carousel app all`` runs them."""


def get(name: str) -> ModuleType:
    """The module of application ``name``."""
    if name not in APPLICATIONS:
        raise ValueError(f"unknown application {name!r}; the applications are {list(APPLICATIONS)}")
    return importlib.import_module(f"carousel.applications.{name}")


__all__ = ["APPLICATIONS", "get"]
