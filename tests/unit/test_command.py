"""Commands parse like a shell and run exactly: env prefixes, quoting, scripts by #!."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoopt.tools.command import parse_command, resolve, script_interpreter


def test_env_prefixes_quoting_and_the_env_utility() -> None:
    cmd = parse_command("PYTHONMALLOC=malloc python3 workload.py 30000")
    assert cmd.env == {"PYTHONMALLOC": "malloc"}
    assert cmd.argv == ["python3", "workload.py", "30000"]
    same = parse_command("env PYTHONMALLOC=malloc python3 workload.py 30000")
    assert same == cmd
    quoted = parse_command("A='x y' B= python3 -c 'import a; print(a)' \"two words\"")
    assert quoted.env == {"A": "x y", "B": ""}
    assert quoted.argv == ["python3", "-c", "import a; print(a)", "two words"]
    assert parse_command(quoted.text()) == quoted  # the shell form reads back the same


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("gen | consume", "needs a shell"),
        ("a && b", "needs a shell"),
        ("prog > out.txt", "needs a shell"),
        ("A=1 B=2", "runs no program"),
        ("env -i prog", "env's options"),
        ('prog "unclosed', "No closing quotation"),
    ],
)
def test_what_needs_a_shell_is_refused_with_the_fix(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_command(text)


def test_placeholders_are_substituted_per_argument() -> None:
    cmd = parse_command("X={target_dir}/data {python} {target_dir}/drive.py --port {port}")
    done = cmd.substitute({"target_dir": "/w/my targets/t", "python": "/py", "port": "81"})
    assert done.argv == ["/py", "/w/my targets/t/drive.py", "--port", "81"]
    assert done.env == {"X": "/w/my targets/t/data"}


def test_scripts_run_by_their_shebang_or_extension(tmp_path: Path) -> None:
    cases = {
        "env.py": "#!/usr/bin/env python3\nprint(1)\n",
        "abs.py": "#!/usr/bin/python3.11 -u\nprint(1)\n",
        "plain.py": "print(1)\n",
        "run.sh": "echo hi\n",
        "tool": "#!/bin/bash -e\necho hi\n",
        "node.js": "#!/usr/bin/env node\nconsole.log(1)\n",
        "blob": "no interpreter here\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert script_interpreter(tmp_path / "env.py") == ["python3"]
    assert script_interpreter(tmp_path / "tool") == ["/bin/bash", "-e"]
    assert script_interpreter(tmp_path / "blob") is None
    py = "/opt/py/bin/python3"
    assert resolve(["./env.py", "1"], py, tmp_path) == [py, "./env.py", "1"]
    assert resolve(["./abs.py"], py, tmp_path) == [py, "-u", "./abs.py"]
    assert resolve([str(tmp_path / "plain.py")], py, tmp_path)[0] == py
    assert resolve(["./run.sh"], py, tmp_path) == ["bash", "./run.sh"]
    assert resolve(["./tool", "x"], py, tmp_path) == ["/bin/bash", "-e", "./tool", "x"]
    assert resolve(["./node.js"], py, tmp_path) == ["node", "./node.js"]
    assert resolve(["./blob"], py, tmp_path) == ["./blob"]  # left to the kernel
    # one interpreter: bare python names become the target's; paths and PATH programs stay
    assert resolve(["python3", "x.py"], py, tmp_path) == [py, "x.py"]
    assert resolve(["python", "x.py"], py, tmp_path) == [py, "x.py"]
    assert resolve(["/usr/bin/python3.12", "x.py"], py, tmp_path) == ["/usr/bin/python3.12", "x.py"]
    assert resolve(["make", "all"], py, tmp_path) == ["make", "all"]
    # in a container (python None): the image's python3 runs Python scripts
    assert resolve(["./env.py"], None, tmp_path) == ["python3", "./env.py"]


def test_target_md_commands_and_pins_are_checked_when_parsed(tmp_path: Path) -> None:
    from autoopt.tools.errors import TargetSpecError
    from autoopt.tools.targets import parse_target

    def target(source: str, local: str) -> Path:
        folder = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "target.md").write_text(
            f"## Source\n{source}\n\n## Primary Metric\nname: peak_rss_mb\ndirection: lower\n\n"
            f"## Workload\ndescription: x\n\n## Scope\neditable:\n  - a.py\n\n## Local\n"
            f"kind: batch\n{local}\n"
        )
        return folder

    ok = parse_target(target("pypi: six==1.16.0", "workload: A=1 python3 {target_dir}/w.py"))
    assert ok.source.kind == "pypi" and ok.local.workload == "A=1 python3 {target_dir}/w.py"
    with pytest.raises(TargetSpecError, match=r"target.md:\d+: workload: .*needs a shell"):
        parse_target(target("repo: local\npath: src", "workload: gen | consume"))
    with pytest.raises(TargetSpecError, match="not an exact pin"):
        parse_target(target("pypi: six", "workload: python3 w.py"))
    with pytest.raises(TargetSpecError, match="package name or name=version"):
        parse_target(target("debian: Bad Name", "workload: python3 w.py"))
