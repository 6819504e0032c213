"""`edgelstm verify`: the proof a user keeps with a deployment. Streams N random readings
through the .elstm one at a time and compares every step with the original model run over
the whole sequence: ONNX Runtime for an .onnx file, PyTorch for the user's nn.Module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import EdgeLSTMError, ModelFormatError

CHUNK = 250           # readings streamed per step_many call


@dataclass(frozen=True)
class Verdict:
    steps: int                  # readings streamed
    compared: int               # steps compared (all, or the prefixes of a last-step model)
    max_abs_diff: float
    reference: str              # what the numbers were compared with

    def passed(self, atol: float) -> bool:
        return self.max_abs_diff <= atol


def _onnx_reference(path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgeLSTMError("verify --against an .onnx file needs ONNX Runtime: pip install onnxruntime") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(xs: np.ndarray) -> np.ndarray:
        outs = session.run(None, {name: xs[None]})
        return np.concatenate([np.asarray(o).reshape(o.shape[0], -1, o.shape[-1])[0] for o in outs], -1)

    return run, f"ONNX Runtime {ort.__version__} on {path}"


def _torch_reference(module_target: str, weights):
    import torch

    from .model.from_torch import module_outputs
    from .model.trace_cli import load_module
    net = load_module(module_target, weights)

    def run(xs: np.ndarray) -> np.ndarray:
        return module_outputs(net, xs)

    return run, f"PyTorch {torch.__version__}: {module_target} with {weights}"


def verify(model, against=None, *, module: str | None = None, weights=None, steps: int = 1000,
           seed: int = 0, progress: Callable[[str], None] | None = None) -> Verdict:
    """Compare `model` (an edgelstm.Model) with `against` (.onnx) or `module` + `weights`.
    progress: told what is being done, with counts (e.g. "streamed 500/1000 readings"), as it goes."""
    say = progress or (lambda text: None)
    say("loading the reference")
    if module:
        reference, label = _torch_reference(module, weights or against)
    elif against is not None and str(against).endswith(".onnx"):
        reference, label = _onnx_reference(against)
    else:
        raise ModelFormatError("verify compares with an .onnx file (--against model.onnx) or with your nn.Module "
                               "(--module pkg.mod:Net --weights model.pt); a bare state_dict cannot run by itself")
    xs = np.random.default_rng(seed).normal(0, 1, (steps, model.input_size)).astype(np.float32)
    stream, parts = model.stream(), []
    for start in range(0, steps, CHUNK):           # in chunks, to report progress; the state carries over
        parts.append(stream.step_many(xs[start:start + CHUNK]))
        say(f"streamed {start + len(parts[-1]):,}/{steps:,} readings")
    streamed = np.concatenate(parts) if parts else np.empty((0, model.output_size), np.float32)
    say(f"running the reference over {steps:,} readings")
    whole = reference(xs)
    if whole.shape == streamed.shape:
        return Verdict(steps, steps, float(np.abs(whole - streamed).max()), label)
    if whole.shape != (1, model.output_size):
        raise ModelFormatError(f"the reference outputs {whole.shape} for {steps} steps; the .elstm outputs "
                               f"{streamed.shape}: they are not the same model")
    # a last-step model: what it says after each of a few prefixes
    ends = np.unique(np.linspace(1, steps, min(steps, 25)).astype(int))
    diffs = []
    for k, t in enumerate(ends):
        say(f"comparing prefix {k + 1}/{len(ends)}")
        diffs.append(np.abs(reference(xs[:t])[0] - streamed[t - 1]).max())
    return Verdict(steps, len(ends), float(np.max(diffs)), label)       # np.max: a NaN is kept, and fails
