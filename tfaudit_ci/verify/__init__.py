"""``tfaudit verify``: CloudTrail-grade verification of a stream (see DESIGN.md, "Verify").

``layout`` and ``checks`` are pure (listings, bytes and dicts in, problems out); ``reader``
does the store I/O with bounded concurrency; ``walk`` puts them together; ``report`` prints.
"""
