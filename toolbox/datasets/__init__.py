"""Data sets: the registry, verified downloads and imports, and loading through torchvision.

`open_dataset(name, root, split)` is what other commands use (`tb finetune --dataset`,
`tb evaluate --dataset`, `tb log-images --dataset`); `tb datasets` fetches and lists.
"""

from toolbox.datasets._augment import OUT_FORMATS, augment_shards
from toolbox.datasets._download import (
    ChecksumError,
    DownloadError,
    DownloadSettings,
    download,
)
from toolbox.datasets._export import ExportResult
from toolbox.datasets._extract import UnsafeArchiveError, extract_archive
from toolbox.datasets._fetch import FetchResult, FileReport, fetch_dataset
from toolbox.datasets._loader import (
    ROOT_ENV,
    SPLITS,
    FetchedDataset,
    default_root,
    fetch_command,
    open_dataset,
)
from toolbox.datasets._pack import (
    PACK_MTIME,
    PackedSplit,
    PackResult,
    pack,
    parse_size,
    write_index,
    write_shard,
)
from toolbox.datasets._registry import (
    REGISTRY_ENV,
    DatasetInfo,
    Member,
    RemoteFile,
    dataset_names,
    get_dataset,
    list_datasets,
)
from toolbox.datasets._shards import (
    INDEX_FILE,
    INDEX_FORMAT,
    ShardSample,
    ShardSet,
    expand_pattern,
    looks_like_shards,
    open_shards,
    read_samples,
    shards_of,
)
from toolbox.datasets._verify import (
    DatasetRow,
    DatasetStatus,
    check_dataset,
    list_status,
    md5_file,
)

__all__ = [
    "INDEX_FILE",
    "INDEX_FORMAT",
    "OUT_FORMATS",
    "PACK_MTIME",
    "REGISTRY_ENV",
    "ROOT_ENV",
    "SPLITS",
    "ChecksumError",
    "DatasetInfo",
    "DatasetRow",
    "DatasetStatus",
    "DownloadError",
    "DownloadSettings",
    "ExportResult",
    "FetchResult",
    "FetchedDataset",
    "FileReport",
    "Member",
    "PackResult",
    "PackedSplit",
    "RemoteFile",
    "ShardSample",
    "ShardSet",
    "UnsafeArchiveError",
    "augment_shards",
    "check_dataset",
    "dataset_names",
    "default_root",
    "download",
    "expand_pattern",
    "extract_archive",
    "fetch_command",
    "fetch_dataset",
    "get_dataset",
    "list_datasets",
    "list_status",
    "looks_like_shards",
    "md5_file",
    "open_dataset",
    "open_shards",
    "pack",
    "parse_size",
    "read_samples",
    "shards_of",
    "write_index",
    "write_shard",
]
