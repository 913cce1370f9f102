"""No code from a model folder runs and no pickle is unpickled: every command that loads a model refuses, in one line.

The folders are booby-trapped: ``evil.py`` (named by ``auto_map``) and the pickled weights
create a marker file when they run. Each command gets ``y`` on stdin, the answer transformers'
own prompt ("Do you wish to run the custom code? [y/N]") would take; the marker must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.config import dump_config, load_config
from tunewise.errors import TunewiseError
from tunewise.strategies.lora import ADAPTER_INFO

from tiny_models import build_tiny_bert, build_tiny_lm, build_tiny_resnet, json_rows, write_jsonl

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

runner = CliRunner()
REFUSED = "needs custom code from the model folder"
PICKLED = "tunewise loads safetensors weights only"

EVIL_PY = '''import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import BertConfig, BertModel


class EvilConfig(BertConfig):
    model_type = "evil"


class EvilModel(BertModel):
    config_class = EvilConfig
'''


class _Payload:
    """Unpickling this opens (creates) ``path``: what a malicious pytorch_model.bin could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def plant_code(folder: Path, marker: Path, file: str = "config.json") -> Path:
    """``evil.py`` in ``folder`` and an ``auto_map`` naming it in ``file`` (a type transformers lacks)."""
    (folder / "evil.py").write_text(EVIL_PY.format(marker=str(marker)), encoding="utf-8")
    raw = json.loads((folder / file).read_text()) if (folder / file).is_file() else {}
    if file == "config.json":
        raw["model_type"] = "evil"
    raw["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                       "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / file).write_text(json.dumps(raw), encoding="utf-8")
    return folder


def plant_pickle(folder: Path, marker: Path, name: str = "pytorch_model.bin") -> Path:
    """Replace the folder's safetensors weights with a pickle that creates ``marker`` when loaded."""
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / name).write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A small data file per task: every evaluate reads its data before it loads the model."""
    root = tmp_path_factory.mktemp("data")
    (root / "cls.csv").write_text("text,label\n" + "".join(f"w{i} w{i + 1},{'ab'[i % 2]}\n" for i in range(12)))
    images, lines = root / "img", ["image,caption"]
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (images / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), colour).save(images / label / f"{i}.png")
            lines.append(f"img/{label}/{i}.png,a {label} square {i}")
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    pairs = [{"query": f"question {i} about topic {i % 4}", "positive": f"answer on topic {i % 4}"} for i in range(20)]
    return {"embedding": write_jsonl(root / "pairs.jsonl", pairs), "classification": str(root / "cls.csv"),
            "causal-lm": write_jsonl(root / "lm.jsonl", json_rows(12)), "clip": str(root / "captions.csv"),
            "image-classification": str(images), "image-search": str(images)}


def one_line_error(result, *fragments: str) -> str:
    """The single ``error:`` line a command that exited 2 ends with (progress lines such as
    compare's heading may come before it; no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def run_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], input="y\ny\ny\n")


def fit_args(task: str, model: Path, data: dict[str, str], out: Path) -> list[str]:
    return ["fit", "--set", f"task={task}", "--train", data[task], "--model", model, "-o", out, "--set", "image.size=32"]


def evaluate_args(task: str, model: Path, data: dict[str, str]) -> list[str]:
    return ["evaluate", "--set", f"task={task}", "--train", data[task], "--model", model, "--set", "image.size=32"]


def run_folder(path: Path, model: str, train: str, **extra: str) -> Path:
    """A finished-run-looking folder: its config.yaml names ``model`` and ``train``."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(None, [f"model={model}", f"data.train={train}", *(f"{k}={v}" for k, v in extra.items())])
    (path / "config.yaml").write_text(dump_config(cfg))
    return path


def adapter_run(path: Path, base: str, train: str) -> Path:
    run = run_folder(path, base, train, **{"strategy.name": "lora"})
    (run / "adapter").mkdir()
    info = {"base_model": base, "task": "embedding", "strategy": "lora", "rank": 4, "alpha": 8, "merged": False}
    (run / "adapter" / ADAPTER_INFO).write_text(json.dumps(info))
    return run


# -- the traps are live -------------------------------------------------------------------------


def test_transformers_default_runs_the_folder_code_when_answered_y(tmp_path):
    """The threat: plain transformers (trust_remote_code left at its default) asks, and ``y`` runs evil.py."""
    marker = tmp_path / "marker"
    folder = plant_code(build_tiny_bert(tmp_path / "m"), marker)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(folder)!r})"],
                   input="y\n", text=True, capture_output=True, env=env, timeout=300)
    assert marker.exists()


def test_the_pickle_payload_runs_when_unpickled(tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


# -- custom code: every command that loads a model ----------------------------------------------


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evil")
    marker = root / "marker"
    return plant_code(build_tiny_bert(root / "model"), marker), marker


TASK_NAMES = ["embedding", "classification", "causal-lm", "clip", "image-classification", "image-search"]


@pytest.mark.parametrize("task", TASK_NAMES)
def test_fit_refuses_custom_code(task, evil, data, tmp_path):
    folder, marker = evil
    one_line_error(run_cli(*fit_args(task, folder, data, tmp_path / "out")), REFUSED, str(folder), "(auto_map in config.json)")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", TASK_NAMES)
def test_evaluate_refuses_custom_code(task, evil, data):
    folder, marker = evil
    one_line_error(run_cli(*evaluate_args(task, folder, data)), REFUSED)
    assert not marker.exists()


def test_memory_compare_budget_refuse_custom_code(evil, data, tmp_path):
    folder, marker = evil
    one_line_error(run_cli("memory", "--model", folder), REFUSED)
    for task in ("classification", "image-classification"):
        one_line_error(run_cli("memory", "--model", folder, "--task", task), REFUSED)
    one_line_error(run_cli("compare", "--train", data["embedding"], "--model", folder, "--strategy", "full",
                           "-o", tmp_path / "cmp"), REFUSED)
    one_line_error(run_cli("budget", "--train", data["embedding"], "--model", folder, "--sizes", "8", "--seeds", "1",
                           "--no-time", "-o", tmp_path / "budget"), REFUSED)
    assert not marker.exists()


def test_merge_and_interpolate_refuse_custom_code(evil, data, tiny_st_model, tmp_path):
    folder, marker = evil
    run = adapter_run(tmp_path / "lora-run", str(folder), data["embedding"])
    one_line_error(run_cli("merge", run, "-o", tmp_path / "merged"), REFUSED)
    # the run folder itself carries the code; its base model is clean
    run = plant_code(run_folder(tmp_path / "full-run", tiny_st_model, data["embedding"]), marker)
    one_line_error(run_cli("interpolate", run, "--alphas", "0,1"), REFUSED, str(run))
    assert not marker.exists()


def test_memory_through_a_pipe_refuses(evil):
    """The reported case, as a user types it: ``echo y | tunewise memory --model ./folder_with_auto_map``."""
    folder, marker = evil
    code = "import sys; from tunewise.cli.app import main; sys.argv = ['tunewise', 'memory', '--model', sys.argv[1]]; main()"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(folder)], input="y\n", text=True, capture_output=True,
                          env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"error: model: {folder} needs custom code from the model folder (auto_map in config.json); "
        "tunewise does not run code from model folders"]
    assert not marker.exists()


@pytest.mark.parametrize("file", ["tokenizer_config.json", "preprocessor_config.json"])
def test_auto_map_in_other_files_is_refused(file, tmp_path):
    from tunewise.models.loading import resolve_model

    folder = plant_code(build_tiny_bert(tmp_path / "m"), tmp_path / "marker", file)
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in config  # only ``file`` names the code
    with pytest.raises(TunewiseError, match=rf"\(auto_map in {file}\); tunewise does not run code"):
        resolve_model(str(folder))


def test_custom_classes_are_refused(tmp_path, tiny_st_model):
    from tunewise.models.loading import load_sentence_transformer, resolve_model

    folder = build_tiny_bert(tmp_path / "tok")
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok, "tokenizer_class": "EvilTokenizer"}))
    with pytest.raises(TunewiseError, match="tokenizer_class 'EvilTokenizer' in tokenizer_config.json is not a transformers class"):
        resolve_model(str(folder))
    st = Path(shutil.copytree(tiny_st_model, tmp_path / "st"))
    modules = json.loads((st / "modules.json").read_text())
    modules[1]["type"] = "evil.Pooling"
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(TunewiseError, match="module type 'evil.Pooling' in modules.json is not a sentence-transformers class"):
        load_sentence_transformer(str(st))


def test_every_loader_passes_trust_remote_code_false(monkeypatch, tiny_bert):
    """The one loader adds ``trust_remote_code=False`` (and safetensors) to whatever it loads."""
    from tunewise.models.loading import load_pretrained, load_pretrained_model

    seen = {}

    class Recorder:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.update(kwargs)
            return "loaded"

    assert load_pretrained(Recorder, str(tiny_bert)) == "loaded" and seen == {"trust_remote_code": False}
    assert load_pretrained_model(Recorder, str(tiny_bert), dtype="x") == "loaded"
    assert seen == {"trust_remote_code": False, "use_safetensors": True, "dtype": "x"}


def test_no_direct_loads_outside_the_loader():
    """Every from_pretrained / SentenceTransformer(...) / AutoConfig load goes through models/loading.py."""
    import re

    import tunewise

    src = Path(tunewise.__file__).parent
    pattern = re.compile(r"\.from_pretrained\(|\bSentenceTransformer\((?!modules=)|AutoConfig\.from_pretrained")
    found = []
    for file in src.rglob("*.py"):
        if file.name == "loading.py" and file.parent.name == "models":
            continue
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            match = pattern.search(code)
            in_text = match is not None and ("``" in code or any(q in code[:match.start()] for q in "'\""))  # docs, usage strings
            if match is not None and not in_text:
                found.append(f"{file.relative_to(src)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# -- pickled weights ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickled(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("pickled")
    marker = root / "marker"
    folders = {"text": plant_pickle(build_tiny_bert(root / "bert"), marker),
               "image": plant_pickle(build_tiny_resnet(root / "resnet"), marker),
               "lm": plant_pickle(Path(build_tiny_lm(root / "llama", "llama")), marker)}
    return folders, marker


@pytest.mark.parametrize(("task", "kind"), [("embedding", "text"), ("classification", "text"), ("causal-lm", "lm"),
                                            ("image-classification", "image"), ("image-search", "image")])
def test_fit_refuses_pickle_weights(task, kind, pickled, data, tmp_path):
    folders, marker = pickled
    line = one_line_error(run_cli(*fit_args(task, folders[kind], data, tmp_path / "out"), "--epochs", "1"),
                          PICKLED, str(folders[kind]), "pytorch_model.bin", "save_pretrained")
    assert "safetensors" in line and not marker.exists()


def test_evaluate_refuses_a_pickled_run(pickled, data, tmp_path):
    folders, marker = pickled
    run = Path(shutil.copytree(folders["text"], tmp_path / "run"))
    config = json.loads((run / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "a", "1": "b"}, label2id={"a": 0, "b": 1})
    (run / "config.json").write_text(json.dumps(config))
    one_line_error(run_cli(*evaluate_args("classification", run, data)), PICKLED, str(run))
    assert not marker.exists()


def test_merge_refuses_a_pickled_adapter(pickled, data, tiny_st_model, tmp_path):
    _, marker = pickled
    run = adapter_run(tmp_path / "lora-run", tiny_st_model, data["embedding"])
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["query"]}))
    (run / "adapter" / "adapter_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    one_line_error(run_cli("merge", run, "-o", tmp_path / "merged"), PICKLED, "adapter_model.bin")
    assert not marker.exists()


def test_a_dense_module_with_pickle_weights_is_refused(tiny_st_model, tmp_path):
    from tunewise.models.loading import load_sentence_transformer

    marker = tmp_path / "marker"
    st = Path(shutil.copytree(tiny_st_model, tmp_path / "st"))
    modules = json.loads((st / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "2_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "2_Dense").mkdir()
    (st / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 8}))
    (st / "2_Dense" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(TunewiseError, match="pickle weights only"):
        load_sentence_transformer(str(st))
    assert not marker.exists()


def test_safetensors_beside_a_pickle_are_what_loads(tiny_bert, tmp_path):
    """A folder with both: the safetensors load (use_safetensors=True); the pickle is never opened."""
    from transformers import AutoModel

    from tunewise.models.loading import load_pretrained_model

    marker = tmp_path / "marker"
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "both"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    assert load_pretrained_model(AutoModel, str(folder)) is not None
    assert not marker.exists()
