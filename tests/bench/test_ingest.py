"""The ingest benchmark's bookkeeping: one worker's CPU split by process."""

from bench.ingest import RssSampler


def test_cpu_by_role_follows_each_process_last_command_line() -> None:
    sampler = RssSampler("db")
    # Backends are keyed by -pid; a worker's sandbox by its own pid. Pid 12 was first sampled between fork and
    # exec (still the benchmark's command line) and then as a worker: its last sample decides.
    sampler.cpu = {11: 2.5, 12: 1.0, 13: 7.0, -101: 3.0, -102: 0.5}
    sampler.sandboxes = {11: False, 12: False, 13: True}
    sampler.service_cpu = {20: 0.25}
    roles = sampler.by_role()
    assert roles == {"worker": 3.5, "sandbox": 7.0, "postgres": 3.5, "service": 0.25}
    assert sum(roles.values()) == sampler.cpu_seconds
