"""Classifier heads on a backbone's features: the three designs the published projects compare.

- ``linear``: the backbone's pooled features -> dropout -> linear ("without FC layers").
- ``mlp``: pooled features -> [linear -> LayerNorm -> activation -> dropout] x layers -> linear
  ("with FC layers"). LayerNorm rather than BatchNorm: it behaves the same at batch size 1
  and needs no cross-worker statistics under DDP.
- ``attention``: multi-head self-attention over the un-pooled spatial feature tokens
  together with a learned class token, then a linear classifier on that token
  (the "CNN with attention" variants).

And the probes of the foundation-model papers, fitted once on a frozen backbone's pooled
features rather than trained by gradient steps (``fitted``; leuktune.training.features):

- ``logistic``: a linear probe, multinomial logistic regression with an L2 penalty
  (scikit-learn's), its standardisation folded into one linear layer.
- ``knn``: cosine k-nearest neighbours over the training features, votes weighted by
  ``exp(similarity / 0.07)`` as in DINO's and DINOv2's kNN evaluation; a layer that holds its
  feature bank and labels, so predict and ONNX export serve it like any head.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.layers import get_act_layer
from torch import nn


def activation_layer(name: str) -> nn.Module:
    return get_act_layer(name)()


class LinearHead(nn.Module):
    needs_spatial = False
    fitted = False

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(pooled))


class MLPHead(nn.Module):
    needs_spatial = False
    fitted = False

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
    fitted = False

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


class LogisticHead(nn.Module):
    """A linear probe: ``fit`` solves L2-penalised multinomial logistic regression on pooled
    features (scikit-learn's lbfgs, on standardised features) and stores it as one linear layer."""

    needs_spatial = False
    fitted = True

    def __init__(self, in_features: int, num_classes: int, l2: float = 1e-3):
        super().__init__()
        self.l2 = l2
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor, sample_weight: np.ndarray | None = None) -> None:
        """Fit on (N, D) features and (N,) class ids; ``sample_weight`` balances classes where set.
        A class absent from ``labels`` keeps a logit far below the others."""
        # scikit-learn only where a probe is fitted
        from sklearn.linear_model import LogisticRegression

        x = features.float().cpu().numpy()
        y = labels.cpu().numpy()
        mean, std = x.mean(0), x.std(0) + 1e-6
        # C is the inverse of the penalty on the summed loss: l2 is per image, as weight decay is.
        probe = LogisticRegression(C=1.0 / (self.l2 * len(y)), max_iter=1000)
        probe.fit((x - mean) / std, y, sample_weight=sample_weight)
        weight = np.zeros((self.fc.out_features, x.shape[1]), np.float32)
        bias = np.full(self.fc.out_features, -30.0, np.float32)
        coef, intercept = probe.coef_, probe.intercept_
        if len(probe.classes_) == 2:  # scikit-learn gives one row for two classes: the second's logit
            coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
        weight[probe.classes_] = coef / std
        bias[probe.classes_] = intercept - (coef / std) @ mean
        self.fc.weight.copy_(torch.from_numpy(weight))
        self.fc.bias.copy_(torch.from_numpy(bias))


class KNNHead(nn.Module):
    """Cosine k-nearest neighbours: the training features (L2-normalised) and their one-hot labels
    are buffers, so the bank travels in the checkpoint and the ONNX graph. The output is the log
    of the weighted vote shares: logits whose softmax is the vote, which temperature scaling
    then calibrates like any head's."""

    needs_spatial = False
    fitted = True
    uses_views = False  # its bank holds the training images as they are, not their turns and mirrors
    temperature = 0.07  # DINO's kNN: sharper weights for the nearest

    def __init__(self, in_features: int, num_classes: int, k: int = 20):
        super().__init__()
        self.k = k
        self.register_buffer("bank", torch.zeros(0, in_features))
        self.register_buffer("votes", torch.zeros(0, num_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        similarity = nn.functional.normalize(pooled.float(), dim=1) @ self.bank.T
        nearest = similarity.topk(min(self.k, self.bank.shape[0]), dim=1)
        weights = torch.exp(nearest.values / self.temperature)
        votes = (weights.unsqueeze(-1) * self.votes[nearest.indices]).sum(1)
        share = votes / votes.sum(1, keepdim=True).clamp_min(1e-12)
        return torch.log(share.clamp_min(1e-6))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor, sample_weight: np.ndarray | None = None) -> None:
        """Keep (N, D) features and (N,) class ids as the bank (``sample_weight`` unused: every
        neighbour votes with its similarity)."""
        self.bank = nn.functional.normalize(features.float(), dim=1).to(self.bank.device)
        self.votes = nn.functional.one_hot(labels.long(), self.votes.shape[1]).float().to(self.votes.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The bank's size is the training split's, known only from the checkpoint.
        for name in ("bank", "votes"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# The head's activation when the experiment keeps the backbone's own ("default"), for each
# kind of leuktune.config.HEAD_KINDS (a test checks that every kind is here and in build_head).
DEFAULT_ACTIVATION = {"linear": "relu", "mlp": "relu", "attention": "gelu", "logistic": "relu", "knn": "relu"}


def build_head(kind: str, *, in_features: int, spatial_features: int, num_classes: int, dropout: float,
               activation: str, mlp_hidden: int, mlp_layers: int, attention_heads: int,
               attention_dim: int, probe_l2: float = 1e-3, knn_k: int = 20) -> nn.Module:
    builders = {
        "linear": lambda: LinearHead(in_features, num_classes, dropout),
        "mlp": lambda: MLPHead(in_features, num_classes, mlp_hidden, mlp_layers, activation, dropout),
        "attention": lambda: AttentionHead(spatial_features, num_classes, attention_heads, attention_dim,
                                           activation, dropout),
        "logistic": lambda: LogisticHead(in_features, num_classes, probe_l2),
        "knn": lambda: KNNHead(in_features, num_classes, knn_k),
    }
    if kind not in builders:
        raise ValueError(f"unknown head {kind!r}; expected one of {', '.join(builders)}")
    return builders[kind]()
