"""Names in the model: --labels and --outputs at convert, stored in the .elstm header outside the
content hash, checked on reading, shown by inspect, and exposed on the Model."""

import json
import struct

import numpy as np
import pytest
from conftest import DATA, ROOT, golden
from specs import graph_specs

import edgelstm
from edgelstm.cli import main
from edgelstm.errors import ModelFormatError
from edgelstm.model import deploy
from edgelstm.model.layers import Activation, Head, Linear
from edgelstm.model.names import OutputNames
from edgelstm.model.spec import ModelSpec

BUNDLED = ROOT / "edgelstm" / "data" / "activity.elstm"
SPECS = graph_specs(np.random.default_rng(7))
LABELS = OutputNames(labels=("still", "walking", "running"))
UNITS = OutputNames(outputs=("temperature", "humidity", "pression"), units=("°C", "%", ""))


@pytest.fixture
def npz(tmp_path):
    """A state_dict of LSTM(2 layers) + Linear with 3 outputs, as an .npz."""
    weights, _, _ = golden("lstm_2layer_head")
    np.savez(tmp_path / "m.npz", **weights)
    return tmp_path / "m.npz"


def header(path) -> dict:
    return deploy.read_header(path.read_bytes())[0]


def rewrite_header(path, **fields) -> None:
    """Put `fields` into the .elstm header at `path` (None deletes one), keeping its data section."""
    data = path.read_bytes()
    head, start = deploy.read_header(data)
    head.update(fields)
    head = {k: v for k, v in head.items() if v is not None}
    raw = json.dumps(head).encode()
    prefix = deploy.MAGIC + struct.pack("<II", deploy.FORMAT_VERSION, len(raw)) + raw
    path.write_bytes(prefix + b"\x00" * deploy._pad(len(prefix)) + data[start:])


# ---- the deploy file ----

@pytest.mark.parametrize("names", [LABELS, UNITS], ids=["labels", "outputs"])
def test_names_round_trip_through_the_deploy_file_outside_the_hash(tmp_path, names):
    spec = SPECS["mlp_head"]
    named = spec.with_names(names)
    assert deploy.save(named, tmp_path / "m.elstm") == spec.content_hash() == named.content_hash()
    model = edgelstm.load(tmp_path / "m.elstm")
    assert model.spec.names == names and model.content_hash == spec.content_hash()
    assert (model.labels, model.output_names, model.output_units) == (names.labels, names.outputs, names.units)
    h = header(tmp_path / "m.elstm")
    if names.labels:
        assert h["labels"] == ["still", "walking", "running"] and "outputs" not in h
    else:
        assert h["outputs"] == [{"name": "temperature", "unit": "°C"}, {"name": "humidity", "unit": "%"},
                                {"name": "pression"}] and "labels" not in h


def test_a_file_without_names_loads_as_before_and_writes_as_before(tmp_path):
    for path in (BUNDLED, DATA / "model_v1" / "activity_v1.elstm"):
        model = edgelstm.load(path)
        assert not model.spec.names and model.labels == model.output_names == model.output_units == ()
    model = edgelstm.load(BUNDLED)
    assert model.content_hash == header(BUNDLED)["content_sha256"]
    assert model.content_hash == "e86ddcff0d83a78be39a5cbf5d950acab084ef61a8d4eff3e4e8e0a6d214242b"
    deploy.save(model.spec, tmp_path / "again.elstm")
    again = header(tmp_path / "again.elstm")
    assert again.keys() == header(BUNDLED).keys() and again["content_sha256"] == model.content_hash
    with pytest.raises(ModelFormatError, match="has no labels; convert it with --labels"):
        model.label_of(np.zeros(3))


@pytest.mark.parametrize("fields", [
    {"labels": "still,walking,running"},                       # not a list
    {"labels": {"0": "still"}},
    {"labels": [1, 2, 3]},                                     # not text
    {"labels": ["still", None, "running"]},
    {"labels": ["still"] * 10**6},                             # huge: refused before it is walked
    {"labels": ["a", "b"]},                                    # too few
    {"labels": ["a", "a", "b"]},
    {"labels": ["x" * 65, "b", "c"]},
    {"outputs": [{"name": "a"}, {"name": "b"}, "c"]},
    {"outputs": [{"name": "a"}, {"name": "b"}, {"unit": "c"}]},
    {"outputs": [{"name": "a"}, {"name": "b"}, {"name": "c", "unit": 3}]},
    {"outputs": [{"name": "a"}, {"name": "b"}, {"name": "c", "scale": 3}]},
    {"outputs": [{"name": "a"}, {"name": "b"}, {"name": "y"}]},
    {"outputs": {"name": "a"}},
    {"labels": ["a", "b", "c"], "outputs": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
])
def test_a_damaged_or_hostile_names_field_is_a_model_format_error(tmp_path, fields):
    deploy.save(SPECS["mlp_head"], tmp_path / "m.elstm")
    rewrite_header(tmp_path / "m.elstm", **fields)
    with pytest.raises(ModelFormatError, match="unusable output names in the header"):
        deploy.load(tmp_path / "m.elstm")


def test_a_header_that_is_not_an_object_is_a_model_format_error(tmp_path):
    raw = b"[1, 2]"
    (tmp_path / "m.elstm").write_bytes(deploy.MAGIC + struct.pack("<II", 2, len(raw)) + raw)
    with pytest.raises(ModelFormatError, match="not an object"):
        deploy.load(tmp_path / "m.elstm")


# ---- the rules ----

@pytest.mark.parametrize("names,match", [
    (dict(labels=("a", "b")), "2 labels for a model with 3 outputs"),
    (dict(outputs=("a", "b", "c", "d"), units=("",) * 4), "4 output names for a model with 3 outputs"),
    (dict(labels=("a", "", "c")), "empty"),
    (dict(labels=("a", "b", "a")), "'a' appears twice"),
    (dict(labels=("a", "b", "x" * 65)), "65 characters; keep names to 64"),
    (dict(labels=("a", "b", "new\nline")), "control character"),
    (dict(labels=("a", "b", "c,d")), "comma"),
    (dict(outputs=("a", "b", "c"), units=("", "", "x" * 17)), "at most 16"),
    (dict(outputs=("a", "b", "p"), units=("",) * 3), "'p' is a key every prediction already has"),
    (dict(outputs=("a", "b", "c"), units=("", "")), "one unit per output"),
    (dict(labels=("a", "b", "c"), outputs=("a", "b", "c"), units=("",) * 3), "not both"),
])
def test_names_that_do_not_fit_are_refused(names, match):
    with pytest.raises(ModelFormatError, match=match):
        SPECS["mlp_head"].with_names(OutputNames(**names))


def test_several_heads_take_output_names_over_the_whole_of_y():
    two_heads = SPECS["two_heads"]                   # label: 3 columns (softmax), level: 1
    with pytest.raises(ModelFormatError, match=r"2 heads \(label, level\).*--outputs"):
        two_heads.with_names(OutputNames(labels=("a", "b", "c", "d")))
    named = two_heads.with_names(OutputNames(outputs=("still", "walking", "running", "level"), units=("",) * 4))
    assert named.describe().endswith("outputs still, walking, running, level")


def test_what_y_holds_comes_from_the_layer_that_writes_it():
    assert SPECS["mlp_head"].scores == "probabilities"                  # ends in softmax
    assert SPECS["norms_and_activations"].scores == "log_probabilities"
    assert SPECS["peephole"].scores == "logits"                         # ends in a Linear
    layer = SPECS["peephole"].layers
    sigmoid = ModelSpec(layer, post=(Linear(np.ones((2, 7)), np.zeros(2)), Activation("sigmoid", 2)))
    assert sigmoid.scores == "probabilities"
    one_head = ModelSpec(layer, post=(Activation("softmax", 7),), heads=(Head("all", ()),))   # the trunk as is
    assert one_head.scores == "probabilities"


def test_label_of():
    model = edgelstm.Model(SPECS["mlp_head"].with_names(LABELS))
    assert model.label_of([0.1, 0.1, 0.8]) == "running" and model.label_of(np.array([0.5, 0.5, 0.0])) == "still"


# ---- the command line, in this process ----

def test_convert_with_labels_then_inspect_shows_them(npz, tmp_path, capsys):
    out = tmp_path / "m.elstm"
    assert main(["convert", str(npz), "-o", str(out), "--labels", "still, walking,running"]) == 0
    assert "labels still, walking, running  (y holds logits: p = softmax(y)[top])" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    assert "labels still, walking, running" in capsys.readouterr().out
    assert main(["convert", str(npz), "-o", str(tmp_path / "plain.elstm")]) == 0
    assert edgelstm.load(out).content_hash == edgelstm.load(tmp_path / "plain.elstm").content_hash


def test_convert_with_outputs_and_units(npz, tmp_path, capsys):
    out = tmp_path / "m.elstm"
    assert main(["convert", str(npz), "-o", str(out), "--outputs", "temperature:°C,humidity:%,wind:m/s"]) == 0
    model = edgelstm.load(out)
    assert model.output_names == ("temperature", "humidity", "wind") and model.output_units == ("°C", "%", "m/s")
    assert main(["inspect", str(out)]) == 0
    assert "outputs temperature [°C], humidity [%], wind [m/s]" in capsys.readouterr().out


@pytest.mark.parametrize("flags,match", [
    (["--labels", "a,b"], "--labels: 2 labels for a model with 3 outputs; give one per output column"),
    (["--labels", "a,,b"], "--labels: a label is empty"),
    (["--labels", "a,b,a"], "--labels: label 'a' appears twice"),
    (["--outputs", "a,b,seq"], "--outputs: output name 'seq' is a key every prediction"),
    (["--outputs", "a,b:verylongunitname17,c"], "--outputs: the unit of 'b'"),
])
def test_convert_refuses_names_that_do_not_fit_saying_why(npz, tmp_path, capsys, flags, match):
    assert main(["convert", str(npz), "-o", str(tmp_path / "m.elstm"), *flags]) == 1
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "m.elstm").exists()


def test_convert_refuses_labels_and_outputs_together(npz, capsys):
    with pytest.raises(SystemExit) as info:
        main(["convert", str(npz), "--labels", "a,b,c", "--outputs", "a,b,c"])
    assert info.value.code == 2 and "not allowed with argument --labels" in capsys.readouterr().err
