#!/usr/bin/env python3
"""Markdown tables from `ela eval niah --json` files (tools/niah_sweep.sh): one row per policy
and context length with the accuracy (all tasks, and per task), the achieved prefill sparsity,
and prefill / decode speed relative to the run whose policies are both dense; then, for the
Elastic Attention runs, the achieved sparsity per task (what the router chose per input).
    usage: python3 tools/niah_table.py RUN.json ..."""
import json
import sys

TASKS = ("single", "multikey", "multivalue", "passkey", "vartrack")


def rows(run):
    """{(task, ctx): result} for the all-depth rows."""
    return {(r["task"], r["ctx"]): r for r in run["results"] if r["depth"] is None}


def prefill_label(run):
    """The prefill policy, with the router file when one was given (then full= is unused)."""
    label = run["run"]["prefill_policy"]
    router = run["run"].get("router")
    if router:
        label = label.replace(",full=0.5", "") + f" + {router.split('/')[-1]}"
    return label


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    dense = next((r for r in runs if r["run"]["prefill_policy"] == "dense"
                  and r["run"]["decode_policy"] == "dense"), None)
    base = rows(dense) if dense else {}
    print("| prefill | decode | ctx | accuracy | " + " | ".join(TASKS) +
          " | sparsity | prefill speed vs dense | decode speed vs dense |")
    print("|---|---|---:|---:|" + "---:|" * len(TASKS) + "---:|---:|---:|")
    runs.sort(key=lambda r: (r is not dense, r["run"]["decode_policy"] != "dense"))
    for run in runs:
        res = rows(run)
        for ctx in sorted({c for _, c in res}):
            a = res[("all", ctx)]
            b = base.get(("all", ctx))
            ratio = lambda key: f"{a[key] / b[key]:.2f}x" if b and b[key] else "-"  # noqa: E731
            cells = [f"{100 * res[(t, ctx)]['accuracy']:.0f}" if (t, ctx) in res else "-"
                     for t in TASKS]
            print(f"| {prefill_label(run)} | {run['run']['decode_policy']} | {ctx} | "
                  f"{a['correct']}/{a['total']} ({100 * a['accuracy']:.0f}%) | " +
                  " | ".join(cells) + f" | {a['sparsity']:.2f} | {ratio('prefill_tokens_per_s')} | "
                  f"{ratio('decode_tokens_per_s')} |")

    elastic = [r for r in runs if r["run"]["prefill_policy"].startswith("elastic")]
    if not elastic:
        return
    print("\n| prefill | ctx | " + " | ".join(TASKS) + " |")
    print("|---|---:|" + "---:|" * len(TASKS))
    for run in elastic:
        res = rows(run)
        for ctx in sorted({c for _, c in res}):
            cells = [f"{res[(t, ctx)]['sparsity']:.2f}" if (t, ctx) in res else "-" for t in TASKS]
            print(f"| {prefill_label(run)} | {ctx} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
