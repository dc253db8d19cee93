"""The sans-IO failed-login throttle: keys, growing delays, serialisation, forgetting, bounds."""

from __future__ import annotations

import pytest

from transcoder.auth.throttle import (
    LoginThrottle,
    ThrottleBusy,
    ThrottlePolicy,
    account_key,
    address_key,
)

A = address_key("203.0.113.5")
B = address_key("198.51.100.7")
ALICE = account_key("alice@example.org")
BOB = account_key("bob@example.org")


def fail_once(throttle: LoginThrottle, address: str, account: str, now: float) -> None:
    """Run one attempt that is due now and record it as a failure."""
    attempt = throttle.request(address, account, now)
    assert throttle.start_due(now) == [attempt], "attempt was not due"
    throttle.finish(attempt, False, now)


@pytest.mark.parametrize(
    "host, key",
    [
        ("203.0.113.5", "ip:203.0.113.5"),
        ("::ffff:203.0.113.5", "ip:203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("unknown", "peer:unknown"),
    ],
)
def test_address_keys(host: str, key: str) -> None:
    """IPv4 as itself (mapped IPv6 too), IPv6 by its /64, anything else by name."""
    assert address_key(host) == key


def test_account_key_compares_as_the_accounts_file() -> None:
    """Logins differing only in case are one account."""
    assert account_key("Alice@Example.ORG") == ALICE


def test_delay_doubles_to_the_cap() -> None:
    """1, 2, 4, 8 s, then capped at 15 s (Dovecot's auth penalty shape)."""
    policy = ThrottlePolicy()
    assert [policy.delay(n) for n in range(7)] == [0, 1, 2, 4, 8, 15, 15]
    assert policy.delay(10_000) == 15


def test_failed_key_admits_one_check_after_its_delay() -> None:
    """After a failure the next attempt is due only delay(1) later, after two delay(2) later."""
    throttle = LoginThrottle()
    fail_once(throttle, A, ALICE, 0.0)
    attempt = throttle.request(A, BOB, 0.5)
    assert throttle.start_due(0.5) == []
    assert throttle.next_due(0.5) == 1.0
    assert throttle.start_due(1.0) == [attempt]
    throttle.finish(attempt, False, 1.0)
    again = throttle.request(A, BOB, 1.0)
    assert throttle.start_due(2.9) == []
    assert throttle.start_due(3.0) == [again]


def test_parallel_attempts_run_one_at_a_time_once_a_key_failed() -> None:
    """A key with failures lets one check run at a time, the next only after its outcome."""
    throttle = LoginThrottle()
    fail_once(throttle, A, ALICE, 0.0)
    first, second = (throttle.request(A, account_key(f"u{i}@x.example"), 0.0) for i in (1, 2))
    assert throttle.start_due(5.0) == [first]
    assert throttle.start_due(100.0) == []  # waits for first's outcome, however long
    throttle.finish(first, True, 100.0)
    assert throttle.start_due(100.0) == [second]


def test_clean_key_admits_parallel_checks_up_to_the_limit() -> None:
    """Without failures, up to parallel_checks checks of a key run at once; no more."""
    throttle = LoginThrottle(ThrottlePolicy(parallel_checks=3, max_waiting=10))
    attempts = [throttle.request(A, account_key(f"u{i}@x.example"), 0.0) for i in range(5)]
    assert throttle.start_due(0.0) == attempts[:3]
    throttle.finish(attempts[0], True, 0.1)
    assert throttle.start_due(0.1) == [attempts[3]]


def test_success_clears_the_account_but_not_the_address() -> None:
    """A successful login forgets its account's failures; its address keeps its own."""
    throttle = LoginThrottle()
    for t in range(3):
        fail_once(throttle, A, ALICE, t * 100.0)
    attempt = throttle.request(A, ALICE, 300.0)
    assert throttle.start_due(300.0) == [attempt]
    throttle.finish(attempt, True, 300.0)
    assert throttle.failures(ALICE, 300.0) == 0
    assert throttle.failures(A, 300.0) == 3


def test_success_gives_a_running_attack_no_burst() -> None:
    """After the owner's login the account's delays restart, but its checks stay one at a time."""
    throttle = LoginThrottle()
    for i in range(5):
        fail_once(throttle, address_key(f"192.0.2.{i}"), ALICE, 20.0 * i)
    owner = throttle.request(B, ALICE, 100.0)
    assert throttle.start_due(100.0) == [owner]
    throttle.finish(owner, True, 100.0)
    attackers = [throttle.request(address_key(f"192.0.2.{i}"), ALICE, 100.0) for i in (7, 8, 9)]
    assert throttle.start_due(100.0) == attackers[:1]


def test_failures_are_forgotten_after_a_quiet_period() -> None:
    """forget_after seconds after its last failure, a key is clean again."""
    throttle = LoginThrottle(ThrottlePolicy(forget_after=600.0))
    fail_once(throttle, A, ALICE, 0.0)
    assert throttle.failures(A, 599.0) == 1
    assert throttle.failures(A, 600.0) == 0


def test_no_lockout_however_many_failures() -> None:
    """After 10,000 failures the next attempt is still admitted max_delay seconds later."""
    throttle = LoginThrottle()
    now = 0.0
    for _ in range(10_000):
        fail_once(throttle, B, ALICE, now)
        now += 15.0
    attempt = throttle.request(A, ALICE, now)
    assert throttle.start_due(now) == [attempt]


def test_full_queue_refuses_without_a_check() -> None:
    """A key that cannot admit and has max_waiting attempts waiting refuses the next."""
    throttle = LoginThrottle(ThrottlePolicy(max_waiting=2))
    fail_once(throttle, A, ALICE, 0.0)
    for i in range(2):
        throttle.request(A, account_key(f"u{i}@x.example"), 0.1)
    with pytest.raises(ThrottleBusy):
        throttle.request(A, BOB, 0.1)
    # Another address, another account: unaffected.
    other = throttle.request(B, BOB, 0.1)
    assert throttle.start_due(0.1) == [other]


def test_clean_key_lets_any_number_queue() -> None:
    """Without failures nobody is refused: a NAT of many users logging in at once just queues."""
    throttle = LoginThrottle(ThrottlePolicy(parallel_checks=2, max_waiting=1))
    attempts = [throttle.request(A, account_key(f"u{i}@x.example"), 0.0) for i in range(50)]
    done = 0
    while done < 50:
        running = throttle.start_due(float(done))
        for attempt in running:
            throttle.finish(attempt, True, float(done))
        done += len(running)
    assert not any(a.running for a in attempts)


def test_key_that_fails_sheds_the_youngest_waiting() -> None:
    """When a key fails with many waiting, all but max_waiting are refused, youngest first."""
    throttle = LoginThrottle(ThrottlePolicy(parallel_checks=1, max_waiting=2))
    first, *queued = (throttle.request(A, account_key(f"u{i}@x.example"), 0.0) for i in range(6))
    assert throttle.start_due(0.0) == [first]
    assert throttle.shed(0.0) == []  # no failures yet: they may all wait
    throttle.finish(first, False, 0.1)
    assert throttle.shed(0.1) == queued[:1:-1]
    assert throttle.start_due(1.1) == [queued[0]]


def test_abandoned_attempt_frees_its_place() -> None:
    """A waiting attempt whose connection went no longer waits, nor counts as waiting."""
    throttle = LoginThrottle(ThrottlePolicy(max_waiting=1))
    fail_once(throttle, A, ALICE, 0.0)
    waiting = throttle.request(A, BOB, 0.1)
    throttle.abandon(waiting)
    replacement = throttle.request(A, BOB, 0.2)
    assert throttle.start_due(1.0) == [replacement]


def test_trusted_pair_is_not_gated_by_its_attacked_account() -> None:
    """After a successful login from an address, the account's failures do not delay it there."""
    throttle = LoginThrottle(ThrottlePolicy(trust_for=3600.0))
    owner = throttle.request(A, ALICE, 0.0)
    throttle.start_due(0.0)
    throttle.finish(owner, True, 0.0)
    for i in range(10):  # the account is attacked from elsewhere
        fail_once(throttle, address_key(f"192.0.2.{i}"), ALICE, 20.0 * i)
    back = throttle.request(A, ALICE, 190.0)  # the account is closed until 195
    stranger = throttle.request(B, ALICE, 190.0)
    assert throttle.start_due(190.0) == [back]
    throttle.finish(back, True, 190.1)
    assert throttle.failures(ALICE, 190.1) == 0  # the owner's success cleared it
    assert throttle.start_due(190.1) == [stranger]


def test_trust_expires() -> None:
    """A trusted pair is gated by its account again after trust_for seconds."""
    throttle = LoginThrottle(ThrottlePolicy(trust_for=100.0))
    owner = throttle.request(A, ALICE, 0.0)
    throttle.start_due(0.0)
    throttle.finish(owner, True, 0.0)
    fail_once(throttle, B, ALICE, 100.0)
    late = throttle.request(A, ALICE, 100.5)
    assert throttle.start_due(100.5) == []
    assert throttle.start_due(101.0) == [late]


def test_memory_is_bounded() -> None:
    """No more than max_keys keys are kept: failures from a flood of addresses evict the oldest."""
    throttle = LoginThrottle(ThrottlePolicy(max_keys=100))
    for i in range(1000):
        fail_once(throttle, address_key(f"10.0.{i // 250}.{i % 250}"), account_key(f"{i}@x"), i)
    assert len(throttle) <= 100
    assert throttle.failures(account_key("999@x"), 1000.0) == 1


def test_clean_keys_are_dropped_when_unused() -> None:
    """Successful logins without failures leave no key behind."""
    throttle = LoginThrottle()
    for i in range(50):
        attempt = throttle.request(address_key(f"10.0.0.{i}"), account_key(f"{i}@x"), 0.0)
        throttle.start_due(0.0)
        throttle.finish(attempt, True, 0.0)
    assert len(throttle) == 0


def test_policy_is_checked() -> None:
    """Nonsensical policies are refused when made."""
    with pytest.raises(ValueError):
        ThrottlePolicy(first_delay=0)
    with pytest.raises(ValueError):
        ThrottlePolicy(forget_after=10.0, max_delay=15.0)
    with pytest.raises(ValueError):
        ThrottlePolicy(max_waiting=0)
