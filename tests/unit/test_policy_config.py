"""hostd's `[policy]` table (services/hostd/policy_config.py) through load_config: defaults
for a laptop, every value that makes no sense refused with the field named."""

from pathlib import Path

import pytest

from potluck.hostd.config import ConfigError, load_config
from potluck.hostd.policy_config import OwnerPolicy

BASE = (
    'host_id = "h-1"\ncredentials_file = "c"\nstate_dir = "s"\n'
    '[donate]\ncpus = 2\nmemory = "1G"\ndisk = "1G"\n'
)


def load_config_policy(tmp_path: Path, policy: str) -> OwnerPolicy:
    path = tmp_path / "hostd.toml"
    path.write_text(BASE + policy)
    return load_config(path).policy


def test_no_policy_table_gives_the_laptop_defaults(tmp_path: Path) -> None:
    """Without [policy]: throttle to a quarter when the owner uses half a core, resume after
    30 s idle, freeze on battery, 85 °C, no windows, the machine's own sysfs trees."""
    policy = load_config_policy(tmp_path, "")

    assert (policy.owner_busy_cpus, policy.on_owner_busy, policy.throttle_to) == (0.5, "throttle", 0.25)
    assert (policy.resume_after_idle_s, policy.on_battery, policy.max_temperature_c) == (30, "freeze", 85)
    assert policy.windows == []
    assert policy.power_supply_dir == "/sys/class/power_supply"
    assert policy.thermal_dir == "/sys/class/thermal"


def test_the_issue_example_loads_and_relative_sysfs_dirs_follow_the_file(tmp_path: Path) -> None:
    """The issue's TOML, plus relative power/thermal dirs: a weekday window, taken from the
    config file's folder."""
    policy = load_config_policy(
        tmp_path,
        '[policy]\nowner_busy_cpus = 0.5\non_owner_busy = "throttle"\nthrottle_to = 0.25\n'
        'resume_after_idle_s = 30\non_battery = "freeze"\nmax_temperature_c = 85\nmax_frozen_s = 3600\n'
        'power_supply_dir = "ps"\nthermal_dir = "th"\n'
        '[[policy.windows]]\ndays = ["mon", "tue", "wed", "thu", "fri"]\nfrom = "09:00"\nto = "18:00"\n'
        'action = "throttle"\n',
    )

    assert policy.windows[0].describe() == "mon,tue,wed,thu,fri 09:00-18:00"
    assert policy.power_supply_dir == str(tmp_path / "ps")
    assert policy.thermal_dir == str(tmp_path / "th")


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ("[policy]\nowner_busy_cpus = -1\n", "policy.owner_busy_cpus"),
        ("[policy]\nthrottle_to = 1.5\n", "policy.throttle_to"),
        ("[policy]\nresume_after_idle_s = -3\n", "policy.resume_after_idle_s"),
        ('[policy]\non_owner_busy = "panic"\n', "policy.on_owner_busy"),
        ('[policy]\non_battery = "sleep"\n', "policy.on_battery"),
        ("[policy]\nmax_temperature_c = -10\n", "policy.max_temperature_c"),
        ("[policy]\nmax_frozen_s = 0\n", "policy.max_frozen_s"),
        ("[policy]\nsurprise = 1\n", "policy.surprise"),
        ('[[policy.windows]]\ndays = ["mon"]\nfrom = "18:00"\nto = "09:00"\n', "policy.windows.0.from"),
        ('[[policy.windows]]\ndays = ["mon"]\nfrom = "9h"\nto = "18:00"\n', "policy.windows.0.from"),
        ('[[policy.windows]]\ndays = ["mon"]\nfrom = "09:00"\nto = "25:00"\n', "policy.windows.0.to"),
        ('[[policy.windows]]\ndays = ["monday"]\nfrom = "09:00"\nto = "18:00"\n', "policy.windows.0.days.0"),
        ('[[policy.windows]]\ndays = []\nfrom = "09:00"\nto = "18:00"\n', "policy.windows.0.days"),
        ('[[policy.windows]]\ndays = ["mon"]\nfrom = "09:00"\nto = "18:00"\naction = "nap"\n',
         "policy.windows.0.action"),
    ],
)  # fmt: skip
def test_a_policy_value_that_makes_no_sense_is_refused_naming_the_field(
    tmp_path: Path, policy: str, field: str
) -> None:
    """Negative numbers, unknown actions or days, `from` after `to`, a bad time: ConfigError
    whose message names the field."""
    with pytest.raises(ConfigError) as refused:
        load_config_policy(tmp_path, policy)

    assert f"{field}:" in str(refused.value)
