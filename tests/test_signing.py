"""Record signatures: HMAC, Ed25519 key files, and AWS KMS (against moto's server over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devkit.servers import S3Server, start_moto
from tfaudit_ci.canonical import canonical_bytes
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.signing import (
    NoSigner,
    Verifier,
    make_signer,
    make_verifier,
    record_signing_message,
    sign_record,
)
from tfaudit_ci.signing_keys import KMS_ALG, fingerprint


def _chain(signer_spec: str, env: dict[str, str], count: int = 3) -> list[dict[str, Any]]:
    """``count`` signed records, each signature chained to the previous one."""
    import json

    signer = make_signer(signer_spec, env)
    records: list[dict[str, Any]] = []
    for seq in range(count):
        unsigned = {"seq": seq, "stream": "s", "command": ["terraform", "plan"], "big": "x" * 5000}
        prev = records[-1] if records else None
        records.append(json.loads(sign_record(unsigned, prev, signer)))
    return records


def _problems(records: list[dict[str, Any]], verifier: Verifier) -> list[str | None]:
    out = []
    for index, record in enumerate(records):
        prev = records[index - 1] if index else None
        out.append(verifier.check(record["signature"], record_signing_message(record, prev)))
    return out


def _write_ed25519(path: Path) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def _write_public(key: Any, path: Path) -> Path:
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# -- HMAC -------------------------------------------------------------------------------------


def test_hmac_round_trip_and_failures() -> None:
    env = {"K": "secret-one", "OTHER": "secret-two"}
    records = _chain("hmac:env:K", env)
    good = make_verifier(key="hmac:env:K", public_key=None, kms_key=None, env=env)
    assert good is not None
    assert _problems(records, good) == [None, None, None]

    wrong = make_verifier(key="hmac:env:OTHER", public_key=None, kms_key=None, env=env)
    assert wrong is not None
    assert all(p and "not the trusted" in p for p in _problems(records, wrong))

    records[1]["command"] = ["terraform", "destroy"]  # altered after signing
    problems = _problems(records, good)
    assert problems[0] is None and problems[1] and "does not match" in problems[1]
    assert problems[2] is None  # its own bytes and its predecessor's signature are untouched


def test_a_signature_covers_the_previous_signature() -> None:
    env = {"K": "k"}
    records = _chain("hmac:env:K", env)
    verifier = make_verifier(key="hmac:env:K", public_key=None, kms_key=None, env=env)
    assert verifier is not None
    records[1]["signature"]["value"] = "0" * 64  # a forged signature value on seq 1
    problems = _problems(records, verifier)
    assert problems[1] is not None and problems[2] is not None


def test_unsigned_record_is_flagged_when_a_key_is_trusted() -> None:
    import json

    verifier = make_verifier(key="hmac:env:K", public_key=None, kms_key=None, env={"K": "k"})
    assert verifier is not None
    record = json.loads(sign_record({"seq": 0}, None, NoSigner()))
    assert verifier.check(record["signature"], record_signing_message(record, None)) == (
        "record is not signed"
    )


def test_verifier_options_are_exclusive_and_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        make_verifier(key="hmac:env:K", public_key="x.pem", kms_key=None, env={"K": "k"})
    with pytest.raises(ConfigError, match="not an HMAC"):
        make_verifier(key="ed25519:x", public_key=None, kms_key=None, env={})
    with pytest.raises(ConfigError, match="not set"):
        make_verifier(key="hmac:env:MISSING", public_key=None, kms_key=None, env={})
    assert make_verifier(key=None, public_key=None, kms_key=None, env={}) is None


# -- Ed25519 ------------------------------------------------------------------------------------


def test_ed25519_round_trip_wrong_key_and_tamper(tmp_path: Path) -> None:
    key = _write_ed25519(tmp_path / "key.pem")
    records = _chain(f"ed25519:{tmp_path / 'key.pem'}", {})
    assert records[0]["signature"]["alg"] == "ed25519"
    assert records[0]["signature"]["public_key_sha256"] == fingerprint(key.public_key())

    public = _write_public(key.public_key(), tmp_path / "key.pub")
    verifier = make_verifier(key=None, public_key=str(public), kms_key=None, env={})
    assert verifier is not None
    assert _problems(records, verifier) == [None, None, None]
    # The private key file works as the trusted key too (its public half is used).
    from_private = make_verifier(
        key=None, public_key=str(tmp_path / "key.pem"), kms_key=None, env={}
    )
    assert from_private is not None and _problems(records, from_private) == [None] * 3

    other = _write_public(ed25519.Ed25519PrivateKey.generate().public_key(), tmp_path / "o.pub")
    wrong = make_verifier(key=None, public_key=str(other), kms_key=None, env={})
    assert wrong is not None
    assert all(p and "not the trusted" in p for p in _problems(records, wrong))

    # A forger who copies the trusted fingerprint into the record still cannot sign.
    forged = _chain(f"ed25519:{tmp_path / 'key.pem'}", {}, count=1)[0]
    forged["exit_code"] = 0
    problem = verifier.check(forged["signature"], record_signing_message(forged, None))
    assert problem is not None and "does not verify" in problem


def test_ed25519_bad_key_files(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519 key"):
        make_signer(f"ed25519:{tmp_path / 'rsa.pem'}", {})
    with pytest.raises(ConfigError, match="cannot read"):
        make_signer(f"ed25519:{tmp_path / 'missing.pem'}", {})
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="PEM"):
        make_signer(f"ed25519:{tmp_path / 'junk.pem'}", {})


# -- AWS KMS on moto's server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto-kms"))
    yield server
    server.stop()


def _kms(server: S3Server) -> Any:
    return boto3.session.Session().client(
        "kms",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )


def test_kms_sign_then_verify_with_the_fetched_public_key(kms_server: S3Server) -> None:
    client = _kms(kms_server)
    key = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    env = kms_server.env()
    records = _chain(f"kms:{key['KeyId']}", env)
    signature = records[0]["signature"]
    assert signature["alg"] == KMS_ALG and signature["key_id"] == key["Arn"]

    verifier = make_verifier(key=None, public_key=None, kms_key=key["Arn"], env=env)
    assert verifier is not None
    assert _problems(records, verifier) == [None, None, None]

    records[2]["status"] = "succeeded"  # altered
    assert _problems(records, verifier)[2] is not None


def test_kms_public_key_exported_as_pem_verifies_offline(
    kms_server: S3Server, tmp_path: Path
) -> None:
    client = _kms(kms_server)
    key_id = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    records = _chain(f"kms:{key_id}", kms_server.env())
    der = client.get_public_key(KeyId=key_id)["PublicKey"]
    public = _write_public(serialization.load_der_public_key(der), tmp_path / "kms.pub")
    verifier = make_verifier(key=None, public_key=str(public), kms_key=None, env={})
    assert verifier is not None and _problems(records, verifier) == [None, None, None]


def test_kms_wrong_kind_of_key_and_wrong_trusted_key(kms_server: S3Server, tmp_path: Path) -> None:
    client = _kms(kms_server)
    env = kms_server.env()
    rsa_key = client.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    with pytest.raises(ConfigError, match="ECC_NIST_P256"):
        make_signer(f"kms:{rsa_key['KeyId']}", env)
    with pytest.raises(ConfigError):
        make_signer("kms:00000000-0000-0000-0000-000000000000", env)

    signing = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    other = client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    records = _chain(f"kms:{signing['KeyId']}", env, count=1)
    wrong = make_verifier(key=None, public_key=None, kms_key=other["KeyId"], env=env)
    assert wrong is not None
    assert "not the trusted" in str(_problems(records, wrong)[0])

    ed_public = _write_public(ed25519.Ed25519PrivateKey.generate().public_key(), tmp_path / "e")
    ed = make_verifier(key=None, public_key=str(ed_public), kms_key=None, env={})
    assert ed is not None
    assert "signed with kms-ecdsa" in str(_problems(records, ed)[0])


def test_signed_bytes_are_canonical(tmp_path: Path) -> None:
    import json

    _write_ed25519(tmp_path / "k.pem")
    signer = make_signer(f"ed25519:{tmp_path / 'k.pem'}", {})
    data = sign_record({"b": 1, "a": "é"}, None, signer)
    assert data == canonical_bytes(json.loads(data))


# -- end to end: `tfaudit run --signing-key ...` then `tfaudit verify` ------------------------


def _run_and_verify(
    tmp_path: Path, env: dict[str, str], signing_key: str, *verify_args: str
) -> tuple[int, str]:
    import os
    import sys

    from tests.support.tfaudit_proc import tfaudit

    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **env}
    store = (tmp_path / "store").as_uri()
    common = ["--store", store, "--stream", "acme/infra"]
    for n in range(2):
        run = tfaudit(
            [
                "run",
                *common,
                "--on-unlocked",
                "warn",
                "--signing-key",
                signing_key,
                "--",
                sys.executable,
                "-c",
                f"print('run {n}')",
            ],
            env=full_env,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr.decode()
    verify = tfaudit(["verify", *common, *verify_args], env=full_env, cwd=tmp_path)
    return verify.returncode, verify.stdout.decode() + verify.stderr.decode()


def test_run_signed_with_ed25519_verifies_with_the_public_key(tmp_path: Path) -> None:
    key = _write_ed25519(tmp_path / "signing.pem")
    public = _write_public(key.public_key(), tmp_path / "signing.pub")
    code, out = _run_and_verify(
        tmp_path, {}, f"ed25519:{tmp_path / 'signing.pem'}", "--public-key", str(public)
    )
    assert code == 0, out
    assert "2/2 records valid" in out and "signatures checked with ed25519" in out
    other = _write_public(ed25519.Ed25519PrivateKey.generate().public_key(), tmp_path / "o.pub")
    from tests.support.tfaudit_proc import tfaudit

    wrong = tfaudit(
        [
            "verify",
            "--store",
            (tmp_path / "store").as_uri(),
            "--stream",
            "acme/infra",
            "--public-key",
            str(other),
        ],
        env={"PATH": "", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert wrong.returncode == 24 and wrong.stdout.decode().count("[signature]") == 2


def test_run_signed_with_kms_verifies_with_kms_key(kms_server: S3Server, tmp_path: Path) -> None:
    key = _kms(kms_server).create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    arn = key["KeyMetadata"]["Arn"]
    code, out = _run_and_verify(tmp_path, kms_server.env(), f"kms:{arn}", "--kms-key", arn)
    assert code == 0, out
    assert "2/2 records valid" in out and "kms-ecdsa-p256-sha256" in out


# -- the writer's own verifier: what it checks the predecessor with -------------------------


def _own_verifier_holds(signer_spec: str, env: dict[str, str], other_spec: str) -> None:
    records = _chain(signer_spec, env)
    verifier = make_signer(signer_spec, env).verifier()
    assert verifier is not None
    assert _problems(records, verifier) == [None, None, None]
    foreign = _chain(other_spec, env)
    assert all(problem is not None for problem in _problems(foreign, verifier))


def test_each_signer_derives_the_verifier_for_its_own_key(
    tmp_path: Path, kms_server: S3Server
) -> None:
    env = {"K": "secret", "OTHER": "another", **kms_server.env()}
    _own_verifier_holds("hmac:env:K", env, "hmac:env:OTHER")
    _write_ed25519(tmp_path / "a.pem")
    _write_ed25519(tmp_path / "b.pem")
    _own_verifier_holds(f"ed25519:{tmp_path / 'a.pem'}", env, f"ed25519:{tmp_path / 'b.pem'}")
    client = _kms(kms_server)
    mine, theirs = (
        client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
        for _ in range(2)
    )
    # KMS: the public key from kms:GetPublicKey, fetched once when the signer is made.
    _own_verifier_holds(f"kms:{mine}", env, f"kms:{theirs}")
    assert NoSigner().verifier() is None


@pytest.mark.parametrize("kind", ["ed25519", "kms"])
def test_a_forged_head_is_burned_not_blessed(
    kind: str, tmp_path: Path, kms_server: S3Server
) -> None:
    """With a key configured, the writer checks the head's signature before chaining on."""
    from tests.support.scenarios import Scenario, forge, slot_record, write_raw
    from tfaudit_ci.chain import Chain
    from tfaudit_ci.record import chain_key
    from tfaudit_ci.stores.file import FileStore

    env = kms_server.env()
    if kind == "ed25519":
        _write_ed25519(tmp_path / "key.pem")
        spec = f"ed25519:{tmp_path / 'key.pem'}"
    else:
        client = _kms(kms_server)
        spec = (
            "kms:"
            + client.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
                "Arn"
            ]
        )
    signer = make_signer(spec, env)
    store = FileStore(tmp_path / "store")
    Scenario(store, tmp_path / "spool", stream="s", signer=signer).create(2)
    write_raw(store, chain_key("s", 2), forge(store, "s", 2))  # unsigned, otherwise perfect
    pred, burned = Chain(store, "s", signer.verifier()).predecessor(2)
    assert pred is not None and pred.seq == 1 and [v.seq for v in burned] == [2]
    assert "not signed" in burned[0].problems[0].message
    assert slot_record(store, "s", 1)["signature"]["alg"] == signer.algorithm
