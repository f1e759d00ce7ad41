"""The unmixing-guided spatial-spectral Mamba with clustering tokens (see docs/method.md).

``forward`` takes a batch of windows (B, bands, h, w), the masks of their valid pixels and
their positions in the scene, and returns class logits, abundances and reconstructions. Token
sequences are built per window from the window's own abundances, as mamba-ssm's blocks take
(B, L, D): windows of a batch share nothing but batch norm's statistics in training.
:class:`UnmixingNetwork` is the unmixing path alone (``hsimap unmix``), built from the same parts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hsimap.model.mamba import Mamba
from hsimap.model.precision import compute_dtype, conv, pointwise, sequential
from hsimap.model.tokens import cluster_sequences, token_budgets, unselected


@dataclass
class ModelConfig:
    """Hyper-parameters, stored in model.json. Names follow the method's notation."""

    bands: int
    classes: int
    endmembers: int = 8          # P
    variants: int = 10           # R
    hidden: int = 128            # D
    spectral_tokens: int = 4     # groups of D/4 channels per pixel
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    tokens: str = "cluster"      # "cluster" (the method) or "raster" (ablation)
    unmixing: bool = True        # False: ablation without unmixing guidance or losses
    token_ratio: float = 0.1
    min_tokens: int = 100
    mass_weight: float = 0.3
    area_weight: float = 0.7
    coord_period: int = 128      # coordinate encoding period, px (the training window)
    unselected_train_fraction: float = 0.3
    unselected_train_max: int = 10000

    def to_dict(self) -> dict:
        return asdict(self)


def conv3(c_in: int, c_out: int) -> nn.Conv2d:
    """3 x 3 convolution with replicate padding: a scene edge looks like its border pixels
    continuing, as in the interior of a window, rather than like a frame of zeros."""
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


def patch_embedding(bands: int, hidden: int) -> nn.Sequential:
    """3 x 3 conv bands -> D, batch norm, GELU: (B, bands, h, w) -> (B, D, h, w)."""
    return nn.Sequential(conv3(bands, hidden), nn.BatchNorm2d(hidden), nn.GELU())


@dataclass
class WindowOutput:
    logits: torch.Tensor        # (B, C, h, w)
    abundances: torch.Tensor    # (B, P, h, w), zero at invalid pixels
    reconstruction: torch.Tensor  # (B, bands, h, w)
    variant_weights: torch.Tensor  # (B, P, R, h, w)


def coordinate_encoding(row0: int, col0: int, h: int, w: int, period: int,
                        device: torch.device) -> torch.Tensor:
    """3-channel position code from scene coordinates (periodic in ``period`` pixels).

    The reference encodes a pixel's position within the whole image; hsimap works on windows,
    and a pixel must get the same code whichever window it falls in, so the code is a function
    of the pixel's scene row and column.
    """
    r = (torch.arange(row0, row0 + h, device=device, dtype=torch.float32) / period)[:, None]
    c = (torch.arange(col0, col0 + w, device=device, dtype=torch.float32) / period)[None, :]
    r, c = r.expand(h, w), c.expand(h, w)
    code = torch.stack([torch.sin(2 * math.pi * r), torch.cos(2 * math.pi * c),
                        torch.sin(math.pi * (r + c))])
    return code[None]


def _channel_mean(layer: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the 1 x 1 convolution whose one output is ``layer``'s outputs'
    mean."""
    return layer.weight.mean(0, keepdim=True), layer.bias.mean()[None]


class CoordinateGate(nn.Module):
    """Light linear attention, q + tanh(Q K) V, with a coordinate code in the query.

    ``mode="channel"``: K and V averaged over channels (pixel-local; feeds unmixing).
    ``mode="spatial"``: K averaged along rows, V along columns (feeds classification).
    """

    def __init__(self, channels: int, mode: str):
        super().__init__()
        self.mode = mode
        self.q_proj = nn.Conv2d(channels + 3, channels, 1)
        self.k_proj = nn.Conv2d(channels, channels, 1)
        self.v_proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # K and V are linear in x and then averaged: the average is taken first (of x, or of
        # the projection's rows), which is the same number and leaves one full-size product,
        # Q's, instead of three. Q's coordinate columns act on the 3-channel code alone.
        c, dtype = x.shape[1], compute_dtype(self)
        wq = self.q_proj.weight
        q = pointwise(x, wq[:, :c], self.q_proj.bias, dtype) + pointwise(coords, wq[:, c:], None)
        if self.mode == "channel":
            k = pointwise(x, *_channel_mean(self.k_proj))
            v = pointwise(x, *_channel_mean(self.v_proj))
        else:
            # Means over each window's valid pixels only; a row or column without any is 0.
            m = valid[:, None].to(x.dtype)
            xm = x * m
            rows, cols = m.sum(-1, keepdim=True), m.sum(-2, keepdim=True)
            k = conv(xm.sum(-1, keepdim=True) / rows.clamp_min(1), self.k_proj) * (rows > 0)
            v = conv(xm.sum(-2, keepdim=True) / cols.clamp_min(1), self.v_proj) * (cols > 0)
        if torch.is_grad_enabled():
            return x + torch.tanh(q * k) * v
        # Prediction: q is this call's own tensor; working in it spares three window-sized
        # allocations (on the CPU, fresh pages cost more than the arithmetic).
        return q.mul_(k).tanh_().mul_(v).add_(x)


class UnmixingBranch(nn.Module):
    """Abundance encoder and endmember bank with per-pixel variant weights."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, p, r = cfg.hidden, cfg.endmembers, cfg.variants
        self.encoder = nn.Sequential(
            nn.Conv2d(d, d // 2, 1), nn.BatchNorm2d(d // 2), nn.ReLU(),
            nn.Conv2d(d // 2, d // 4, 1), nn.BatchNorm2d(d // 4), nn.ReLU(),
            nn.Conv2d(d // 4, p, 1),
        )
        # P x R x B: R variants of each endmember, all starting from the VCA spectrum.
        self.endmembers = nn.Parameter(torch.rand(p, r, cfg.bands) * 0.5)
        self.variant_head = nn.Conv2d(p, p * r, 1)

    def init_endmembers(self, spectra: torch.Tensor) -> None:
        with torch.no_grad():
            self.endmembers.copy_(spectra[:, None, :].expand_as(self.endmembers))

    def mean_endmembers(self) -> torch.Tensor:
        return self.endmembers.mean(dim=1)

    def forward(self, feat: torch.Tensor):
        z = sequential(self.encoder, feat)
        a = z.abs()
        a = a / (a.sum(dim=1, keepdim=True) + 1e-8)  # ANC and ASC
        b, p, h, w = a.shape
        weights = torch.softmax(conv(z, self.variant_head).view(b, p, -1, h, w), dim=2)
        recon = torch.einsum("bprhw,prc->bchw", weights * a[:, :, None], self.endmembers)
        return a, weights, recon


class ClusterMamba(nn.Module):
    """One Mamba per cluster over its token sequence, a shared one for unselected pixels.

    Used along space (tokens are pixels, width D) and along the spectrum (each pixel is a
    sequence of ``spectral_tokens`` tokens of width D / spectral_tokens).
    """

    def __init__(self, cfg: ModelConfig, width: int, spectral: bool):
        super().__init__()
        self.spectral = spectral
        self.groups = cfg.spectral_tokens
        token = width // self.groups if spectral else width
        mk = lambda: Mamba(token, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand)  # noqa: E731
        self.cluster_mamba = nn.ModuleList(mk() for _ in range(cfg.endmembers))
        self.shared_mamba = mk()
        self.norm = nn.BatchNorm1d(width)
        # Whether every block's scan goes in one Triton launch (:meth:`_run_packed`). None: on
        # a GPU where the blocks are hsimap's (not mamba-ssm's) and Triton imports. True runs
        # it anywhere: the tests run it on the CPU in Triton's interpreter.
        self.packed: bool | None = None

    def _run(self, mamba: nn.Module, xs: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """``mamba`` over sequences laid end to end in ``xs`` (K, D), one of each length in
        ``lengths`` (one per window); returns the (K, D) outputs in the same order."""
        if self.spectral:  # every pixel is its own short sequence along the spectrum
            n, d = xs.shape
            return mamba(xs.view(n, self.groups, d // self.groups)).reshape(n, d)
        if len(lengths) == 1:  # one window's pixels form one sequence
            return mamba(xs[None])[0]
        # Several windows: one batch, each sequence right-padded to the longest. The block is
        # causal, so padding after a sequence's end changes none of its outputs.
        sizes = torch.tensor(lengths, device=xs.device)
        filled = torch.arange(int(sizes.max()), device=xs.device)[None] < sizes[:, None]
        table = torch.zeros(filled.shape, dtype=torch.long, device=xs.device)
        table[filled] = torch.arange(xs.shape[0], device=xs.device)
        return mamba(xs[table])[filled]

    def _packs(self, x: torch.Tensor) -> bool:
        if self.packed is not None:
            return self.packed
        if x.device.type != "cuda":
            return False
        if not all(isinstance(m, Mamba) and m.scan == "fused"
                   for m in [*self.cluster_mamba, self.shared_mamba]):
            return False   # mamba-ssm's blocks (use_cuda_kernels), or the reference scan
        # Imported here: triton costs ~100 MB of RSS, which a CPU run should not pay.
        from hsimap.model import triton_scan
        return triton_scan.available()

    def _run_packed(self, runs: list[tuple[Mamba, torch.Tensor, list[int]]],
                    tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What :meth:`_run` returns for every run, with one scan launch for all of them.

        A GPU is idle when each cluster's few long sequences (or many four-token ones) get a
        launch of their own: the projections stay per block, the scans of all blocks and
        windows go to :func:`hsimap.model.triton_scan.packed_scan` at once, unpadded.
        """
        from hsimap.model.triton_scan import packed_scan, positions

        inputs, lengths = [], []
        for (mamba, _, sizes), xs in zip(runs, tokens, strict=True):
            if self.spectral:   # each pixel a sequence of `groups` tokens
                rows = xs.reshape(-1, xs.shape[1] // self.groups)
                lens = np.full(xs.shape[0], self.groups, dtype=np.int64)
            else:
                rows, lens = xs, np.asarray(sizes, dtype=np.int64)
            pos = torch.from_numpy(positions(lens)).to(xs.device)
            inputs.append(mamba.scan_inputs(rows, pos))
            lengths.append(lens)
        cat = [torch.cat([part[i] for part in inputs]) for i in range(4)]  # u, delta, B, C
        weights = [m.scan_weights() for m, _, _ in runs]
        A = torch.stack([a for a, _ in weights])                           # noqa: N806
        D = torch.stack([d for _, d in weights])                           # noqa: N806
        y = packed_scan(*cat[:2], A, *cat[2:], D, lengths)
        outs = []
        for (mamba, _, _), part, ys, xs in zip(runs, inputs, y.split([len(p[0]) for p in inputs]),
                                              tokens, strict=True):
            outs.append(mamba.scan_output(ys, part[4]).reshape(xs.shape))
        return outs

    def forward(self, x: torch.Tensor, sequences: list[list[torch.Tensor]],
                rest: list[torch.Tensor], keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (N, width) features of the valid pixels of all windows of the batch.
        ``sequences[p][b]``: cluster p's sequence in window b; ``rest[b]``: window b's
        unselected pixels (indices into x). ``keep``: (N,) bool, pixels whose output is
        needed (spectral branch in training); the others are neither computed nor returned.

        Returns:
            ``(out, None)`` with out (N, width); or, with ``keep``, ``(out, idx)``: out
            (K, width) for the K kept pixels, whose indices into x are idx (K,).
        """
        # In place: index_add (not index_add_) would copy the (N, width) sum once per cluster.
        # Differentiable all the same: the backward of a scatter-add into `out` reads no
        # value of `out`.
        out = torch.zeros_like(x)
        if keep is not None:
            sequences = [[s[keep[s]] for s in seqs] for seqs in sequences]
            rest = [r[keep[r]] for r in rest]
        runs = []   # (mamba, indices into x, one sequence length per window)
        for mamba, seqs in zip([*self.cluster_mamba, self.shared_mamba], [*sequences, rest],
                               strict=True):
            seqs = [s for s in seqs if s.numel()]
            if seqs:
                runs.append((mamba, seqs[0] if len(seqs) == 1 else torch.cat(seqs),
                             [s.numel() for s in seqs]))
        if runs:
            # Every block's tokens in one gather: in training its backward is one index_add
            # into x's gradient, where a gather per block filled and added an (N, D) buffer
            # each. index_select, not x[...]: a pixel sits in several sequences, and indexing's
            # backward accumulates repeated rows in no fixed order on several threads.
            gathered = x.index_select(0, torch.cat([idx for _, idx, _ in runs]))
            tokens = gathered.split([len(r[1]) for r in runs])
            if self._packs(x):
                outs = self._run_packed(runs, tokens)
            else:
                outs = [self._run(mamba, xs, lengths)
                        for (mamba, _, lengths), xs in zip(runs, tokens, strict=True)]
            for (_, idx, _), y in zip(runs, outs, strict=True):
                out.index_add_(0, idx, y)
        if keep is not None:
            idx = torch.nonzero(keep).squeeze(1)
            y = out[idx] + x[idx]
            return F.gelu(self.norm(y)) + x[idx], idx
        y = out + x
        return F.gelu(self.norm(y)) + x, None


def _per_window(t: torch.Tensor | None, b: int) -> torch.Tensor | None:
    """An (h, w) mask given for a batch of one as (1, h, w)."""
    if t is None or t.dim() == 3:
        return t
    if b != 1:
        raise ValueError(f"a batch of {b} windows needs (B, h, w) masks, got {tuple(t.shape)}")
    return t[None]


def _origins(origin: tuple[int, int] | Sequence[tuple[int, int]], b: int) -> list[tuple[int, int]]:
    """One (row, col) per window; a single pair serves a batch of one."""
    if len(origin) == 2 and all(isinstance(v, (int, np.integer)) for v in origin):
        return [(int(origin[0]), int(origin[1]))] * b
    out = [(int(r), int(c)) for r, c in origin]
    if len(out) != b:
        raise ValueError(f"{len(out)} origins for a batch of {b} windows")
    return out


class UnmixingGuidedMamba(nn.Module):
    """The whole model. See :class:`ModelConfig` for its hyper-parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.hidden, cfg.endmembers
        if d % 4 or d % cfg.spectral_tokens:
            raise ValueError(f"hidden width {d} must be divisible by 4 and by the "
                             f"{cfg.spectral_tokens} spectral tokens")
        self.patch_embedding = patch_embedding(cfg.bands, d)
        self.unmixing_gate = CoordinateGate(d, "channel")
        self.classification_gate = CoordinateGate(d, "spatial")
        self.unmixing = UnmixingBranch(cfg)
        self.spatial = ClusterMamba(cfg, d, spectral=False)
        self.spectral = ClusterMamba(cfg, d, spectral=True)
        self.fusion_weights = nn.Parameter(torch.ones(2) / 2)
        self.fusion = nn.Conv2d(d, d, 1)
        self.abundance_features = nn.Sequential(conv3(p, p), nn.BatchNorm2d(p), nn.ReLU())
        self.head = conv3(d + p, cfg.classes)

    def select_tokens(self, a_valid: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One window's sequences per cluster and its unselected pixels (indices into its
        valid pixels), from its abundances a_valid (P, N)."""
        n = a_valid.shape[1]
        if self.cfg.tokens == "raster" or not self.cfg.unmixing:
            # Ablation: no clustering, every pixel in raster order through the shared Mamba.
            empty = a_valid.new_zeros(0, dtype=torch.long)
            return [empty] * self.cfg.endmembers, torch.arange(n, device=a_valid.device)
        budgets = token_budgets(a_valid, ratio=self.cfg.token_ratio,
                                min_tokens=self.cfg.min_tokens, mass_weight=self.cfg.mass_weight,
                                area_weight=self.cfg.area_weight)
        seqs = cluster_sequences(a_valid, budgets)
        return seqs, unselected(n, seqs).to(a_valid.device)

    def subsample_unselected(self, rest: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The reference feeds a random 30% (at most 10,000) of unselected pixels to the shared
        spatial Mamba; hsimap does so in training only, so that inference is deterministic."""
        if not rest.numel():
            return rest
        k = max(1, min(int(rest.numel() * self.cfg.unselected_train_fraction),
                       self.cfg.unselected_train_max))
        pick = torch.randperm(rest.numel(), generator=generator)[:k].sort().values
        return rest[pick.to(rest.device)]

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                origin: tuple[int, int] | Sequence[tuple[int, int]] = (0, 0), *,
                need: torch.Tensor | None = None, teacher: torch.Tensor | None = None,
                teacher_weight: float | torch.Tensor = 0.0,
                generator: torch.Generator | None = None) -> WindowOutput:
        """Run a batch of B windows of one size.

        Each window is its own scene part: its tokens are chosen from its own abundances and
        its gates average over it alone, so a batch gives every window what it would get
        alone (up to float rounding; batch norm in training mode pools the batch).

        Args:
            x: (B, bands, h, w) scaled reflectance, zeros at invalid pixels.
            valid: (B, h, w) bool, pixels with data ((h, w) for B = 1).
            origin: each window's top-left (row, col) in the scene (coordinate code); one
                pair for B = 1.
            need: (B, h, w) bool, pixels whose logits are needed (training); the spectral
                branch runs on them and their 3 x 3 neighbours only (the head is a 3 x 3 conv).
            teacher: (B, P, h, w) moving average of each window's past abundances (training);
                tokens are picked from (1 - w) * A + w * teacher, w = ``teacher_weight``
                (a number, or (B,) per window: 0 where a window has no average yet).
            generator: random source for training-time subsampling of unselected pixels.
        """
        b, _, h, w = x.shape                                                 # x: (B, C, h, w)
        valid, need = _per_window(valid, b), _per_window(need, b)            # (B, h, w)
        coords = torch.cat([coordinate_encoding(r, c, h, w, self.cfg.coord_period, x.device)
                            for r, c in _origins(origin, b)])                # (B, 3, h, w)
        features = sequential(self.patch_embedding, x)                       # (B, D, h, w)
        unmixing_features = self.unmixing_gate(features, coords, valid)      # (B, D, h, w)
        class_features = self.classification_gate(features, coords, valid)  # (B, D, h, w)
        abundances, weights, recon = self.unmixing(unmixing_features)
        # abundances (B, P, h, w), variant weights (B, P, R, h, w), recon (B, bands, h, w)
        mask = valid[:, None].to(abundances.dtype)                           # (B, 1, h, w)
        abundances = abundances * mask
        guide = self._token_abundances(abundances, mask, teacher, teacher_weight)

        # Valid pixels of all windows, as one list: window k's are pixels[starts[k]:...].
        flat = valid.reshape(b, -1)
        pixels = torch.nonzero(flat.reshape(-1)).squeeze(1)                  # (N,)
        counts = flat.sum(1).tolist()
        sequences: list[list[torch.Tensor]] = [[] for _ in range(self.cfg.endmembers)]
        rest: list[torch.Tensor] = []
        start = 0
        for k in range(b):
            local = pixels[start:start + counts[k]] - k * h * w
            seqs, r = self.select_tokens(guide[k].reshape(guide.shape[1], -1)[:, local])
            for p, s in enumerate(seqs):
                sequences[p].append(s + start)
            rest.append(r + start)
            start += counts[k]
        d = class_features.shape[1]
        tokens = class_features.permute(0, 2, 3, 1).reshape(-1, d)[pixels]    # (N, D)
        mixed = self._spatial_spectral(tokens, sequences, rest, pixels, need, generator)

        fused = class_features.new_zeros(b * h * w, d).index_copy(0, pixels, mixed)
        fused = fused.view(b, h, w, d).permute(0, 3, 1, 2).contiguous()      # (B, D, h, w)
        fused = conv(fused, self.fusion) + class_features * mask
        logits = conv(torch.cat([sequential(self.abundance_features, abundances), fused], dim=1),
                      self.head)
        return WindowOutput(logits, abundances, recon, weights)             # logits (B, C, h, w)

    @staticmethod
    def _token_abundances(abundances: torch.Tensor, mask: torch.Tensor,
                          teacher: torch.Tensor | None,
                          weight: float | torch.Tensor) -> torch.Tensor:
        """The abundances that pick tokens: in training, mixed with the moving average of the
        window's past abundances (the reference's temporal ensemble), renormalised."""
        if teacher is None:
            return abundances
        wt = torch.as_tensor(weight, dtype=abundances.dtype, device=abundances.device)
        if not bool((wt > 0).any()):
            return abundances
        wt = wt.reshape(-1, 1, 1, 1)
        mixed = (1 - wt) * abundances + wt * teacher * mask
        mixed = mixed / (mixed.sum(dim=1, keepdim=True) + 1e-8)
        return torch.where(wt > 0, mixed, abundances)

    def _spatial_spectral(self, tokens: torch.Tensor, sequences: list[list[torch.Tensor]],
                          rest: list[torch.Tensor], pixels: torch.Tensor,
                          need: torch.Tensor | None,
                          generator: torch.Generator | None) -> torch.Tensor:
        """Both Mamba branches over the valid pixels' tokens (N, D), fused by softmax weights.

        In training the spatial branch sees a random part of the unselected pixels and the
        spectral branch runs only where logits are needed (and their 3 x 3 neighbours)."""
        spatial_rest = rest
        if self.training and generator is not None:
            spatial_rest = [self.subsample_unselected(r, generator) for r in rest]
        spatial, _ = self.spatial(tokens, sequences, spatial_rest)          # (N, D)
        keep = None
        if need is not None:
            grown = F.max_pool2d(need[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
            keep = grown.reshape(-1)[pixels]                                 # (N,) bool
        values, kept = self.spectral(tokens, sequences, rest, keep)          # (N or K, D)
        spectral = values if kept is None else \
            torch.zeros_like(spatial).index_copy(0, kept, values)           # (N, D)
        w = torch.softmax(self.fusion_weights, dim=0)
        return w[0] * spatial + w[1] * spectral


class UnmixingNetwork(nn.Module):
    """The classifier's unmixing path on its own: embedding, gate, encoder, endmember bank.

    Its parameters carry the classifier's names (``patch_embedding``, ``unmixing_gate``,
    ``unmixing``), so the two share code and checkpoints' layout.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = patch_embedding(cfg.bands, cfg.hidden)
        self.unmixing_gate = CoordinateGate(cfg.hidden, "channel")
        self.unmixing = UnmixingBranch(cfg)

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                origin: tuple[int, int] | Sequence[tuple[int, int]] = (0, 0)
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, bands, h, w) -> abundances (B, P, h, w), zero at invalid pixels, and the
        reconstruction (B, bands, h, w); ``valid`` and ``origin`` as for
        :class:`UnmixingGuidedMamba`."""
        b, _, h, w = x.shape
        valid = _per_window(valid, b)                                        # (B, h, w)
        coords = torch.cat([coordinate_encoding(r, c, h, w, self.cfg.coord_period, x.device)
                            for r, c in _origins(origin, b)])                # (B, 3, h, w)
        features = self.unmixing_gate(sequential(self.patch_embedding, x), coords, valid)
        a, _, recon = self.unmixing(features)
        return a * valid[:, None].to(a.dtype), recon
