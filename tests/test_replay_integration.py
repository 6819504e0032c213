"""edgelstm replay against the real thing: the simulator's readings published once to a real
Mosquitto, where a running `edgelstm run` answers them and `edgelstm record` records them; then
`edgelstm replay` of that recording, with the daemon's config, must give every prediction the
daemon published, bit for bit (compared as the JSON floats). The slow test trains and converts the
model from a recording first: record -> read -> train -> convert -> run -> replay."""

import csv
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
import test_record_integration as recording_tests  # its RecordProcess (a module import: no tests collected twice)
from daemon_helpers import (
    ROOT,
    Collector,
    DaemonProcess,
    Publisher,
    by_label,
    family_total,
    scrape,
    stop_client,
)

from edgelstm.simulate import ACTIVITIES, accelerometer

pytestmark = pytest.mark.integration
T0 = 1.8e9
# the deployed settings both see: a pause over 0.5 s in a sender's t resets its stream; a reading that
# skips ahead waits at most 0.5 s for the missing one (the daemon's clock; the replay's is the recorded t)
POLICY = "[policy]\nmax_gap_s = 0.5\nreorder_timeout_s = 0.5\n"
PNG = b"\x89PNG\r\n\x1a\n"


def publish_wrists(publisher: Publisher, n: int, seed: int) -> int:
    """Three simulated wrists (edgelstm/simulate.py) as labelled JSON readings with the sender's t,
    interleaved; s01's t pauses 2 s at seq n/2 and s02 never sends seq 3n/4. Returns the count sent."""
    wrists = [accelerometer(n, seed=seed + k) for k in range(3)]
    sent = 0
    for seq in range(n):
        for k, (x, labels) in enumerate(wrists):
            if k == 2 and seq == 3 * n // 4:
                continue
            t = T0 + seq / 50 + (2.0 if k == 1 and seq >= n // 2 else 0.0)
            data = json.dumps({"seq": seq, "t": t, "x": x[seq].tolist(), "label": ACTIVITIES[labels[seq]]})
            publisher.send(f"sensors/s{k:02d}/reading", data.encode())
            sent += 1
    return sent


def replayed_predictions(path) -> dict:
    """(stream, seq) -> the row of predictions.csv."""
    with open(path, newline="") as fh:
        return {(row["stream"], int(row["seq"])): row for row in csv.DictReader(fh)}


def edgelstm_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgelstm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def record_while_the_daemon_answers_then_replay(tmp_path, broker, n=400, seed=0, model_args=()):
    """The round trip; returns the replay's summary and its output directory."""
    (tmp_path / "daemon").mkdir(parents=True)
    daemon = DaemonProcess(tmp_path / "daemon", broker.url, extra=POLICY, args=tuple(map(str, model_args))).start()
    capture = Collector(broker.port, keep=dict)           # whole payloads: labels and p too
    recording = tmp_path / "recording"
    recorder = recording_tests.RecordProcess(recording, tmp_path / "record.log", "--mqtt", broker.url,
                                             "--client-id", f"rec-{uuid.uuid4().hex[:8]}")
    recorder.wait_for("mqtt: subscribed")
    publisher = Publisher(broker.port)
    sent = publish_wrists(publisher, n, seed)
    assert publisher.wait_all(60)
    assert capture.wait_for(sent, 60), f"{len(capture.got)} of {sent} predictions published"
    recorder.wait_written(sent)
    metrics = scrape(daemon)
    assert recorder.terminate() == 0 and daemon.terminate() == 0
    publisher.stop()
    stop_client(capture.client)

    out = tmp_path / "replay"
    run = edgelstm_cli("replay", recording, "-c", daemon.config, *model_args, "-o", out, "--plot")
    assert run.returncode == 0, run.stderr[-3000:]
    replayed = replayed_predictions(out / "predictions.csv")
    assert set(replayed) == set(capture.got) and len(replayed) == sent
    outputs = len(next(iter(capture.got.values()))["y"])
    for key, published in capture.got.items():
        row = replayed[key]
        assert [float(row[f"y{k}"]) for k in range(outputs)] == published["y"], key         # the same floats
        assert float(row["t"]) == published["t_in"] and row["replay"] == "0", key
        if "label" in published:
            assert (row["label"], float(row["p"])) == (published["label"], published["p"]), key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resets"] == by_label(metrics, "edgelstm_resets_total") == {"time_gap": 1}
    assert summary["gap_readings"] == family_total(metrics, "edgelstm_gap_readings_total") == 1
    assert summary["readings"] == summary["predictions"] == sent
    for stream in ("s00", "s01", "s02"):
        assert (out / f"{stream}.png").read_bytes().startswith(PNG)
    return summary, out


def test_replay_of_a_recording_gives_every_prediction_the_daemon_published(tmp_path, broker):
    summary, out = record_while_the_daemon_answers_then_replay(tmp_path, broker)
    assert "accuracy" not in summary and not (out / "confusion.png").exists()      # the bundled model has no labels


@pytest.mark.slow
@pytest.mark.torch
def test_record_train_convert_run_and_replay_agree_exactly(tmp_path, broker):
    """A model trained (briefly) on a recording, converted with labels, deployed and replayed."""
    training = tmp_path / "training-recording"
    recorder = recording_tests.RecordProcess(training, tmp_path / "record.log", "--mqtt", broker.url,
                                             "--client-id", f"rec-{uuid.uuid4().hex[:8]}")
    recorder.wait_for("mqtt: subscribed")
    publisher = Publisher(broker.port)
    sent = publish_wrists(publisher, 250, seed=900)
    assert publisher.wait_all(60)
    recorder.wait_written(sent)
    assert recorder.terminate() == 0
    publisher.stop()

    train = subprocess.run([sys.executable, str(ROOT / "training" / "train_activity.py"), "--recording",
                            str(training), "--iterations", "5", "--out", str(tmp_path / "trained")],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path,
                           # one thread: torch's pool, contending with other work for 2 cores, took 4x longer
                           env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert train.returncode == 0, train.stderr[-3000:]
    model = tmp_path / "wrist.elstm"
    convert = edgelstm_cli("convert", tmp_path / "trained" / "activity.pt", "--labels", ",".join(ACTIVITIES),
                           "-o", model)
    assert convert.returncode == 0, convert.stderr[-3000:]

    summary, out = record_while_the_daemon_answers_then_replay(tmp_path / "deployed", broker, n=300, seed=950,
                                                               model_args=("--model", model))
    assert summary["labels"] == list(ACTIVITIES) and summary["labelled_predictions"] == summary["predictions"]
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert np.array(summary["confusion"]["counts"]).sum() == summary["predictions"]
    assert (out / "confusion.png").read_bytes().startswith(PNG)
