import pytest

import mpq


def test_integer_format_traits():
    f = mpq.find_format("int4_g128_sym")
    assert (f.bits, f.group_size, f.symmetric) == (4, 128, True)
    assert f.family == mpq.FormatFamily.INTEGER
    assert mpq.integer_format_name(3, 64, False) == "int3_g64"
    assert "int4_g32" in mpq.list_formats()


def test_bits_per_weight_counts_scales_and_zeros():
    # int4_g32 asymmetric: 4 bits + 16-bit scale/32 + 4-bit zero/32 = 4.625
    assert mpq.find_format("int4_g32").bits_per_weight(4096) == pytest.approx(4.625)
    assert mpq.find_format("int8_sym").bits_per_weight(4096) == pytest.approx(8 + 16 / 4096)


@pytest.mark.parametrize("name", ["int9", "int4_g0", "fp4", "int4_g32_asym", ""])
def test_unknown_format_is_a_value_error(name):
    with pytest.raises(ValueError, match="format"):
        mpq.find_format(name)


def test_register_format():
    f = mpq.Format("py_int6", bits=6, group_size=64, symmetric=True)
    mpq.register_format(f)
    assert mpq.find_format("py_int6").bits == 6
    with pytest.raises(ValueError, match="already registered"):
        mpq.register_format(mpq.Format("py_int6", bits=5))
    with pytest.raises(ValueError, match="bits"):
        mpq.Format("x", bits=12)
