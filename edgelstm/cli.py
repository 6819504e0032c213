"""The `edgelstm` command line. Argument parsing and presentation only; logging is set up here
and nowhere else in the package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

from . import __version__
from .errors import EdgeLSTMError

log = logging.getLogger("edgelstm")

DESCRIPTION = """\
edgelstm: stateful streaming LSTM/GRU inference for edge devices.

Load weights trained in PyTorch (no torch needed here), keep each sensor's recurrent state
across readings, and run one reading in a few microseconds."""

EPILOG = """\
examples:
  edgelstm demo                              replay the bundled recording through the bundled model
  edgelstm convert model.pt -o model.elstm   make a deploy file (torch-free, hashed, versioned)
  edgelstm inspect model.elstm               architecture, parameters, memory
  edgelstm warmup model.elstm                compile kernels into the cache before first use

environment:
  EDGELSTM_CACHE_DIR   where compiled kernels are cached (default ~/.cache/edgelstm/numba-VERSION)
"""


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("choosing layers in a state_dict (only needed when ambiguous)")
    g.add_argument("--rnn", action="append", metavar="PREFIX",
                   help="key prefix of a recurrent block, e.g. 'encoder.lstm.'; repeat to stack in order")
    g.add_argument("--head", metavar="PREFIX", help="key prefix of the nn.Linear head, e.g. 'fc.'")
    g.add_argument("--no-head", action="store_true", help="output the last layer's h, ignoring any Linear")
    g.add_argument("--allow-unused", action="store_true",
                   help="accept tensors that are not on the streaming path (e.g. a decoder)")
    g.add_argument("--input-mean", type=_floats, metavar="A,B,..", help="input normalisation mean per feature")
    g.add_argument("--input-std", type=_floats, metavar="A,B,..", help="input normalisation std per feature")
    g.add_argument("--output-mean", type=_floats, metavar="A,B,..", help="output de-normalisation mean")
    g.add_argument("--output-std", type=_floats, metavar="A,B,..", help="output de-normalisation std")


def _floats(text: str) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _pair(mean, std, what):
    if (mean is None) != (std is None):
        raise EdgeLSTMError(f"give both --{what}-mean and --{what}-std")
    return None if mean is None else (mean, std)


def _load_options(args) -> dict:
    return dict(rnn=args.rnn, head=False if args.no_head else args.head, allow_unused=args.allow_unused,
                input_norm=_pair(args.input_mean, args.input_std, "input"),
                output_norm=_pair(args.output_mean, args.output_std, "output"))


def cmd_convert(args) -> int:
    from .model import deploy
    from .model.loader import load_spec
    spec = load_spec(args.source, **_load_options(args))
    out = args.output or os.path.splitext(args.source)[0] + ".elstm"
    digest = deploy.save(spec, out)
    print(f"wrote {out}  ({os.path.getsize(out):,} bytes, hash {digest[:12]})")
    print(spec.describe())
    return 0


def cmd_inspect(args) -> int:
    from .engine import Model
    from .model.loader import load_spec, sniff
    spec = load_spec(args.model, **_load_options(args))
    model = Model(spec)
    print(f"{args.model}  [{sniff(args.model)}]")
    print(spec.describe())
    print(f"  input size {spec.input_size}, output size {spec.output_size}")
    print(f"  parameters        {spec.parameter_count:,}")
    print(f"  weights in memory {model.memory_bytes / 1024:,.1f} KiB (float32, packed for the kernels)")
    print(f"  state per stream  {spec.state_size} floats = {spec.state_size * 4} bytes")
    print(f"  content hash      {model.content_hash}")
    if spec.source:
        print(f"  source            {spec.source}")
    return 0


def cmd_warmup(args) -> int:
    from . import _numba
    from .model.loader import load
    t0 = time.perf_counter()
    model = load(args.model, **_load_options(args))
    model.warmup()
    print(f"kernels ready in {time.perf_counter() - t0:.2f} s (cache: {_numba.cache_dir()})")
    return 0


def cmd_demo(args) -> int:
    from .demo import bundled_recording, load_bundled, replay
    from .simulate import ACTIVITIES
    t0 = time.perf_counter()
    model = load_bundled() if args.model is None else __import__("edgelstm").load(args.model)
    model.warmup()
    x, labels, rate = bundled_recording()
    if args.steps:
        x, labels = x[:args.steps], labels[:args.steps]
    speed = "as fast as possible" if args.speed <= 0 else f"at {args.speed:g}x real time"
    print(f"edgelstm demo: model ready in {time.perf_counter() - t0:.2f} s")
    print(model.spec.describe())
    print(f"replaying {len(x)} readings of a simulated 3-axis accelerometer ({rate:g} Hz) {speed}; "
          f"Ctrl-C stops\n")
    tty = sys.stdout.isatty()
    correct, times, every = 0, [], max(1, int(rate * max(args.speed, 1)))   # a line per simulated second
    try:
        for p in replay(model, x, labels, rate, args.speed):
            correct += p.label == p.truth
            times.append(p.step_seconds)
            if tty or p.index % every == every - 1 or p.index == len(x) - 1:
                mark = "ok" if p.label == p.truth else "--"
                line = (f"t={p.index / rate:6.1f}s  x=[{p.x[0]:+.2f} {p.x[1]:+.2f} {p.x[2]:+.2f}] g  "
                        f"predicted {ACTIVITIES[p.label]:<8} ({p.prob:4.0%})  truth {ACTIVITIES[p.truth]:<8} "
                        f"{mark}  running accuracy {correct / (p.index + 1):6.1%}")
                print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted")
    n = len(times)
    if tty:
        print()
    us = np.array(times) * 1e6
    print(f"\ndone: {n} readings; accuracy {correct / max(n, 1):.1%} ({correct}/{n}); "
          f"step latency p50 {np.percentile(us, 50):.1f} us, p99 {np.percentile(us, 99):.1f} us")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgelstm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgelstm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="replay the bundled sensor recording through the bundled model",
                       description="Stream a recorded (simulated) accelerometer through the bundled activity "
                                   "model, printing live predictions and a final accuracy line.")
    p.add_argument("--speed", type=float, default=20.0,
                   help="replay speed as a multiple of real time (default 20; 0 = as fast as possible)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many readings (default: all)")
    p.add_argument("--model", help="use this model file instead of the bundled one (3 inputs, 3 classes)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("convert", help="convert a model file into an .elstm deploy file",
                       description="Read a .pt/.pth (state_dict or checkpoint), .safetensors or .npz and write "
                                   "a versioned .elstm deploy file with architecture, source and content hash.")
    p.add_argument("source", help="model file to convert")
    p.add_argument("-o", "--output", help="output path (default: SOURCE with .elstm)")
    _model_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("inspect", help="print a model's architecture, parameter count and memory footprint")
    p.add_argument("model", help="model file (.pt/.pth, .safetensors, .npz, .elstm)")
    _model_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("warmup", help="compile the kernels for a model into the cache")
    p.add_argument("model", help="model file")
    _model_options(p)
    p.set_defaults(func=cmd_warmup)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except EdgeLSTMError as exc:
        print(f"edgelstm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
