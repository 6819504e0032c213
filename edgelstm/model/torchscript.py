"""What a TorchScript archive's code/ says about its classes, read as text (never executed).

torch.jit.save writes each module class as Python-syntax source under <name>/code/, e.g.
code/__torch__/torch/nn/modules/rnn.py:

    class LSTM(Module):
      __parameters__ = ["weight_ih_l0", ...]
      __buffers__ = []
      hidden_size : Final[int] = 4          # scripted modules only; traced ones inline them

The files are parsed with `ast` (no exec, no import) and only literal values are taken with
ast.literal_eval; anything else is ignored.
"""

from __future__ import annotations

import ast
import re
import zipfile
from dataclasses import dataclass, field

_MANGLE = re.compile(r"\.___torch_mangle_\d+")
MAX_SOURCE_BYTES = 4 << 20


@dataclass(frozen=True)
class ScriptClass:
    """A TorchScript class: its parameter and buffer names (declaration order) and Final constants."""

    parameters: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    constants: dict = field(default_factory=dict)


def plain_type_name(qualified: str) -> str:
    """'__torch__.torch.nn.modules.rnn.___torch_mangle_0.LSTM' -> 'torch.nn.modules.rnn.LSTM'."""
    name = _MANGLE.sub("", qualified)
    return name[len("__torch__."):] if name.startswith("__torch__.") else name


def _literal(node):
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _class_info(node: ast.ClassDef) -> ScriptClass:
    params: tuple[str, ...] = ()
    buffers: tuple[str, ...] = ()
    constants: dict = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            ok, value = _literal(stmt.value)
            if ok and stmt.targets[0].id == "__parameters__":
                params = tuple(str(v) for v in value)
            elif ok and stmt.targets[0].id == "__buffers__":
                buffers = tuple(str(v) for v in value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            ok, value = _literal(stmt.value)
            if ok:
                constants[stmt.target.id] = value
    return ScriptClass(params, buffers, constants)


def script_classes(archive: zipfile.ZipFile, prefix: str) -> dict[str, ScriptClass]:
    """{qualified class name as pickled ('__torch__.a.b.Cls'): ScriptClass} from <prefix>/code/."""
    out = {}
    root = f"{prefix}/code/"
    for info in archive.infolist():
        name = info.filename
        if not (name.startswith(root) and name.endswith(".py")) or info.file_size > MAX_SOURCE_BYTES:
            continue
        module = name[len(root):-len(".py")].replace("/", ".")
        try:
            tree = ast.parse(archive.read(name).decode("utf-8"))
        except Exception:       # damaged member (zlib/CRC errors...) or not Python syntax: use no class info
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                out[f"{module}.{node.name}"] = _class_info(node)
    return out
