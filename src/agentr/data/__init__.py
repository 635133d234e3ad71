"""Phase II data: tokenisation with the loss mask, padding-free packing, chat mixing, DataModules."""

from agentr.data.base import AgentRDataModule
from agentr.data.datamodule import HTTPDataModule, ScienceWorldDataModule, TextCraftDataModule
from agentr.data.multitask import MultiTaskDataModule
from agentr.data.packing import BatchDataset, pack_bins
from agentr.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_all, tokenize_messages

__all__ = [
    "IGNORE_INDEX",
    "AgentRDataModule",
    "BatchDataset",
    "HTTPDataModule",
    "MultiTaskDataModule",
    "ScienceWorldDataModule",
    "TextCraftDataModule",
    "TokenizedExample",
    "pack_bins",
    "tokenize_all",
    "tokenize_messages",
]
