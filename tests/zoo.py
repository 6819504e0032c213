"""A zoo of LSTM/GRU models written the way tutorials and public repositories write them, each
with the arch text a user gives for its bare state_dict.

Every forward() takes a whole (B, T, I) batch-first sequence and returns (B, T, O): the output
after each step, which is what streaming one reading at a time must reproduce. Imported only
by tests that have torch (and by tests/data/make_golden.py).
"""

import torch
import torch.nn.functional as F
from torch import nn


def _recurrent(kind, *args, **kw):
    return (nn.LSTM if kind == "lstm" else nn.GRU)(*args, batch_first=True, **kw)


class MlpHead(nn.Module):
    """The most common tutorial classifier: RNN, then Sequential(Linear, ReLU, Dropout, Linear)."""

    def __init__(self, kind="lstm", n_in=6, hidden=16, n_out=3, act=nn.ReLU, final=None, **rnn):
        super().__init__()
        self.rnn = _recurrent(kind, n_in, hidden, **rnn)
        width = rnn.get("proj_size") or hidden
        self.head = nn.Sequential(nn.Linear(width, 12), act(), nn.Dropout(0.2), nn.Linear(12, n_out))
        self.final = final

    def forward(self, x):
        out, _ = self.rnn(x)
        y = self.head(out)
        return self.final(y) if self.final is not None else y


class ReluBeforeHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 20, num_layers=2, batch_first=True)
        self.fc = nn.Linear(20, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(F.relu(out))


class InputLayers(nn.Module):
    """An input projection (optionally after BatchNorm1d or LayerNorm) before the recurrent layer."""

    def __init__(self, norm=None, kind="lstm", act=None):
        super().__init__()
        self.norm = {"batch": nn.BatchNorm1d(5), "layer": nn.LayerNorm(5), None: None}[norm]
        self.embed = nn.Linear(5, 8)
        self.act = act
        self.rnn = _recurrent(kind, 8, 14)
        self.out = nn.Linear(14, 1)

    def forward(self, x):
        if isinstance(self.norm, nn.BatchNorm1d):
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.norm is not None:
            x = self.norm(x)
        v = self.embed(x)
        v = self.act(v) if self.act is not None else v
        out, _ = self.rnn(v)
        return self.out(out)


class NormAfter(nn.Module):
    def __init__(self, kind="lstm", final=None):
        super().__init__()
        self.rnn = _recurrent(kind, 4, 18)
        self.ln = nn.LayerNorm(18)
        self.fc = nn.Linear(18, 3)
        self.final = final

    def forward(self, x):
        out, _ = self.rnn(x)
        y = self.fc(self.ln(out))
        return self.final(y) if self.final is not None else y


class TwoHeads(nn.Module):
    """A classifier and a regressor sharing one LSTM: both outputs wanted."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 16, batch_first=True)
        self.cls = nn.Linear(16, 4)
        self.reg = nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.cat([torch.softmax(self.cls(out), -1), self.reg(out)], -1)


class AttentionPooling(nn.Module):
    """Attention pooling over the outputs so far: out_t = sum_{u<=t} softmax(score)_u h_u."""

    def __init__(self, kind="lstm", mlp_score=False):
        super().__init__()
        self.rnn = _recurrent(kind, 4, 16)
        self.attn = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1)) if mlp_score else nn.Linear(16, 1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.rnn(x)                                   # (B, T, H)
        score = self.attn(out).squeeze(-1)                     # (B, T)
        T = out.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool).tril()     # step t sees u <= t
        weights = torch.softmax(score[:, None, :].masked_fill(~causal, float("-inf")), -1)   # (B, T, T)
        return self.fc(weights @ out)


class CausalConvInput(nn.Module):
    """A causal Conv1d feature extractor (left padding only) feeding the recurrent layer."""

    def __init__(self, dilation=1, kind="lstm"):
        super().__init__()
        self.conv = nn.Conv1d(4, 10, kernel_size=3, dilation=dilation)
        self.pad = 2 * dilation
        self.rnn = _recurrent(kind, 10, 12)
        self.fc = nn.Linear(12, 1)

    def forward(self, x):
        v = F.relu(self.conv(F.pad(x.transpose(1, 2), (self.pad, 0)))).transpose(1, 2)
        out, _ = self.rnn(v)
        return self.fc(out)


class CellStack(nn.Module):
    """LSTMCell layers in a ModuleList, stepped in a Python loop, with an MLP head."""

    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.LSTMCell(3, 12), nn.LSTMCell(12, 12)])
        self.head = nn.Sequential(nn.Linear(12, 6), nn.GELU(), nn.Linear(6, 2))

    def forward(self, x):
        state = [None, None]
        ys = []
        for t in range(x.shape[1]):
            v = x[:, t]
            for k, cell in enumerate(self.cells):
                state[k] = cell(v, state[k])
                v = state[k][0]
            ys.append(self.head(v))
        return torch.stack(ys, 1)


class ThreeHeads(nn.Module):
    """One GRU trunk with a shared ReLU layer and three heads (class, level, anomaly score)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 20, num_layers=2, batch_first=True)
        self.shared = nn.Linear(20, 16)
        self.cls = nn.Linear(16, 3)
        self.level = nn.Linear(16, 1)
        self.anomaly = nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.gru(x)
        z = F.relu(self.shared(out))
        return torch.cat([F.log_softmax(self.cls(z), -1), self.level(z), torch.sigmoid(self.anomaly(z))], -1)


class ConvNormStack(nn.Module):
    """Causal conv (kernel 5) > BatchNorm1d > SiLU > 2-layer LSTM with projection > LayerNorm > Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, kernel_size=5)
        self.bn = nn.BatchNorm1d(8)
        self.lstm = nn.LSTM(8, 24, num_layers=2, proj_size=10, batch_first=True)
        self.norm = nn.LayerNorm(10)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        v = self.conv(F.pad(x.transpose(1, 2), (4, 0)))
        v = F.silu(self.bn(v)).transpose(1, 2)
        out, _ = self.lstm(v)
        return self.fc(self.norm(out))


class Deep(nn.Module):
    """Three stacked layers without biases, an input ELU projection and a GELU MLP head."""

    def __init__(self, kind="lstm"):
        super().__init__()
        self.inp = nn.Linear(4, 12)
        self.rnn = _recurrent(kind, 12, 12, num_layers=3, bias=False)
        self.head = nn.Sequential(nn.Linear(12, 12), nn.GELU(), nn.Dropout(0.1), nn.Linear(12, 1))

    def forward(self, x):
        out, _ = self.rnn(F.elu(self.inp(x)))
        return self.head(out)


class GruCellStack(nn.Module):
    """GRUCells in a ModuleList with a Tanh > Linear head."""

    def __init__(self):
        super().__init__()
        self.cells = nn.ModuleList([nn.GRUCell(4, 10), nn.GRUCell(10, 8)])
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        state = [None, None]
        ys = []
        for t in range(x.shape[1]):
            v = x[:, t]
            for k, cell in enumerate(self.cells):
                state[k] = cell(v, state[k])
                v = state[k]
            ys.append(self.fc(torch.tanh(v)))
        return torch.stack(ys, 1)


# name: (constructor, arch text for its state_dict)
ZOO = {
    "lstm_mlp_head": (lambda: MlpHead(), "lstm > linear(head.0) > relu > dropout > linear(head.3)"),
    "gru_mlp_head_softmax": (lambda: MlpHead("gru", act=nn.Tanh, final=lambda y: torch.softmax(y, -1)),
                             "gru > linear(head.0) > tanh > linear(head.3) > softmax"),
    "lstm2_mlp_head_sigmoid": (lambda: MlpHead(num_layers=2, final=torch.sigmoid, act=nn.SiLU),
                               "lstm > linear(head.0) > silu > linear(head.3) > sigmoid"),
    "lstm_proj_mlp_head": (lambda: MlpHead(proj_size=6, act=lambda: nn.LeakyReLU(0.2)),
                           "lstm > linear(head.0) > leaky_relu(0.2) > linear(head.3)"),
    "gru_mlp_head_log_softmax": (lambda: MlpHead("gru", act=nn.ELU, final=lambda y: F.log_softmax(y, -1)),
                                 "gru > linear(head.0) > elu > linear(head.3) > log_softmax"),
    "lstm_relu_before_head": (ReluBeforeHead, "lstm > relu > linear(fc)"),
    "linear_input": (lambda: InputLayers(), "linear(embed) > lstm > linear(out)"),
    "linear_tanh_input_gru": (lambda: InputLayers(kind="gru", act=torch.tanh),
                              "linear(embed) > tanh > gru > linear(out)"),
    "batchnorm_input": (lambda: InputLayers("batch"), "batchnorm(norm) > linear(embed) > lstm > linear(out)"),
    "layernorm_input_gelu": (lambda: InputLayers("layer", act=lambda v: F.gelu(v, approximate="tanh")),
                             "layernorm(norm) > linear(embed) > gelu_tanh > lstm > linear(out)"),
    "lstm_layernorm_after": (lambda: NormAfter(), "lstm > layernorm(ln) > linear(fc)"),
    "gru_layernorm_softmax": (lambda: NormAfter("gru", final=lambda y: torch.softmax(y, -1)),
                              "gru > layernorm(ln) > linear(fc) > softmax"),
    "two_heads": (TwoHeads, "lstm > {label: linear(cls) > softmax, level: linear(reg)}"),
    "attention_pool": (lambda: AttentionPooling(), "lstm > attention(attn) > linear(fc)"),
    "attention_pool_mlp_gru": (lambda: AttentionPooling("gru", mlp_score=True),
                               "gru > attention(attn.0, tanh, attn.2) > linear(fc)"),
    "causal_conv": (lambda: CausalConvInput(), "conv(conv) > relu > lstm > linear(fc)"),
    "causal_conv_dilated_gru": (lambda: CausalConvInput(dilation=2, kind="gru"),
                                "conv(conv, dilation=2) > relu > gru > linear(fc)"),
    "lstmcell_stack_gelu_head": (CellStack, "lstm > linear(head.0) > gelu > linear(head.2)"),
    "grucell_stack_tanh_head": (GruCellStack, "gru > tanh > linear(fc)"),
    "three_heads_gru": (ThreeHeads, "gru > linear(shared) > relu > {cls: linear(cls) > log_softmax, "
                                    "level: linear(level), anomaly: linear(anomaly) > sigmoid}"),
    "conv_bn_silu_lstm_proj_layernorm": (ConvNormStack, "conv(conv) > batchnorm(bn) > silu > lstm > layernorm(norm) > "
                                                        "linear(fc)"),
    "deep_lstm_nobias_elu_gelu": (lambda: Deep("lstm"), "linear(inp) > elu > lstm > linear(head.0) > gelu > "
                                                        "linear(head.3)"),
    "deep_gru_nobias_elu_gelu": (lambda: Deep("gru"), "linear(inp) > elu > gru > linear(head.0) > gelu > "
                                                      "linear(head.3)"),
    "gru_layernorm_after": (lambda: NormAfter("gru"), "gru > layernorm(ln) > linear(fc)"),
    "lstm_mlp_head_tanh_softmax": (lambda: MlpHead(act=nn.Tanh, final=lambda y: torch.softmax(y, -1), hidden=32),
                                   "lstm > linear(head.0) > tanh > linear(head.3) > softmax"),
    "gru2_proj_free_silu_head": (lambda: MlpHead("gru", num_layers=2, act=nn.SiLU),
                                 "gru > linear(head.0) > silu > linear(head.3)"),
    "lstm_batchnorm_relu_input": (lambda: InputLayers("batch", act=torch.relu),
                                  "batchnorm(norm) > linear(embed) > relu > lstm > linear(out)"),
    "gru_layernorm_input": (lambda: InputLayers("layer", kind="gru"), "layernorm(norm) > linear(embed) > gru > "
                                                                       "linear(out)"),
    "causal_conv_gru_k3": (lambda: CausalConvInput(kind="gru"), "conv(conv) > relu > gru > linear(fc)"),
    "attention_pool_mlp_lstm": (lambda: AttentionPooling("lstm", mlp_score=True),
                                "lstm > attention(attn.0, tanh, attn.2) > linear(fc)"),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The zoo model, with PyTorch's init, non-trivial norm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = ZOO[name][0]()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


@torch.no_grad()
def run(net: nn.Module, xs):
    """(T, I) float32 NumPy -> (T, O) outputs of the whole-sequence forward."""
    return net(torch.from_numpy(xs)[None])[0].numpy()


class LastStep(nn.Module):
    """The sequence classifier of most tutorials: fc(out[:, -1, :]); streamed, each reading's
    output is what the model would say if the sequence ended there."""

    def __init__(self, kind="lstm"):
        super().__init__()
        self.rnn = _recurrent(kind, 3, 10, num_layers=2)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return torch.log_softmax(self.fc(out[:, -1, :]), dim=1)


class FinalHidden(nn.Module):
    """The other common form: the last layer's final hidden state h_n[-1]."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 10, num_layers=2, batch_first=True)
        self.fc = nn.Linear(10, 1)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return torch.sigmoid(self.fc(h[-1]))
