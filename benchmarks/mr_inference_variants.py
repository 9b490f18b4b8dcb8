"""Inference variants of an MR network (adapted or main) on the harness's MNI152 slab at 5 %: fixed schedules
and one step with the Noisier2Noise correction x = (e^{2dt} s - y) / (e^{2dt} - 1), s the step's output
(for additive noise the L2-optimal step returns E[x_ref | y], DESIGN 4.2).

Usage: python benchmarks/mr_inference_variants.py WEIGHTS.pt   (e.g. an entry of the adaptation cache)
"""
import math
import sys

import torch
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_scans as rs
rs.load_plugin(str(HERE / "real_scans_learned.py"))
import real_scans_learned as rl
from monai_flow.physics import noncentral_chi_noise
from monai_flow.checkpoints import load_network_weights
from monai_flow.inferers import RelativeFlowInferer, SlidingWindowFlowInferer
torch.set_num_threads(2)
if len(sys.argv) != 2:
    sys.exit(__doc__)
case = rs.mni_slab(); ref = case.image; mask = rs.foreground_mask(ref)
gen = torch.Generator().manual_seed(0)
noisy = noncentral_chi_noise(torch.from_numpy(ref)[None], 0.05, 1, gen)[0].double().numpy()
bundle = rl._bundle("mr_denoise", adapt=False)
net = bundle.get("network")
load_network_weights(net, sys.argv[1]); net.eval()
vol, scale = rl._mr_tensor(noisy)
def run(schedule):
    sw = bundle.get("denoising_inferer")  # the bundle's window, overlap and blending; only the schedule differs
    inf = SlidingWindowFlowInferer(RelativeFlowInferer(dt_schedule=schedule), sw.roi_size, sw.sw_batch_size, sw.overlap,
                                   mode="gaussian", strategy="per_step", progress=False)
    with torch.no_grad():
        return inf(vol, net).detach().cpu().numpy()[0, 0] * scale
def rep(name, out):
    print(f"{name}: PSNR {rs.psnr(out, ref, mask, (0., 1.)):.2f} SSIM {rs.ssim(out, ref, mask, (0., 1.)):.4f}", flush=True)
y = noisy
for dt in [0.3, 0.5, 0.8]:
    s = run([dt]); rep(f"1 step {dt}", s)
    k = math.exp(2 * dt); rep(f"1 step {dt} n2n", (k * s - y) / (k - 1))
for sched in [[0.5, 0.5], [0.5, 0.5, 0.5], [0.5] * 4, [0.3] * 6]:
    rep(f"schedule {sched}", run(sched))
