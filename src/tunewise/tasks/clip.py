"""Text-to-image search with CLIP: fine-tune on (image, caption) pairs, search images by text.

The model is a Hugging Face ``CLIPModel`` with its ``CLIPProcessor`` (tokenizer + image
processor), trained with the transformers Trainer on CLIP's own symmetric contrastive loss
(``return_loss=True``: image->text and text->image cross-entropy over the batch, Radford et
al. 2021). Saved with ``save_pretrained``, so ``CLIPModel.from_pretrained(path)`` and
``CLIPProcessor.from_pretrained(path)`` open it.

Evaluation holds out a seeded share of the pairs; each held-out caption searches all held-out
images, and its own image (and any other image with the same caption) is relevant. The
metrics are the foundation's retrieval metrics.

References: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision" (arXiv:2103.00020).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunewise.config import RunConfig
from tunewise.data.images import ImageDataset, Preprocess, encode_batches, read_image_records
from tunewise.data.retrieval import normalize
from tunewise.errors import TunewiseError
from tunewise.evaluate.metrics import mean_per_metric, parse_metric_name, retrieval_metrics_per_query
from tunewise.evaluate.retrieval import EvalResult, metric_names
from tunewise.evaluate.search import top_k
from tunewise.models.loading import check_modality, load_errors, load_pretrained, load_pretrained_model, resolve_model
from tunewise.tasks.base import TASKS, HeadSupport, MemoryProfile, TaskSpec, TrainStats
from tunewise.tasks.classifier_shared import run_trainer
from tunewise.tasks.image_classification import display_name
from tunewise.tasks.training import early_stopping

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CaptionData:
    """(image, caption) pairs to train on and to search with."""

    train: list[tuple[Path, str]]
    eval: list[tuple[Path, str]]
    report: dict[str, Any] = field(default_factory=dict)
    validation: list[tuple[Path, str]] | None = None  # early stopping: a share of the training pairs


class CaptionPairs(torch.utils.data.Dataset):
    """``{"pixel_values", "input_ids", "attention_mask"}`` per pair; images augmented."""

    def __init__(self, pairs: list[tuple[Path, str]], images: ImageDataset) -> None:
        self.pairs, self.images = pairs, images

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"pixel_values": self.images.image(i), "text": self.pairs[i][1]}


@TASKS.register("clip")
class ClipTask:
    """Fine-tune a CLIP model so that captions retrieve their images."""

    spec = TaskSpec(
        name="clip", summary="text-to-image search: captions retrieve their images (CLIP)",
        unit="pairs", primary="mrr@20",
        head=HeadSupport("clip-towers", refused_options=("dim", "activation"),
                         why="CLIP's heads are its two projections into the shared space"),
        # each tower encodes one input per example: an image and its caption
        memory=MemoryProfile(step="image-text", sequence="model", arch_from="model"),
        modality="image-text",
    )

    def __init__(self) -> None:
        self._processor: Any = None
        self._pre: Preprocess | None = None

    def check_config(self, config: RunConfig) -> None:
        check_modality(config.model, "image-text", task=self.spec.name)

    def prepare_data(self, config: RunConfig) -> CaptionData:
        metric_names(config.eval)
        records = read_image_records(config.data, config.image, "caption")
        pairs = list(zip(records.paths, records.targets))
        n = len(pairs)
        n_eval = config.data.eval_size if config.data.eval_size is not None else max(1, round(n * config.data.eval_fraction))
        if n_eval >= n - 1:
            raise TunewiseError(f"data.eval_size: {n_eval} held-out pairs of {n} leave fewer than 2 to train on; lower it")
        order = list(range(n))
        random.Random(config.seed).shuffle(order)
        held, kept = sorted(order[:n_eval]), sorted(order[n_eval:])
        if config.data.max_train is not None and len(kept) > config.data.max_train:
            kept = sorted(random.Random(config.seed).sample(kept, config.data.max_train))
        val: list[int] = []
        if early_stopping(config):  # captions of held-back training pairs search their images
            n_val = max(2, round(len(kept) * config.data.validation_fraction))
            if n_val >= len(kept) - 1:
                raise TunewiseError(f"data.validation_fraction: {n_val} validation pairs of {len(kept)} training pairs "
                                    "leave fewer than 2 to train on; lower it, or leave train.early_stopping_patience out")
            shuffled = random.Random(config.seed + 1).sample(kept, len(kept))
            val, kept = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
        data = CaptionData([pairs[i] for i in kept], [pairs[i] for i in held],
                           validation=[pairs[i] for i in val] if val else None)
        data.report = {"kind": "image-caption pairs", "items_read": n, "train_examples": len(kept),
                       "eval_queries": len(held), "eval_corpus": len(held), "validation_pairs": len(val), **records.report()}
        return data

    def data_report(self, data: CaptionData) -> dict[str, Any]:
        return data.report

    def n_train(self, data: CaptionData) -> int:
        return len(data.train)

    def subset(self, data: CaptionData, indices: list[int]) -> CaptionData:
        return dataclasses.replace(data, train=[data.train[i] for i in indices],
                                   report={**data.report, "train_examples": len(indices)})

    def load_model(self, config: RunConfig, device: str):
        """``CLIPModel`` and ``CLIPProcessor`` from a folder or hub id (no packaged default)."""
        from transformers import AutoProcessor, CLIPModel

        if not config.model:
            raise TunewiseError("model: task clip has no packaged model; give a CLIP folder or hub id, "
                                "e.g. model: openai/clip-vit-base-patch32")
        source = resolve_model(config.model)
        check_modality(source, "image-text", task=self.spec.name, fetch=True)
        with load_errors(source, " as CLIP with its processor"):
            model = load_pretrained_model(CLIPModel, source, dtype=torch.float32)
            self._processor = load_pretrained(AutoProcessor, source)
        image_proc = getattr(self._processor, "image_processor", None)
        mean = tuple(config.image.mean or getattr(image_proc, "image_mean", None) or CLIP_MEAN)
        std = tuple(config.image.std or getattr(image_proc, "image_std", None) or CLIP_STD)
        size = model.config.vision_config.image_size
        if config.image.size != size:
            # CLIP's position embeddings are for one size; the config's default would not fit.
            config.image.size = size
        self._pre = Preprocess(size, mean, std)  # type: ignore[arg-type]
        return model.to(device)

    def modules(self, model):
        return model

    def backbone(self, model):
        return model.vision_model

    def head_modules(self, model) -> list:
        """The two projections into the shared space (what strategy head trains)."""
        return [model.visual_projection, model.text_projection]

    # -- strategy head: cached tower outputs ---------------------------------------------
    def pooled_images(self, model, paths: list[Path], batch_size: int) -> torch.Tensor:
        """The vision tower's pooled output (n, vision hidden), before the projection."""
        device = next(model.parameters()).device
        return torch.cat([model.vision_model(pixel_values=b["pixel_values"].to(device)).pooler_output.float().cpu()
                          for b in encode_batches(ImageDataset(paths, None, self._pre), batch_size, "encoding images")])

    def pooled_texts(self, model, texts: list[str], batch_size: int) -> torch.Tensor:
        """The text tower's pooled output (n, text hidden), before the projection."""
        device = next(model.parameters()).device
        return torch.cat([model.text_model(**self._texts(texts[s:s + batch_size], device)).pooler_output.float().cpu()
                          for s in range(0, len(texts), batch_size)])

    def preprocessing(self) -> dict[str, Any]:
        from tunewise.models.feature_cache import texts_fingerprint

        vocab = sorted(self._processor.tokenizer.get_vocab().items())
        return {"image": dataclasses.asdict(self._pre), "vocab": texts_fingerprint([f"{k}\t{v}" for k, v in vocab])}

    def _texts(self, texts: list[str], device) -> dict[str, torch.Tensor]:
        enc = self._processor.tokenizer(texts, padding=True, truncation=True,
                                         max_length=getattr(self._processor.tokenizer, "model_max_length", 77) if
                                         self._processor.tokenizer.model_max_length < 10_000 else 77, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def embed(self, model, paths: list[Path], texts: list[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm image (n_images, d) and text (n_texts, d) embeddings."""
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        images = [F.normalize(_features(model.get_image_features(pixel_values=b["pixel_values"].to(device))), dim=-1).cpu()
                  for b in encode_batches(ImageDataset(paths, None, self._pre), batch_size, "encoding images")]
        text = [F.normalize(_features(model.get_text_features(**self._texts(texts[s:s + batch_size], device))), dim=-1).cpu()
                for s in range(0, len(texts), batch_size)]
        model.train(was)
        return (torch.cat(images) if images else torch.empty(0)), (torch.cat(text) if text else torch.empty(0))

    def evaluate(self, model, data: CaptionData, config: RunConfig, *, split: str = "eval") -> EvalResult:
        pairs = data.validation if split == "validation" else data.eval
        if pairs is None:
            raise TunewiseError(f"no {split} set was prepared")
        names = metric_names(config.eval)
        depth = max(parse_metric_name(n)[1] for n in names)
        start = time.perf_counter()
        paths, captions = [p for p, _ in pairs], [c for _, c in pairs]
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):  # the run's precision (train.precision)
            img, txt = self.embed(model, paths, captions, config.eval.batch_size)
        img, txt = img.float(), txt.float()  # similarities in fp32
        scores, idx = top_k(txt, img, min(depth, len(paths)), normalize=False, backend=config.eval.backend)
        by_caption: dict[str, list[int]] = {}
        for i, c in enumerate(captions):
            by_caption.setdefault(normalize(c), []).append(i)
        run = {f"q{q}": [f"d{d}" for d in row] for q, row in enumerate(idx.tolist())}
        qrels = {f"q{q}": {f"d{d}": 1 for d in by_caption[normalize(c)]} for q, c in enumerate(captions)}
        per_query = retrieval_metrics_per_query(run, qrels, ks=sorted({parse_metric_name(n)[1] for n in names}))
        all_metrics = mean_per_metric(per_query)
        metrics = {n: float(all_metrics[n]) for n in names}
        examples = [{
            "query": captions[q], "relevant": [display_name(paths[q])],
            "top": [{"text": display_name(paths[d]), "score": round(s, 4), "relevant": f"d{d}" in qrels[f"q{q}"]}
                    for d, s in zip(idx[q, :3].tolist(), scores[q, :3].tolist())],
        } for q in range(min(config.eval.examples, len(captions)))]
        return EvalResult(metrics, time.perf_counter() - start, examples, run, {n: per_query[n] for n in names})

    def train(self, model, data: CaptionData, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None, param_groups: list | None = None, **extra_args: Any) -> TrainStats:
        """The transformers Trainer on CLIP's symmetric contrastive loss (``return_loss=True``)."""
        from transformers import Trainer

        images = ImageDataset([p for p, _ in data.train], None, self._pre, augment=config.image, seed=config.seed)
        dataset = CaptionPairs(data.train, images)
        task = self

        def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
            enc = task._texts([it["text"] for it in items], "cpu")
            return {"pixel_values": torch.stack([it["pixel_values"] for it in items]), **enc, "return_loss": True}

        class ClipTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                outputs = model(**inputs)
                return (outputs.loss, outputs) if return_outputs else outputs.loss

        validate = None
        if early_stopping(config):
            validate = lambda: self.evaluate(model, data, config, split="validation").metrics  # noqa: E731
        return run_trainer(model, dataset, config, workdir=workdir, device=str(next(model.parameters()).device),
                           collator=collate, callbacks=callbacks, trainer_cls=ClipTrainer, param_groups=param_groups,
                           validate=validate, eval_dataset=data.validation if validate else None, **extra_args)

    def save(self, model, path: Path) -> None:
        model.save_pretrained(str(path), safe_serialization=True)
        self._processor.save_pretrained(str(path))

    def predictor(self, config: RunConfig, device: str):
        """``tunewise predict``: captions (or any text) embedded into the shared space; with ``--corpus``
        (images: a folder, or a file of paths) each text searches the images."""
        from tunewise.predict import Predictor

        model = self.load_model(config, device).eval()

        def texts(batch: list[str]) -> torch.Tensor:
            return self.embed(model, [], list(batch), len(batch))[1]

        def images(batch: list[Path]) -> torch.Tensor:
            return self.embed(model, list(batch), [], len(batch))[0]

        return Predictor(columns=("text", "caption", "query"), encode=texts,
                         corpus=Predictor(columns=("image", "path", "file"), modality="image", encode=images))

    def card_info(self, data: CaptionData) -> dict[str, str]:
        usage = (
            "from transformers import CLIPModel, CLIPProcessor\n"
            "model = CLIPModel.from_pretrained(\"path/to/this/folder\")\n"
            "processor = CLIPProcessor.from_pretrained(\"path/to/this/folder\")\n"
            "inputs = processor(text=[\"a caption\"], images=[image], return_tensors=\"pt\", padding=True)\n"
            "out = model(**inputs)  # out.logits_per_text: caption x image similarity"
        )
        evaluated_on = f"{len(data.eval)} held-out captions each searching {len(data.eval)} held-out images"
        return {"library": "transformers", "pipeline_tag": "zero-shot-image-classification", "usage": usage,
                "evaluated_on": evaluated_on}


def _features(out: Any) -> torch.Tensor:
    """transformers 5 may return a model output from get_*_features; take its embedding."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")
