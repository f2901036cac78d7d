"""Reading the trail back: ``tfaudit log``, ``show``, ``history`` and ``report``.

``model`` turns record JSON into typed rows (hostile content becomes a note, never a crash);
``reader`` finds the head by probing and reads only the slots a question needs, in parallel
(``presigned`` makes bulk S3 reads cheaper); ``query`` filters and scans; ``binding`` is the
reviewed-plan = applied-plan analysis and ``planscope`` finds the plans it needs; ``checks``
runs one record's own checks with the verifier's pure functions; ``render``, ``evidence`` and
``html`` turn the answers into tables, JSON, CSV and the HTML evidence pack. ``cache`` keeps
record bytes locally, used only when the live chain's hash links vouch for them: the chain
stays the only source of truth.
"""
