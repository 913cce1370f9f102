"""Typed run configuration: dataclasses, YAML load/dump and dotted command-line overrides.

A run is described by one YAML file::

    task: embedding
    model: path/or/hub-id        # empty: the packaged all-MiniLM-L6-v2
    output_dir: runs/faq
    data:
      train: faq.csv
      columns: {query: question, positive: answer}
    train: {epochs: 3, batch_size: 16}
    strategy: full

Unknown keys are errors that suggest the closest valid key; values are checked against
the field types. Command-line overrides use dotted paths (``train.epochs=2``) and are
parsed with ``yaml.safe_load`` so ``1e-5``, ``true`` and ``[1, 5]`` mean what they say.

Layout: :mod:`~tunewise.config.schema` (the dataclasses), :mod:`~tunewise.config.coerce`
(dict -> dataclass with type checks), :mod:`~tunewise.config.files` (YAML, overrides, reference).
"""

from tunewise.config.coerce import from_dict
from tunewise.config.files import apply_override, config_reference, dump_config, load_config, read_yaml
from tunewise.config.schema import (
    SECTIONS,
    DataConfig,
    EvalConfig,
    RunConfig,
    TrainConfig,
    register_section,
)

__all__ = [
    "SECTIONS", "DataConfig", "EvalConfig", "RunConfig", "TrainConfig", "apply_override", "config_reference",
    "dump_config", "from_dict", "load_config", "read_yaml", "register_section",
]
