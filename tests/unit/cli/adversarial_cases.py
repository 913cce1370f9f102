"""The acceptance table of malformed and adversarial inputs, one row per case (``test_adversarial.py`` runs it).

A row is the command line, the files to create first and what must not exist afterwards.
Arguments and text files may name placeholders, replaced before the run:

| placeholder | what |
|---|---|
| ``{tmp}`` | the test's own folder |
| ``{st}``, ``{bert}``, ``{llama}``, ``{resnet}``, ``{clip}`` | the tiny random models of ``tests/conftest.py`` |

A file's content is text, bytes, or a callable ``(path) -> None`` that makes it (image folders).
A name ending in ``/`` is an empty folder.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Content = str | bytes | Callable[[Path], None]

MODELS = {"st": "tiny_st_model", "bert": "tiny_bert", "llama": "tiny_llama", "resnet": "tiny_resnet", "clip": "tiny_clip"}


@dataclass(frozen=True)
class Case:
    """One adversarial input.

    Args:
        id: the test id.
        argv: the command line after ``tunewise``.
        files: relative path -> content, created before the run.
        expect: fragments the one error line must hold (the intended reason, not just any failure).
        absent: relative paths that must not exist afterwards (default: the output folder).
        process: run ``python -m tunewise.cli.app`` in a real process instead of in-process.
        xfail: why the case fails today (strict: it must fail until fixed).
    """

    id: str
    argv: tuple[str, ...]
    files: dict[str, Content] = field(default_factory=dict)
    expect: tuple[str, ...] = ()
    absent: tuple[str, ...] = ("out",)
    process: bool = False
    xfail: str = ""


# -- data ---------------------------------------------------------------------------------------

TOPICS = ["permit", "roof", "window", "garage", "fence", "balcony", "heating", "drainage", "facade", "attic"]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def pairs(n: int = 30) -> str:
    return jsonl([{"query": f"what about the {TOPICS[i % 10]} {i}", "positive": f"answer regarding {TOPICS[i % 10]} {i % 7}"}
                  for i in range(n)])


def labeled_csv(rows: list[tuple[str, str]], *, newline: str = "\n", bom: bool = False) -> bytes:
    """``text,label`` CSV with every text quoted (a quoted value may hold any character)."""
    lines = ["text,label"] + [f'"{text}",{label}' for text, label in rows]
    return (("\ufeff" if bom else "") + newline.join(lines) + newline).encode("utf-8")


def texts(n_per_class: int = 6, classes: tuple[str, ...] = ("alpha", "beta", "gamma")) -> list[tuple[str, str]]:
    """Texts over the tiny BERT's vocabulary (w0..w39), one word range per class."""
    rng = random.Random(0)
    return [(" ".join(f"w{rng.randrange(10 * c, 10 * c + 3)}" for _ in range(5)), label)
            for c, label in enumerate(classes) for _ in range(n_per_class)]


# Real-world CSV quirks must read cleanly: a single-item class is then the intended (and only) error;
# a quirk that broke a row would fail earlier with "row N has no value in column 'label'".
LONELY = [("w30 w31 w32", "lonely")]
QUIRK = ("class 'lonely'",)


def lm_rows(n: int = 12, prompt: str = "item roof {i}", completion: str = '{{"id": {i}}}') -> str:
    return jsonl([{"prompt": prompt.format(i=i), "completion": completion.format(i=i)} for i in range(n)])


def png(colour: tuple[int, int, int], seed: int = 0, size: int = 24) -> bytes:
    import io

    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(min(255, c + rng.randint(0, 30)) for c in colour))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def image_folder(classes: tuple[str, ...] = ("red", "green", "blue"), n: int = 4,
                 extra: dict[str, bytes] | None = None) -> Callable[[Path], None]:
    """A maker of class folders of small PNGs, plus ``extra`` files (relative path -> bytes)."""
    def make(root: Path) -> None:
        for label in classes:
            (root / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / label / f"{i}.png").write_bytes(png(COLOURS[label], seed=i))
        for rel, content in (extra or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(content)
    return make


CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then nothing readable


def captions(root: Path, rows: list[tuple[str, str]] | None = None, header: str = "image,caption") -> None:
    """Three PNGs per colour and a captions CSV over them (default: every image, described)."""
    rows = rows or [(f"{label}/{i}.png", f"a {label} square") for label in ("red", "green", "blue") for i in range(3)]
    for label in ("red", "green", "blue"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(png(COLOURS[label], seed=i))
    (root / "captions.csv").write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows), encoding="utf-8")


def lora_run(root: Path) -> None:
    """What ``merge`` looks for in a run folder: adapter/tunewise_adapter.json (and a model beside it)."""
    (root / "adapter").mkdir(parents=True)
    (root / "adapter" / "tunewise_adapter.json").write_text(json.dumps({"base_model": "nosuch", "task": "embedding"}))
    (root / "model.safetensors").write_bytes(b"weights that must survive")


def remote_code_model(root: Path) -> None:
    """A model folder that asks for its own code (``auto_map``); the code, if ever run, leaves ``PWNED``."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({
        "model_type": "tunewise-test-custom", "architectures": ["CustomModel"], "vocab_size": 45, "hidden_size": 16,
        "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"}}))
    (root / "custom.py").write_text("from pathlib import Path\nPath(__file__).with_name('PWNED').touch()\n")


class _Pwn:
    """Unpickling this creates a file: proof that a pickle was loaded with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def pickle_model(root: Path) -> None:
    """A BERT config beside ``pytorch_model.bin`` (a pickle, no safetensors)."""
    import pickle

    from transformers import BertConfig

    root.mkdir(parents=True)
    BertConfig(vocab_size=45, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               architectures=["BertModel"]).to_json_file(str(root / "config.json"))
    (root / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": _Pwn(root / "PWNED")}))


def classifier_of(labels: tuple[str, ...]) -> Callable[[Path], None]:
    """A maker of a saved tiny text classifier (tokenizer over w0..w39) trained on ``labels``."""
    def make(root: Path) -> None:
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        from tiny_models import build_tiny_bert  # tests/ is on sys.path (conftest.py imports it too)

        build_tiny_bert(root)
        torch.manual_seed(0)
        config = BertConfig.from_pretrained(str(root), num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id={lab: i for i, lab in enumerate(labels)})
        BertForSequenceClassification(config).save_pretrained(str(root))
    return make


EMBEDDING_RUN = "task: embedding\nmodel: {st}\ndata:\n  train: {tmp}/pairs.jsonl\nstrategy:\n  name: full\n"

# -- the table ----------------------------------------------------------------------------------

P = {"pairs.jsonl": pairs()}  # a good training file


def fit_on(name: str) -> tuple[str, ...]:
    """``fit`` on training file ``name`` and the packaged model: the file fails before the model is needed."""
    return ("fit", "--train", "{tmp}/" + name, "-o", "{tmp}/out")

FIT = ("fit", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out")  # a good command line, to break
CLS = ("fit", "--set", "task=classification", "--model", "{bert}", "-o", "{tmp}/out", "--train")
IMG = ("fit", "--set", "task=image-classification", "--set", "image.size=32", "--model", "{resnet}", "-o", "{tmp}/out")
LM = ("fit", "--set", "task=causal-lm", "--model", "{llama}", "-o", "{tmp}/out", "--set", "llm.max_length=64")
MEM = ("memory", "--model", "{st}")
BUDGET = ("budget", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out")

CASES: list[Case] = [
    # --- fit, embedding: files -------------------------------------------------------------------
    Case("fit-missing-train", fit_on("nope.csv"), expect=("data.train", "not found")),
    Case("fit-empty-file", fit_on("empty.csv"), {"empty.csv": ""}, expect=("no rows",)),
    Case("fit-header-only", fit_on("d.csv"), {"d.csv": "query,positive\n"}, expect=("no rows",)),
    Case("fit-wrong-columns", fit_on("d.csv"), {"d.csv": "question,answer\na,b\nc,d\ne,f\n"}, expect=("no column 'query'",)),
    Case("fit-jsonl-not-json", fit_on("d.jsonl"), {"d.jsonl": '{"query": "a", \n'}, expect=("line 1 is not valid JSON",)),
    Case("fit-jsonl-not-objects", fit_on("d.jsonl"), {"d.jsonl": "[1, 2]\n[3, 4]\n"}, expect=("expected a JSON object",)),
    Case("fit-binary-as-csv", fit_on("d.csv"), {"d.csv": bytes(range(256)) * 4}, expect=("not UTF-8",)),
    Case("fit-unknown-extension", fit_on("d.xlsx"), {"d.xlsx": "query,positive\na,b\n"}, expect=("'.xlsx'",)),
    Case("fit-empty-folder-as-data", fit_on("data"), {"data/": ""}, expect=("save_to_disk",)),
    Case("fit-null-text", fit_on("d.jsonl"),
         {"d.jsonl": jsonl([{"query": None, "positive": "b"}, {"query": "c", "positive": "d"}, {"query": "e", "positive": "f"}])},
         expect=("row 1", "'query'")),
    Case("fit-triplets-without-negative", (*FIT, "--set", "data.kind=triplets"), P, expect=("negative",)),
    Case("fit-eval-duplicate-ids", (*FIT, "--set", "data.eval_queries={tmp}/q.jsonl", "--set", "data.eval_corpus={tmp}/c.jsonl",
                                    "--set", "data.eval_qrels={tmp}/r.jsonl"),
         {**P, "q.jsonl": jsonl([{"id": "q1", "text": "a"}, {"id": "q1", "text": "b"}]),
          "c.jsonl": jsonl([{"id": "d1", "text": "x"}, {"id": "d2", "text": "y"}]),
          "r.jsonl": jsonl([{"query_id": "q1", "doc_id": "d1"}])}, expect=("'q1' appears twice",)),
    Case("fit-qrels-unknown-doc", (*FIT, "--set", "data.eval_queries={tmp}/q.jsonl", "--set", "data.eval_corpus={tmp}/c.jsonl",
                                   "--set", "data.eval_qrels={tmp}/r.jsonl"),
         {**P, "q.jsonl": jsonl([{"id": "q1", "text": "a"}, {"id": "q2", "text": "b"}]),
          "c.jsonl": jsonl([{"id": "d1", "text": "x"}, {"id": "d2", "text": "y"}]),
          "r.jsonl": jsonl([{"query_id": "q1", "doc_id": "d1"}, {"query_id": "q2", "doc_id": "d9"}])}, expect=("d9",)),
    Case("fit-eval-queries-alone", (*FIT, "--set", "data.eval_queries={tmp}/q.jsonl"),
         {**P, "q.jsonl": jsonl([{"id": "q1", "text": "a"}])}, expect=("go together",)),
    # --- fit: options and values -------------------------------------------------------------------
    Case("fit-epochs-inf", (*FIT, "--set", "train.epochs=.inf"), P, expect=("train.epochs",)),
    Case("fit-lr-nan", (*FIT, "--set", "train.learning_rate=.nan"), P, expect=("train.learning_rate",)),
    Case("fit-epochs-negative", (*FIT, "--epochs", "-1"), P, expect=("epochs",)),
    Case("fit-batch-size-zero", (*FIT, "--batch-size", "0"), P, expect=("batch_size",)),
    Case("fit-eval-fraction-one", (*FIT, "--set", "data.eval_fraction=1.0"), P, expect=("eval_fraction",)),
    Case("fit-max-train-zero", (*FIT, "--set", "data.max_train=0"), P, expect=("max_train",)),
    Case("fit-unknown-task", (*FIT, "--set", "task=nosuch"), P, expect=("task", "nosuch")),
    Case("fit-unknown-strategy", (*FIT, "--strategy", "nosuch"), P, expect=("nosuch",)),
    Case("fit-unknown-metric", (*FIT, "--set", "eval.primary=nosuch"), P, expect=("eval.primary", "nosuch")),
    Case("fit-unknown-loss", (*FIT, "--loss", "nosuch"), P, expect=("nosuch",)),
    Case("fit-unknown-format", (*FIT, "--set", "data.format=xlsx"), P, expect=("data.format",)),
    Case("fit-unknown-device", (*FIT, "--set", "train.device=tpu"), P, expect=("train.device",)),
    Case("fit-option-of-another-strategy", (*FIT, "--set", "strategy={name: full, rank: 8}"), P, expect=("rank",)),
    Case("fit-lora-rank-zero", (*FIT, "--set", "strategy={name: lora, rank: 0}"), P, expect=("rank",)),
    Case("fit-set-without-equals", (*FIT, "--set", "train.epochs"), P, expect=("train.epochs",)),
    Case("fit-set-broken-yaml", (*FIT, "--set", "train.epochs=[1"), P, expect=("train.epochs",)),
    Case("fit-set-unknown-section", (*FIT, "--set", "trian.epochs=1"), P, expect=("trian",)),
    Case("fit-lr-abc", (*FIT, "--lr", "abc"), P, expect=("--lr", "'abc' is not a number")),
    Case("fit-missing-option-value", ("fit", "--train"), expect=("--train", "needs a value")),
    Case("fit-folds-unknown-option", (*FIT, "--folds", "5"), P, expect=("--folds", "unknown option")),
    Case("fit-fp16-on-cpu", (*FIT, "--set", "train.precision=fp16", "--set", "train.device=cpu"), P,
         expect=("train.precision",)),
    Case("fit-early-stopping-zero", (*FIT, "--set", "train.early_stopping_patience=0"), P,
         expect=("early_stopping_patience",)),
    Case("fit-seed-not-integer", (*FIT, "--seed", "1.5"), P, expect=("--seed",)),
    Case("fit-output-under-a-file", ("fit", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "/etc/hostname/out"),
         P, expect=("output_dir",)),
    Case("fit-output-exists", FIT, {**P, "out/keep.txt": "mine"}, expect=("already exists", "--overwrite"), absent=()),
    Case("fit-output-is-a-file", (*FIT[:-1], "{tmp}/out.txt", "--overwrite"), {**P, "out.txt": "mine"},
         expect=("is a file",), absent=()),
    Case("fit-model-missing", ("fit", "--train", "{tmp}/pairs.jsonl", "--model", "{tmp}/nosuch", "-o", "{tmp}/out"), P,
         expect=("model",)),
    Case("fit-model-empty-folder", ("fit", "--train", "{tmp}/pairs.jsonl", "--model", "{tmp}/m", "-o", "{tmp}/out"),
         {**P, "m/": ""}, expect=("no config.json",)),
    Case("fit-config-missing", ("fit", "{tmp}/nope.yaml"), expect=("not found",)),
    Case("fit-config-broken-yaml", ("fit", "{tmp}/c.yaml"), {"c.yaml": "train: [unclosed\n"}, expect=("not valid YAML",)),
    Case("fit-config-not-a-mapping", ("fit", "{tmp}/c.yaml"), {"c.yaml": "- a\n- b\n"}, expect=("must be a mapping",)),
    Case("fit-config-unknown-key", ("fit", "{tmp}/c.yaml"), {"c.yaml": "trian:\n  epochs: 2\n"}, expect=("trian",)),
    Case("fit-config-binary", ("fit", "{tmp}/c.yaml"), {"c.yaml": b"\xff\xfe\x00garbage\x00"}, expect=("not UTF-8",)),
    Case("fit-console-script-bad-set", (*FIT, "--set", "train.epochs=.inf"), P, expect=("train.epochs",), process=True),
    # --- fit, classification -------------------------------------------------------------------
    Case("cls-null-labels", (*CLS, "{tmp}/d.jsonl"),
         {"d.jsonl": jsonl([{"text": t, "label": None if i == 3 else lab} for i, (t, lab) in enumerate(texts())])},
         expect=("row 4",)),
    Case("cls-nan-label", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv([*texts(), ("w1 w2", "NaN")])}, expect=("label",)),
    Case("cls-one-class", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv(texts(classes=("alpha",)))},
         expect=("only 1 class",)),
    Case("cls-missing-text-column", (*CLS, "{tmp}/d.csv"), {"d.csv": "sentence,label\na,x\nb,y\n"}, expect=("no column 'text'",)),
    Case("cls-single-item-class", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv(texts() + LONELY)}, expect=QUIRK),
    Case("cls-csv-nel-ls-ps", (*CLS, "{tmp}/d.csv"),
         {"d.csv": labeled_csv([(f"w1\x85w2\u2028w3\u2029w4 {i}", lab) for i, (_, lab) in enumerate(texts())] + LONELY)},
         expect=QUIRK),
    Case("cls-csv-nul", (*CLS, "{tmp}/d.csv"),
         {"d.csv": labeled_csv([(f"w1\x00w2 {i}", lab) for i, (_, lab) in enumerate(texts())] + LONELY)}, expect=QUIRK),
    Case("cls-csv-crlf", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv(texts() + LONELY, newline="\r\n")}, expect=QUIRK),
    Case("cls-csv-bom", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv(texts() + LONELY, bom=True)}, expect=QUIRK),
    Case("cls-csv-10mb-field", (*CLS, "{tmp}/d.csv"), {"d.csv": labeled_csv([("w1 " * 3_500_000, "alpha"), *texts(), *LONELY])},
         expect=QUIRK),
    Case("cls-head-dim-refused", (*CLS, "{tmp}/d.csv", "--set", "strategy={name: head, dim: 8}"),
         {"d.csv": labeled_csv(texts())}, expect=("dim",)),
    Case("cls-remote-code-model", (*CLS[:3], "--model", "{tmp}/remote", "-o", "{tmp}/out", "--train", "{tmp}/d.csv"),
         {"d.csv": labeled_csv(texts()), "remote": remote_code_model}, expect=("code",), absent=("out", "remote/PWNED")),
    Case("cls-pickle-weights", (*CLS[:3], "--model", "{tmp}/pickled", "-o", "{tmp}/out", "--train", "{tmp}/d.csv"),
         {"d.csv": labeled_csv(texts()), "pickled": pickle_model}, expect=("pickle",), absent=("out", "pickled/PWNED")),
    Case("cls-evaluate-bare-backbone", ("evaluate", "--set", "task=classification", "--model", "{bert}",
                                        "--train", "{tmp}/d.csv"), {"d.csv": labeled_csv(texts())}, expect=("head",)),
    Case("cls-evaluate-other-labels", ("evaluate", "--set", "task=classification", "--model", "{tmp}/clf",
                                       "--train", "{tmp}/d.csv"), {"d.csv": labeled_csv(texts()), "clf": classifier_of(("x", "y"))},
         expect=("label",)),
    Case("embedding-remote-code-model", ("fit", "--train", "{tmp}/pairs.jsonl", "--model", "{tmp}/remote", "-o", "{tmp}/out"),
         {**P, "remote": remote_code_model}, expect=("code",), absent=("out", "remote/PWNED")),
    # --- fit, image-classification and image-search -----------------------------------------------
    Case("img-corrupt-image", (*IMG, "--train", "{tmp}/imgs"), {"imgs": image_folder(extra={"red/bad.png": CORRUPT_PNG})},
         expect=("bad.png",)),
    Case("img-one-class", (*IMG, "--train", "{tmp}/imgs"), {"imgs": image_folder(classes=("red",))}, expect=("only 1 class",)),
    Case("img-empty-folder", (*IMG, "--train", "{tmp}/imgs"), {"imgs/": ""}, expect=("no class subfolders",)),
    Case("img-csv-path-outside-root", (*IMG, "--train", "{tmp}/imgs/d.csv"),
         {"imgs": image_folder(extra={"d.csv": b"image,label\n../x.png,red\nred/0.png,red\n"})}, expect=("outside",)),
    Case("img-csv-missing-image", (*IMG, "--train", "{tmp}/imgs/d.csv"),
         {"imgs": image_folder(extra={"d.csv": b"image,label\nred/0.png,red\nred/nosuch.png,red\ngreen/0.png,green\n"
                                                b"green/1.png,green\n"})}, expect=("nosuch.png",)),
    Case("img-text-file-as-image", (*IMG, "--train", "{tmp}/imgs"), {"imgs": image_folder(extra={"red/notes.png": b"hello"})},
         expect=("notes.png",)),
    Case("img-size-zero", (*IMG, "--train", "{tmp}/imgs", "--set", "image.size=0"), {"imgs": image_folder()},
         expect=("image.size",)),
    Case("img-unknown-image-key", (*IMG, "--train", "{tmp}/imgs", "--set", "image.sise=32"), {"imgs": image_folder()},
         expect=("image.sise",)),
    Case("img-bad-on-bad-image", (*IMG, "--train", "{tmp}/imgs", "--set", "image.on_bad_image=maybe"), {"imgs": image_folder()},
         expect=("on_bad_image",)),
    Case("img-text-model", ("fit", "--set", "task=image-classification", "--set", "image.size=32", "--model", "{bert}",
                            "-o", "{tmp}/out", "--train", "{tmp}/imgs"), {"imgs": image_folder()},
         expect=("text model", "image-classification")),
    Case("imgsearch-unknown-loss", ("fit", "--set", "task=image-search", "--model", "{resnet}", "-o", "{tmp}/out",
                                    "--train", "{tmp}/imgs", "--loss", "nosuch"), {"imgs": image_folder()}, expect=("nosuch",)),
    Case("imgsearch-projection-zero", ("fit", "--set", "task=image-search", "--model", "{resnet}", "-o", "{tmp}/out",
                                       "--train", "{tmp}/imgs", "--set", "image.projection_dim=0"), {"imgs": image_folder()},
         expect=("projection_dim",)),
    Case("imgsearch-all-images-skipped", ("fit", "--set", "task=image-search", "--model", "{resnet}", "-o", "{tmp}/out",
                                          "--train", "{tmp}/imgs", "--set", "image.on_bad_image=skip"),
         {"imgs": image_folder(classes=(), extra={"red/a.png": CORRUPT_PNG, "blue/b.png": b"not an image"})},
         expect=("none of the 2 images",)),
    # --- fit, clip ---------------------------------------------------------------------------------
    Case("clip-missing-caption-column", ("fit", "--set", "task=clip", "--model", "{clip}", "-o", "{tmp}/out",
                                         "--train", "{tmp}/imgs/captions.csv"),
         {"imgs": lambda root: captions(root, [("red/0.png", "red"), ("red/1.png", "red")], header="image,text")},
         expect=("caption",)),
    Case("clip-missing-image", ("fit", "--set", "task=clip", "--model", "{clip}", "-o", "{tmp}/out",
                                "--train", "{tmp}/imgs/captions.csv"),
         {"imgs": lambda root: captions(root, [("red/0.png", "a red square"), ("red/9.png", "a red one"),
                                               ("blue/0.png", "a blue square")])}, expect=("9.png",)),
    Case("clip-text-model", ("fit", "--set", "task=clip", "--model", "{st}", "-o", "{tmp}/out",
                             "--train", "{tmp}/imgs/captions.csv"), {"imgs": captions},
         expect=("text model", "clip")),
    # --- fit, causal-lm ----------------------------------------------------------------------------
    Case("lm-prompt-longer-than-context", (*LM, "--train", "{tmp}/d.jsonl"),
         {"d.jsonl": lm_rows(prompt="item " + "roof " * 40 + "{i}")}, expect=("max_length",)),
    Case("lm-missing-completion", (*LM, "--train", "{tmp}/d.jsonl"),
         {"d.jsonl": jsonl([{"prompt": f"p {i}"} for i in range(12)])}, expect=("completion",)),
    Case("lm-bad-chat-role", (*LM, "--train", "{tmp}/d.jsonl"),
         {"d.jsonl": jsonl([{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 12)},
         expect=("wizard",)),
    Case("lm-bad-format-regex", (*LM, "--train", "{tmp}/d.jsonl", "--set", "llm.format_check=regex:(unclosed"),
         {"d.jsonl": lm_rows()}, expect=("format_check",)),
    Case("lm-unknown-format-check", (*LM, "--train", "{tmp}/d.jsonl", "--set", "llm.format_check=xml"),
         {"d.jsonl": lm_rows()}, expect=("format_check",)),
    Case("lm-head-strategy-refused", (*LM, "--train", "{tmp}/d.jsonl", "--strategy", "head"), {"d.jsonl": lm_rows()},
         expect=("head",)),
    Case("lm-max-length-zero", (*LM, "--train", "{tmp}/d.jsonl", "--set", "llm.max_length=0"), {"d.jsonl": lm_rows()},
         expect=("max_length",)),
    # --- evaluate ----------------------------------------------------------------------------------
    Case("evaluate-missing-train", ("evaluate", "--train", "{tmp}/nope.jsonl", "--model", "{st}"), expect=("not found",)),
    Case("evaluate-missing-model", ("evaluate", "--train", "{tmp}/pairs.jsonl", "--model", "{tmp}/nosuch"), P,
         expect=("nosuch",)),
    Case("evaluate-unknown-key", ("evaluate", "--train", "{tmp}/pairs.jsonl", "--set", "eval.kk=3"), P, expect=("eval.kk",)),
    Case("evaluate-k-zero", ("evaluate", "--train", "{tmp}/pairs.jsonl", "--set", "eval.k=[0]"), P, expect=("eval.k",)),
    Case("evaluate-corrupt-image", ("evaluate", "--set", "task=image-search", "--set", "image.size=32", "--model",
                                    "{resnet}", "--train", "{tmp}/imgs"),
         {"imgs": image_folder(extra={"blue/bad.png": CORRUPT_PNG})}, expect=("bad.png",)),
    Case("evaluate-lm-prompt-too-long", ("evaluate", "--set", "task=causal-lm", "--set", "llm.max_length=64", "--model",
                                         "{llama}", "--train", "{tmp}/d.jsonl"),
         {"d.jsonl": lm_rows(prompt="item " + "roof " * 40 + "{i}")}, expect=("max_length",)),
    # --- demo --------------------------------------------------------------------------------------
    Case("demo-unknown-task", ("demo", "--task", "nosuch", "-o", "{tmp}/out"), expect=("--task", "nosuch")),
    Case("demo-unknown-lang", ("demo", "--lang", "xx", "-o", "{tmp}/out"), expect=("--lang",)),
    Case("demo-seeds-without-budget", ("demo", "--seeds", "2", "-o", "{tmp}/out"), expect=("--seeds",)),
    Case("demo-unknown-set-key", ("demo", "--set", "train.nosuch=1", "-o", "{tmp}/out"), expect=("train.nosuch",)),
    Case("demo-output-under-a-file", ("demo", "-o", "/etc/hostname/out"), expect=("output_dir",)),
    # --- config ------------------------------------------------------------------------------------
    Case("config-unknown-task", ("config", "--set", "task=nosuch"), expect=("nosuch",)),
    Case("config-broken-yaml", ("config", "{tmp}/c.yaml"), {"c.yaml": "a: b: c\n"}, expect=("not valid YAML",)),
    Case("config-option-of-another-strategy", ("config", "--set", "strategy={name: head, rank: 4}"), expect=("rank",)),
    Case("config-lr-inf", ("config", "--set", "train.learning_rate=.inf"), expect=("train.learning_rate",)),
    Case("config-refused-strategy", ("config", "--set", "task=causal-lm", "--set", "strategy.name=head"), expect=("head",)),
    # --- compare -----------------------------------------------------------------------------------
    Case("compare-unknown-strategy", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out",
                                      "--strategy", "full", "--strategy", "nosuch"), P, expect=("nosuch",)),
    Case("compare-bad-option-value", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out",
                                      "--strategy", "lora:rank=abc"), P, expect=("rank",)),
    Case("compare-option-without-value", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out",
                                          "--strategy", "lora:rank"), P, expect=("rank",)),
    Case("compare-empty-strategy", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "{tmp}/out",
                                    "--strategy", ""), P, expect=("empty strategy name",)),
    Case("compare-option-of-another-strategy", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o",
                                                "{tmp}/out", "--strategy", "full:rank=4"), P, expect=("rank",)),
    Case("compare-missing-train", ("compare", "--train", "{tmp}/nope.jsonl", "--model", "{st}", "-o", "{tmp}/out",
                                   "--strategy", "full"), expect=("not found",)),
    Case("compare-output-under-a-file", ("compare", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o",
                                         "/etc/hostname/c", "--strategy", "full"), P, expect=("output_dir",)),
    # --- merge -------------------------------------------------------------------------------------
    Case("merge-not-a-run", ("merge", "{tmp}/folder", "-o", "{tmp}/out"), {"folder/notes.txt": "hi"}, expect=("adapter",)),
    Case("merge-missing-folder", ("merge", "{tmp}/nosuch", "-o", "{tmp}/out"), expect=("nosuch",)),
    Case("merge-into-itself", ("merge", "{tmp}/run", "-o", "{tmp}/run", "--overwrite"), {"run": lora_run},
         expect=("--output-dir",), absent=()),
    Case("merge-into-its-parent", ("merge", "{tmp}/run", "-o", "{tmp}", "--overwrite"), {"run": lora_run},
         expect=("--output-dir",), absent=()),
    Case("merge-without-output", ("merge", "{tmp}/run"), {"run": lora_run}, expect=("--output-dir",), absent=()),
    Case("merge-unknown-base-model", ("merge", "{tmp}/run", "-o", "{tmp}/out"), {"run": lora_run}, expect=("nosuch",)),
    Case("merge-output-under-a-file", ("merge", "{tmp}/run", "-o", "/etc/hostname/m"), {"run": lora_run},
         expect=("output_dir",), absent=()),
    # --- interpolate ---------------------------------------------------------------------------------
    Case("interpolate-general-missing", ("interpolate", "{tmp}/run", "--general", "{tmp}/nope.jsonl"),
         {**P, "run/config.yaml": EMBEDDING_RUN}, expect=("--general", "nope.jsonl")),
    Case("interpolate-not-a-run", ("interpolate", "{tmp}/folder"), {"folder/notes.txt": "hi"}, expect=("config.yaml",)),
    Case("interpolate-bad-alphas", ("interpolate", "{tmp}/run", "--alphas", "0,x,1"), {**P, "run/config.yaml": EMBEDDING_RUN},
         expect=("--alphas",)),
    Case("interpolate-alpha-out-of-range", ("interpolate", "{tmp}/run", "--alphas", "0,2"),
         {**P, "run/config.yaml": EMBEDDING_RUN}, expect=("--alphas",)),
    Case("interpolate-max-forgetting-negative", ("interpolate", "{tmp}/run", "--max-forgetting", "-0.5"),
         {**P, "run/config.yaml": EMBEDDING_RUN}, expect=("--max-forgetting",)),
    Case("interpolate-head-run", ("interpolate", "{tmp}/run"),
         {**P, "run/config.yaml": EMBEDDING_RUN.replace("name: full", "name: head")}, expect=("head",)),
    Case("interpolate-classification-run", ("interpolate", "{tmp}/run"),
         {"run/config.yaml": "task: classification\nmodel: {bert}\n"}, expect=("interpolate",)),
    Case("interpolate-output-under-a-file", ("interpolate", "{tmp}/run", "-o", "/etc/hostname/i"),
         {**P, "run/config.yaml": EMBEDDING_RUN}, expect=("output_dir",)),
    # --- budget and demo-budget ----------------------------------------------------------------------
    Case("budget-knee-drop-2", (*BUDGET, "--knee-drop", "2"), P, expect=("--knee-drop",)),
    Case("budget-sizes-not-numbers", (*BUDGET, "--sizes", "10,abc"), P, expect=("--sizes",)),
    Case("budget-sizes-zero", (*BUDGET, "--sizes", "0,10"), P, expect=("--sizes",)),
    Case("budget-seeds-zero", (*BUDGET, "--seeds", "0"), P, expect=("--seeds",)),
    Case("budget-target-above-one", (*BUDGET, "--target", "2"), P, expect=("--target",)),
    Case("budget-unknown-backend", (*BUDGET, "--backend", "nosuch"), P, expect=("--backend",)),
    Case("budget-negative-price", (*BUDGET, "--price-per-hour", "-3"), P, expect=("--price-per-hour",)),
    Case("budget-missing-train", ("budget", "--train", "{tmp}/nope.jsonl", "--model", "{st}", "-o", "{tmp}/out"),
         expect=("not found",)),
    Case("budget-output-under-a-file", ("budget", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "-o", "/etc/hostname/b"),
         P, expect=("/etc/hostname",)),
    Case("budget-epochs-inf", (*BUDGET, "--set", "train.epochs=.inf"), P, expect=("train.epochs",)),
    Case("demo-budget-seeds-zero", ("demo-budget", "--seeds", "0", "-o", "{tmp}/out"), expect=("--seeds",)),
    Case("demo-budget-unknown-backend", ("demo-budget", "--backend", "nosuch", "-o", "{tmp}/out"), expect=("--backend",)),
    Case("demo-budget-unknown-set-key", ("demo-budget", "--set", "train.nosuch=1", "-o", "{tmp}/out"),
         expect=("train.nosuch",)),
    Case("demo-budget-output-under-a-file", ("demo-budget", "-o", "/etc/hostname/b"), expect=("/etc/hostname",)),
    # --- memory ------------------------------------------------------------------------------------
    Case("memory-model-missing", ("memory", "--model", "./nosuch"), expect=("nosuch",)),
    Case("memory-unknown-task", (*MEM, "--task", "nosuch"), expect=("nosuch",)),
    Case("memory-unknown-strategy", (*MEM, "--strategy", "nosuch"), expect=("nosuch",)),
    Case("memory-unknown-precision", (*MEM, "--precision", "fp8"), expect=("fp8",)),
    Case("memory-unknown-optimizer", (*MEM, "--optimizer", "lion"), expect=("lion",)),
    Case("memory-batch-size-zero", (*MEM, "--batch-size", "0"), expect=("batch",)),
    Case("memory-bad-device-memory", (*MEM, "--device-memory", "lots"), expect=("--device-memory",)),
    Case("memory-headroom-above-one", (*MEM, "--headroom", "2"), expect=("headroom",)),
    Case("memory-unknown-lora-target", (*MEM, "--strategy", "lora", "--lora-targets", "q,zz"), expect=("zz",)),
    Case("memory-unknown-family", ("memory", "--family", "rnn", "--num-layers", "2", "--hidden-size", "32", "--num-heads",
                                   "2", "--intermediate-size", "64"), expect=("rnn",)),
    Case("memory-negative-seq-len", (*MEM, "--seq-len", "-4"), expect=("seq",)),
    Case("memory-refused-strategy", ("memory", "--model", "{llama}", "--task", "causal-lm", "--strategy", "head"),
         expect=("head",)),
    Case("memory-image-task-text-model", ("memory", "--model", "{st}", "--task", "image-classification"),
         expect=("text model",)),
]

# --- k-fold cross-validation (--folds, eval.folds) ---------------------------------------------------
# ``fit --folds`` exists now: the earlier case that expected it to be an unknown option is retired.
CASES = [case for case in CASES if case.id != "fit-folds-unknown-option"]
CASES += [
    Case("fit-folds-one", (*FIT, "--folds", "1"), P, expect=("--folds", "at least 2", "got 1")),
    Case("fit-folds-more-than-query-groups", (*FIT, "--folds", "31"), P, expect=("--folds", "31 folds", "has 30")),
    Case("fit-final-fit-without-folds", (*FIT, "--final-fit"), P, expect=("--final-fit", "--folds")),
    Case("cls-folds-more-than-smallest-class", (*CLS, "{tmp}/d.csv", "--folds", "7"), {"d.csv": labeled_csv(texts())},
         expect=("--folds", "7 stratified folds", "has 6")),
    Case("evaluate-folds-more-than-query-groups", ("evaluate", "--train", "{tmp}/pairs.jsonl", "--model", "{st}", "--folds", "40"),
         P, expect=("--folds", "40 folds", "has 30")),
    Case("budget-folds-grid-below-k", (*BUDGET, "--folds", "3", "--sizes", "2,10"), P, expect=("--sizes", "smallest size 2", "--folds 3")),
]
