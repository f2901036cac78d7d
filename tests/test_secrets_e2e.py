"""Secrets never reach the trail, end to end through `tfaudit run` (issue 7, section 5).

`tests/test_redact_property.py` covers the redactor itself with thousands of examples; here
fewer examples go through the real path (a child process writing in chunks -> the pipes ->
the runner -> the spool -> a store), so that the wiring cannot drop what the redactor does.
Then real terraform: no sensitive value in the plan JSON (nested maps and lists, outputs),
and no credential in the record, the spool's metadata, --json or the CI output files.
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.servers import S3Server
from devkit.tfhelpers import isolated_env, pinned_terraform, terraform_on_path, tf_init
from tests.support.tfaudit_proc import chain_records, result_json, tfaudit
from tfaudit_ci.redact import secret_forms

STREAM = "acme/secrets"
SECRET_ALPHABET = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()-_=+/?.:~ ")
)
SECRETS = st.text(SECRET_ALPHABET, min_size=10, max_size=40).filter(lambda s: s.strip() == s)
# Writes the chunks given as JSON (latin-1 text) to stdout, flushing and pausing between them
# so that the pipe really delivers them separately.
WRITER = (
    "import json, os, sys, time\n"
    "for chunk in json.loads(sys.argv[1]):\n"
    "    os.write(1, chunk.encode('latin-1'))\n"
    "    time.sleep(0.02)\n"
)


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        quote(raw, safe="").encode(),
        quote_plus(raw).encode(),
    ]


def _everything_stored(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    secret=SECRETS,
    form=st.integers(0, 4),
    before=st.binary(max_size=200),
    after=st.binary(max_size=200),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_no_env_secret_form_survives_the_real_run_path(
    secret: str, form: int, before: bytes, after: bytes, cuts: list[int], tmp_path: Path
) -> None:
    case = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example, replays included
    data = before + _forms(secret)[form] + b" " + secret.encode() + after
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b].decode("latin-1") for a, b in itertools.pairwise(points) if b > a]
    env = {**isolated_env(case / "env"), "DEPLOY_TOKEN": secret, "TFAUDIT_WORK_DIR": str(case)}
    store = case / "store"
    run = ["run", "--store", f"file://{store}", "--on-unlocked", "warn", "--stream", STREAM]
    proc = tfaudit(
        [*run, "--json", "--", sys.executable, "-c", WRITER, json.dumps(chunks)],
        env=env,
        cwd=case,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    spooled = next((case / "shipped").iterdir()) / "output.log"
    stored = _everything_stored(store)
    structure = _structure(tmp_path.parent)
    for encoded in _forms(secret):
        assert encoded not in spooled.read_bytes()
        # The record's own words (field names, notes) hold any short string they hold
        # whatever the secret: only bytes a run without the secret never stores are a leak.
        assert encoded not in stored or encoded in structure, encoded
    assert b"REDACTED" in spooled.read_bytes()


_STRUCTURE: dict[Path, bytes] = {}


def _structure(root: Path) -> bytes:
    """Everything a run with no secret stores (once per test session)."""
    if root not in _STRUCTURE:
        case = Path(tempfile.mkdtemp(dir=root))
        env = {**isolated_env(case / "env"), "TFAUDIT_WORK_DIR": str(case)}
        store = case / "store"
        run = ["run", "--store", f"file://{store}", "--on-unlocked", "warn", "--stream", STREAM]
        proc = tfaudit([*run, "--", sys.executable, "-c", "print('x')"], env=env, cwd=case)
        assert proc.returncode == 0, proc.stderr.decode()
        _STRUCTURE[root] = _everything_stored(store)
    return _STRUCTURE[root]


NESTED_SECRETS = {
    "top": "tf-Top-Secret-4f9a1c",
    "in_list": "tf-List-Secret-7b2e",
    "in_map": "tf-Map-Secret-93d0",
    "output_only": "tf-Output-Secret-c51f",
}

NESTED_CONFIG = """
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}
variable "top" {
  type      = string
  sensitive = true
}
variable "nested" {
  type = object({ list = list(string), map = map(string) })
  sensitive = true
}
resource "null_resource" "item" {
  triggers = {
    plain  = "visible-value"
    top    = var.top
    joined = join(",", var.nested.list)
    mapped = var.nested.map["inner"]
  }
}
output "nested" {
  value     = var.nested
  sensitive = true
}
output "only" {
  value     = { deep = [sensitive("%(output_only)s")] }
  sensitive = true
}
"""


def test_plan_json_keeps_no_sensitive_value(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """Sensitive variables (a string, and an object of a list and a map) feed a resource
    and outputs; the uploaded plan JSON and log hold none of the values, but keep the
    plain one."""
    env = isolated_env(tmp_path / "env")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "main.tf").write_text(NESTED_CONFIG % NESTED_SECRETS, encoding="utf-8")
    terraform = pinned_terraform()
    tf_init(terraform, workdir, env)
    nested = {
        "list": ["a-visible", NESTED_SECRETS["in_list"]],
        "map": {"inner": NESTED_SECRETS["in_map"]},
    }
    (workdir / "terraform.tfvars.json").write_text(
        json.dumps({"top": NESTED_SECRETS["top"], "nested": nested}), encoding="utf-8"
    )
    env = {**env, **s3_server.env(), "TFAUDIT_WORK_DIR": str(tmp_path / "spools")}
    run = ["run", "--store", f"s3://{lock_bucket}/a", "--stream", STREAM, "--json", "--"]
    proc = tfaudit(
        [*run, str(terraform), "plan", "-input=false", "-out=tfplan"],
        env=env,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a")
    client = s3_server.client()
    stored = {
        a["name"]: client.get_object(
            Bucket=lock_bucket, Key=f"a/{a['key']}", VersionId=a["version_id"]
        )["Body"].read()
        for a in record["artifacts"]
    }
    plan = stored["plan.json"]
    assert b"visible-value" in plan and b"null_resource.item" in plan
    for blob in (plan, stored["output.log"], json.dumps(record).encode()):
        for value in NESTED_SECRETS.values():
            assert value.encode() not in blob
    assert result_json(proc)["plan"]["add"] == 1


def test_record_and_metadata_never_hold_credentials(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """Cloud and CI credentials in the environment and on the command line stay out of the
    record, every artifact, the spool's state and receipt, --json and the CI's files."""
    # moto ignores signatures, so it gets a distinctive fake secret key and session token;
    # Ceph checks them, so there the server's own (random, 40 hex) secret key is the one.
    aws = (
        {"AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
        if s3_server.kind == "ceph"
        else {
            "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRETkey",
            "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN0123456789abcdefABCDEF",
        }
    )
    credentials = {
        **aws,
        "GITHUB_TOKEN": "ghs_EXAMPLEexampleEXAMPLEexample0123",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "oidc-request-bearer-EXAMPLE-0123456789",
        "TF_VAR_db_password": "db-Pa55word-EXAMPLE",
        "TFAUDIT_HMAC_SECRET": "hmac-key-material-EXAMPLE-0123456789",
    }
    jwt = (
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJhdWQiOiJzdHMuYW1hem9uYXdzLmNvbSIsInN1YiI6InJlcG86YWNtZS9pbmZyYSJ9."
        "c2lnbmF0dXJlLUVYQU1QTEU"
    )
    out = tmp_path / "gh"
    out.mkdir()
    env = {
        **isolated_env(tmp_path / "env"),
        **s3_server.env(),
        **credentials,
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/infra",
        "GITHUB_RUN_ID": "42",
        "GITHUB_OUTPUT": str(out / "output"),
        "GITHUB_STEP_SUMMARY": str(out / "summary"),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
        "TFAUDIT_SIGNING_KEY": "hmac:env:TFAUDIT_HMAC_SECRET",
    }
    # The command line carries a secret and an STS-audience OIDC JWT too.
    script = "import os; print('token in use:', os.environ['GITHUB_TOKEN'], 'and the jwt')"
    run = ["run", "--store", f"s3://{lock_bucket}/a", "--stream", STREAM, "--json", "--"]
    password = f"-var=password={credentials['TF_VAR_db_password']}"
    proc = tfaudit(
        [*run, sys.executable, "-c", script, password, f"-jwt={jwt}"],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a")
    client = s3_server.client()
    blobs = [json.dumps(record).encode(), json.dumps(result_json(proc)).encode()]
    blobs += [
        client.get_object(Bucket=lock_bucket, Key=f"a/{a['key']}", VersionId=a["version_id"])[
            "Body"
        ].read()
        for a in record["artifacts"]
    ]
    blobs += [p.read_bytes() for p in (tmp_path / "spools").rglob("*") if p.is_file()]
    blobs += [p.read_bytes() for p in out.iterdir()]
    assert record["command"][-1] != f"-jwt={jwt}"  # the argv in the record is redacted
    for blob in blobs:
        for value in [*credentials.values(), jwt]:
            assert value.encode() not in blob, value


# --- issue 13: every item through the real run path, grepped in the store -------------------

ENCODED = "Xq7!rT&<pw>9-Lm/2Z"  # registered as DB_PASSWORD: every encoding of item 7
ENV_SECRETS = {  # item 10: registered by name, by default
    "DATABASE_URL": "postgres://app:DbUrlPassw0rd-x1@db.internal:5432/app",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0AAA/B0BBB/WebhookSecretXYZ123",
    "MYSQL_PWD": "MysqlPwd-7c1e0b",
    "CONSUL_HTTP_AUTH": "consul:ConsulAuth-99aa",
    "DD_APP_KEY": "ddappkey0123456789abcdef0123456789abcdef",
    "GITHUB_PAT": "pat-value-not-a-ghp-shape-42",
    "TF_VAR_db_password": "TfVarPassw0rd-5d5d",
    "SHORT_TOKEN": "pw7x!",  # item 8: shorter than 8, redacted as a word
    "PADDED_SECRET": "padded-secret-value-9\n",  # item 8: trailing newline
}


def _item7_forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    script = base64.b64encode(b"#!/bin/sh\nexport PW='" + raw + b"'\n" + b"y" * 50)
    return [
        raw.hex().encode(),
        raw.hex().upper().encode(),
        secret.encode("utf-16-le"),
        secret.encode("utf-16-be"),
        base64.b64encode(base64.b64encode(raw)),
        b"\n".join(script[i : i + 76] for i in range(0, len(script), 76)),
        json.dumps(secret)[1:-1]  # Go's json.Marshal: HTML characters as \u00XX
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .encode(),
        raw[:6] + b"\x1b[0m\x1b[1m" + raw[6:12] + b"\x1b[32m" + raw[12:],
    ]


def test_items_7_to_10_never_reach_the_store(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """Encodings (7), short and padded values (8), token shapes (9) and auto-registered names
    (10), printed by a real child process through `tfaudit run`, on both pipes."""
    from tests.test_redact_shapes import CASES

    shapes = [(text, must_go) for _, text, must_go, _ in CASES]
    printed = [f for f in _item7_forms(ENCODED)] + [
        value.strip().encode() for value in ENV_SECRETS.values()
    ]
    printed += [text.encode() for text, _ in shapes]
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps([p.decode("latin-1") for p in printed]), encoding="utf-8")
    script = (
        "import json, os, sys\n"
        "for index, item in enumerate(json.load(open(sys.argv[1]))):\n"
        "    os.write(1 + index % 2, b'[' + item.encode('latin-1') + b']\\n')\n"
    )
    env = {
        **isolated_env(tmp_path / "env"),
        **s3_server.env(),
        **ENV_SECRETS,
        "DB_PASSWORD": ENCODED,
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
    }
    run = ["run", "--store", f"s3://{lock_bucket}/a", "--stream", STREAM, "--"]
    proc = tfaudit([*run, sys.executable, "-c", script, str(payload)], env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"SHORT_TOKEN is shorter than 8 characters" in proc.stderr  # said, never dropped
    (record,) = chain_records(s3_server.client(), lock_bucket, STREAM, prefix="a")
    client = s3_server.client()
    (log,) = (a for a in record["artifacts"] if a["name"] == "output.log")
    stored = client.get_object(
        Bucket=lock_bucket, Key=f"a/{log['key']}", VersionId=log["version_id"]
    )["Body"].read()
    secrets = [ENCODED, *(value.strip() for value in ENV_SECRETS.values())]
    secrets += [must_go for _, must_go in shapes if len(must_go) >= 8]  # not a bare prefix
    unwrapped = stored.replace(b"\n", b"")
    for secret in secrets:
        assert secret.encode() not in stored, secret
    forms = _item7_forms(ENCODED)
    for form in forms[:5] + forms[6:]:  # all but the wrapped base64: checked unwrapped
        assert form not in stored, form
    fragments = {f.data for f in secret_forms(ENCODED) if f.gap.startswith(b"(?:\\r")}
    assert len(fragments) == 3  # standard base64 at its three alignments
    for fragment in fragments:
        assert fragment not in unwrapped  # the wrapped base64, line breaks taken out
    assert stored.count(b"[REDACTED:") >= len(printed) - 1


PEM_LINES = [
    f"MIIJ{index:03d}" + "QIBADANBgkqhkiG9w0BAQEFAASCCS0wggkpAgEAAoICAQC7" for index in range(400)
]
PEM_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PEM_LINES) + "\n-----END RSA PRIVATE KEY-----\n"
)


def test_pem_keys_in_terraform_output_never_reach_the_store(
    s3_server: S3Server, lock_bucket: str, tmp_path: Path
) -> None:
    """Item 6 with the real terraform: a 21 KiB key (longer than the 16 KiB match cap) in a
    plan diff (heredoc, indented) and, escaped with \\n, inside a diagnostic's box."""
    env = {
        **isolated_env(tmp_path / "env"),
        **s3_server.env(),
        "TFAUDIT_WORK_DIR": str(tmp_path / "spools"),
    }
    work = tmp_path / "work"
    work.mkdir()
    (work / "key.pem").write_text(PEM_KEY, encoding="utf-8")
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    null = { source = "hashicorp/null", '
        'version = "2.1.2" }\n  }\n}\n'
        'variable "key" {\n  type = string\n  default = ""\n'
        "  validation {\n    condition     = length(var.key) < 100\n"
        '    error_message = "The key is too long."\n  }\n}\n'
        'resource "null_resource" "tls" {\n  triggers = { key = file("key.pem") }\n}\n',
        encoding="utf-8",
    )
    terraform = terraform_on_path() or pinned_terraform()
    tf_init(terraform, work, env)
    run = ["run", "--store", f"s3://{lock_bucket}/a", "--stream", STREAM, "--"]
    diff = tfaudit([*run, str(terraform), "plan", "-input=false"], env=env, cwd=work)
    assert diff.returncode == 0, diff.stderr.decode()
    (work / "terraform.tfvars").write_text(f"key = {json.dumps(PEM_KEY)}\n", encoding="utf-8")
    box = tfaudit([*run, str(terraform), "plan", "-input=false"], env=env, cwd=work)
    assert box.returncode == 1
    assert PEM_LINES[0].encode() in diff.stdout and b"\xe2\x94\x82" in box.stderr
    client = s3_server.client()
    records = chain_records(client, lock_bucket, STREAM, prefix="a")
    assert len(records) == 2
    for record in records:
        (log,) = (a for a in record["artifacts"] if a["name"] == "output.log")
        stored = client.get_object(
            Bucket=lock_bucket, Key=f"a/{log['key']}", VersionId=log["version_id"]
        )["Body"].read()
        assert b"[REDACTED:private-key]" in stored
        for line in PEM_LINES:
            assert line.encode() not in stored, line
