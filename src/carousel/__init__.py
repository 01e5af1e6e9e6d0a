"""carousel: the LSTM of Hochreiter & Schmidhuber (1997) and its whole family, on PyTorch.

Start with :class:`carousel.LSTM` (a drop-in ``torch.nn.LSTM`` with ``variant=``), the cell specs in
:mod:`carousel.cells`, and the backends in :mod:`carousel.kernels`.
"""

from carousel.cells import VARIANTS, CellSpec, init, make_spec
from carousel.kernels.threads import apply_environment, get_num_threads, set_num_threads
from carousel.nn import GRU, LSTM, RNN, GRUCell, LSTMCell, Recurrent, RecurrentCell, RNNCell

__version__ = "0.1.0"

apply_environment()  # CAROUSEL_NUM_THREADS sets PyTorch's pool for all of carousel's CPU work

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "VARIANTS",
    "CellSpec",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "Recurrent",
    "RecurrentCell",
    "__version__",
    "get_num_threads",
    "init",
    "make_spec",
    "set_num_threads",
]
