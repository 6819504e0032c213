"""export-c's layer graph: the calls the generated step makes, and the C they need.

The step is a straight-line sequence of calls, one per layer, each to a small static function
of templates/layers.c.in (copied into the .c only when the model uses that kind). Vectors
between layers live in the caller's x and y, the stream's state (the recurrent h, never
written by the layers after it) or small static scratch buffers; `Program` picks which,
reusing a buffer once its vector is dead and writing in place where the layer allows, so the
last layers of the output write straight into y.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError
from ..model.layers import Activation, Affine, AttentionPool, CausalConv1d, LayerNorm, Linear
from ..model.layers import describe as describe_layer

TEMPLATES = Path(__file__).resolve().parent / "templates"
IN_PLACE = (Affine, LayerNorm, Activation, AttentionPool)      # may write over their input
ACTIVATIONS = {"relu": "relu", "leaky_relu": "leaky_relu", "elu": "elu", "tanh": "tanh_layer",
               "sigmoid": "sigmoid_layer", "gelu": "gelu", "gelu_tanh": "gelu_tanh", "silu": "silu",
               "softmax": "softmax", "log_softmax": "log_softmax"}
WITH_ALPHA = ("leaky_relu", "elu")
LIBM = re.compile(r"\b(expf|erff|logf|sqrtf|tanhf)\b")


def _sections() -> dict[str, str]:
    """layers.c.in as {kind: C text}, in the file's order."""
    parts = re.split(r"^/\*== (\w+) ==\*/\n", (TEMPLATES / "layers.c.in").read_text(), flags=re.M)
    return {parts[k]: parts[k + 1].strip() for k in range(1, len(parts), 2)}


SECTIONS = _sections()


def float_literal(v) -> str:
    """A C float literal that reads back as exactly this float32 (9 significant digits)."""
    text = f"{float(np.float32(v)):.9g}"
    return text + ("f" if any(ch in text for ch in ".e") else ".0f")


def comment(text: str) -> str:
    """`text` made safe inside a C comment (names come from model files)."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    return re.sub(r"\?+", "?", text.replace("*/", "* /"))


def u16(n: int, what: str) -> int:
    if not 0 <= n <= 0xFFFF:
        raise ModelFormatError(f"export-c: {what} is {n}; the generated C holds sizes up to 65535")
    return int(n)


def _at(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


def _state(at: int) -> str:
    return f"s->v + {at}" if at else "s->v"


class Program:
    """The model's step as C: the functions, constants, scratch buffers and calls it needs.
    `arrays` (c_source._Arrays) collects the weight arrays as each layer asks for them."""

    def __init__(self, spec, arrays):
        self.arrays, self.used, self.consts, self.calls = arrays, set(), [], []
        self.buffers: list[int] = []            # sizes of scratch_0, scratch_1, ...
        self.table, self.layout = [], ["[h_0, c_0, h_1, c_1, ...] (no c for GRU layers)"]
        self.state_at, self.trunk_size = spec.recurrent_state_size, spec.trunk_size
        src = self.chain(spec.pre, "x", "PRE_", "pre.")
        src = self.recurrent(spec, src)
        if not spec.heads:
            self.chain(spec.post, src, "POST_", "post.", out="y")
        else:
            trunk = self.chain(spec.post, src, "POST_", "post.")
            for k, (head, (_, start, _)) in enumerate(zip(spec.heads, spec.outputs)):
                self.chain(head.layers, trunk, f"HEAD{k}_", f"heads.{head.name}.", frozenset({trunk}),
                           f"y + {start}" if start else "y")
        self.scratch_h = max(layer.hidden_size for layer in spec.layers)

    # --- what render() puts into the templates ---

    def functions(self) -> str:
        return "\n\n".join(text for kind, text in SECTIONS.items() if kind in self.used)

    def libm(self) -> list[str]:
        return sorted({f for kind in self.used for f in LIBM.findall(SECTIONS[kind])})

    def scratch(self) -> str:
        return "".join(f"static float scratch_{k}[{n}];\n" for k, n in enumerate(self.buffers))

    @property
    def scratch_floats(self) -> int:
        return self.scratch_h + sum(self.buffers)

    # --- the plan ---

    def buffer(self, size: int, busy) -> str:
        """The first scratch buffer not holding a live vector, grown to `size` floats if need be."""
        k = next((k for k in range(len(self.buffers)) if f"scratch_{k}" not in busy), len(self.buffers))
        if k == len(self.buffers):
            self.buffers.append(0)
        self.buffers[k] = max(self.buffers[k], size)
        return f"scratch_{k}"

    def chain(self, chain, src: str, prefix: str, where: str, busy=frozenset(), out: str | None = None) -> str:
        """Calls applying `chain` to the vector at src; returns where the result is. With `out`
        (only for the chains ending in y, whose input is the trunk), the result goes there: the
        last layer that cannot work in place writes it, the ones after it work on it in place.
        Vectors in `busy` are kept intact."""
        if out is not None and not chain:
            self.calls.append(f"    for (i = 0; i < {u16(self.trunk_size, 'an output')}; i++) "
                              f"{_at(out)}[i] = {_at(src)}[i];")
            return out
        direct = max([k for k, x in enumerate(chain) if not isinstance(x, IN_PLACE)], default=0)
        for k, layer in enumerate(chain):
            name, at, score = f"{prefix}{k}", f"{where}{k}", None
            if isinstance(layer, AttentionPool):       # its score first, from the intact input
                state = self._claim(layer, at, "m, d, acc")
                score = self.chain(layer.score, src, name + "_SCORE_", at + ".score.", busy | {src})
            if out is not None and k >= direct:
                dst = out
            elif isinstance(layer, IN_PLACE) and src.startswith("scratch_") and src not in busy:
                dst = src
            else:
                dst = self.buffer(layer.out_size, busy | {src, score})
            if score is not None:
                self.used.add("attention")
                self.calls.append(f"    attention_pool({layer.in_size}, {src}, {_at(score)}[0], {state}, {dst});"
                                  + self._note(layer, at))
            else:
                self.layer(layer, name, at, src, dst)
            src = dst
        return src

    def recurrent(self, spec, src: str) -> str:
        at = 0
        for k, layer in enumerate(spec.layers):
            p, a = f"L{k}", self.arrays
            w_hr = a.matrix(f"{p}_W_HR", layer.w_hr) if layer.w_hr is not None else "{NULL, NULL, 0}"
            peep = a.floats(f"{p}_PEEP", layer.w_peep) if layer.w_peep is not None else "NULL"
            self.table.append(
                f"    {{{int(layer.kind == 'lstm')}, {u16(layer.hidden_size, 'a hidden size')}, "
                f"{layer.output_size}, {a.matrix(f'{p}_W_IH', layer.w_ih)}, {a.matrix(f'{p}_W_HH', layer.w_hh)}, "
                f"{w_hr}, {a.floats(f'{p}_B_IH', layer.b_ih)}, {a.floats(f'{p}_B_HH', layer.b_hh)}, {peep}}},")
            h_size, c_size = layer.state_sizes
            self.used.add(layer.kind)
            cell = f", {_state(at + h_size)}" if layer.kind == "lstm" else ""
            self.calls.append(f"    {layer.kind}_layer(&LAYERS[{k}], {src}, {_state(at)}{cell});")
            src = _state(at)
            at += h_size + c_size
        return src

    @staticmethod
    def _note(layer, where: str) -> str:
        return f"  /* {comment(where)}: {comment(describe_layer(layer))} */"

    def layer(self, layer, name: str, where: str, src: str, dst: str) -> None:
        """The call (and constants) of one stateless layer, or a convolution, reading src and
        writing dst."""
        a = self.arrays
        if isinstance(layer, Linear):
            self._const("linear", name, f"{a.matrix(name + '_W', layer.weight)}, {a.floats(name + '_B', layer.bias)}, "
                                        f"{u16(layer.out_size, 'a Linear size')}")
            call = f"linear_layer(&{name}, {src}, {dst});"
        elif isinstance(layer, Affine):
            offset = a.floats(name + "_OFFSET", layer.offset) if layer.offset.any() else "NULL"
            shift = a.floats(name + "_SHIFT", layer.shift) if layer.shift.any() else "NULL"
            self._const("affine", name, f"{u16(layer.in_size, 'an Affine size')}, {offset}, "
                                        f"{a.floats(name + '_SCALE', layer.scale)}, {shift}")
            call = f"affine_layer(&{name}, {src}, {dst});"
        elif isinstance(layer, LayerNorm):
            weights = f"{a.floats(name + '_W', layer.weight)}, {a.floats(name + '_B', layer.bias)}"
            self._const("layer_norm", name, f"{u16(layer.in_size, 'a LayerNorm size')}, {float_literal(layer.eps)}, "
                                            f"{weights}")
            call = f"layer_norm(&{name}, {src}, {dst});"
        elif isinstance(layer, Activation):
            self.used.add(layer.kind)
            alpha = f", {float_literal(layer.alpha)}" if layer.kind in WITH_ALPHA else ""
            call = f"{ACTIVATIONS[layer.kind]}({layer.size}{alpha}, {src}, {dst});"
        elif isinstance(layer, CausalConv1d):          # stored tap by tap: (out, K * in)
            o, c, k = layer.weight.shape
            w = a.matrix(name + "_W", np.ascontiguousarray(layer.weight.transpose(0, 2, 1)).reshape(o, k * c))
            self._const("conv", name, f"{w}, {a.floats(name + '_B', layer.bias)}, {u16(o, 'a conv size')}, "
                                      f"{u16(c, 'a conv size')}, {u16(k, 'a kernel size')}, "
                                      f"{u16(layer.dilation, 'a dilation')}")
            call = f"conv_layer(&{name}, {src}, {self._claim(layer, where, 'history')}, {dst});"
        else:
            raise ModelFormatError(f"export-c has no C for {describe_layer(layer)}")
        self.calls.append(f"    {call}{self._note(layer, where)}")

    def _const(self, kind: str, name: str, init: str) -> None:
        self.used.add(kind)
        ctype = {"layer_norm": "norm"}.get(kind, kind)
        self.consts.append(f"static const {ctype} {name} = {{{init}}};")

    def _claim(self, layer, where: str, what: str) -> str:
        """The stateful layer's slice of the stream's state (they come in chains() order)."""
        at, self.state_at = self.state_at, self.state_at + layer.state_size
        if layer.state_size:
            self.layout.append(f"{comment(where)} {what} ({layer.state_size})")
        return _state(at)
