#!/usr/bin/env python3
"""Build a single-layer docker-archive image tarball from a root filesystem directory, offline.

The result is what `docker save` produces (manifest.json + config + layer), so it can be loaded
with `docker load` or imported into the test cluster with `scripts/k8s-cluster.sh load-image`
(`ctr -n k8s.io images import`).  No registry, no daemon.

    mkimage.py ROOTFS OUT.tar TAG [--entrypoint JSON] [--cmd JSON] [--env K=V ...]

Example: mkimage.py /tmp/rootfs /tmp/bb.tar localhost/autoopt/busybox:1.35 --cmd '["sh"]'
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # root-owned, fixed mtime: the same rootfs always gives the same image digest
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def build(
    rootfs: str,
    out: str,
    tag: str,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
) -> str:
    """Write the image tarball to `out`; return the image config digest."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(rootfs)):
            t.add(os.path.join(rootfs, name), arcname=name, filter=_normalize)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": [DEFAULT_PATH, *(env or [])],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "autoopt scripts/k8s/mkimage.py"}],
    }
    cfg_bytes = json.dumps(config, sort_keys=True).encode()
    cfg_hex = hashlib.sha256(cfg_bytes).hexdigest()
    manifest = [{"Config": cfg_hex + ".json", "RepoTags": [tag], "Layers": ["layer.tar"]}]
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as t:
        for name, data in [
            (cfg_hex + ".json", cfg_bytes),
            ("layer.tar", layer_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    os.replace(tmp, out)
    return "sha256:" + cfg_hex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("rootfs")
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("--entrypoint", type=json.loads, default=None, help="JSON list")
    ap.add_argument("--cmd", type=json.loads, default=None, help="JSON list")
    ap.add_argument("--env", action="append", default=[], help="K=V, repeatable")
    a = ap.parse_args()
    print(build(a.rootfs, a.out, a.tag, a.entrypoint, a.cmd, a.env))


if __name__ == "__main__":
    main()
