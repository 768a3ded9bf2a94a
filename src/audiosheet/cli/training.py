"""``audiosheet train / pretrain / fit-cca / evaluate / models``: models and their measurement."""
from __future__ import annotations

import json
import sys


def _train(a) -> int:
    from audiosheet.models.checkpoint import is_passage, load_config
    from audiosheet.training.config import PASSAGE_DEFAULTS, TrainConfig
    from audiosheet.training.train import train

    overrides = {k: getattr(a, k) for k in ("lr", "epoch_samples", "patience", "refinements", "seed",
                                             "threads", "val_pairs", "cca_pairs", "batch", "snapshot_every",
                                             "augment", "variety", "boundary_jitter")
                 if getattr(a, k) is not None}
    if a.variety_set:
        try:
            overrides["variety_settings"] = json.loads(a.variety_set)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--variety-set: not JSON ({exc})") from None
    if a.freeze_cnn:
        overrides["freeze_cnn"] = True
    if a.max_samples is not None:
        overrides["max_samples"] = a.max_samples
    if a.resume:
        summary = train(a.corpus, a.out, resume=True, max_samples=a.max_samples, progress=not a.quiet)
    else:
        cfg = load_config(a.config)
        if is_passage(cfg):
            overrides = {**PASSAGE_DEFAULTS, **overrides}
        summary = train(a.corpus, a.out, cfg, TrainConfig(**overrides),
                        init_audio=a.init_audio, init_sheet=a.init_sheet, progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _pretrain(a) -> int:
    from audiosheet.training.pretrain import PretrainConfig, pretrain

    if a.resume:
        summary = pretrain(None, a.out, resume=True, max_steps=a.max_steps, workers=a.workers,
                           progress=not a.quiet)
    else:
        if not a.modality or not a.data:
            raise ValueError("pretrain: --modality and --data are needed for a new run")
        kw = {k: getattr(a, k) for k in ("batch", "lr", "temperature", "seed", "threads", "max_minutes",
                                         "checkpoint_every", "init") if getattr(a, k) is not None}
        if a.augment:
            kw["augment"] = json.loads(a.augment)
        cfg = PretrainConfig(modality=a.modality, model=a.config, **kw)
        summary = pretrain(a.data, a.out, cfg, max_steps=a.max_steps, workers=a.workers,
                           progress=not a.quiet)
    print(json.dumps(summary))
    return 0


def _fit_cca(a) -> int:
    from pathlib import Path

    from audiosheet.models.checkpoint import read_checkpoint, resolve_model
    from audiosheet.training.cca import fit_cca
    from audiosheet.training.config import TrainConfig
    from audiosheet.training.pairs import SnippetPairs
    from audiosheet.training.samplers import evaluation_pairs

    src = resolve_model(a.model)
    cfg, _, _ = read_checkpoint(src)
    tc = TrainConfig(cca_pairs=a.cca_pairs, seed=a.seed)
    data = SnippetPairs(a.corpus, "train", context=cfg.context)
    val = SnippetPairs(a.corpus, tc.val_split, context=cfg.context)
    if len(data) == 0 or len(val) == 0:
        raise ValueError(f"{a.corpus}: the corpus needs pairs in its train and {tc.val_split} splits")
    scores = fit_cca(src, Path(a.out), data, val, evaluation_pairs(val, tc.val_pairs, seed=tc.seed), tc,
                     progress=not a.quiet)
    print(json.dumps({"model": str(src), "out": a.out, "val_MRR_by_cca": scores}))
    return 0


def _evaluate_snippets(a) -> int:
    from audiosheet.evaluate import evaluate_snippets

    res = evaluate_snippets(a.corpus, a.model, split=a.split, pairs=a.pairs, seed=a.seed,
                            progress=not a.quiet)
    text = json.dumps(res, indent=1)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(text + "\n")
    for d in ("a2s", "s2a"):
        m = res[d]
        print(f"{d}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@10 {m['R@10']:.3f}  R@25 {m['R@25']:.3f}  "
              f"MRR {m['MRR']:.3f}  MR {m['MR']:.0f}  mean rank {m['mean_rank']:.1f}")
    print(f"pairs: {res['pairs']} from {res['pieces']} {a.split} pieces")
    return 0


def _evaluate_passages(a) -> int:
    from audiosheet.evaluate import evaluate_passages

    res = evaluate_passages(a.corpus, a.model, split=a.split, pairs=a.pairs, seed=a.seed,
                            progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    for d in ("a2s", "s2a"):
        m = res[d]
        print(f"{d}: R@1 {m['R@1']:.3f}  R@5 {m['R@5']:.3f}  R@25 {m['R@25']:.3f}  MRR {m['MRR']:.3f}  "
              f"MR {m['MR']:.0f}  " + "  ".join(f"{n} system(s) MRR {v[d]['MRR']:.3f}"
                                               for n, v in res["by_length"].items()))
    print(f"passages: {res['pairs']} from {res['pieces']} {a.split} pieces ({res['method']})")
    return 0


def _evaluate_folder(a) -> int:
    from audiosheet.evaluate import evaluate_folder

    res = evaluate_folder(a.folder, method=a.method, db=a.db, model=a.model, top=a.top,
                          query_seconds=a.query_seconds, progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    fpr = "n/a" if res["open_set_queries"] == 0 else f"{res['open_set_fpr']:.3f}"
    print(f"{a.folder} {a.method}: top-1 {res['top1']:.3f}  top-5 {res['top5']:.3f}  MRR {res['MRR']:.3f}  "
          f"shortlist recall {res['shortlist_recall']:.3f}  TPR@confident {res['tpr']:.3f}  "
          f"open-set FPR {fpr}  ({res['queries']} queries in the collection, "
          f"{res['open_set_queries']} not; median latency {res['latency_s']:.2f} s)")
    for f, reason in res["failed"]:
        print(f"FAILED  {reason}", file=sys.stderr)
    for name in res["unlabelled"]:
        print(f"unlabelled {name}: in queries/ but not in labels.tsv, not evaluated", file=sys.stderr)
    return 1 if res["failed"] else 0


def _evaluate_pieces(a) -> int:
    from audiosheet.evaluate import evaluate_pieces

    res = evaluate_pieces(a.corpus, split=a.split, direction=a.direction, method=a.method,
                          query_seconds=a.query_seconds, model=a.model, work=a.work, limit=a.limit,
                          passage_model=a.passage_model,
                          seed=a.seed, progress=not a.quiet)
    if a.json:
        from pathlib import Path

        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"{a.direction} {a.method}: top-1 {res['top1']:.3f}  top-5 {res['top5']:.3f}  "
          f"MRR {res['MRR']:.3f}  ({res['queries']} queries, {res['pieces']} pieces, median "
          f"latency {res['latency_s']:.2f} s)")
    return 0


def _models(a) -> int:
    from audiosheet.models.checkpoint import shipped_models

    cards = shipped_models()
    if a.json:
        print(json.dumps(cards, indent=1))
        return 0
    if not cards:
        print("no shipped models")
    for c in cards:
        t = c.get("test_metrics", {})
        mrr = " ".join(f"{d} MRR {t[d]['MRR']:.3f}" for d in ("a2s", "s2a") if d in t)
        print(f"{c['name']:24s} config {c.get('config', {}).get('name', '?'):12s} "
              f"samples {c.get('samples_seen', 0):>10,}  {mrr}")
    return 0


def add_commands(sub) -> None:
    """Add this module's commands to the top-level subparsers ``sub``."""
    t = sub.add_parser("train", help="train a snippet or passage model on a corpus (resumable)")
    t.add_argument("--corpus", required=True, help="corpus folder (audiosheet corpus build)")
    t.add_argument("--config", default="bl2_att84", help="model config: bl1, bl2, bl2_att84, "
                   "bl2_att168 or a JSON file")
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.csv)")
    t.add_argument("--init-audio", default=None, help="checkpoint to initialise the audio pathway from")
    t.add_argument("--init-sheet", default=None, help="checkpoint to initialise the sheet pathway from")
    t.add_argument("--max-samples", type=int, default=None, help="stop after N training samples")
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a stop")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--batch", type=int, default=None)
    t.add_argument("--epoch-samples", type=int, default=None)
    t.add_argument("--patience", type=int, default=None)
    t.add_argument("--refinements", type=int, default=None)
    t.add_argument("--val-pairs", type=int, default=None)
    t.add_argument("--cca-pairs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--snapshot-every", type=int, default=None,
                   help="also keep the best model so far (CCA re-estimated) every N samples")
    t.add_argument("--augment", type=float, default=None,
                   help="fine-tuning augmentation: the pre-training augmentations with their "
                        "probabilities times this (0: off, the default; 1: as in pre-training)")
    t.add_argument("--variety", type=float, default=None,
                   help="real-world variety (scans, photos, low resolution; timing, pedal, rooms, "
                        "noise, codecs, band limits; audiosheet.training.variety): its probabilities times "
                        "this (0: off, the default; 1: as documented)")
    t.add_argument("--variety-set", default=None, help="JSON of single variety settings, e.g. "
                   "'{\"p_codec\": 0}' (switches the codec simulation off)")
    t.add_argument("--boundary-jitter", type=float, default=None, help="passage models: move training "
                   "audio passages' start and end by up to this fraction of their length (default 0)")
    t.add_argument("--freeze-cnn", action="store_true", help="passage models: keep the per-snippet "
                   "CNNs' convolutions as initialised by --init-audio/--init-sheet (about 3x faster)")
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    pt = sub.add_parser("pretrain", help="self-supervised contrastive (SimCLR) pre-training of the "
                        "audio or sheet encoder on any folders of recordings or pages (resumable)")
    pt.add_argument("--modality", choices=["audio", "sheet"], help="the encoder to pre-train")
    pt.add_argument("--data", nargs="+", help="files or folders (recursive) of recordings or pages")
    pt.add_argument("--out", required=True, help="run folder (last.safetensors: use with train "
                    "--init-audio/--init-sheet)")
    pt.add_argument("--config", default="bl2_att84", help="model config whose encoder is pre-trained")
    pt.add_argument("--max-steps", type=int, default=None, help="stop after N steps (default 1000)")
    pt.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out after a stop")
    pt.add_argument("--batch", type=int, default=None, help="default: 128 audio, 256 sheet")
    pt.add_argument("--lr", type=float, default=None, help="default: 1e-3 audio, 5e-4 sheet")
    pt.add_argument("--temperature", type=float, default=None, help="default: 0.6 audio, 0.5 sheet")
    pt.add_argument("--augment", default=None, help="JSON overrides of the augmentation settings, "
                    "e.g. '{\"p_stretch\": 0.6}'")
    pt.add_argument("--init", default=None, help="start the encoder from this model's pathway (a "
                    "shipped model's name or a checkpoint) instead of random weights")
    pt.add_argument("--checkpoint-every", type=int, default=None, help="steps (default 25)")
    pt.add_argument("--seed", type=int, default=None)
    pt.add_argument("--threads", type=int, default=None)
    pt.add_argument("--workers", type=int, default=2, help="processes reading the files")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.set_defaults(func=_pretrain)

    f = sub.add_parser("fit-cca", help="fit a model's CCA statistics on training pairs after training "
                       "(choosing the canonical-correlation weighting on validation)")
    f.add_argument("--corpus", required=True)
    f.add_argument("--model", required=True, help="checkpoint file, run folder or shipped model name")
    f.add_argument("--out", required=True, help="checkpoint file to write")
    f.add_argument("--cca-pairs", type=int, default=25_000)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fit_cca)

    e = sub.add_parser("evaluate", help="evaluate a model on a corpus split")
    es = e.add_subparsers(dest="evaluate_command", required=True)
    n = es.add_parser("snippets", help="cross-modal snippet retrieval (R@k, MRR, median rank)")
    n.add_argument("--corpus", required=True)
    n.add_argument("--split", default="test")
    n.add_argument("--model", required=True, help="run folder, checkpoint file or shipped model name")
    n.add_argument("--pairs", type=int, default=2000, help="size of the candidate pool")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--json", default=None, help="write the metrics to this JSON file")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_evaluate_snippets)

    fo = es.add_parser("folder", help="piece identification on a folder of real files: sheets/, "
                       "queries/ and labels.tsv (query file → piece; '-' for a piece not indexed)",
                       description="FOLDER/sheets/: scores (PDFs or images), one file per piece; the "
                       "piece's name is the file name without suffix. FOLDER/recordings/ (optional): "
                       "recordings to index for score queries. FOLDER/queries/: query files. "
                       "FOLDER/labels.tsv: lines 'QUERY_FILE<TAB>PIECE' (query file name with its "
                       "suffix; PIECE a sheet's name without suffix, or '-' for a piece that is not "
                       "indexed), optional header 'query<TAB>piece'. Exit status 1 if a file failed.")
    fo.add_argument("folder")
    fo.add_argument("--method", choices=["vote", "dtw", "passage"], default="dtw")
    fo.add_argument("--db", default=None, help="collection to index sheets/ into and reuse "
                    "(default FOLDER/.collection-MODELTAG)")
    fo.add_argument("--model", default=None, help="snippet model of a new collection (default shipped)")
    fo.add_argument("--top", type=int, default=10)
    fo.add_argument("--query-seconds", type=float, default=None,
                    help="identify only the first S seconds of each recording query")
    fo.add_argument("--json", default=None, help="write metrics and per-query answers to this JSON file")
    fo.add_argument("--quiet", action="store_true")
    fo.set_defaults(func=_evaluate_folder)

    ps = es.add_parser("passages", help="cross-modal passage retrieval: whole systems (1–3) and "
                       "the audio they cover; a snippet model gives the averaging baseline")
    ps.add_argument("--corpus", required=True)
    ps.add_argument("--split", default="test")
    ps.add_argument("--model", required=True, help="passage model, or a snippet model (its embeddings "
                    "averaged over the passage)")
    ps.add_argument("--pairs", type=int, default=2000, help="size of the candidate pool")
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--json", default=None, help="write the metrics to this JSON file")
    ps.add_argument("--quiet", action="store_true")
    ps.set_defaults(func=_evaluate_passages)

    pc = es.add_parser("pieces", help="piece identification through files: index the split's "
                       "scores or recordings, query with excerpts (top-1, top-5, MRR, latency)")
    pc.add_argument("--corpus", required=True)
    pc.add_argument("--split", default="test")
    pc.add_argument("--direction", choices=["a2s", "s2a"], default="a2s",
                    help="a2s: audio excerpts find scores; s2a: score pages find recordings")
    pc.add_argument("--method", choices=["vote", "dtw", "passage"], default="dtw")
    pc.add_argument("--passage-model", default=None, help="passage model for --method passage "
                    "(default: the shipped one)")
    pc.add_argument("--query-seconds", type=float, default=30.0)
    pc.add_argument("--model", default=None, help="default: the shipped model")
    pc.add_argument("--work", default=None, help="folder for the exported files and the collection "
                    "(default CORPUS/eval/SPLIT; reused by later runs)")
    pc.add_argument("--limit", type=int, default=None, help="only the first N pieces of the split")
    pc.add_argument("--seed", type=int, default=0)
    pc.add_argument("--json", default=None, help="write the metrics to this JSON file")
    pc.add_argument("--quiet", action="store_true")
    pc.set_defaults(func=_evaluate_pieces)

    m = sub.add_parser("models", help="list the models shipped inside the package")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_models)
