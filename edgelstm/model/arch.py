"""The `arch=` text form: how a bare state_dict's layers connect, which its keys cannot say.

    graph := chain [ ">" "{" head { "," head } "}" ]      head := NAME ":" chain
    chain := item { ">" item }                             item := NAME [ "(" arg { "," arg } ")" ]

Items (PREFIX is a state_dict key prefix such as `head.0`; the trailing dot is optional):
    lstm, gru [(PREFIX)]           an nn.LSTM / nn.GRU module (all its layers), or a cell
    linear(PREFIX)                 nn.Linear
    batchnorm(PREFIX [, eps=E])    nn.BatchNorm1d in eval mode, folded exactly (default eps 1e-5)
    layernorm(PREFIX [, eps=E])    nn.LayerNorm over the last dimension
    conv(PREFIX [, dilation=D])    nn.Conv1d run causally (left padding (K-1)*D, stride 1)
    attention(ITEM, ...)           attention pooling over the outputs so far; the arguments are
                                   the score chain, e.g. attention(attn.0, tanh, attn.2)
    relu, tanh, sigmoid, gelu, gelu_tanh, silu, softmax, log_softmax, leaky_relu[(slope)],
    elu[(alpha)]                   activations; dropout and identity are accepted and skipped

Example: "lstm > linear(head.0) > relu > dropout > linear(head.3) > softmax".
parse() checks the syntax only; state_dict.py fetches the weights each item names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from ..errors import ModelFormatError
from .layers import ACTIVATIONS

RECURRENT = ("lstm", "gru")
WEIGHTED = ("linear", "batchnorm", "layernorm", "conv")
SKIPPED = ("dropout", "identity")
_DEFAULT_ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][\w.]*)|(?P<num>[-+]?\d[\w.+-]*)|(?P<sym>[>(),{}:=]))")


@dataclass(frozen=True)
class Item:
    kind: str                   # one of RECURRENT, WEIGHTED, ACTIVATIONS or "attention"
    prefix: str | None = None   # state_dict key prefix, ending in "." (None: find it)
    value: float | None = None  # eps, dilation, slope or alpha
    score: tuple = ()           # attention's score chain (Items)

    def text(self) -> str:
        if self.kind == "attention":
            return f"attention({', '.join(s.prefix.rstrip('.') if s.prefix else s.text() for s in self.score)})"
        args = [self.prefix.rstrip(".")] if self.prefix else []
        if self.value is not None:
            key = {"batchnorm": "eps=", "layernorm": "eps=", "conv": "dilation="}.get(self.kind, "")
            args.append(f"{key}{self.value:g}")
        return self.kind + (f"({', '.join(args)})" if args else "")


@dataclass(frozen=True)
class Graph:
    chain: tuple[Item, ...]
    heads: tuple[tuple[str, tuple[Item, ...]], ...] = ()

    def text(self) -> str:
        out = " > ".join(i.text() for i in self.chain)
        if self.heads:
            out += " > {" + ", ".join(f"{n}: {' > '.join(i.text() for i in c)}" for n, c in self.heads) + "}"
        return out


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, pos = text, [], 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos or m.lastgroup is None:     # a match always sets one named group
                self.fail(f"unexpected character {text[pos]!r} at {pos}")
            self.tokens.append(m.group(m.lastgroup))
            pos = m.end()
        self.at = 0

    def fail(self, why: str) -> NoReturn:
        raise ModelFormatError(f"arch {self.text!r}: {why}. Example: "
                               f"\"lstm > linear(head.0) > relu > linear(head.3) > softmax\" (see edgelstm.model.arch)")

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            self.fail(f"expected {want or 'more'} {'at the end' if tok is None else f'before {tok!r}'}")
        self.at += 1
        return tok

    def graph(self) -> Graph:
        chain, heads = [], []
        while True:
            if self.peek() == "{":
                heads = self.heads()
                break
            chain.append(self.item())
            if self.peek() is None:
                break
            self.take(">")
        if self.peek() is not None:
            self.fail(f"unexpected {self.peek()!r} after the heads")
        return Graph(tuple(i for i in chain if i is not None), tuple(heads))

    def heads(self) -> list:
        self.take("{")
        heads = []
        while True:
            name = self.take()
            if not name.isidentifier():
                self.fail(f"head name {name!r} is not an identifier")
            self.take(":")
            chain = [self.item()]
            while self.peek() == ">":
                self.take(">")
                chain.append(self.item())
            heads.append((name, tuple(i for i in chain if i is not None)))
            if self.take() == "}":
                return heads
            if self.tokens[self.at - 1] != ",":
                self.fail("expected ',' or '}' between heads")

    def args(self) -> list[str]:
        if self.peek() != "(":
            return []
        self.take("(")
        out = []
        while True:
            tok = self.take()
            if self.peek() == "=":
                self.take("=")
                tok = f"{tok}={self.take()}"
            out.append(tok)
            if self.take() == ")":
                return out
            if self.tokens[self.at - 1] != ",":
                self.fail("expected ',' or ')' in an argument list")

    def item(self) -> Item | None:
        name = self.take().lower()
        if name == "attention":
            return self.attention()
        args = self.args()
        if name in SKIPPED:
            return None
        if name in RECURRENT or name in ("lstmcell", "grucell"):
            return Item(name.replace("cell", ""), _prefix(args[0]) if args else None)
        if name in WEIGHTED:
            if not args:
                self.fail(f"{name} needs the key prefix of its weights, e.g. {name}(fc)")
            return Item(name, _prefix(args[0]), self.number(name, args[1:]))
        if name in ACTIVATIONS:
            value = self.number(name, args) if args else _DEFAULT_ALPHA.get(name)
            return Item(name, None, value)
        self.fail(f"unknown item {name!r}; known: {', '.join(RECURRENT + WEIGHTED + ACTIVATIONS + SKIPPED)}, "
                  f"attention")

    def attention(self) -> Item:
        self.take("(")
        score = []
        while True:
            tok = self.take()
            score.append(Item(tok.lower()) if tok.lower() in ACTIVATIONS else Item("linear", _prefix(tok)))
            if self.take() == ")":
                return Item("attention", score=tuple(score))

    def number(self, name: str, args: list[str]) -> float | None:
        if not args:
            return None
        text = args[0].split("=", 1)[-1]
        try:
            return float(text)
        except ValueError:
            self.fail(f"{name}: {text!r} is not a number")


def _prefix(text: str) -> str:
    return text if text.endswith(".") else text + "."


def parse(text: str) -> Graph:
    """The graph `text` describes; ModelFormatError (with an example) on bad syntax."""
    if not isinstance(text, str) or not text.strip():
        raise ModelFormatError("arch must be a non-empty string such as \"lstm > linear(fc)\"")
    graph = _Parser(text).graph()
    kinds = [i.kind in RECURRENT for i in graph.chain]
    if not any(kinds):
        raise ModelFormatError(f"arch {text!r} names no recurrent layer (lstm or gru)")
    first, last = kinds.index(True), len(kinds) - 1 - kinds[::-1].index(True)
    if not all(kinds[first:last + 1]):
        raise ModelFormatError(f"arch {text!r}: only recurrent layers may sit between recurrent layers")
    return graph
