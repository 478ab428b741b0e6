#!/usr/bin/env python3
"""Train Elastic Attention routers (PAPERS.md 1.3, 1.7) for a frozen Hugging Face Llama / Qwen2 /
Qwen3 model on the needle tasks of tools/train/TASKS.md plus plain text, and export them under the
names ela loads (`model.layers.N.self_attn.mask_allocator.*`, a separate safetensors file given to
ela with `--router FILE`).

    python3 tools/train/router.py --model DIR --text build-train/text --out router.safetensors \
        [--mode fa-ssa|fa-xa] [--steps 300] [--ctx 4096,8192] [--target-qa 0.7]

Per layer, one router shared by the layer's KV heads: the mean of the first 100 and last 100
pre-RoPE keys of each KV head -> Task MLP (d -> 4d -> d) -> Router MLP (d -> 4d -> d -> 2);
class 1 = full attention. Training runs both attentions for every head and mixes them per KV
head, o = z * o_full + (1 - z) * o_sparse, with z a straight-through Gumbel-softmax sample
(tau cosine from 1.5 to 1.0 over the first 60% of steps). Only the routers and the Lagrange
multipliers learn; the loss is the answer (or text) cross-entropy plus, per task class,
l1 * |MSR - t| + l2 * (MSR - t)^2 with MSR the share of sparse KV heads, the multipliers
ascending. Task classes: retrieval (the five needle tasks, target --target-qa) and text
(plain text, target 1.0: all heads sparse).

The sparse branch is ela's STREAMING head (--mode fa-ssa: sink and local windows in 128-token
blocks, as `elastic:fa-ssa`), or for --mode fa-xa a block mask from XAttention's antidiagonal
estimate (stride 16, threshold --tau), as `elastic:fa-xa`. The same script takes a real 8B model
directory (bf16 on one GPU; use --ctx up to what memory allows, e.g. 16384).
"""
import argparse
import math
import os
import sys
import time

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tasks import TASKS, Haystack  # noqa: E402

BLOCK = 128
POOL = 100


class Router(nn.Module):
    """PAPERS.md 1.3, module names as the released checkpoints (cls_feat_extractor, ...)."""

    def __init__(self, d, hidden):
        super().__init__()
        self.cls_feat_extractor = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(),
                                                nn.Linear(hidden, d))
        self.cls_router_head_agnostic = nn.Sequential(
            nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, d), nn.SiLU(), nn.Linear(d, 2))

    def forward(self, k_pre):
        """k_pre [B, L, Hkv, d] -> logits [B, Hkv, 2]."""
        L = k_pre.shape[1]
        a = min(POOL, L)
        pooled = torch.cat([k_pre[:, :a], k_pre[:, L - a:]], dim=1).float().mean(dim=1)
        return self.cls_router_head_agnostic(self.cls_feat_extractor(pooled))


def streaming_mask(L, sink, local, device):
    """[L, L] bool, True = visible: ela's STREAMING head in 128-token blocks (causal inside)."""
    qb = torch.arange(L, device=device) // BLOCK
    kb = qb
    M, J = qb[:, None], kb[None, :]
    causal = torch.arange(L, device=device)[:, None] >= torch.arange(L, device=device)[None, :]
    return causal & ((J < sink // BLOCK + (sink % BLOCK > 0)) |
                     (J >= M - (local + BLOCK - 1) // BLOCK + 1))


def xattn_mask(q, k, stride, tau):
    """Block mask [B, Hq, L, L] from XAttention's antidiagonal estimate (PAPERS.md 5.1): per
    query block, keep the fewest key blocks whose estimated softmax mass reaches tau; the
    diagonal and the first block always."""
    B, H, L, d = q.shape
    G = H // k.shape[1]
    kk = k.repeat_interleave(G, dim=1)
    n = L // stride
    qs = torch.stack([q[:, :, stride - 1 - i::stride][:, :, :n] for i in range(stride)], -2).sum(-2)
    ks = torch.stack([kk[:, :, i::stride][:, :, :n] for i in range(stride)], -2).sum(-2)
    s = (qs.float() @ ks.float().transpose(-1, -2)) / math.sqrt(d) / stride
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    p = s.softmax(-1)
    per = BLOCK // stride
    nb = (L + BLOCK - 1) // BLOCK  # covers the partial last block, whose rows lack a stride group
    pad = nb * per - n
    p = F.pad(p, (0, pad, 0, pad))
    blk = p.view(B, H, nb, per, nb, per).sum((3, 5))
    blk = blk / blk.sum(-1, keepdim=True).clamp_min(1e-9)
    val, idx = blk.sort(-1, descending=True)
    keep_sorted = (val.cumsum(-1) - val) < tau
    keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
    eye = torch.eye(nb, dtype=torch.bool, device=q.device)
    keep = (keep | eye) & torch.ones(nb, nb, dtype=torch.bool, device=q.device).tril()
    keep[..., 0] = True
    full = keep.repeat_interleave(BLOCK, -2).repeat_interleave(BLOCK, -1)[..., :L, :L]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    return full & causal


class State:
    """What the patched attention layers share during one forward."""
    tau = 1.0
    hard_eval = False
    mode = "fa-ssa"
    sink, local, xa_tau = 128, 2048, 0.9
    z = []  # per layer [B, Hkv] full-attention gate


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def patch_attention(attn, router, st):
    """Replace one HF attention module's forward by the routed mix of full and sparse."""

    def forward(hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        B, L, _ = hidden_states.shape
        hd = attn.head_dim
        q = attn.q_proj(hidden_states).view(B, L, -1, hd)
        k = attn.k_proj(hidden_states).view(B, L, -1, hd)
        v = attn.v_proj(hidden_states).view(B, L, -1, hd)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        logits = router(k)  # pre-RoPE keys
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        cos, sin = position_embeddings
        q, k = rope(q, cos[:, None], sin[:, None]), rope(k, cos[:, None], sin[:, None])
        full = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        if st.mode == "fa-ssa":
            mask = streaming_mask(L, st.sink, st.local, q.device)
        else:
            mask = xattn_mask(q, k, 16, st.xa_tau)
        sparse = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        if st.hard_eval:
            z = (logits.argmax(-1) == 1).to(q.dtype)
        else:
            g = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)))
            soft = ((logits + g) / st.tau).softmax(-1)
            hard = F.one_hot(soft.argmax(-1), 2).to(soft.dtype)
            z = (hard + soft - soft.detach())[..., 1]
        st.z.append(z)
        G = q.shape[1] // z.shape[1]
        zq = z.repeat_interleave(G, dim=1)[:, :, None, None].to(full.dtype)
        out = zq * full + (1 - zq) * sparse
        out = out.transpose(1, 2).reshape(B, L, -1)
        return attn.o_proj(out), None

    attn.forward = forward


def export(routers, path):
    from safetensors.torch import save_file
    tensors = {}
    for i, r in enumerate(routers):
        for name, p in r.state_dict().items():
            tensors[f"model.layers.{i}.self_attn.mask_allocator.{name}"] = \
                p.detach().float().cpu().contiguous()
    save_file(tensors, path)


def sample(hay, rng, ctx, text_share):
    """-> (ids, targets with -100 where no loss, class 0 = retrieval / 1 = text)."""
    if rng.uniform() < text_share:
        seq = hay.text(rng, ctx + 1)
        return seq[:-1], seq[1:].astype(np.int64), 1
    task = TASKS[int(rng.integers(len(TASKS)))]
    prompt, answer, _, _ = hay.prompt(rng, task, ctx, float(rng.uniform()))
    seq = np.concatenate([prompt, answer])
    tgt = np.full(len(seq) - 1, -100, np.int64)
    tgt[len(prompt) - 1:] = seq[len(prompt):]
    return seq[:-1], tgt, 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--text", required=True, help="folder with train.txt and heldout.txt")
    ap.add_argument("--out", required=True, help="router safetensors to write")
    ap.add_argument("--mode", choices=("fa-ssa", "fa-xa"), default="fa-ssa")
    ap.add_argument("--sink", type=int, default=128)
    ap.add_argument("--local", type=int, default=2048)
    ap.add_argument("--tau", type=float, default=0.9, help="XAttention threshold (fa-xa)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", default="4096,8192", help="training lengths, one per step at random")
    ap.add_argument("--target-qa", type=float, default=0.7, help="MSR target of retrieval tasks")
    ap.add_argument("--target-text", type=float, default=1.0, help="MSR target of plain text")
    ap.add_argument("--text-share", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lambda-lr", type=float, default=5e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=10)
    args = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = "cuda"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to(device)
    model.eval().requires_grad_(False)
    cfg = model.config
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    bos = getattr(cfg, "bos_token_id", None)
    read = lambda name: [l.rstrip("\n") for l in open(os.path.join(args.text, name),  # noqa: E731
                                                      encoding="utf-8") if l.strip()]
    hay = Haystack(tok, read("train.txt"), bos=bos)
    held = Haystack(tok, read("heldout.txt"), bos=bos)

    st = State()
    st.mode, st.sink, st.local, st.xa_tau = args.mode, args.sink, args.local, args.tau
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    routers = nn.ModuleList([Router(hd, 4 * hd) for _ in model.model.layers]).to(device)
    for layer, r in zip(model.model.layers, routers):
        patch_attention(layer.self_attn, r, st)
    lam = torch.nn.Parameter(torch.rand(2, 2, device=device) * 0.5)  # [class, (l1, l2)]
    opt = torch.optim.AdamW(routers.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    lam_opt = torch.optim.SGD([lam], lr=args.lambda_lr, maximize=True)
    targets = torch.tensor([args.target_qa, args.target_text], device=device)
    ctxs = [int(c) for c in args.ctx.split(",")]
    warm = max(1, args.steps // 5)
    t0 = time.time()
    for step in range(args.steps):
        p = step / args.steps
        st.tau = 1.0 + 0.25 * (1 + math.cos(math.pi * min(1.0, p / 0.6)))  # 1.5 -> 1.0
        lr = args.lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * p))
        for g in opt.param_groups:
            g["lr"] = lr
        ctx = int(rng.choice(ctxs))
        batch = [sample(hay, rng, ctx, args.text_share) for _ in range(args.batch)]
        n = max(len(b[0]) for b in batch)
        ids = torch.zeros(len(batch), n, dtype=torch.long)
        tgt = torch.full((len(batch), n), -100, dtype=torch.long)
        for i, (x, y, _) in enumerate(batch):
            ids[i, :len(x)] = torch.as_tensor(x.astype(np.int64))
            tgt[i, :len(y)] = torch.as_tensor(y)
        cls = torch.tensor([b[2] for b in batch], device=device)
        ids, tgt = ids.to(device), tgt.to(device)
        st.z = []
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        logits = model.lm_head(hidden).float()
        ce_tok = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
        ce_seq = ce_tok.sum(1) / (tgt != -100).sum(1).clamp_min(1)
        z = torch.stack(st.z, 1)  # [B, layers, Hkv]
        msr_seq = 1 - z.mean((1, 2))
        loss, msr = ce_seq.mean(), []
        for c in range(2):
            sel = cls == c
            if sel.any():
                m = msr_seq[sel].mean()
                gap = m - targets[c]
                loss = loss + lam[c, 0] * gap.abs() + lam[c, 1] * gap ** 2
                msr.append(f"{m.item():.2f}")
            else:
                msr.append("-")
        opt.zero_grad(set_to_none=True)
        lam_opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lam_opt.step()
        with torch.no_grad():
            lam.clamp_(min=0)
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d} {time.time() - t0:5.0f}s ctx {ctx} ce {ce_seq.mean().item():.3f} "
                  f"msr qa/text {msr[0]}/{msr[1]} lambda {lam.detach().cpu().numpy().round(3).tolist()}"
                  f" tau {st.tau:.2f}", flush=True)
    export(routers, args.out)
    print(f"wrote {args.out}", flush=True)

    # Held-out check with hard decisions: accuracy and the share of sparse KV heads per task.
    st.hard_eval = True
    erng = np.random.default_rng(1234)
    nl = int(held.nl[0])
    with torch.no_grad():
        for task in TASKS + ("text",):
            for ctx in ctxs:
                ok, sp = 0, []
                for j in range(args.eval_n):
                    st.z = []
                    if task == "text":
                        x = held.text(erng, ctx)
                        model.model(input_ids=torch.as_tensor(x[None].astype(np.int64), device=device),
                                    use_cache=False)
                        sp.append(1 - torch.stack(st.z).float().mean().item())
                        continue
                    prompt, _, answer, _ = held.prompt(erng, task, ctx, j / max(1, args.eval_n - 1))
                    x = torch.as_tensor(prompt[None].astype(np.int64), device=device)
                    gen = []
                    for _ in range(48):  # no cache: the routed layers take whole sequences
                        st.z = []
                        out = model(input_ids=x, use_cache=False).logits[0, -1]
                        if not gen:
                            sp.append(1 - torch.stack(st.z).float().mean().item())
                        nxt = int(out.argmax())
                        if nxt in (nl, getattr(cfg, "eos_token_id", -1)):
                            break
                        gen.append(nxt)
                        x = torch.cat([x, torch.tensor([[nxt]], device=device)], 1)
                    ok += tok.decode(gen).strip() == answer
                acc = "" if task == "text" else f"acc {100 * ok / args.eval_n:5.1f}%  "
                print(f"  {task:10s} {ctx:6d}  {acc}sparse heads {np.mean(sp):.2f}", flush=True)


if __name__ == "__main__":
    main()
