"""Converters from other SSL checkpoints to the ssl_hub hub folder (``ssl-hub convert``).

One file per source format - ``lightly`` (LightlySSL ``.ckpt`` / state dicts), ``dino``, ``mocov3``, ``mae`` and
``vicregl`` (the official facebookresearch checkpoints) and ``torchvision`` (ResNet state dicts) - turns a checkpoint
into the backbone's weights under timm's names; :func:`convert_checkpoint` builds the timm model strictly from them
and writes ``config.json`` + ``model.safetensors`` + a model card that says what was converted from what.

```python
from ssl_hub.conversion import convert_checkpoint

convert_checkpoint("dino_deitsmall16_pretrain.pth", "dino", "out/")   # then timm.create_model("local-dir:out", ...)
```
"""

from ssl_hub.conversion.common import ConversionError, Extraction, SourceFormat
from ssl_hub.conversion.convert import FORMATS, ConversionResult, convert_checkpoint

__all__ = ["FORMATS", "ConversionError", "ConversionResult", "Extraction", "SourceFormat", "convert_checkpoint"]
