"""ssl_hub: self-supervised pretraining for any timm backbone, published to the Hugging Face Hub.

```python
import ssl_hub

method = ssl_hub.create_method("simclr", backbone="resnet18")
ssl_hub.pretrain(method, "path/to/images", training_args)   # transformers.Trainer under the hood
method.save_pretrained("out/")                               # timm / transformers load it with no ssl_hub code
```
"""

from ssl_hub import data, heads, losses, modules, transforms
from ssl_hub.hub import load_method
from ssl_hub.methods import MethodConfig, SSLMethod, SSLMethodOutput
from ssl_hub.registry import create_method, get_method_class, list_methods, register_method
from ssl_hub.training import PretrainingArguments, pretrain, training_arguments
from ssl_hub.version import __version__

__all__ = [
    "MethodConfig",
    "PretrainingArguments",
    "SSLMethod",
    "SSLMethodOutput",
    "__version__",
    "create_method",
    "data",
    "get_method_class",
    "heads",
    "list_methods",
    "load_method",
    "losses",
    "modules",
    "pretrain",
    "register_method",
    "training_arguments",
    "transforms",
]
