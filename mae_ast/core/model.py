"""The MAE-AST model in plain torch (no fairseq, no s3prl).

Spectrogram -> non-overlapping patches (tokens, time-major) -> linear projection +
sinusoidal positions -> encoder on the kept tokens only -> decoder on all tokens, masked
ones replaced by a learned embedding -> two linear heads on the masked tokens
(reconstruction and classification targets are the raw normalised patches).

Module and parameter names match the original release (``post_extract_proj``,
``batch_norm``, ``encoder.layers.N.self_attn.q_proj``, ``enc_sine_pos_embed.pe``, ...),
so ``state_dict``s interchange in both directions.
"""
import os
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MAEASTConfig, check_compatibility
from .features import SAMPLE_RATE, samples_for_frames
from .masking import MaskPlan, compute_mask
from .transformer import Dropout, TransformerEncoder, gather_tokens, sinusoidal_table, window_layout


def inference_precision(precision: Optional[str] = None) -> str:
    """The precision feature extraction runs in: ``precision``, else the environment variable
    ``MAE_AST_PRECISION`` (which reaches code that s3prl or heareval call), else ``fp32``.
    ``bf16`` runs the encoder under ``torch.autocast``."""
    precision = precision or os.environ.get("MAE_AST_PRECISION", "fp32")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
    return precision


class SinusoidalPositions(nn.Module):
    """Fixed table kept as a buffer named ``pe`` (the original's layout)."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def forward(self, num_tokens: int) -> torch.Tensor:
        if num_tokens > self.pe.size(1):
            raise ValueError(
                f"{num_tokens} tokens exceed model.max_token_length={self.pe.size(1)}; "
                "crop the input or raise max_token_length")
        return self.pe[:, :num_tokens]


class MAEAST(nn.Module):
    def __init__(self, cfg: MAEASTConfig, feature_dim: int = 128, mask_type: str = "random_mask"):
        super().__init__()
        check_compatibility(cfg)
        if cfg.decoder_embed_dim != cfg.encoder_embed_dim and not cfg.use_post_enc_proj:
            raise ValueError("decoder_embed_dim != encoder_embed_dim needs model.use_post_enc_proj=true")
        self.cfg, self.feature_dim, self.mask_type = cfg, feature_dim, mask_type
        self.kernel = (cfg.ast_kernel_size_time, cfg.ast_kernel_size_chan)
        self.stride = (cfg.ast_kernel_stride_time, cfg.ast_kernel_stride_chan)
        if feature_dim < self.kernel[1]:
            raise ValueError(f"ast_kernel_size_chan={self.kernel[1]} exceeds feature_dim={feature_dim}")
        self.n_freq = (feature_dim - self.kernel[1]) // self.stride[1] + 1
        patch_dim = self.kernel[0] * self.kernel[1]
        enc_dim, dec_dim = cfg.encoder_embed_dim, cfg.decoder_embed_dim

        self.batch_norm = nn.BatchNorm2d(1, affine=False)
        # pre-training normalises with the batch's statistics (the original); fine-tuning
        # (MAEASTClassifier) with the running ones, so no clip depends on its batch
        self.normalise_with_running_stats = False
        self.layer_norm = nn.LayerNorm(feature_dim)  # (compatibility) in the original, never used
        self.post_extract_proj = nn.Linear(patch_dim, enc_dim)
        self.dropout_input = Dropout(cfg.dropout_input)
        # (compatibility) the original writes it into masked slots that the encoder never sees
        self.encoder_mask_emb = nn.Parameter(torch.empty(enc_dim).uniform_())
        if cfg.enc_sine_pos:
            self.enc_sine_pos_embed = SinusoidalPositions(enc_dim, cfg.max_token_length)
        self.encoder = self._transformer(cfg.encoder_layers, enc_dim, cfg.encoder_layerdrop)
        if cfg.use_post_enc_proj:
            self.post_enc_proj = nn.Linear(enc_dim, dec_dim)
        self.decoder_mask_emb = nn.Parameter(torch.empty(dec_dim).uniform_())
        if cfg.dec_sine_pos:
            self.dec_sine_pos_embed = SinusoidalPositions(dec_dim, cfg.max_token_length)
        windows = window_layout(cfg.decoder_attention, cfg.decoder_layers, cfg.encoder_attention_heads, self.n_freq,
                                tuple(cfg.decoder_window), cfg.decoder_window_shift, tuple(cfg.decoder_head_windows))
        self.decoder = self._transformer(cfg.decoder_layers, dec_dim, cfg.decoder_layerdrop, windows)
        self.final_proj_reconstruction = nn.Linear(dec_dim, patch_dim)
        self.final_proj_classification = nn.Linear(dec_dim, patch_dim)

    @classmethod
    def from_pretrained(cls, path: str, decoder: bool = True) -> "MAEAST":
        """The model of a hub folder (``tools/export_checkpoint.py CKPT DIR --format hub``; no
        pickle) or of a checkpoint file, in eval mode; ``decoder=False`` keeps the encoder
        side only. ``model.cfg_task`` holds its task config (sample rate, features, masking)."""
        from .checkpoint import load_model  # here: checkpoint builds models of this class

        model, cfg_task = load_model(path, decoder=decoder)
        model.cfg_task = cfg_task
        return model.eval()

    def _transformer(self, layers, dim, layerdrop, windows=None):
        c = self.cfg
        return TransformerEncoder(
            layers, dim, c.encoder_ffn_embed_dim, c.encoder_attention_heads, c.dropout,
            c.attention_dropout, c.activation_dropout, c.activation_fn, c.layer_norm_first,
            layerdrop, c.checkpoint_activations, windows)

    # ---- tokens ---------------------------------------------------------------------------
    def normalise(self, source: torch.Tensor, frame_padding: Optional[torch.Tensor]) -> torch.Tensor:
        """Non-affine BatchNorm over all (valid) bins, times 0.5, as the original. In training,
        padding frames stay out of the batch statistics. With ``normalise_with_running_stats``
        (fine-tuning) training normalises with the running statistics as they were before the
        batch, then updates them: a clip's features never depend on what else is in its batch."""
        x = source.unsqueeze(1)  # (B, 1, F, C)
        bn = self.batch_norm
        if not self.training:
            return bn(x) * 0.5
        if self.normalise_with_running_stats:
            out = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * 0.5
            self._track_moments(*self._valid_moments(x, frame_padding))
            return out
        if frame_padding is None or not frame_padding.any():
            return bn(x) * 0.5
        mean, var, count = self._valid_moments(x, frame_padding)
        self._track_moments(mean.detach(), var.detach(), count)
        return (x - mean) / torch.sqrt(var + bn.eps) * 0.5

    @staticmethod
    def _valid_moments(x, frame_padding):
        """Mean and (biased) variance over the non-padding frames of (B, 1, F, C), and their count."""
        valid = torch.ones_like(x[:, :, :, :1]) if frame_padding is None else (~frame_padding)[:, None, :, None].to(x.dtype)
        count = valid.sum() * x.size(-1)
        mean = (x * valid).sum() / count
        return mean, ((x - mean).pow(2) * valid).sum() / count, count

    @torch.no_grad()
    def _track_moments(self, mean, var, count):
        """Update the running statistics as BatchNorm does (unbiased variance)."""
        bn = self.batch_norm
        m = bn.momentum if bn.momentum is not None else 0.1
        bn.running_mean.mul_(1 - m).add_(m * mean.detach())
        bn.running_var.mul_(1 - m).add_(m * var.detach() * count / (count - 1).clamp_min(1))
        bn.num_batches_tracked.add_(1)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, C) -> (B, T, kt * kc) tokens, time-major (token = t_block * n_freq + f_block)."""
        return F.unfold(x, kernel_size=self.kernel, stride=self.stride).transpose(1, 2)

    def token_padding(self, frame_padding: Optional[torch.Tensor], num_tokens: int) -> Optional[torch.Tensor]:
        """A token whose patch reaches into padding frames is padding. None stays None."""
        if frame_padding is None:
            return None
        valid_frames = (~frame_padding).sum(1, keepdim=True)
        t_block = torch.arange(num_tokens, device=frame_padding.device) // self.n_freq
        return t_block.unsqueeze(0) * self.stride[0] + self.kernel[0] > valid_frames

    def time_steps(self, frames: int) -> int:
        """Token time steps (of ``n_freq`` tokens each) in ``frames`` fbank frames."""
        return (frames - self.kernel[0]) // self.stride[0] + 1

    def min_samples(self, sample_rate: int = SAMPLE_RATE) -> int:
        """Fewest waveform samples that give one token (shorter input is zero-padded to it)."""
        return samples_for_frames(self.kernel[0], sample_rate)

    def grid(self, num_tokens: int):
        return (num_tokens // self.n_freq, self.n_freq)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                mask: bool = True, features_only: bool = False,
                output_layer: Optional[int] = None, mask_plan: Optional[MaskPlan] = None,
                masks_per_clip: int = 1, **unused) -> Dict[str, torch.Tensor]:
        """source: (B, frames, feature_dim) log-mel; padding_mask: (B, frames) bool, True on padding.

        With ``mask`` (pre-training): returns the heads' outputs on masked tokens and their
        targets. With ``features_only`` or ``mask=False``: the encoder output ``x``, every
        layer's output ``hidden_states`` and the token ``padding_mask``.

        ``masks_per_clip`` K > 1 (with ``mask``; EAT's clones): the clips are normalised and
        projected once, then K independently masked copies of each run through the encoder and
        decoder as one batch of K x B sequences; copy k of clip b is row ``k * B + b`` of every
        output (and of a given ``mask_plan``).
        """
        patches = self.patchify(self.normalise(source, padding_mask))
        batch, num_tokens, _ = patches.shape
        padding = self.token_padding(padding_mask, num_tokens)
        features = self.post_extract_proj(patches)
        if mask and masks_per_clip > 1:
            # copies made after normalising and projecting: those are per clip, not per mask
            copies = masks_per_clip
            patches, features = patches.repeat(copies, 1, 1), features.repeat(copies, 1, 1)
            padding = None if padding is None else padding.repeat(copies, 1)
            batch = batch * copies
        if mask:
            features = self.dropout_input(features)
        if self.cfg.enc_sine_pos:
            features = features + self.enc_sine_pos_embed(num_tokens)

        if not mask:
            x, hidden = self.encoder(features, padding, output_layer)
            return {"x": x, "padding_mask": padding, "features": features, "hidden_states": hidden}

        plan = mask_plan or self._draw_mask(padding, batch, num_tokens, features.device, masks_per_clip)
        x, hidden = self.encoder(gather_tokens(features, plan.kept_idx), plan.kept_padding, output_layer)
        if features_only:
            return {"x": x, "padding_mask": plan.kept_padding, "features": features,
                    "hidden_states": hidden, "mask_plan": plan}
        masked = self.decode(x, plan, padding, num_tokens, only_masked=True)
        return {
            "logit_m_list_recon": self.final_proj_reconstruction(masked),
            "logit_m_list_class": self.final_proj_classification(masked),
            "target_m_list": gather_tokens(patches, plan.masked_idx),
            "target_valid": plan.masked_valid,
            "padding_mask": padding,
            "mask_plan": plan,
        }

    def _draw_mask(self, padding, batch, num_tokens, device, copies: int = 1) -> MaskPlan:
        """The mask of ``batch`` rows (``copies`` masked copies of each clip, copy-major)."""
        def draw(rows_padding, rows):
            return compute_mask(self.mask_type, rows_padding, self.cfg.random_mask_prob, self.grid(num_tokens),
                                self.cfg.mask_length, batch_size=rows, device=device,
                                block_size=self.cfg.mask_block_size)

        if copies == 1 or self.mask_type != "random_mask_batched":
            return draw(padding, batch)  # every other type draws each row on its own
        # random_mask_batched shares one mask across the clips: one draw per copy, so the K
        # copies still differ. The copies' padding is the same clips', so the K plans have one
        # shape (their keep counts follow from the clips' lengths alone).
        clips = batch // copies
        plans = [draw(None if padding is None else padding[k * clips:(k + 1) * clips], clips)
                 for k in range(copies)]
        return MaskPlan(*(None if getattr(plans[0], name) is None
                          else torch.cat([getattr(p, name) for p in plans])
                          for name in ("kept_idx", "masked_idx", "kept_valid", "masked_valid")))

    def decode(self, encoded: torch.Tensor, plan: MaskPlan, padding: Optional[torch.Tensor],
               num_tokens: int, only_masked: bool = False) -> torch.Tensor:
        """Put encoder outputs back in place, fill the rest with the mask embedding, decode.
        Returns (B, T, C), or with ``only_masked`` the (B, M, C) outputs at ``plan.masked_idx``
        (the last layer then computes queries, FFN and norms for those tokens only)."""
        if self.cfg.use_post_enc_proj:
            encoded = self.post_enc_proj(encoded)
        batch = encoded.size(0)
        mask_emb = self.decoder_mask_emb.to(encoded.dtype)
        if plan.kept_valid is not None:
            encoded = torch.where(plan.kept_valid.unsqueeze(-1), encoded, mask_emb)
        full = mask_emb.expand(batch, num_tokens, -1).scatter(
            1, plan.kept_idx.unsqueeze(-1).expand_as(encoded), encoded)
        if self.cfg.dec_sine_pos:
            full = full + self.dec_sine_pos_embed(num_tokens)
        return self.decoder(full, padding, query_idx=plan.masked_idx if only_masked else None,
                            grid=self.grid(num_tokens))[0]

    def remove_pretraining_modules(self):
        self.final_proj_reconstruction = None
        self.final_proj_classification = None

    def remove_decoder(self) -> "MAEAST":
        """Drop what only pre-training uses (decoder, its mask embedding and positions, the two
        heads): what feature extraction and fine-tuning keep is the encoder side."""
        self.remove_pretraining_modules()
        self.decoder = self.decoder_mask_emb = None
        if self.cfg.dec_sine_pos:
            self.dec_sine_pos_embed = None
        if self.cfg.use_post_enc_proj:
            self.post_enc_proj = None
        return self
