"""edgelstm replay in-process: the daemon's policies applied to a recording exactly as the running
daemon applies them (compared with a Daemon driven turn by turn), predictions as Stream.step makes
them, the summary's counts, predictions.csv, the plots and the command line."""

import csv
import json
import sys

import numpy as np
import pytest
from conftest import ROOT

import edgelstm
import edgelstm.recording
from edgelstm import cli, replay_plots
from edgelstm.daemon.config import DaemonConfig, PolicyConfig, SerialConfig
from edgelstm.daemon.messages import Origin, ReadingMsg
from edgelstm.daemon.service import Daemon
from edgelstm.engine import Model
from edgelstm.errors import ReplayError
from edgelstm.model import deploy
from edgelstm.model.names import OutputNames
from edgelstm.protocol.payload import Reading
from edgelstm.recording import NO_BOOT, RecordingWriter, Row, StreamRecording
from edgelstm.replay import (
    arrival_order,
    class_indices,
    confusion,
    replay,
    summary,
    write_predictions,
)
from edgelstm.simulate import ACTIVITIES, accelerometer

MODEL = str(ROOT / "edgelstm" / "data" / "activity.elstm")
T0 = 1.8e9
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model():
    return edgelstm.load(MODEL)


@pytest.fixture(scope="module")
def labelled_model(tmp_path_factory):
    """The bundled model with its classes named (edgelstm convert --labels still,walking,running)."""
    spec = edgelstm.load(MODEL).spec.with_names(OutputNames(labels=ACTIVITIES))
    path = tmp_path_factory.mktemp("model") / "labelled.elstm"
    deploy.save(spec, path)
    return edgelstm.load(str(path)), path


def stream_recording(name, x, seq=None, t=None, boot=None, labels=None) -> StreamRecording:
    n = len(x)
    return StreamRecording(name, np.arange(n, dtype=np.int64) if seq is None else np.asarray(seq, np.int64),
                           T0 + np.arange(n) / 50 if t is None else np.asarray(t, np.float64),
                           np.full(n, 1, np.int64) if boot is None else np.asarray(boot, np.int64),
                           np.asarray(x, np.float32), None if labels is None else np.asarray(labels, dtype=object))


def troubled_recordings(labelled: bool = False) -> dict[str, StreamRecording]:
    """Stream "a": a seq jump past resync_after, a reboot (new boot id), a pause past max_gap_s and
    a NaN reading; "b": clean; "c": two readings swapped in arrival (MQTT reorders), one missing.
    labelled: each reading labelled with a class, in turn."""
    rng = np.random.default_rng(7)
    xa = rng.normal(size=(120, 3)).astype(np.float32)
    xa[90] = np.nan
    seq = np.arange(120)
    seq[30:] += 200_000                                 # resync_after is 100,000
    boot = np.where(np.arange(120) < 60, 1, 2)
    seq[60:] = np.arange(60)                            # the new boot counts from 0
    t = T0 + np.arange(120) / 50
    t[75:] += 3.0                                       # a 3 s pause; max_gap_s 1
    xc = rng.normal(size=(40, 3)).astype(np.float32)
    seq_c = [*range(10), 11, 10, *range(12, 20), *range(21, 41)]      # 10 and 11 swapped, 20 never sent

    def labels(n):
        return [ACTIVITIES[k % 3] for k in range(n)] if labelled else None
    return {"a": stream_recording("a", xa, seq, t, boot, labels(120)),
            "b": stream_recording("b", rng.normal(size=(100, 3)), t=T0 + 0.001 + np.arange(100) / 50,
                                  labels=labels(100)),
            "c": stream_recording("c", xc, seq_c, t=T0 + 0.002 + np.arange(40) / 50, boot=np.full(40, NO_BOOT),
                                  labels=labels(40))}


POLICY = PolicyConfig(max_gap_s=1.0, nonfinite="reset", reorder_timeout_s=0.2)


def daemon_predictions(recordings, policy):
    """The running daemon's answers to the same readings arriving in the same order, turn by turn
    (an idle turn as time passes, then a turn with the reading): its predictions and counters."""
    got = []
    cfg = DaemonConfig(model=MODEL, serial=SerialConfig(port="/dev/null"), output="stdout", policy=policy,
                       log_every_s=1e9).validate()
    clock = [0.0]
    d = Daemon(cfg, sink=lambda stream, seq, t_in, y, replayed: got.append((stream, seq, t_in, y.copy(), replayed)),
               clock=lambda: clock[0])
    for stream, i in arrival_order(recordings):
        rec = recordings[stream]
        now = clock[0] = max(clock[0], rec.t[i])
        d.pipeline.handle([], now)                  # the idle turn just before the reading arrives
        d._periodic(now)
        boot = None if rec.boot[i] == NO_BOOT else int(rec.boot[i])
        msg = ReadingMsg(stream, Reading(int(rec.seq[i]), rec.x[i], float(rec.t[i]), boot),
                         Origin(None, None, None, False, now))
        d.pipeline.handle([msg], now)
        d.pipeline.handle([], now)
        d._periodic(now)
    now = clock[0] + 60.0                           # it runs on: what waits for missing readings is released
    d.pipeline.handle([], now)
    return got, d.metrics


def test_replay_applies_gap_and_reset_policies_as_the_running_daemon(model):
    recordings = troubled_recordings()
    result = replay(recordings, model, DaemonConfig(policy=POLICY))
    want, metrics = daemon_predictions(recordings, POLICY)
    p = result.predictions
    assert [(s, q, t, r) for s, q, t, _, r in want] == list(zip(p.stream, p.seq.tolist(), p.t.tolist(),
                                                               p.replayed.tolist()))
    np.testing.assert_array_equal(p.y, np.array([y for *_, y, _ in want]))
    assert metrics.resets.values == result.metrics.resets.values
    for name in ("readings", "predictions", "gaps", "nonfinite", "resyncs", "duplicates", "drops"):
        assert getattr(metrics, name).values == getattr(result.metrics, name).values, name
    s = summary(result)
    assert s["resets"] == {"resync": 1, "reboot": 1, "time_gap": 1, "nonfinite": 1}
    assert s["per_stream"]["a"]["resets"] == s["resets"] and s["per_stream"]["b"]["resets"] == {}
    assert s["not_predicted"] == {"duplicates": 0, "nonfinite": 1, "capacity": 0, "stale": 0, "numerical": 0}
    assert s["readings"] == 260 and s["predictions"] == 259 and s["answered_again"] == 0
    assert s["gap_readings"] == 1 and s["resyncs"] == 1                  # stream c's missing seq 20
    assert list(p.seq[result.rows_of("c")]) == [*range(20), *range(21, 41)]    # the swap undone, as the daemon does
    assert [(s, r) for s, r, _ in result.resets] == [("a", "resync"), ("a", "reboot"), ("a", "time_gap"),
                                                     ("a", "nonfinite")]
    assert [when for _, _, when in result.resets] == pytest.approx([T0 + 30 / 50, T0 + 60 / 50, T0 + 3 + 75 / 50,
                                                                    T0 + 3 + 90 / 50])


def test_a_reset_starts_the_stream_over_and_a_clean_stream_is_stream_step(model):
    recordings = troubled_recordings()
    result = replay(recordings, model, DaemonConfig(policy=POLICY))
    p = result.predictions
    clean = model.stream()
    np.testing.assert_array_equal(p.y[result.rows_of("b")], np.array([clean.step(x) for x in recordings["b"].x]))
    fresh = model.stream()                             # "a" after its time-gap reset (reading 75) up to the NaN
    rows = result.rows_of("a")
    np.testing.assert_array_equal(p.y[rows[75:90]], np.array([fresh.step(x) for x in recordings["a"].x[75:90]]))


def test_with_hold_policies_nothing_is_reset(model):
    policy = PolicyConfig(max_gap_s=1.0, gap="hold", reboot="hold", nonfinite="hold", reorder_timeout_s=0.2)
    result = replay(troubled_recordings(), model, DaemonConfig(policy=policy))
    s = summary(result)
    assert s["resets"] == {} and result.resets == [] and s["not_predicted"]["nonfinite"] == 1
    want, _ = daemon_predictions(troubled_recordings(), policy)
    np.testing.assert_array_equal(result.predictions.y, np.array([y for *_, y, _ in want]))


def test_a_stream_silent_past_stream_ttl_s_is_forgotten_and_starts_from_zero(model):
    x = np.random.default_rng(3).normal(size=(40, 3)).astype(np.float32)
    t = T0 + np.arange(40) / 50
    t[20:] += 100.0
    policy = PolicyConfig(stream_ttl_s=30.0)
    recordings = {"a": stream_recording("a", x, t=t), "b": stream_recording("b", x, t=T0 + 0.5 + 2.6 * np.arange(40))}
    result = replay(recordings, model, DaemonConfig(policy=policy))
    assert summary(result)["evicted_streams"]["idle"] == 1
    fresh = model.stream()
    np.testing.assert_array_equal(result.predictions.y[result.rows_of("a")[20:]], [fresh.step(v) for v in x[20:]])
    want, _ = daemon_predictions(recordings, policy)
    np.testing.assert_array_equal(result.predictions.y, np.array([y for *_, y, _ in want]))


def test_arrival_order_merges_streams_by_t_and_keeps_each_streams_order():
    nan = np.nan
    recordings = {"a": stream_recording("a", np.zeros((4, 3)), t=[1.0, 3.0, 2.5, nan]),
                  "b": stream_recording("b", np.zeros((3, 3)), t=[nan, 2.0, 3.0])}
    assert list(arrival_order(recordings)) == [("b", 0), ("a", 0), ("b", 1), ("a", 1), ("a", 2), ("a", 3),
                                               ("b", 2)]


def test_summary_counts_and_accuracy_with_labels(labelled_model):
    model, _ = labelled_model
    x, y = accelerometer(600, seed=11)
    labels = np.array([ACTIVITIES[k] for k in y], dtype=object)
    labels[:50] = ""                                   # unlabelled readings
    labels[50:60] = [str(k) for k in y[50:60]]          # an integer class, as edgelstm record writes it
    labels[60:65] = "jumping"                           # not one of the model's classes
    result = replay({"w": stream_recording("w", x, labels=labels)}, model, DaemonConfig())
    s = summary(result)
    c = confusion(result)
    predicted = np.argmax(result.predictions.y, axis=1)
    known = class_indices(labels, ACTIVITIES)
    assert c.total == 545 and c.unknown == 5 and s["labelled_predictions"] == 545 and s["unknown_labels"] == 5
    assert c.correct == int((predicted[known >= 0] == known[known >= 0]).sum())
    assert s["accuracy"] == pytest.approx(c.correct / 545) and s["accuracy"] > 0.8
    assert s["confusion"]["counts"] == c.counts.tolist() and c.counts.sum(axis=1).tolist() == \
        [int((known == k).sum()) for k in range(3)]
    assert s["per_stream"]["w"]["accuracy"] == s["accuracy"] and s["labels"] == list(ACTIVITIES)
    json.dumps(s)                                      # all of it is JSON


def test_no_accuracy_without_labels_on_either_side(model, labelled_model):
    x, y = accelerometer(100, seed=12)
    labelled = {"w": stream_recording("w", x, labels=[ACTIVITIES[k] for k in y])}
    assert "accuracy" not in summary(replay(labelled, model, DaemonConfig()))       # the model has none
    assert "accuracy" not in summary(replay({"w": stream_recording("w", x)}, labelled_model[0], DaemonConfig()))


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_predictions_csv_has_the_daemons_floats_and_names(tmp_path, model, labelled_model):
    recordings = troubled_recordings()
    result = replay(recordings, model, DaemonConfig(policy=POLICY))
    header, rows = read_csv(write_predictions(result, tmp_path / "p.csv"))
    assert header == ["stream", "seq", "t", "y0", "y1", "y2", "replay"]
    y = np.array([[np.float32(float(v)) for v in row[3:6]] for row in rows])
    np.testing.assert_array_equal(y, result.predictions.y)                     # bit for bit
    assert [(r[0], int(r[1]), float(r[2])) for r in rows[:2]] == [("a", 0, T0), ("b", 0, T0 + 0.001)]

    x, labels = accelerometer(50, seed=2)
    lab = replay({"w": stream_recording("w", x, labels=[ACTIVITIES[k] for k in labels])}, labelled_model[0],
                 DaemonConfig())
    header, rows = read_csv(write_predictions(lab, tmp_path / "l.csv"))
    assert header == ["stream", "seq", "t", "y0", "y1", "y2", "label", "p", "replay", "recorded_label"]
    ys = lab.predictions.y
    assert [r[6] for r in rows] == [ACTIVITIES[k] for k in np.argmax(ys, axis=1)]
    probability = np.exp(ys - ys.max(1, keepdims=True)).max(1) / np.exp(ys - ys.max(1, keepdims=True)).sum(1)
    np.testing.assert_allclose([float(r[7]) for r in rows], probability, rtol=1e-6)
    assert [r[9] for r in rows] == [ACTIVITIES[k] for k in labels]

    spec = model.spec.with_names(OutputNames(outputs=("ax", "ay", "az"), units=("g", "g", "")))
    named = replay({"w": stream_recording("w", x)}, Model(spec), DaemonConfig())
    header, rows = read_csv(write_predictions(named, tmp_path / "n.csv"))
    assert header == ["stream", "seq", "t", "y0", "y1", "y2", "ax", "ay", "az", "replay"] and rows[0][3:6] == \
        rows[0][6:9]


def test_a_recording_of_another_input_count_is_refused(model):
    with pytest.raises(ReplayError, match="readings have 2 values, the model takes 3"):
        replay({"a": stream_recording("a", np.zeros((5, 2)))}, model, DaemonConfig())


# -- plots -----------------------------------------------------------------------------------------------

def test_safe_file_names():
    taken: set[str] = set()
    assert replay_plots.safe_file_name("wrist1", taken) == "wrist1"
    odd = [replay_plots.safe_file_name(s, taken) for s in ("wrist/1", "../etc", "confusion", "WRIST1", "é", "")]
    assert odd[0].startswith("wrist_1-") and odd[1].startswith("_etc-") and odd[2].startswith("confusion-")
    assert odd[3].startswith("WRIST1-") and odd[4].startswith("_-") and odd[5].startswith("stream-")
    assert len(set(map(str.lower, odd))) == len(odd) and all("/" not in n and not n.startswith(".") for n in odd)


def test_plots_are_pngs_per_stream_and_a_confusion_matrix(tmp_path, labelled_model):
    pytest.importorskip("matplotlib")
    model, _ = labelled_model
    recordings = troubled_recordings(labelled=True)
    result = replay(recordings, model, DaemonConfig(policy=POLICY))
    paths = [replay_plots.plot_stream(result, s, tmp_path / f"{s}.png") for s in recordings]
    paths.append(replay_plots.plot_confusion(result, tmp_path / "confusion.png"))
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path
    unlabelled = replay({"w": stream_recording("w", np.zeros((30, 3)))}, edgelstm.load(MODEL), DaemonConfig())
    assert replay_plots.plot_confusion(unlabelled, tmp_path / "none.png") is None
    assert replay_plots.plot_stream(unlabelled, "w", tmp_path / "w.png").read_bytes().startswith(PNG)
    assert not (tmp_path / "none.png").exists()


def test_plots_of_odd_streams(tmp_path, labelled_model):
    """No prediction at all (every reading NaN), a single reading, readings without t."""
    pytest.importorskip("matplotlib")
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    recordings = {"nan": stream_recording("nan", np.full((4, 3), np.nan), labels=["still"] * 4),
                  "one": stream_recording("one", x[:1], labels=["walking"]),
                  "no-t": stream_recording("no-t", x, t=[np.nan, T0, np.nan, T0 + 0.02, np.nan, np.nan],
                                           labels=[""] * 6)}
    result = replay(recordings, labelled_model[0], DaemonConfig(policy=PolicyConfig(nonfinite="reset")))
    assert summary(result)["not_predicted"]["nonfinite"] == 4 and len(result.predictions) == 7
    for stream in recordings:
        assert replay_plots.plot_stream(result, stream, tmp_path / f"{stream}.png").read_bytes().startswith(PNG)
    assert replay_plots.plot_confusion(result, tmp_path / "confusion.png").read_bytes().startswith(PNG)


def hide_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import matplotlib -> ImportError


def test_without_matplotlib_plot_fails_first_saying_what_to_install(tmp_path, monkeypatch, capsys, model):
    recording = write_recording(tmp_path / "rec")
    hide_matplotlib(monkeypatch)
    with pytest.raises(ReplayError, match=r"pip install 'edgelstm\[plot\]'"):
        replay_plots.require_matplotlib()
    assert cli.main(["replay", str(recording), "--model", MODEL, "-o", str(tmp_path / "out"), "--plot"]) == 1
    err = capsys.readouterr().err
    assert "edgelstm replay: error: --plot needs matplotlib: pip install 'edgelstm[plot]'" in err
    assert not (tmp_path / "out" / "predictions.csv").exists()                 # refused before the work
    assert cli.main(["replay", str(recording), "--model", MODEL, "-o", str(tmp_path / "out")]) == 0


# -- the command line --------------------------------------------------------------------------------------

def write_recording(directory, streams=("w1", "w2"), n=300):
    """A CSV recording as edgelstm record writes it: simulated wrists, labelled, one 3 s pause in w1."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, stream in enumerate(streams):
        x, y = accelerometer(n, seed=40 + k)
        for i in range(n):
            rows.append(Row(stream, i, T0 + i / 50 + 0.001 * k + (3.0 if stream == "w1" and i >= n // 2 else 0.0),
                            7, x[i], ACTIVITIES[y[i]]))
    rows.sort(key=lambda r: r.t)
    writer = RecordingWriter(directory, 3)
    writer.write(rows)
    writer.close()
    return directory


def test_replay_command_writes_predictions_summary_and_plots(tmp_path, capsys, labelled_model):
    pytest.importorskip("matplotlib")
    _, model_path = labelled_model
    recording = write_recording(tmp_path / "rec", streams=("w1", "wrist/2"))
    config = tmp_path / "edgelstm.toml"
    config.write_text('model = "/nowhere/on/this/machine.elstm"\n[policy]\nmax_gap_s = 1.0\n')
    out = tmp_path / "out"
    rc = cli.main(["replay", str(recording), "-c", str(config), "--model", str(model_path), "-o", str(out), "--plot"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["recording"] == str(recording) and s["model"] == str(model_path)
    assert s["readings"] == 600 and s["predictions"] == 600 and s["resets"] == {"time_gap": 1}
    assert s["policy"]["max_gap_s"] == 1.0 and 0.8 < s["accuracy"] <= 1.0
    assert "600 predictions" in stdout and "resets: time_gap 1" in stdout and "accuracy" in stdout
    header, rows = read_csv(out / "predictions.csv")
    assert len(rows) == 600 and header[-1] == "recorded_label"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 3 and "confusion.png" in pngs and "w1.png" in pngs
    assert any(name.startswith("wrist_2-") for name in pngs)
    assert all((out / name).read_bytes().startswith(PNG) for name in pngs)

    rc = cli.main(["replay", str(recording), "-c", str(config), "--model", str(model_path), "-o", str(out),
                   "--policy", "max_gap_s=0", "--policy", "gap=hold"])
    assert rc == 0 and json.loads((out / "summary.json").read_text())["resets"] == {}
    assert json.loads((out / "summary.json").read_text())["policy"]["gap"] == "hold"


@pytest.mark.parametrize("args, message", [
    (["--policy", "max_gap_s"], "write KEY=VALUE"),
    (["--policy", "nonsense=1"], "unknown setting policy.'nonsense'"),
    (["--policy", "gap=sometimes"], "policy.gap must be one of"),
    (["--policy", "max_gap_s=-1"], "policy.max_gap_s = -1 is out of range"),
])
def test_replay_command_refuses_bad_settings_in_one_line(tmp_path, capsys, args, message):
    recording = write_recording(tmp_path / "rec", n=30)
    assert cli.main(["replay", str(recording), "--model", MODEL, "-o", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert "edgelstm replay: error: " in err and message in err and "Traceback" not in err


def test_replay_command_needs_a_model(tmp_path, capsys):
    recording = write_recording(tmp_path / "rec", n=30)
    assert cli.main(["replay", str(recording), "-o", str(tmp_path / "out")]) == 1
    assert "no model: pass --model FILE" in capsys.readouterr().err


def test_replay_reads_what_record_wrote(tmp_path, model):
    recording = edgelstm.recording.read(write_recording(tmp_path / "rec", n=50))
    result = replay(recording, model, DaemonConfig())
    assert len(result.predictions) == 100
