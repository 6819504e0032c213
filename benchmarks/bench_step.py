"""Per-step cost of edgelstm against the peers a user would pick instead, side by side.

    ./dev.sh bench            (or: .venv/bin/python benchmarks/bench_step.py [--repeats 7])

Shape (issue 2): input 8 -> LSTM 64 -> LSTM 64 -> Linear 1, float32, one thread everywhere.
Variants:
  edgelstm stream.step      one reading per Python call, state carried
  edgelstm step_many        1,000 readings of one stream per call
  edgelstm bank.step        256 streams, one reading each, per call
  PyTorch nn.LSTM step      seq_len 1, (h, c) carried, no_grad
  PyTorch nn.LSTM T=1000    the fused sequence path, per step
  PyTorch batched 256       256 streams x 1 step per call
  ONNX Runtime step         the same model exported with h/c as inputs, state carried
  NumPy step                a straightforward NumPy implementation (edgelstm's oracle in float32)
  ... MLP head              the same LSTM with Linear 64->32 > ReLU > Linear 32->1 instead of the
                            Linear (edgelstm stream.step and PyTorch step): what the layer graph costs
Every variant is checked against edgelstm's output before it is timed. Prints a table, writes
benchmarks/results/bench_step.json and bench_step.png. Times are medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import RESULTS, machine, median_time, pin_one_thread, progress, write_json

pin_one_thread()

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import edgelstm
from edgelstm.kernels import reference
from edgelstm.model.state_dict import spec_from_state_dict

torch.set_num_threads(1)
I, H, LAYERS, O, T, K = 8, 64, 2, 1, 1000, 256  # noqa: E741  (input, hidden, layers, output, steps, streams)


class Net(torch.nn.Module):
    def __init__(self, mlp=False):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, num_layers=LAYERS)
        self.fc = torch.nn.Sequential(torch.nn.Linear(H, 32), torch.nn.ReLU(), torch.nn.Linear(32, O)) if mlp \
            else torch.nn.Linear(H, O)

    def forward(self, x, h, c):                       # x (T, B, I), h/c (L, B, H)
        out, (h, c) = self.lstm(x, (h, c))
        return self.fc(out), h, c


def onnx_session(net, path):
    import onnxruntime as ort
    args = (torch.zeros(1, 1, I), torch.zeros(LAYERS, 1, H), torch.zeros(LAYERS, 1, H))
    try:
        torch.onnx.export(net, args, path, input_names=["x", "h", "c"], output_names=["y", "h_out", "c_out"],
                          dynamo=False)
    except TypeError:
        torch.onnx.export(net, args, path, input_names=["x", "h", "c"], output_names=["y", "h_out", "c_out"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median reported)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations, a smoke run; writes bench_step_quick.* instead")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    def n(k):
        return max(1, int(k * scale))


    torch.manual_seed(0)
    net = Net().eval()
    spec = spec_from_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    model = edgelstm.Model(spec)
    model.warmup()
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(T, I)).astype(np.float32)
    xb = rng.normal(size=(K, I)).astype(np.float32)
    expected = model.stream().step_many(xs)                                   # (T, O)
    results = {}

    def record(name, per_call, steps_per_call, runs, what):
        results[name] = {"us_per_step": per_call / steps_per_call * 1e6,
                         "stream_steps_per_s": steps_per_call / per_call,
                         "runs_us_per_call": [r * 1e6 for r in runs], "what": what}
        progress(f"{name}: {per_call / steps_per_call * 1e6:.2f} us/step")

    print(f"edgelstm bench: input {I} -> LSTM {H} x {LAYERS} -> Linear {O}, one thread, median of {args.repeats}")

    # --- edgelstm
    s = model.stream()
    x0 = xs[0]
    t, runs = median_time(lambda: s.step(x0), n(20000), args.repeats)
    record("edgelstm stream.step", t, 1, runs, "one reading per Python call")
    s2 = model.stream()
    t, runs = median_time(lambda: s2.step_many(xs), n(200), args.repeats)
    record("edgelstm step_many", t, T, runs, f"{T} readings per call")
    bank = model.bank(K)
    ids = list(range(K))
    t, runs = median_time(lambda: bank.step(ids, xb), n(200), args.repeats)
    record("edgelstm bank.step", t, K, runs, f"{K} streams per call")

    # --- PyTorch (checked against edgelstm first)
    with torch.no_grad():
        y_fused, _, _ = net(torch.from_numpy(xs)[:, None], torch.zeros(LAYERS, 1, H), torch.zeros(LAYERS, 1, H))
        np.testing.assert_allclose(y_fused[:, 0].numpy(), expected, atol=1e-5)
        state = [torch.zeros(LAYERS, 1, H), torch.zeros(LAYERS, 1, H)]
        xt = torch.from_numpy(xs[:1])[:, None]

        def torch_step():
            _, state[0], state[1] = net(xt, state[0], state[1])
        t, runs = median_time(torch_step, n(2000), args.repeats)
        record("PyTorch nn.LSTM step", t, 1, runs, "seq_len 1, (h, c) carried")
        xseq, h0 = torch.from_numpy(xs)[:, None], torch.zeros(LAYERS, 1, H)
        t, runs = median_time(lambda: net(xseq, h0, h0), n(100), args.repeats)
        record("PyTorch nn.LSTM T=1000", t, T, runs, "fused sequence path")
        xbt, hb = torch.from_numpy(xb)[None], torch.zeros(LAYERS, K, H)
        t, runs = median_time(lambda: net(xbt, hb, hb), n(500), args.repeats)
        record("PyTorch batched 256", t, K, runs, f"{K} streams x 1 step")

    # --- ONNX Runtime, state carried through graph inputs
    with tempfile.TemporaryDirectory() as tmp:
        sess = onnx_session(net, str(Path(tmp) / "m.onnx"))
    feed = {"x": xs[:1, None], "h": np.zeros((LAYERS, 1, H), np.float32), "c": np.zeros((LAYERS, 1, H), np.float32)}
    ys = []
    for t_ in range(50):
        feed["x"] = xs[t_:t_ + 1, None]
        y, feed["h"], feed["c"] = sess.run(None, feed)
        ys.append(y[0, 0])
    np.testing.assert_allclose(np.array(ys), expected[:50], atol=1e-5)

    def ort_step():
        _, feed["h"], feed["c"] = sess.run(None, feed)
    t, runs = median_time(ort_step, n(5000), args.repeats)
    record("ONNX Runtime step", t, 1, runs, "h/c as graph inputs, one run per step")

    # --- NumPy (the oracle, in float32)
    np_state = reference.zero_state(spec, np.float32)
    np.testing.assert_allclose(reference.run(spec, xs[:50], np.float32)[0], expected[:50], atol=1e-5)

    def numpy_step():
        nonlocal np_state
        _, np_state = reference.step(spec, np_state, x0, np.float32)
    t, runs = median_time(numpy_step, n(2000), args.repeats)
    record("NumPy step", t, 1, runs, "straightforward NumPy")

    mlp_variants(record, n, args.repeats, xs)
    report(results, args.repeats, "bench_step_quick" if args.quick else "bench_step")


def mlp_variants(record, n, repeats: int, xs) -> None:
    """stream.step and PyTorch's step with an MLP head: the per-step cost of the layer graph."""
    torch.manual_seed(0)
    net = Net(mlp=True).eval()
    spec = spec_from_state_dict({k: v.numpy() for k, v in net.state_dict().items()},
                                arch="lstm > linear(fc.0) > relu > linear(fc.2)")
    s = edgelstm.Model(spec).stream()
    with torch.no_grad():
        y, _, _ = net(torch.from_numpy(xs)[:, None], torch.zeros(LAYERS, 1, H), torch.zeros(LAYERS, 1, H))
    np.testing.assert_allclose(s.step_many(xs), y[:, 0].numpy(), atol=1e-5)
    x0 = xs[0]
    t, runs = median_time(lambda: s.step(x0), n(20000), repeats)
    record("edgelstm step, MLP head", t, 1, runs, "one reading per Python call, Linear > ReLU > Linear head")
    with torch.no_grad():
        state = [torch.zeros(LAYERS, 1, H), torch.zeros(LAYERS, 1, H)]
        xt = torch.from_numpy(xs[:1])[:, None]

        def torch_step():
            _, state[0], state[1] = net(xt, state[0], state[1])
        t, runs = median_time(torch_step, n(2000), repeats)
        record("PyTorch step, MLP head", t, 1, runs, "seq_len 1, (h, c) carried, Linear > ReLU > Linear head")


def report(results: dict, repeats: int, name: str) -> None:
    ours = {"stream.step": results["edgelstm stream.step"], "step_many": results["edgelstm step_many"],
            "bank.step": results["edgelstm bank.step"]}
    step = results["edgelstm stream.step"]["us_per_step"]
    ratios = {
        "stream.step vs PyTorch step (x faster)": results["PyTorch nn.LSTM step"]["us_per_step"] / step,
        "stream.step vs ONNX Runtime step (x faster)": results["ONNX Runtime step"]["us_per_step"] / step,
        "stream.step vs NumPy step (x faster)": results["NumPy step"]["us_per_step"] / step,
        "step_many vs PyTorch T=1000 (x faster)":
            results["PyTorch nn.LSTM T=1000"]["us_per_step"] / ours["step_many"]["us_per_step"],
        "bank.step vs PyTorch batched 256 (x throughput)":
            ours["bank.step"]["stream_steps_per_s"] / results["PyTorch batched 256"]["stream_steps_per_s"],
        "MLP head step vs PyTorch MLP head step (x faster)":
            results["PyTorch step, MLP head"]["us_per_step"] / results["edgelstm step, MLP head"]["us_per_step"],
        "MLP head cost over the Linear head (us per step)":
            results["edgelstm step, MLP head"]["us_per_step"] - step,
    }
    print(f"\n{'variant':<26}{'us/step':>10}{'stream-steps/s':>16}{'edgelstm stream.step is':>26}")
    for variant, r in results.items():
        rel = r["us_per_step"] / step
        print(f"{variant:<26}{r['us_per_step']:>10.2f}{r['stream_steps_per_s']:>16,.0f}{rel:>22.1f}x faster"
              if not variant.startswith("edgelstm") else
              f"{variant:<26}{r['us_per_step']:>10.2f}{r['stream_steps_per_s']:>16,.0f}")
    print("\nratios:")
    for k, v in ratios.items():
        print(f"  {k:<48} {v:6.1f}")
    payload = {"shape": {"input": I, "hidden": H, "layers": LAYERS, "output": O}, "repeats": repeats,
               "machine": machine(), "results": results, "ratios": ratios,
               "versions": {"torch": torch.__version__, "numpy": np.__version__, "edgelstm": edgelstm.__version__}}
    print(f"\nwrote {write_json(name, payload)}")
    plot(results, name)


def plot(results: dict, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(results)
    us = [results[n]["us_per_step"] for n in names]
    colors = ["#1f77b4" if n.startswith("edgelstm") else "#999999" for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.barh(names[::-1], us[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per stream-step (log scale, lower is better)")
    ax.set_title(f"LSTM {I}->{H}x{LAYERS}->{O}, one thread: edgelstm (blue) vs peers")
    for i, v in enumerate(us[::-1]):
        ax.text(v * 1.05, i, f"{v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
