"""Publish a finished run on the Hugging Face Hub (``tunewise push RUN REPO``, ``fit --push-to-hub REPO``).

The run folder is already what the Hub expects: the model in its library's own layout and a
README.md whose front matter the Hub reads (:func:`tunewise.outputs.card_metadata`). It is
uploaded as it is with huggingface_hub's own ``HfApi.create_repo`` and ``HfApi.upload_folder``
(what ``SentenceTransformer.push_to_hub`` and ``PreTrainedModel.push_to_hub`` call underneath),
so the card tunewise wrote is the one published. Not tested against the real Hub here (no
network): the tests stop at those two calls with a fake client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

# never uploaded: training work folders, staging leftovers, editor and OS files
IGNORED = ["_checkpoints/**", ".*", "**/.*", "__pycache__/**"]


def push_run(run_dir: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
             commit_message: str | None = None, api: Any = None) -> str:
    """Upload a finished run folder to the Hub model repo ``repo_id`` (created if missing).

    Args:
        run_dir: the run folder.
        repo_id: ``user/name`` or ``org/name``.
        private: create the repo private (None: the Hub's default).
        token: a Hub token (None: huggingface_hub's login or ``HF_TOKEN``).
        commit_message: default: names the task, strategy and primary metric.
        api: an ``HfApi``-like client (tests pass a fake one).

    Returns:
        The URL of the upload's commit.

    Raises:
        TunewiseError: not a run, a repo id the Hub would refuse, or huggingface_hub missing.
    """
    from tunewise.outputs import hub_id
    from tunewise.predict import open_run

    if hub_id(repo_id) is None:
        raise TunewiseError(f"--push-to-hub: '{repo_id}' is not a Hub repo id; give user/name or org/name")
    run = open_run(run_dir)
    if api is None:
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise TunewiseError("--push-to-hub: needs huggingface_hub; pip install huggingface_hub") from None
        api = HfApi(token=token)
    m = run.metrics
    primary = m.get("primary_metric")
    message = commit_message or (f"tunewise {m['task']} ({m.get('strategy', {}).get('name', '')}): "
                                 f"{primary} {m['before'].get(primary)} -> {m['after'].get(primary)}")
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(run.path), commit_message=message,
                               ignore_patterns=IGNORED)
    return str(getattr(commit, "commit_url", commit))
