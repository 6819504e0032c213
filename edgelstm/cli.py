"""The `edgelstm` command line. Argument parsing and presentation only; logging is set up here
and nowhere else in the package."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

import numpy as np

from . import __version__
from .convert_options import add_name_options, named
from .errors import EdgeLSTMError
from .progress import Progress

log = logging.getLogger("edgelstm")

DESCRIPTION = """\
edgelstm: stateful streaming LSTM/GRU inference for edge devices.

Load weights trained in PyTorch (no torch needed here), keep each sensor's recurrent state
across readings, and run one reading in a few microseconds."""

RUN_EPILOG = """\
examples:
  edgelstm run -c /etc/edgelstm/edgelstm.toml
  edgelstm run --model m.elstm --mqtt mqtt://localhost:1883 --in 'sensors/+/reading' \\
               --out 'sensors/{stream}/prediction' --checkpoint /var/lib/edgelstm/state.ckpt
  edgelstm run --model m.elstm --serial /dev/ttyUSB0 --baud 115200 --out stdout
"""

EPILOG = """\
examples:
  edgelstm demo                              a simulated sensor board on a pty feeding the daemon
  edgelstm run -c edgelstm.toml              the daemon (see edgelstm run --help)
  edgelstm record --mqtt URL -o DIR ...      record readings into CSV/Parquet files, for training
  edgelstm replay DIR --model M -o OUT       stream a recording as the daemon would: predictions, plots
  edgelstm convert model.pt -o model.elstm   make a deploy file (torch-free, hashed, versioned)
  edgelstm inspect model.elstm               architecture, parameters, memory
  edgelstm warmup model.elstm                compile and prebuild the kernels before first use

environment:
  EDGELSTM_CACHE_DIR   where compiled kernels are kept (default ~/.cache/edgelstm; a kernels-DIGEST
                       directory per version of the kernels, its prebuilt/ holds the prebuilt ones)
  EDGELSTM_PREBUILT=0  ignore prebuilt kernels: numba compiles (or loads from its cache) instead
"""


def _model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("choosing layers in a state_dict (only needed when ambiguous)")
    g.add_argument("--arch", metavar="TEXT",
                   help="how the state_dict's layers connect, e.g. 'lstm > linear(head.0) > relu > "
                        "linear(head.3) > softmax' (the syntax: python -m pydoc edgelstm.model.arch)")
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
    return dict(arch=args.arch, rnn=args.rnn, head=False if args.no_head else args.head,
                allow_unused=args.allow_unused,
                input_norm=_pair(args.input_mean, args.input_std, "input"),
                output_norm=_pair(args.output_mean, args.output_std, "output"))


@contextlib.contextmanager
def _status_line(prefix: str):
    """A Progress line on stderr (drawn only on a terminal); a log record written meanwhile
    starts on a line of its own."""
    line = Progress(sys.stderr, prefix=prefix)

    def interrupt(record) -> bool:
        line.break_line()
        return True
    handlers = logging.getLogger().handlers
    for h in handlers:
        h.addFilter(interrupt)
    try:
        with line:
            yield line
    finally:
        for h in handlers:
            h.removeFilter(interrupt)


def cmd_convert(args) -> int:
    from .model import deploy
    from .model.loader import load_spec
    if not (args.module or args.source):
        raise EdgeLSTMError("give a model file to convert, or --module and --weights")
    with _status_line("convert: ") as line:
        if args.module:
            from .model.trace_cli import traced_spec
            spec = traced_spec(args.module, args.weights, args.input_size, status=line.update)
        else:
            spec = load_spec(args.source, status=line.update, **_load_options(args))
        out = args.output or os.path.splitext(args.weights if args.module else args.source)[0] + ".elstm"
        spec = named(spec, args)
        line.update(f"writing {out}")
        digest = deploy.save(spec, out)
    print(f"wrote {out}  ({os.path.getsize(out):,} bytes, hash {digest[:12]})")
    print(spec.describe())
    return 0


def cmd_export_c(args) -> int:
    from .export.command import run_export_c
    return run_export_c(args, _load_options, sys.stdout)


def cmd_bench(args) -> int:
    from .bench import run_bench
    from .engine import Model
    from .model.loader import load_spec
    model = Model(load_spec(args.model, **_load_options(args)))
    with _status_line("bench: ") as line:
        return run_bench(model, [int(v) for v in args.streams.split(",")], sys.stdout, line)


def cmd_verify(args) -> int:
    from .model.loader import load
    from .verify import verify
    with _status_line("verify: ") as line:
        model = load(args.model, status=line.update)
        model.warmup(sequences=True, status=line.update)
        verdict = verify(model, args.against, module=args.module, weights=args.weights, steps=args.steps,
                         progress=line.update)
    ok = verdict.passed(args.atol)
    print(f"{args.model} streamed {verdict.steps} readings one at a time, compared at {verdict.compared} steps")
    print(f"  against   {verdict.reference}")
    print(f"  max |difference| {verdict.max_abs_diff:.3g}  ({'within' if ok else 'OVER'} {args.atol:g})")
    print(f"  model hash {model.content_hash}")
    return 0 if ok else 1


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
    from .kernels import cache, prebuilt
    from .model.loader import load
    t0 = time.perf_counter()
    with _status_line("warmup: ") as line:
        model = load(args.model, status=line.update, **_load_options(args))
        model.warmup(sequences=True, banks=True, status=line.update)   # step, layer by layer, big batches
    print(f"kernels ready in {time.perf_counter() - t0:.2f} s (cache: {cache.cache_dir()})")
    if args.no_prebuilt or os.environ.get("EDGELSTM_PREBUILT") == "0":
        return 0
    if prebuilt.module() is not None:
        print(f"prebuilt kernels already built for this machine: {prebuilt.extension_path()}")
        return 0
    return _prebuild()


def _prebuild() -> int:
    from .errors import BuildError
    from .kernels.prebuild import build
    t0 = time.perf_counter()
    try:
        with _status_line("prebuilding kernels: ") as line:
            path = build(status=line.update)
    except BuildError as exc:
        print(f"prebuilt kernels not built: {exc}\n"
              f"numba's cache above serves instead (no compiling at start-up, but numba is loaded)")
        return 0
    print(f"prebuilt kernels built in {time.perf_counter() - t0:.1f} s: {path}\n"
          f"later processes load them instead of numba (EDGELSTM_PREBUILT=0 turns them off)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    print("edgelstm demo: a simulated wrist-sensor board streams accelerometer readings over a "
          "pseudo-terminal\n(serial frame protocol, firmware_bridge/PROTOCOL.md) into the daemon running the "
          "bundled activity model.\nCtrl-C stops both.\n", flush=True)
    with _status_line("demo: ") as line:
        return run_demo(args.speed, args.steps, args.streams, sys.stdout, sys.stdout.isatty(), log, line)


def _run_overrides(args) -> dict:
    o = {"model": args.model, "mqtt.url": args.mqtt or args.out_mqtt, "mqtt.subscribe": args.topic_in,
         "mqtt.client_id": args.client_id, "serial.port": args.serial, "serial.baud": args.baud,
         "serial.mode": args.serial_mode,
         "serial.reply": args.serial_reply or None, "backend": args.backend, "checkpoint": args.checkpoint,
         "metrics_port": args.metrics_port, "homeassistant.enabled": args.homeassistant or None}
    if args.out_mqtt and not args.mqtt:
        o["mqtt.subscribe"] = ""                       # broker used for output only
    if args.out == "stdout":
        o["output"] = "stdout"
    elif args.out:
        o["output"], o["mqtt.publish"] = "mqtt", args.out
    return o


def _daemon_config(args):
    from .daemon import config
    return config.load(args.config, _run_overrides(args)).validate()


def cmd_check_config(args) -> int:
    import json

    from .daemon.validation import preflight
    cfg = _daemon_config(args)
    preflight(cfg)
    print(json.dumps(cfg.redacted(), indent=2))
    print(f"\nconfig OK: model {cfg.model}, input {_inputs(cfg)}, output {cfg.output_kind}, ack {cfg.effective_ack}",
          file=sys.stderr)
    return 0


def _inputs(cfg) -> str:
    inputs = [f"mqtt {cfg.mqtt.subscribe}" if cfg.mqtt.url and cfg.mqtt.subscribe else "",
              f"serial {cfg.serial.port}" if cfg.serial.port else ""]
    return " and ".join(filter(None, inputs))


def cmd_run(args) -> int:
    from .daemon.service import Daemon
    from .daemon.validation import preflight
    cfg = _daemon_config(args)
    preflight(cfg)
    with _status_line("") as line:          # not on a terminal, the daemon logs it instead
        daemon = Daemon(cfg, status=line.update if line.active else None)
    log.info("running: input %s, output %s; SIGTERM/Ctrl-C stops, SIGHUP reloads the model", _inputs(cfg),
             cfg.output_kind)
    return daemon.run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgelstm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgelstm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="a simulated sensor board on a pty feeding the daemon (no hardware needed)",
                       description="Start a simulated wrist-sensor board on a pseudo-terminal and the daemon "
                                   "reading from it with the bundled activity model; prints live predictions, "
                                   "a status line and a final accuracy line.")
    p.add_argument("--speed", type=float, default=10.0,
                   help="playback speed as a multiple of the 50 Hz sensor rate (default 10; 0 = full speed)")
    p.add_argument("--steps", type=int, default=3000, help="readings per wrist (default 3000 = 60 s of data)")
    p.add_argument("--streams", type=int, default=3, help="simulated wrists on the board (default 3)")
    p.set_defaults(func=cmd_demo)

    for name, helptext, func in (("run", "run the daemon: readings in over MQTT/serial, predictions out", cmd_run),
                                 ("check-config", "validate a config and print the effective one, secrets "
                                                  "redacted", cmd_check_config)):
        p = sub.add_parser(name, help=helptext, description=helptext + ". Flags override the config file.",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=RUN_EPILOG)
        p.add_argument("-c", "--config", help="TOML config file (see edgelstm.example.toml)")
        p.add_argument("--model", help="model file (.elstm, .pt, ...)")
        p.add_argument("--mqtt", metavar="URL", help="broker to read readings from, e.g. mqtt://localhost:1883")
        p.add_argument("--in", dest="topic_in", metavar="TOPIC", help="reading topic, '+' names the stream "
                       "(default sensors/+/reading)")
        p.add_argument("--out", metavar="TOPIC|stdout", help="prediction topic with {stream}, or 'stdout'")
        p.add_argument("--out-mqtt", metavar="URL", help="broker to publish predictions to (when input is serial)")
        p.add_argument("--client-id", help="fixed MQTT client id (the persistent session is keyed by it)")
        p.add_argument("--serial", metavar="PORT", help="serial port, e.g. /dev/serial/by-id/usb-...")
        p.add_argument("--baud", type=int, help="serial baud rate (default 115200)")
        p.add_argument("--serial-mode", choices=["frames", "lines"], help="frame protocol or text lines")
        p.add_argument("--serial-reply", action="store_true",
                       help="send each prediction back to the board as a PREDICTION frame")
        p.add_argument("--checkpoint", metavar="PATH", help="state checkpoint file")
        p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
        p.add_argument("--homeassistant", action="store_true",
                       help="announce each stream's outputs to Home Assistant (MQTT discovery; needs MQTT output)")
        p.add_argument("--backend", choices=["cpu", "cuda", "auto"],
                       help="where streams are stepped (default cpu; cuda needs a GPU, see the README)")
        p.set_defaults(func=func)

    from .recording.command import add_parser as add_record_parser
    from .replay_command import add_parser as add_replay_parser
    add_record_parser(sub)
    add_replay_parser(sub)

    p = sub.add_parser("convert", help="convert a model file into an .elstm deploy file",
                       description="Read a .pt/.pth (state_dict or checkpoint), .safetensors or .npz and write "
                                   "a versioned .elstm deploy file with architecture, source and content hash. "
                                   "With --module, trace your own nn.Module class (torch.fx, needs torch) so the "
                                   "graph is known, not guessed, and check it against the module.")
    p.add_argument("source", nargs="?", help="model file to convert (or use --module and --weights)")
    p.add_argument("-o", "--output", help="output path (default: SOURCE or WEIGHTS with .elstm)")
    g = p.add_argument_group("tracing your nn.Module (on the training machine)")
    g.add_argument("--module", metavar="PKG.MOD:NAME",
                   help="your model class (built with no arguments) or a function returning the model")
    g.add_argument("--weights", metavar="FILE", help="its state_dict (torch.save(model.state_dict(), FILE))")
    g.add_argument("--input-size", type=int, metavar="N", help="features per reading (default: from the weights)")
    _model_options(p)
    add_name_options(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("export-c", help="generate portable C99 for a microcontroller (float32 or int8 weights)",
                       description="Write NAME.h and NAME.c: the weights as const arrays and a step function "
                                   "with its state struct; no heap, and no libm for plain LSTM/GRU models (ELU, GELU, "
                                   "softmax and norms use expf/erff/logf/sqrtf). Reports flash and RAM bytes.")
    p.add_argument("model", help="model file (.elstm, .pt/.pth, .safetensors, .npz)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the generated files")
    p.add_argument("--name", default="model", help="C prefix and file name (default: model)")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights with a float32 scale per row: about 1/4 of the flash")
    _model_options(p)
    p.set_defaults(func=cmd_export_c)

    p = sub.add_parser("bench", help="time the CPU and CUDA backends on this machine and record the crossover",
                       description="Steps banks of increasing size on the CPU and (when a GPU is usable) on "
                                   "CUDA, prints stream-steps per second, and records where the GPU starts "
                                   "to win for backend='auto'.")
    p.add_argument("model", nargs="?", default=os.path.join(os.path.dirname(__file__), "data", "activity.elstm"),
                   help="model file (default: the bundled model)")
    p.add_argument("--streams", default="1,16,64,256,1024,4096,16384", help="comma-separated stream counts")
    _model_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("inspect", help="print a model's architecture, parameter count and memory footprint")
    p.add_argument("model", help="model file (.pt/.pth, .safetensors, .npz, .elstm)")
    _model_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("verify", help="prove an .elstm computes what the original model computes",
                       description="Stream random readings through MODEL one at a time and compare every step "
                                   "with the original run over the whole sequence (ONNX Runtime for an .onnx "
                                   "file, PyTorch for your nn.Module). Exits 1 if the difference exceeds --atol.")
    p.add_argument("model", help="the .elstm (or any file edgelstm loads)")
    p.add_argument("--against", metavar="FILE", help="the original .onnx file")
    p.add_argument("--module", metavar="PKG.MOD:NAME", help="your nn.Module class, with --weights")
    p.add_argument("--weights", metavar="FILE", help="its state_dict (.pt)")
    p.add_argument("--steps", type=int, default=1000, help="readings to stream (default 1000)")
    p.add_argument("--atol", type=float, default=1e-5, help="largest difference accepted (default 1e-5)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("warmup", help="compile the kernels for a model into the cache, and prebuild them",
                       description="Compile the kernels a model runs into numba's cache, then build them ahead "
                                   "of time into an extension module for this machine (needs a C compiler and "
                                   "setuptools), so later processes start without compiling and without "
                                   "loading numba at all. Run it once after installing or upgrading.")
    p.add_argument("model", help="model file")
    p.add_argument("--no-prebuilt", action="store_true",
                   help="only fill numba's cache; do not build the prebuilt extension")
    _model_options(p)
    p.set_defaults(func=cmd_warmup)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = args.command == "demo" and not args.verbose      # the demo's own output is the point
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
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
