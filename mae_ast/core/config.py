"""Model configuration. Field names are the original MAE-AST's, so published commands
(``model.ast_kernel_size_chan=...``) and checkpoints (``cfg["model"]``) keep working.
Fields kept only so original checkpoints and commands are accepted are marked
"(compatibility)"."""
from dataclasses import dataclass, field


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
    feature_grad_mult: float = field(
        default=1.0, metadata={"help": "(compatibility) gradient scale of the parameter-free patch extractor: no effect"})

    # decoder
    use_post_enc_proj: bool = field(
        default=False, metadata={"help": "linear map from encoder to decoder width; required if the widths differ"})
    decoder_embed_dim: int = field(default=768, metadata={"help": "decoder embedding dimension"})
    decoder_layers: int = field(default=2, metadata={"help": "number of decoder layers"})
    decoder_layerdrop: float = field(default=0.0, metadata={"help": "LayerDrop probability in the decoder"})

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
    mask_selection: str = field(default="static", metadata={"help": "(compatibility) span length distribution: only static"})
    mask_other: float = field(default=0, metadata={"help": "(compatibility) unused by static span lengths"})
    no_mask_overlap: bool = field(default=False, metadata={"help": "(compatibility) spans always may overlap"})
    mask_min_space: int = field(default=0, metadata={"help": "(compatibility) unused when spans may overlap"})

    # convolutional positions (not used by MAE-AST)
    conv_pos: int = field(default=128, metadata={"help": "(compatibility) conv positional embedding width"})
    conv_pos_groups: int = field(default=16, metadata={"help": "(compatibility) conv positional embedding groups"})
    checkpoint_activations: bool = field(
        default=False, metadata={"help": "recompute layer activations in backward to save memory"})

    # positions
    max_token_length: int = field(
        default=48000, metadata={"help": "length of the sinusoidal position tables (tokens)"})
    enc_sine_pos: bool = field(default=False, metadata={"help": "add sinusoidal positions before the encoder"})
    enc_conv_pos: bool = field(default=False, metadata={"help": "(compatibility) conv positions: not supported"})
    dec_sine_pos: bool = field(default=False, metadata={"help": "add sinusoidal positions before the decoder"})
    dec_conv_pos: bool = field(default=False, metadata={"help": "(compatibility) conv positions: not supported"})
