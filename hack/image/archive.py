"""Writes a Docker image archive (the `docker save` layout) from layer tarballs, without Docker.

    archive.py OUT.tar --tag NAME:TAG --layer A.tar [--layer B.tar …]
               [--entrypoint JSON] [--cmd JSON] [--env K=V …] [--workdir DIR] [--user UID]

`ctr -n k8s.io images import OUT.tar` reads this layout. Layers are stored uncompressed, so a
layer's digest is also its diff ID and the archive is reproducible from the same layers.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from pathlib import Path

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def image_config(args: argparse.Namespace, diff_ids: list[str]) -> dict[str, object]:
    config: dict[str, object] = {
        "Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    }
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if args.user:
        config["User"] = args.user
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/image"}],
    }


def write_archive(args: argparse.Namespace) -> None:
    layers = [Path(layer) for layer in args.layer]
    diff_ids = [sha256_of(layer) for layer in layers]
    config = json.dumps(image_config(args, diff_ids), sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    layer_names = [f"{digest}/layer.tar" for digest in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": layer_names}]
    partial = Path(f"{args.out}.partial")
    with tarfile.open(partial, "w") as archive:
        add_bytes(archive, config_name, config)
        for layer, name in zip(layers, layer_names, strict=True):
            archive.add(layer, arcname=name)
        add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    partial.replace(args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--layer", action="append", required=True)
    parser.add_argument("--entrypoint")
    parser.add_argument("--cmd")
    parser.add_argument("--env", action="append")
    parser.add_argument("--workdir")
    parser.add_argument("--user")
    write_archive(parser.parse_args())


if __name__ == "__main__":
    main()
