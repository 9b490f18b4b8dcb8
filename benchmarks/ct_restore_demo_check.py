"""ct_restore's own demo (issue 14): the bundle's data pipeline (ConfigParser on train.json / evaluate.json), its network,
objective (CVF + MCT, K 2..4, now output_scale 0.02) and dose simulation; a plain loop instead of the ignite
engine: N iterations, each the 8 crops of 64^2 of one training volume with a fresh dose ~ U[0.1, 0.8] (the
bundle's batch_size 1 x patches_per_volume 8); test: the testing volumes' noise-free references at dose 0.25
as evaluate.json simulates them, restored in 2 Euler steps, PSNR over [-1000, 1000] HU of all slices.

    python benchmarks/ct_restore_demo_check.py 300 0.02      # iterations, output_scale (1.0: as shipped before)
"""
import math, sys, time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
torch.set_num_threads(1)
iters, scale = int(sys.argv[1]), float(sys.argv[2])
ROOT = sys.argv[3] if len(sys.argv) > 3 else "/tmp/ct_restore_check"  # demo data are generated there on first use
cfg = [str(Path(__file__).resolve().parents[1]) + "/bundles/ct_restore/configs/train.json", str(Path(__file__).resolve().parents[1]) + "/bundles/ct_restore/configs/evaluate.json"]
def parser(files):
    p = ConfigParser(); p.read_config(files)
    p["bundle_root"] = ROOT; p["demo_dir"] = ROOT + "/demo"; p["dataset_dir"] = ROOT + "/demo"
    p["output_scale"] = scale
    return p
p_train, p = parser(cfg[:1]), parser(cfg)
ds = p_train.get_parsed_content("train#dataset")          # load, low-dose simulation, crops (random per access)
net = p_train.get_parsed_content("network_def")
obj = p_train.get_parsed_content("objective")
test = p.get_parsed_content("dataset")              # evaluate.json: image + reference, resampled, network units
deg = p.get_parsed_content("eval_degradation")
inferer = p.get_parsed_content("inferer")
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
t0 = time.time()
batch = []
it = 0
while it < iters:
    for i in range(len(ds)):
        crops = ds[i]                                  # patches_per_volume crops of one volume, fresh dose
        x = torch.stack([c["image"] for c in crops]); y = torch.stack([c["degraded"] for c in crops])
        loss = obj(net, {"image": x, "degraded": y})
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); it += 1
        if it >= iters: break
train_s = time.time() - t0
gen = torch.Generator().manual_seed(0)
res = []
with torch.no_grad():
    for item in test:
        ref = item["reference"][None]                  # (1, 1, H, W, D) noise-free, network units
        slices = ref.permute(0, 4, 1, 2, 3).reshape(-1, 1, *ref.shape[2:4])
        noisy = deg(slices, torch.full((slices.shape[0],), -math.log(0.25)), generator=gen)
        out = inferer(noisy, net)
        def psnr(a):
            a, b = (a * 1000 - 1000).clamp(-1000, 1000), (slices * 1000 - 1000).clamp(-1000, 1000)
            return 10 * math.log10(2000.0**2 / float((a - b).square().mean()))
        res.append((psnr(noisy), psnr(out)))
print(f"iters {iters} output_scale {scale}: input {sum(r[0] for r in res)/len(res):.2f} dB, output {sum(r[1] for r in res)/len(res):.2f} dB, train {train_s:.0f} s", flush=True)
