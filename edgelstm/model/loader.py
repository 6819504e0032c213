"""edgelstm.load: any supported file to a ready Model (no torch needed).

The readers are imported when a file needs them: a daemon loading its .elstm does not pay for
the ONNX, Keras and pickle readers at every start (bench_startup.py measures the warm start).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..errors import ModelFormatError
from . import deploy

GRAPH_FORMATS = ("keras", "rtneural", "onnx")      # files that hold their whole graph


def graph_reader(fmt: str):
    """The reader of a file that holds its whole graph: (path, **options) -> ModelSpec."""
    if fmt == "keras":
        from .keras_file import read_keras
        return read_keras
    if fmt == "rtneural":
        from .rtneural_json import read_rtneural
        return read_rtneural
    from .onnx_file import read_onnx
    return read_onnx


def sniff(path) -> str:
    """'elstm', 'torch', 'torchscript', 'torch-legacy', 'npz', 'keras', 'rtneural', 'onnx' or 'safetensors',
    from the file's content."""
    with open(path, "rb") as fh:
        head = fh.read(40)
    if head[:8] == deploy.MAGIC:
        return "elstm"
    from .keras_file import is_keras_archive
    from .onnx_proto import looks_like_onnx
    from .rtneural_json import is_rtneural_json
    from .torch_file import archive_layout, is_legacy, is_zip
    if is_zip(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except Exception as exc:    # zipfile raises BadZipFile, OSError, NotImplementedError, ValueError...
            raise ModelFormatError(f"{path}: damaged zip archive ({exc})") from None
        layout = archive_layout(names)
        if layout is not None:
            return "torchscript" if layout[1] else "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if is_keras_archive(names):
            return "keras"
    if is_legacy(head):
        return "torch-legacy"
    if looks_like_onnx(head) or str(path).lower().endswith(".onnx"):
        return "onnx"
    if is_rtneural_json(path, head):
        return "rtneural"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ModelFormatError(f"{path}: unknown model format; expected a .pt/.pth (torch.save or torch.jit.save), "
                           f".safetensors, .npz, .keras, RTNeural .json, .onnx or .elstm file")


def read_arrays(path, fmt: str):
    """The file's contents as NumPy arrays: a state_dict or checkpoint dict (whole modules flattened)."""
    from .module_tree import modules_as_state_dicts, read_module_tree
    from .safetensors_file import read_safetensors
    from .torch_file import read_torch_file
    if fmt in ("torch", "torch-legacy"):
        return modules_as_state_dicts(read_torch_file(path))
    if fmt == "torchscript":
        return read_module_tree(path).state_dict()
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    if fmt == "safetensors":
        return read_safetensors(path)
    raise ModelFormatError(f"{path}: cannot read arrays from a {fmt!r} file")


def load_spec(path, status=None, **options):
    """The ModelSpec in `path`; options as for spec_from_state_dict (ignored for .elstm).
    status: told each step as it starts ("reading ...", "building the graph"), or None."""
    say = status or (lambda text: None)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"no such model file: {path}")
    fmt = sniff(path)
    say(f"reading {path} ({fmt})")
    if fmt == "elstm":
        return deploy.load(path)
    if fmt in GRAPH_FORMATS:
        return graph_reader(fmt)(path, **options)
    from .module_graph import load_torchscript, with_proposal
    from .state_dict import spec_from_state_dict
    if fmt == "torchscript":                 # forward() is in the archive, as text
        return load_torchscript(path, **options)
    source = {"file": os.path.basename(path), "format": fmt}
    try:
        arrays = read_arrays(path, fmt)
        say("building the graph")
        return spec_from_state_dict(arrays, source=source, **options)
    except ModelFormatError as exc:
        if fmt in ("torch", "torch-legacy") and options.get("arch") is None:
            raise with_proposal(path, exc) from None     # a whole pickled module: propose its arch
        raise


def load(path, **options):
    """Load a model for streaming.

    path: .pt/.pth (state_dict or checkpoint), .safetensors, .npz, .keras, RTNeural .json, .onnx or .elstm.
    options (not for .elstm): rnn=PREFIX or [PREFIX, ...], head=PREFIX | False,
      input_norm=(mean, std), output_norm=(mean, std), allow_unused=True.
    """
    from ..engine import Model
    return Model(load_spec(path, **options))
