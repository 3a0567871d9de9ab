"""Model configuration. Field names are the original MAE-AST's, so published commands
(``model.ast_kernel_size_chan=...``) and checkpoints (``cfg["model"]``) keep working.

Compatibility baggage lives in one place, the last section of :class:`MAEASTConfig`: fields the
original release has that change nothing here (its fbank front end has no parameters, and it
only ever drew static, overlapping spans), kept so that original configs, commands and
checkpoints are accepted. :func:`check_compatibility` refuses the values that would change the
method (we do not implement them) and warns about the values that change nothing.
"""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

logger = logging.getLogger(__name__)


@dataclass
class MAEASTConfig:
    # patching: patch models use 16x16, frame models 2 (time) x 128 (all mel bins)
    ast_kernel_size_chan: int = field(default=16, metadata={"help": "patch size along mel channels"})
    ast_kernel_size_time: int = field(default=16, metadata={"help": "patch size along time frames"})
    ast_kernel_stride_chan: int = field(
        default=16, metadata={"help": "patch stride along mel channels (pre-training needs stride == size)"})
    ast_kernel_stride_time: int = field(
        default=16, metadata={"help": "patch stride along time frames (pre-training needs stride == size)"})

    # encoder and shared transformer settings
    encoder_layers: int = field(default=12, metadata={"help": "number of encoder layers"})
    encoder_embed_dim: int = field(default=768, metadata={"help": "encoder embedding dimension"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"help": "FFN dimension (encoder and decoder)"})
    encoder_attention_heads: int = field(default=12, metadata={"help": "attention heads (encoder and decoder)"})
    activation_fn: str = field(default="gelu", metadata={"help": "FFN activation: gelu, relu, gelu_accurate, tanh, linear"})
    layer_norm_first: bool = field(default=False, metadata={"help": "pre-LN layers instead of post-LN"})

    # decoder
    use_post_enc_proj: bool = field(
        default=False, metadata={"help": "linear map from encoder to decoder width; required if the widths differ"})
    decoder_embed_dim: int = field(default=768, metadata={"help": "decoder embedding dimension"})
    decoder_layers: int = field(default=2, metadata={"help": "number of decoder layers"})
    decoder_layerdrop: float = field(default=0.0, metadata={"help": "LayerDrop probability in the decoder"})

    # decoder attention (docs/pretraining.md#decoder-attention); no parameters, so checkpoints of
    # every option have the same keys and the encoder is the same
    decoder_attention: str = field(
        default="global", metadata={"help": "decoder self-attention: global (the paper's), local (Audio-MAE: "
                                            "windows of decoder_window tokens on the time x frequency token grid, "
                                            "every other layer shifted by half a window) or multi_window (MW-MAE: "
                                            "each head within windows of its decoder_head_windows size)"})
    decoder_window: List[int] = field(
        default_factory=lambda: [4, 4],
        metadata={"help": "local: window (time, frequency) in tokens (Audio-MAE: 4x4 patches); a window as wide "
                          "as the frequency axis or wider is that axis (frame models: windows in time only)"})
    decoder_window_shift: str = field(
        default="time", metadata={"help": "local: the axes every other layer shifts its windows along by half "
                                          "a window: time (Audio-MAE's code), both (its paper, Swin) or none"})
    decoder_head_windows: List[int] = field(
        default_factory=list,
        metadata={"help": "multi_window: one window size per attention head, in tokens of the flattened "
                          "time-major sequence, non-overlapping, 0 = global (MW-MAE, 8 heads: "
                          "[2,5,10,25,50,125,0,0])"})

    # dropouts
    dropout: float = field(default=0.1, metadata={"help": "dropout in the transformer"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    encoder_layerdrop: float = field(default=0.0, metadata={"help": "LayerDrop probability in the encoder"})
    dropout_input: float = field(default=0.0, metadata={"help": "dropout on projected patches while masking"})

    # masking
    random_mask_prob: float = field(
        default=0.75,
        metadata={"help": "share of tokens masked; for retain_spans the span probability (1.45 -> ~75 %)"})
    mask_length: int = field(default=10, metadata={"help": "span length in tokens for retain_spans"})
    mask_block_size: int = field(
        default=5, metadata={"help": "block side in tokens for inverse_block (EAT: 5); chunk_mask draws 3..5"})

    checkpoint_activations: bool = field(
        default=False, metadata={"help": "recompute layer activations in backward to save memory"})

    # positions
    max_token_length: int = field(
        default=48000, metadata={"help": "length of the sinusoidal position tables (tokens)"})
    enc_sine_pos: bool = field(default=False, metadata={"help": "add sinusoidal positions before the encoder"})
    dec_sine_pos: bool = field(default=False, metadata={"help": "add sinusoidal positions before the decoder"})

    # ---- compatibility: the original release's fields that change nothing here ------------
    feature_grad_mult: float = field(
        default=1.0, metadata={"help": "(compatibility) gradient scale of the fbank front end, which has no parameters: no effect"})
    mask_selection: str = field(default="static", metadata={"help": "(compatibility) span lengths: only static"})
    mask_other: float = field(default=0, metadata={"help": "(compatibility) for non-static span lengths: unused"})
    no_mask_overlap: bool = field(default=False, metadata={"help": "(compatibility) spans may always overlap"})
    mask_min_space: int = field(default=0, metadata={"help": "(compatibility) for non-overlapping spans: unused"})
    conv_pos: int = field(default=128, metadata={"help": "(compatibility) conv positions' width: unused"})
    conv_pos_groups: int = field(default=16, metadata={"help": "(compatibility) conv positions' groups: unused"})
    enc_conv_pos: bool = field(default=False, metadata={"help": "(compatibility) conv positions: not supported"})
    dec_conv_pos: bool = field(default=False, metadata={"help": "(compatibility) conv positions: not supported"})


# field: (the value that means "as here", what any other value would ask for)
UNSUPPORTED = {
    "mask_selection": ("static", "span lengths other than static"),
    "no_mask_overlap": (False, "non-overlapping spans"),
    "enc_conv_pos": (False, "convolutional positions; MAE-AST uses sinusoidal ones (enc_sine_pos)"),
    "dec_conv_pos": (False, "convolutional positions; MAE-AST uses sinusoidal ones (dec_sine_pos)"),
}
NO_EFFECT = {
    "feature_grad_mult": (1.0, "the fbank front end has no parameters"),
    "mask_other": (0, "only non-static span lengths use it"),
    "mask_min_space": (0, "only non-overlapping spans use it"),
    "conv_pos": (128, "only convolutional positions use it"),
    "conv_pos_groups": (16, "only convolutional positions use it"),
}


def check_compatibility(cfg, section: str = "model", unsupported: Dict[str, Tuple[Any, str]] = None,
                        no_effect: Dict[str, Tuple[Any, str]] = None) -> None:
    """Raise ValueError for a compatibility field set to something we do not implement; log a
    warning for one set to a value that changes nothing (so a user does not expect it to)."""
    unsupported = UNSUPPORTED if unsupported is None else unsupported
    no_effect = NO_EFFECT if no_effect is None else no_effect
    for name, (plain, meaning) in unsupported.items():
        if getattr(cfg, name, plain) != plain:
            raise ValueError(f"{section}.{name}={getattr(cfg, name)!r} asks for {meaning}, which this "
                             f"implementation does not have; set {section}.{name}={plain}")
    for name, (plain, why) in no_effect.items():
        if getattr(cfg, name, plain) != plain:
            logger.warning(f"{section}.{name}={getattr(cfg, name)!r} changes nothing ({why}); "
                           "accepted for compatibility with the original release")
