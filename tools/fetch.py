"""A target's code from the package index (`pypi:`) or Debian's archive (`debian:`).

Each download is made in a private folder and renamed into the cache
(`<state>/downloads/`), so a second call, or a second server process, finds a whole
file and needs no network. Archives are unpacked only when no member leads outside the
destination (absolute paths, '..', links).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from autoopt.tools.errors import TargetSpecError
from autoopt.tools.state import locked

_PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")
DEBIAN_PIN = re.compile(r"([a-z0-9][a-z0-9+.-]+)(?:=([0-9A-Za-z.+~:-]+))?")
_NETWORK = "connection broken by"  # pip's warning when it cannot reach an index
_NO_WHEEL = "no-pure-wheel"  # marks a cache entry whose automatic choice was the sdist


def pypi_pin(value: str) -> tuple[str, str]:
    """(name, version) of an exact `name==version` pin."""
    if not (m := _PIN.fullmatch(value.strip())):
        raise TargetSpecError(
            f"pypi: {value!r} is not an exact pin: write name==version (e.g. six==1.16.0)"
        )
    return m[1], m[2]


def pypi_archive(pin: str, dist: str | None, downloads: Path) -> Path:
    """The pinned distribution's pure-Python wheel, else its sdist (or the `dist` forced:
    `wheel` takes the wheel pip picks for this machine, binary too), downloaded once with
    pip as configured on this machine."""
    name, version = pypi_pin(pin)
    cache = downloads / "pypi" / f"{re.sub(r'[-_.]+', '-', name).lower()}-{version}"
    if hit := _cached_dist(cache, dist):
        return hit
    cache.mkdir(parents=True, exist_ok=True)
    error = ""
    for kind in (dist,) if dist else ("wheel", "sdist"):
        with tempfile.TemporaryDirectory(dir=cache, prefix=".pip-") as tmp:
            flag = "--only-binary=:all:" if kind == "wheel" else f"--no-binary={name}"
            argv = [sys.executable, "-m", "pip", "download", "--no-deps", flag, "-d", tmp, pin]
            proc = subprocess.run(argv, capture_output=True, text=True)
            got = [p for p in Path(tmp).iterdir() if p.is_file()]
            if proc.returncode != 0 or len(got) != 1:
                error = _last_errors(proc.stderr or proc.stdout)
                if _NETWORK in proc.stderr:
                    break  # the index is unreachable: no other archive would come either
                continue
            if kind == "wheel" and not dist and not got[0].name.endswith("-none-any.whl"):
                error = f"{pin} has no pure-Python wheel (only {got[0].name}); use dist: sdist"
                continue
            if kind == "sdist" and not dist:
                (cache / _NO_WHEEL).touch()
            os.replace(got[0], cache / got[0].name)
            return cache / got[0].name
    raise TargetSpecError(
        f"cannot fetch {pin} from the package index: {error}; check the name and version "
        f"(`pip index versions {name}`) or vendor the code with repo: local"
    )


def _cached_dist(cache: Path, dist: str | None) -> Path | None:
    """The cached archive `dist` asks for; unforced: the wheel, unless the sdist was chosen."""
    if not cache.is_dir():
        return None
    wheels = sorted(cache.glob("*.whl" if dist == "wheel" else "*-none-any.whl"))
    sdists = sorted(p for p in cache.glob("*") if p.suffix in (".gz", ".zip", ".bz2", ".xz"))
    if dist == "wheel" or (dist is None and not (cache / _NO_WHEEL).exists()):
        return wheels[0] if wheels else None
    return sdists[0] if sdists else None


def _last_errors(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "E:"))] or lines[-3:]
    network = [line.split(_NETWORK)[-1].strip() for line in lines if _NETWORK in line]
    return " ".join(network[-1:] + errors)[-800:] or "no output"


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a wheel as is, or an sdist with its single top folder stripped, into `dest`;
    the tree. Refuses archives with members or links leading outside."""
    wheel = archive.name.endswith(".whl")
    try:
        if wheel or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:  # zipfile never creates links
                names = z.namelist()
                _check_names(archive, names)
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                names = t.getnames()
                _check_names(archive, names)
                t.extractall(dest, filter="data")  # also refuses links leading outside
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise TargetSpecError(f"cannot unpack {archive.name}: {err}") from err
    tree = dest
    if not wheel:
        tops = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
        if len(tops) != 1 or not (dest / next(iter(tops))).is_dir():
            raise TargetSpecError(f"{archive.name} does not hold one top folder: {sorted(tops)}")
        tree = dest / tops.pop()
    check_links(tree)
    return tree


def _check_names(archive: Path, names: list[str]) -> None:
    for name in names:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise TargetSpecError(f"refusing {archive.name}: member {name!r} leads outside it")


def check_links(tree: Path, label: str = "the source") -> None:
    """Refuse a tree holding a symlink that is absolute or leads outside it, read as
    written and as resolved (a loop or a dangling link is judged by its text too)."""
    root = os.path.realpath(tree)
    for folder, dirs, files in os.walk(tree):
        for entry in dirs + files:
            path = os.path.join(folder, entry)
            if not os.path.islink(path):
                continue
            to = os.readlink(path)
            written = os.path.normpath(os.path.join(os.path.realpath(folder), to))
            if os.path.isabs(to) or not all(
                p == root or p.startswith(root + os.sep)
                for p in (written, os.path.realpath(path))
            ):
                raise TargetSpecError(
                    f"refusing {label}: {os.path.relpath(path, tree)} links outside it "
                    f"(to {to}); an import never follows a link out of its folder: copy "
                    "the file in, or make the link relative and point it inside"
                )


def debian_pin(value: str) -> tuple[str, str]:
    """(source package, version): the version given, else the installed one."""
    if not (m := DEBIAN_PIN.fullmatch(value.strip())):
        raise TargetSpecError(f"debian: {value!r} is not a source package name or name=version")
    name, version = m[1], m[2]
    if version:
        return name, version
    _need("dpkg-query")
    fmt = r"${db:Status-Abbrev}\t${source:Package}\t${source:Version}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    found = sorted({r[2] for r in rows if len(r) == 3 and r[0].startswith("ii") and r[1] == name})
    if len(found) != 1:
        why = f"installed binaries come from {', '.join(found)}" if found else "none installed"
        raise TargetSpecError(
            f"debian: {name}: no single installed version of this source package ({why}); "
            f"install a binary package built from it (apt-get install) or pin "
            f"debian: {name}=VERSION"
        )
    return name, found[0]


def debian_tree(name: str, version: str, downloads: Path, dest: Path) -> Path:
    """The source package with its Debian patches applied (as installed), under `dest`."""
    _need("dpkg-source")
    folder = _debian_files(name, version, downloads)
    tree = dest / "tree"
    dsc = next(folder.glob("*.dsc"))
    argv = ["dpkg-source", "--no-copy", "-x", str(dsc), str(tree)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=dest)
    if proc.returncode != 0:
        raise TargetSpecError(f"dpkg-source -x {dsc.name} failed: {_last_errors(proc.stderr)}")
    shutil.rmtree(tree / ".pc", ignore_errors=True)  # quilt's bookkeeping, not source
    check_links(tree)
    return tree


def _debian_files(name: str, version: str, downloads: Path) -> Path:
    """The cached folder holding the package's .dsc and tarballs; fetched once through a
    private apt configuration with deb-src lines for the system's own Debian sources."""
    cache = downloads / "debian" / f"{name}_{version}"
    if any(cache.glob("*.dsc")):
        return cache
    _need("apt-get")
    apt = downloads / "apt"
    with locked(downloads / ".apt.lock"):
        if any(cache.glob("*.dsc")):
            return cache
        for sub in ("lists/partial", "parts", "cache/archives/partial"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        lines = debsrc_lines()
        if not lines:
            raise TargetSpecError("no Debian sources in /etc/apt/sources.list* to fetch from")
        (apt / "sources.list").write_text("\n".join(lines) + "\n")
        opts = [
            *("-o", f"Dir::Etc::SourceList={apt / 'sources.list'}"),
            *("-o", f"Dir::Etc::SourceParts={apt / 'parts'}"),
            *("-o", f"Dir::State::Lists={apt / 'lists'}"),
            *("-o", f"Dir::Cache={apt / 'cache'}"),
            *("-o", "APT::Sandbox::User=root"),
        ]
        tmp = tempfile.mkdtemp(dir=downloads, prefix=".apt-")
        try:
            for args in (["update"], ["source", "--download-only", f"{name}={version}"]):
                proc = subprocess.run(
                    ["apt-get", *opts, "-qq", *args], capture_output=True, text=True, cwd=tmp
                )
                if proc.returncode != 0:
                    raise TargetSpecError(
                        f"cannot fetch the Debian source {name}={version} (apt-get {args[0]}): "
                        f"{_last_errors(proc.stderr)}; check the version (apt-cache policy "
                        f"{name}) or vendor the code with repo: local"
                    )
            cache.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache


def debsrc_lines() -> list[str]:
    """deb-src lines with the URIs, suites, components and keyring of the system's deb lines
    (deb822 *.sources and one-line *.list files); as scripts/k8s-cluster.sh derives them."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    out: list[str] = []
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                f: dict[str, str] = {}
                for line in stanza.splitlines():
                    if not line.startswith("#") and ":" in line and not line[:1].isspace():
                        key, value = line.split(":", 1)
                        f[key.strip().lower()] = value.strip()
                if "deb" not in f.get("types", "").split() or f.get("enabled") == "no":
                    continue
                key = f.get("signed-by", "")
                opt = f" [signed-by={key}]" if key.startswith("/") else ""
                for uri in f.get("uris", "").split():
                    for suite in f.get("suites", "").split():
                        out.append(f"deb-src{opt} {uri} {suite} {f.get('components', 'main')}")
        elif path.suffix == ".list":
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("deb "):
                    out.append("deb-src " + line[4:])
    return list(dict.fromkeys(out))


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise TargetSpecError(
            f"{tool} is not installed: debian: sources need a Debian system with apt-get and "
            "dpkg-dev (dpkg-source); vendor the code with repo: local instead"
        )
