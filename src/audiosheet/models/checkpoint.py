"""Checkpoints and the registry of model kinds.

A checkpoint is one safetensors file: the weights, and in its metadata the model config (whose
``kind`` names the model family), the file format and the front end the model was trained with
(``geometry.FrontEnd``; files written before it was recorded carry today's defaults). Shipped models
live in ``audiosheet/pretrained`` with a JSON card each and load by name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn

from audiosheet.files import atomic_path
from audiosheet.geometry import FrontEnd, FrontEndMismatch
from audiosheet.models.config import CONFIG_NAMES, ModelConfig
from audiosheet.models.passage import FORMAT as PASSAGE_FORMAT
from audiosheet.models.passage import PassageConfig, PassageModel
from audiosheet.models.snippet import SnippetModel


@dataclass(frozen=True)
class ModelKind:
    """One family of models: its config and module classes and the checkpoint format it writes."""
    name: str
    config: type
    model: type
    format: str


MODEL_KINDS = {k.name: k for k in (
    ModelKind("snippet", ModelConfig, SnippetModel, "audiosheet-snippet-v1"),
    ModelKind("passage", PassageConfig, PassageModel, PASSAGE_FORMAT),
)}


def kind_of(config_or_model) -> ModelKind:
    """The registered kind of a config or a model (a snippet config names none: ``snippet``)."""
    cfg = getattr(config_or_model, "config", config_or_model)
    name = getattr(cfg, "kind", "snippet")
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {name!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[name]


def is_passage(config_or_model) -> bool:
    """True for a passage model or its config."""
    return kind_of(config_or_model).name == "passage"


def config_from_dict(d: dict):
    """The config of the kind ``d["kind"]`` names (a ``ModelConfig`` where it names none)."""
    name = d.get("kind", "snippet")
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {name!r} (known: {', '.join(MODEL_KINDS)})")
    return MODEL_KINDS[name].config.from_dict(d)


def load_config(name_or_path: str):
    """A shipped config by name (``bl1``, ``bl2``, ``bl2_att84``, ``bl2_att168``, ``passage_gru``)
    or a JSON file: a ``ModelConfig`` (snippet model) or a ``PassageConfig``."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        return config_from_dict(json.loads(p.read_text()))
    try:
        text = resources.files("audiosheet.configs").joinpath(f"{name_or_path}.json").read_text()
    except FileNotFoundError:
        raise ValueError(f"unknown model config '{name_or_path}' (shipped: {', '.join(CONFIG_NAMES)}, "
                         f"or a .json file)") from None
    return config_from_dict(json.loads(text))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_checkpoint(model: SnippetModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` atomically to a .safetensors file: its weights, and as metadata its config, its
    kind's format, its front end (``model.front_end``, today's defaults where unset) and ``extra``."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"config": json.dumps(model.config.to_dict()), "format": kind_of(model).format,
            "front_end": json.dumps(front_end_of(model).to_dict())}
    for k, v in (extra or {}).items():
        meta[k] = json.dumps(v)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    with atomic_path(path) as tmp:  # which also gives the file the usual mode (safetensors: 0600)
        save_file(state, str(tmp), metadata=meta)
    return path


def read_checkpoint(path: str | Path) -> tuple:
    """(config, state dict, metadata) of a checkpoint file, with clear errors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if "config" not in meta:
        raise CheckpointError(f"{path}: checkpoint has no model config in its metadata")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad model config ({e})") from None
    extra = {k: json.loads(v) for k, v in meta.items() if k not in ("config", "format")}
    try:
        extra["front_end"] = FrontEnd.from_dict(extra.get("front_end")).to_dict()
    except (FrontEndMismatch, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    return cfg, state, extra


def front_end_of(model) -> FrontEnd:
    """The front end a model was trained with (``geometry.DEFAULT`` for one that records none)."""
    return getattr(model, "front_end", None) or FrontEnd()


def load_state(model: nn.Module, state: dict, path, prefix: str = "") -> None:
    """Copy ``state`` into ``model`` and fail with one line on any missing key or shape mismatch."""
    own = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [f"{prefix}{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
           for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad:
        what = bad[:2] + [f"missing {prefix}{k}" for k in missing[:2]] + \
            [f"unexpected {prefix}{k}" for k in unexpected[:2]]
        raise CheckpointError(f"{path}: weights do not match the model config ({'; '.join(what)})")
    model.load_state_dict(state, strict=False)


def load_checkpoint(path: str | Path, config: ModelConfig | None = None) -> SnippetModel:
    """A model from a checkpoint file, in eval mode. ``config``, if given, must match the file's."""
    cfg, state, extra = read_checkpoint(path)
    if config is not None and config.to_dict() != cfg.to_dict():
        diff = [k for k, v in config.to_dict().items() if cfg.to_dict().get(k) != v]
        raise CheckpointError(f"{path}: checkpoint config '{cfg.name}' does not match the requested "
                              f"'{config.name}' (differs in {', '.join(diff)})")
    model = kind_of(cfg).model(cfg)
    load_state(model, state, path)
    model.front_end = FrontEnd.from_dict(extra["front_end"])
    return model.eval()


def _state_for(model, path) -> dict:
    """The weights of checkpoint ``path`` for initialising part of ``model``; CheckpointError (one
    line) when the checkpoint was trained with another front end than ``model`` is for."""
    _, state, extra = read_checkpoint(path)
    try:
        front_end_of(model).check(FrontEnd.from_dict(extra["front_end"]), f"{path}", "the model it initialises")
    except FrontEndMismatch as e:
        raise CheckpointError(str(e)) from None
    return state


def load_encoder(model: SnippetModel, path: str | Path, modality: str) -> None:
    """Initialise one pathway (``audio`` or ``sheet``) of ``model`` from a checkpoint's pathway.

    Reads the ``audio_net.*``/``attention.*`` or ``sheet_net.*`` weights of any audiosheet checkpoint
    (a snippet model or a pre-trained encoder); a pathway of another shape is a clear error.
    """
    if modality not in ("audio", "sheet"):
        raise ValueError(f"modality must be 'audio' or 'sheet', not {modality!r}")
    state = _state_for(model, path)
    prefixes = ("audio_net.", "attention.") if modality == "audio" else ("sheet_net.",)
    for prefix in prefixes:
        module = getattr(model, prefix[:-1])
        if module is None:
            continue
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise CheckpointError(f"{path}: checkpoint has no {prefix[:-1]} weights for the {modality} pathway")
        load_state(module, sub, path, prefix)


def resolve_model(name: str | Path) -> Path:
    """Checkpoint file of a MODEL argument: a run folder, a .safetensors file or a shipped model's name."""
    p = Path(name)
    if p.is_dir():
        for cand in ("best.safetensors", "last.safetensors"):
            if (p / cand).is_file():
                return p / cand
        raise CheckpointError(f"{p}: run folder has no best.safetensors or last.safetensors")
    if p.suffix == ".safetensors" or p.exists():
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file")
        return p
    shipped = resources.files("audiosheet.pretrained").joinpath(f"{name}.safetensors")
    if shipped.is_file():
        return Path(str(shipped))
    names = ", ".join(m["name"] for m in shipped_models()) or "none"
    raise CheckpointError(f"{name}: not a run folder, a checkpoint file or a shipped model (shipped: {names})")


def shipped_models() -> list[dict]:
    """Cards (JSON) of the models shipped inside the package."""
    cards = []
    root = resources.files("audiosheet.pretrained")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            card = json.loads(entry.read_text())
            card.setdefault("name", entry.name[:-5])
            cards.append(card)
    return cards


def load_model(name: str | Path) -> SnippetModel:
    """A ready model in eval mode from a run folder, a checkpoint file or a shipped model's name."""
    return load_checkpoint(resolve_model(name))


def init_from_snippet_model(model: PassageModel, path, modality: str) -> list[str]:
    """Start one per-snippet CNN (``audio`` or ``sheet``) from an audiosheet checkpoint's pathway
    (a snippet model or a pre-trained encoder): its convolution blocks and 1×1 projection; the
    dense layer too where its shape matches (it does not when the window sizes differ). Returns
    the names of the tensors taken; a checkpoint whose convolutions differ is a clear error."""
    if modality not in ("audio", "sheet"):
        raise ValueError(f"modality must be 'audio' or 'sheet', not {modality!r}")
    path = resolve_model(path)
    state = _state_for(model, path)
    prefix = "audio_net." if modality == "audio" else "sheet_net."
    cnn = (model.audio_enc if modality == "audio" else model.sheet_enc).cnn
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise CheckpointError(f"{path}: checkpoint has no {prefix[:-1]} weights for the {modality} CNN")
    own = cnn.state_dict()
    dense = {k for k in sub if k.startswith("dense.")}
    if all(k in own and own[k].shape == sub[k].shape for k in dense):
        take = sub
    else:
        take = {k: v for k, v in sub.items() if k not in dense}
        take.update({k: v for k, v in own.items() if k.startswith("dense.")})
    load_state(cnn, take, path, prefix)
    return sorted(k for k in take if k in sub and (k not in dense or take is sub))
