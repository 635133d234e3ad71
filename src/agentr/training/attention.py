"""`agentr_varlen`: attention per conversation inside a packed row, with PyTorch's SDPA.

Flash-attention's varlen kernels need CUDA. On other devices transformers turns a packed row
(restarting `position_ids`) into a block-diagonal mask over the whole row, so attention costs
row_length² however short the conversations are, and the mask itself takes row_length² bytes.
This implementation instead runs causal SDPA on each conversation's slice of the row (the
lengths come from the batch's `doc_lens`), which costs sum(length²) and needs no mask.

Register it once with `register()`; a model loaded with `attn_implementation="agentr_varlen"`
then takes `doc_lens=[...]` as a forward keyword (it reaches every attention layer through
transformers' kwargs). Without `doc_lens` it is plain causal SDPA, so generation still works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "agentr_varlen"


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    doc_lens: list[int] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Inputs `(batch, heads, length, head_dim)`; output `(batch, length, heads, head_dim)`."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # expand grouped KV heads (SDPA's enable_gqa takes the slow path on CPU)
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if doc_lens is None or len(doc_lens) <= 1:
        if attention_mask is not None:
            mask = attention_mask if attention_mask.dim() == 4 else None
            if mask is None:
                raise ValueError(f"{NAME} attention takes no 2D padding mask: right-pad or pack instead")
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
        else:
            causal = query.shape[2] == key.shape[2] and query.shape[2] > 1
            out = F.scaled_dot_product_attention(query, key, value, is_causal=causal, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    if query.shape[0] != 1 or sum(doc_lens) != query.shape[2] or query.shape[2] != key.shape[2]:
        raise ValueError(f"{NAME}: doc_lens {doc_lens} do not tile a single packed row of {query.shape[2]} tokens")
    outs = []
    start = 0
    for length in doc_lens:
        end = start + length
        outs.append(F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            is_causal=True, dropout_p=dropout, scale=scaling,
        ))
        start = end
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `attn_implementation="agentr_varlen"` known to transformers; returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
