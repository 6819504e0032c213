"""Whole pickled modules (torch.save(model), torch.jit.save) as a tree of plain data.

`torch.save(model)` pickles each nn.Module as NEWOBJ + BUILD(__dict__): `_parameters`,
`_buffers`, `_modules` (children, registration order), `_non_persistent_buffers_set`,
`training` and hyper-parameters (hidden_size, in_features, ...). TorchScript's data.pkl pickles
`__torch__.*` objects whose BUILD dict holds parameters, buffers and children directly; which
tensor is a parameter comes from the `__parameters__` line of the class in code/ (read as text).
The reader never imports or calls a class: each object is an inert stand-in (see inert.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError
from .inert import InertObject
from .torch_file import is_legacy, is_zip, read_archive, read_legacy
from .torchscript import ScriptClass, plain_type_name, script_classes

MAX_DEPTH = 100
_PLAIN = (type(None), bool, int, float, str)
_MODULE_KEYS = ("model", "module", "net", "network", "ema", "model_ema")


@dataclass(frozen=True, eq=False)
class ModuleNode:
    """One module: type, plain hyper-parameters, its own tensors, and its children in order.

    type_name: 'torch.nn.modules.rnn.LSTM', 'mypkg.models.Net', ... (TorchScript's __torch__. prefix and
      ___torch_mangle_N parts removed)
    attributes: ints, floats, bools, strings, None and tuples of those (e.g. hidden_size, training)
    parameters / buffers: name -> array, registration order, None entries dropped
    children: name -> ModuleNode, registration order
    non_persistent: buffer names torch leaves out of state_dict()
    """

    type_name: str
    attributes: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    buffers: dict = field(default_factory=dict)
    children: OrderedDict = field(default_factory=OrderedDict)
    non_persistent: frozenset = frozenset()

    def state_dict(self) -> dict[str, np.ndarray]:
        """'a.b.weight' -> array, in the order torch's state_dict() gives (own tensors, then children)."""
        out: dict[str, np.ndarray] = {}
        for path, node in self.named_modules():
            prefix = f"{path}." if path else ""
            out.update((prefix + k, v) for k, v in node.parameters.items())
            out.update((prefix + k, v) for k, v in node.buffers.items() if k not in node.non_persistent)
        return out

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, ModuleNode]]:
        """(dotted path, node) for this node and every descendant, depth first in registration order."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)


def is_module(obj) -> bool:
    """Whether `obj` is a stand-in for a pickled nn.Module or TorchScript module."""
    if not isinstance(obj, InertObject):
        return False
    state = _state(obj)
    return isinstance(state, dict) and (
        ("_modules" in state and "_parameters" in state) or obj.qualified_name.startswith("__torch__."))


def _state(obj: InertObject):
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]        # (dict, slotstate)
    return state


def _plain(value):
    if isinstance(value, _PLAIN):
        return True, value
    if isinstance(value, (tuple, list)) and len(value) <= 64:
        items = [_plain(v) for v in value]
        if all(ok for ok, _ in items):
            return True, tuple(v for _, v in items)
    return False, None


def _attributes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        ok, plain = _plain(value)
        if ok and isinstance(key, str) and not key.startswith("_"):
            out[key] = plain
    return out


def _tensors(owner: str, entries: Mapping, names=None) -> dict:
    out = {}
    for name in (entries if names is None else [n for n in names if n in entries]):
        value = entries[name]
        if value is None:
            continue
        if not isinstance(value, np.ndarray):
            raise ModelFormatError(f"{owner}.{name} is a {type(value).__name__}, not a tensor; save "
                                   f"model.state_dict() instead")
        out[str(name)] = value
    return out


def module_tree(obj, script: Mapping[str, ScriptClass] | None = None, _depth: int = 0) -> ModuleNode:
    """The ModuleNode for a module stand-in; `script` is the TorchScript archive's class table."""
    if _depth > MAX_DEPTH:
        raise ModelFormatError(f"modules nest more than {MAX_DEPTH} deep")
    if not is_module(obj):
        raise ModelFormatError(f"expected a pickled nn.Module, found {obj!r:.80}")
    state = _state(obj)
    type_name = plain_type_name(obj.qualified_name)
    if "_modules" in state and "_parameters" in state:           # torch.save(model)
        children = state.get("_modules") or {}
        if not isinstance(children, Mapping):
            raise ModelFormatError(f"{type_name}._modules is not a dict")
        kids = OrderedDict((str(k), module_tree(v, script, _depth + 1)) for k, v in children.items() if v is not None)
        return ModuleNode(type_name, _attributes(state), _tensors(type_name, state.get("_parameters") or {}),
                          _tensors(type_name, state.get("_buffers") or {}), kids,
                          frozenset(str(n) for n in state.get("_non_persistent_buffers_set") or ()))
    info = (script or {}).get(obj.qualified_name)                  # TorchScript
    kids = OrderedDict((str(k), module_tree(v, script, _depth + 1)) for k, v in state.items() if is_module(v))
    attributes = _attributes(state)
    if info is None:
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        return ModuleNode(type_name, attributes, _tensors(type_name, arrays), {}, kids)
    attributes.update((k, v) for k, v in info.constants.items() if _plain(v)[0] and not k.startswith("_"))
    return ModuleNode(type_name, attributes, _tensors(type_name, state, info.parameters),
                      _tensors(type_name, state, info.buffers), kids)


def find_module(obj):
    """The module stand-in in `obj`: obj itself, or a checkpoint entry such as obj['model']."""
    if is_module(obj):
        return obj
    if isinstance(obj, Mapping):
        for key in _MODULE_KEYS:
            if is_module(obj.get(key)):
                return obj[key]
        found = [v for v in obj.values() if is_module(v)]
        if len(found) == 1:
            return found[0]
        keys = sorted(map(str, obj))[:12]
        raise ModelFormatError(f"the file holds a dict (keys {keys}) with no single whole pickled module; "
                               f"if it is a state_dict, load it with edgelstm.load")
    raise ModelFormatError(f"the file holds a {type(obj).__name__}, not a whole pickled nn.Module")


def read_module_tree(path) -> ModuleNode:
    """The module tree of a torch.save(model) file (zip or legacy) or a torch.jit.save archive."""
    if is_zip(path):
        obj, kind, archive, prefix = read_archive(path)
        with archive:
            script = script_classes(archive, prefix) if kind == "torchscript" else {}
        return module_tree(find_module(obj), script)
    with open(path, "rb") as fh:
        data = fh.read()
    if not is_legacy(data[:40]):
        raise ModelFormatError(f"{path} is not a torch.save or torch.jit.save file")
    return module_tree(find_module(read_legacy(data)))


def modules_as_state_dicts(obj):
    """`obj` with whole pickled modules (at the top or one level down) replaced by their state_dict()."""
    if is_module(obj):
        return module_tree(obj).state_dict()
    if isinstance(obj, Mapping) and any(is_module(v) for v in obj.values()):
        return {k: module_tree(v).state_dict() if is_module(v) else v for k, v in obj.items()}
    return obj
