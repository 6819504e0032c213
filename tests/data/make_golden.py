"""Regenerate the committed golden fixtures: PyTorch weights, inputs and outputs (fed one
sample at a time) for each architecture in tests/archs.py, and for each model of the zoo
(tests/zoo.py: whole-sequence forward, with its arch text), so core tests run without torch.

    .venv/bin/python tests/data/make_golden.py [--force]    (without --force: only missing files)
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from archs import ARCHS, build, state_dict_arrays

STEPS = 300

if __name__ == "__main__":
    import torch
    for name in ARCHS if "--force" in sys.argv else ():
        net = build(name)
        xs = np.random.default_rng(1).normal(0, 1, (STEPS, ARCHS[name]["input_size"])).astype(np.float32)
        ys = net.run(xs)
        arrays = {f"w/{k}": v for k, v in state_dict_arrays(net).items()}
        np.savez_compressed(HERE / f"golden_{name}.npz", x=xs, y=ys, torch_version=torch.__version__, **arrays)
        print("wrote", name, ys.shape)
    import zoo
    from test_zoo import STEPS as ZOO_STEPS
    from test_zoo import _input_size
    (HERE / "zoo").mkdir(exist_ok=True)
    for name, (_, arch) in zoo.ZOO.items():
        if (HERE / "zoo" / f"zoo_{name}.npz").exists() and "--force" not in sys.argv:
            continue                       # unchanged models keep their committed bytes
        net = zoo.build(name)
        xs = np.random.default_rng(3).normal(0, 1, (ZOO_STEPS, _input_size(net))).astype(np.float32)
        arrays = {f"w/{k}": v.detach().numpy() for k, v in net.state_dict().items()}
        np.savez_compressed(HERE / "zoo" / f"zoo_{name}.npz", x=xs, y=zoo.run(net, xs), arch=arch,
                            torch_version=torch.__version__, **arrays)
        print("wrote zoo", name)
