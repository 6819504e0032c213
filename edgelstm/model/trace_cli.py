"""`edgelstm convert --module pkg.mod:Net --weights model.pt`: import the user's own model code
(on the training machine, where it is theirs to run), load its weights, and trace it."""

from __future__ import annotations

import importlib
import os
import sys

from ..errors import ModelFormatError
from .from_torch import from_torch
from .state_dict import find_state_dict


def _import(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelFormatError(f"--module {target!r}: expected PKG.MODULE:NAME, e.g. mymodels.net:Net")
    sys.path.insert(0, os.getcwd())           # the user's project, as `python -m` would see it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFormatError(f"--module: cannot import {module_name!r} ({exc}); run from your project's "
                               f"directory or install it") from None
    finally:
        sys.path.pop(0)
    if not hasattr(module, attr):
        raise ModelFormatError(f"--module: {module_name!r} has no {attr!r}")
    return getattr(module, attr)


def load_module(target: str, weights):
    """The nn.Module `target` builds, in eval mode, with the state_dict in `weights` loaded."""
    import torch

    if not weights:
        raise ModelFormatError("--module needs --weights FILE (the model's state_dict)")
    net = _import(target)()
    if not isinstance(net, torch.nn.Module):
        raise ModelFormatError(f"--module {target!r} built a {type(net).__name__}, not a torch.nn.Module")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    tensors = find_state_dict(_numpy_tree(state))
    try:
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    except RuntimeError as exc:
        raise ModelFormatError(f"--weights {weights} do not fit {target}: {str(exc).splitlines()[0]}") from None
    return net.eval()


def traced_spec(target: str, weights, input_size: int | None, status=None):
    """The ModelSpec of the model built by `target`, with `weights` loaded, traced and checked.
    status: told each step as it starts, or None."""
    say = status or (lambda text: None)
    say(f"importing {target} and reading {weights}")
    import torch

    net = load_module(target, weights)
    n_in = input_size or next(p.shape[1] for p in net.parameters() if p.ndim >= 2)
    return from_torch(net, torch.zeros(1, 16, n_in), status=status)


def _numpy_tree(obj):
    """A checkpoint dict with its tensors as NumPy arrays (other entries kept)."""
    if isinstance(obj, dict):
        return {k: _numpy_tree(v) for k, v in obj.items()}
    return obj.detach().numpy() if hasattr(obj, "detach") else obj
