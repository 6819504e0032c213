"""edgelstm.from_torch: the user's own nn.Module, traced with torch.fx, as a streaming model.

On the training machine (torch installed). The module's forward() is traced symbolically;
each node is mapped to a layer of the graph (layers.py) or refused with its reason. The
result is then checked against the module itself on random sequences, step by step, before
it is returned: a conversion that does not reproduce the module is an error, not a file.

What the trace understands, on a (B, T, I) batch-first input:
  nn.LSTM / nn.GRU (unidirectional), their output sequence, h_n[-1], out[:, -1]
  nn.Linear / F.linear, nn.BatchNorm1d (eval), nn.LayerNorm, nn.Dropout (skipped)
  activations as modules, functions or methods (relu, tanh, sigmoid, gelu, leaky_relu, elu,
  silu, softmax / log_softmax over the last dimension)
  nn.Conv1d after a left-only F.pad (or with padding (K-1)*d and the look-ahead cropped):
  a causal convolution; transpose(1, 2) around convolutions and BatchNorm1d
  torch.cat([...], -1) of several outputs, or a tuple of outputs: named heads
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from ..errors import ModelFormatError
from .layers import Activation, Affine, CausalConv1d, Head, LayerNorm, Linear
from .spec import ModelSpec, RecurrentLayer
from .state_dict import spec_from_state_dict


@dataclass(frozen=True)
class _Value:
    """What a traced node holds: a per-step feature stream (the chain of layers from the input
    that made it), or an intermediate (the tuple an RNN returns, its h_n)."""

    chain: tuple               # layers and RecurrentLayer tuples, from the input
    size: int                  # features per step
    channels_first: bool = False   # (B, F, T), after transpose(1, 2)
    rnn: tuple | None = None   # for an RNN's result tuple / its h_n: the recurrent layers
    what: str = "seq"          # "seq" | "rnn_result" | "h_n" | "pad"
    pad: int = 0
    name: str = ""             # the module that produced it (names heads)
    last: bool = False         # the time axis was indexed away (out[:, -1], h_n[-1]): (B, F)


_ACTIVATION_MODULES = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "SiLU": "silu", "ELU": "elu",
                       "LeakyReLU": "leaky_relu", "GELU": "gelu", "Softmax": "softmax", "LogSoftmax": "log_softmax"}
_NO_OPS = ("Dropout", "Identity", "AlphaDropout")
_SHAPE_NO_OPS = ("contiguous", "clone", "float", "detach")


def _fail(node, why: str) -> NoReturn:
    raise ModelFormatError(f"from_torch: cannot stream node {node.name!r} ({node.op} {node.target}): {why}. "
                           f"Describe the model with arch= instead, or export ONNX")


class TorchView:
    """A live nn.Module as the mapper reads it: its kind, its tensors as NumPy, its attributes."""

    def __init__(self, module):
        self.module, self.kind = module, type(module).__name__

    def p(self, name: str):
        t = getattr(self.module, name, None)
        return None if t is None else t.detach().cpu().double().numpy()

    def a(self, name: str, default=None):
        return getattr(self.module, name, default)

    def state_dict(self) -> dict:
        return {k: t.detach().cpu().numpy() for k, t in self.module.state_dict().items()}


class _Mapper:
    """Maps calls on module views (TorchView, or a pickled module's view) to graph layers."""

    def __init__(self, views: dict, input_size: int):
        self.modules = views          # dotted path -> view
        self.input_size = input_size
        self.time_axis: int | None = None   # 1: (batch, time, features); 0: (time, batch, features)

    def set_time_axis(self, node, axis: int) -> None:
        if self.time_axis is not None and self.time_axis != axis:
            _fail(node, "batch-first and time-first tensors mixed in one forward()")
        self.time_axis = axis

    def value(self, env, arg):
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(env, a) for a in arg)
        if not hasattr(arg, "op"):
            return arg
        return env[arg]

    def seq(self, env, node, arg) -> _Value:
        v = self.value(env, arg)
        if not isinstance(v, _Value) or v.what != "seq":
            _fail(node, "its input is not a per-step feature vector")
        return v

    def extend(self, v: _Value, layer, name="") -> _Value:
        return _Value(v.chain + (layer,), layer.out_size, v.channels_first, name=name or v.name, last=v.last)

    def call_module(self, env, node) -> _Value:
        mod = self.modules[node.target]
        kind = mod.kind
        if kind in _NO_OPS:
            return self.seq(env, node, node.args[0])
        if kind in ("LSTM", "GRU"):
            return self.recurrent(env, node, mod)
        if kind == "Conv1d":
            return self.conv(env, node, mod)
        v = self.seq(env, node, node.args[0])
        if kind == "Linear":
            return self.extend(v, self.linear(mod.p("weight"), mod.p("bias"), node.target, v, node), node.target)
        if kind == "BatchNorm1d":
            if mod.p("running_mean") is None:
                _fail(node, "BatchNorm1d without running statistics (track_running_stats=False) uses batch statistics")
            w, b = mod.p("weight"), mod.p("bias")
            return self.extend(v, Affine.batch_norm(mod.p("running_mean"), mod.p("running_var"),
                                                    1.0 if w is None else w, 0.0 if b is None else b,
                                                    float(mod.a("eps", 1e-5)), node.target))
        if kind == "LayerNorm":
            w, b = mod.p("weight"), mod.p("bias")
            if v.channels_first or (w is not None and w.shape != (v.size,)):
                _fail(node, "LayerNorm must normalise the feature dimension only")
            return self.extend(v, LayerNorm(np.ones(v.size) if w is None else w,
                                            np.zeros(v.size) if b is None else b,
                                            float(mod.a("eps", 1e-5)), node.target))
        if kind in _ACTIVATION_MODULES:
            act = _ACTIVATION_MODULES[kind]
            dim = mod.a("dim")
            if act in ("softmax", "log_softmax") and dim not in (-1, 2, None) and not (dim == 1 and v.last):
                _fail(node, f"{kind} over dimension {dim}: only the feature dimension (-1) streams")
            alpha = {"leaky_relu": mod.a("negative_slope", 0.01), "elu": mod.a("alpha", 1.0)}.get(act, 0.0)
            if act == "gelu" and mod.a("approximate", "none") == "tanh":
                act = "gelu_tanh"
            return self.extend(v, Activation(act, v.size, alpha))
        _fail(node, f"{kind} is not a layer edgelstm streams")

    def linear(self, weight, bias, name, v, node) -> Linear:
        if v.channels_first:
            _fail(node, "a Linear over the time dimension needs the whole sequence")
        w = weight
        if w is None or w.ndim != 2 or w.shape[1] != v.size:
            _fail(node, f"Linear takes {None if w is None else w.shape} weights but receives {v.size} features")
        return Linear(w, np.zeros(w.shape[0]) if bias is None else bias, name)

    def recurrent(self, env, node, mod) -> _Value:
        v = self.seq(env, node, node.args[0])
        if len(node.args) > 1 or node.kwargs:
            _fail(node, "an initial state passed to the RNN: a stream starts from zero state")
        batch_first = mod.a("batch_first")
        if batch_first is None:
            _fail(node, "the RNN's batch_first is not recorded")
        self.set_time_axis(node, 1 if batch_first else 0)
        if v.channels_first:
            _fail(node, "the RNN receives (batch, features, time); transpose back first")
        sub = spec_from_state_dict(mod.state_dict(), head=False)
        if sub.layers[0].input_size != v.size:
            _fail(node, f"the RNN takes {sub.layers[0].input_size} features but receives {v.size}")
        layers = tuple(sub.layers)
        return _Value(v.chain + (layers,), layers[-1].output_size, rnn=layers, what="rnn_result", name=node.target)

    def conv(self, env, node, mod) -> _Value:
        v = self.value(env, node.args[0])
        if not isinstance(v, _Value) or not v.channels_first:
            _fail(node, "Conv1d needs a (batch, channels, time) input: x.transpose(1, 2)")
        weight, bias = mod.p("weight"), mod.p("bias")
        k, d = weight.shape[2], int(_first(mod.a("dilation", 1)))
        left = v.pad if v.what == "pad" else 0
        padding = mod.a("padding", 0)
        inner = int(_first(padding)) if not isinstance(padding, str) else -1
        if _first(mod.a("stride", 1)) != 1 or mod.a("groups", 1) != 1 or inner < 0:
            _fail(node, "only stride 1, groups 1 and numeric padding convolutions stream")
        if left + inner != (k - 1) * d or (left and inner):
            _fail(node, f"padding left {left}, both sides {inner}: a convolution that is not causal (left padding "
                        f"(K-1)*dilation = {(k - 1) * d}) needs future inputs")
        layer = CausalConv1d(weight, np.zeros(weight.shape[0]) if bias is None else bias, d, node.target)
        if layer.in_size != v.size:
            _fail(node, f"Conv1d takes {layer.in_size} channels but receives {v.size}")
        out = _Value(v.chain + (layer,), layer.out_size, True, name=node.target)
        return _Value(out.chain, out.size, True, what="crop" if inner else "seq", pad=inner)


def _first(value):
    """An nn.Conv1d hyper-parameter: a 1-tuple, or an int."""
    return value[0] if isinstance(value, (tuple, list)) else value


_ARITHMETIC = {"sub": "sub", "add": "add", "mul": "mul", "truediv": "div", "div": "div"}
_FUNCTIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "gelu": "gelu", "silu": "silu", "elu": "elu",
              "leaky_relu": "leaky_relu", "softmax": "softmax", "log_softmax": "log_softmax", "relu_": "relu"}


def _function_name(target) -> str:
    return getattr(target, "__name__", str(target))


class _Tracer(_Mapper):
    """Walks the fx graph node by node."""

    def run_placeholder(self) -> _Value:
        return _Value((), self.input_size)

    def run(self, graph) -> list[_Value]:
        env: dict = {}
        outputs: list[_Value] | None = None
        for node in graph.nodes:
            if node.op == "placeholder":
                if env:
                    _fail(node, "forward() takes more than one input")
                env[node] = _Value((), self.input_size)
            elif node.op == "get_attr":                 # a buffer such as input_mean: a constant
                owner, _, attr = str(node.target).rpartition(".")
                value = self.modules[owner].p(attr) if owner in self.modules else None
                if value is None:
                    _fail(node, "an attribute that is not a tensor of the module")
                env[node] = value
            elif node.op == "call_module":
                env[node] = self.call_module(env, node)
            elif node.op in ("call_function", "call_method"):
                env[node] = self.call(env, node)
            elif node.op == "output":
                outputs = self.outputs(env, node, node.args[0])
        if outputs is None:                             # torch.fx always ends a graph with one
            raise ModelFormatError("from_torch: the traced graph has no output node")
        return outputs

    def outputs(self, env, node, arg) -> list[_Value]:
        if isinstance(arg, (tuple, list)):
            return [v for a in arg for v in self.outputs(env, node, a)]
        v = self.value(env, arg)
        if isinstance(v, list):           # torch.cat of several heads
            return v
        return [self.seq(env, node, arg)]

    def call(self, env, node):
        name = _function_name(node.target)
        args = [self.value(env, a) for a in node.args]
        if node.target is operator.getitem:
            return self.getitem(node, *args)
        if name in _SHAPE_NO_OPS or name == "dropout":
            return args[0]
        if name in _ARITHMETIC:
            return self.arithmetic(node, _ARITHMETIC[name], args)
        if name in ("squeeze", "unsqueeze", "view", "reshape", "flatten"):
            return self.reshape(node, args[0])
        if name in ("transpose", "permute"):
            return self.transpose(node, args[0], args[1:])
        if name == "pad":
            return self.pad(node, args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("pad"))
        if name == "cat":
            return self.concat(node, args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0))
        if name == "linear":
            v = self.seq(env, node, node.args[0])
            weight, bias = (self.param(node, a) for a in (list(node.args[1:3]) + [None])[:2])
            return self.extend(v, self.linear(weight, bias, "", v, node))
        if name in _FUNCTIONS:
            return self.activation(env, node, _FUNCTIONS[name])
        _fail(node, f"the operation {name!r} is not one edgelstm streams")

    def arithmetic(self, node, op: str, args):
        """x - c, x / c, x * c, x + c with a constant c (a number or a (F,) buffer): an Affine."""
        if len(args) != 2 or not isinstance(args[0], _Value) or args[0].what != "seq":
            _fail(node, f"{op} of something other than a feature stream and a constant")
        v, c = args
        c = np.asarray(c, dtype=np.float64)
        if c.ndim > 1 or (c.ndim == 1 and c.shape != (v.size,)) or v.channels_first:
            _fail(node, f"{op} with a constant of shape {c.shape}: only a number or one value per feature streams")
        if op == "div" and not np.all(c != 0):
            _fail(node, "division by zero")
        parts: dict[str, tuple[Any, Any, Any]] = {      # numbers or (F,) arrays: Affine broadcasts them
            "sub": (c, 1.0, 0.0), "add": (0.0, 1.0, c), "mul": (0.0, c, 0.0),
            "div": (0.0, 1.0 / c if op == "div" else 1.0, 0.0)}
        offset, scale, shift = parts[op]
        return self.extend(v, Affine(np.broadcast_to(offset, (v.size,)), scale, shift, f"{op} in forward()"))

    def param(self, node, arg):
        if arg is None:
            return None
        _fail(node, "F.linear with weights from attributes: use nn.Linear")

    def activation(self, env, node, act: str):
        v = self.seq(env, node, node.args[0])
        kw = dict(node.kwargs)
        if act in ("softmax", "log_softmax"):
            dim = node.args[1] if len(node.args) > 1 else kw.get("dim")
            if dim not in (-1, 2) and not (dim == 1 and self._is_last(v)):
                _fail(node, f"{act} over dimension {dim}: only the feature dimension (-1) streams")
        alpha = 0.0
        if act == "leaky_relu":
            alpha = node.args[1] if len(node.args) > 1 else kw.get("negative_slope", 0.01)
        elif act == "elu":
            alpha = node.args[1] if len(node.args) > 1 else kw.get("alpha", 1.0)
        elif act == "gelu" and kw.get("approximate", "none") == "tanh":
            act = "gelu_tanh"
        return self.extend(v, Activation(act, v.size, float(alpha)))

    @staticmethod
    def _is_last(v: _Value) -> bool:
        return v.what == "seq" and v.last

    def getitem(self, node, v, index):
        if isinstance(v, _Value) and v.what == "rnn_result":
            if index == 0:
                return _Value(v.chain, v.size, name=v.name)
            if index == 1:
                return _Value(v.chain, v.size, rnn=v.rnn, what="h_n", name=v.name)
            _fail(node, "unexpected index into an RNN's result")
        if isinstance(v, _Value) and v.what == "h_n":
            if index == 0 and v.rnn[0].kind == "lstm":
                return v                                  # (h_n, c_n)[0]
            if index == -1 or index == len(v.rnn) - 1:
                return _Value(v.chain, v.size, name=v.name, last=True)    # the last layer's h: out[:, -1]
            _fail(node, "only the last layer's final state h_n[-1] is the streaming output")
        if not isinstance(v, _Value):
            _fail(node, "indexing something that is not a feature stream")
        if v.what == "crop":
            if isinstance(index, tuple) and len(index) == 3 and index[2] == slice(None, -v.pad, None):
                return _Value(v.chain, v.size, True, name=v.name)
            _fail(node, f"a Conv1d with padding {v.pad} on both sides must be cropped with [..., :-{v.pad}]")
        if v.channels_first:
            _fail(node, "indexing a (batch, channels, time) tensor")
        index = index if isinstance(index, tuple) else (index,)
        full = slice(None)
        last = ((full, -1), (full, -1, full), (full, -1, Ellipsis)) if self.time_axis != 0 else \
            ((-1,), (-1, full), (-1, full, full), (-1, Ellipsis))
        if index in last and not v.last:
            return _Value(v.chain, v.size, name=v.name, last=True)     # out[:, -1]: each step, streamed
        if index in ((full,), (full, full), (Ellipsis,), (full, full, full)):
            return v
        _fail(node, f"the index {index!r} selects features or past steps")

    def reshape(self, node, v):
        if isinstance(v, _Value) and v.what == "seq":
            return v               # a squeeze/unsqueeze of a batch or time axis of size 1
        _fail(node, "reshaping something that is not a feature stream")

    def transpose(self, node, v, dims):
        self.set_time_axis(node, 1)        # (batch, time, features) <-> (batch, features, time)
        dims = tuple(d for d in dims if isinstance(d, int))
        if not isinstance(v, _Value) or v.what not in ("seq",) or sorted(dims[-2:]) not in ([1, 2], [-2, -1]):
            if not (isinstance(v, _Value) and dims in ((0, 2, 1),)):
                _fail(node, "only transpose(1, 2) between (batch, time, features) and (batch, features, time)")
        return _Value(v.chain, v.size, not v.channels_first, name=v.name)

    def pad(self, node, v, pad):
        if not isinstance(v, _Value) or not v.channels_first or not isinstance(pad, (tuple, list)) or len(pad) != 2:
            _fail(node, "only F.pad(x, (left, 0)) on a (batch, channels, time) tensor streams")
        left, right = pad
        if right:
            _fail(node, f"padding {right} on the right: the layer that follows looks ahead and needs future inputs")
        return _Value(v.chain, v.size, True, what="pad", pad=int(left), name=v.name)

    def concat(self, node, parts, dim):
        if dim not in (-1, 2) or not isinstance(parts, (list, tuple)):
            _fail(node, "only torch.cat([...], dim=-1) of outputs streams")
        if not all(isinstance(p, _Value) and p.what == "seq" and not p.channels_first for p in parts):
            _fail(node, "torch.cat of something that is not a (batch, time, features) output")
        return list(parts)


def _assemble(outputs: list[_Value], source: dict) -> ModelSpec:
    """The ModelSpec whose outputs are `outputs` (one chain each, sharing a prefix)."""
    chains = [o.chain for o in outputs]
    common = 0
    while all(len(c) > common for c in chains) and all(c[common] is chains[0][common] for c in chains):
        common += 1
    trunk = chains[0][:common]
    recurrent = [k for k, item in enumerate(trunk) if isinstance(item, tuple)]
    if len(recurrent) != 1:
        raise ModelFormatError("from_torch: the outputs must share exactly one recurrent block (nn.LSTM/nn.GRU); "
                               f"found {len(recurrent)} on the shared path")
    k = recurrent[0]
    layers: tuple[RecurrentLayer, ...] = trunk[k]
    if len(outputs) == 1:
        return ModelSpec(layers, trunk[:k], trunk[k + 1:], source=source)
    heads, seen = [], set()
    for n, (out, chain) in enumerate(zip(outputs, chains)):
        name = (out.name or f"out{n}").replace(".", "_")
        name = name if name.isidentifier() and name not in seen else f"out{n}"
        seen.add(name)
        heads.append(Head(name, chain[common:]))
    return ModelSpec(layers, trunk[:k], trunk[k + 1:], tuple(heads), source=source)


def from_torch(module, example_input, *, steps: int = 64, atol: float = 1e-5, path=None,
               status=None) -> ModelSpec:
    """The streaming model of `module` (an nn.Module taking (batch, time, features)), checked
    against the module on random inputs shaped like `example_input` before it is returned.

    steps: length of the random sequences the check streams; atol: the largest difference
    allowed; path: also write the .elstm file there; status: told each step as it starts
    (tracing, checking), or None. Raises ModelFormatError naming the node that cannot
    stream, or the difference when the check fails."""
    import torch
    import torch.fx

    say = status or (lambda text: None)
    say(f"tracing {type(module).__name__} (torch.fx)")
    module = module.eval()
    n_in = int(example_input.shape[-1])
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:     # data-dependent control flow, loops over x.shape, ...
        raise ModelFormatError(f"from_torch: torch.fx cannot trace {type(module).__name__}.forward ({exc}). "
                               f"Describe the model with arch= instead, or export ONNX") from None
    views = {path: TorchView(m) for path, m in module.named_modules()}
    tracer = _Tracer(views, n_in)
    spec = _assemble(tracer.run(graph), {"format": "torch.fx", "module": type(module).__name__})
    say("checking against the module (a first run also compiles the kernels)")
    _check(module, spec, n_in, steps, atol, time_first=tracer.time_axis == 0)
    if path is not None:
        from . import deploy
        deploy.save(spec, path)
    return spec


def module_outputs(module, xs: np.ndarray, time_first: bool = False) -> np.ndarray:
    """The module run over one sequence xs (T, I): (T, O) per-step outputs, or (1, O) for a
    last-step model; several outputs side by side, as heads are."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(xs)
        out = module(x[:, None] if time_first else x[None])
    parts = out if isinstance(out, (tuple, list)) else (out,)
    return torch.cat([(p.transpose(0, 1) if time_first else p).reshape(1, -1, p.shape[-1]) if p.dim() == 3
                      else p.reshape(1, 1, -1) for p in parts], -1)[0].double().numpy()


def _check(module, spec: ModelSpec, n_in: int, steps: int, atol: float, time_first: bool = False) -> None:
    """Stream random sequences and compare with the module, at every step it outputs."""
    from ..engine import Model
    rng = np.random.default_rng(0)
    model = Model(spec)
    worst = 0.0
    for length in (steps, max(1, steps // 3)):
        xs = rng.normal(0, 1, (length, n_in)).astype(np.float32)
        expected = module_outputs(module, xs, time_first)
        streamed = model.stream().step_many(xs)
        got = streamed if expected.shape[0] == length else streamed[-1:]
        if got.shape != expected.shape:
            raise ModelFormatError(f"from_torch: the module outputs {tuple(expected.shape)} per sequence but the "
                                   f"traced model gives {tuple(got.shape)}; describe it with arch= instead")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= atol:
        raise ModelFormatError(f"from_torch: the traced model differs from the module by {worst:.2e} (> {atol:g}); "
                               f"forward() does something the trace did not see. Describe it with arch= or "
                               f"export ONNX")
