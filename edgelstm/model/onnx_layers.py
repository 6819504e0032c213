"""The ONNX ops that become edgelstm layers, applied to Streams (see onnx_graph).

MatMul(+Add) and Gemm -> Linear; Add/Sub/Mul/Div/Neg by constants -> one Affine per run of them;
Relu/Tanh/Sigmoid/LeakyRelu/Elu/Gelu, x * Sigmoid(x) (SiLU), Softmax/LogSoftmax -> Activation;
LayerNormalization -> LayerNorm; BatchNormalization -> Affine.batch_norm; Pad (left, over time)
then Conv -> CausalConv1d. Anything that would need future inputs or mixes two computed values
is refused with the reason.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .layers import Activation, Affine, CausalConv1d, LayerNorm, Linear
from .onnx_fold import ints, norm_axis
from .onnx_graph import ONE, F, Stream, T, as_const, as_stream, fail, node_name, same_path, shape_text


def feature_vector(node, s: Stream, c: np.ndarray) -> tuple[np.ndarray, tuple]:
    """A constant broadcast against the stream as one value per feature, and the result's axes."""
    c = np.asarray(as_const(node, c, "the other operand"), np.float64)
    axes = (ONE,) * max(0, c.ndim - len(s.axes)) + s.axes
    aligned = (1,) * (len(axes) - c.ndim) + c.shape
    for label, d in zip(axes, aligned):
        if d != 1 and label != F:
            fail(node, f"the constant of shape {c.shape} varies along the {'time' if label == T else 'batch'} axis; "
                        f"only one value per feature can be streamed")
    flat = c.reshape(-1)
    if flat.size not in (1, s.width):
        fail(node, f"the constant of shape {c.shape} does not match {s.width} features")
    return np.broadcast_to(flat, (s.width,)).copy(), axes


def op_matmul(w, node, ins):
    if not isinstance(ins[0], Stream):
        fail(node, "it multiplies a constant by the model's values from the left (a matrix across time or batch)")
    s = as_stream(node, ins[0])
    m = np.asarray(as_const(node, ins[1], "the weight"), np.float64)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or s.axes[-1:] != (F,) or m.shape[0] != s.width:
        fail(node, f"it multiplies {shape_text(s)} by a constant of shape {m.shape}; expected (features, out) with "
                    f"features on the last axis")
    lin = Linear(m.T, np.zeros(m.shape[1]), node_name(node))
    return [replace(s.push(lin, width=m.shape[1]), fresh="linear")]


def op_gemm(w, node, ins):
    s = as_stream(node, ins[0])
    b = np.asarray(as_const(node, ins[1], "B"), np.float64)
    if node.attr("transA", 0) or len(s.axes) != 2 or s.axes[1] != F or b.ndim != 2:
        fail(node, f"expected Gemm(A=(1, features), B constant, transA=0), got A {shape_text(s)}")
    weight = (b if node.attr("transB", 0) else b.T) * node.attr("alpha", 1.0)
    if weight.shape[1] != s.width:
        fail(node, f"B has shape {b.shape} for {s.width} input features")
    bias = np.zeros(weight.shape[0])
    if len(ins) > 2 and ins[2] is not None:
        c = np.asarray(as_const(node, ins[2], "C"), np.float64) * node.attr("beta", 1.0)
        if c.size not in (1, weight.shape[0]):
            fail(node, f"C of shape {c.shape} does not match {weight.shape[0]} outputs")
        bias = np.broadcast_to(c.reshape(-1), bias.shape)
    return [s.push(Linear(weight, bias, node_name(node)), width=weight.shape[0])]


def op_arithmetic(w, node, ins):
    a, b = ins[0], ins[1]
    if isinstance(a, Stream) and isinstance(b, Stream):
        return [_stream_product(node, a, b)]
    s, c, const_first = (a, b, False) if isinstance(a, Stream) else (b, a, True)
    s = as_stream(node, s)
    v, axes = feature_vector(node, s, c)
    op = node.op_type
    if op == "Add" and s.fresh == "linear":
        lin = s.path[-1]
        return [replace(s, path=s.path[:-1] + (Linear(lin.weight, lin.bias + v, lin.name),), axes=axes, fresh="")]
    if op == "Div" and const_first:
        fail(node, "it divides a constant by the model's values")
    offset, scale, shift = (np.asarray(getattr(s.path[-1], k), np.float64) for k in ("offset", "scale", "shift")) \
        if s.fresh == "affine" else (np.zeros(s.width), np.ones(s.width), np.zeros(s.width))
    if op == "Add":
        shift = shift + v
    elif op == "Sub":
        scale, shift = (-scale, v - shift) if const_first else (scale, shift - v)
    elif op == "Mul":
        scale, shift = scale * v, shift * v
    else:
        if (v == 0).any():
            fail(node, "it divides by zero")
        scale, shift = scale / v, shift / v
    path = s.path[:-1] if s.fresh == "affine" else s.path
    return [replace(s, path=path + (Affine(offset, scale, shift, node_name(node)),), axes=axes, fresh="affine")]


def op_neg(w, node, ins):
    s = as_stream(node, ins[0])
    return op_arithmetic(w, replace(node, op_type="Mul"), [s, np.array(-1.0)])


def _stream_product(node, a: Stream, b: Stream) -> Stream:
    """x * sigmoid(x) is SiLU; any other combination of two computed values is refused."""
    for x, y in ((a, b), (b, a)):
        if (node.op_type == "Mul" and x.axes == y.axes and len(y.path) == len(x.path) + 1 and
                same_path(y.path[:-1], x.path) and isinstance(y.path[-1], Activation) and y.path[-1].kind == "sigmoid"):
            return x.push(Activation("silu", x.width))
    short, long = sorted((a.path, b.path), key=len)
    hint = (" (GELU or LayerNorm written out with elementwise ops, as exporters do below opset 20 / 17? Re-export "
            "with opset_version=20)") if same_path(long[:len(short)], short) else ""
    fail(node, f"it combines two values computed from the input (a residual, gate or attention); only chains of "
               f"layers can be read{hint}")


_ELEMENTWISE = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu", "Elu": "elu"}
_ALPHA = {"LeakyRelu": 0.01, "Elu": 1.0}


def op_activation(w, node, ins):
    s = as_stream(node, ins[0])
    if node.op_type == "Gelu":
        approx = node.attr("approximate", "none")
        if approx not in ("none", "tanh"):
            fail(node, f"unknown GELU approximation {approx!r}")
        kind = "gelu" if approx == "none" else "gelu_tanh"
    else:
        kind = _ELEMENTWISE[node.op_type]
    return [s.push(Activation(kind, s.width, node.attr("alpha", _ALPHA.get(node.op_type, 0.0))))]


def op_softmax(w, node, ins):
    s = as_stream(node, ins[0])
    rank = len(s.axes)
    default = -1 if w.opset >= 13 else 1
    axis = norm_axis(node.attr("axis", default), rank, node.label)
    over = s.axes[axis:] if w.opset < 13 else s.axes[axis:axis + 1]
    if T in over or (F not in over and s.width != 1):
        fail(node, f"it normalises over axes {over} of {shape_text(s)}; only the feature axis can be streamed")
    return [s.push(Activation("softmax" if node.op_type == "Softmax" else "log_softmax", s.width))]


def op_layer_norm(w, node, ins):
    s = as_stream(node, ins[0])
    axis = norm_axis(node.attr("axis", -1), len(s.axes), node.label)
    if T in s.axes[axis:] or F not in s.axes[axis:]:
        fail(node, f"it normalises over axes {s.axes[axis:]}; only the feature axis can be streamed")
    scale, _ = feature_vector(node, s, ins[1])
    bias = feature_vector(node, s, ins[2])[0] if len(ins) > 2 and ins[2] is not None else np.zeros(s.width)
    return [s.push(LayerNorm(scale, bias, node.attr("epsilon", 1e-5), node_name(node)))]


def op_batch_norm(w, node, ins):
    s = as_stream(node, ins[0])
    if node.attr("training_mode", 0):
        fail(node, "training_mode=1: export the model in eval mode (model.eval())")
    if len(s.axes) < 2 or s.axes[1] != F:
        fail(node, f"it normalises axis 1 of {shape_text(s)}, which is not the feature axis "
                    f"(BatchNorm1d expects (batch, features, time))")
    scale, bias, mean, var = (np.asarray(as_const(node, v, "a parameter"), np.float64).reshape(-1) for v in ins[1:5])
    return [s.push(Affine.batch_norm(mean, var, scale, bias, node.attr("epsilon", 1e-5), node_name(node)))]


def op_pad(w, node, ins):
    s = as_stream(node, ins[0])
    if node.attr("mode", "constant") != "constant":
        fail(node, f"{node.attr('mode')} padding over time is not a causal convolution's zero padding")
    if w.opset >= 11:
        pads = ints(as_const(node, ins[1], "pads"), "pads")
        value = ins[2] if len(ins) > 2 else None
        axes = ints(ins[3], "axes") if len(ins) > 3 and ins[3] is not None else list(range(len(s.axes)))
    else:
        pads, value, axes = node.attr("pads", []), np.array(node.attr("value", 0.0)), list(range(len(s.axes)))
    if value is not None and np.asarray(as_const(node, value, "the pad value")).any():
        fail(node, "it pads with a non-zero value")
    if len(pads) != 2 * len(axes):
        fail(node, f"pads {pads} do not fit {len(axes)} axes")
    left = 0
    for k, axis in enumerate(norm_axis(a, len(s.axes), node.label) for a in axes):
        begin, end = pads[k], pads[k + len(axes)]
        if s.axes[axis] == T:
            if end:
                fail(node, f"it pads the end of the sequence ({end} steps): a centred convolution needs future "
                            f"inputs and cannot stream; pad on the left only (F.pad(x, (k - 1, 0)))")
            left = begin
        elif begin or end:
            fail(node, "it pads an axis other than time")
    if left < 0:
        fail(node, "it crops the sequence (negative padding)")
    return [replace(s, pad=s.pad + left)]


def op_conv(w, node, ins):
    s = as_stream(node, ins[0])
    weight = np.asarray(as_const(node, ins[1], "the weight"), np.float64)
    if weight.ndim != 3 or s.axes != (ONE, F, T):
        fail(node, f"only a 1-D convolution over time of (batch, channels, time) can be streamed; got input "
                    f"{shape_text(s)} and weight {weight.shape}")
    if node.attr("group", 1) != 1:
        fail(node, "a grouped (depthwise) convolution is not supported")
    if node.attr("strides", [1]) != [1]:
        fail(node, "a strided convolution changes the step rate and cannot stream one output per input")
    auto = node.attr("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        fail(node, f"auto_pad={auto} pads both ends: a centred convolution needs future inputs")
    (dilation,) = node.attr("dilations", [1])
    pads = node.attr("pads", [0, 0]) if auto == "NOTSET" else [0, 0]
    k = weight.shape[2]
    left, right = s.pad + pads[0], pads[1]
    if right:
        fail(node, f"it pads {right} step(s) on the right: a centred convolution needs future inputs and cannot "
                    f"stream; pad (kernel_size - 1) * dilation steps on the left only")
    if left != (k - 1) * dilation:
        fail(node, f"it pads {left} step(s) on the left, but a causal convolution with kernel {k} and dilation "
                    f"{dilation} needs {(k - 1) * dilation}: the output would not have one step per input")
    bias = as_const(node, ins[2], "the bias") if len(ins) > 2 and ins[2] is not None else np.zeros(weight.shape[0])
    conv = CausalConv1d(weight, np.asarray(bias).reshape(-1), dilation, node_name(node))
    return [s.push(conv, width=conv.out_size, pad=0)]


LAYER_OPS = {
    "MatMul": op_matmul, "Gemm": op_gemm, "Add": op_arithmetic, "Sub": op_arithmetic, "Mul": op_arithmetic,
    "Div": op_arithmetic, "Neg": op_neg, "Relu": op_activation, "Tanh": op_activation, "Sigmoid": op_activation,
    "LeakyRelu": op_activation, "Elu": op_activation, "Gelu": op_activation, "Softmax": op_softmax,
    "LogSoftmax": op_softmax, "LayerNormalization": op_layer_norm, "BatchNormalization": op_batch_norm,
    "Pad": op_pad, "Conv": op_conv,
}
