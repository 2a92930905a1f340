"""Publishing a hub folder to the Hugging Face Hub through huggingface_hub, in one commit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from ssl_hub.hub.card import LOSS_CURVE_NAME, card_is_generated, render_model_card
from ssl_hub.hub.folder import CARD_NAME, CONFIG_NAME, SSL_DIR, WEIGHTS_NAME, check_backbone_folder

if TYPE_CHECKING:
    from ssl_hub.methods.base import SSLMethod

# What a hub folder publishes; Trainer checkpoints and logs that share the output folder stay local.
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, LOSS_CURVE_NAME, f"{SSL_DIR}/{CONFIG_NAME}", f"{SSL_DIR}/{WEIGHTS_NAME}")


class HubPushError(RuntimeError):
    """A push that did not complete: nothing was committed, and the local folder is unchanged."""


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _explain(error: Exception, repo_id: str, token: str | None) -> str:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        hint = "the Hub refused the credentials: log in with `hf auth login` or pass a token with write access"
    elif isinstance(error, HfHubHTTPError):
        hint = f"the Hub answered with an error ({status})"
    elif any(cls.__name__ in ("TransportError", "ConnectionError") for cls in type(error).__mro__):
        hint = "the Hub could not be reached (network or HF_ENDPOINT?)"
    else:
        hint = "the upload failed"
    return _redact(f"{hint}: {type(error).__name__}: {error}", token)


def remote_card(api: HfApi, repo_id: str, revision: str | None) -> str | None:
    """The README.md currently in the repository, or ``None`` when there is none (or no repository yet)."""
    try:
        path = hf_hub_download(repo_id, CARD_NAME, revision=revision, token=api.token)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return None
    return Path(path).read_text(encoding="utf-8")


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    overwrite_card: bool = False,
) -> str:
    """Upload the hub folder ``folder`` to ``repo_id`` (created if needed) in one commit; return the commit URL.

    A card as ssl_hub generated it is rendered again so that its loading code names ``hf-hub:repo_id``; a local card
    edited by hand is uploaded as it is. A card already in the repository that someone edited by hand is kept unless
    ``overwrite_card``. The local folder is never modified, and a failed push commits nothing.

    Args:
        folder: A folder written by ``save_pretrained`` / ``ssl-hub pretrain``.
        repo_id: ``user/name`` on the Hub.
        private: Create the repository private (ignored when it exists).
        revision: Branch to commit to (created from main if missing).
        commit_message: Defaults to "Upload <architecture> pretrained with <method> (ssl_hub)".
        token: Hub token; defaults to the logged-in one. It never appears in cards, logs or errors.
        overwrite_card: Replace a hand-edited card in the repository with the generated one.

    Raises:
        HubPushError: The push failed (unreachable Hub, refused credentials, server error).
    """
    folder = Path(folder)
    config = check_backbone_folder(folder)
    if "ssl_hub" not in config:
        raise ValueError(f"{folder / CONFIG_NAME} has no 'ssl_hub' block: it was not written by ssl_hub.")
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
        for name in HUB_FILES
        if (folder / name).is_file()
    ]
    method = config["ssl_hub"].get("method")
    what = f"pretrained with {method}" if method else "converted"
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        existing = remote_card(api, repo_id, revision)
        if overwrite_card or existing is None or card_is_generated(existing):
            local = folder / CARD_NAME
            local_text = local.read_text("utf-8") if local.is_file() else None
            if local_text is None or card_is_generated(local_text):
                local_text = str(render_model_card(config, f"hf-hub:{repo_id}"))
            operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=local_text.encode("utf-8")))
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {config['architecture']} {what} (ssl_hub)",
            revision=revision,
        )
    except Exception as error:  # every failure of the transfer becomes one clear error, the token redacted
        raise HubPushError(
            f"Pushing {folder} to {repo_id} failed, nothing was committed and {folder} is unchanged; "
            f"{_explain(error, repo_id, token)}"
        ) from error
    return str(commit.commit_url)


def push_method_to_hub(method: SSLMethod, repo_id: str, **kwargs: Any) -> str:
    """Save ``method`` to a temporary hub folder and :func:`push_folder` it (same keyword arguments)."""
    with tempfile.TemporaryDirectory(prefix="ssl_hub-push-") as folder:
        method.save_pretrained(folder, model_ref=f"hf-hub:{repo_id}")
        return push_folder(folder, repo_id, **kwargs)
