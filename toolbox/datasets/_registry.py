"""The data sets `tb` knows: one frozen dataclass per entry, read by `list`, `fetch` and loaders.

Checksums are torchvision's (the same MD5s its `download=True` checks). For gzip files we also
record the MD5 of the decompressed content, so a file that was re-compressed on the way (Debian's
`dataset-fashion-mnist` package does this) is accepted for what it holds, while a corrupt one is
still refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from toolbox.errors import ToolboxError, unknown_name

REGISTRY_ENV = "TB_DATASETS_REGISTRY"
LIST_HINT = "run `tb datasets list` to see them"


@dataclass(frozen=True)
class Member:
    """A file the torchvision class reads, at `path` relative to the data set root."""

    path: str
    md5: str | None  # None: no published checksum; verified at fetch time, then kept in a manifest


@dataclass(frozen=True)
class RemoteFile:
    """One published download and what it unpacks to.

    `unpack` is "tar" (an archive of `members`), "gzip" (one member: the decompressed bytes) or
    "none" (the file itself is the member).
    """

    filename: str
    md5: str
    size: int
    unpack: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class DatasetInfo:
    """A data set: what it is, where it is published, and how torchvision reads it."""

    name: str
    title: str
    task: str
    loader: str  # which torchvision class reads it: cifar10, cifar100, mnist, svhn
    classes: tuple[str, ...]
    train_size: int
    test_size: int
    license_url: str
    homepage: str
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is BASE/filename
    files: tuple[RemoteFile, ...]
    description: str = ""
    builtin: bool = field(default=True, compare=False)

    @property
    def download_size(self) -> int:
        """Bytes downloaded by a fetch (sum of the published file sizes)."""
        return sum(f.size for f in self.files)

    @property
    def members(self) -> tuple[Member, ...]:
        """Every file the torchvision class reads, relative to the root."""
        return tuple(m for f in self.files for m in f.members)

    @property
    def unpack_kinds(self) -> set[str]:
        """How the published files unpack ("tar", "gzip", "none")."""
        return {f.unpack for f in self.files}

    @property
    def folder(self) -> str:
        """The top folder under the root that holds this data set's files."""
        return self.members[0].path.split("/", 1)[0]


def _gz(folder: str, stem: str, md5: str, size: int, content_md5: str | None = None) -> RemoteFile:
    member = Member(f"{folder}/raw/{stem}", content_md5)
    return RemoteFile(f"{stem}.gz", md5, size, "gzip", (member,))


def _idx_files(folder: str, md5s: dict[str, str], sizes: dict[str, int],
               content: dict[str, str] | None = None) -> tuple[RemoteFile, ...]:
    content = content or {}
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return tuple(_gz(folder, s, md5s[s], sizes[s], content.get(s)) for s in stems)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_CIFAR100_NAMES = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange
orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit
raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel
streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
turtle wardrobe whale willow_tree wolf woman worm
"""
CIFAR100_CLASSES = tuple(_CIFAR100_NAMES.split())
DIGITS = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
          "7 - seven", "8 - eight", "9 - nine")

_CIFAR10 = DatasetInfo(
    name="cifar10", title="CIFAR-10", task="classification", loader="cifar10",
    classes=CIFAR10_CLASSES, train_size=50000, test_size=10000,
    license_url="https://www.cs.toronto.edu/~kriz/cifar.html",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071,
                      "tar", tuple(Member(f"cifar-10-batches-py/{n}", m) for n, m in (
                          ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                          ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                          ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                          ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                          ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                          ("test_batch", "40351d587109b95175f43aff81a1287e"),
                          ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")))),),
    description="32x32 colour photos, 10 classes",
)

_CIFAR100 = DatasetInfo(
    name="cifar100", title="CIFAR-100", task="classification", loader="cifar100",
    classes=CIFAR100_CLASSES, train_size=50000, test_size=10000,
    license_url="https://www.cs.toronto.edu/~kriz/cifar.html",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437,
                      "tar", tuple(Member(f"cifar-100-python/{n}", m) for n, m in (
                          ("train", "16019d7e3df5f24257cddd939b257f8d"),
                          ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                          ("meta", "7973b15100ade9c7d40fb424638fde48")))),),
    description="32x32 colour photos, 100 fine classes",
)

_MNIST = DatasetInfo(
    name="mnist", title="MNIST", task="classification", loader="mnist",
    classes=DIGITS, train_size=60000, test_size=10000,
    license_url="https://creativecommons.org/licenses/by-sa/3.0/",
    homepage="http://yann.lecun.com/exdb/mnist/",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    files=_idx_files("MNIST", {
        "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
    }, {"train-images-idx3-ubyte": 9912422, "train-labels-idx1-ubyte": 28881,
        "t10k-images-idx3-ubyte": 1648877, "t10k-labels-idx1-ubyte": 4542}),
    description="28x28 grayscale handwritten digits",
)

_FASHION = DatasetInfo(
    name="fashion-mnist", title="Fashion-MNIST", task="classification", loader="mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot"),
    train_size=60000, test_size=10000,
    license_url="https://github.com/zalandoresearch/fashion-mnist/blob/master/LICENSE",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files=_idx_files("FashionMNIST", {
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    }, {"train-images-idx3-ubyte": 26421880, "train-labels-idx1-ubyte": 29515,
        "t10k-images-idx3-ubyte": 4422102, "t10k-labels-idx1-ubyte": 5148},
        # MD5 of the decompressed idx files (identical in the upstream and Debian copies).
        {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
         "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
         "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
         "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}),
    description="28x28 grayscale Zalando article photos, 10 classes",
)

_KMNIST = DatasetInfo(
    name="kmnist", title="Kuzushiji-MNIST", task="classification", loader="mnist",
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    train_size=60000, test_size=10000,
    license_url="https://github.com/rois-codh/kmnist/blob/master/LICENSE",
    homepage="https://github.com/rois-codh/kmnist",
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    files=_idx_files("KMNIST", {
        "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
    }, {"train-images-idx3-ubyte": 18165135, "train-labels-idx1-ubyte": 29497,
        "t10k-images-idx3-ubyte": 3041136, "t10k-labels-idx1-ubyte": 5120}),
    description="28x28 grayscale cursive Japanese characters, 10 classes",
)

_SVHN = DatasetInfo(
    name="svhn", title="SVHN", task="classification", loader="svhn",
    classes=tuple(str(d) for d in range(10)), train_size=73257, test_size=26032,
    license_url="http://ufldl.stanford.edu/housenumbers/",
    homepage="http://ufldl.stanford.edu/housenumbers/",
    mirrors=("http://ufldl.stanford.edu/housenumbers/",),
    files=(RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", 182040794, "none",
                      (Member("SVHN/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),)),
           RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", 64275384, "none",
                      (Member("SVHN/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),))),
    description="32x32 colour house-number digits (needs scipy to read)",
)

# The archives are kept as published (verified by their MD5s) and a fetch builds a segmentation
# folder from them (`_pet.py`): thousands of unpacked files have no published checksums.
_PET = DatasetInfo(
    name="oxford-iiit-pet", title="Oxford-IIIT Pet", task="segmentation", loader="oxford-pet",
    classes=("background", "pet"), train_size=3680, test_size=3669,
    license_url="https://creativecommons.org/licenses/by-sa/4.0/",
    homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
    mirrors=("https://www.robots.ox.ac.uk/~vgg/data/pets/data/",),
    files=tuple(RemoteFile(name, md5, size, "none", (Member(f"oxford-iiit-pet/{name}", md5),))
                for name, md5, size in (
                    ("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c", 791918971),
                    ("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f", 19173078))),
    description="photos of 37 cat and dog breeds with pet/background/border trimaps",
)

BUILTIN: tuple[DatasetInfo, ...] = (_CIFAR10, _CIFAR100, _MNIST, _FASHION, _KMNIST, _SVHN, _PET)
LOADERS = ("cifar10", "cifar100", "mnist", "svhn", "oxford-pet")
SEGMENTATION_LOADERS = frozenset({"oxford-pet"})  # built into a tb segmentation folder


_ENTRY_HINT = "each entry needs name, loader, files[{filename, md5, members}]"


def _extra_from_json(entry: dict, source: str) -> DatasetInfo:
    """One entry of a `$TB_DATASETS_REGISTRY` file (see the README) as a DatasetInfo."""
    try:
        files = tuple(RemoteFile(
            f["filename"], f["md5"], int(f.get("size", 0)), f.get("unpack", "none"),
            tuple(Member(m["path"], m.get("md5")) for m in f["members"])) for f in entry["files"])
        info = DatasetInfo(
            name=entry["name"], title=entry.get("title", entry["name"]),
            task=entry.get("task", "segmentation" if entry["loader"] in SEGMENTATION_LOADERS
                           else "classification"), loader=entry["loader"],
            classes=tuple(entry.get("classes", ())), train_size=int(entry.get("train_size", 0)),
            test_size=int(entry.get("test_size", 0)),
            license_url=entry.get("license_url", ""), homepage=entry.get("homepage", ""),
            mirrors=tuple(entry.get("mirrors", ())), files=files,
            description=entry.get("description", ""), builtin=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolboxError(f"bad data set entry in {source}: {exc!r}", _ENTRY_HINT) from exc
    _check_json_types(entry, info, source)
    # Files are written to ROOT/<member path> and downloads/<filename>: a `..` or an absolute
    # path in someone else's registry file would write outside the root.
    names = [info.name, *(f.filename for f in info.files)]
    bad = [n for n in names if not (_is_inside(n) and "/" not in n)]
    bad += [m.path for m in info.members if not _is_inside(m.path)]
    if bad:  # a list, not next(..., None): a name may itself be null in the JSON
        raise ToolboxError(f"bad data set entry in {source}: names, file names and member "
                           f"paths must stay inside the data set folder, got {bad[0]!r}")
    if info.loader not in LOADERS:
        raise ToolboxError(f"bad data set entry '{info.name}' in {source}: loader must be one of "
                           f"{', '.join(LOADERS)}")
    if not info.files or any(not f.members for f in info.files) or any(
            len(f.members) != 1 for f in info.files if f.unpack != "tar"):
        raise ToolboxError(f"bad data set entry '{info.name}' in {source}: every file needs "
                           "members (exactly one unless unpack is tar)")
    if info.unpack_kinds - {"tar", "gzip", "none"}:
        raise ToolboxError(f"bad data set entry '{info.name}' in {source}: unpack must be "
                           "tar, gzip or none")
    return info


def _check_json_types(entry: dict, info: DatasetInfo, source: str) -> None:
    """Refuse the first field of a registry entry that is not what JSON should hold there
    (text, or a list of texts), before a wrong type fails somewhere deeper."""
    for key in ("classes", "mirrors", "files"):
        if not isinstance(entry.get(key, []), list):
            raise ToolboxError(f"bad data set entry in {source}: {key} must be a list", _ENTRY_HINT)
    texts = [("name", info.name), ("title", info.title), ("task", info.task),
             ("loader", info.loader), ("license_url", info.license_url),
             ("homepage", info.homepage), ("description", info.description),
             *(("classes", c) for c in info.classes), *(("mirrors", m) for m in info.mirrors)]
    for file in info.files:
        texts += [("filename", file.filename), ("md5", file.md5), ("unpack", file.unpack),
                  *(("members.path", m.path) for m in file.members),
                  *(("members.md5", m.md5) for m in file.members if m.md5 is not None)]
    bad = next(((key, value) for key, value in texts if not isinstance(value, str)), ())
    if bad:
        raise ToolboxError(f"bad data set entry in {source}: {bad[0]} must be text, got "
                           f"{bad[1]!r}", _ENTRY_HINT)


def _is_inside(path: Any) -> bool:
    """A relative path with no `..`, `\\` or drive: it stays below the folder it is joined to."""
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    return (bool(parts) and not PurePosixPath(path).is_absolute() and ".." not in parts
            and "\\" not in path and ":" not in parts[0])


def _extras() -> tuple[DatasetInfo, ...]:
    path = os.environ.get(REGISTRY_ENV)
    if not path:
        return ()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ToolboxError(f"cannot read ${REGISTRY_ENV} file {path}: {exc}",
                           f"fix the file or unset {REGISTRY_ENV}") from exc
    entries = data.get("datasets", data) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ToolboxError(f"${REGISTRY_ENV} file {path} must hold a list of data set entries",
                           "see the README: {\"datasets\": [{name, loader, files}, ...]}")
    infos = tuple(_extra_from_json(e, path) for e in entries)
    builtin_names = {d.name for d in BUILTIN}
    for info in infos:
        if info.name in builtin_names:
            raise ToolboxError(
                f"${REGISTRY_ENV} entry '{info.name}' clashes with a built-in data set",
                "give your entry its own name; built-in checksums cannot be replaced")
    return infos


def list_datasets() -> list[DatasetInfo]:
    """Every known data set: the built-in ones, then those of `$TB_DATASETS_REGISTRY`."""
    return [*BUILTIN, *_extras()]


def dataset_names() -> list[str]:
    """Names accepted by `--dataset` and `tb datasets fetch`."""
    return [d.name for d in list_datasets()]


def get_dataset(name: str) -> DatasetInfo:
    """The registry entry called `name`.

    Raises:
        ToolboxError: unknown name, with the closest valid names as a hint.
    """
    for info in list_datasets():
        if info.name == name:
            return info
    raise unknown_name("data set", name, dataset_names(), LIST_HINT)
