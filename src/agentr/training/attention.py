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
_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)


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
    sdpa_kwargs = {"dropout_p": dropout, "scale": scaling}
    if groups > 1:  # grouped KV heads: SDPA expands them itself where it can (torch >= 2.5)
        if _SDPA_HAS_GQA:
            sdpa_kwargs["enable_gqa"] = True
        else:
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
    if doc_lens is None or len(doc_lens) <= 1:  # one sequence per row: plain causal attention
        if attention_mask is not None and attention_mask.dim() != 4:
            raise ValueError(f"{NAME} attention takes no 2D padding mask: right-pad or pack instead")
        causal = attention_mask is None and query.shape[2] == key.shape[2] and query.shape[2] > 1
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, is_causal=causal,
                                             **sdpa_kwargs)
        return out.transpose(1, 2).contiguous(), None
    if query.shape[0] != 1 or sum(doc_lens) != query.shape[2] or query.shape[2] != key.shape[2]:
        raise ValueError(f"{NAME}: doc_lens {doc_lens} do not tile a single packed row of {query.shape[2]} tokens")
    outs = []
    start = 0
    for length in doc_lens:
        end = start + length
        outs.append(F.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            is_causal=True, **sdpa_kwargs,
        ))
        start = end
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `attn_implementation="agentr_varlen"` known to transformers; returns the name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    return NAME
