#!/usr/bin/python3
"""The PyTorch peer's parameter count and step-0 loss, on the same bytes as our --peer-config.

Builds shared/peers/moe_lm.py's model exactly as moe_lm.py does (torch.manual_seed(seed), then
LM(ffn)) and scores it, untrained, on the first 16 non-overlapping 128-byte windows of the peer's
eval bytes (gen_text.generate(40000, seed=999)): the windows our demo's --peer-config scores too
(EvalWindows at 0, 128, 256, ...). Prints one JSON line.

    /usr/bin/python3 bench/peer_step0.py --peers ../shared/peers --ffn moe
"""
import argparse, json, sys

p = argparse.ArgumentParser()
p.add_argument("--peers", default="../shared/peers", help="folder holding moe_lm.py and gen_text.py")
p.add_argument("--ffn", choices=["moe", "dense_active", "dense_total"], default="moe")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
sys.path.insert(0, a.peers)
import torch, torch.nn.functional as F
from moe_lm import LM, param_counts
from gen_text import generate

torch.manual_seed(a.seed)
model = LM(a.ffn, seq=128)
total, active = param_counts(model, a.ffn)
data = torch.tensor(list(generate(40_000, seed=999)), dtype=torch.long)
B, T = 16, 128
x = torch.stack([data[i * T:(i + 1) * T] for i in range(B)])
y = torch.stack([data[i * T + 1:(i + 1) * T + 1] for i in range(B)])
model.eval()
with torch.no_grad():
    loss = F.cross_entropy(model(x)[0].reshape(-1, 256), y.reshape(-1)).item()
print(json.dumps({"bench": "peer_step0", "ffn": a.ffn, "params_total": total, "params_active_per_token": active,
                  "step0_loss": round(loss, 4)}))
