"""``tfaudit verify``: CloudTrail-grade verification of a stream (docs/verify.md).

``layout`` and ``checks`` are pure (listings, bytes and dicts in, problems out); ``reader``
does the store I/O with bounded concurrency; ``walk`` puts them together; ``report`` prints;
``model`` holds the value types and the closed vocabulary of problem codes.
"""
