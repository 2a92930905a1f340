"""Reusable modules: memory banks, the backbone factory, EMA helpers, the masked-ViT adapter."""

from ssl_hub.modules.dense_features import DenseFeaturesError as DenseFeaturesError
from ssl_hub.modules.dense_features import dense_feature_dim as dense_feature_dim
from ssl_hub.modules.dense_features import forward_dense_features as forward_dense_features
from ssl_hub.modules.dense_features import select_most_similar as select_most_similar
from ssl_hub.modules.ema import activate_requires_grad as activate_requires_grad
from ssl_hub.modules.ema import deactivate_requires_grad as deactivate_requires_grad
from ssl_hub.modules.ema import ema_copy as ema_copy
from ssl_hub.modules.ema import update_momentum as update_momentum
from ssl_hub.modules.masked_vit import MaskedVisionTransformer as MaskedVisionTransformer
from ssl_hub.modules.masked_vit import MaskedViTOutput as MaskedViTOutput
from ssl_hub.modules.masked_vit import UnsupportedBackboneError as UnsupportedBackboneError
from ssl_hub.modules.masked_vit import check_vision_transformer as check_vision_transformer
from ssl_hub.modules.masked_vit import patchify as patchify
from ssl_hub.modules.masking import MaskingRNG as MaskingRNG
from ssl_hub.modules.masking import block_mask as block_mask
from ssl_hub.modules.masking import inverse_block_mask as inverse_block_mask
from ssl_hub.modules.masking import mask_to_indices as mask_to_indices
from ssl_hub.modules.masking import num_masked as num_masked
from ssl_hub.modules.masking import prefix_causal_attention_mask as prefix_causal_attention_mask
from ssl_hub.modules.masking import random_mask as random_mask
from ssl_hub.modules.masking import random_prefix_lengths as random_prefix_lengths
from ssl_hub.modules.memory_bank import MemoryBankModule as MemoryBankModule
from ssl_hub.modules.multi_crop import dynamic_size_backbone as dynamic_size_backbone
from ssl_hub.modules.multi_crop import multi_crop_forward as multi_crop_forward
from ssl_hub.modules.nn_memory_bank import NNMemoryBankModule as NNMemoryBankModule
