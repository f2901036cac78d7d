"""Every built-in token shape against a realistic sample, in the context it shows up in.

Samples follow the vendors' published formats (prefix, alphabet, length); the secret parts are
made up from a fixed seed. Each case names the shape expected to fire and the text that must
not survive; labels around a ``secret`` group stay readable. The shape list and this table
are checked against each other, so a new shape cannot ship without a sample.
"""

from __future__ import annotations

import random
import string

import pytest

from tfaudit_ci.redact import build_rules, redact_bytes
from tfaudit_ci.redact_shapes import BUILTIN_SHAPES

_RANDOM = random.Random(13)
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"


def rnd(alphabet: str, length: int) -> str:
    return "".join(_RANDOM.choice(alphabet) for _ in range(length))


AWS_SECRET = rnd(B64, 40)
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE" + rnd(B64, 300) + "=="
SIGNATURE = rnd(HEX, 64)
PEM_BODY = "\n".join(rnd(B64, 64) for _ in range(12))
ACCOUNT_KEY = rnd(B64, 86) + "=="
API_KEY = rnd(HEX, 40)
DOCKER_AUTH = rnd(B64, 40) + "="
BASIC = rnd(B64, 28) + "=="
TELEGRAM = "AA" + rnd(URLSAFE, 33)
TFC_SECRET = rnd(URLSAFE, 67)

# (shape, text as printed, the secret that must go, a label that must stay or "")
CASES: list[tuple[str, str, str, str]] = [
    (
        "private-key",
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\n",
        PEM_BODY.splitlines()[5],
        "",
    ),
    (
        "aws-access-key-id",
        "Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-east-1",
        "AKIAIOSFODNN7EXAMPLE",
        "Credential=",
    ),
    (
        "aws-credential-xml",
        f"<Credentials><AccessKeyId>ASIA{rnd(string.ascii_uppercase, 16)}</AccessKeyId>"
        f"<SessionToken>{SESSION_TOKEN}</SessionToken></Credentials>",
        SESSION_TOKEN,
        "<SessionToken>",
    ),
    (
        "aws-credential-xml",
        f"<SecretAccessKey>{AWS_SECRET}</SecretAccessKey>",
        AWS_SECRET,
        "<SecretAccessKey>",
    ),
    (
        "aws-credential-json",
        f'{{"Credentials": {{"SessionToken": "{SESSION_TOKEN}", "Expiration": 1}}}}',
        SESSION_TOKEN,
        '"SessionToken": "',
    ),
    (
        "aws-secret-access-key",
        f"aws_secret_access_key = {AWS_SECRET}\n",
        AWS_SECRET,
        "aws_secret_access_key = ",
    ),
    (
        "aws-session-token",
        f"X-Amz-Security-Token: {SESSION_TOKEN}\r\n",
        SESSION_TOKEN,
        "X-Amz-Security-Token: ",
    ),
    (
        "aws-session-token",
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Security-Token={SESSION_TOKEN.replace('/', '%2F')}&X-Amz-Date=20240501T000000Z",
        SESSION_TOKEN.replace("/", "%2F"),
        "X-Amz-Date=",
    ),
    (
        "aws-sigv4-signature",
        "Authorization: AWS4-HMAC-SHA256 Credential=testing/20240501/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={SIGNATURE}",
        SIGNATURE,
        "Signature=",
    ),
    (
        "aws-sigv4-signature",
        f"https://b.s3.amazonaws.com/k?X-Amz-Expires=900&X-Amz-Signature={SIGNATURE}",
        SIGNATURE,
        "X-Amz-Signature=",
    ),
    (
        "aws-ssm-secure-string",
        '  | {"Parameter": {"Name": "/app/db", "Type": "SecureString", '
        '"Value": "ssm-Decrypted-9f3a", "Version": 1}}',
        "ssm-Decrypted-9f3a",
        '"Version": 1',
    ),
    (
        "aws-ssm-secure-string",
        'http.response.body="{\\"Parameter\\":{\\"ARN\\":\\"arn:aws:ssm:::p\\",\\"Type\\":'
        '\\"SecureString\\",\\"Value\\":\\"ssm-Escaped-77b1\\",\\"Version\\":3}}"',
        "ssm-Escaped-77b1",
        "Version",
    ),
    (
        "aws-secrets-manager-value",
        '{"ARN": "arn:aws:secretsmanager:::secret:app", '
        '"SecretString": "{\\"username\\":\\"admin\\",\\"password\\":\\"sm-Pa55-4e1\\"}"}',
        "sm-Pa55-4e1",
        '"SecretString": "',
    ),
    ("github-token", "token ghp_" + rnd(ALNUM, 36), "ghp_", ""),
    ("gitlab-token", "glpat-" + rnd(URLSAFE, 20), "glpat-", ""),
    ("bitbucket-token", "ATBB" + rnd(ALNUM, 32), "ATBB", ""),
    ("atlassian-token", "ATATT3xFfGF0" + rnd(URLSAFE, 180) + "=ABCD1234", "ATATT3", ""),
    ("slack-token", "xoxb-1234567890-" + rnd(ALNUM, 24), "xoxb-", ""),
    (
        "slack-webhook",
        "https://hooks.slack.com/services/T00000000/B00000000/" + rnd(ALNUM, 24),
        "T00000000/B00000000",
        "https://hooks.slack.com/services/",
    ),
    ("npm-token", "//registry.npmjs.org/:_authToken=npm_" + rnd(ALNUM, 36), "npm_", ""),
    ("pypi-token", "password = pypi-AgEIcHlwaS5vcmc" + rnd(URLSAFE, 120), "pypi-AgE", ""),
    ("rubygems-token", "rubygems_" + rnd(HEX, 48), "rubygems_", ""),
    (
        "telegram-bot-token",
        f"https://api.telegram.org/bot123456789:{TELEGRAM}/getMe",
        TELEGRAM[2:],
        "/getMe",
    ),
    ("google-api-key", "key=AIza" + rnd(URLSAFE, 35), "AIza", "key="),
    ("google-oauth-token", "Bearer-less ya29.a0AfH6SM" + rnd(URLSAFE, 150), "ya29.", ""),
    ("google-oauth-token", '"refresh_token_x": "1//0g' + rnd(URLSAFE, 98) + '"', "1//0g", ""),
    ("google-oauth-client-secret", "client_secret=GOCSPX-" + rnd(URLSAFE, 28), "GOCSPX-", ""),
    (
        "azure-ad-client-secret",
        "ARM_CLIENT_SECRET value abc8Q~" + rnd(ALNUM + "_~.-", 34),
        "8Q~",
        "",
    ),
    (
        "azure-account-key",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};",
        ACCOUNT_KEY,
        "AccountName=acct",
    ),
    (
        "azure-sas-signature",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&se=2024-06-01T00:00:00Z"
        "&sig=" + rnd(ALNUM, 40) + "%2B" + rnd(ALNUM, 2) + "%3D",
        "%2B",
        "&sp=r",
    ),
    ("digitalocean-token", "DIGITALOCEAN_ACCESS dop_v1_" + rnd(HEX, 64), "dop_v1_", ""),
    ("stripe-key", "stripe sk_live_" + rnd(ALNUM, 99), "sk_live_", ""),
    ("stripe-key", "webhook whsec_" + rnd(ALNUM, 32), "whsec_", ""),
    ("sendgrid-key", "SG." + rnd(URLSAFE, 22) + "." + rnd(URLSAFE, 43), "SG.", ""),
    ("twilio-api-key", "sid SK" + rnd(HEX, 32) + " ok", "SK", " ok"),
    ("mailgun-key", "api:key-" + rnd(HEX, 32), "key-", "api:"),
    ("square-token", "sq0csp-" + rnd(URLSAFE, 43), "sq0csp-", ""),
    ("shopify-token", "X-Shopify-Access shpat_" + rnd(HEX, 32), "shpat_", ""),
    ("openai-key", "OPENAI sk-proj-" + rnd(URLSAFE, 156), "sk-proj-", ""),
    ("openai-key", "sk-" + rnd(ALNUM, 20) + "T3BlbkFJ" + rnd(ALNUM, 20), "T3BlbkFJ", ""),
    ("anthropic-key", "x-api sk-ant-api03-" + rnd(URLSAFE, 93) + "AA", "sk-ant-api03-", ""),
    ("huggingface-token", "HF hf_" + rnd(string.ascii_letters, 34) + " end", "hf_", " end"),
    ("databricks-token", "dapi" + rnd(HEX, 32), "dapi", ""),
    ("doppler-token", "dp.pt." + rnd(ALNUM, 43), "dp.pt.", ""),
    ("postman-key", "PMAK-" + rnd(HEX, 24) + "-" + rnd(HEX, 34), "PMAK-", ""),
    ("grafana-token", "glsa_" + rnd(ALNUM, 32) + "_" + rnd(HEX, 8), "glsa_", ""),
    ("grafana-token", "glc_" + rnd(B64, 120) + "==", "glc_", ""),
    ("newrelic-key", "NRAK-" + rnd(string.ascii_uppercase + string.digits, 27), "NRAK-", ""),
    ("sentry-token", "sntrys_" + rnd(B64, 120), "sntrys_", ""),
    ("linear-key", "lin_api_" + rnd(ALNUM, 40), "lin_api_", ""),
    ("pulumi-token", "PULUMI_ACCESS pul-" + rnd(HEX, 40), "pul-", ""),
    ("heroku-key", "HRKU-" + rnd(URLSAFE, 60), "HRKU-", ""),
    ("vault-token", "X-Vault-Token-less hvs." + rnd(URLSAFE, 90), "hvs.", ""),
    ("vault-token", "token s." + rnd(ALNUM, 24) + " end", "s.", " end"),
    (
        "terraform-cloud-token",
        f'credentials "app.terraform.io" {{ token = "{rnd(ALNUM, 14)}.atlasv1.{TFC_SECRET}" }}',
        TFC_SECRET,
        'credentials "app.terraform.io"',
    ),
    (
        "age-secret-key",
        "AGE-SECRET-KEY-1" + rnd("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58),
        "AGE-SECRET-KEY-1",
        "",
    ),
    (
        "jwt",
        "id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvIn0." + rnd(URLSAFE, 43),
        "eyJhbGci",
        "id_token ",
    ),
    (
        "url-password",
        "DATABASE postgres://admin:Sup3r-S3cret.pw@db.internal:5432/app",
        "Sup3r-S3cret.pw",
        "postgres://admin:",
    ),
    (
        "url-password",
        "GET https://deploy:hunter2hunter2@git.example.com/r.git",
        "hunter2hunter2",
        "deploy:",
    ),
    (
        "authorization-header",
        f"Authorization: Basic {BASIC}\r\n",
        BASIC,
        "Authorization: Basic ",
    ),
    (
        "secret-header",
        "Cookie: session=" + rnd(ALNUM, 32) + "; csrftoken=" + rnd(ALNUM, 32) + "\r\n",
        "csrftoken=",
        "Cookie: ",
    ),
    (
        "secret-header",
        f'http.request.header.x_api_key="{API_KEY}" http.method=GET',
        API_KEY,
        "http.method=GET",
    ),
    (
        "json-secret",
        '{"username": "admin", "password": "Pa$$w0rd-in-json"}',
        "Pa$$w0rd-in-json",
        '"username": "admin"',
    ),
    (
        "json-secret",
        'body="{\\"client_secret\\":\\"cs-Escaped-91ac\\",\\"grant_type\\":\\"x\\"}"',
        "cs-Escaped-91ac",
        "grant_type",
    ),
    (
        "kubeconfig-key-data",
        "    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQo" + rnd(B64, 200),
        "LS0tLS1CRUdJTi",
        "client-key-data: ",
    ),
    (
        "docker-auth",
        f'{{"auths": {{"ghcr.io": {{"auth": "{DOCKER_AUTH}"}}}}}}',
        DOCKER_AUTH,
        '"ghcr.io"',
    ),
]


@pytest.mark.parametrize(
    ("shape", "text", "must_go", "kept"),
    CASES,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(CASES)],
)
def test_shape_redacts_a_realistic_sample(shape: str, text: str, must_go: str, kept: str) -> None:
    out, counts = redact_bytes(text.encode(), build_rules({}))
    assert counts.get(shape), (shape, out, counts)
    assert must_go.encode() not in out, out
    if kept:
        assert kept.encode() in out, out


def test_every_shape_has_a_sample() -> None:
    assert {name for name, _, _ in BUILTIN_SHAPES} == {case[0] for case in CASES}


@pytest.mark.parametrize(
    "text",
    [
        # terraform prints a sensitive value like this; the JSON shapes must leave it alone
        '{"password": "(sensitive value)", "token": "*****"}',
        'http.request.header.authorization="AWS4-HMAC-SHA256 Credential=ASIA************TP2J/'
        '20261203/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=*****"',
        '"Type": "String", "Value": "plain-parameter-value"',
        "Plan: 1 to add, 0 to change, 0 to destroy.",
        'resource "aws_s3_bucket" "b" { bucket = "corpus-bucket" }',
    ],
)
def test_ordinary_text_is_not_a_shape(text: str) -> None:
    out, counts = redact_bytes(text.encode(), build_rules({}))
    assert out == text.encode() and not counts
