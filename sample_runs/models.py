"""The model zoo of the sample runs: small MLPs, CNNs and a tiny GPT, written the way people write them.

Both styles appear on purpose, because the collector must handle both:
`mlp()` builds an ``nn.Sequential`` with activation modules (``nn.ReLU()``,
``nn.Sigmoid()``...), while `MLP` and `ConvNet` are ``nn.Module`` subclasses that
call ``F.relu`` in ``forward`` (no activation module to hook: dead units are then
seen at the next layer's input). `GPT` is a character language model in nanoGPT's
shape, with GPT-2's initialization. The initialization faults are functions applied
to a built model, the way a user would apply ``nn.init`` calls after construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIDE = 8  # load_digits images are 8x8


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0) -> nn.Sequential:
    """``Linear -> activation [-> Dropout]`` for each hidden size, then a Linear output layer.

    `sizes` runs from the input features to the classes, e.g. ``(64, 128, 64, 10)``.
    """
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Two hidden layers with ``F.relu`` in ``forward``, as in most tutorials."""

    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.out(x)


class ConvNet(nn.Module):
    """Two 3x3 convolutions (the second with batch norm), 2x2 max-pooling, one hidden dense layer.

    Takes the digits' 64 features and views them as one 8x8 image channel.
    """

    def __init__(self, classes: int, channels: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        self.fc = nn.Linear(2 * channels * (IMAGE_SIDE // 2) ** 2, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc(x.flatten(1)))
        return self.out(x)


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv layers of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


@torch.no_grad()
def zero_init(model: nn.Module) -> nn.Module:
    """Every weight and bias set to 0: the 'start from nothing' mistake."""
    for layer in weighted_layers(model):
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def normal_init(model: nn.Module, std: float) -> nn.Module:
    """Weights drawn from N(0, std^2) whatever the fan-in, biases 0 (``W = std * randn(...)``)."""
    for layer in weighted_layers(model):
        nn.init.normal_(layer.weight, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return model


@torch.no_grad()
def hidden_bias_init(model: nn.Module, value: float) -> nn.Module:
    """Every layer's bias but the output layer's set to `value` (a large negative value kills ReLUs)."""
    for layer in weighted_layers(model)[:-1]:
        if layer.bias is not None:
            nn.init.constant_(layer.bias, value)
    return model


# --- a tiny GPT (nanoGPT's shape) ----------------------------------------------------------
# Written after Karpathy's nanoGPT (model.py, MIT licence): pre-LayerNorm blocks, causal
# self-attention through `F.scaled_dot_product_attention`, a GELU MLP four times as wide,
# the head's weight tied to the token embedding, and GPT-2's initialization.

GPT_INIT_STD = 0.02  # GPT-2's N(0, 0.02) for every Linear and Embedding weight


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)  # query, key, value of every head at once
        self.c_proj = nn.Linear(n_embd, n_embd)  # a residual projection: scaled at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, tokens, embedding
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, C / heads)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # token t attends to tokens <= t
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class GPTMLP(nn.Module):
    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)  # a residual projection: scaled at init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``: GPT-2's pre-LayerNorm residual block."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = GPTMLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab)."""

    def __init__(
        self, vocab: int, block_size: int, n_layer: int = 2, n_head: int = 4, n_embd: int = 48
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # position embedding
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as GPT-2 and nanoGPT do
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
                nn.init.normal_(p, mean=0.0, std=GPT_INIT_STD / (2 * n_layer) ** 0.5)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=GPT_INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, n_embd)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


@torch.no_grad()
def output_init(model: nn.Module, std: float) -> nn.Module:
    """The output layer's weights drawn from N(0, std^2), its bias 0: a hand-written last-layer init."""
    last = weighted_layers(model)[-1]
    nn.init.normal_(last.weight, std=std)
    if last.bias is not None:
        nn.init.zeros_(last.bias)
    return model
