"""Identification options and the confidence of ``identify``, measured on development folders.

    python benchmarks/calibrate.py FOLDER [FOLDER ...] [--fit FOLDER ...] [--only VARIANTS] [--model M] [--out DIR]

Every FOLDER is in the layout of ``audiosheet evaluate folder`` (sheets/, queries/, labels.tsv).
For each, the reference ``vote`` and the four ``dtw`` variants — shortlist by raw votes or by
votes per √(item snippets), rank by the raw mean cosine or by the margin over the time-reversed
query, 20 candidates; and the method before issue 14, raw votes, raw cosine, 10 candidates — are run (``evaluate_folder``), and a table of top-1, top-5, MRR, shortlist recall, TPR
and open-set FPR at the confidence threshold is printed.

``--fit FOLDER ...``: fit the confidence's logistic coefficients (intercept, slope of the top
result's lead z; see ``matching.leads`` and ``matching.confidence``) on those folders' queries
pooled, with the chosen variant (label: the top result is the query's piece; open-set queries are
all negatives), print them (paste them into ``identify.CONFIDENCE``) and, for each folder, its TPR
and FPR under coefficients fitted on the other folders only. JSON of every run goes to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from audiosheet.evaluate import evaluate_folder  # noqa: E402
from audiosheet.retrieval import identify as ident  # noqa: E402

VARIANTS = {"vote": ("vote", {}),
            "dtw before (votes, cost, shortlist 10)": ("dtw", {"shortlist_by": "votes", "rank_by": "cost",
                                                               "shortlist": 10}),
            "dtw votes/cost": ("dtw", {"shortlist_by": "votes", "rank_by": "cost"}),
            "dtw rate/cost": ("dtw", {"shortlist_by": "rate", "rank_by": "cost"}),
            "dtw votes/margin": ("dtw", {"shortlist_by": "votes", "rank_by": "margin"}),
            "dtw rate/margin": ("dtw", {"shortlist_by": "rate", "rank_by": "margin"})}
# "dtw rate/margin" with the default shortlist (20) is what identify does by default


def features(res: dict) -> tuple[np.ndarray, np.ndarray]:
    """The lead z (``matching.leads``) of each query's top result, and whether it is right."""
    from audiosheet.retrieval.matching import leads

    x, y = [], []
    for r in res["per_query"]:
        m = [v if v is not None else float("-inf") for v in r.get("margins", [])]
        if not m:
            continue
        x.append(leads(np.asarray(m))[0])
        y.append(r["piece"] != "-" and r["rank"] == 1)
    return np.asarray(x, float), np.asarray(y, float)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Logistic regression p = sigmoid(a + b·z), log loss + a small L2 on b."""
    from scipy.optimize import minimize

    x = np.where(np.isfinite(x), x, -10.0)

    def loss(w):
        z = w[0] + w[1] * x
        return float(np.mean(np.logaddexp(0, z) - y * z) + l2 * w[1] ** 2)

    w = minimize(loss, np.zeros(2), method="L-BFGS-B").x
    return tuple(round(float(v), 2) for v in w)


def rates(res: dict, coef) -> dict:
    """TPR (top-1 right and confident) and FPR (open-set confident) under ``coef``."""
    from audiosheet.retrieval.matching import confidence

    x, _ = features(res)
    tp = fp = pos = neg = 0
    for z, r in zip(x, [r for r in res["per_query"] if r.get("margins")]):
        c = confidence(z, coef)
        if r["piece"] == "-":
            neg += 1
            fp += c >= ident.CONFIDENT
        else:
            pos += 1
            tp += (c >= ident.CONFIDENT) and r["rank"] == 1
    return {"tpr": tp / max(pos, 1), "fpr": fp / max(neg, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--fit", type=Path, nargs="*", default=None, help="folders to fit the confidence on")
    ap.add_argument("--variant", default="dtw rate/margin")
    ap.add_argument("--out", type=Path, default=Path("calibrate_out"))
    ap.add_argument("--only", default=None, help="comma-separated variant names to run")
    ap.add_argument("--model", default=None, help="snippet model (default: the shipped one); each model "
                    "indexes its own collection in the folder")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    names = a.only.split(",") if a.only else list(VARIANTS)
    for folder in a.folders:
        for name in names:
            method, opts = VARIANTS[name]
            tag = name.replace(" ", "_").replace("/", "-").replace(",", "").replace("(", "").replace(")", "")
            path = a.out / f"{folder.name}.{tag}.json"
            if path.exists():
                res = json.loads(path.read_text())
            else:
                res = evaluate_folder(folder, method=method, model=a.model, progress=True, **opts)
                path.write_text(json.dumps(res, indent=1) + "\n")
            runs[(folder, name)] = res
    coef = ident.CONFIDENCE
    if a.fit:
        xs, ys = zip(*(features(runs[(f, a.variant)]) for f in a.fit))
        x, y = np.concatenate(xs), np.concatenate(ys)
        coef = fit(x, y)
        print(f"fitted on {', '.join(f.name for f in a.fit)} ({len(y)} queries, {int(y.sum())} right at "
              f"top-1): CONFIDENCE = {coef}")
        for f in a.fit:  # each set's figures with the coefficients fitted on the others alone
            rest = [g for g in a.fit if g != f]
            if rest:
                xs, ys = zip(*(features(runs[(g, a.variant)]) for g in rest))
                held = fit(np.concatenate(xs), np.concatenate(ys))
                r = rates(runs[(f, a.variant)], held)
                print(f"  {f.name} with coefficients fitted on the others only {held}: "
                      f"TPR {r['tpr']:.3f}, open-set FPR {r['fpr']:.3f}")
    print(f"\n| folder | method | top-1 | top-5 | MRR | shortlist recall | TPR | open-set FPR | median s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (folder, name), res in runs.items():
        r = rates(res, coef) if name != "vote" else {"tpr": res["tpr"], "fpr": res["open_set_fpr"]}
        print(f"| {folder.name} | {name} | {res['top1']:.3f} | {res['top5']:.3f} | {res['MRR']:.3f} | "
              f"{res['shortlist_recall']:.3f} | {r['tpr']:.3f} | {r['fpr']:.3f} | {res['latency_s']:.2f} |")
    print(f"\n(queries in collection / open set: " + ", ".join(
        f"{f.name} {runs[(f, names[0])]['queries']}/{runs[(f, names[0])]['open_set_queries']}" for f in a.folders) + ")")


if __name__ == "__main__":
    main()
