"""Classifier heads on a backbone's features: the three designs the published projects compare.

- ``linear``: the backbone's pooled features -> dropout -> linear ("without FC layers").
- ``mlp``: pooled features -> [linear -> LayerNorm -> activation -> dropout] x layers -> linear
  ("with FC layers"). LayerNorm rather than BatchNorm: it behaves the same at batch size 1
  and needs no cross-worker statistics under DDP.
- ``attention``: multi-head self-attention over the un-pooled spatial feature tokens
  together with a learned class token, then a linear classifier on that token
  (the "CNN with attention" variants).
"""

from __future__ import annotations

import torch
from timm.layers import get_act_layer
from torch import nn


def activation_layer(name: str) -> nn.Module:
    return get_act_layer(name)()


class LinearHead(nn.Module):
    needs_spatial = False

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))


class MLPHead(nn.Module):
    needs_spatial = False

    def __init__(self, in_features: int, num_classes: int, hidden: int, layers: int = 1,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), activation_layer(activation), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(pooled))


class AttentionHead(nn.Module):
    needs_spatial = True

    def __init__(self, in_features: int, num_classes: int, heads: int, dim: int = 256,
                 activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention head: model.attention_dim {dim} is not divisible by {heads} heads")
        self.proj = nn.Linear(in_features, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), activation_layer(activation), nn.Linear(2 * dim, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.flatten(2).transpose(1, 2) if features.ndim == 4 else features  # (B, N, C)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), self.proj(tokens)], dim=1)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.fc(self.drop(self.norm_out(x[:, 0])))


# The head's activation when the experiment keeps the backbone's own ("default"), for each
# kind of leuktune.config.HEAD_KINDS (a test checks that every kind is here and in build_head).
DEFAULT_ACTIVATION = {"linear": "relu", "mlp": "relu", "attention": "gelu"}


def build_head(kind: str, *, in_features: int, spatial_features: int, num_classes: int, dropout: float,
               activation: str, mlp_hidden: int, mlp_layers: int, attention_heads: int,
               attention_dim: int) -> nn.Module:
    builders = {
        "linear": lambda: LinearHead(in_features, num_classes, dropout),
        "mlp": lambda: MLPHead(in_features, num_classes, mlp_hidden, mlp_layers, activation, dropout),
        "attention": lambda: AttentionHead(spatial_features, num_classes, attention_heads, attention_dim,
                                           activation, dropout),
    }
    if kind not in builders:
        raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(builders)}")
    return builders[kind]()
