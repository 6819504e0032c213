"""The `edgelstm replay` command: its arguments, the progress line and what it prints (edgelstm/cli.py
registers it; the work is in replay.py and replay_plots.py)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .progress import Progress

EPILOG = """\
examples:
  edgelstm replay recordings/ --model m.elstm -o replay/
  edgelstm replay recordings/ -c /etc/edgelstm/edgelstm.toml -o replay/ --plot
  edgelstm replay recordings/ --model m.elstm -o what-if/ --policy max_gap_s=2 --policy nonfinite=reset

Writes DIR/predictions.csv (what the daemon would have published) and DIR/summary.json (counts by
reason, accuracy); with --plot, DIR/<stream>.png for each stream and, when the recording has labels
and the model too (edgelstm convert --labels), DIR/confusion.png. Every stream starts from zero state.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="stream a recording through a model as the daemon would: predictions, "
                                      "counts, plots",
                       description="Stream a recording (edgelstm record's files) through a model with the daemon's "
                                   "own sequencing,\ngap and reset policies, each stream's readings in recorded "
                                   "order and the recorded t as the\nclock; write the predictions the daemon would "
                                   "have published and what it would have counted.",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("recording", help="what edgelstm record wrote: its directory (-o DIR) or one of its files")
    p.add_argument("--model", help="model file (default: the config's model)")
    p.add_argument("-c", "--config", help="the daemon's TOML config: its [policy], capacity and backend apply")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the results (created)")
    p.add_argument("--plot", action="store_true",
                   help="also a PNG per stream and a confusion matrix (needs matplotlib: pip install "
                        "'edgelstm[plot]')")
    p.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [policy] setting, e.g. max_gap_s=2 or gap=hold (repeat for more)")
    p.add_argument("--link", choices=["mqtt", "serial"],
                   help="the link the readings came over: serial is in order (seq 0 again is a reboot, nothing "
                        "waits for reordering). Default: serial when the config reads a serial port only, else mqtt")
    p.add_argument("--backend", choices=["cpu", "cuda", "auto"], help="where streams are stepped (default: the "
                                                                      "config's, else cpu)")
    p.set_defaults(func=cmd_replay)


def _policy_overrides(items: list[str]) -> dict:
    """{"policy.KEY": value} from KEY=VALUE texts; a value is read as TOML (2, 2.5, true, "x"), else as text."""
    from .daemon.config import tomllib  # tomli on Python 3.10
    from .errors import ConfigError
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--policy {item!r}: write KEY=VALUE, e.g. --policy max_gap_s=2")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[f"policy.{key.strip()}"] = value
    return out


def _config(args):
    from .daemon import config, validation
    from .errors import ConfigError
    cfg = config.load(args.config, {"model": args.model, "backend": args.backend,
                                    **_policy_overrides(args.policy)})
    if not cfg.model:
        raise ConfigError("no model: pass --model FILE, or -c CONFIG with `model = \"path\"`")
    if not os.path.exists(cfg.model):
        raise ConfigError(f"model file {cfg.model!r} does not exist: check --model (or the config's `model`)")
    validation.validate_stepping(cfg)
    return cfg


def _in_order(args, cfg) -> bool:
    if args.link:
        return args.link == "serial"
    return bool(cfg.serial.port) and not (cfg.mqtt.url and cfg.mqtt.subscribe)


def cmd_replay(args) -> int:
    from . import replay, replay_plots
    from .errors import ReplayError
    from .model.loader import load
    from .recording import read
    cfg = _config(args)
    if args.plot:
        replay_plots.require_matplotlib()           # before the work, not after it
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReplayError(f"cannot create {out} ({exc.strerror}): choose another -o DIR") from None
    recordings = read(args.recording)
    model = load(cfg.model)
    status = Progress(sys.stderr, prefix="replay: ")
    try:
        result = replay.replay(recordings, model, cfg, _in_order(args, cfg),
                               progress=lambda done, total: status.update("replaying", done=done, total=total))
        written = [replay.write_predictions(result, out / "predictions.csv"),
                   replay.write_summary(result, out / "summary.json",
                                        {"recording": str(args.recording), "model": cfg.model})]
        plots = []
        if args.plot:
            taken: set[str] = set()
            for k, stream in enumerate(recordings):
                status.update("plotting", done=k, total=len(recordings))
                plots.append(replay_plots.plot_stream(result, stream,
                                                      out / f"{replay_plots.safe_file_name(stream, taken)}.png"))
            matrix = replay_plots.plot_confusion(result, out / "confusion.png")
            if matrix is not None:
                written.append(matrix)
    finally:
        status.close()
    sys.stdout.write(_report(result, args, cfg.model, written, plots))
    return 0


def _report(result, args, model_path: str, written: list[Path], plots: list[Path]) -> str:
    from .replay import summary
    s = summary(result)
    skipped = ", ".join(f"{reason} {n:,}" for reason, n in s["not_predicted"].items() if n) or "none"
    resets = ", ".join(f"{reason} {n:,}" for reason, n in s["resets"].items()) or "none"
    lines = [f"replayed {s['readings']:,} readings of {s['streams']} stream(s) from {args.recording} through "
             f"{model_path} (hash {s['model_hash'][:12]}), as the daemon would step them",
             f"  {s['predictions']:,} predictions, {s['answered_again']:,} answered again; not predicted: {skipped}",
             f"  resets: {resets}; {s['gap_readings']:,} readings missing in gaps, {s['resyncs']:,} resyncs"]
    if s.get("accuracy") is not None:
        lines.append(f"  accuracy {s['accuracy']:.1%} over {s['labelled_predictions']:,} labelled predictions")
    elif result.model.labels and not result.labelled:
        lines.append("  no accuracy: the recording has no labels (send \"label\" in the JSON readings)")
    elif any(r.labels is not None for r in result.recordings.values()):
        lines.append("  no accuracy: the model has no labels (name its classes: edgelstm convert --labels A,B,..)")
    shown = ", ".join(map(str, written))
    if plots:
        shown += f", {len(plots)} stream plot(s) ({plots[0]}{', ...' if len(plots) > 1 else ''})"
    lines.append(f"wrote {shown}")
    return "\n".join(lines) + "\n"
