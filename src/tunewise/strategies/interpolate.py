"""Weight-space interpolation (WiSE-FT): pure tensor maths, no models, no I/O.

theta(alpha) = (1 - alpha) * theta_0 + alpha * theta_1, per floating-point tensor, where
theta_0 are the pre-trained and theta_1 the fine-tuned weights. alpha = 0 is the pre-trained
model, alpha = 1 the fine-tuned one; in between, accuracy under distribution shift often
beats both ends while in-domain accuracy stays close to the fine-tuned model's.

References: Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", arXiv:2109.01903.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from tunewise.errors import TunewiseError


def check_alphas(alphas: Iterable[float], option: str = "alpha") -> list[float]:
    """Sorted unique alphas, each in [0, 1].

    Raises:
        TunewiseError: an alpha outside [0, 1], or none given.
    """
    values = []
    for a in alphas:
        if isinstance(a, bool) or not isinstance(a, (int, float)):
            raise TunewiseError(f"{option}: every alpha must be a number in [0, 1], got {a!r}")
        if not 0.0 <= float(a) <= 1.0:
            raise TunewiseError(f"{option}: alpha must be in [0, 1] (0 = pre-trained, 1 = fine-tuned), got {a}")
        values.append(float(a))
    if not values:
        raise TunewiseError(f"{option}: give at least one alpha in [0, 1], e.g. 0,0.5,1")
    return sorted(set(values))


def interpolate_state_dicts(theta0: Mapping[str, torch.Tensor], theta1: Mapping[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """Blend two state dicts of the same architecture: ``(1 - alpha) * theta0 + alpha * theta1``.

    Floating-point tensors are blended in float32 and cast back to theta1's dtype; other
    tensors (integer buffers such as ``position_ids``) must be equal and are copied.

    Args:
        theta0: pre-trained weights.
        theta1: fine-tuned weights (same keys and shapes).
        alpha: weight of the fine-tuned model, in [0, 1].

    Returns:
        A new state dict; the inputs are not modified.

    Raises:
        TunewiseError: alpha outside [0, 1], different keys or shapes, or unequal non-float tensors.
    """
    check_alphas([alpha])
    if set(theta0) != set(theta1):
        only0, only1 = sorted(set(theta0) - set(theta1)), sorted(set(theta1) - set(theta0))
        raise TunewiseError(
            "interpolate: the models differ in architecture "
            f"(only in the base: {only0[:3]}, only in the fine-tuned: {only1[:3]}); "
            "WiSE-FT needs the same weights on both sides (full, partial or merged LoRA runs)"
        )
    out: dict[str, torch.Tensor] = {}
    for key, t1 in theta1.items():
        t0 = theta0[key]
        if t0.shape != t1.shape:
            raise TunewiseError(f"interpolate: '{key}' has shape {tuple(t0.shape)} in the base and {tuple(t1.shape)} fine-tuned")
        if not torch.is_floating_point(t1):
            if not torch.equal(t0.to(t1.device), t1):
                raise TunewiseError(f"interpolate: non-float tensor '{key}' differs between the models")
            out[key] = t1.clone()
            continue
        # alpha = 0 and 1 return exact copies (no float round-off through the blend)
        if alpha == 0.0:
            out[key] = t0.detach().to(dtype=t1.dtype, device=t1.device).clone()
        elif alpha == 1.0:
            out[key] = t1.detach().clone()
        else:
            blend = torch.lerp(t0.detach().float().to(t1.device), t1.detach().float(), alpha)
            out[key] = blend.to(t1.dtype)
    return out


def pick_alpha(rows: list[dict[str, float]], max_forgetting: float) -> dict[str, float]:
    """The stated rule: the best in-domain score among blends that forget at most ``max_forgetting``.

    Args:
        rows: one per alpha, with ``alpha``, ``in_domain`` and ``forgetting`` (relative drop of the
            general-domain score from the pre-trained model's, 0.05 = 5 % lower; negative = better).
        max_forgetting: the limit on ``forgetting``.

    Returns:
        The chosen row. Ties go to the smaller alpha (closer to the pre-trained model). When no
        blend meets the limit, the one that forgets least.
    """
    if not rows:
        raise TunewiseError("interpolate: no blends were evaluated")
    allowed = [r for r in rows if r["forgetting"] <= max_forgetting + 1e-12]
    if not allowed:
        return min(rows, key=lambda r: (r["forgetting"], r["alpha"]))
    return max(allowed, key=lambda r: (r["in_domain"], -r["alpha"]))
