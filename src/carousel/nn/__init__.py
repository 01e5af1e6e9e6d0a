"""Layers and cells: drop-in replacements for torch.nn's recurrent modules, for the whole LSTM family."""

from carousel.nn.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from carousel.nn.layers import GRU, LSTM, RNN
from carousel.nn.recurrent import Recurrent

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "Recurrent", "RecurrentCell"]
