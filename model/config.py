"""The model's typed configuration and the checks that must pass before anything is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

# The three kinds of attention in an encoder-decoder, in the order every tool lists them: the keys
# of head gates, of recorded attention maps and of the probe's files.
ATTENTION_TYPES = ("encoder_self", "decoder_self", "cross")


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the values and the fix."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape and behaviour of the encoder-decoder.

    Head semantics: with `head_dim` unset the heads split a fixed `d_model`
    (head_dim = d_model // num_heads); with `head_dim` set, the attention width is
    num_heads * head_dim and the output projection maps it back to d_model.
    """

    d_model: int = 256
    num_heads: int = 4
    head_dim: Optional[int] = None
    ffn_dim: int = 1024
    num_layers: Optional[int] = None  # sets both encoder and decoder counts when given
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dropout: float = 0.1
    attention_dropout: float = 0.0
    norm: str = "pre"  # "pre" (pre-LN, stable without warmup tricks) or "post" (Vaswani et al.)
    positions: str = "sinusoidal"  # or "learned"
    max_len: int = 512
    tie_embeddings: bool = True  # share source/target embeddings and the output projection
    activation: str = "relu"  # or "gelu"
    dtype: str = "float32"  # compute dtype; parameters and loss stay float32
    attention_impl: str = "fast"  # "fast": jax.nn.dot_product_attention; "explicit": einsum + softmax
    remat: bool = False  # recompute layer activations in the backward pass to save memory
    # Per-layer head gates, any subset of {"encoder_self": (Le, H), "decoder_self": (Ld, H),
    # "cross": (Ld, H)} as nested lists; None = all on. Typed Any, not Optional[dict]: OmegaConf
    # cannot merge a dict override into a typed None (or struct-mode empty) dict node, and the
    # override `model.head_mask={cross:[[1,0,1,1],[1,1,1,1]]}` must compose. validate() checks it.
    head_mask: Any = None
    # Heads per layer and attention type, any subset of {"encoder_self": [Le ints],
    # "decoder_self": [Ld ints], "cross": [Ld ints]}; None (or a type left out) = num_heads in
    # every layer. head_dim stays resolved_head_dim (that of num_heads), so a layer's attention
    # width is count * head_dim: what `python -m train.prune` writes. A count of 0 leaves the
    # attention only its output bias (what gating all of its heads off leaves). Typed Any, as head_mask.
    head_counts: Any = None
    # "concrete": a Hard Concrete gate per head (model/gates.py, Louizos et al. 2018), trained with
    # the L0 penalty train.gate_l0 (Voita et al. 2019); "none": no gates.
    head_gates: str = "none"
    gate_init: float = 3.0  # initial log_alpha of every gate: 3 starts them open (eval gate 1, P(open) 0.99)

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.num_heads

    @property
    def attention_width(self) -> int:
        return self.num_heads * self.resolved_head_dim

    def resolved_head_counts(self) -> dict[str, tuple[int, ...]]:
        """Heads of every layer, by attention type: {"encoder_self": (Le,), "decoder_self": (Ld,),
        "cross": (Ld,)}; head_counts where given, num_heads elsewhere."""
        layers = self.layer_counts()
        given = dict(self.head_counts or {})
        return {kind: tuple(int(c) for c in given[kind]) if kind in given else (self.num_heads,) * layers[kind]
                for kind in ATTENTION_TYPES}

    def layer_counts(self) -> dict[str, int]:
        """Layers per attention type."""
        return {"encoder_self": self.encoder_layers, "decoder_self": self.decoder_layers,
                "cross": self.decoder_layers}

    @property
    def uniform_heads(self) -> bool:
        """Every layer of every type has num_heads heads (the shapes of a model without head_counts)."""
        return all(c == self.num_heads for counts in self.resolved_head_counts().values() for c in counts)

    @property
    def encoder_layers(self) -> int:
        return self.num_layers if self.num_layers is not None else self.num_encoder_layers

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_layers is not None else self.num_decoder_layers

    def validate(self) -> "ModelConfig":
        """Raise ConfigError naming the bad values and the fix; return self when fine."""
        for name in ("d_model", "num_heads", "ffn_dim", "max_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be positive.")
        if self.head_dim is None and self.d_model % self.num_heads:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ConfigError(
                f"model.num_heads={self.num_heads} does not divide model.d_model={self.d_model}. "
                f"Pick num_heads from {divisors}, change d_model, or set model.head_dim "
                f"(attention width = num_heads * head_dim)."
            )
        if self.head_dim is not None and self.head_dim <= 0:
            raise ConfigError(f"model.head_dim={self.head_dim} must be positive (or null to derive it).")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ConfigError(
                f"encoder/decoder layer counts must be >= 1, got "
                f"{self.encoder_layers}/{self.decoder_layers}."
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be in [0, 1).")
        choices = {
            "norm": ("pre", "post"),
            "positions": ("sinusoidal", "learned"),
            "activation": ("relu", "gelu"),
            "dtype": ("float32", "bfloat16"),
            "attention_impl": ("fast", "explicit"),
        }
        if self.dtype == "float16":  # its 5-bit exponent overflows gradients without loss scaling
            raise ConfigError("model.dtype=float16 needs loss scaling, which this code does not do; use "
                              "model.dtype=bfloat16 (float32's range, the same memory and speed).")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"model.{name}={getattr(self, name)!r} is not one of {allowed}.")
        if self.head_gates not in ("none", "concrete"):
            raise ConfigError(f"model.head_gates={self.head_gates!r} is not one of ('none', 'concrete').")
        self._validate_head_counts()
        self._validate_head_mask()
        return self

    def _validate_head_counts(self) -> None:
        """Per-layer head counts: a list of non-negative ints per attention type, one per layer."""
        if self.head_counts is None:
            return
        layers = self.layer_counts()
        example = {kind: [self.num_heads] * n for kind, n in layers.items()}
        if not isinstance(self.head_counts, (dict, tuple)):
            raise ConfigError(f"model.head_counts must be a dict like {example}, got {self.head_counts!r}.")
        for name, counts in dict(self.head_counts).items():
            if name not in layers:
                raise ConfigError(f"model.head_counts has key {name!r}; use {sorted(layers)}.")
            ok = (isinstance(counts, (list, tuple)) and len(counts) == layers[name]
                  and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts))
            if not ok:
                raise ConfigError(
                    f"model.head_counts.{name} must be {layers[name]} non-negative ints (heads of each "
                    f"{name} layer; 0 keeps only the output bias), got {counts!r}. Example: {example[name]}.")

    def _validate_head_mask(self) -> None:
        """Gate shapes must match the layers and heads before anything is built."""
        if not self.head_mask:
            return
        layers = self.layer_counts()
        counts = self.resolved_head_counts()
        if not isinstance(self.head_mask, dict):
            raise ConfigError(f"model.head_mask must be a dict like {{cross: [[1, 0], [1, 1]]}}, "
                              f"got {self.head_mask!r}.")
        for name, rows in self.head_mask.items():
            if name not in layers:
                raise ConfigError(f"model.head_mask has key {name!r}; use {sorted(layers)}.")
            shape_ok = (isinstance(rows, (list, tuple)) and len(rows) == layers[name]
                        and all(isinstance(row, (list, tuple)) and len(row) == n
                                for row, n in zip(rows, counts[name])))
            if not shape_ok:
                heads = (f"{self.num_heads} gates (heads)" if set(counts[name]) <= {self.num_heads}
                         else f"one gate per head (heads per layer: {list(counts[name])})")
                raise ConfigError(
                    f"model.head_mask.{name} must be {layers[name]} lists (layers) of {heads}, got {rows}.")

    def defining_fields(self) -> dict:
        """The fields that change the parameters' shapes or meaning (for checkpoint compatibility).

        head_counts and head_gates enter only when they change something (per-layer counts that
        are not num_heads everywhere; gates on), so models without them hash as before they existed.
        """
        skip = {"dropout", "attention_dropout", "attention_impl", "remat", "head_mask", "dtype",
                "num_layers", "num_encoder_layers", "num_decoder_layers", "head_dim", "head_counts",
                "head_gates", "gate_init"}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out.update(head_dim=self.resolved_head_dim, encoder_layers=self.encoder_layers,
                   decoder_layers=self.decoder_layers)
        if not self.uniform_heads:
            out["head_counts"] = {kind: list(c) for kind, c in self.resolved_head_counts().items()}
        if self.head_gates != "none":
            out["head_gates"] = self.head_gates
        return out
