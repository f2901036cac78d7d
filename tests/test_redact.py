"""Example-based tests of the redaction engine: names, shapes, encodings, streaming, memory."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from tfaudit_ci.errors import ConfigError
from tfaudit_ci.redact import (
    CUSTOM_MAX_MATCH,
    LONG_MATCH_CAP,
    RuleSet,
    StreamRedactor,
    build_rules,
    is_secret_env_name,
    marker,
    redact_bytes,
    redact_text,
    secret_forms,
)

SECRET = "Zx9!q@w#e$r%t^y&u*i(o)p p+l=k/j?h"  # needs every kind of encoding
TRACE_LINE = (
    b"2024-05-01T12:08:36.867Z [TRACE] provider.terraform-provider-aws_v5.31.0_x5: "
    b"Received request: tf_req_id=b2221a58-7204-442e-b8b6-3a90cd447e35 "
    b"tf_resource_type=aws_s3_bucket tf_rpc=ReadResource @module=sdk.proto "
    b'arn="arn:aws:s3:::example-bucket" keyname=state/terraform.tfstate\n'
)


def rules(**env: str) -> RuleSet:
    return build_rules(env)


def redacted(data: bytes, ruleset: RuleSet) -> bytes:
    return redact_bytes(data, ruleset)[0]


@pytest.mark.parametrize(
    "name",
    [
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "ARM_CLIENT_SECRET",
        "ARM_ACCESS_KEY",
        "GOOGLE_CREDENTIALS",
        "DATADOG_API_KEY",
        "TLS_PRIVATE_KEY",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "ACTIONS_RUNTIME_TOKEN",
        "CI_JOB_TOKEN",
        "CI_JOB_JWT",
        "CI_JOB_JWT_V2",
        "VAULT_TOKEN",
        "TF_VAR_db_password",
        "TF_VAR_api_key",
        "TF_VAR_region",  # every TF_VAR_ is registered (issue 13, item 10)
        "TF_VAR_SECRET_thing",
        "TF_TOKEN_app_terraform_io",
        "DB_PASSWORD",
        "SMTP_PASSWD",
        "my_secret",
        "TFAUDIT_SIGNING_KEY",
    ],
)
def test_secret_env_names(name: str) -> None:
    assert is_secret_env_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_REGION",
        "HOME",
        "PATH",
        "GITHUB_REPOSITORY",
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CACHE_KEY",
        "TF_BACKEND_KEY",
        "ARM_CLIENT_ID",
    ],
)
def test_public_env_names(name: str) -> None:
    assert not is_secret_env_name(name)


def test_env_secret_and_its_encodings_are_redacted() -> None:
    ruleset = rules(DB_PASSWORD=SECRET)
    raw = SECRET.encode()
    encodings = [
        raw,
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw),
        quote(SECRET, safe="").encode(),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe="")).encode(),
        quote_plus(SECRET).encode(),
        json.dumps(SECRET)[1:-1].encode(),
    ]
    for encoded in encodings:
        out, counts = redact_bytes(b"before " + encoded + b" after", ruleset)
        assert out == b"before [REDACTED:env:DB_PASSWORD] after", encoded
        assert counts == {"env:DB_PASSWORD": 1}


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b'{"password": "'])
def test_base64_of_secret_embedded_at_any_alignment(prefix: bytes) -> None:
    ruleset = rules(DB_PASSWORD=SECRET)
    encoded = base64.b64encode(prefix + SECRET.encode() + b'", "more": 1}')
    out, counts = redact_bytes(b"user_data=" + encoded, ruleset)
    assert counts["env:DB_PASSWORD"] == 1
    assert not any(form.data in out for form in secret_forms(SECRET))


def test_public_values_are_not_registered() -> None:
    ruleset = build_rules({"AWS_REGION": "us-east-1-long", "HOME": "/home/runner-x"})
    assert ruleset.masked_values() == []
    assert redacted(b"us-east-1-long /home/runner-x", ruleset) == b"us-east-1-long /home/runner-x"


def test_extra_env_names_and_masked_values() -> None:
    ruleset = build_rules(
        {"DEPLOY_PHRASE": "correct horse battery", "VAULT_TOKEN": "hvs.abcdefghijkl"},
        extra_env_names=["DEPLOY_PHRASE"],
    )
    assert ruleset.masked_values() == ["correct horse battery", "hvs.abcdefghijkl"]
    out = redacted(b"say correct horse battery to hvs.abcdefghijkl", ruleset)
    assert out == b"say [REDACTED:env:DEPLOY_PHRASE] to [REDACTED:env:VAULT_TOKEN]"


def test_longest_secret_wins_when_one_contains_another() -> None:
    ruleset = rules(A_TOKEN="abcdefgh", B_TOKEN="abcdefgh12345678")
    assert redacted(b"=abcdefgh12345678=abcdefgh=", ruleset) == (
        b"=[REDACTED:env:B_TOKEN]=[REDACTED:env:A_TOKEN]="
    )


JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJyZXBvOm9yZy9yZXBvOnJlZjpyZWZzL2hlYWRzL21haW4ifQ."
    "c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmU"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMIIEowIBAAKCAQEAx+/abc=\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED:aws-access-key-id]."),
        ("sts ASIAY34FZKBOKMUTVV7A,", "sts [REDACTED:aws-access-key-id],"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
            "aws_secret_access_key = [REDACTED:aws-secret-access-key]\n",
        ),
        (
            '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
            '{"SecretAccessKey": "[REDACTED:aws-credential-json]"}',
        ),
        ("t=ghp_" + "a1B2" * 9 + " ", "t=[REDACTED:github-token] "),
        ("github_pat_11ABCDEFG0123456789_abcdefghijXYZ ok", "[REDACTED:github-token] ok"),
        ("glpat-abcdefghij0123456789 ok", "[REDACTED:gitlab-token] ok"),
        ("hook xoxb-1234567890-abcdefABCDEF ok", "hook [REDACTED:slack-token] ok"),
        (f"token: {JWT} ok", "token: [REDACTED:jwt] ok"),
        (f"key={PEM}\nnext line", "key=[REDACTED:private-key]\nnext line"),
        (json.dumps({"k": PEM}), '{"k": "[REDACTED:private-key]"}'),
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + "Ab1+" * 22 + "==;x",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=[REDACTED:azure-account-key];x",
        ),
        (
            "Authorization: Bearer opaque.token-value_123\r\n",
            "Authorization: Bearer [REDACTED:authorization-header]\r\n",
        ),
        (
            "map[Authorization:[Basic dXNlcjpwYXNzd29yZA==]]",
            "map[Authorization:[Basic [REDACTED:authorization-header]]]",
        ),
    ],
)
def test_builtin_shapes(text: str, expected: str) -> None:
    assert redact_text(text, rules())[0] == expected


def test_pem_without_end_is_redacted_past_the_cap() -> None:
    """A key body longer than the cap goes whole: the match is continued, not cut."""
    body = b"MIIEowIBAAKCAQEA\n" * 2000  # 34 KB of key-like text and no END line
    out = redacted(b"-----BEGIN PRIVATE KEY-----\n" + body + b"!tail", rules())
    assert out == b"[REDACTED:private-key]!tail"


def test_plain_terraform_output_is_untouched() -> None:
    ruleset = rules(TF_VAR_db_password="hunter2hunter2")
    text = TRACE_LINE * 50 + b"Plan: 1 to add, 0 to change, 0 to destroy.\n"
    out, counts = redact_bytes(text, ruleset)
    assert out == text
    assert not counts


def test_non_utf8_and_nul_bytes_pass_through_exactly() -> None:
    noise = bytes(range(256)) * 40 + b"\xff\xfe\x00\xc3(\xed\xa0\x80"
    ruleset = rules(GITHUB_TOKEN="s3cr3t-value-123")
    out = redacted(noise + b"s3cr3t-value-123" + noise, ruleset)
    assert out == noise + b"[REDACTED:env:GITHUB_TOKEN]" + noise


def test_custom_patterns_with_and_without_secret_group() -> None:
    ruleset = build_rules(
        {}, extra_patterns=[r"password=(?P<secret>[^ \n]+)", r"corp-[0-9]{6}", r"(?i)session:\S+"]
    )
    out, counts = redact_bytes(b"password=hunter2 id corp-123456 SESSION:abc def", ruleset)
    assert out == b"password=[REDACTED:custom:1] id [REDACTED:custom:2] [REDACTED:custom:3] def"
    assert counts == {"custom:1": 1, "custom:2": 1, "custom:3": 1}


def test_unbounded_custom_match_is_cut_at_the_cap() -> None:
    ruleset = build_rules({}, extra_patterns=[r"blob:[a-z]+"])
    long_run = b"blob:" + b"a" * (CUSTOM_MAX_MATCH * 2)
    out = redacted(long_run, ruleset)
    assert out == b"[REDACTED:custom:1]" + b"a" * (CUSTOM_MAX_MATCH + 5)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("foo(", "does not compile"), ("(?<=x)y", "does not compile"), ("a*", "empty string")],
)
def test_bad_custom_pattern_is_a_config_error_naming_it(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_rules({}, extra_patterns=["ok-[0-9]+", pattern])
    message = caught.value.diagnostics()
    assert repr(pattern) in message and reason in message
    assert caught.value.exit_code == 20


def test_marker_never_contains_the_value() -> None:
    ruleset = rules(GITHUB_TOKEN="marker-test-secret")
    out = redacted(b"x marker-test-secret y", ruleset)
    assert b"marker-test-secret" not in out
    assert marker("env:GITHUB_TOKEN") in out


def test_redact_text_keeps_unicode_and_counts() -> None:
    ruleset = rules(VAULT_TOKEN="s.Ünïcødé-tøkén")
    out, counts = redact_text("argv: -var=pw=s.Ünïcødé-tøkén — ✓", ruleset)
    assert out == "argv: -var=pw=[REDACTED:env:VAULT_TOKEN] — ✓"
    assert counts == {"env:VAULT_TOKEN": 1}


def test_secret_split_across_every_boundary() -> None:
    ruleset = rules(GITHUB_TOKEN="split-me-secret-1234")
    data = TRACE_LINE + b"token=split-me-secret-1234;" + TRACE_LINE
    expected, counts = redact_bytes(data, ruleset)
    for cut in range(len(data) + 1):
        redactor = StreamRedactor(ruleset, scan_block=1)
        out = redactor.feed(data[:cut]) + redactor.feed(data[cut:]) + redactor.flush()
        assert out == expected
        assert redactor.counts == counts


def test_stream_emits_before_the_end() -> None:
    """Output is released while streaming, not only at flush (the spool grows live)."""
    ruleset = rules()
    redactor = StreamRedactor(ruleset)
    released = sum(len(redactor.feed(TRACE_LINE * 100)) for _ in range(200))
    assert released > 0
    assert released + len(redactor.flush()) == len(TRACE_LINE) * 100 * 200


def _one_long_line(total: int, piece: int) -> Iterator[bytes]:
    chunk = (b"abcdefghijklmnopqrstuvwxyz0123456789\x00\xff" * (piece // 38 + 1))[:piece]
    for _ in range(total // piece):
        yield chunk


def test_single_100mb_line_streams_with_bounded_carry() -> None:
    """A 100 MB line without newline never makes the redactor hold more than its bound."""
    secret = "needle-secret-value"
    ruleset = rules(GITHUB_TOKEN=secret)
    redactor = StreamRedactor(ruleset)
    piece = 1 << 20
    bound = max(4 * ruleset.max_match, 256 * 1024) + ruleset.max_match + 2 * piece
    written = peak = 0
    for index, chunk in enumerate(_one_long_line(100 * piece, piece)):
        if index == 50:  # a secret straddling two chunks, in the middle of the line
            chunk = chunk[:-5] + secret.encode()[:5]
        if index == 51:
            chunk = secret.encode()[5:] + chunk[len(secret) - 5 :]
        written += len(redactor.feed(chunk))
        peak = max(peak, redactor.buffered_bytes)
    written += len(redactor.flush())
    assert peak <= bound
    assert redactor.counts == {"env:GITHUB_TOKEN": 1}
    assert written == 100 * piece - len(secret) + len(marker("env:GITHUB_TOKEN"))


def test_declared_max_len_of_builtin_rules() -> None:
    """Fixed shapes declare their exact maximum width; open-ended ones are cut at the cap."""
    parser = pytest.importorskip("re._parser")
    for rule in rules().rules:
        low, high = parser.parse(rule.source.decode("latin-1")).getwidth()
        assert low > 0, rule.name
        if rule.max_len == LONG_MATCH_CAP:
            assert high > LONG_MATCH_CAP, rule.name
        else:
            assert high == rule.max_len, rule.name


def test_rules_are_shared_safely_between_redactors() -> None:
    ruleset = rules(GITHUB_TOKEN="shared-secret-xyz")
    first, second = StreamRedactor(ruleset, scan_block=1), StreamRedactor(ruleset, scan_block=1)
    out1 = (
        first.feed(b"a shared-sec") + second.feed(b"b shared-secret-xyz") + first.feed(b"ret-xyz")
    )
    out1 += first.flush()
    out2 = second.flush()
    assert first.counts == second.counts == {"env:GITHUB_TOKEN": 1}
    assert b"shared-secret-xyz" not in out1 + out2


def test_environment_of_this_process_builds() -> None:
    """The real environment (whatever it holds) must build a usable rule set."""
    ruleset = build_rules(os.environ)
    assert re.search(rb"\[REDACTED:", redacted(b"AKIAIOSFODNN7EXAMPLE", ruleset))


@pytest.mark.parametrize("chunk_size", [3, 7, 64, 1000, 4097, 16385, 65536])
def test_fixed_chunk_sizes_with_long_matches_and_context(chunk_size: int) -> None:
    """Long matches (PEM without END, JWT, long tokens), \\b context and an unbounded custom
    pattern, streamed in fixed-size chunks (3-byte chunks move the scan start onto every third
    byte, including the "c" of "xcorp", whose \\b needs the byte before it)."""
    ruleset = build_rules(
        {"GITHUB_TOKEN": "split-me-secret-1234"},
        extra_patterns=[r"\bcorp-[0-9]{4,8}\b", r"blob:[a-z]+"],
    )
    data = b"".join(
        [
            b"xcorp-1234 corp-5678 ",  # only the second is a whole word
            b"-----BEGIN PRIVATE KEY-----\n" + b"MIIEowIBAAKCAQEA\n" * 1100,  # no END line
            b"!\n" + TRACE_LINE,
            b"eyJhbGciOiJIUzI1NiJ9.eyJ" + b"x" * 5500 + b".sig ",
            b"ghp_" + b"a" * 300 + b" blob:" + b"q" * 6000 + b" split-me-secret-1234 ",
            TRACE_LINE * 3,
        ]
    )
    expected, counts = redact_bytes(data, ruleset)
    assert counts == {
        "custom:1": 1,
        "private-key": 1,  # cut at LONG_MATCH_CAP
        "jwt": 1,
        "github-token": 1,  # cut at 255 characters
        "custom:2": 1,  # cut at CUSTOM_MAX_MATCH
        "env:GITHUB_TOKEN": 1,
    }
    redactor = StreamRedactor(ruleset, scan_block=1)
    out = b"".join(
        redactor.feed(data[at : at + chunk_size]) for at in range(0, len(data), chunk_size)
    )
    assert out + redactor.flush() == expected
    assert redactor.counts == counts


# --- issue 13: PEM through any prefix (item 6) ------------------------------------------------

KEY_LINES = [
    f"MIIEow{index:02d}" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+/abcdefghijklmnopqrst"
    for index in range(30)
]


@pytest.mark.parametrize(
    "prefix",
    [
        "│ ",  # terraform's diagnostic box, no colour
        "\x1b[31m│\x1b[0m ",  # the same box in colour, as terraform prints it by default
        "# ",  # a commented key in a config snippet
        "      ",  # indentation (a heredoc in a plan diff)
        '"',  # one quoted string per line
        "  | ",  # the body prefix of a provider trace log
    ],
    ids=["box", "colour-box", "comment", "indent", "quoted", "trace-body"],
)
def test_pem_key_body_through_a_line_prefix(prefix: str) -> None:
    lines = ["-----BEGIN RSA PRIVATE KEY-----", *KEY_LINES, "-----END RSA PRIVATE KEY-----"]
    text = "\n".join(prefix + line for line in lines) + "\nafter.\n"
    out = redacted(text.encode(), rules()).decode()
    assert not any(line in out for line in KEY_LINES), out
    assert out.endswith("-----END RSA PRIVATE KEY-----\nafter.\n") or out.endswith("\nafter.\n")


def test_pem_through_json_newline_escapes_and_at_any_length() -> None:
    """A 40 KiB PGP block (2.5x the match cap) behind \\n escapes, with armor headers."""
    body = "\\n".join(KEY_LINES * 22)
    block = (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\\nComment: https://gnupg.org\\n"
        "Version: GnuPG v2 (GNU/Linux)\\n\\n" + body + "\\n-----END PGP PRIVATE KEY BLOCK-----"
    )
    assert len(block) > 2.5 * LONG_MATCH_CAP
    text = json.dumps({"armored": "X"}).replace("X", block) + "\nnext line\n"
    out, counts = redact_bytes(text.encode(), rules())
    assert out == b'{"armored": "[REDACTED:private-key]"}\nnext line\n'
    assert counts == {"private-key": 1}


def test_long_pem_continues_across_any_chunking() -> None:
    """The continuation is decided at fixed positions: chunk sizes do not change the output."""
    text = ("noise " + "-----BEGIN PRIVATE KEY-----\n" + "\n".join(KEY_LINES * 40)).encode()
    text += b"\n-----END PRIVATE KEY-----\ntail AKIAIOSFODNN7EXAMPLE\n"
    ruleset = rules()
    whole = redact_bytes(text, ruleset)
    assert whole[0] == b"noise [REDACTED:private-key]\ntail [REDACTED:aws-access-key-id]\n"
    for size in (1000, 4096, 16385, 70000):
        redactor = StreamRedactor(ruleset, scan_block=1)
        out = b"".join(redactor.feed(text[at : at + size]) for at in range(0, len(text), size))
        assert (out + redactor.flush(), redactor.counts) == whole


# --- issue 13: encodings of registered secrets (item 7) ---------------------------------------

ENCODED_SECRET = "Xq7!rT&<pw>9-Lm/2"


def _encodings(secret: str) -> dict[str, bytes]:
    raw = secret.encode()
    wrapped64 = base64.b64encode(b"#!/bin/sh\nexport PW='" + raw + b"'\n" + b"x" * 40)
    return {
        "raw": raw,
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "utf-16le": secret.encode("utf-16-le"),
        "utf-16be": secret.encode("utf-16-be"),
        "base64": base64.b64encode(raw),
        "base64url": base64.urlsafe_b64encode(raw),
        "base64-offset-1": base64.b64encode(b"a" + raw + b"tail"),
        "base64-offset-2": base64.urlsafe_b64encode(b"ab" + raw + b"tail"),
        "base64-of-base64": base64.b64encode(base64.b64encode(raw)),
        "base64-wrapped-76": b"\n".join(
            wrapped64[i : i + 76] for i in range(0, len(wrapped64), 76)
        ),
        "base64-wrapped-64": b"\r\n".join(
            wrapped64[i : i + 64] for i in range(0, len(wrapped64), 64)
        ),
        "url-encoded": quote(secret, safe="").encode(),
        "json": json.dumps(secret)[1:-1].encode(),
        "go-json": json.dumps(secret)[1:-1]
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .encode(),
        "ansi-inside": b"\x1b[1m"
        + raw[:5]
        + b"\x1b[0m\x1b[32m"
        + raw[5:11]
        + b"\x1b[0m"
        + raw[11:],
    }


@pytest.mark.parametrize("encoding", sorted(_encodings(ENCODED_SECRET)))
def test_registered_secret_in_every_encoding(encoding: str) -> None:
    blob = _encodings(ENCODED_SECRET)[encoding]
    ruleset = rules(DB_PASSWORD=ENCODED_SECRET)
    out, counts = redact_bytes(b"value: " + blob + b" end", ruleset)
    assert counts["env:DB_PASSWORD"] >= 1, out
    if encoding.startswith("base64-wrapped"):
        # The secret's own characters are gone from the wrapped text, line break and all.
        fragments = {form.data for form in secret_forms(ENCODED_SECRET)}
        joined = out.replace(b"\r", b"").replace(b"\n", b"")
        assert not any(f in joined for f in fragments if len(f) > 12), out
    else:
        assert blob not in out and ENCODED_SECRET.encode() not in out


# --- issue 13: short and padded registered secrets (item 8) ----------------------------------


def test_short_secret_is_redacted_as_a_whole_word_with_a_warning() -> None:
    ruleset = build_rules({"DB_PASSWORD": "pw7x!"})
    assert any("DB_PASSWORD" in warning and "whole word" in warning for warning in ruleset.warnings)
    out = redacted(b'password = "pw7x!" but pw7x!y and xpw7x! stay', ruleset)
    assert out == b'password = "[REDACTED:env:DB_PASSWORD]" but pw7x!y and xpw7x! stay'
    assert "pw7x!" not in " ".join(ruleset.warnings)  # warnings name, never show, the value


def test_too_short_secret_is_named_in_a_warning_never_dropped_silently() -> None:
    ruleset = build_rules({"API_TOKEN": "ab"})
    (warning,) = ruleset.warnings
    assert "API_TOKEN" in warning and "NOT redacted" in warning


def test_env_value_with_trailing_newline_is_matched_trimmed() -> None:
    ruleset = build_rules(
        {"GITHUB_TOKEN": "padded-secret-value-1\n", "VAULT_TOKEN": "  spaced-tok-2 \t"}
    )
    out = redacted(b"a padded-secret-value-1 b spaced-tok-2 c", ruleset)
    assert out == b"a [REDACTED:env:GITHUB_TOKEN] b [REDACTED:env:VAULT_TOKEN] c"


# --- issue 13: auto-registered environment variables (item 10) -------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "TF_VAR_anything",
        "DATABASE_URL",
        "SLACK_WEBHOOK_URL",
        "MYSQL_PWD",
        "PGPASSWORD",
        "CONSUL_HTTP_AUTH",
        "CONSUL_HTTP_TOKEN",
        "DD_API_KEY",
        "DD_APP_KEY",
        "GITHUB_PAT",
        "SENTRY_DSN",
        "ARM_CLIENT_SECRET",
        "GOOGLE_CREDENTIALS",
        "NPM_AUTH_TOKEN",
        "BASIC_AUTH",
        "TLS_PRIVATE",
        "AZURE_STORAGE_CONNECTION_STRING",
    ],
)
def test_auto_registered_env_names(name: str) -> None:
    assert is_secret_env_name(name)


@pytest.mark.parametrize("name", ["GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "SSH_AUTH_SOCK", "PWD"])
def test_names_that_only_look_secret(name: str) -> None:
    assert not is_secret_env_name(name)


def test_google_credentials_register_every_string_inside() -> None:
    key = {
        "type": "service_account",
        "project_id": "acme-prod-4411",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n"
        "-----END PRIVATE KEY-----\n",
        "client_email": "deployer@acme-prod-4411.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    ruleset = build_rules({"GOOGLE_CREDENTIALS": json.dumps(key)})
    text = b"id 0123456789abcdef0123456789abcdef01234567 as "
    text += b"deployer@acme-prod-4411.iam.gserviceaccount.com"
    out = redacted(text + b" via https://oauth2.googleapis.com/token", ruleset)
    assert out == (
        b"id [REDACTED:env:GOOGLE_CREDENTIALS] as [REDACTED:env:GOOGLE_CREDENTIALS]"
        b" via https://oauth2.googleapis.com/token"
    )


def test_tf_var_numbers_and_booleans_are_not_registered_unless_named_secret() -> None:
    ruleset = build_rules(
        {"TF_VAR_instance_count": "3", "TF_VAR_enabled": "true", "TF_VAR_db_pin": "4821"}
    )
    out = redacted(b"count 3 enabled true pin 4821", ruleset)
    assert out == b"count 3 enabled true pin [REDACTED:env:TF_VAR_db_pin]"
    assert ruleset.warnings  # the 4-digit PIN is word-matched, and says so
