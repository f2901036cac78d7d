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
    # --- source forges, chat, package registries ---------------------------------------------
    ("github-token", r"gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,251}", 262),
    (
        "gitlab-token",
        r"(?:glpat|gldt|glrt|glptt|glcbt|glft|glimt|glsoat|gloas|glagent)-[A-Za-z0-9_-]{20,250}",
        258,
    ),
    ("bitbucket-token", r"ATBB[A-Za-z0-9_=.-]{32,100}", 104),
    ("atlassian-token", r"ATATT3[A-Za-z0-9_=-]{100}[A-Za-z0-9_=-]*", LONG_MATCH_CAP),
    ("slack-token", r"xox[baprse]-[A-Za-z0-9-]{10,250}|xapp-[0-9]-[A-Za-z0-9-]{10,250}", 257),
    (
        "slack-webhook",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_-]{20,120})",
        154,
    ),
    ("npm-token", r"npm_[A-Za-z0-9]{36}", 40),
    ("pypi-token", r"pypi-AgE[A-Za-z0-9_-]{60}[A-Za-z0-9_-]*", LONG_MATCH_CAP),
    ("rubygems-token", r"rubygems_[0-9a-f]{48}", 57),
    # The bot's numeric id stays readable: anchoring on it would make the DFA count digits.
    ("telegram-bot-token", r"[0-9]:AA(?P<secret>[0-9A-Za-z_-]{33})", 37),
    # --- cloud and SaaS APIs ------------------------------------------------------------------
    ("google-api-key", r"AIza[0-9A-Za-z_-]{35}", 39),
    (
        "google-oauth-token",
        r"ya29\.[0-9A-Za-z_-]{20}[0-9A-Za-z_.-]*|1//0[0-9A-Za-z_-]{60}[0-9A-Za-z_-]*",
        LONG_MATCH_CAP,
    ),
    ("google-oauth-client-secret", r"GOCSPX-[0-9A-Za-z_-]{28}", 35),
    # The three characters before the digit stay: a leading sliding window costs DFA speed.
    ("azure-ad-client-secret", r"[0-9]Q~[A-Za-z0-9_~.-]{31,34}", 37),
    (
        "azure-account-key",
        r"(?:AccountKey|SharedAccessKey)=(?P<secret>[A-Za-z0-9+/]{20,200}={0,2})",
        218,
    ),
    ("azure-sas-signature", r"[?&](?i:sig)=(?P<secret>[A-Za-z0-9%+/=]{16,120})", 125),
    ("digitalocean-token", r"do[por]_v1_[a-f0-9]{64}", 71),
    ("stripe-key", r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}|whsec_[A-Za-z0-9+/=]{32,64}", 255),
    ("sendgrid-key", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", 69),
    ("twilio-api-key", r"\bSK[0-9a-fA-F]{32}\b", 34),
    ("mailgun-key", r"\bkey-[0-9a-f]{32}\b", 36),
    ("square-token", r"sq0(?:csp|atp)-[0-9A-Za-z_-]{22,43}", 50),
    ("shopify-token", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", 38),
    ("openai-key", r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20}[A-Za-z0-9_-]*", LONG_MATCH_CAP),
    ("openai-key", r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}", 51),
    (
        "anthropic-key",
        r"sk-ant-(?:api|admin|oat|ort)[0-9]{2}-[A-Za-z0-9_-]{20}[A-Za-z0-9_-]*",
        LONG_MATCH_CAP,
    ),
    ("huggingface-token", r"\bhf_[A-Za-z]{34}\b", 37),
    ("databricks-token", r"dapi[0-9a-f]{32}(?:-[0-9])?", 38),
    ("doppler-token", r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}", 53),
    ("postman-key", r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}", 64),
    ("grafana-token", r"glsa_[A-Za-z0-9]{32}_[0-9a-f]{8}", 46),
    ("grafana-token", r"glc_[A-Za-z0-9+/]{32}[A-Za-z0-9+/]*={0,2}", LONG_MATCH_CAP),
    ("newrelic-key", r"NRAK-[A-Z0-9]{27}", 32),
    ("sentry-token", r"sntry[su]_[A-Za-z0-9+/=_-]{40}[A-Za-z0-9+/=_-]*", LONG_MATCH_CAP),
    ("linear-key", r"lin_api_[A-Za-z0-9]{40}", 48),
    ("pulumi-token", r"pul-[0-9a-f]{40}", 44),
    ("heroku-key", r"HRKU-[A-Za-z0-9_-]{58,60}", 65),
    # --- HashiCorp ---------------------------------------------------------------------------
    (
        "vault-token",
        r"hv[sbr]\.[A-Za-z0-9_-]{24}[A-Za-z0-9_-]*|\bs\.[A-Za-z0-9]{24}\b",
        LONG_MATCH_CAP,
    ),
    # <14-character token id>.atlasv1.<secret>: the id stays readable.
    ("terraform-cloud-token", r"\.atlasv1\.(?P<secret>[A-Za-z0-9_=-]{60,70})", 79),
    # --- keys ---------------------------------------------------------------------------------
    ("age-secret-key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", 74),
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
