"""Model services: build by name (ImageNet weights from the hub cache, a package or the hub),
the preprocessing and class names of pretrained models, new heads, the model files this toolbox
writes, the registry index behind `tb models list`, `tb models info` facts and `tb summary`."""

from toolbox.models._checkpoint import (
    RESIZE_MODES,
    ModelMeta,
    build_from_meta,
    load_model_file,
    load_state_dict,
    read_meta,
    save_safetensors,
    torch_load,
)
from toolbox.models._factory import (
    ModelRef,
    PretrainedWeightsUnavailable,
    WeightsSource,
    classifier_name,
    create_model,
    replace_classifier,
    resolve_model,
    timm_weights_source,
    torchvision_weights_source,
)
from toolbox.models._info import ModelInfo, model_info
from toolbox.models._listing import ModelListing, ModelRow, list_models
from toolbox.models._macs import count_macs
from toolbox.models._packaged import PACKAGED, PackagedWeights, file_sha256, package_file
from toolbox.models._pretrained import data_config, pretrained_classifier
from toolbox.models._registry import load_index
from toolbox.models._segmenter import DECODER, DECODERS, create_segmenter
from toolbox.models._sources import ModelFromSpec, load_for_summary
from toolbox.models._summary import (
    DEFAULT_COLUMNS,
    TORCHINFO_COLUMNS,
    ModelSummary,
    parse_dtype,
    summarize,
)
from toolbox.models._user import absolute_spec, is_code_spec, load_user_model

__all__ = [
    "DECODER",
    "DECODERS",
    "DEFAULT_COLUMNS",
    "PACKAGED",
    "RESIZE_MODES",
    "TORCHINFO_COLUMNS",
    "ModelFromSpec",
    "ModelInfo",
    "ModelListing",
    "ModelMeta",
    "ModelRef",
    "ModelRow",
    "ModelSummary",
    "PackagedWeights",
    "PretrainedWeightsUnavailable",
    "WeightsSource",
    "absolute_spec",
    "build_from_meta",
    "classifier_name",
    "count_macs",
    "create_model",
    "create_segmenter",
    "data_config",
    "file_sha256",
    "is_code_spec",
    "list_models",
    "load_for_summary",
    "load_index",
    "load_model_file",
    "load_state_dict",
    "load_user_model",
    "model_info",
    "package_file",
    "parse_dtype",
    "pretrained_classifier",
    "read_meta",
    "replace_classifier",
    "resolve_model",
    "save_safetensors",
    "summarize",
    "timm_weights_source",
    "torch_load",
    "torchvision_weights_source",
]
