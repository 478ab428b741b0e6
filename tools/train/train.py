#!/usr/bin/env python3
"""Train ela's small long-context needle model (issue 7) on the GPU machine.

    python3 tools/train/train.py --text build-train/text --out OUT [--minutes 9]

1. A byte-level BPE tokenizer (4096 tokens, GPT-2 split regex, <s> added in front) trained on
   the training text with Hugging Face `tokenizers`, unless OUT/tokenizer.json exists.
2. A Llama model (8 layers, hidden 256, 4 query and 2 KV heads of 64, SwiGLU 768, tied
   embeddings, RoPE theta 1e6: about 7.3M parameters) trained from scratch for a fixed time on
   a mix of plain text and the needle tasks of tools/train/TASKS.md at 512-16384 tokens
   (curriculum: short first), 128K tokens per step, AdamW, bf16 autocast, cosine schedule over
   the time budget. The loss is the mean next-token loss over the whole sequence plus the mean
   loss over the answer tokens, so the few answer tokens of a long prompt still count.
3. A quick greedy evaluation on the held-out text, then OUT/ gets config.json,
   model.safetensors (float16), generation_config.json, tokenizer.json and haystack.txt (the
   held-out text), which is the directory `ela run` and `ela eval niah` load.
--init DIR continues from an exported model (weights only; optimizer state restarts).
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the loader forks after tokenizing
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tasks import TASKS, Haystack, task_needles  # noqa: E402

VOCAB = 4096
LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
TASK_MIX = {"text": 0.05, "single": 0.20, "multikey": 0.20, "multivalue": 0.25,
            "passkey": 0.10, "vartrack": 0.20}
LM_WEIGHT = 0.25  # the text is small enough to memorize; retrieval is what must be learned


def read_paragraphs(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def train_tokenizer(paragraphs, path):
    """BPE on the text plus sample needles and questions, so the task words (keys, "special",
    "Question") are whole tokens and a key is matched as 3 tokens, not 7."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(20000):
        needles, question, answer = task_needles(TASKS[i % len(TASKS)], rng, 0.0)
        samples += [t for _, t in needles] + [f"Question: {question}", f"Answer: {answer}"]
    paragraphs = paragraphs + samples
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(paragraphs, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(path)


def make_model(device):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
               num_attention_heads=4, num_key_value_heads=2, head_dim=64,
               max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=True,
               bos_token_id=1, eos_token_id=2, pad_token_id=0, attention_bias=False,
               mlp_bias=False, hidden_act="silu", initializer_range=0.02)
    try:  # transformers 5 keeps RoPE settings in rope_parameters
        config = LlamaConfig(**cfg, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    except TypeError:
        config = LlamaConfig(**cfg, rope_theta=1e6)
    if getattr(config, "rope_theta", 1e6) != 1e6 and not getattr(config, "rope_parameters", None):
        config.rope_theta = 1e6
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).to(device)


def pick(rng, weights):
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def batch(hay, rng, length, tokens_per_step, pad):
    """-> input ids [B, length], targets [B, length] (-100 = no loss), answer mask [B, length]."""
    b = max(1, tokens_per_step // length)
    ids = np.full((b, length), pad, np.int64)
    tgt = np.full((b, length), -100, np.int64)
    ans = np.zeros((b, length), np.bool_)
    for i in range(b):
        task = pick(rng, TASK_MIX)
        if task == "text":
            seq = hay.text(rng, length + 1)
            ids[i] = seq[:-1]
            tgt[i] = seq[1:]
            continue
        prompt, answer, _, more = hay.prompt(rng, task, length, float(rng.uniform()),
                                             extra_questions(hay, rng, length))
        pieces, spans, pos = [prompt, answer], [(len(prompt), len(answer))], len(prompt) + len(answer)
        for q, a in more:
            pieces += [q, a]
            spans.append((pos + len(q), len(a)))
            pos += len(q) + len(a)
        seq = np.concatenate(pieces)
        n = len(seq) - 1
        ids[i, :n] = seq[:-1]
        tgt[i, :n] = seq[1:]
        for start, size in spans:  # targets at positions start-1 .. start+size-2 are answers
            ans[i, start - 1:start + size - 1] = True
    return ids, tgt, ans


def extra_questions(hay, rng, length):
    """Training-only density: distractor needles and more questions after the first answer."""
    return int(rng.integers(0, 1 + min(16, length // 256)))


def lengths_allowed(progress, max_len, curriculum):
    top = 1024 if progress < 0.2 else 4096 if progress < 0.4 else max_len
    return [n for n in LENGTHS if n <= (top if curriculum else max_len)]


class Batches(torch.utils.data.IterableDataset):
    """Endless training batches, made by DataLoader workers so the GPU never waits on Python.
    The length curriculum follows the wall clock of the run (start, budget)."""

    def __init__(self, hay, seed, start, budget, tokens_per_step, max_len, curriculum):
        self.hay, self.seed, self.start, self.budget = hay, seed, start, budget
        self.tokens_per_step, self.max_len, self.curriculum = tokens_per_step, max_len, curriculum

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            progress = min(0.999, (time.time() - self.start) / self.budget)
            length = int(rng.choice(lengths_allowed(progress, self.max_len, self.curriculum)))
            yield batch(self.hay, rng, length, self.tokens_per_step, 0)


@torch.no_grad()
def evaluate(model, hay, device, ctxs, tasks, n, seed=1234):
    """Greedy answers on held-out haystacks -> {(task, ctx): accuracy}."""
    model.eval()
    rng = np.random.default_rng(seed)
    nl = int(hay.nl[0])
    out = {}
    for task in tasks:
        for ctx in ctxs:
            ok = 0
            for j in range(n):
                prompt, _, answer, _ = hay.prompt(rng, task, ctx, j / max(1, n - 1))
                x = torch.as_tensor(prompt[None].astype(np.int64), device=device)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    res = model(input_ids=x, use_cache=True)
                    past, gen = res.past_key_values, []
                    nxt = int(res.logits[0, -1].argmax())
                    while nxt not in (nl, 2) and len(gen) < 48:
                        gen.append(nxt)
                        res = model(input_ids=torch.tensor([[nxt]], device=device),
                                    past_key_values=past, use_cache=True)
                        past = res.past_key_values
                        nxt = int(res.logits[0, -1].argmax())
                ok += hay.tok.decode(gen).strip() == answer
            out[(task, ctx)] = ok / n
    model.train()
    return out


def export(model, out, text_dir):
    model.config.torch_dtype = "float16"
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, f, indent=2)
    shutil.copy(os.path.join(text_dir, "heldout.txt"), os.path.join(out, "haystack.txt"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--text", required=True, help="folder with train.txt and heldout.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--tokens-per-step", type=int, default=131072)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=12, help="data loader processes")
    ap.add_argument("--init", help="exported model to continue from (no length curriculum)")
    ap.add_argument("--max-len", type=int, default=16384, choices=LENGTHS)
    ap.add_argument("--eval-ctx", default="4096,8192,16384")
    ap.add_argument("--eval-n", type=int, default=20)
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    tok_path = os.path.join(args.out, "tokenizer.json")
    train_pars = read_paragraphs(os.path.join(args.text, "train.txt"))
    if not os.path.exists(tok_path):
        t0 = time.time()
        train_tokenizer(train_pars, tok_path)
        print(f"tokenizer: trained in {time.time() - t0:.1f} s", flush=True)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    t0 = time.time()
    hay = Haystack(tok, train_pars)
    held = Haystack(tok, read_paragraphs(os.path.join(args.text, "heldout.txt")))
    ntok = sum(len(p) for p in hay.par)
    print(f"text: {len(hay.par)} paragraphs, {ntok} tokens ({time.time() - t0:.1f} s)", flush=True)

    torch.manual_seed(args.seed)
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    model = make_model(device)
    if args.init:
        from safetensors.torch import load_file
        sd = load_file(os.path.join(args.init, "model.safetensors"))
        print("init:", model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False),
              flush=True)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)
    budget = args.minutes * 60
    start = time.time()
    loader = iter(torch.utils.data.DataLoader(
        Batches(hay, args.seed, start, budget, args.tokens_per_step, args.max_len,
                curriculum=not args.init), batch_size=None,
        num_workers=args.workers, prefetch_factor=4, pin_memory=True))
    step, seen, last_log, last_eval = 0, 0, start, start
    warm = 100 if not args.init else 20
    while True:
        progress = (time.time() - start) / budget
        if progress >= 1:
            break
        lr = args.lr * min(1.0, (step + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, tgt, ans = (torch.as_tensor(x).to(device, non_blocking=True) for x in next(loader))
        length = ids.shape[1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden = model.model(input_ids=ids).last_hidden_state
        logits = F.linear(hidden.float(), model.lm_head.weight)  # f32 logits for the loss
        per_tok = F.cross_entropy(logits.view(-1, VOCAB), tgt.view(-1), ignore_index=-100,
                                  reduction="none").view(tgt.shape)
        valid = tgt != -100
        lm = per_tok[valid].mean()
        qa = per_tok[ans].mean() if ans.any() else torch.zeros((), device=device)
        loss = LM_WEIGHT * lm + qa
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += int(valid.sum())
        if time.time() - last_log > 30:
            last_log = time.time()
            el = last_log - start
            print(f"step {step} {el:5.0f}s len {length:5d} lr {lr:.2e} lm {lm.item():.3f} "
                  f"qa {qa.item():.3f} tok/s {seen / el / 1e3:.0f}K", flush=True)
        if time.time() - last_eval > 100:
            acc = evaluate(model, held, device, [1024, 4096], ("single", "vartrack"), 6)
            print("  eval", " ".join(f"{t}@{c}={100 * a:.0f}%" for (t, c), a in acc.items()),
                  flush=True)
            last_eval = time.time()
    print(f"trained {step} steps, {seen / 1e6:.0f}M tokens in {time.time() - start:.0f} s", flush=True)
    export(model, args.out, args.text)
    ctxs = [int(c) for c in args.eval_ctx.split(",") if c]
    t0 = time.time()
    acc = evaluate(model.to(torch.float16).float(), held, device, ctxs, TASKS, args.eval_n)
    print(f"eval on held-out text ({args.eval_n} per cell, {time.time() - t0:.0f} s):")
    for (task, ctx), a in acc.items():
        print(f"  {task:10s} {ctx:6d}  {100 * a:5.1f}%")
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"steps": step, "tokens": seen, "minutes": args.minutes,
                   "eval": {f"{t}@{c}": a for (t, c), a in acc.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
