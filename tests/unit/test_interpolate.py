"""WiSE-FT maths: alpha = 0 is the base, alpha = 1 the fine-tuned model; the rule that picks alpha."""

from __future__ import annotations

import pytest
import torch

from tunewise.errors import TunewiseError
from tunewise.strategies.interpolate import check_alphas, interpolate_state_dicts, pick_alpha


def _pair():
    torch.manual_seed(0)
    theta0 = {"w": torch.tensor([[0.0, 2.0], [4.0, -2.0]]), "b": torch.tensor([1.0, 1.0]),
              "ids": torch.arange(3), "h": torch.tensor([1.0, 2.0], dtype=torch.float16)}
    theta1 = {"w": torch.tensor([[2.0, 2.0], [0.0, 2.0]]), "b": torch.tensor([3.0, -1.0]),
              "ids": torch.arange(3), "h": torch.tensor([3.0, 4.0], dtype=torch.float16)}
    return theta0, theta1


def test_alpha_zero_is_the_base_and_one_the_fine_tuned_model_exactly():
    theta0, theta1 = _pair()
    for key, value in interpolate_state_dicts(theta0, theta1, 0.0).items():
        assert torch.equal(value, theta0[key])
    for key, value in interpolate_state_dicts(theta0, theta1, 1.0).items():
        assert torch.equal(value, theta1[key])


def test_blend_values_by_hand():
    theta0, theta1 = _pair()
    out = interpolate_state_dicts(theta0, theta1, 0.25)
    # 0.75 * theta0 + 0.25 * theta1, entry by entry
    assert torch.equal(out["w"], torch.tensor([[0.5, 2.0], [3.0, -1.0]]))
    assert torch.equal(out["b"], torch.tensor([1.5, 0.5]))
    assert out["h"].dtype == torch.float16 and torch.equal(out["h"], torch.tensor([1.5, 2.5], dtype=torch.float16))
    assert torch.equal(out["ids"], torch.arange(3))  # integer buffers are copied, not blended


def test_inputs_are_not_modified():
    theta0, theta1 = _pair()
    before = {k: v.clone() for k, v in theta1.items()}
    out = interpolate_state_dicts(theta0, theta1, 1.0)
    out["w"] += 1
    assert all(torch.equal(theta1[k], before[k]) for k in theta1)


@pytest.mark.parametrize("alpha", [-0.1, 1.01, 2])
def test_alpha_outside_unit_interval_is_rejected(alpha):
    theta0, theta1 = _pair()
    with pytest.raises(TunewiseError, match=r"alpha must be in \[0, 1\]"):
        interpolate_state_dicts(theta0, theta1, alpha)


def test_different_architectures_are_rejected():
    theta0, theta1 = _pair()
    theta1["extra"] = torch.zeros(1)
    with pytest.raises(TunewiseError, match="differ in architecture"):
        interpolate_state_dicts(theta0, theta1, 0.5)
    theta0, theta1 = _pair()
    theta1["w"] = torch.zeros(3, 2)
    with pytest.raises(TunewiseError, match="'w' has shape"):
        interpolate_state_dicts(theta0, theta1, 0.5)


def test_check_alphas_sorts_and_deduplicates():
    assert check_alphas([1, 0.5, 0, 0.5]) == [0.0, 0.5, 1.0]
    with pytest.raises(TunewiseError, match="at least one alpha"):
        check_alphas([])


def test_pick_alpha_best_in_domain_within_the_forgetting_limit():
    rows = [{"alpha": 0.0, "in_domain": 0.30, "forgetting": 0.0},
            {"alpha": 0.5, "in_domain": 0.40, "forgetting": 0.03},
            {"alpha": 0.75, "in_domain": 0.40, "forgetting": 0.04},
            {"alpha": 1.0, "in_domain": 0.45, "forgetting": 0.10}]
    assert pick_alpha(rows, 0.05)["alpha"] == 0.5  # 1.0 forgets too much; tie 0.5/0.75 -> smaller alpha
    assert pick_alpha(rows, 0.20)["alpha"] == 1.0
    assert pick_alpha(rows[1:], 0.01)["alpha"] == 0.5  # none within the limit: the one that forgets least


def test_sweep_on_tiny_models_ends_at_base_and_fine_tuned(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    from tunewise.config import EvalConfig
    from tunewise.data.retrieval import IRDataset
    from tunewise.wiseft import sweep

    base = SentenceTransformer(tiny_st_model, device="cpu")
    tuned = SentenceTransformer(tiny_st_model, device="cpu")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ds = IRDataset({"q1": "roof permit", "q2": "garage rules"},
                   {"d1": "answer regarding roof", "d2": "answer regarding garage", "d3": "pool info"},
                   {"q1": {"d1": 1}, "q2": {"d2": 1}})
    result = sweep(base, tuned, ds, ds, EvalConfig(k=[1, 3], primary="mrr@3"), [0, 1], max_forgetting=0.05)
    assert result["rows"][0]["forgetting"] == 0.0  # alpha 0 is the base model
    assert result["rows"][0]["general"] == result["general_before"]
    assert result["chosen"]["alpha"] in (0.0, 1.0)


def test_interpolate_run_sweeps_a_finished_run_and_saves_the_chosen_blend(tiny_st_model, pairs_file, tmp_path):
    from rich.console import Console
    from sentence_transformers import SentenceTransformer

    import tunewise
    from tunewise.wiseft import interpolate_run

    run = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
                        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}, "eval": {"k": [1, 10]},
                        "strategy": {"name": "full", "interpolate": [0, 1]}}, console=Console(quiet=True))
    inrun = run.metrics["interpolation"]
    assert [r["alpha"] for r in inrun["rows"]] == [0.0, 1.0]
    assert inrun["rows"][1]["in_domain"] == pytest.approx(run.metrics["after"]["mrr@20"], abs=1e-6)
    assert "Robust interpolation (WiSE-FT)" in (run.output_dir / "README.md").read_text()
    result = interpolate_run(run.output_dir, alphas=[0, 0.5, 1], max_forgetting=1.0, general=str(pairs_file),
                             output_dir=tmp_path / "blend")
    assert result["rows"][0]["in_domain"] == pytest.approx(run.metrics["before"]["mrr@20"], abs=1e-6)
    assert result["rows"][-1]["in_domain"] == pytest.approx(run.metrics["after"]["mrr@20"], abs=1e-6)
    assert SentenceTransformer(str(tmp_path / "blend"), device="cpu") is not None
    assert (tmp_path / "blend" / "interpolation.json").is_file()
