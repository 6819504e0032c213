"""The `edgelstm record` command: its arguments, and the status line (edgelstm/cli.py calls in here).

On a terminal the status line is redrawn in place on stderr every second (log lines clear it
first); otherwise it is an INFO log line every --log-every-s.
"""

from __future__ import annotations

import argparse
import logging
import sys

EPILOG = """\
examples:
  edgelstm record --mqtt mqtt://localhost:1883 --in 'sensors/+/reading' --inputs 3 -o recordings/
  edgelstm record --serial /dev/ttyUSB0 --baud 115200 --model m.elstm -o recordings/ --format parquet
  python -c 'import edgelstm.recording as r; print(r.read("recordings/"))'

Files are named by the UTC time of their first reading (readings-20261201T153000Z-0001.csv); one
being written ends in .part and is renamed when closed. SIGTERM/Ctrl-C closes the last file, exit 0.
"""
TTY_STATUS_EVERY_S = 1.0
CLEAR_LINE = "\r\x1b[K"


def add_parser(sub) -> None:
    p = sub.add_parser("record", help="record readings from MQTT/serial into CSV or Parquet files, for training",
                       description="Record readings (the daemon's inputs, decoded and counted as the daemon does)\n"
                                   "into rotating files in DIR; read them back with edgelstm.recording.read(DIR).",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the recording (created)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--inputs", type=int, metavar="N", help="values per reading")
    size.add_argument("--model", metavar="FILE", help="take the values per reading from this model's input size")
    p.add_argument("--mqtt", metavar="URL", help="broker to read readings from, e.g. mqtt://localhost:1883")
    p.add_argument("--in", dest="topic_in", default="sensors/+/reading", metavar="TOPIC",
                   help="reading topic, '+' names the stream (default sensors/+/reading)")
    p.add_argument("--client-id", default="edgelstm-record",
                   help="fixed MQTT client id: its persistent session keeps readings while the recorder is away "
                        "(default edgelstm-record; not the daemon's)")
    p.add_argument("--serial", metavar="PORT", help="serial port, e.g. /dev/serial/by-id/usb-...")
    p.add_argument("--baud", type=int, default=115_200, help="serial baud rate (default 115200)")
    p.add_argument("--serial-mode", choices=["frames", "lines"], default="frames",
                   help="frame protocol (default) or text lines")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="file format (parquet needs pyarrow)")
    p.add_argument("--rotate-mb", type=float, default=64.0, metavar="MB",
                   help="start a new file after this many megabytes (default 64; 0: no limit)")
    p.add_argument("--rotate-s", type=float, default=3600.0, metavar="S",
                   help="start a new file after this many seconds (default 3600; 0: no limit)")
    p.add_argument("--log-every-s", type=float, default=10.0, metavar="S",
                   help="when stderr is not a terminal: a status log line this often (default 10)")
    p.set_defaults(func=cmd_record)


def _config(args):
    from ..daemon.config import DaemonConfig, MqttConfig, SerialConfig
    from ..daemon.validation import validate_links
    from ..errors import ConfigError
    from .recorder import RecordConfig
    if args.model:
        from ..model.loader import load_spec
        n_inputs = load_spec(args.model).input_size
    else:
        n_inputs = args.inputs
    if n_inputs < 1:
        raise ConfigError(f"--inputs {n_inputs}: a reading has at least one value")
    if args.rotate_mb < 0 or args.rotate_s < 0 or args.log_every_s <= 0:
        raise ConfigError("--rotate-mb and --rotate-s must be 0 (no limit) or more, --log-every-s above 0")
    # QoS 1: the broker keeps what is not acknowledged, and acks wait for the rows to be written.
    # Receive Maximum at the MQTT limit: Parquet holds acks until its file closes (see recorder.py).
    links = DaemonConfig(mqtt=MqttConfig(url=args.mqtt or "", subscribe=args.topic_in if args.mqtt else "",
                                         client_id=args.client_id, qos=1, receive_maximum=65_535),
                         serial=SerialConfig(port=args.serial or "", baud=args.baud, mode=args.serial_mode))
    validate_links(links)
    tty = sys.stderr.isatty()
    return RecordConfig(links, n_inputs, args.output, args.format, int(args.rotate_mb * 1e6), args.rotate_s,
                        TTY_STATUS_EVERY_S if tty else args.log_every_s)


class _TerminalStatus:
    """The status line, redrawn in place; a log record clears it first (a filter on the root handlers)."""

    def __init__(self):
        self.showing = False

    def show(self, status) -> None:
        sys.stderr.write(f"{CLEAR_LINE}{status.line()}")
        sys.stderr.flush()
        self.showing = True

    def filter(self, record: logging.LogRecord) -> bool:
        if self.showing:
            sys.stderr.write(CLEAR_LINE)
            self.showing = False
        return True

    def end(self) -> None:
        if self.showing:
            sys.stderr.write("\n")
            self.showing = False


def cmd_record(args) -> int:
    from .recorder import Recorder
    cfg = _config(args)
    log = logging.getLogger("edgelstm.record")
    if not sys.stderr.isatty():
        return Recorder(cfg, lambda status: log.info("%s", status.line())).run()
    terminal = _TerminalStatus()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(terminal)
    try:
        return Recorder(cfg, terminal.show).run()
    finally:
        terminal.end()
        for handler in handlers:
            handler.removeFilter(terminal)
