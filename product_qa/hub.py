"""--push-to-hub REPO: a run's merged model (with its model card), its adapter or its GGUF export uploaded to the
Hugging Face hub. What stops an upload (no token, offline mode, a bad repo id) is said in one line before any long
work starts; a network or hub failure during the upload is one line too."""
from __future__ import annotations

import argparse
from pathlib import Path

from product_qa.errors import UserError

PUSHED_FOLDERS = {"merged": "merged", "adapter": "adapter"}  # in the run folder; gguf: the export's folder


def add_push_arguments(parser: argparse.ArgumentParser, choices: tuple[str, ...], default: str) -> None:
    parser.add_argument("--push-to-hub", metavar="REPO", help="after the run, upload to the Hugging Face hub repo "
                                                               "REPO (user/name; created if missing; needs a token: "
                                                               "`hf auth login` or HF_TOKEN)")
    parser.add_argument("--push", choices=choices, default=default,
                        help=f"what --push-to-hub uploads (default: {default})")


def check_hub_access(repo_id: str) -> str:
    """The token to upload to `repo_id` with, checked before the work that produces what is uploaded."""
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"--push-to-hub {repo_id!r}: not a hub repo id ({str(err).splitlines()[0][:160]})") from None
    if constants.is_offline_mode():
        raise UserError(f"--push-to-hub {repo_id}: the hub is switched off here (HF_HUB_OFFLINE=1); unset it to "
                        "upload")
    token = get_token()
    if not token:
        raise UserError(f"--push-to-hub {repo_id}: no Hugging Face token; log in with `hf auth login` or set "
                        "HF_TOKEN (a token with write access)")
    return token


def push_folder(folder: Path, repo_id: str, token: str, what: str) -> str:
    """Upload `folder` to the model repo `repo_id` (created if missing); the URL of the commit."""
    import httpx2
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model",
                                   commit_message=f"Upload the {what} ({folder.name}/) with product_qa")
    except (OSError, httpx2.HTTPError) as err:  # HfHubHTTPError is an OSError; a dropped network an httpx2 one
        raise UserError(f"--push-to-hub {repo_id}: the upload of {folder} failed "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'})"
                        ) from None
    return commit.commit_url
