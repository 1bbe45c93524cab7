"""The default XLA flags (hotspot_jax.xla_flags): added by the entry points' one call, never at import, never
over a user's own value."""

from __future__ import annotations

import os
import subprocess
import sys

from hotspot_jax import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"
EMITTERS = "--xla_cpu_use_fusion_emitters"


def test_defaults_are_appended_once_and_a_users_own_flag_wins():
    assert xla_flags.with_defaults("").split() == list(xla_flags.CPU_DEFAULTS)
    both = xla_flags.with_defaults("--xla_force_host_platform_device_count=2")
    assert both.split() == ["--xla_force_host_platform_device_count=2", *xla_flags.CPU_DEFAULTS]
    assert xla_flags.with_defaults(both) == both  # idempotent
    mine = f"{YNN}=individual_dot"
    assert xla_flags.with_defaults(mine).split() == [mine, f"{EMITTERS}=false"]  # the other default still added
    emitters_on = f"{EMITTERS}=true"
    assert xla_flags.with_defaults(emitters_on).split() == [emitters_on, f"{YNN}=-individual_convolution"]


def test_reading_whether_convolutions_are_off_ynnpack():
    assert xla_flags.flag_value(f"--a=1 {YNN}=x {YNN}=-individual_convolution", YNN) == "-individual_convolution"
    assert xla_flags.flag_value("--a=1", YNN) is None
    assert xla_flags.convolutions_off_ynnpack(xla_flags.with_defaults(""))
    assert xla_flags.convolutions_off_ynnpack(f"{YNN}=-individual_dot,-individual_convolution")
    assert not xla_flags.convolutions_off_ynnpack(f"{YNN}=-individual_dot")
    assert not xla_flags.convolutions_off_ynnpack("")


def test_only_for_the_measured_jaxlib_and_not_when_switched_off():
    assert xla_flags.wanted({}, "0.10.2")
    assert not xla_flags.wanted({}, "0.11.0")  # XLA aborts on flags it does not know
    assert not xla_flags.wanted({}, None)
    assert not xla_flags.wanted({xla_flags.SWITCH_ENV: "0"}, "0.10.2")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.SWITCH_ENV, "PYTHONSTARTUP")}


def test_importing_the_packages_changes_no_environment_variable_and_architectures_import_no_hotspot_jax():
    code = ("import os, sys; before = dict(os.environ); import architectures, architectures.ops;"
            " print(sorted(m for m in sys.modules if m.split('.')[0] == 'hotspot_jax'));"
            " import hotspot_jax, hotspot_jax.errors; print(os.environ.get('XLA_FLAGS')); print(dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["[]", "None", "True"]


def test_the_entry_points_call_sets_them_before_jax_starts_and_jax_accepts_them():
    code = ("import os, hotspot_jax.runtime, jax, jax.numpy as jnp; hotspot_jax.xla_flags.apply();"
            " print(float(jnp.ones((4, 4)) @ jnp.ones(4) @ jnp.ones(4))); print(os.environ.get('XLA_FLAGS', ''))")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    value, flags = out.stdout.split("\n")[:2]
    assert float(value) == 16.0
    wanted = xla_flags.wanted({}, xla_flags._jaxlib_version())
    assert (YNN in flags) == wanted and (f"{EMITTERS}=false" in flags) == wanted
