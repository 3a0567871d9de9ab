"""s3prl upstream for MAE-AST, built on the plain-torch core (``mae_ast.core``); no fairseq.

Reads our training checkpoints and checkpoints of the original release (fairseq layout:
``cfg["model"]``, ``cfg["task"]``, ``model`` state dict), strictly.

Output (``forward(wavs)``, ``wavs`` a list of 1-D 16 kHz waveforms):

* ``hidden_states``: one tensor per encoder layer (the output of layers 1..N, as s3prl's stock
  ``mae_ast`` upstream; the input embedding is *not* included), each (B, frames, dim).
  Patch models: the frequency patches of one time step are concatenated into one frame
  vector, so dim = n_freq_patches * encoder_embed_dim (8 * 768 = 6144 for 16x16 patches);
  frame models (2x128): dim = encoder_embed_dim. One frame every ``ast_kernel_stride_time``
  fbank frames, i.e. every ``get_downsample_rates()`` = stride * 160 samples.
* ``last_hidden_state``: the encoder output (equals ``hidden_states[-1]`` for the paper's
  post-LN models; for pre-LN models it has the encoder's final LayerNorm).

Frames are truncated to ``len(range(0, max_len, downsample_rate))`` as the stock upstream does.
In a batch of different lengths each example's valid frames equal what it gives alone: a
token whose patch reaches past the example's end is padding (not attended to).
Precision: float32 by default; ``precision="bf16"`` (or the environment variable
``MAE_AST_PRECISION=bf16``, which also reaches the upstream inside ``run_downstream.py``) runs
the encoder's matmuls in bfloat16 (about 2x faster on CPUs with AVX512-BF16, and on GPUs),
at the cost of ~1e-2 relative differences.

Inputs shorter than one token (``min_samples``: 2800 samples = 0.175 s for 16x16 patches,
560 for 2x128 frames) are zero-padded at the end up to that length.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

try:  # inside an installed s3prl
    from s3prl.upstream.interfaces import UpstreamBase
except ImportError:  # pragma: no cover - s3prl is what calls us
    UpstreamBase = torch.nn.Module

from mae_ast.core import checkpoint
from mae_ast.core.model import inference_precision
from mae_ast.core.transformer import attention
from mae_ast.core.features import fbank, num_frames

FBANK_HOP_SECONDS = 0.010


class UpstreamExpert(UpstreamBase):
    def __init__(self, ckpt: str, model_config=None, refresh: bool = False, precision: str = None, **kwargs):
        super().__init__(**kwargs)
        # fp32 (default: equals the stock upstream) or bf16 (matmuls and attention in bfloat16
        # under autocast, outputs float32: about 2x faster on CPUs with AVX512-BF16/AMX, and on GPUs)
        self.precision = inference_precision(precision)
        model, cfg_task = checkpoint.load_model(ckpt, decoder=False)  # strict; decoder and heads dropped
        self.sample_rate = int(cfg_task.get("sample_rate", 16000))
        self.feature_dim = int(cfg_task.get("feature_dim", 128))
        self.model = model
        self.hop = int(round(self.sample_rate * FBANK_HOP_SECONDS))
        # fewest samples that give one token
        self.min_samples = model.min_samples(self.sample_rate)

    def get_downsample_rates(self, key: str = None) -> int:
        return int(self.model.stride[0] * self.hop)

    def num_output_frames(self, num_samples: int) -> int:
        """Valid frames for a waveform of ``num_samples`` (before the stock truncation)."""
        return self.model.time_steps(num_frames(max(num_samples, self.min_samples), self.sample_rate))

    def forward(self, wavs: List[torch.Tensor]):
        device = wavs[0].device
        lengths = [len(w) for w in wavs]
        padded = pad_sequence([w.float() for w in wavs], batch_first=True)
        if padded.size(1) < self.min_samples:
            padded = F.pad(padded, (0, self.min_samples - padded.size(1)))
        effective = [max(n, self.min_samples) for n in lengths]
        features = fbank(padded, self.sample_rate, self.feature_dim)  # (B, frames, mels), one call
        frames = [num_frames(n, self.sample_rate) for n in effective]
        padding_mask = None
        if len(set(frames)) > 1:
            padding_mask = torch.arange(features.size(1), device=device)[None] >= torch.tensor(
                frames, device=device)[:, None]

        model = self.model
        patches = model.patchify(model.normalise(features, padding_mask))  # (B, T, kt * kc)
        tokens = [model.time_steps(f) * model.n_freq for f in frames]  # valid tokens per example
        if self.precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                x, hidden = self._encode(patches, tokens)
            x, hidden = x.float(), [h.float() for h in hidden]
        else:
            x, hidden = self._encode(patches, tokens)

        keep = len(range(0, max(lengths), self.get_downsample_rates()))
        n_freq = model.n_freq

        def frames_of(h):
            # (B, time * n_freq, D) -> (B, time, n_freq * D): tokens are time-major
            return h.reshape(h.size(0), -1, n_freq * h.size(-1))[:, :keep]

        return {"hidden_states": [frames_of(h) for h in hidden], "last_hidden_state": frames_of(x)}

    def _encode(self, patches: torch.Tensor, tokens: List[int]):
        """The encoder on the valid tokens only, packed: the linear layers run on all valid
        tokens of the batch at once (no work on padding), attention runs on each group of
        examples of equal length (no mask needed). Same modules and the same computation as
        ``mae_ast.core``'s encoder with a padding mask; padded positions come back as zeros."""
        model, enc = self.model, self.model.encoder
        batch, width = patches.size(0), patches.size(1)
        device = patches.device
        # pack examples longest first, so that equal lengths are contiguous
        order = sorted(range(batch), key=lambda i: -tokens[i])
        sorted_tokens = [tokens[i] for i in order]
        if sorted_tokens[-1] == width:  # no padding at all: no gather
            flat_pos = None
            packed = patches[torch.tensor(order, device=device)] if order != list(range(batch)) else patches
            packed = packed.reshape(-1, patches.size(-1))
        else:
            flat_pos = torch.cat([i * width + torch.arange(tokens[i], device=device) for i in order])
            packed = patches.reshape(-1, patches.size(-1)).index_select(0, flat_pos)
        x = model.post_extract_proj(packed)
        if model.cfg.enc_sine_pos:
            pe = model.enc_sine_pos_embed(width)[0]
            x = x + pe.index_select(0, torch.cat([torch.arange(t, device=device) for t in sorted_tokens]))

        groups = []  # (number of examples, tokens each), contiguous in the packed layout
        for t in sorted_tokens:
            if groups and groups[-1][1] == t:
                groups[-1][0] += 1
            else:
                groups.append([1, t])

        if not enc.layer_norm_first:
            x = enc.layer_norm(x)
        x = enc.dropout(x)
        hidden = []
        for layer in enc.layers:
            x = layer.around_attention(x, lambda y, attn=layer.self_attn: self._attention(attn, y, groups))
            hidden.append(x)
        if enc.layer_norm_first:
            x = enc.layer_norm(x)

        if flat_pos is None:
            inverse = [0] * batch
            for k, i in enumerate(order):
                inverse[i] = k
            identity = inverse == list(range(batch))
            index = None if identity else torch.tensor(inverse, device=device)

            def unpack(h):
                h = h.reshape(batch, width, h.size(-1))
                return h if index is None else h.index_select(0, index)
        else:
            def unpack(h):
                out = h.new_zeros(batch * width, h.size(-1)).index_copy(0, flat_pos, h)
                return out.reshape(batch, width, h.size(-1))
        return unpack(x), [unpack(h) for h in hidden]

    def _attention(self, attn, x: torch.Tensor, groups) -> torch.Tensor:
        """Self-attention of ``mae_ast.core.transformer.SelfAttention`` on packed tokens."""
        dim = x.size(-1)
        heads = attn.heads
        qkv = F.linear(x, torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                       torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        dropout = attn.dropout if attn.training else 0.0
        outputs, start = [], 0
        for count, length in groups:
            chunk = qkv[start:start + count * length].view(count, length, 3, heads, dim // heads)
            q, k, v = chunk.permute(2, 0, 3, 1, 4).unbind(0)  # (count, heads, length, head_dim)
            y = attention(q, k, v, p=dropout)
            outputs.append(y.transpose(1, 2).reshape(count * length, dim))
            start += count * length
        return attn.out_proj(outputs[0] if len(outputs) == 1 else torch.cat(outputs))
