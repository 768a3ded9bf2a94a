"""Copy a trained checkpoint into the package as a shipped model, with its JSON card.

    python scripts/ship_model.py --run runs/ship-att84 --corpus CORPUS --name snippet-bl2-att84
        [--checkpoint runs/ship-att84/best.safetensors]

The card records the model config, the corpus (seed, pieces, pairs), samples seen, training wall
time, and test metrics measured here (snippet models: 2,000- and 10,000-pair pools; passage
models: the 2,000-passage pool; both directions), plus any ``--attach``ed measurements.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from audiosheet.corpus.reader import Corpus
from audiosheet.evaluate import evaluate_passages, evaluate_snippets
from audiosheet.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "audiosheet" / "pretrained"


def _init(train: dict) -> dict | None:
    """Where the run's encoders started: the checkpoints and, for a shipped model, its samples."""
    paths = {k: train.get(f"init_{k}") for k in ("audio", "sheet") if train.get(f"init_{k}")}
    if not paths:
        return None
    out = {k: Path(v).name for k, v in paths.items()}
    for v in paths.values():
        card = Path(v).with_suffix(".json")
        if card.is_file():
            prev = json.loads(card.read_text())
            out["previous_card"] = {k: prev.get(k) for k in ("name", "samples_seen", "val_MRR")}
            out["previous_card"]["strip_geometry"] = prev.get("corpus", {}).get(
                "strip_geometry", "engraver boxes (before issue 4)")
    return out


def _variety(train: dict) -> dict | None:
    """Every probability and range of the run's real-world variety (``audiosheet.training.variety``), or None."""
    if not train.get("variety"):
        return None
    from audiosheet.training.variety import VarietyConfig

    return VarietyConfig.build(train["variety"], train.get("variety_settings") or {}).to_dict()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run folder of `audiosheet train`")
    ap.add_argument("--checkpoint", default=None, help="checkpoint in the run (default best.safetensors)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0, help="evaluation sampling seed")
    ap.add_argument("--test-json", default=None, help="the --json output of `audiosheet evaluate "
                    "snippets/passages --pairs 2000` on this checkpoint, instead of measuring it again")
    ap.add_argument("--attach", action="append", default=[], metavar="NAME=JSON",
                    help="a further measurement's JSON output to keep in the card (e.g. variants, identification)")
    ap.add_argument("--build", default=None,
                    help="how CORPUS was built, for the card (default: the music21 build command)")
    ap.add_argument("--pretraining", default=None,
                    help="how an encoder was pre-trained before this run, for the card (default: none)")
    ap.add_argument("--then", action="append", default=[],
                    help="a further command that made the checkpoint (e.g. audiosheet fit-cca ...), for the card")
    a = ap.parse_args()
    run = Path(a.run)
    ckpt = Path(a.checkpoint) if a.checkpoint else run / "best.safetensors"
    cfg, _, extra = read_checkpoint(ckpt)
    model = load_checkpoint(ckpt)
    train = json.loads((run / "config.json").read_text())
    rows = list(csv.DictReader((run / "log.csv").open()))
    upto = [r for r in rows if int(r["samples"]) <= int(extra.get("samples", 0))]
    wall = float(upto[-1]["wall_s"]) if upto else None
    corpus = Corpus(a.corpus)
    passage = getattr(cfg, "kind", None) == "passage"
    metrics = {}
    for pool in ((2000,) if passage else (2000, 10000)):
        if a.test_json and pool == 2000:  # measured already, from this checkpoint, with the same command
            r = json.loads(Path(a.test_json).read_text())
            metrics["2000"] = {k: r[k] for k in ("a2s", "s2a", "pairs", "pieces", "by_length") if k in r}
            continue
        evaluate = evaluate_passages if passage else evaluate_snippets
        r = evaluate(a.corpus, model, split="test", pairs=pool, seed=a.seed, progress=True)
        metrics[str(pool)] = {k: r[k] for k in ("a2s", "s2a", "pairs", "pieces", "by_length") if k in r}
        print(pool, json.dumps(metrics[str(pool)]))
    attached = {}
    for spec in a.attach:
        name, _, path = spec.partition("=")
        res = json.loads(Path(path).read_text())
        attached[name] = {k: v for k, v in res.items() if k not in ("per_query",)}
    card = {
        "name": a.name,
        "kind": "passage" if passage else "snippet",
        "config": cfg.to_dict(),
        "training": {k: train["train"].get(k) for k in ("lr", "weight_decay", "batch", "epoch_samples", "patience",
                                                         "refinements", "max_samples", "cca_pairs", "seed",
                                                         "augment", "variety", "variety_settings",
                                                         "boundary_jitter", "freeze_cnn")},
        "variety_probabilities": _variety(train["train"]),
        "pretraining": a.pretraining,
        "samples_seen": int(extra.get("samples", 0)),
        "epoch": int(extra.get("epoch", 0)),
        "train_wall_s": wall,
        "val_MRR": extra.get("val_MRR"),
        "cca_reestimated_on": extra.get("cca_pairs"),
        "cca_power": cfg.cca_power if getattr(cfg, "cca", False) else None,
        "val_MRR_by_cca": extra.get("val_MRR_by_cca"),
        "corpus": {"seed": corpus.manifest.get("seed"), "source": corpus.manifest.get("source"),
                   "pieces": {s: len(corpus.split(s)) for s in ("train", "valid", "test")},
                   "options": corpus.manifest.get("options"),
                   "test_only": corpus.manifest.get("test_only_combination"),
                   "strip_geometry": corpus.manifest.get("strip_geometry", "engraver boxes (before issue 4)"),
                   "held_out_pieces": {pid: len(corpus.info(pid)["pages"]) for pid in corpus.split("test")},
                   "build": a.build or ("audiosheet corpus build --source music21 --out CORPUS --workers 2"
                                        + ("; audiosheet corpus restrip CORPUS"
                                           if corpus.manifest.get("strip_geometry") else ""))},
        "initialised_from": _init(train),
        "test_metrics": metrics["2000"],
        **({"test_metrics_10000": metrics["10000"]} if "10000" in metrics else {}),
        **({"other_measurements": attached} if attached else {}),
        "command": f"audiosheet train --corpus CORPUS --config {cfg.name} --out {run.name} "
                   + " ".join(f"--{k.replace('_', '-')} {train['train'][k]}"
                              for k in ("patience", "max_samples", "snapshot_every", "threads")
                              if train["train"].get(k))
                   + "".join(f" --init-{k} {Path(train[f'init_{k}']).name}" for k in ("audio", "sheet")
                             if train.get(f"init_{k}"))
                   + (" --freeze-cnn" if train["train"].get("freeze_cnn") else "")
                   + "".join(f" --{k} {train['train'][k]}" for k in ("augment", "variety") if train["train"].get(k))
                   + (f" --variety-set '{json.dumps(train['train']['variety_settings'])}'"
                      if train["train"].get("variety_settings") else ""),
        "then": a.then,
        "evaluate": f"audiosheet evaluate {'passages' if passage else 'snippets'} --corpus CORPUS "
                    f"--split test --model {a.name} --pairs 2000",
    }
    PRETRAINED.mkdir(exist_ok=True)
    save_checkpoint(model, PRETRAINED / f"{a.name}.safetensors", {"samples": card["samples_seen"]})
    (PRETRAINED / f"{a.name}.json").write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {PRETRAINED / a.name}.safetensors and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
