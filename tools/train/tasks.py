"""Needle tasks of tools/train/TASKS.md at the token level, for training and for a quick
evaluation on the GPU machine. `ela eval niah` (tools/niah_tasks.c) builds the same prompts."""
import math

import numpy as np

KEY_WORDS = """apple anchor arrow badge basket beacon bell blanket bottle bridge
bucket button cabin candle canyon carpet castle cedar chair cherry
circle cloud comet copper cotton crown crystal desert dragon eagle
engine falcon feather forest fountain garden glacier hammer harbor helmet
island jacket jungle kettle ladder lantern lemon marble meadow mirror
needle orchard palace pepper pillow planet river saddle shadow silver
spider temple thunder violin""".split()
assert len(KEY_WORDS) == 64
TASKS = ("single", "multikey", "multivalue", "passkey", "vartrack")
ANSWER_BUDGET = 48


def magic(key, value):
    return f"The special magic number for {key} is {value}."


def task_needles(task, rng, depth):
    """-> ([(depth, text)] in listed order, question, answer) for one prompt."""
    values = [int(v) for v in rng.choice(9000000, size=4, replace=False) + 1000000]

    def key():
        a, b = rng.choice(len(KEY_WORDS), size=2, replace=False)
        return f"{KEY_WORDS[a]}-{KEY_WORDS[b]}"

    def later(n):
        return sorted(float(x) for x in rng.uniform(depth, 1.0, size=n))

    if task == "single":
        k = key()
        return [(depth, magic(k, values[0]))], f"What is the special magic number for {k}?", \
            str(values[0])
    if task == "multikey":
        keys = []
        while len(keys) < 4:
            k = key()
            if k not in keys:
                keys.append(k)
        needles = [(depth, magic(keys[0], values[0]))]
        needles += [(float(rng.uniform()), magic(k, v)) for k, v in zip(keys[1:], values[1:])]
        return needles, f"What is the special magic number for {keys[0]}?", str(values[0])
    if task == "multivalue":
        k = key()
        depths = [depth] + later(3)
        return [(d, magic(k, v)) for d, v in zip(depths, values)], \
            f"What are all the special magic numbers for {k}?", ", ".join(map(str, values))
    if task == "passkey":
        v = values[0]
        return [(depth, f"The pass key is {v}. Remember it. {v} is the pass key.")], \
            "What is the pass key?", str(v)
    if task == "vartrack":
        names = []
        while len(names) < 4:
            n = "".join(chr(65 + c) for c in rng.integers(0, 26, size=5))
            if n not in names:
                names.append(n)
        depths = [depth] + later(3)
        lines = [f"VAR {names[0]} = {values[0]}."]
        lines += [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
        return list(zip(depths, lines)), \
            f"Which variables are assigned the value {values[0]}?", " ".join(names)
    raise ValueError(f"unknown task {task}")


class Haystack:
    """Tokenized paragraphs, so a prompt is a few slices and concatenations."""

    def __init__(self, tokenizer, paragraphs, bos=None):
        enc = tokenizer.encode_batch(paragraphs, add_special_tokens=False)
        self.par = [np.asarray(e.ids, dtype=np.int32) for e in enc]
        self.tok = tokenizer
        self.nl = np.asarray(self.encode("\n"), dtype=np.int32)
        self.bos = tokenizer.token_to_id("<s>") if bos is None else bos  # None: no BOS
        assert len(self.nl) == 1

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def text(self, rng, n_tokens):
        """Plain text: BOS + consecutive paragraphs, exactly n_tokens long."""
        p = int(rng.integers(len(self.par)))
        parts = [np.asarray([] if self.bos is None else [self.bos], np.int32)]
        n = len(parts[0])
        while n < n_tokens:
            parts += [self.par[p], self.nl]
            n += len(self.par[p]) + 1
            p = (p + 1) % len(self.par)
        return np.concatenate(parts)[:n_tokens]

    def prompt(self, rng, task, ctx, depth, extra=0):
        """-> (prompt ids incl. BOS, answer ids incl. the final newline, answer text, more).
        extra > 0 (training only) adds that many distractor magic-number needles at random
        depths and returns their questions in `more` as [(question ids, answer ids)], to be
        appended after the answer."""
        needles, question, answer = task_needles(task, rng, depth)
        more, used_text = [], " ".join(t for _, t in needles)
        while len(more) < extra:
            (_, text), = task_needles("single", rng, 0.0)[0][:1]
            k, v = text[len("The special magic number for "):-1].split(" is ")
            if k in used_text or v in used_text:
                continue
            used_text += " " + text
            needles.append((float(rng.uniform()), text))
            more.append((np.asarray(self.encode(
                f"Question: What is the special magic number for {k}?\nAnswer:"), np.int32),
                np.asarray(self.encode(f" {v}\n"), np.int32)))
        tail = np.asarray(self.encode(f"\n\nQuestion: {question}\nAnswer:"), np.int32)
        nids = [np.asarray(self.encode(t), np.int32) for _, t in needles]
        budget = ctx - ANSWER_BUDGET - (self.bos is not None) - len(tail)
        budget -= sum(len(x) + 1 for x in nids)
        budget -= sum(len(q) + len(a) for q, a in more)
        p0 = int(rng.integers(len(self.par)))
        pars, used = [], -1  # n paragraphs cost their tokens plus n-1 newlines
        while True:
            nxt = self.par[(p0 + len(pars)) % len(self.par)]
            if used + len(nxt) + 1 > budget:  # the run may wrap around the text, as in C
                break
            pars.append(nxt)
            used += len(nxt) + 1
        if budget < -1:  # not even the needles and the question fit (no paragraph is allowed)
            raise ValueError(f"ctx {ctx} too small for the {task} question")
        n = len(pars)
        slots = [math.floor(d * n + 0.5) for d, _ in needles]
        order = sorted(range(len(needles)), key=lambda i: (slots[i], i))
        lines, j = [], 0
        for s in range(n + 1):
            while j < len(order) and slots[order[j]] == s:
                lines.append(nids[order[j]])
                j += 1
            if s < n:
                lines.append(pars[s])
        parts = [np.asarray([] if self.bos is None else [self.bos], np.int32)]
        for i, line in enumerate(lines):
            if i:
                parts.append(self.nl)
            parts.append(line)
        parts.append(tail)
        ans = np.asarray(self.encode(f" {answer}\n"), np.int32)
        return np.concatenate(parts), ans, answer, more
