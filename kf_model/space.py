"""Deploy the demo as a Hugging Face Space in one command.

    python -m kf_model.space deploy ORG/SPACE [--hardware cpu-basic] [--private] [--token TOKEN]
    python -m kf_model.space stage OUT_DIR          # the folder that would be uploaded, to look at

The Space gets the app (``app.py`` + ``kf_model/``), ``requirements.txt``, the bundled banks and example
images (``assets/``), ``README.md`` (its front matter configures the Space) and ``.gitattributes`` (so
that a later ``git clone`` + ``git push`` of the Space stores weights and PNGs through LFS). Everything goes
up as one commit through ``huggingface_hub``'s ``upload_folder``, which sends large files to LFS itself.
The token comes from ``--token``, else ``HF_TOKEN``, else ``huggingface-cli login``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from kf_model.bank import TRANSPORT_ERRORS
from kf_model.errors import HubUnavailableError, KFError
from kf_model.utils import REPO_ROOT, writable_folder

FILES = ("app.py", "requirements.txt", "README.md", ".gitattributes")  # from the repository root
FOLDERS = ("kf_model", "assets")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store")
HARDWARE = ("cpu-basic", "cpu-upgrade", "zero-a10g", "t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large")
DEFAULT_HARDWARE = "cpu-basic"  # free, and the networks answer in a few ms on a CPU
GITATTRIBUTES = """*.safetensors filter=lfs diff=lfs merge=lfs -text
*.png filter=lfs diff=lfs merge=lfs -text
*.jpg filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""


class SpaceError(KFError):
    """A Space that cannot be deployed as asked (bad id, hardware, missing files)."""


def stage(out_dir: str | Path, root: str | Path = REPO_ROOT) -> Path:
    """Copy what the Space needs into ``out_dir`` (created); returns it."""
    root, out = Path(root), writable_folder(out_dir, "the stage folder")  # a file there: a kf error, not OSError
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        source = root / name
        if source.is_file():
            shutil.copy2(source, out / name)
        elif name == ".gitattributes":
            (out / name).write_text(GITATTRIBUTES)
        else:
            raise SpaceError(f"{source} is missing: run the deploy command from a kf checkout")
    for name in FOLDERS:
        if not (root / name).is_dir():
            raise SpaceError(f"{root / name} is missing: run the deploy command from a kf checkout")
        shutil.copytree(root / name, out / name, ignore=IGNORE, dirs_exist_ok=True)
    return out


def deploy(space_id: str, *, hardware: str | None = None, private: bool | None = None, token: str | None = None,
           root: str | Path = REPO_ROOT, commit_message: str | None = None) -> str:
    """Create the Space (Gradio SDK) if needed and upload the app to it as one commit; returns the commit sha.

    ``hardware`` is requested on creation (default cpu-basic) and, when given, also for an existing Space.
    Files that the app no longer has are deleted from the Space (under kf_model/ and assets/).
    """
    try:
        validate_repo_id(space_id)
    except HFValidationError as error:
        raise SpaceError(f"{space_id!r} is not a Space id: expected 'owner/name'") from error
    if "/" not in space_id:
        raise SpaceError(f"{space_id!r} is not a Space id: expected 'owner/name'")
    if hardware is not None and hardware not in HARDWARE:
        raise SpaceError(f"unknown hardware {hardware!r}; choose one of {', '.join(HARDWARE)}")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="kf-space-") as tmp:
        staging = stage(Path(tmp) / "space", root)
        try:
            existed = api.repo_exists(space_id, repo_type="space")
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                            space_hardware=hardware or DEFAULT_HARDWARE)
            if existed and hardware is not None:
                api.request_space_hardware(space_id, hardware)
            commit = api.upload_folder(
                repo_id=space_id, repo_type="space", folder_path=staging,
                commit_message=commit_message or "Deploy the kf demo",
                delete_patterns=[f"{folder}/**" for folder in FOLDERS],
            )
        except HfHubHTTPError as error:
            status = getattr(getattr(error, "response", None), "status_code", "?")
            raise HubUnavailableError(f"the Hub refused to deploy {space_id} (HTTP {status}); check the token "
                                      "(it needs write access) and the Space id") from error
        except (*TRANSPORT_ERRORS, OfflineModeIsEnabled) as error:
            raise HubUnavailableError(f"cannot reach the Hugging Face Hub to deploy {space_id}") from error
    return commit.oid


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kf_model.space", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dep = sub.add_parser("deploy", help="create or update a Space with the app and the bundled banks")
    dep.add_argument("space", help="owner/name of the Space")
    dep.add_argument("--hardware", default=None, choices=HARDWARE,
                     help=f"default {DEFAULT_HARDWARE} for a new Space; an existing Space keeps its own unless given")
    dep.add_argument("--private", action="store_true", default=None, help="create the Space as private")
    dep.add_argument("--token", default=None, help="default: $HF_TOKEN or the token of `huggingface-cli login`")
    dep.add_argument("--message", default=None, help="commit message")
    st = sub.add_parser("stage", help="write the folder that deploy would upload")
    st.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "stage":
            print(stage(args.out))
            return 0
        sha = deploy(args.space, hardware=args.hardware, private=args.private, token=args.token,
                     commit_message=args.message)
    except KFError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"deployed {args.space} at commit {sha[:10]}: https://huggingface.co/spaces/{args.space}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
