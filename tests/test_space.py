"""One-command deployment as a Space, end to end against the local test Hub: create, upload, update, run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kf_model import space
from kf_model.errors import KFError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def space_id(hub_repo_id: str) -> str:
    return hub_repo_id.replace("repo-", "space-")


def test_stage_holds_the_app_its_requirements_and_the_banks(tmp_path: Path) -> None:
    out = space.stage(tmp_path / "space")
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes", "kf_model/serving/registry.py",
            "assets/factors/dsprites/ckn/model.safetensors", "assets/factors/fashion-mnist/familiarity/config.json",
            "assets/examples/examples.json"} <= files
    assert not any(part in ("tests", "train", "__pycache__") for f in files for part in Path(f).parts)
    assert "*.safetensors filter=lfs" in (out / ".gitattributes").read_text()
    assert "*.png filter=lfs" in (out / ".gitattributes").read_text()


def test_deploy_creates_a_gradio_space_and_updates_it(hub_server, space_id: str, tmp_path: Path) -> None:
    sha = space.deploy(space_id)
    repo = hub_server.repo(space_id, "space")
    assert repo.space == {"sdk": "gradio", "hardware": "cpu-basic"}  # CPU unless asked otherwise
    files = hub_server.list_files(space_id, repo_type="space")
    weights = "assets/factors/fashion-mnist/ckn/model.safetensors"
    assert weights in files and "app.py" in files and "kf_model/serving/familiarity.py" in files
    assert hub_server.read_file(space_id, weights, repo_type="space") == (ROOT / weights).read_bytes()
    assert hub_server.resolve(space_id, repo_type="space") == sha

    hub_server.commit(space_id, {"kf_model/removed_module.py": b"x = 1\n"}, repo_type="space")
    space.deploy(space_id, hardware="zero-a10g")  # an update: same Space, new hardware, stale files gone
    assert repo.space["hardware"] == "zero-a10g"
    assert "kf_model/removed_module.py" not in hub_server.list_files(space_id, repo_type="space")


def test_the_deployed_space_runs_the_app(hub_server, space_id: str, tmp_path: Path) -> None:
    """What the Space would run: its files only (a fresh download), the app built, one prediction answered."""
    from huggingface_hub import snapshot_download

    space.deploy(space_id)
    folder = Path(snapshot_download(space_id, repo_type="space", local_dir=tmp_path / "checkout"))
    script = (
        "import json, kf_model, app\n"
        "demo = app.build_demo()\n"
        "result = demo.kf_registry.api_predict('assets/examples/fashion-mnist-test-000641.png', 'fashion-mnist', [])\n"
        "print(json.dumps({'module': kf_model.__file__, 'tasks': len(result) - 1, 'input': result['_input']}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(folder), "KF_ALLOW_HUB": "0"}
    run = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["module"]).resolve().is_relative_to(folder.resolve())  # the Space's code, not this checkout's
    assert report["tasks"] == 10 and report["input"]["unfamiliar"] is False


@pytest.mark.parametrize("args, message", [
    (["deploy", "no-owner"], "not a Space id"),
    (["deploy", "a/b", "--hardware", "h100-free"], "invalid choice"),
])
def test_the_command_refuses_bad_input_in_words(args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        space._main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_hardware_is_refused() -> None:
    with pytest.raises(KFError, match="unknown hardware"):
        space.deploy("kf-tests/x", hardware="h100-free")


def test_the_readme_suggests_free_cpu_hardware() -> None:
    from huggingface_hub.repocard import metadata_load

    assert metadata_load(ROOT / "README.md")["suggested_hardware"] == "cpu-basic"
