"""Whole pickled modules as streaming models, without torch and without running their code.

A TorchScript archive (torch.jit.script/trace + save) carries forward() as Python-syntax text
under code/: it is parsed with `ast` and walked statement by statement through the same
mapper as from_torch's fx trace (from_torch.py), never executed. A torch.save(model) pickle
carries the module tree but not forward(): its modules in registration order become a
proposed arch= the user confirms, since activations called in forward() are invisible.
"""

from __future__ import annotations

import ast
import operator
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError
from .from_torch import _ACTIVATION_MODULES, _NO_OPS, _assemble, _Tracer
from .module_tree import ModuleNode, read_module_tree
from .torchscript import MAX_SOURCE_BYTES, plain_type_name

_LEAVES = {"LSTM", "GRU", "Linear", "BatchNorm1d", "LayerNorm", "Conv1d", *_ACTIVATION_MODULES, *_NO_OPS}
# A traced module keeps its hyper-parameters only as arguments of the one torch call in its
# forward(): (function, {attribute: argument position or keyword}).
_TRACED_HYPER: dict[str, tuple[str, dict[str, int | str]]] = {     # kind: (torch fn, {attr: arg index or name})
    "Conv1d": ("_convolution", {"stride": 3, "padding": 4, "dilation": 5, "groups": 8}),
    "BatchNorm1d": ("batch_norm", {"eps": 7}),
    "LayerNorm": ("layer_norm", {"eps": 4}),
    "ELU": ("elu", {"alpha": 1}),
    "LeakyReLU": ("leaky_relu", {"negative_slope": 1}),
    "GELU": ("gelu", {"approximate": "approximate"}),
    "Softmax": ("softmax", {"dim": 1}),
    "LogSoftmax": ("log_softmax", {"dim": 1}),
    "LSTM": ("lstm", {"bidirectional": -2, "batch_first": -1}),
    "GRU": ("gru", {"bidirectional": -2, "batch_first": -1}),
}
_DEFAULTS = {"approximate": "none", "eps": 1e-5}


class TreeView:
    """A pickled module (ModuleNode) as the mapper reads it."""

    def __init__(self, node: ModuleNode, extra: dict | None = None):
        self.node, self.kind = node, node.type_name.rsplit(".", 1)[-1]
        self.extra = extra or {}

    def p(self, name: str):
        v = self.node.parameters.get(name, self.node.buffers.get(name))
        return None if v is None else v.astype("float64")

    def a(self, name: str, default=None):
        return self.extra.get(name, self.node.attributes.get(name, default))

    def state_dict(self) -> dict:
        return self.node.state_dict()


@dataclass(eq=False)
class _Node:
    """What the mapper expects of an fx node, built from a statement of the code."""

    op: str
    target: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class _ModuleRef:
    path: str


@dataclass(frozen=True)
class _Functional:
    name: str                   # a compiled torch.nn.functional function, e.g. 'log_softmax'


class _Code:
    """The classes of a TorchScript archive's code/, parsed (not executed)."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str):
        self.classes: dict[str, tuple[ast.ClassDef, str]] = {}
        root = f"{prefix}/code/"
        for info in archive.infolist():
            if not (info.filename.startswith(root) and info.filename.endswith(".py")) \
                    or info.file_size > MAX_SOURCE_BYTES:
                continue
            module = info.filename[len(root):-len(".py")].replace("/", ".")
            text = archive.read(info.filename).decode("utf-8", "replace")
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(plain_type_name(f"{module}.{node.name}"), (node, text))

    def method(self, type_name: str, prefix: str = "forward"):
        cls = self.classes.get(type_name)
        for stmt in cls[0].body if cls else ():
            if isinstance(stmt, ast.FunctionDef) and stmt.name.startswith(prefix):
                return stmt
        return None

    def hyper(self, node: ModuleNode) -> dict:
        """The hyper-parameters a traced module lacks, read from the torch call in its forward()."""
        kind = node.type_name.rsplit(".", 1)[-1]
        if kind not in _TRACED_HYPER or all(k in node.attributes for k in _TRACED_HYPER[kind][1]):
            return {}
        fn, where = _TRACED_HYPER[kind]
        method = self.method(node.type_name)
        calls = [c for c in ast.walk(method) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                 and c.func.attr == fn and isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"] \
            if method is not None else []
        if len(calls) != 1:
            raise ModelFormatError(f"{node.type_name}: its hyper-parameters are not in the archive (a traced "
                                   f"module without its torch.{fn} call); export ONNX or use arch=")
        keywords = {k.arg: k.value for k in calls[0].keywords}
        out = {}
        for attr, at in where.items():
            args = calls[0].args
            arg = keywords.get(at) if isinstance(at, str) else args[at] if -len(args) <= at < len(args) else None
            out[attr] = _DEFAULTS.get(attr) if arg is None else ast.literal_eval(arg)
        return out


class _Interpreter:
    """Walks forward() statements, feeding each call to the mapper as an fx-like node."""

    def __init__(self, tree: ModuleNode, code: _Code, input_size: int):
        self.code, self.count = code, 0
        self.env: dict[_Node, Any] = {}                 # node -> what the tracer made of it
        self.nodes = dict(tree.named_modules())
        views = {}
        for path, node in self.nodes.items():
            views[path] = TreeView(node, code.hyper(node) if node.type_name.startswith("torch.nn.") else {})
        self.tracer = _Tracer(views, input_size)

    def fail(self, what: str):
        raise ModelFormatError(f"TorchScript forward(): {what} is not something edgelstm streams; describe the "
                               f"model with arch= instead, or export ONNX")

    def node(self, op, target, args, kwargs=None) -> _Node:
        self.count += 1
        n = _Node(op, target, tuple(args), dict(kwargs or {}), f"{op}_{self.count}")
        self.env[n] = (self.tracer.call_module if op == "call_module" else self.tracer.call)(self.env, n)
        return n

    def run_module(self, path: str, args: list):
        node = self.nodes[path]
        kind = node.type_name.rsplit(".", 1)[-1]
        if kind in _LEAVES and node.type_name.startswith("torch.nn."):
            out = self.node("call_module", path, args[:1])
            method = self.code.method(node.type_name)
            returns = ast.unparse(method.returns) if method is not None and method.returns is not None else ""
            if kind in ("LSTM", "GRU") and returns == "Tensor":        # traced: the output sequence only
                return self.node("call_function", operator.getitem, (out, 0))
            return out
        method = self.code.method(node.type_name)
        if method is None:
            self.fail(f"module {path or 'the model'} ({node.type_name}) without forward code")
        return self.function(method, path, args)

    def function(self, method: ast.FunctionDef, path: str, args: list):
        names = [a.arg for a in method.args.args][1:]
        if len(args) != len(names) and not all(d is not None for d in method.args.defaults):
            self.fail(f"a call of {path or 'forward'} with {len(args)} arguments")
        local = {"self": _ModuleRef(path), **dict(zip(names, args))}
        for stmt in method.body:
            if isinstance(stmt, ast.Return):
                return self.expr(stmt.value, local)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                self.assign(stmt.targets[0], self.expr(stmt.value, local), local)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue                                          # a docstring
            else:
                self.fail(f"the statement {ast.unparse(stmt)[:60]!r}")
        self.fail("a forward() without a return")

    def assign(self, target, value, local):
        if isinstance(target, ast.Name):
            local[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for k, t in enumerate(target.elts):
                self.assign(t, self.node("call_function", operator.getitem, (value, k)), local)
        else:
            self.fail(f"the assignment to {ast.unparse(target)!r}")

    def expr(self, e, local):
        if isinstance(e, ast.Name):
            if e.id not in local:
                self.fail(f"the name {e.id!r}")
            return local[e.id]
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub) and isinstance(e.operand, ast.Constant):
            return -e.operand.value
        if isinstance(e, (ast.Tuple, ast.List)):
            return [self.expr(x, local) for x in e.elts]
        if isinstance(e, ast.Attribute) and ast.unparse(e.value) == "__torch__.torch.nn.functional":
            return _Functional(e.attr)                  # F.x bound to a name, called later
        if isinstance(e, ast.Attribute):
            base = self.expr(e.value, local)
            if isinstance(base, _ModuleRef):
                full = f"{base.path}.{e.attr}" if base.path else e.attr
                if full in self.nodes:
                    return _ModuleRef(full)
                owner = self.nodes.get(base.path)
                if owner is not None and e.attr in owner.attributes:     # an int or float the module holds
                    return owner.attributes[e.attr]
                if owner is not None and e.attr in owner.buffers:        # a constant such as input_mean
                    return owner.buffers[e.attr].astype("float64")
            if isinstance(base, _Functional):
                return base
            self.fail(f"the attribute {ast.unparse(e)!r}")
        if isinstance(e, ast.Subscript):
            return self.node("call_function", operator.getitem, (self.expr(e.value, local),
                                                                 self.expr(e.slice, local)))
        if isinstance(e, ast.Call):
            return self.call(e, local)
        self.fail(f"the expression {ast.unparse(e)[:60]!r}")

    def call(self, e: ast.Call, local):
        args = [self.expr(a, local) for a in e.args]
        kwargs = {k.arg: self.expr(k.value, local) for k in e.keywords}
        func = e.func
        if isinstance(func, ast.Name) and func.id == "getattr" and len(args) == 2:
            return _ModuleRef(f"{args[0].path}.{args[1]}" if args[0].path else str(args[1]))
        if isinstance(func, ast.Attribute) and func.attr.startswith("forward"):
            ref = self.expr(func.value, local)
            if isinstance(ref, _ModuleRef) and ref.path in self.nodes:
                return self.run_module(ref.path, [a for a in args if a is not None])
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
            return self.torch_call(func.attr, args, kwargs)
        target = self.expr(func, local) if isinstance(func, ast.Name) or ast.unparse(func).startswith("__torch__") \
            else None
        if isinstance(target, _Functional):
            return self.functional(target.name, args, kwargs)
        self.fail(f"the call {ast.unparse(e)[:60]!r}")

    def functional(self, name: str, args: list, kwargs: dict):
        """A scripted torch.nn.functional call, as compiled into the archive: F.relu(x, inplace), ..."""
        if name == "pad":
            if (args[2:3] or ["constant"])[0] != "constant" or (args[3:4] or [0])[0] not in (0, 0.0, None):
                self.fail("F.pad with a mode other than zero padding")
            return self.node("call_function", _named("pad"), (args[0], args[1]))
        if name in ("relu", "tanh", "sigmoid", "silu"):
            return self.node("call_function", _named(name), args[:1])
        if name in ("leaky_relu", "elu"):
            return self.node("call_function", _named(name), args[:2])
        if name == "gelu":
            return self.node("call_function", _named(name), args[:1],
                             {"approximate": kwargs.get("approximate", (args[1:2] or ["none"])[0])})
        if name in ("softmax", "log_softmax"):
            return self.node("call_function", _named(name), args[:2])
        if name == "dropout":
            return args[0]
        self.fail(f"F.{name}")

    def torch_call(self, name: str, args: list, kwargs: dict):
        if name == "select" and args[1:] in ([1, -1],):                # out[:, -1]
            return self.node("call_function", operator.getitem, (args[0], (slice(None), -1)))
        if name == "dropout":
            return args[0]
        if name == "constant_pad_nd":
            return self.node("call_function", _named("pad"), (args[0], args[1]))
        if name == "linear":
            self.fail("torch.linear outside an nn.Linear")
        return self.node("call_function", _named(name), args, kwargs)


class _named:
    """Names a torch function for the mapper (which dispatches on __name__); never called."""

    def __init__(self, name: str):
        self.__name__ = name

    def __repr__(self) -> str:
        return f"torch.{self.__name__}"


def torchscript_spec(path, tree: ModuleNode, input_size: int | None = None):
    """The ModelSpec of a TorchScript archive, from its forward() code."""
    with zipfile.ZipFile(path) as archive:
        prefix = next(n for n in archive.namelist() if n.endswith("/data.pkl")).rsplit("/", 1)[0]
        code = _Code(archive, prefix)
    method = code.method(tree.type_name)
    if method is None:
        raise ModelFormatError(f"{path}: no forward() for {tree.type_name} in the archive's code/")
    n_in = input_size or _first_input_size(tree)
    interp = _Interpreter(tree, code, n_in)
    placeholder = _Node("placeholder", "x", name="x")
    interp.env[placeholder] = interp.tracer.run_placeholder()
    out = interp.function(method, "", [placeholder])
    outputs = interp.tracer.outputs(interp.env, placeholder, out)
    return _assemble(outputs, {"format": "torchscript", "module": tree.type_name})


def _first_input_size(tree: ModuleNode) -> int:
    for _, node in tree.named_modules():
        for name, a in node.parameters.items():
            if a.ndim >= 2:
                return int(a.shape[1])
    raise ModelFormatError("the module has no weights")


def proposal(tree: ModuleNode) -> str:
    """An arch for a pickled module tree: its modules in registration order (forward() unknown)."""
    items = []
    for path, node in tree.named_modules():
        kind = node.type_name.rsplit(".", 1)[-1]
        a = node.attributes
        if kind in ("LSTM", "GRU", "LSTMCell", "GRUCell"):
            items.append(f"{kind.lower().replace('cell', '')}({path})")
        elif kind == "Linear":
            items.append(f"linear({path})")
        elif kind in ("BatchNorm1d", "LayerNorm"):
            name = "batchnorm" if kind == "BatchNorm1d" else "layernorm"
            items.append(f"{name}({path}, eps={a.get('eps', 1e-5):g})")
        elif kind == "Conv1d":
            d = a.get("dilation", 1)
            items.append(f"conv({path}, dilation={d[0] if isinstance(d, tuple) else d})")
        elif kind in _ACTIVATION_MODULES:
            act = _ACTIVATION_MODULES[kind]
            alpha = a.get("negative_slope") if act == "leaky_relu" else a.get("alpha") if act == "elu" else None
            items.append(act + (f"({alpha:g})" if alpha is not None else ""))
    return " > ".join(items)


def load_torchscript(path, *, arch: str | None = None, **options):
    """A torch.jit.save archive: its forward() code says the graph; arch= overrides it."""
    from .state_dict import spec_from_state_dict
    tree = read_module_tree(path)
    source = {"file": Path(path).name, "format": "torchscript", "module": tree.type_name}
    if arch is not None:
        return spec_from_state_dict(tree.state_dict(), arch=arch, source=source, **options)
    spec = torchscript_spec(path, tree)
    return replace(spec, source=source)


def with_proposal(path, error: ModelFormatError) -> ModelFormatError:
    """`error` (from loading a whole pickled module as a state_dict) with the arch its module
    tree suggests: forward() is not in a pickle, so the user confirms the order."""
    try:
        tree = read_module_tree(path)
    except ModelFormatError:
        return error
    text = proposal(tree)
    first = str(error).split(". ", 1)[0]        # its own arch proposal is superseded by the tree's
    return ModelFormatError(
        f"{first}. The file holds a whole pickled {tree.type_name}: its forward() is not in the file, so the "
        f"order of its layers and any functions it calls (F.relu, softmax) are unknown. Its modules in "
        f"registration order suggest arch='{text}'; pass that, corrected to what forward() does, as arch= "
        f"(CLI --arch), or trace the class with `edgelstm convert --module`, or save it with torch.jit.script.")
