"""The machine description benchmarks record beside every figure."""

from __future__ import annotations

from MRIDenoiseLib.machine import cpu_identity

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu avx512f avx512_bf16

processor\t: 1
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_the_identity_tells_apart_hosts_that_share_a_marketing_name(tmp_path):
    zen4 = tmp_path / "zen4"
    zen4.write_text(ZEN4)
    zen5 = tmp_path / "zen5"
    zen5.write_text(ZEN4.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17", "model\t\t: 2"))
    assert cpu_identity(zen4) == "family 25 model 17 stepping 1"
    assert cpu_identity(zen5) == "family 26 model 2 stepping 1"


def test_no_identity_where_the_system_does_not_give_one(tmp_path):
    arm = tmp_path / "arm"
    arm.write_text(ARM)
    assert cpu_identity(arm) == ""
    assert cpu_identity(tmp_path / "missing") == ""
