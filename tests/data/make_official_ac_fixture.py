"""Write tests/data/official_ac_predictor_tiny.pt: two tiny official V-JEPA 2-AC predictors (random
weights), their inputs and the official class's outputs, so CI checks parity without the official code.

    python tests/data/make_official_ac_fixture.py /path/to/vjepa2   # a checkout (made from c2963a47)

Needs torch, timm and einops (the official modules' imports). Not a test; run by hand.
"""
import sys
import warnings
from pathlib import Path

sys.path.insert(0, sys.argv[1])
warnings.filterwarnings("ignore")
import torch  # noqa: E402
from src.models.ac_predictor import vit_ac_predictor  # noqa: E402

torch.manual_seed(0)
cases = {}
for name, (img, extr, heads, dim, T, B) in {"square_extrinsics": ((32, 32), True, 2, 48, 3, 2),
                                             "nonsquare": ((32, 48), False, 3, 48, 2, 1)}.items():
    A = 7
    off = vit_ac_predictor(img_size=img, patch_size=16, num_frames=2 * T, tubelet_size=2, embed_dim=24,
                           predictor_embed_dim=dim, depth=1, num_heads=heads, action_embed_dim=A,
                           use_extrinsics=extr, use_rope=True).eval()
    with torch.no_grad():
        for p in off.parameters():
            p.normal_(0, 0.1)
    n = (img[0] // 16) * (img[1] // 16)
    x, a, s, e = torch.randn(B, T * n, 24), torch.randn(B, T, A), torch.randn(B, T, A), torch.randn(B, T, A - 1)
    with torch.no_grad():
        y = off(x, a, s, e if extr else None)
    cases[name] = {"predictor": {f"module.{k}": v.clone() for k, v in off.state_dict().items()},
                   "config": torch.tensor([img[0], img[1], int(extr), heads, dim, 24, 1, A]),
                   "tokens": x, "actions": a, "states": s, "extrinsics": e, "output": y}
torch.save(cases, Path(__file__).with_name("official_ac_predictor_tiny.pt"))
print({k: v["output"].shape for k, v in cases.items()})
