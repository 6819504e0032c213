"""The PyTorch architectures every numerics test runs, built with realistic random weights.

Imported only by tests that have torch (and by tests/data/make_golden.py).
"""

import numpy as np
import torch


class Recurrent(torch.nn.Module):
    """nn.LSTM/nn.GRU (or a stack of cells) with an optional Linear head, run one step at a time."""

    def __init__(self, kind, input_size, hidden, layers=1, bias=True, proj_size=0, head=None, cells=False,
                 norm=False):
        super().__init__()
        self.kind, self.cells_mode = kind, cells
        if cells:
            Cell = torch.nn.LSTMCell if kind == "lstm" else torch.nn.GRUCell
            self.cells = torch.nn.ModuleList(
                [Cell(input_size if k == 0 else hidden, hidden, bias=bias) for k in range(layers)])
        elif kind == "lstm":
            self.rnn = torch.nn.LSTM(input_size, hidden, num_layers=layers, bias=bias, proj_size=proj_size)
        else:
            self.rnn = torch.nn.GRU(input_size, hidden, num_layers=layers, bias=bias)
        self.head = torch.nn.Linear(proj_size or hidden, head) if head else None
        if norm:
            self.register_buffer("input_mean", torch.linspace(-1, 1, input_size))
            self.register_buffer("input_std", torch.linspace(0.5, 2, input_size))
        self.norm = norm

    @torch.no_grad()
    def run(self, xs: np.ndarray) -> np.ndarray:
        """Feed (T, I) one sample at a time, carrying state (the RTNeural way)."""
        x = torch.from_numpy(xs)
        if self.norm:
            x = (x - self.input_mean) / self.input_std
        ys, state = [], None
        for t in range(len(x)):
            v = x[t:t + 1]
            if self.cells_mode:
                state = state or [None] * len(self.cells)
                for k, cell in enumerate(self.cells):
                    state[k] = cell(v, state[k])
                    v = state[k][0] if self.kind == "lstm" else state[k]
            else:
                out, state = self.rnn(v, state)
                v = out
            ys.append(self.head(v) if self.head is not None else v)
        return torch.cat(ys).numpy()


ARCHS = {
    # name: constructor kwargs
    "lstm_2layer_head": dict(kind="lstm", input_size=8, hidden=64, layers=2, head=3),
    "lstm_1layer": dict(kind="lstm", input_size=5, hidden=20),
    "lstm_3layer_nobias": dict(kind="lstm", input_size=4, hidden=17, layers=3, bias=False, head=2),
    "lstm_proj": dict(kind="lstm", input_size=6, hidden=32, layers=2, proj_size=12, head=1),
    "gru_2layer_head": dict(kind="gru", input_size=8, hidden=48, layers=2, head=2),
    "gru_nobias": dict(kind="gru", input_size=3, hidden=10, bias=False),
    "lstmcell_stack": dict(kind="lstm", input_size=7, hidden=24, layers=2, cells=True, head=1),
    "grucell_stack": dict(kind="gru", input_size=7, hidden=24, layers=3, cells=True),
    "lstm_norm": dict(kind="lstm", input_size=4, hidden=16, head=1, norm=True),
}


def build(name: str, seed: int = 0) -> Recurrent:
    torch.manual_seed(seed)
    net = Recurrent(**ARCHS[name]).eval()
    with torch.no_grad():          # realistic scale: PyTorch's init, plus a trained-looking forget bias
        for n, p in net.named_parameters():
            if "bias" in n and net.kind == "lstm" and p.shape[0] % 4 == 0:
                h = p.shape[0] // 4
                p[h:2 * h] += 0.5
    return net


def state_dict_arrays(net) -> dict:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
