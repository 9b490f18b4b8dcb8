"""Merge flow_map_curve.py result tables (markdown) into one plot (its ``plot``), e.g. a flow-map run and a BM3D run:

    python benchmarks/flow_map_curve_plot.py docs/img/flow_map_curve.png docs/results/issue14/flow_map_curve.md \\
        docs/results/issue14/flow_map_bm3d.md
"""
import re, sys, runpy
from pathlib import Path

mod = runpy.run_path(str(Path(__file__).with_name("flow_map_curve.py")))
curves = {}
for path in sys.argv[2:]:
    key = None
    for line in open(path):
        m = re.match(r"\*\*(\w+)\*\*, (\w+) noise, sigma ([0-9.]+)", line)
        if m:
            key = (m.group(1), float(m.group(3)))
            curves.setdefault(key, {})
            continue
        m = re.match(r"\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", line)
        if m and key and m.group(1) not in ("output", "noisy input"):
            curves[key][m.group(1)] = {"psnr": float(m.group(2)), "hf": float(m.group(3)), "w1": float(m.group(4))}
order = lambda item: (not item[0].startswith("flow map"), item[0])
curves = {k: dict(sorted(v.items(), key=order)) for k, v in sorted(curves.items())}
mod["plot"](curves, sys.argv[1])
print({k: list(v) for k, v in curves.items()})
