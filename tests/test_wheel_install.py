"""The package as users get it: the built wheel and sdist, installed into a fresh venv.

``python -m build`` makes the sdist and then the wheel *from the sdist*, so a file the sdist
leaves out is missing from the wheel too. The wheel is installed (never the source tree) into
a new virtualenv, its dependencies from a wheelhouse (offline), and that installation does a
full ``tfaudit run`` of a real ``terraform plan`` against the local S3 server, then
``tfaudit verify``. Any file packaging leaves out (the vendors' release keys, a subpackage)
fails here.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from devkit.servers import S3Server, make_lock_bucket, unique_bucket
from devkit.tfhelpers import isolated_env, pinned_terraform, tf_init, write_null_config
from tfaudit_ci import __version__

REPO = Path(__file__).resolve().parent.parent


def run(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_twine_accepts_the_distributions(built_dist: tuple[Path, Path]) -> None:
    done = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, built_dist)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_distributions_carry_every_file_they_need(built_dist: tuple[Path, Path]) -> None:
    wheel, sdist = built_dist
    assert wheel.name == f"tfaudit_ci-{__version__}-py3-none-any.whl"
    modules = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tfaudit_ci").rglob("*") if p.is_file()
        and "__pycache__" not in p.parts
    )  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        metadata = archive.read(f"tfaudit_ci-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"tfaudit_ci-{__version__}.dist-info/entry_points.txt")
    assert [m for m in modules if m not in in_wheel] == []
    assert "tfaudit = tfaudit_ci.cli:main_entry" in entry_points.decode()
    assert "Requires-Python: >=3.10" in metadata
    assert "Provides-Extra: gcs" in metadata and "Provides-Extra: azure" in metadata
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert [m for m in modules if m not in in_sdist] == []
    assert {"pyproject.toml", "README.md", "constraints.txt"} <= in_sdist


def test_the_installed_wheel_runs_and_verifies_a_trail(
    built_dist: tuple[Path, Path], wheelhouse: Path, moto_server: S3Server, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    install = run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
         str(wheelhouse), "--constraint", str(REPO / "constraints.txt"), str(built_dist[0])],
        env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null"},
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    env = isolated_env(tmp_path / "env")
    env.update(moto_server.env())
    env.pop("PYTHONPATH", None)
    work = tmp_path / "work"  # outside the source tree: nothing there can be imported
    write_null_config(work, count=2)
    terraform = pinned_terraform()
    tf_init(terraform, work, env)

    where = run([str(python), "-c", "import tfaudit_ci; print(tfaudit_ci.__file__)"],
                cwd=work, env=env)  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    keys = run([str(python), "-c", "from tfaudit_ci.toolchain import VENDORS\n"
                "for v in VENDORS.values(): print(v.trusted_key().fingerprint)"],
               cwd=work, env=env)  # fmt: skip
    assert keys.returncode == 0, keys.stderr
    assert len(keys.stdout.split()) == 2

    bucket = unique_bucket()
    make_lock_bucket(moto_server.client(), bucket)
    tfaudit = str(venv / "bin" / "tfaudit")
    store = ["--store", f"s3://{bucket}/tf", "--stream", "wheel", "--endpoint-url",
             moto_server.endpoint]  # fmt: skip
    shipped = run(
        [tfaudit, "run", *store, "--work-dir", str(tmp_path / "spool"), "--",
         str(terraform), "plan", "-input=false", "-out=tfplan"],
        cwd=work, env=env,
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "2 to add" in shipped.stdout

    verified = run([tfaudit, "verify", *store], cwd=work, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1/1 records valid" in verified.stdout + verified.stderr
