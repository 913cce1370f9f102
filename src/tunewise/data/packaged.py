"""Packaged data: data sets that ship inside PyPI packages, so demos and tests work offline.

Located with :func:`tunewise.models.defaults.package_dir` (``importlib.util.find_spec``), so a
missing package is a one-line error naming the extra to install.
"""

from __future__ import annotations

from tunewise.models.defaults import package_dir


def load_faq(lang: str = "sv") -> list[dict]:
    """The construction FAQ (503 questions with answers and 39 categories), CC-BY-4.0.

    Args:
        lang: ``sv`` or ``en``.

    Returns:
        Rows of ``{id, category, q, a}``.

    Raises:
        TunewiseError: zaragoza-construction-faq is not installed.
    """
    package_dir("zaragoza_construction_faq", "zaragoza-construction-faq")
    import zaragoza_construction_faq

    return zaragoza_construction_faq.load(lang=lang)
