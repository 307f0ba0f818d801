"""Model services: build by name, new heads, and the model files this toolbox writes."""

from toolbox.models._checkpoint import (
    ModelMeta,
    load_model_file,
    load_state_dict,
    read_meta,
    save_safetensors,
)
from toolbox.models._factory import (
    ModelRef,
    PretrainedWeightsUnavailable,
    classifier_name,
    create_model,
    replace_classifier,
    resolve_model,
)

__all__ = [
    "ModelMeta",
    "ModelRef",
    "PretrainedWeightsUnavailable",
    "classifier_name",
    "create_model",
    "load_model_file",
    "load_state_dict",
    "read_meta",
    "replace_classifier",
    "resolve_model",
    "save_safetensors",
]
