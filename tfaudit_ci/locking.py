"""The lock decision: one rule, used by ``run``, ``recover``, ``check`` and ``verify``.

From a store's capabilities and its preflight report it decides whether the trail is WORM as
the policy requires, whether writes carry their own lock, whether each object's lock can be
read back (and so is checked), and for how long objects are kept: the longer of the policy's
retention and the store's own default, so an explicit lock never shortens a bucket default.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from tfaudit_ci.errors import PreflightError
from tfaudit_ci.record import iso, utc_now
from tfaudit_ci.stores.base import Lock, Policy, PreflightReport, Store
from tfaudit_ci.vocab import LockMode, OnUnlocked


@dataclass(frozen=True)
class LockDecision:
    protected: bool  # every object is locked at least as the policy requires
    apply_lock: bool  # writes carry their own retention lock
    readback: bool  # each object's lock is read back after writing, and checked by verify
    retention_days: int  # effective retention: max(policy, the store's own default)
    lock_mode: LockMode
    reason: str | None = None  # why the trail is not protected, or locks are not read back

    def retain_until(self, now: dt.datetime | None = None) -> dt.datetime:
        """Whole seconds, rounded up, ``retention_days`` from ``now``."""
        moment = (now or utc_now()) + dt.timedelta(days=self.retention_days)
        return moment.replace(microsecond=0) + dt.timedelta(seconds=1)

    def lock(self, retain_until: dt.datetime) -> Lock | None:
        return Lock(self.lock_mode, retain_until) if self.apply_lock else None

    @property
    def policy(self) -> Policy:
        """The policy objects are written (and read back) against."""
        return Policy(retention_days=self.retention_days, lock_mode=self.lock_mode)

    def record_fields(self, retain_until: dt.datetime) -> dict[str, Any]:
        """The record's ``retention`` block."""
        return {
            "store_worm": self.protected,
            "lock_checked": self.readback,
            "mode": str(self.lock_mode) if self.protected else None,
            "retain_until": iso(retain_until) if self.protected else None,
            "note": self.reason,
        }


def lock_decision(store: Store, report: PreflightReport, policy: Policy) -> LockDecision:
    """What the trail's locks are, given what preflight found."""
    days = max(policy.retention_days, report.default_retention_days or 0)
    # Writes that can carry a lock always do: in warn mode too, a lockable store still gets
    # the policy's lock on every object, so only what the store cannot do is given up.
    protected = report.ok or report.lockable
    readback = protected and store.lock_readback
    reason: str | None = None
    if not protected:
        reason = "the store is not WORM: " + "; ".join(report.problems())
    elif not store.lock_readback:
        reason = (
            "the lock is the container's and cannot be read per object from the data plane; "
            "it was checked in preflight only"
        )
    return LockDecision(
        protected=protected,
        apply_lock=report.lockable,
        readback=readback,
        retention_days=days,
        lock_mode=policy.lock_mode,
        reason=reason,
    )


def enforce(decision: LockDecision, report: PreflightReport, on_unlocked: OnUnlocked) -> str | None:
    """Raise PreflightError (exit 21) when an unprotected store is not accepted; otherwise
    the warning to print, if any."""
    if decision.protected and report.ok:
        return None
    problems = "; ".join(report.problems())
    if on_unlocked is OnUnlocked.WARN:
        what = "not WORM" if not decision.protected else "not configured as policy requires"
        return f"{report.store} is {what}: {problems} (continuing: --on-unlocked warn" + (
            "; records say they are not WORM-protected)" if not decision.protected else ")"
        )
    raise PreflightError(
        f"{report.store} is not locked as policy requires: {problems}",
        fix="fix the store's retention settings (docs/stores.md), or pass --on-unlocked warn "
        "to accept it",
    )


@dataclass(frozen=True)
class Checked:
    """A store that passed preflight (or was accepted with a warning), and its lock rules."""

    store: Store
    report: PreflightReport
    decision: LockDecision
    warning: str | None


def preflight(store: Store, policy: Policy, on_unlocked: OnUnlocked) -> Checked:
    """The one preflight of ``run`` and ``recover``: exit 21 unless the store is accepted."""
    report = store.preflight(policy)
    decision = lock_decision(store, report, policy)
    return Checked(store, report, decision, enforce(decision, report, on_unlocked))


@dataclass(frozen=True)
class VerifyLocks:
    """What verify does about locks: whether each object's lock is checked, why not, and
    whether the store itself is (still) set up as the policy requires."""

    check: bool
    note: str | None = None
    unlocked: str | None = None  # a warning: new objects would not be locked as required


def verify_locks(store: Store, policy: Policy, on_unlocked: OnUnlocked) -> VerifyLocks:
    """The same decision as ``run``'s, for verify. Every object's own lock is checked
    wherever the store shows it (an unlocked object is an error whatever the bucket says);
    ``--on-unlocked warn`` accepts an unlocked store as ``run`` did; a store that cannot
    show per-object locks (a copy on local disk, an Azure container policy) gets a note."""
    from tfaudit_ci.errors import TfauditError

    try:
        report = store.preflight(policy)
    except TfauditError as exc:
        # An auditor may lack the bucket-level reads: each object's lock still tells.
        note = f"store settings not read ({exc.summary}); each object's lock is checked"
        return VerifyLocks(store.lock_readback, note)
    decision = lock_decision(store, report, policy)
    unlocked = None
    if not report.ok:
        unlocked = f"{store.uri} is not set up as policy requires: " + "; ".join(report.problems())
    if not store.lock_readback:
        if decision.protected:
            note = f"retention checked per store, not per object: {decision.reason}"
        else:
            note = f"retention not checked: {store.uri} is not WORM"
        return VerifyLocks(False, note)
    if not decision.protected and on_unlocked is OnUnlocked.WARN:
        return VerifyLocks(False, f"retention not checked (--on-unlocked warn): {decision.reason}")
    return VerifyLocks(True, None, unlocked)
