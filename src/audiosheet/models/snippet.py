"""Cross-modal snippet model: two VGG-style encoders into one 32-d space (Dorfer et al. 2018),
optional soft attention over the audio frames (Balke et al. 2019), a CCA layer and L2 norm.

Plain ``nn.Module``s; every hyperparameter lives in ``ModelConfig`` and travels with the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from audiosheet.geometry import FrontEnd
from audiosheet.models.config import ModelConfig


def autocast(enabled: bool = True):
    """bfloat16 autocast on the CPU (a no-op context with ``enabled`` False): the precision the
    convolutions of training, pre-training and inference run at."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


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
        self.front_end = FrontEnd()  # replaced by the checkpoint's record or the training corpus's
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


# ---------------------------------------------------------------------------------------------
# Checkpoints: one safetensors file holding the weights and, in its metadata, the model config.


def without_cca(model: SnippetModel) -> SnippetModel:
    """The same model with its CCA layer removed (config ``cca: false``)."""
    from dataclasses import replace

    cfg = replace(model.config, cca=False, cca_train=False)
    m = SnippetModel(cfg)
    m.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("cca.")})
    return m.train(model.training)
