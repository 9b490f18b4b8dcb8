"""Proxy of the ct_restore bundle's training (issue 14): same network, noise (i0 1e5, 720 views, 2.5 mm), dose range
[0.1, 0.8], CVF + MCT (K 2..4), 8 crops of 64^2 per iteration, on cached pairs of 24 phantom slices; test at 25% dose.

    python benchmarks/ct_restore_proxy.py "as shipped:" "scaled:output_scale=0.02"
"""
import math, sys, time, torch
from monai_flow.data.phantoms import ct_phantom
from monai_flow.flows import CumulativeVelocityFlow
from monai_flow.inferers import RestorationInferer
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import CTDegradation
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
spacing = (2.5, 2.5)
full = CTDegradation(spacing, i0=1e5, electronic_std=5.0, num_views=720, input_noise="none", dt_mapping="dose")
inc = CTDegradation(spacing, i0=1e5, electronic_std=5.0, num_views=720, input_noise="full_dose", dt_mapping="dose")
clean = torch.stack([ct_phantom((128, 128), g)[None] for _ in range(24)])
ref = full(clean, torch.zeros(24), generator=g)            # full-dose scans (the targets)
test_clean = torch.stack([ct_phantom((128, 128), g)[None] for _ in range(6)])
test_in = full(test_clean, torch.full((6,), -math.log(0.25)), generator=g)
test_full = full(test_clean, torch.zeros(6), generator=g)
def pairs(n_rep):
    ys = []
    for _ in range(n_rep):
        dose = 0.1 + 0.7 * torch.rand(24, generator=g)
        ys.append(inc(ref, -torch.log(dose), generator=g))
    return torch.cat(ys), ref.repeat(n_rep, 1, 1, 1)
Y, X = pairs(4)
to_net = lambda hu: (hu + 1000.0) / 1000.0
Y, X = to_net(Y), to_net(X)
def psnr(a, b):
    a, b = a.clamp(-1000, 1000), b.clamp(-1000, 1000)
    return (10 * torch.log10(2000.0**2 / (a - b).square().flatten(1).mean(1))).mean().item()
print(f"25% input {psnr(test_in, test_clean):.2f} dB, full dose {psnr(test_full, test_clean):.2f} dB", flush=True)
def run(name, iters=300, channels=(16, 32, 32), lr=1e-3, **kw):
    torch.manual_seed(0)
    net = VelocityUNet(2, 1, channels=channels, attention_levels=(False,) * 3, num_res_blocks=1, norm_num_groups=8, mid_attention=False)
    obj = CumulativeVelocityFlow(target="cvf", mct_weight=kw.pop("mct_weight", 0.3), mct_steps=(2, 4), seed=0, **kw)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    gg = torch.Generator().manual_seed(1)
    t0 = time.time()
    for it in range(iters):
        idx = torch.randint(len(X), (8,), generator=gg)
        i, j = torch.randint(0, 65, (2,), generator=gg).tolist()
        loss = obj(net, {"image": X[idx, :, i:i + 64, j:j + 64], "degraded": Y[idx, :, i:i + 64, j:j + 64]})
        opt.zero_grad(); loss.backward(); opt.step(); sch.step()
    with torch.no_grad():
        out = RestorationInferer(2, output_scale=obj.output_scale)(to_net(test_in), net) * 1000.0 - 1000.0
    print(f"{name}: {psnr(out, test_clean):.2f} dB ({psnr(out, test_clean) - psnr(test_in, test_clean):+.2f}), {time.time() - t0:.0f} s", flush=True)
for spec in sys.argv[1:]:
    name, _, args = spec.partition(":")
    run(name, **eval(f"dict({args})"))
