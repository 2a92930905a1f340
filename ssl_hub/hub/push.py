"""Publishing a hub folder to the Hugging Face Hub through huggingface_hub, in one commit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import CommitOperationAdd, HfApi

from ssl_hub.hub.card import LOSS_CURVE_NAME, render_model_card
from ssl_hub.hub.folder import CARD_NAME, CONFIG_NAME, SSL_DIR, WEIGHTS_NAME, check_backbone_folder

if TYPE_CHECKING:
    from ssl_hub.methods.base import SSLMethod

# What a hub folder publishes; Trainer checkpoints and logs that share the output folder stay local.
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, LOSS_CURVE_NAME, f"{SSL_DIR}/{CONFIG_NAME}", f"{SSL_DIR}/{WEIGHTS_NAME}")


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Upload the hub folder ``folder`` to ``repo_id`` (created if needed) in one commit; return the commit URL.

    The model card is rendered again so that its loading code names ``hf-hub:repo_id``; the local folder is not
    modified.

    Args:
        folder: A folder written by ``save_pretrained`` / ``ssl-hub pretrain``.
        repo_id: ``user/name`` on the Hub.
        private: Create the repository private (ignored when it exists).
        revision: Branch to commit to (created from main if missing).
        commit_message: Defaults to "Upload <architecture> pretrained with <method>".
        token: Hub token; defaults to the logged-in one.
    """
    folder = Path(folder)
    config = check_backbone_folder(folder)
    if "ssl_hub" not in config:
        raise ValueError(f"{folder / CONFIG_NAME} has no 'ssl_hub' block: it was not written by ssl_hub.")
    card = render_model_card(config, f"hf-hub:{repo_id}")
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
        for name in HUB_FILES
        if (folder / name).is_file()
    ]
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=str(card).encode("utf-8")))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    method = config["ssl_hub"]["method"]
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or f"Upload {config['architecture']} pretrained with {method} (ssl_hub)",
        revision=revision,
    )
    return commit.commit_url


def push_method_to_hub(method: SSLMethod, repo_id: str, **kwargs: Any) -> str:
    """Save ``method`` to a temporary hub folder and :func:`push_folder` it."""
    with tempfile.TemporaryDirectory(prefix="ssl_hub-push-") as folder:
        method.save_pretrained(folder, model_ref=f"hf-hub:{repo_id}")
        return push_folder(folder, repo_id, **kwargs)
