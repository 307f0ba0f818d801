"""Test helpers for `tb datasets`: tiny data sets in the exact upstream formats, a registry file
pointing at them, and a loopback HTTP server (Range support, injectable faults)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import socket
import struct
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

CIFAR_TRAIN_PER_BATCH = 10
CIFAR_TEST = 12
MNIST_TRAIN, MNIST_TEST = 30, 12


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar10_files(folder: str = "tiny-cifar-10-batches-py", seed: int = 0) -> dict[str, bytes]:
    """Members of a CIFAR-10 python tarball (pickled dicts, uint8 rows of 3072 = 3x32x32)."""
    rng = np.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    members = {}
    for i, (batch, n) in enumerate([*[(f"data_batch_{k}", CIFAR_TRAIN_PER_BATCH)
                                      for k in range(1, 6)], ("test_batch", CIFAR_TEST)]):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(x) for x in (np.arange(n) + i) % 10]
        entry = {b"batch_label": batch.encode(), "labels": labels, "data": data,
                 "filenames": [f"img_{batch}_{j}.png" for j in range(n)]}
        members[f"{folder}/{batch}"] = pickle.dumps(entry, protocol=2)
    meta = {"num_cases_per_batch": CIFAR_TRAIN_PER_BATCH, "label_names": names,
            "num_vis": 3072}
    members[f"{folder}/batches.meta"] = pickle.dumps(meta, protocol=2)
    return members


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def mnist_files(seed: int = 1) -> dict[str, bytes]:
    """The four decompressed idx files of an MNIST-style data set (28x28 grayscale)."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        out[f"{prefix}-images-idx3-ubyte"] = idx_images(
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        out[f"{prefix}-labels-idx1-ubyte"] = idx_labels(np.arange(n) % 10)
    return out


@dataclass
class TinyData:
    """Published files (name -> bytes) and the registry entries that describe them."""

    files: dict[str, bytes]
    entries: list[dict]
    cifar_members: dict[str, bytes] = field(default_factory=dict)
    mnist_raw: dict[str, bytes] = field(default_factory=dict)

    def registry(self, path: Path, mirrors: list[str]) -> Path:
        entries = [{**e, "mirrors": mirrors} for e in self.entries]
        path.write_text(json.dumps({"datasets": entries}, indent=1))
        return path


def tiny_data() -> TinyData:
    """tiny-cifar10 (one tarball) and tiny-mnist (four .gz idx files) in upstream formats."""
    members = cifar10_files()
    tarball = _tar_bytes(members)
    raw = mnist_files()
    gz = {f"{stem}.gz": gzip.compress(data, mtime=0) for stem, data in raw.items()}
    cifar = {
        "name": "tiny-cifar10", "title": "tiny CIFAR-10", "loader": "cifar10",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                    "ship", "truck"],
        "train_size": 5 * CIFAR_TRAIN_PER_BATCH, "test_size": CIFAR_TEST,
        "files": [{"filename": "tiny-cifar-10-python.tar.gz", "md5": md5(tarball),
                   "size": len(tarball), "unpack": "tar",
                   "members": [{"path": p, "md5": md5(d)} for p, d in members.items()]}],
    }
    mnist = {
        "name": "tiny-mnist", "title": "tiny MNIST", "loader": "mnist",
        "classes": [str(d) for d in range(10)], "train_size": MNIST_TRAIN,
        "test_size": MNIST_TEST,
        # Like the real MNIST: only the .gz checksums are published.
        "files": [{"filename": name, "md5": md5(data), "size": len(data), "unpack": "gzip",
                   "members": [{"path": f"TinyMNIST/raw/{name[:-3]}", "md5": None}]}
                  for name, data in gz.items()],
    }
    return TinyData({"tiny-cifar-10-python.tar.gz": tarball, **gz}, [cifar, mnist],
                    members, raw)


def evil_tar(kind: str) -> bytes:
    """A tarball with a member escaping the folder: kind "dotdot" or "symlink"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("tiny/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            bad = tarfile.TarInfo("../escaped.txt")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        else:
            link = tarfile.TarInfo("tiny/link")
            link.type = tarfile.SYMTYPE
            link.linkname = "../../../../../../etc/passwd"
            tar.addfile(link)
    return buf.getvalue()


class FileServer:
    """A loopback HTTP server for `files` (URL path -> bytes) with Range support and faults.

    faults[path] is one of: "drop" (send half the body, then close, every time), "drop_once",
    "stall" (send the headers, then hang), "wrong" (flipped bytes), "404", "no_range".
    """

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self._release = threading.Event()
        self._served: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        rng = h.headers.get("Range")
        self.requests.append((path, rng))
        fault = self.faults.get(path)
        data = self.files.get(path)
        if data is None or fault == "404":
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if fault == "wrong":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        if rng and fault != "no_range" and rng.startswith("bytes="):
            start = int(rng[6:].split("-", 1)[0])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        count = self._served.get(path, 0)
        self._served[path] = count + 1
        if fault == "stall":
            h.wfile.flush()
            self._release.wait(30)
            h.close_connection = True
            return
        if fault == "drop" or (fault == "drop_once" and count == 0):
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        for i in range(0, len(body), 1 << 16):
            h.wfile.write(body[i:i + (1 << 16)])


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
