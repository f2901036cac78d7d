"""The built-in token shapes: secrets recognised by their published format, registered or not.

Each shape is ``(name, RE2 source, max_len)``. ``max_len`` is the exact width of a bounded
shape (checked against Python's own width computation in the tests) or ``LONG_MATCH_CAP`` for
an open-ended one, whose matches the engine cuts there. A group named ``secret`` keeps the
label readable and replaces only the value. The order is the priority at equal start.

Patterns are written from the vendors' published formats; they use the syntax RE2 and
Python's ``re`` share (no look-around, no back-references) and are matched on bytes.
"""

from __future__ import annotations

# Open-ended matches (private keys, JWTs, header values) are cut here: 16 KiB holds an
# RSA-8192 PEM key; a longer PEM block is continued by the engine (see PEM_CONTINUATION).
LONG_MATCH_CAP = 16384

# --- pieces ----------------------------------------------------------------------------------

# PEM/PGP body characters through any line prefix: terraform's diagnostic box (│, U+2502 in
# UTF-8, red by default: ANSI colour codes), "| " body prefixes of trace logs, "#" comments,
# quotes, indentation and JSON-escaped newlines (\n); "." and parentheses for armor headers
# ("Comment: https://gnupg.org", "Version: GnuPG v2 (GNU/Linux)"). A dash is only taken before
# a letter or digit, so the body stops right at the "-----END" line.
_PEM_BODY = r"(?:[A-Za-z0-9+/=\\\r\n\t :,.()\"'#|]|\xe2\x94\x82|-[A-Za-z0-9]|\x1b\[[0-9;]{0,8}m)"
_PEM_LABEL = r"[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_PEM_END = rf"-----END{_PEM_LABEL}"
_PEM = rf"-----BEGIN{_PEM_LABEL}{_PEM_BODY}*(?:{_PEM_END})?"
# Matched right after a private-key match that was cut at the cap: the rest of the body.
PEM_CONTINUATION = rf"{_PEM_BODY}+(?:{_PEM_END})?"
PEM_RULE = "private-key"

_B64URL = "[A-Za-z0-9_-]"
_QUOTE = r"(?:\\?[\"'])?"  # an optional quote, possibly JSON-escaped (\")
_Q = r"\\?\""  # a JSON quote, possibly escaped inside a quoted log value
_ASSIGN = r"[ \t]{0,4}(?:=>|[:=])[ \t]{0,4}"
_COLON = r"[ \t]{0,4}:[ \t]{0,4}"


def _json_pairs(
    name: str, template: str, first: str = r"[^\"\\]"
) -> tuple[tuple[str, str, int], ...]:
    """A JSON ``"key": "value"`` shape twice: in plain JSON, where a value runs to its closing
    quote with its escapes; and in JSON quoted inside a log value (``\\"key\\":\\"v\\"``), where
    the closing quote is ``\\"``. ``template`` writes a quote as ``<q>`` and the value as
    ``<value>``; ``first`` is the class of the value's first (unescaped) character."""
    plain = rf"(?P<secret>(?:{first}|\\.)(?:[^\"\\]|\\.)*)"
    escaped = rf"(?P<secret>(?:{first}|\\[^\"])(?:[^\"\\]|\\[^\"])*)"
    return (
        (name, template.replace("<q>", '"').replace("<value>", plain), LONG_MATCH_CAP),
        (name, template.replace("<q>", r'\\"').replace("<value>", escaped), LONG_MATCH_CAP),
    )


# Tokens with a vendor's published prefix and format, one per line: name, max_len ("open": an
# open-ended body, cut at LONG_MATCH_CAP), the RE2 pattern (the rest of the line). Some patterns
# leave a public part readable: the bot id of a Telegram token, the id before ".atlasv1.", the
# three characters before an Entra secret's digit (a leading sliding window would cost the DFA
# its speed), the Slack webhook's host.
_VENDOR_TOKENS = r"""
github-token               262  gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,251}
gitlab-token               256  (?:glpat|gldt|glrt|glptt|glcbt)-[A-Za-z0-9_-]{20,250}
gitlab-token               258  (?:glft|glimt|glsoat|gloas|glagent)-[A-Za-z0-9_-]{20,250}
bitbucket-token            104  ATBB[A-Za-z0-9_=.-]{32,100}
atlassian-token            open ATATT3[A-Za-z0-9_=-]{100}[A-Za-z0-9_=-]*
slack-token                257  xox[baprse]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250}
slack-webhook              154  https://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_-]{20,120})
npm-token                  40   npm_[A-Za-z0-9]{36}
pypi-token                 open pypi-AgE[A-Za-z0-9_-]{60}[A-Za-z0-9_-]*
rubygems-token             57   rubygems_[0-9a-f]{48}
telegram-bot-token         37   [0-9]:AA(?P<secret>[0-9A-Za-z_-]{33})
google-api-key             39   AIza[0-9A-Za-z_-]{35}
google-oauth-token         open ya29\.[0-9A-Za-z_-]{20}[0-9A-Za-z_.-]*
google-oauth-token         open 1//0[0-9A-Za-z_-]{60}[0-9A-Za-z_-]*
google-oauth-client-secret 35   GOCSPX-[0-9A-Za-z_-]{28}
azure-ad-client-secret     37   [0-9]Q~[A-Za-z0-9_~.-]{31,34}
azure-account-key          213  AccountKey=(?P<secret>[A-Za-z0-9+/]{20,200}={0,2})
azure-account-key          218  SharedAccessKey=(?P<secret>[A-Za-z0-9+/]{20,200}={0,2})
azure-sas-signature        125  [?&](?i:sig)=(?P<secret>[A-Za-z0-9%+/=]{16,120})
digitalocean-token         71   do[por]_v1_[a-f0-9]{64}
stripe-key                 255  (?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}
stripe-key                 70   whsec_[A-Za-z0-9+/=]{32,64}
sendgrid-key               69   SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}
twilio-api-key             34   \bSK[0-9a-fA-F]{32}\b
mailgun-key                36   \bkey-[0-9a-f]{32}\b
square-token               50   sq0(?:csp|atp)-[0-9A-Za-z_-]{22,43}
shopify-token              38   shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}
openai-key                 open sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20}[A-Za-z0-9_-]*
openai-key                 51   sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}
anthropic-key              open sk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_-]{20}[A-Za-z0-9_-]*
huggingface-token          37   \bhf_[A-Za-z]{34}\b
databricks-token           38   dapi[0-9a-f]{32}(?:-[0-9])?
doppler-token              53   dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}
postman-key                64   PMAK-[0-9a-f]{24}-[0-9a-f]{34}
grafana-token              46   glsa_[A-Za-z0-9]{32}_[0-9a-f]{8}
grafana-token              open glc_[A-Za-z0-9+/]{32}[A-Za-z0-9+/]*={0,2}
newrelic-key               32   NRAK-[A-Z0-9]{27}
sentry-token               open sntry[su]_[A-Za-z0-9+/=_-]{40}[A-Za-z0-9+/=_-]*
linear-key                 48   lin_api_[A-Za-z0-9]{40}
pulumi-token               44   pul-[0-9a-f]{40}
heroku-key                 65   HRKU-[A-Za-z0-9_-]{58,60}
vault-token                open hv[sbr]\.[A-Za-z0-9_-]{24}[A-Za-z0-9_-]*|\bs\.[A-Za-z0-9]{24}\b
terraform-cloud-token      79   \.atlasv1\.(?P<secret>[A-Za-z0-9_=-]{60,70})
age-secret-key             74   AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}
"""


def _table(text: str) -> tuple[tuple[str, str, int], ...]:
    rows = []
    for line in text.strip().splitlines():
        name, reach, source = line.split(None, 2)
        rows.append((name, source, LONG_MATCH_CAP if reach == "open" else int(reach)))
    return tuple(rows)


# (name, source, max_len). Order is priority at equal start positions.
BUILTIN_SHAPES: tuple[tuple[str, str, int], ...] = (
    (PEM_RULE, _PEM, LONG_MATCH_CAP),
    # --- AWS --------------------------------------------------------------------------------
    # Access key ids only (AKIA long-term, ASIA temporary, ABIA, ACCA): AROA, AIDA, ANPA...
    # are the unique ids of roles, users and policies that plans print everywhere.
    ("aws-access-key-id", r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}", 20),
    (
        "aws-credential-xml",
        r"<(?:SecretAccessKey|SessionToken|SecurityToken)>(?P<secret>[^<\s]+)",
        LONG_MATCH_CAP,
    ),
    (
        "aws-credential-json",
        rf"{_Q}(?:SecretAccessKey|SessionToken|SecurityToken|secret_access_key|session_token"
        rf"|aws_secret_access_key|aws_session_token){_Q}{_COLON}{_Q}(?P<secret>[^\"\\\s]+)",
        LONG_MATCH_CAP,
    ),
    (
        "aws-secret-access-key",
        r"(?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret_?key|secret_?key)"
        rf"{_QUOTE}{_ASSIGN}{_QUOTE}(?P<secret>[A-Za-z0-9/+]{{40}})",
        75,
    ),
    (
        "aws-session-token",
        r"(?i:aws_?session_?token|aws_?security_?token|x[-_]amz[-_]security[-_]token)"
        rf"{_QUOTE}{_ASSIGN}{_QUOTE}(?P<secret>[A-Za-z0-9/+=%_-]{{16}}[A-Za-z0-9/+=%_-]*)",
        LONG_MATCH_CAP,
    ),
    # SigV4: the Authorization header's Signature= and a presigned URL's X-Amz-Signature=.
    ("aws-sigv4-signature", r"(?i:signature)=(?P<secret>[0-9a-f]{64})", 74),
    # SSM GetParameter(s) of a SecureString: the decrypted "Value", either key order.
    *_json_pairs(
        "aws-ssm-secure-string",
        rf"<q>Type<q>{_COLON}<q>SecureString<q>[^{{}}]{{0,400}}<q>Value<q>{_COLON}<q><value>",
    ),
    *_json_pairs(
        "aws-ssm-secure-string",
        rf"<q>Value<q>{_COLON}<q><value><q>[^{{}}]{{0,400}}<q>Type<q>{_COLON}<q>SecureString",
    ),
    *_json_pairs("aws-secrets-manager-value", rf"<q>Secret(?:String|Binary)<q>{_COLON}<q><value>"),
    *_table(_VENDOR_TOKENS),
    ("jwt", rf"eyJ{_B64URL}{{4,}}\.{_B64URL}{{4,}}\.{_B64URL}*", LONG_MATCH_CAP),
    # --- credentials in context ---------------------------------------------------------------
    # scheme://user:PASSWORD@host (postgres://, https:// basic auth, amqp://, redis://...).
    ("url-password", r"://[^/\s:@\"'<>]{1,128}:(?P<secret>[^@\s/\"'<>]{1,256})@", 389),
    (
        "authorization-header",
        r"(?i:authorization)[\"'\]]?[ \t]{0,4}[:=][ \t]{0,4}[\[\"']{0,2}"
        r"(?i:bearer|basic|token)[ \t]{1,4}(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
        LONG_MATCH_CAP,
    ),
    (
        "secret-header",
        r"(?i:\b(?:set-cookie|cookie|x[-_]api[-_]key|api[-_]key|x[-_]auth[-_]token"
        r"|x[-_]vault[-_]token|private[-_]token|x[-_]goog[-_]api[-_]key|x[-_]functions[-_]key"
        r"|ocp[-_]apim[-_]subscription[-_]key))[\"'\]]?[ \t]{0,4}[:=][ \t]{0,4}[\[\"']{0,2}"
        r"(?P<secret>[^\s\"'\]\[*][^\r\n\"'\]]*)",
        LONG_MATCH_CAP,
    ),
    # "password": "…" and the like; never terraform's own "(sensitive value)", a "*****" mask
    # or a "-----BEGIN" (the private-key shape takes a PEM value whole).
    *_json_pairs(
        "json-secret",
        r"<q>(?i:password|passwd|pwd|passphrase|secret|client_secret|clientsecret|api_key|apikey"
        rf"|access_token|refresh_token|auth_token|private_key|token)<q>{_COLON}<q><value>",
        first=r"[^\"\\(\s*-]",
    ),
    (
        "kubeconfig-key-data",
        r"(?i:client-key-data|client_key_data)\\?[\"']?[ \t]{0,4}:[ \t]{0,4}\\?[\"']?"
        r"(?P<secret>[A-Za-z0-9+/=]{16}[A-Za-z0-9+/=]*)",
        LONG_MATCH_CAP,
    ),
    (
        "docker-auth",
        rf"{_Q}(?:auth|identitytoken){_Q}{_COLON}{_Q}(?P<secret>[A-Za-z0-9+/=]{{8}}[A-Za-z0-9+/=]*)",
        LONG_MATCH_CAP,
    ),
)
