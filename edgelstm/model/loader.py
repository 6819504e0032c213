"""edgelstm.load: any supported file to a ready Model (no torch needed)."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import ModelFormatError
from . import deploy
from .state_dict import spec_from_state_dict
from .torch_file import read_torch_file


def sniff(path) -> str:
    """'elstm', 'torch', 'npz' or 'safetensors', from the file's content."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:8] == deploy.MAGIC:
        return "elstm"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ModelFormatError(f"{path}: unknown model format; expected a .pt/.pth (torch.save), "
                           f".safetensors, .npz or .elstm file")


def read_arrays(path, fmt: str):
    if fmt == "torch":
        return read_torch_file(path)
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ModelFormatError("reading .safetensors needs the optional package: "
                               "pip install 'edgelstm[safetensors]'") from None
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot read safetensors ({exc})") from None


def load_spec(path, **options):
    """The ModelSpec in `path`; options as for spec_from_state_dict (ignored for .elstm)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"no such model file: {path}")
    fmt = sniff(path)
    if fmt == "elstm":
        return deploy.load(path)
    source = {"file": os.path.basename(path), "format": fmt}
    return spec_from_state_dict(read_arrays(path, fmt), source=source, **options)


def load(path, **options):
    """Load a model for streaming.

    path: .pt/.pth (state_dict or checkpoint), .safetensors, .npz or .elstm.
    options (not for .elstm): rnn=PREFIX or [PREFIX, ...], head=PREFIX | False,
      input_norm=(mean, std), output_norm=(mean, std), allow_unused=True.
    """
    from ..engine import Model
    return Model(load_spec(path, **options))
