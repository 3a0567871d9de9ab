"""An audio classifier on an MAE-AST encoder: the SSAST / MAE-AST fine-tuning model.

    waveforms -> extract (the one road, every token kept) -> encoder output tokens
              -> mean over the clip's own tokens -> LayerNorm -> Linear -> logits

The backbone is an :class:`MAEAST` without its decoder, so a fine-tuned checkpoint's encoder
weights keep the pre-training names under ``backbone.`` and the head sits under ``head.``.
A clip's logits never depend on what else is in its batch (in eval mode): the extractor
encodes each clip's real tokens only and the mean counts them only.
"""
import dataclasses
from typing import Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from .config import MAEASTConfig
from .extractor import extract
from .model import MAEAST


class MAEASTClassifier(nn.Module):
    def __init__(self, encoder_cfg: MAEASTConfig, num_classes: int, feature_dim: int = 128,
                 head_dropout: float = 0.0, freeze_encoder: bool = False):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"a classifier needs at least one class, got num_classes={num_classes}")
        # the decoder is dropped: build the smallest one, whatever the decoder settings say
        # (a checkpoint's cfg may carry a pre-training decoder of another width)
        encoder_cfg = dataclasses.replace(encoder_cfg, decoder_layers=0, use_post_enc_proj=False, dec_sine_pos=False,
                                          decoder_embed_dim=encoder_cfg.encoder_embed_dim)
        self.backbone = MAEAST(encoder_cfg, feature_dim).remove_decoder()
        # SSAST fine-tunes on fixed dataset statistics; normalising with the running ones (still
        # updated in training) keeps every clip's logits independent of its batch
        self.backbone.normalise_with_running_stats = True
        dim = encoder_cfg.encoder_embed_dim
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.backbone.requires_grad_(False)
        # kept for the original's checkpoint layout, never used by the encoder: out of the optimizer
        self.backbone.encoder_mask_emb.requires_grad_(False)
        self.backbone.layer_norm.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:  # a frozen encoder is a fixed feature extractor: BatchNorm, dropout off
            self.backbone.eval()
        return self

    def embed(self, wavs: Union[torch.Tensor, Sequence[torch.Tensor]], lengths: Optional[torch.Tensor] = None,
              augment: Optional[Callable] = None, precision: str = "fp32") -> torch.Tensor:
        """(B, N) waveforms at 16 kHz (``lengths``: real samples of each), or a list of 1-D
        waveforms -> (B, D), the mean of the encoder output over each clip's own tokens."""
        last = len(self.backbone.encoder.layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out = extract(self.backbone, wavs, lengths, layers=(last,), precision=precision, augment=augment)
        frames, steps = out.output, out.steps  # (B, T, n_freq * D), zeros past steps; (B,)
        pooled = frames.sum(1) / steps.clamp_min(1).unsqueeze(1).to(frames.dtype)
        return pooled.view(pooled.size(0), self.backbone.n_freq, -1).mean(1)  # mean over frequency patches

    def forward(self, wavs: Union[torch.Tensor, Sequence[torch.Tensor]], lengths: Optional[torch.Tensor] = None,
                augment: Optional[Callable] = None, precision: str = "fp32") -> torch.Tensor:
        """(B, N) waveforms, or a list of 1-D ones -> (B, num_classes) logits."""
        return self.head(self.head_dropout(self.embed(wavs, lengths, augment, precision)))

    @torch.no_grad()
    def predict(self, wavs: Sequence[torch.Tensor], window_samples: int, sigmoid: bool,
                batch_size: int = 16, precision: str = "fp32") -> torch.Tensor:
        """Class probabilities of clips of any length: each clip is cut into windows of
        ``window_samples`` (the length it was fine-tuned on), every window is classified, and
        the window probabilities are averaged weighted by their length. ``sigmoid`` for models
        trained with binary cross-entropy, else softmax. -> (n, num_classes)."""
        pieces, owner, weight = [], [], []
        for i, wav in enumerate(wavs):
            wav = torch.as_tensor(wav, dtype=torch.float32).reshape(-1)
            for start in range(0, max(len(wav), 1), window_samples):
                piece = wav[start:start + window_samples]
                pieces.append(piece)
                owner.append(i)
                weight.append(max(len(piece), 1))
        order = sorted(range(len(pieces)), key=lambda k: len(pieces[k]))  # similar lengths batch well
        probs = torch.zeros(len(pieces), self.head[-1].out_features)
        for first in range(0, len(order), batch_size):
            chosen = order[first:first + batch_size]
            logits = self([pieces[k] for k in chosen], precision=precision)  # extract pads the list
            probs[chosen] = (logits.sigmoid() if sigmoid else logits.softmax(-1)).float().cpu()
        owner_t, weight_t = torch.tensor(owner), torch.tensor(weight, dtype=torch.float32)
        total = torch.zeros(len(wavs), probs.size(1)).index_add_(0, owner_t, probs * weight_t[:, None])
        return total / torch.zeros(len(wavs)).index_add_(0, owner_t, weight_t)[:, None]


def layer_of(name: str, num_layers: int, layer_norm_first: bool) -> int:
    """Depth of a classifier parameter for layer-wise learning-rate decay: 0 for what comes
    before the first encoder layer (patch projection; the encoder's LayerNorm in post-LN
    models, which it applies to the input), i + 1 for encoder layer i, ``num_layers + 1`` for
    what comes after (the encoder's final LayerNorm in pre-LN models, the head)."""
    parts = name.split(".")
    if parts[0] != "backbone":
        return num_layers + 1
    if parts[1:3] == ["encoder", "layers"]:
        return int(parts[3]) + 1
    if parts[1:3] == ["encoder", "layer_norm"] and layer_norm_first:
        return num_layers + 1
    return 0


def layer_lr_scales(model: MAEASTClassifier, decay: float) -> Dict[str, float]:
    """Learning-rate multiplier of each trainable parameter: ``decay ** (depth of the head -
    depth of the parameter)``, so the head learns at the full rate and each layer below at
    ``decay`` times the rate of the one above (BEiT-style layer-wise decay)."""
    layers, pre_ln = len(model.backbone.encoder.layers), model.backbone.cfg.layer_norm_first
    return {name: decay ** (layers + 1 - layer_of(name, layers, pre_ln))
            for name, p in model.named_parameters() if p.requires_grad}
