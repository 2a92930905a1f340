"""Save, load and publish in timm's hub format, with a model card."""

from ssl_hub.hub.folder import HubFolderError, check_backbone_folder, load_method, save_hub_folder

__all__ = ["HubFolderError", "check_backbone_folder", "load_method", "save_hub_folder"]
