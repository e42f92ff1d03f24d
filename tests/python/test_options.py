"""Options structs in Python: defaults come from the C++ struct (one place), and every Options
type round-trips through as_dict/from_dict and pickle, so reports and checkpoints hold plain data."""
import pickle

import pytest
import torch

import mpq

OPTIONS = (mpq.GaOptions, mpq.RtnOptions, mpq.GptqOptions, mpq.AwqOptions, mpq.SmoothQuantOptions,
           mpq.CalibratorOptions)


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_round_trips_through_dict_and_pickle(cls):
    default = cls()
    d = default.as_dict()
    assert d and all(getattr(default, k) is not None or v is None for k, v in d.items())
    assert cls.from_dict(d) == default and pickle.loads(pickle.dumps(default)) == default
    with pytest.raises(ValueError, match="unknown keys"):
        cls.from_dict({**d, "no_such_option": 1})


def test_a_changed_value_survives_and_is_validated():
    o = mpq.GaOptions(population=7, survivors=[7, 2], mutation_rate=0.25)
    back = pickle.loads(pickle.dumps(o))
    assert (back.population, back.survivors, back.mutation_rate, back.offspring) == (7, [7, 2], 0.25, None)
    assert back != mpq.GaOptions()
    with pytest.raises(ValueError):
        mpq.GaOptions.from_dict({"population": 0})
    sq = mpq.SmoothQuantOptions(alpha=0.85, rtn=mpq.RtnOptions(mse_clip=True))
    assert sq.as_dict()["rtn"] == {**mpq.RtnOptions().as_dict(), "mse_clip": True}
    assert mpq.SmoothQuantOptions.from_dict(sq.as_dict()) == sq
    cal = mpq.CalibratorOptions(accumulate_dtype=torch.float64)
    assert pickle.loads(pickle.dumps(cal)).accumulate_dtype == torch.float64
