"""Data: image folders, Hugging Face ``datasets``, any torch Dataset -> lists of views; the shipped demo set."""

from ssl_hub.data.demo import DEMO_HUB_ID, DEMO_NAME, load_demo
from ssl_hub.data.fashion_mnist import fashion_mnist, read_fashion_mnist
from ssl_hub.data.folder import EmptyDatasetError, ImageFolderDataset
from ssl_hub.data.images import IMAGE_EXTENSIONS, UnreadableImageError, as_rgb_image, open_image, to_rgb
from ssl_hub.data.sources import ArrayImageDataset, ImageDataset
from ssl_hub.data.views import MultiViewDataset, collate_views

__all__ = [
    "DEMO_HUB_ID",
    "DEMO_NAME",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "EmptyDatasetError",
    "ImageDataset",
    "ImageFolderDataset",
    "MultiViewDataset",
    "UnreadableImageError",
    "as_rgb_image",
    "collate_views",
    "fashion_mnist",
    "load_demo",
    "open_image",
    "read_fashion_mnist",
    "to_rgb",
]
