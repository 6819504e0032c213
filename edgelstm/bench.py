"""`edgelstm bench`: time the CPU and (when a GPU is usable) the CUDA backend on this device,
write stream-steps per second, and record the crossover backend='auto' chooses by."""

from __future__ import annotations

from . import backends
from .engine import Model
from .progress import Progress


def run_bench(model: Model, counts: list[int], out, line: Progress) -> int:
    """Write the table and the crossover to `out`; what is being timed goes on `line` (closed here)."""
    reason = backends.cuda_unavailable_reason()
    if reason:
        out.write(f"CUDA: {reason}; timing the CPU only\n")
        out.flush()
    with line:
        model.warmup(banks=True, status=line.update)
        rows = backends.measure(model, counts, ("cpu",) if reason else ("cpu", "cuda"),
                                progress=lambda text: line.update(f"timing {text}"))
    hidden = max(layer.hidden_size for layer in model.spec.layers)
    out.write(f"{'streams':>8} {'CPU steps/s':>13}" + (f" {'GPU steps/s':>13} {'GPU/CPU':>8}" if not reason else "")
              + "\n")
    for r in rows:
        row = f"{r['streams']:>8} {r['cpu']:>13,.0f}"
        if not reason:
            row += f" {r['cuda']:>13,.0f} {r['cuda'] / r['cpu']:>7.2f}x"
        out.write(row + "\n")
    if reason:
        return 0
    value = backends.find_crossover(rows, hidden)
    if value is None:
        out.write("the GPU never stayed ahead of the CPU here; backend='auto' will keep choosing the CPU\n")
        value = 2**62
    path = backends.record_crossover(value, {"model_hash": model.content_hash, "hidden": hidden, "rows": rows})
    out.write(f"crossover: {value:,} streams x hidden ({value // hidden:,} streams of hidden {hidden}); "
              f"recorded in {path} for backend='auto'\n")
    return 0
