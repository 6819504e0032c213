"""The in-memory model: the recurrent layers and the layers around them (layers.py).

Weights keep PyTorch's layout and gate order (LSTM rows i, f, g, o; GRU rows r, z, n), so a
spec can be checked against a state_dict by eye. Kernels pack their own layout from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError
from .layers import Affine, AttentionPool, CausalConv1d, Head, Linear, check_chain, frozen_f32, state_size
from .layers import arrays as layer_arrays
from .layers import config as layer_config
from .layers import describe as describe_layer
from .names import NO_NAMES, OutputNames, scores_of

GATES = {"lstm": 4, "gru": 3}


def content_hash(architecture: dict, arrays: dict) -> str:
    """SHA-256 over an architecture (JSON, sorted keys) and named float32 arrays: the model's
    identity, computed the same way over a spec and over what a deploy file stores."""
    h = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode())
    for name, a in sorted(arrays.items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class RecurrentLayer:
    """One unidirectional LSTM or GRU layer in PyTorch's layout (G = 4 for LSTM, 3 for GRU)."""

    kind: str                   # "lstm" | "gru"
    input_size: int             # I
    hidden_size: int            # H
    w_ih: np.ndarray            # (G*H, I)
    w_hh: np.ndarray            # (G*H, P or H)
    b_ih: np.ndarray            # (G*H,)  zeros for bias=False
    b_hh: np.ndarray            # (G*H,)
    w_hr: np.ndarray | None = None  # (P, H) LSTM projection (proj_size=P), else None
    w_peep: np.ndarray | None = None  # (3, H) peephole weights of gates i, f, o (LSTM only)

    def __post_init__(self):
        if self.kind not in GATES:
            raise ModelFormatError(f"unknown layer kind {self.kind!r}; expected 'lstm' or 'gru'")
        if self.w_hr is not None and self.kind != "lstm":
            raise ModelFormatError("a projection (weight_hr) exists only for LSTM layers")
        g = GATES[self.kind] * self.hidden_size
        out = self.output_size
        object.__setattr__(self, "w_ih", frozen_f32(self.w_ih, "weight_ih", (g, self.input_size)))
        object.__setattr__(self, "w_hh", frozen_f32(self.w_hh, "weight_hh", (g, out)))
        object.__setattr__(self, "b_ih", frozen_f32(self.b_ih, "bias_ih", (g,)))
        object.__setattr__(self, "b_hh", frozen_f32(self.b_hh, "bias_hh", (g,)))
        if self.w_hr is not None:
            object.__setattr__(self, "w_hr", frozen_f32(self.w_hr, "weight_hr", (out, self.hidden_size)))
        if self.w_peep is not None:
            if self.kind != "lstm":
                raise ModelFormatError("peephole weights exist only for LSTM layers")
            object.__setattr__(self, "w_peep", frozen_f32(self.w_peep, "peephole", (3, self.hidden_size)))

    @property
    def proj_size(self) -> int:
        return 0 if self.w_hr is None else int(self.w_hr.shape[0])

    @property
    def output_size(self) -> int:
        """Size of h, the layer's output: proj_size when projected, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c); c is empty for a GRU."""
        return self.output_size, (self.hidden_size if self.kind == "lstm" else 0)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"w_ih": self.w_ih, "w_hh": self.w_hh, "b_ih": self.b_ih, "b_hh": self.b_hh}
        if self.w_hr is not None:
            out["w_hr"] = self.w_hr
        if self.w_peep is not None:
            out["w_peep"] = self.w_peep
        return out


MODEL_PARTS = ("pre", "post")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run the model; hyper-parameters follow from the array shapes.

    x (I) -> pre layers -> recurrent layers -> post layers -> [head 0 | head 1 | ...] -> y (O)
    With no heads, y is post's output; with several, their outputs side by side in order.
    """

    layers: tuple[RecurrentLayer, ...]
    pre: tuple = ()             # layers applied to each input before the recurrent stack
    post: tuple = ()            # layers applied to the last recurrent layer's output
    heads: tuple[Head, ...] = ()
    source: dict = field(default_factory=dict, compare=False)  # provenance, not part of the hash
    # Labels or named outputs (names.py); not part of the hash either: the hash names what y is
    # computed from, which checkpoints and StreamStates are keyed by, so renaming a class keeps
    # every stream's state, and a model without names keeps the hash it always had.
    names: OutputNames = field(default=NO_NAMES, compare=False)

    def __post_init__(self) -> None:
        for name in ("layers", "pre", "post", "heads"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.layers:
            raise ModelFormatError("a model needs at least one recurrent layer")
        for k in range(1, len(self.layers)):
            below, layer = self.layers[k - 1], self.layers[k]
            if layer.input_size != below.output_size:
                raise ModelFormatError(
                    f"layer {k} expects input size {layer.input_size} but layer {k - 1} outputs "
                    f"{below.output_size}; the layers are not a stack"
                )
        if any(isinstance(layer, AttentionPool) for layer in self.pre):
            raise ModelFormatError("attention pooling pools the recurrent outputs; it cannot come before them")
        if any(isinstance(layer, CausalConv1d) for layer in self.post + self.head_layers):
            raise ModelFormatError("a causal convolution is supported as an input layer only")
        if not self.pre:
            n_in = self.layers[0].input_size
        else:
            n_in = self.pre[0].in_size
            if check_chain(self.pre, n_in, "input layers") != self.layers[0].input_size:
                raise ModelFormatError(f"the input layers output {self.pre[-1].out_size} values but the first "
                                       f"recurrent layer takes {self.layers[0].input_size}")
        trunk = check_chain(self.post, self.layers[-1].output_size, "output layers")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ModelFormatError(f"head names must be unique, got {names}")
        for h in self.heads:
            check_chain(h.layers, trunk, f"head {h.name!r}")
        self._sizes: tuple[int, int]        # (input size, trunk size); declared here, so not a dataclass field
        object.__setattr__(self, "_sizes", (n_in, trunk))
        if not isinstance(self.names, OutputNames):
            raise ModelFormatError(f"names must be an OutputNames, got {type(self.names).__name__}")
        self.names.check_fits(self.output_size, tuple(h.name for h in self.heads))

    @classmethod
    def classic(cls, layers, head: Linear | None = None, input_norm: Affine | None = None,
                output_norm: Affine | None = None, source: dict | None = None) -> ModelSpec:
        """The common shape: optional input normalisation, the stack, a Linear, de-normalisation."""
        post = tuple(x for x in (head, output_norm) if x is not None)
        return cls(tuple(layers), (input_norm,) if input_norm is not None else (), post, (), dict(source or {}))

    def classic_parts(self) -> tuple[Affine | None, Linear | None, Affine | None] | None:
        """(input normalisation, Linear, output de-normalisation), each optional, when the graph
        is just those around plain LSTM/GRU layers (what the CUDA kernel runs), else None."""
        if self.beyond_classic() is not None:
            return None
        pre, post = list(self.pre), list(self.post)
        norm = pre.pop(0) if pre else None
        head = post.pop(0) if post and isinstance(post[0], Linear) else None
        return norm, head, post[0] if post else None

    def beyond_classic(self) -> str | None:
        """What in the model is more than classic_parts() can hold, in words; None if nothing."""
        if any(layer.w_peep is not None for layer in self.layers):
            return "a peephole LSTM layer"
        if self.heads:
            return f"several named heads ({', '.join(h.name for h in self.heads)})"
        pre, post = list(self.pre), list(self.post)
        if pre and isinstance(pre[0], Affine) and not pre[0].shift.any():
            pre.pop(0)
        if pre:
            return f"the input layer {describe_layer(pre[0])}"
        if post and isinstance(post[0], Linear):
            post.pop(0)
        if post and isinstance(post[0], Affine) and not post[0].offset.any():
            post.pop(0)
        return f"the output layer {describe_layer(post[0])}" if post else None

    def with_names(self, names: OutputNames) -> ModelSpec:
        """The same model (the same hash) with these labels or output names; ModelFormatError if they do not fit."""
        return dataclasses.replace(self, names=names)

    @property
    def scores(self) -> str:
        """What y holds for a classifier (names.SCORES), from the layer that writes y; "logits"
        when several heads write it."""
        if len(self.heads) > 1:
            return "logits"
        chain = self.post + (self.heads[0].layers if self.heads else ())
        return scores_of(chain[-1] if chain else None)

    @property
    def head_layers(self) -> tuple:
        return tuple(layer for h in self.heads for layer in h.layers)

    @property
    def input_size(self) -> int:
        return self._sizes[0]

    @property
    def trunk_size(self) -> int:
        """Size of post's output, the vector every head reads."""
        return self._sizes[1]

    @property
    def outputs(self) -> list[tuple[str, int, int]]:
        """(name, first column, size) of each head in y; one unnamed 'y' without heads."""
        if not self.heads:
            return [("y", 0, self.trunk_size)]
        out, start = [], 0
        for h in self.heads:
            size = h.layers[-1].out_size if h.layers else self.trunk_size
            out.append((h.name, start, size))
            start += size
        return out

    @property
    def output_size(self) -> int:
        return sum(size for _, _, size in self.outputs)

    @property
    def recurrent_state_size(self) -> int:
        """Floats of h and c of every recurrent layer: the front of a stream's state row."""
        return sum(sum(layer.state_sizes) for layer in self.layers)

    @property
    def state_size(self) -> int:
        """Floats of state per stream: recurrent h and c, then the stateful layers' own."""
        return self.recurrent_state_size + sum(state_size(x) for x in self.pre + self.post + self.head_layers)

    def chains(self) -> list[tuple[str, tuple]]:
        """(array-name prefix, layers) for pre, post and each head, in order."""
        return [("pre.", self.pre), ("post.", self.post)] + [(f"heads.{h.name}.", h.layers) for h in self.heads]

    def named_arrays(self) -> dict[str, np.ndarray]:
        """Every array under a stable name; the deploy file and the content hash use these names."""
        out = {}
        for k, layer in enumerate(self.layers):
            out.update({f"layers.{k}.{name}": a for name, a in layer.arrays().items()})
        for prefix, chain in self.chains():
            for k, layer in enumerate(chain):
                out.update(layer_arrays(layer, f"{prefix}{k}."))
        return out

    def architecture(self) -> dict:
        """The hyper-parameters as JSON-ready data."""
        return {
            "layers": [
                {"kind": layer.kind, "input_size": layer.input_size, "hidden_size": layer.hidden_size,
                 "proj_size": layer.proj_size, "peephole": layer.w_peep is not None}
                for layer in self.layers
            ],
            "pre": [layer_config(x) for x in self.pre],
            "post": [layer_config(x) for x in self.post],
            "heads": [{"name": h.name, "layers": [layer_config(x) for x in h.layers]} for h in self.heads],
            "input_size": self.input_size,
            "output_size": self.output_size,
        }

    @property
    def parameter_count(self) -> int:
        return sum(a.size for a in self.named_arrays().values())

    def content_hash(self) -> str:
        """SHA-256 over the architecture and every weight: equal hash, equal model."""
        return content_hash(self.architecture(), self.named_arrays())

    def describe(self) -> str:
        """The whole graph, one line per layer, as `inspect` and `convert` print it."""
        lines = [f"  input {self.input_size}"]
        lines += [f"  pre:   {describe_layer(x)}" for x in self.pre]
        for k, layer in enumerate(self.layers):
            extra = (f", proj {layer.proj_size}" if layer.proj_size else "") + (", peephole" if layer.w_peep is not None
                                                                               else "")
            lines.append(f"  layer {k}: {layer.kind.upper()} {layer.input_size} -> {layer.hidden_size}{extra}")
        lines += [f"  post:  {describe_layer(x)}" for x in self.post]
        for h in self.heads:
            chain = " > ".join(describe_layer(x) for x in h.layers) or "(trunk as is)"
            lines.append(f"  head {h.name}: {chain}")
        lines.append(f"  output {self.output_size}")
        if self.names:
            lines.append(self.names.describe(self.scores))
        return "\n".join(lines)
