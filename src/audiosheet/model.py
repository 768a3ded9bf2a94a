"""Cross-modal snippet model: two VGG-style encoders into one 32-d space (Dorfer et al. 2018),
optional soft attention over the audio frames (Balke et al. 2019), a CCA layer and L2 norm.

Plain ``nn.Module``s; every hyperparameter lives in ``ModelConfig`` and travels with the weights.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class DictConfig:
    """JSON round trip of a config dataclass; unknown fields are an error."""

    what = "model config"

    @classmethod
    def from_dict(cls, d: dict):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.what} fields: {', '.join(sorted(unknown))}")
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelConfig(DictConfig):
    name: str = "bl2"  # short name of the variant
    head: str = "dense"  # "gap": global average pooling (BL1); "dense": flatten + linear (BL2)
    context: int = 42  # audio snippet length in frames (42, 84 or 168)
    attention: bool = False  # soft attention over the audio frames
    channels: list = field(default_factory=lambda: [24, 48, 96, 96])  # VGG block widths
    embed_dim: int = 32  # embedding size
    cca: bool = True  # CCA layer before the L2 normalisation
    cca_train: bool = False  # True: the batch's CCA projection is part of the training forward pass
    # (reference design); False: training ranks the plain embeddings and the CCA statistics are
    # fitted after training (kept only if they help on validation) — learns several times faster here
    cca_eps: float = 1e-3  # CCA covariance regularisation
    cca_momentum: float = 0.05  # running-statistics momentum during training
    cca_power: float = 0.0  # canonical dimensions scaled by (canonical correlation)^p: 0 = plain
    # whitened CCA (reference); p > 0 lowers the weight of weakly correlated dimensions in the cosine
    # similarity (chosen on validation when the statistics are fitted after training)
    sheet_shape: list = field(default_factory=lambda: [80, 100])  # sheet snippet (H, W)
    audio_bins: int = 92  # spectrogram bins
    margin: float = 0.7  # ranking-loss margin
    symmetric: bool = False  # ranking loss in both directions



CONFIG_NAMES = ("bl1", "bl2", "bl2_att84", "bl2_att168", "bl2_cca_in_training", "passage_gru")


def config_from_dict(d: dict):
    """A ``ModelConfig``, or a ``PassageConfig`` for a dict with ``"kind": "passage"``."""
    if d.get("kind") == "passage":
        from .passage_model import PassageConfig

        return PassageConfig.from_dict(d)
    return ModelConfig.from_dict(d)


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


def _block(c_in: int, c_out: int) -> nn.Sequential:
    layers = []
    for c in (c_in, c_out):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ELU()]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class Pathway(nn.Module):
    """VGG-style encoder: 4 × (2 × conv-BN-ELU + max-pool), conv 1×1 → embed_dim, BN, GAP or dense."""

    def __init__(self, in_shape: tuple[int, int], cfg: ModelConfig):
        super().__init__()
        chans = [1] + list(cfg.channels)
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.project = nn.Sequential(nn.Conv2d(chans[-1], cfg.embed_dim, 1, bias=False),
                                     nn.BatchNorm2d(cfg.embed_dim))
        h, w = in_shape
        for _ in cfg.channels:
            h, w = h // 2, w // 2
        self.head = cfg.head
        if cfg.head == "dense":
            self.dense = nn.Linear(cfg.embed_dim * h * w, cfg.embed_dim)
        elif cfg.head != "gap":
            raise ValueError(f"unknown head '{cfg.head}' (gap or dense)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(self.features(x))
        if self.head == "gap":
            return x.mean(dim=(2, 3))
        return self.dense(x.flatten(1))


class FrameAttention(nn.Module):
    """Soft attention over spectrogram frames: a small CNN → T logits → softmax; frames × T·weight."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        chans = [1] + list(cfg.channels[:3])
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.logits = nn.Conv2d(chans[-1], cfg.context, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(self.features(x)).mean(dim=(2, 3)).float(), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)  # (B, T)
        return x * (w * x.shape[-1]).to(x.dtype)[:, None, None, :]


class CCALayer(nn.Module):
    """Canonical correlation projection of two views, learned inside the network.

    Training: the projection is computed from the batch (gradients flow through it) and running
    means and covariances are updated. Inference: the projection comes from the running statistics
    (or from ``fit`` on many pairs after training).
    """

    def __init__(self, dim: int, eps: float = 1e-3, momentum: float = 0.05, power: float = 0.0):
        super().__init__()
        self.eps, self.momentum, self.power = eps, momentum, float(power)
        self.register_buffer("mean_a", torch.zeros(dim))
        self.register_buffer("mean_s", torch.zeros(dim))
        self.register_buffer("cov_aa", torch.eye(dim))
        self.register_buffer("cov_ss", torch.eye(dim))
        self.register_buffer("cov_as", torch.zeros(dim, dim))

    @staticmethod
    def _inv_sqrt(c: torch.Tensor) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(c)
        return vecs @ torch.diag(vals.clamp_min(1e-8).rsqrt()) @ vecs.T

    def projections(self, mean_a, mean_s, cov_aa, cov_ss, cov_as):
        eye = torch.eye(cov_aa.shape[0], dtype=cov_aa.dtype, device=cov_aa.device)
        wa, ws = self._inv_sqrt(cov_aa + self.eps * eye), self._inv_sqrt(cov_ss + self.eps * eye)
        u, rho, vh = torch.linalg.svd(wa @ cov_as @ ws)  # rho: canonical correlations, descending
        if self.power:
            w = rho.clamp_min(0) ** self.power
            return (wa @ u) * w, (ws @ vh.T) * w
        return wa @ u, ws @ vh.T

    @staticmethod
    def statistics(a: torch.Tensor, s: torch.Tensor):
        n = a.shape[0]
        ma, ms = a.mean(0), s.mean(0)
        ac, sc = a - ma, s - ms
        return ma, ms, ac.T @ ac / (n - 1), sc.T @ sc / (n - 1), ac.T @ sc / (n - 1)

    def forward(self, a: torch.Tensor, s: torch.Tensor):
        with torch.autocast(a.device.type, enabled=False):  # eigh/svd need full precision
            return self._forward(a.float(), s.float())

    def _forward(self, a: torch.Tensor, s: torch.Tensor):
        if self.training:
            stats = self.statistics(a, s)
            with torch.no_grad():
                for buf, v in zip((self.mean_a, self.mean_s, self.cov_aa, self.cov_ss, self.cov_as), stats):
                    buf.mul_(1 - self.momentum).add_(self.momentum * v.detach())
        else:
            stats = (self.mean_a, self.mean_s, self.cov_aa, self.cov_ss, self.cov_as)
        pa, ps = self.projections(*stats)
        return (a - stats[0]) @ pa, (s - stats[1]) @ ps

    def project_audio(self, a: torch.Tensor) -> torch.Tensor:
        with torch.autocast(a.device.type, enabled=False):
            pa, _ = self.projections(self.mean_a, self.mean_s, self.cov_aa, self.cov_ss, self.cov_as)
            return (a.float() - self.mean_a) @ pa

    def project_sheet(self, s: torch.Tensor) -> torch.Tensor:
        with torch.autocast(s.device.type, enabled=False):
            _, ps = self.projections(self.mean_a, self.mean_s, self.cov_aa, self.cov_ss, self.cov_as)
            return (s.float() - self.mean_s) @ ps

    @torch.no_grad()
    def fit(self, a: torch.Tensor, s: torch.Tensor) -> None:
        """Set the statistics from many pairs at once (re-estimation after training)."""
        for buf, v in zip((self.mean_a, self.mean_s, self.cov_aa, self.cov_ss, self.cov_as),
                          self.statistics(a.float(), s.float())):
            buf.copy_(v)


class SnippetModel(nn.Module):
    """Audio and sheet snippets → L2-normalised embeddings in one space."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.sheet_net = Pathway(tuple(cfg.sheet_shape), cfg)
        self.audio_net = Pathway((cfg.audio_bins, cfg.context), cfg)
        self.attention = FrameAttention(cfg) if cfg.attention else None
        self.cca = CCALayer(cfg.embed_dim, cfg.cca_eps, cfg.cca_momentum, cfg.cca_power) if cfg.cca else None

    def _audio_raw(self, audio: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            audio = self.attention(audio)
        return self.audio_net(audio)

    def forward(self, sheet: torch.Tensor, audio: torch.Tensor):
        """(sheet (B,1,80,100), audio (B,1,92,T)) → (sheet embeddings, audio embeddings), normalised.

        In training mode the CCA layer is used only with ``cca_train``."""
        s, a = self.sheet_net(sheet), self._audio_raw(audio)
        if self.cca is not None and (self.config.cca_train or not self.training):
            a, s = self.cca(a, s)
        return F.normalize(s.float(), dim=1), F.normalize(a.float(), dim=1)

    def embed_sheet(self, sheet: torch.Tensor) -> torch.Tensor:
        s = self.sheet_net(sheet)
        if self.cca is not None:
            s = self.cca.project_sheet(s)
        return F.normalize(s.float(), dim=1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        a = self._audio_raw(audio)
        if self.cca is not None:
            a = self.cca.project_audio(a)
        return F.normalize(a.float(), dim=1)

    def for_inference(self) -> "SnippetModel":
        """A copy in eval mode with every batch norm folded into its convolution and channels-last
        weights: same embeddings, fewer passes over memory (used for indexing and queries)."""
        import copy

        from torch.nn.utils.fusion import fuse_conv_bn_eval

        m = copy.deepcopy(self).eval()
        for seq in [mod for mod in m.modules() if isinstance(mod, nn.Sequential)]:
            items = list(seq)
            for i in range(len(items) - 1):
                if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(items[i], items[i + 1])
                    seq[i + 1] = nn.Identity()
        for mod in m.modules():
            if isinstance(mod, nn.ELU):
                mod.inplace = True  # no autograd in inference
        return m.to(memory_format=torch.channels_last)

    def raw(self, sheet: torch.Tensor, audio: torch.Tensor):
        """Pre-CCA embeddings (for re-estimating the CCA statistics)."""
        return self.sheet_net(sheet), self._audio_raw(audio)


def ranking_loss(sheet: torch.Tensor, audio: torch.Tensor, margin: float = 0.7,
                 symmetric: bool = False) -> torch.Tensor:
    """Pairwise ranking hinge on cosine similarity; every other batch item is a negative.

    Anchors are audio snippets (their sheet partner must beat every other sheet by ``margin``);
    ``symmetric`` adds sheet anchors. Inputs are L2-normalised (B, d) embeddings, pairs row by row.
    """
    sim = audio.float() @ sheet.float().T  # (B, B): audio i vs sheet j
    pos = sim.diagonal()
    off = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    loss = F.relu(margin - pos[:, None] + sim)[off].mean()
    if symmetric:
        loss = 0.5 * (loss + F.relu(margin - pos[None, :] + sim)[off].mean())
    return loss


class ProjectionHead(nn.Module):
    """SimCLR projection head for pre-training one encoder (dropped afterwards):
    Linear(d → hidden) + BatchNorm + ReLU + Linear(hidden → out), L2-normalised."""

    def __init__(self, dim: int = 32, hidden: int = 512, out: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x.float()), dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR): row i of ``z1`` and of ``z2`` are two views of one snippet; each of the
    2B views must pick its partner among the other 2B − 1 by cosine similarity / temperature."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# ---------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file holding the weights and, in its metadata, the model config.

class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_checkpoint(model: SnippetModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` (weights + config, and ``extra`` metadata) atomically to a .safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {"config": json.dumps(model.config.to_dict()),
            "format": getattr(model, "format", "audiosheet-snippet-v1")}
    for k, v in (extra or {}).items():
        meta[k] = json.dumps(v)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    mask = os.umask(0)  # safetensors creates the file owner-only (0600); give it the usual mode
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    tmp.replace(path)
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
    return cfg, state, extra


def _load_state(model: nn.Module, state: dict, path, prefix: str = "") -> None:
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
    cfg, state, _ = read_checkpoint(path)
    if config is not None and config.to_dict() != cfg.to_dict():
        diff = [k for k, v in config.to_dict().items() if cfg.to_dict().get(k) != v]
        raise CheckpointError(f"{path}: checkpoint config '{cfg.name}' does not match the requested "
                              f"'{config.name}' (differs in {', '.join(diff)})")
    if getattr(cfg, "kind", None) == "passage":
        from .passage_model import PassageModel

        model = PassageModel(cfg)
    else:
        model = SnippetModel(cfg)
    _load_state(model, state, path)
    return model.eval()


def load_encoder(model: SnippetModel, path: str | Path, modality: str) -> None:
    """Initialise one pathway (``audio`` or ``sheet``) of ``model`` from a checkpoint's pathway.

    Reads the ``audio_net.*``/``attention.*`` or ``sheet_net.*`` weights of any audiosheet checkpoint
    (a snippet model or a pre-trained encoder); a pathway of another shape is a clear error.
    """
    if modality not in ("audio", "sheet"):
        raise ValueError(f"modality must be 'audio' or 'sheet', not {modality!r}")
    _, state, _ = read_checkpoint(path)
    prefixes = ("audio_net.", "attention.") if modality == "audio" else ("sheet_net.",)
    for prefix in prefixes:
        module = getattr(model, prefix[:-1])
        if module is None:
            continue
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise CheckpointError(f"{path}: checkpoint has no {prefix[:-1]} weights for the {modality} pathway")
        _load_state(module, sub, path, prefix)


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


def without_cca(model: SnippetModel) -> SnippetModel:
    """The same model with its CCA layer removed (config ``cca: false``)."""
    from dataclasses import replace

    cfg = replace(model.config, cca=False, cca_train=False)
    m = SnippetModel(cfg)
    m.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("cca.")})
    return m.train(model.training)
