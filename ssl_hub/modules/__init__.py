"""Reusable modules: memory banks, the backbone factory, EMA helpers, the masked-ViT adapter."""

from ssl_hub.modules.memory_bank import MemoryBankModule

__all__ = ["MemoryBankModule"]
