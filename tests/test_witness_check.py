"""The witness's pieces without a store: the checkpoint format, the pure cross-check
(``verify/witness.py``), ``--head-from`` parsing, the witness-sync plan, and how a run's
checkpoint and warnings reach the step summary and the spool contract.

Hostile checkpoints (junk, oversized, deeply nested, duplicate keys, forged) must each come
back as a finding on their slot, never as an exception.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tfaudit_ci.canonical import canonical_bytes, sha256_hex
from tfaudit_ci.commands.witness_sync import backfill_plan
from tfaudit_ci.errors import ConfigError
from tfaudit_ci.report.github import step_summary
from tfaudit_ci.result import RunResult
from tfaudit_ci.signing import HmacSigner, HmacVerifier, NoSigner, Signer, Verifier, hmac_key_id
from tfaudit_ci.spoolstate import SpoolState, WitnessSpec
from tfaudit_ci.stores import StoreOptions
from tfaudit_ci.stores.base import Policy
from tfaudit_ci.verify.model import Problem
from tfaudit_ci.verify.witness import (
    ChainFacts,
    CheckpointVersion,
    HeadClaim,
    WitnessListing,
    check_witness,
)
from tfaudit_ci.vocab import OnUnlocked, RunStatus
from tfaudit_ci.witness import (
    CHECKPOINT_MAX_BYTES,
    Checkpoint,
    CheckpointRef,
    build_checkpoint,
    checkpoint_key,
    parse_checkpoint,
    parse_heads,
    read_heads,
)

STREAM = "acme/infra"
KEY = b"witness-test-key"
URI = "s3://witness/cp"


def record_sha(seq: int) -> str:
    return sha256_hex(f"record {seq}".encode())


def build_chain(
    seqs: list[int], *, signer: Signer | None = None, shas: dict[int, str] | None = None
) -> dict[int, bytes]:
    """Checkpoints for ``seqs`` as the writer links them (each to the newest below it)."""
    out: dict[int, bytes] = {}
    prev: CheckpointRef | None = None
    for seq in sorted(seqs):
        data = build_checkpoint(
            stream=STREAM,
            seq=seq,
            record_sha256=(shas or {}).get(seq, record_sha(seq)),
            prev=prev,
            signer=signer or NoSigner(),
        )
        out[seq] = data
        prev = CheckpointRef(seq, sha256_hex(data))
    return out


def listing(checkpoints: dict[int, bytes], **extra: list[CheckpointVersion]) -> WitnessListing:
    slots = {
        checkpoint_key(STREAM, seq): [CheckpointVersion("v1", data)]
        for seq, data in checkpoints.items()
    }
    slots.update(extra)
    return WitnessListing(URI, slots)


def facts(present: range | list[int], *, shas: dict[int, str] | None = None) -> ChainFacts:
    seqs = list(present)
    return ChainFacts(frozenset(seqs), {s: (shas or {}).get(s, record_sha(s)) for s in seqs}, seqs)


def codes(problems: list[Problem], severity: str | None = None) -> list[tuple[int | None, str]]:
    return sorted(
        ((p.seq, p.code) for p in problems if severity is None or p.severity == severity),
        key=lambda item: (-1 if item[0] is None else item[0], item[1]),
    )


def check(
    chain: ChainFacts,
    witness: WitnessListing | None,
    *,
    heads: Sequence[HeadClaim] = (),
    verifier: Verifier | None = None,
    require: bool = False,
) -> list[Problem]:
    found = check_witness(chain, witness, heads, stream=STREAM, verifier=verifier, require=require)
    return found.problems


# -- the checkpoint format -------------------------------------------------------------------


def test_a_checkpoint_is_canonical_signed_and_parses_back() -> None:
    signer = HmacSigner(KEY, hmac_key_id(KEY))
    data = build_checkpoint(
        stream=STREAM, seq=3, record_sha256=record_sha(3), prev=CheckpointRef(2, "a" * 64),
        signer=signer,
    )  # fmt: skip
    raw = json.loads(data)
    assert canonical_bytes(raw) == data
    assert set(raw) == {
        "schema", "stream", "seq", "record_sha256", "prev", "time", "tfaudit_version",
        "signature",
    }  # fmt: skip
    assert raw["prev"] == {"seq": 2, "sha256": "a" * 64}
    parsed = parse_checkpoint(data, stream=STREAM, seq=3)
    assert isinstance(parsed, Checkpoint)
    assert parsed.sha256 == sha256_hex(data) and parsed.record_sha256 == record_sha(3)
    assert HmacVerifier(KEY).check(parsed.signature, parsed.message) is None
    # The signed message is domain-separated: it can never be a record's (which starts `{`).
    assert parsed.message.startswith(b"tfaudit.checkpoint/v1\n")
    assert HmacVerifier(b"another key").check(parsed.signature, parsed.message) is not None


def _mutated(**changes: object) -> bytes:
    raw = json.loads(build_checkpoint(
        stream=STREAM, seq=5, record_sha256=record_sha(5), prev=None, signer=NoSigner()
    ))  # fmt: skip
    raw.update(changes)
    return canonical_bytes(raw)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        (b"[" * 60_000 + b"]" * 60_000, "over the"),  # over the cap: never parsed
        (b"[" * 2_000 + b"]" * 2_000, "is not JSON"),  # deep: RecursionError is a finding
        (b'{"seq": 5, "seq": 5}', "duplicate key"),
        (b'{"seq": NaN}', "is not JSON"),
        (b"[]", "not an object"),
        (b" " * (CHECKPOINT_MAX_BYTES + 1), "over the"),
        (_mutated(stream="other/stream"), "is for stream"),
        (_mutated(seq=6), "sits in the slot of seq 5"),
        (_mutated(seq=True), "sits in the slot of seq 5"),
        (_mutated(record_sha256="XYZ"), "no valid record_sha256"),
        (_mutated(prev={"seq": 5, "sha256": "a" * 64}), "malformed prev"),
        (_mutated(prev={"seq": 1}), "malformed prev"),
        (_mutated(schema="tfaudit.record/v1"), "has schema"),
        (_mutated(extra=1), "unexpected: extra"),
        (_mutated(signature="x"), "no signature block"),
        (_mutated()[:-1] + b" }", "not in canonical form"),
    ],
)
def test_hostile_checkpoints_are_findings(data: bytes, expected: str) -> None:
    problem = parse_checkpoint(data, stream=STREAM, seq=5)
    assert isinstance(problem, str) and expected in problem, problem
    found = check(facts(range(6)), listing({5: data}))
    assert (5, "witness-invalid") in codes(found)


# -- the cross-check ---------------------------------------------------------------------------


def test_a_witness_that_agrees_finds_nothing() -> None:
    assert check(facts(range(4)), listing(build_chain([0, 1, 2, 3])), require=True) == []


def test_a_truncated_tail_names_the_missing_seqs() -> None:
    found = check(facts(range(3)), listing(build_chain(list(range(6)))))
    assert codes(found) == [(3, "truncated")]
    message = found[0].message
    assert "seqs 3..5 missing" in message and "chain ends at seq 2" in message


def test_an_emptied_chain_is_truncated_from_seq_zero() -> None:
    found = check(facts([]), listing(build_chain([0, 1])))
    assert codes(found) == [(0, "truncated")]
    assert "seqs 0..1 missing" in found[0].message


def test_a_rewritten_record_is_a_mismatch() -> None:
    chain = facts(range(3), shas={2: "f" * 64})
    assert codes(check(chain, listing(build_chain([0, 1, 2])))) == [(2, "witness-mismatch")]


def test_a_checkpoint_for_a_deleted_middle_record_is_a_mismatch() -> None:
    chain = facts([0, 2])
    assert (1, "witness-mismatch") in codes(check(chain, listing(build_chain([0, 1, 2]))))


def test_a_checkpoint_slot_written_twice_with_another_record_is_a_fork() -> None:
    first = build_chain([0])[0]
    fork = build_chain([0], shas={0: "e" * 64})[0]
    same = build_chain([0])[0]  # the same statement written again (another time field)
    key = checkpoint_key(STREAM, 0)
    versions = [CheckpointVersion("v1", first), CheckpointVersion("v2", same)]
    assert check(facts([0]), WitnessListing(URI, {key: versions})) == []
    versions.append(CheckpointVersion("v3", fork))
    found = check(facts([0]), WitnessListing(URI, {key: versions}))
    assert codes(found) == [(0, "witness-mismatch")]
    assert "forked checkpoint" in found[0].message


def test_a_broken_checkpoint_chain_is_its_own_finding() -> None:
    chain = build_chain([0, 1, 2])
    # Seq 1 deleted from the witness: seq 2's link no longer resolves.
    deleted = {checkpoint_key(STREAM, 1): [CheckpointVersion("d", None, deleted=True)]}
    found = check(facts(range(3)), listing({0: chain[0], 2: chain[2]}, **deleted))
    assert codes(found, "error") == [(1, "witness-chain"), (2, "witness-chain")]
    # Seq 1 replaced by another valid checkpoint of the same record: the link's hash fails.
    replaced = build_chain([1], shas={1: record_sha(1)})[1]
    found = check(facts(range(3)), listing({0: chain[0], 1: replaced, 2: chain[2]}))
    assert codes(found) == [(2, "witness-chain")]
    assert "altered or replaced" in found[0].message


def test_stray_objects_and_unreadable_versions_are_invalid() -> None:
    extra = {
        "checkpoints/acme/infra/notes.txt": [CheckpointVersion("v", b"hello")],
        checkpoint_key(STREAM, 999_999_999_999): [
            CheckpointVersion("v", None, error="is over the 4096-byte cap")
        ],
    }
    found = check(facts(range(2)), listing(build_chain([0, 1]), **extra))
    assert codes(found) == [(None, "witness-invalid"), (999_999_999_999, "witness-invalid")]


def test_checkpoint_signatures_are_checked_with_the_trusted_key() -> None:
    good = build_chain([0, 1], signer=HmacSigner(KEY, hmac_key_id(KEY)))
    assert check(facts(range(2)), listing(good), verifier=HmacVerifier(KEY)) == []
    forged = build_chain([0, 1], signer=HmacSigner(b"forger", hmac_key_id(b"forger")))
    found = check(facts(range(2)), listing(forged), verifier=HmacVerifier(KEY))
    assert codes(found, "error") == [(0, "witness-signature"), (1, "witness-signature")]
    # A forged checkpoint beyond the head is not evidence of truncation, only of forgery.
    forged_ahead = build_chain([0, 1, 2, 3], signer=HmacSigner(b"forger", hmac_key_id(b"forger")))
    found = check(facts(range(2)), listing(forged_ahead), verifier=HmacVerifier(KEY))
    assert "truncated" not in {code for _, code in codes(found)}
    unsigned = build_chain([0, 1])
    found = check(facts(range(2)), listing(unsigned), verifier=HmacVerifier(KEY))
    assert codes(found, "error") == [(0, "witness-signature"), (1, "witness-signature")]


def test_unwitnessed_records_are_warnings_or_errors_by_range() -> None:
    chain = build_chain([0, 1, 4])
    found = check(facts(range(8)), listing(chain))
    assert codes(found) == [(2, "unwitnessed"), (5, "unwitnessed")]
    assert all(p.severity == "warning" for p in found)
    middle, tail = (p.message for p in found)
    assert middle.startswith("seqs 2..3") and "covered only through the hash chain" in middle
    assert tail.startswith("seqs 5..7") and "would go unnoticed" in tail
    required = check(facts(range(8)), listing(chain), require=True)
    assert codes(required, "error") == [(2, "unwitnessed"), (5, "unwitnessed")]


def test_heads_from_elsewhere_are_checked_like_checkpoints() -> None:
    heads = [
        HeadClaim(1, record_sha(1), "log.txt:1"),
        HeadClaim(2, "d" * 64, "log.txt:2"),
        HeadClaim(6, record_sha(6), "log.txt:3"),
    ]
    found = check(facts(range(4)), None, heads=heads)
    assert codes(found) == [(2, "witness-mismatch"), (4, "truncated")]
    (truncated,) = (p for p in found if p.code == "truncated")
    assert "log.txt:3" in truncated.message and "seqs 4..6" in truncated.message


def test_a_listing_that_fails_is_reported() -> None:
    found = check(facts(range(2)), WitnessListing(URI, {}, error="AccessDenied"))
    assert codes(found) == [(None, "witness-unreadable")]


def test_a_huge_listing_stays_ranges() -> None:
    """100,000 records, one checkpoint: one finding per range, not per seq."""
    chain = build_chain([50_000])
    found = check(facts(range(100_000)), listing(chain))
    assert codes(found) == [(0, "unwitnessed"), (50_001, "unwitnessed")]


# -- --head-from ------------------------------------------------------------------------------


def test_heads_are_read_from_plain_pairs_summary_lines_and_json_lines(tmp_path: Path) -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    lines = [
        "# gathered from job logs",
        f"3 {a}",
        f"tfaudit: succeeded (exit 0); record seq 4 at s3://x/acme/infra/chain/000000000004.json "
        f"sha256 {b}; checkpoint s3://w/checkpoints/acme/infra/000000000004.json",
        json.dumps({"stream": STREAM, "seq": 5, "record_sha256": c, "record_uri": "s3://x"}),
        json.dumps({"stream": "other/repo", "seq": 9, "record_sha256": c}),
        "tfaudit: warning: something unrelated",
        "",
    ]
    claims = parse_heads(lines, stream=STREAM, source="heads.txt")
    assert [(h.seq, h.sha256, h.source) for h in claims] == [
        (3, a, "heads.txt:2"),
        (4, b, "heads.txt:3"),
        (5, c, "heads.txt:4"),
    ]
    path = tmp_path / "empty.txt"
    path.write_text("nothing here\n")
    with pytest.raises(ConfigError, match="holds no"):
        read_heads(str(path), stream=STREAM)
    with pytest.raises(ConfigError, match="cannot read"):
        read_heads(str(tmp_path / "absent.txt"), stream=STREAM)


# -- witness-sync's plan ------------------------------------------------------------------------


def test_witness_sync_fills_the_prefix_and_the_tail_never_the_middle() -> None:
    assert backfill_plan(list(range(5)), frozenset()) == [0, 1, 2, 3, 4]
    assert backfill_plan(list(range(10)), frozenset({3, 6})) == [0, 1, 2, 7, 8, 9]
    assert backfill_plan(list(range(3)), frozenset({0, 1, 2})) == []


# -- publishing ---------------------------------------------------------------------------------


def test_the_step_summary_shows_the_checkpoint_the_head_and_warnings() -> None:
    result = RunResult(
        exit_code=0,
        command_exit_code=0,
        status=RunStatus.SUCCEEDED,
        audit_ok=True,
        store="s3://audit/tf",
        stream=STREAM,
        seq=7,
        record_uri="s3://audit/tf/acme/infra/chain/000000000007.json",
        record_sha256="ab" * 32,
        checkpoint_uri="s3://witness/cp/checkpoints/acme/infra/000000000007.json",
        warnings=["witness s3://witness/cp has no checkpoint for seq 6"],
    )
    summary = step_summary(result)
    assert "<code>s3://witness/cp/checkpoints/acme/infra/000000000007.json</code>" in summary
    assert f"<code>seq 7 sha256 {'ab' * 32}</code>" in summary
    assert "[!WARNING]" in summary and "no checkpoint for seq 6" in summary
    assert result.summary_line().endswith(
        "; checkpoint s3://witness/cp/checkpoints/acme/infra/000000000007.json"
    )
    # The summary line is itself a --head-from line.
    (claim,) = parse_heads([result.summary_line()], stream=STREAM, source="log")
    assert (claim.seq, claim.sha256) == (7, "ab" * 32)


def test_the_spool_carries_the_witness_but_no_secret(tmp_path: Path) -> None:
    spool = SpoolState(
        store="s3://audit/tf",
        store_options=StoreOptions(endpoint_url="http://127.0.0.1:9000"),
        stream=STREAM,
        policy=Policy(),
        on_unlocked=OnUnlocked.FAIL,
        signing_key="hmac:env:TFAUDIT_HMAC",
        run_folder="20240101T000000Z-1-1-abcdef01",
        command=["terraform", "plan"],
        cwd="/src",
        ci={},
        started_at="2024-01-01T00:00:00.000Z",
        witness=WitnessSpec(
            "s3://witness/cp",
            StoreOptions(endpoint_url="http://127.0.0.1:9001", profile="witness"),
            required=False,
        ),
    )
    spool.save(tmp_path)
    loaded = SpoolState.load(tmp_path)
    assert loaded.witness == spool.witness
    assert loaded == spool
    raw = json.loads((tmp_path / "spool.json").read_text())
    assert raw["witness"]["options"]["profile"] == "witness"
    assert "secret" not in json.dumps(raw["witness"]).lower()


def test_a_witness_that_is_the_store_itself_is_refused() -> None:
    from tfaudit_ci.config import Config
    from tfaudit_ci.witness import witness_spec

    assert witness_spec(Config(store="s3://audit/tf")) is None
    spec = witness_spec(Config(store="s3://audit/tf", witness="s3://witness/tf"))
    assert spec is not None and spec.required and spec.options.region is None
    with pytest.raises(ConfigError, match="is the store itself"):
        witness_spec(Config(store="s3://audit/tf", witness="s3://audit/tf/"))


def test_an_ed25519_signed_checkpoint_verifies_with_the_public_key(tmp_path: Path) -> None:
    """The record signers sign checkpoints too; the trusted public key checks them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from tfaudit_ci.signing import make_signer
    from tfaudit_ci.signing_keys import public_key_verifier

    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signer = make_signer(f"ed25519:{private}", {})
    chain = build_chain([0, 1, 2], signer=signer)
    assert max(len(data) for data in chain.values()) < CHECKPOINT_MAX_BYTES // 4
    verifier = public_key_verifier(str(public))
    assert check(facts(range(3)), listing(chain), verifier=verifier, require=True) == []
    other = build_chain([0, 1, 2], signer=HmacSigner(KEY, hmac_key_id(KEY)))
    found = check(facts(range(3)), listing(other), verifier=verifier)
    assert {code for _, code in codes(found, "error")} == {"witness-signature"}
