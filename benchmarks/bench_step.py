"""Per-step cost of edgelstm against the peers a user would pick instead, side by side.

    ./dev.sh bench            (or: .venv/bin/python benchmarks/bench_step.py [--repeats 7])

Shape (issue 2): input 8 -> LSTM 64 -> LSTM 64 -> Linear 1, float32, one thread everywhere.
Variants:
  edgelstm stream.step      one reading per Python call, state carried
  edgelstm step_many        1,000 readings of one stream per call
  edgelstm bank.step        256 and 1,024 streams, one reading each, per call (matrix products:
                            kernels/bank_gemm.py), also as GFLOP/s and a fraction of the BLAS
                            ceiling (NumPy's sgemm on a square 512 product, measured here)
  PyTorch nn.LSTM step      seq_len 1, (h, c) carried, no_grad
  PyTorch nn.LSTM T=1000    the fused sequence path, per step
  PyTorch batched 256/1024  nn.LSTM over (1, k, I) with state (L, k, H), plus the head
  ONNX Runtime step         the same model exported with h/c as inputs, state carried
  NumPy step                a straightforward NumPy implementation (edgelstm's oracle in float32)
  ... MLP head              the same LSTM with Linear 64->32 > ReLU > Linear 32->1 instead of the
                            Linear (edgelstm stream.step and PyTorch step): what the layer graph costs
  other shapes              I8 H16 L1 and I8 H128 L2: stream.step, step_many, bank.step 256 against
                            PyTorch's step, fused T=1000 and batched 256, and ONNX Runtime's step
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
    def __init__(self, mlp=False, i=I, h=H, layers=LAYERS):
        super().__init__()
        self.lstm = torch.nn.LSTM(i, h, num_layers=layers)
        self.fc = torch.nn.Sequential(torch.nn.Linear(h, 32), torch.nn.ReLU(), torch.nn.Linear(32, O)) if mlp \
            else torch.nn.Linear(h, O)

    def forward(self, x, h, c):                       # x (T, B, I), h/c (L, B, H)
        out, (h, c) = self.lstm(x, (h, c))
        return self.fc(out), h, c


def onnx_session(net, path):
    import onnxruntime as ort
    i, h, layers = net.lstm.input_size, net.lstm.hidden_size, net.lstm.num_layers
    args = (torch.zeros(1, 1, i), torch.zeros(layers, 1, h), torch.zeros(layers, 1, h))
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
    for k in (K, 4 * K):
        bank, ids, xk = model.bank(k), list(range(k)), rng.normal(size=(k, I)).astype(np.float32)
        t, runs = median_time(lambda: bank.step(ids, xk), n(200 * K // k), args.repeats)
        record(f"edgelstm bank.step {k}", t, k, runs, f"{k} streams per call")

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
        for k in (K, 4 * K):
            xbt, hb = torch.from_numpy(rng.normal(size=(1, k, I)).astype(np.float32)), torch.zeros(LAYERS, k, H)
            t, runs = median_time(lambda: net(xbt, hb, hb), n(500 * K // k), args.repeats)
            record(f"PyTorch batched {k}", t, k, runs, f"{k} streams x 1 step")

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
    results["BLAS ceiling"] = blas_ceiling(args.repeats)
    shapes = {f"I{i} H{h} L{layers}": other_shape(i, h, layers, n, args.repeats) for i, h, layers in OTHER_SHAPES}
    report(results, shapes, args.repeats, "bench_step_quick" if args.quick else "bench_step")


OTHER_SHAPES = ((8, 16, 1), (8, 128, 2))


def step_flops(i: int, h: int, layers: int) -> float:
    """Multiply-adds x 2 of one LSTM step (the head's are left out: a few hundred)."""
    return 2 * 4 * h * ((i + h) + (layers - 1) * 2 * h)


def blas_ceiling(repeats: int) -> dict:
    """GFLOP/s of NumPy's sgemm on one thread: what the bank's products can reach at most."""
    a = np.random.default_rng(1).random((512, 512), dtype=np.float32)
    out = np.empty_like(a)
    t, runs = median_time(lambda: np.matmul(a, a, out=out), 100, repeats)
    progress(f"sgemm 512: {2 * 512**3 / t / 1e9:.0f} GFLOP/s")
    return {"gflops": 2 * 512**3 / t / 1e9, "what": "np.matmul 512x512x512 float32, one thread"}


def other_shape(i: int, h: int, layers: int, n, repeats: int) -> dict:
    """The main variants for another model size, each peer checked against edgelstm first."""
    torch.manual_seed(0)
    net = Net(i=i, h=h, layers=layers).eval()
    model = edgelstm.Model(spec_from_state_dict({k: v.numpy() for k, v in net.state_dict().items()}))
    model.warmup()
    rng = np.random.default_rng(0)
    xs, xb = rng.normal(size=(T, i)).astype(np.float32), rng.normal(size=(K, i)).astype(np.float32)
    out = {}
    s = model.stream()
    out["edgelstm stream.step"] = median_time(lambda: s.step(xs[0]), n(20000), repeats)[0] * 1e6
    out["edgelstm step_many"] = median_time(lambda: s.step_many(xs), n(100), repeats)[0] / T * 1e6
    bank, ids = model.bank(K), list(range(K))
    out["edgelstm bank.step 256"] = median_time(lambda: bank.step(ids, xb), n(200), repeats)[0] / K * 1e6
    expected = model.stream().step_many(xs)

    z = torch.zeros(layers, 1, h)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(xs)[:, None], z, z)[0][:, 0].numpy(), expected, atol=1e-5)
        state, xt = [z, z], torch.from_numpy(xs[:1])[:, None]

        def torch_step():
            _, state[0], state[1] = net(xt, state[0], state[1])
        out["PyTorch step"] = median_time(torch_step, n(2000), repeats)[0] * 1e6
        xseq = torch.from_numpy(xs)[:, None]
        out["PyTorch T=1000"] = median_time(lambda: net(xseq, z, z), n(100), repeats)[0] / T * 1e6
        xbt, hb = torch.from_numpy(xb)[None], torch.zeros(layers, K, h)
        out["PyTorch batched 256"] = median_time(lambda: net(xbt, hb, hb), n(300), repeats)[0] / K * 1e6
    with tempfile.TemporaryDirectory() as tmp:
        sess = onnx_session(net, str(Path(tmp) / "m.onnx"))
    feed = {"x": xs[:1, None], "h": np.zeros((layers, 1, h), np.float32), "c": np.zeros((layers, 1, h), np.float32)}
    y, _, _ = sess.run(None, feed)
    np.testing.assert_allclose(y[0, 0], expected[0], atol=1e-5)

    def ort_step():
        _, feed["h"], feed["c"] = sess.run(None, feed)
    out["ONNX Runtime step"] = median_time(ort_step, n(5000), repeats)[0] * 1e6
    progress(f"I{i} H{h} L{layers}: " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return {"us_per_step": out, "flops_per_step": step_flops(i, h, layers), "weights_kib": model.memory_bytes / 1024}


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


def report(results: dict, shapes: dict, repeats: int, name: str) -> None:
    ceiling = results.pop("BLAS ceiling")
    ours = {"stream.step": results["edgelstm stream.step"], "step_many": results["edgelstm step_many"],
            "bank.step": results["edgelstm bank.step 256"]}
    step = results["edgelstm stream.step"]["us_per_step"]
    ratios = {
        "stream.step vs PyTorch step (x faster)": results["PyTorch nn.LSTM step"]["us_per_step"] / step,
        "stream.step vs ONNX Runtime step (x faster)": results["ONNX Runtime step"]["us_per_step"] / step,
        "stream.step vs NumPy step (x faster)": results["NumPy step"]["us_per_step"] / step,
        "step_many vs PyTorch T=1000 (x faster)":
            results["PyTorch nn.LSTM T=1000"]["us_per_step"] / ours["step_many"]["us_per_step"],
        "bank.step vs PyTorch batched 256 (x throughput)":
            ours["bank.step"]["stream_steps_per_s"] / results["PyTorch batched 256"]["stream_steps_per_s"],
        "bank.step vs PyTorch batched 1024 (x throughput)":
            results["edgelstm bank.step 1024"]["stream_steps_per_s"]
            / results["PyTorch batched 1024"]["stream_steps_per_s"],
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
    flops = step_flops(I, H, LAYERS)
    print(f"\nFLOP rate ({flops / 1e3:.1f} kFLOP per step; BLAS ceiling: sgemm at {ceiling['gflops']:.0f} GFLOP/s):")
    for variant in ("edgelstm bank.step 256", "edgelstm bank.step 1024", "PyTorch batched 256", "PyTorch batched 1024"):
        rate = flops * results[variant]["stream_steps_per_s"] / 1e9
        results[variant]["gflops"], results[variant]["of_blas_ceiling"] = rate, rate / ceiling["gflops"]
        print(f"  {variant:<26} {rate:6.1f} GFLOP/s  {rate / ceiling['gflops']:5.0%} of the ceiling")
    print(f"\n{'other shapes, us/step':<30}" + "".join(f"{k:>14}" for k in shapes))
    for variant in next(iter(shapes.values()))["us_per_step"]:
        print(f"{variant:<30}" + "".join(f"{v['us_per_step'][variant]:>14.2f}" for v in shapes.values()))
    payload = {"shape": {"input": I, "hidden": H, "layers": LAYERS, "output": O}, "repeats": repeats,
               "machine": machine(), "results": results, "ratios": ratios, "blas_ceiling": ceiling,
               "other_shapes": shapes,
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
