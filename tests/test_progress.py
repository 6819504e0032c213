"""The status line (edgelstm/progress.py): drawn on a terminal, rate-limited, ended with a
newline, and absent from pipes and logs; and the commands that use it."""

import io
import logging
import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from ort_probe import need_ort

import edgelstm
from edgelstm.progress import Progress, is_terminal, notice_if_slow

BUNDLED = ROOT / "edgelstm" / "data"
ONNX = ROOT / "tests" / "data" / "onnx" / "lstm_mlp_head.onnx"


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture(autouse=True)
def a_real_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")


def test_a_terminal_gets_carriage_return_lines_and_a_final_newline():
    out = FakeTTY()
    with Progress(out, prefix="convert: ") as line:
        line.update("reading m.pt")
        line.update("building the graph")
        assert "\n" not in out.getvalue()
    assert out.getvalue() == "\rconvert: reading m.pt\rconvert: building the graph\n"


def test_a_shorter_text_blanks_what_the_longer_one_left():
    out = FakeTTY()
    line = Progress(out)
    line.update("a long first stage")
    line.update("short")
    assert out.getvalue().endswith("\rshort" + " " * (len("a long first stage") - len("short")))


def test_nothing_is_written_to_a_pipe_or_a_dumb_terminal(monkeypatch):
    for stream in (io.StringIO(), FakeTTY()):
        if isinstance(stream, FakeTTY):
            monkeypatch.setenv("TERM", "dumb")
        with Progress(stream) as line:
            line.update("reading", done=1, total=2)
            line.break_line()
            line.close("done")
        assert stream.getvalue() == "" and not line.active


def test_counts_repaint_at_most_ten_times_a_second():
    out, clock = FakeTTY(), Clock()
    line = Progress(out, clock=clock)
    for k in range(1, 101):                      # 100 updates, one every 1/64 s (exact in binary)
        line.update("streamed", done=k, total=100)
        clock.t += 1 / 64
    paints = out.getvalue().count("\r")
    assert paints == 15, out.getvalue()          # k = 1, 8, 15, ...: every 7/64 s, the first >= 0.1 s
    assert "streamed 100/100 (100%)" not in out.getvalue()       # the last one waits...
    line.close()
    assert out.getvalue().endswith("streamed 100/100 (100%)\n")  # ...and is painted on close


def test_a_new_stage_is_painted_at_once_and_force_paints_a_count():
    out, clock = FakeTTY(), Clock()
    line = Progress(out, clock=clock)
    line.update("streamed 1/9")
    line.update("streamed 2/9")                  # same clock: a count, held back
    line.update("running the reference")         # a new stage, shown though no time passed
    line.update("running the reference 5", force=True)
    text = out.getvalue()
    assert "streamed 2/9" not in text and "\rrunning the reference" in text and text.endswith(" 5")


def test_leaving_on_an_exception_still_ends_the_line():
    out = FakeTTY()
    with pytest.raises(RuntimeError):
        with Progress(out) as line:
            line.update("building the graph")
            raise RuntimeError("boom")
    assert out.getvalue().endswith("building the graph\n")


def test_break_line_and_close_with_a_final_text():
    out = FakeTTY()
    line = Progress(out)
    line.break_line()                            # nothing open: nothing written
    line.update("compiling")
    line.break_line()
    line.update("compiling")
    line.close("ready")
    assert out.getvalue() == "\rcompiling\n\rcompiling\rready    \n"
    assert is_terminal(out) and not is_terminal(io.StringIO()) and not is_terminal(object())


def test_a_slow_block_is_announced_once_a_fast_one_never():
    said = []
    with notice_if_slow(said.append, "compiling", delay=0.01):
        time.sleep(0.3)
    assert said == ["compiling"]
    with notice_if_slow(said.append, "quick", delay=0.2):
        pass
    time.sleep(0.3)
    assert said == ["compiling"]                 # cancelled on the way out
    with notice_if_slow(None, "nobody listens", delay=0.0):
        time.sleep(0.05)


def test_warmup_of_compiled_kernels_says_nothing():
    from edgelstm import _numba
    from edgelstm.kernels import cpu, entries
    model = edgelstm.load(BUNDLED / "activity.elstm")
    model.warmup(banks=True)
    said = []
    model.warmup(banks=True, status=said.append)
    assert said == []
    assert _numba.is_cached(cpu.step) and not _numba.is_cached(len)
    assert entries.ready(["step", "gather", "layer_gates", "finish"])


def test_load_spec_and_verify_report_their_steps():
    from edgelstm.model.loader import load_spec
    said = []
    load_spec(BUNDLED / "activity.pt", status=said.append)
    assert said == [f"reading {BUNDLED / 'activity.pt'} (torch)", "building the graph"]
    need_ort()
    from edgelstm.verify import verify
    said.clear()
    verdict = verify(edgelstm.load(ONNX), ONNX, steps=600, progress=said.append)
    assert verdict.passed(1e-5)
    assert [t for t in said if t.startswith("streamed")] == [f"streamed {n}/600 readings" for n in (250, 500, 600)]


def test_a_log_record_starts_on_a_line_of_its_own(monkeypatch):
    from edgelstm import cli
    out = FakeTTY()
    monkeypatch.setattr(sys, "stderr", out)
    handler = logging.StreamHandler(out)
    logging.getLogger().addHandler(handler)
    try:
        with cli._status_line("run: ") as line:
            line.update("compiling")
            logging.getLogger("edgelstm.test").warning("loaded")
        assert out.getvalue() == "\rrun: compiling\nloaded\n"
        assert not handler.filters                  # taken off again
    finally:
        logging.getLogger().removeHandler(handler)


def _edgelstm(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "edgelstm", *map(str, args)], cwd=ROOT, timeout=300, **kwargs)


@pytest.mark.integration
def test_commands_write_no_status_lines_into_a_pipe(tmp_path):
    need_ort()
    env = dict(os.environ, TERM="xterm", EDGELSTM_CROSSOVER_FILE=str(tmp_path / "crossover.json"))
    runs = [("convert", BUNDLED / "activity.pt", "-o", tmp_path / "a.elstm"),
            ("convert", ONNX, "-o", tmp_path / "o.elstm"),
            ("verify", tmp_path / "o.elstm", "--against", ONNX, "--steps", "600"),
            ("warmup", BUNDLED / "activity.elstm"),
            ("bench", BUNDLED / "activity.elstm", "--streams", "1,16")]
    for args in runs:
        out = _edgelstm(*args, capture_output=True, text=True, env=env)
        assert out.returncode == 0, (args, out.stderr)
        assert "\r" not in out.stdout + out.stderr, args
        assert " .. " not in out.stderr and out.stderr.count("\n") == 0, (args, out.stderr)   # no log lines either


@pytest.mark.integration
def test_convert_on_a_terminal_shows_its_status_line(tmp_path):
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgelstm", "convert", str(BUNDLED / "activity.pt"), "-o",
                                 str(tmp_path / "a.elstm")], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                                env=dict(os.environ, TERM="xterm"))
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:                      # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 0, seen
    finally:
        os.close(master)
    text = seen.decode()
    assert "\rconvert: reading " in text and "\rconvert: building the graph" in text, text
    status, _, rest = text.partition("\r\nwrote ")      # the status line ends before the results start
    assert status.split("\r")[-1].startswith("convert: writing ") and rest.startswith(str(tmp_path)), text
